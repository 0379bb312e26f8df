"""`kubeharden drift`: what drifted from the hardened state on each node, the diff that restores it, and the fix.

A run is the audit plus the hardening playbooks (`site.yml`) in check and diff mode. A control has *drifted*
on a node when it fails there and the hardening would change something under the control's remediation tag
(catalogue `remediation.tags`), unless the node's previous drift record shows the same control failing without
having drifted: such a control fails in the hardened state too (docs/exceptions.md) and is reported as an
*expected failure*. Pending changes tied to no failing control are listed as well, and so are the controls the
audit could not judge (status error: an apiserver restarting, a file unreadable): such a run is not clean.
`--remediate` runs `site.yml` limited to the drifted nodes and to the drifted controls' tags, then runs the drift
check again. A waived control (kubeharden.waivers) is never drift; when the hardening would still change it (the
role's variable does not keep the waived value), its tags are left out of the remediation on every node, and the
report says which drifted controls stay unfixed because of it. Baselines are read from earlier runs on the same
inventory: two clusters that both name a node cp1 do not mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kubeharden import catalogue, history
from kubeharden.audit import AuditReport, run_audit
from kubeharden.runner import Progress, run_playbook

EXIT_CLEAN, EXIT_DRIFTED, EXIT_ERROR = 0, 1, 2
HARDENING_PLAYBOOK = "site.yml"


def classify(controls: dict[str, dict], results: list[dict], changes: list[dict], previous: dict | None,
             etcd: str | None = None) -> dict:
    """Drifted and expected-failing controls of one node, and its pending changes with the controls they restore.

    `changes` are the node's kubeharden_changes records from the check run; `previous` its entry in the last drift
    record (None: no baseline, so every failing control with a pending fix counts as drifted); `etcd` how etcd
    runs on the node (a control's fix can depend on it)."""
    def tags(cid: str) -> set[str]:
        return set(catalogue.remediation_for(controls[cid], etcd)["tags"])

    pending_tags = {tag for change in changes if not change["failed"] for tag in change["tags"]}
    before = {r["id"]: r["status"] for r in (previous or {}).get("results", [])}
    drifted_before = set((previous or {}).get("drifted", []))
    drifted, expected = [], []
    # A waived control whose fix is pending: running its tags would undo what the operator accepted.
    waived = [r["id"] for r in results if r["status"] == "waived" and tags(r["id"]) & pending_tags]
    for result in results:
        if result["status"] != "fail" or not tags(result["id"]) & pending_tags:
            continue
        accepted = previous is not None and before.get(result["id"]) == "fail" and result["id"] not in drifted_before
        (expected if accepted else drifted).append(result["id"])
    pending = [{"task": change["task"], "tags": change["tags"], "diff": change["diff"],
                "controls": [cid for cid in drifted + expected
                             if tags(cid) & set(change["tags"])],
                "waived": [cid for cid in waived if tags(cid) & set(change["tags"])]}
               for change in changes if not change["failed"]]
    unjudged = [r["id"] for r in results if r["status"] == "error"]
    return {"drifted": drifted, "expected_failures": expected, "pending": pending, "unjudged": unjudged,
            "waived_pending": waived, "baseline": previous is not None}


@dataclass
class DriftReport:
    run_id: str
    time: str
    audit: AuditReport
    nodes: dict[str, dict] = field(default_factory=dict)  # node -> classify() + check_error
    errors: dict[str, str] = field(default_factory=dict)  # node -> why it could not be checked or audited
    remediation: dict | None = None  # tags, nodes, rc, errors of the remediation run
    before: DriftReport | None = None  # the report the remediation started from

    def drifted(self) -> dict[str, list[str]]:
        return {node: entry["drifted"] for node, entry in self.nodes.items() if entry["drifted"]}

    def exit_code(self) -> int:
        if self.errors or (self.remediation and self.remediation["errors"]) or \
                any(entry.get("unjudged") for entry in self.nodes.values()):
            return EXIT_ERROR
        return EXIT_DRIFTED if self.drifted() else EXIT_CLEAN

    def record(self, inventory: str, kind: str) -> dict:
        record = self.audit.record(self.run_id, kind, self.time, inventory)
        record["nodes"] = {node: {**record["nodes"][node], **entry} for node, entry in self.nodes.items()}
        record["errors"] = self.errors
        if self.remediation:
            record["remediation"] = self.remediation
        return record


def check(inventory: str, limit: str | None, state: Path, progress: bool | None) -> DriftReport:
    run_id = history.new_run_id("drift")
    started = history.now_iso()
    artifacts = state / "artifacts"
    audit = run_audit(inventory, limit, run_id=f"{run_id}-audit", artifacts_dir=artifacts,
                      progress=Progress("audit", enabled=progress))
    run = run_playbook(HARDENING_PLAYBOOK, inventory, run_id=f"{run_id}-check", artifacts_dir=artifacts,
                       limit=limit, check=True, progress=Progress("check", enabled=progress))
    report = DriftReport(run_id, started, audit, errors=dict(audit.host_errors))
    check_errors = run.host_errors()
    previous = history.baselines(state, sorted(audit.results), ("drift", "remediate"), inventory)
    for node, results in sorted(audit.results.items()):
        changes = [change for change in run.changes if change["host"] == node]
        report.nodes[node] = classify(audit.controls, results, changes, previous.get(node), audit.etcd.get(node))
        if node in check_errors:
            report.nodes[node]["check_error"] = check_errors[node]
    for node, error in check_errors.items():
        report.errors.setdefault(node, f"check mode: {error}")
    return report


def run_drift(inventory: str, limit: str | None = None, state: Path | None = None, remediate: bool = False,
              progress: bool | None = None) -> DriftReport:
    state = state or history.state_dir()
    report = check(inventory, limit, state, progress)
    history.write_record(state, report.record(inventory, "drift"))
    drifted = report.drifted()
    if not remediate or not drifted:
        return report
    # Every step of a drifted control's fix: a restored setting may need a follow-up its check mode cannot
    # predict (4.2.9: serverTLSBootstrap back on, then the new serving certificate request approved).
    wanted = {tag for node, ids in drifted.items() for cid in ids for tag in report.audit.fix(node, cid)["tags"]}
    withheld = withheld_tags(report, sorted(drifted))
    tags = sorted(wanted - {tag for by_control in withheld.values() for ts in by_control.values() for tag in ts})
    unfixable = {node: left for node, ids in drifted.items()
                 if (left := [cid for cid in ids if not set(report.audit.fix(node, cid)["tags"]) & set(tags)])}
    if not tags:
        report.remediation = {"tags": [], "nodes": sorted(drifted), "rc": None, "errors": {}, "fixed": {},
                              "withheld": withheld, "left_drifted": unfixable}
        return report
    run = run_playbook(HARDENING_PLAYBOOK, inventory, run_id=f"{report.run_id}-remediate",
                       artifacts_dir=state / "artifacts", limit=",".join(sorted(drifted)), tags=tags,
                       progress=Progress("remediate", enabled=progress))
    after = check(inventory, limit, state, progress)  # the record just written is its baseline
    after.remediation = {"tags": tags, "nodes": sorted(drifted), "rc": run.rc, "errors": run.host_errors(),
                         "fixed": {node: [cid for cid in ids if _status(after.audit, node, cid) == "pass"]
                                   for node, ids in drifted.items()},
                         "withheld": withheld, "left_drifted": unfixable}
    after.before = report
    history.write_record(state, after.record(inventory, "remediate"))
    return after


def withheld_tags(report: DriftReport, nodes: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per node to remediate: each waived control whose fix is pending, with the tags that would undo it. One run
    of site.yml takes one tag list for every node, so these tags are left out everywhere."""
    return {node: {cid: report.audit.fix(node, cid)["tags"] for cid in report.nodes[node]["waived_pending"]}
            for node in nodes if report.nodes.get(node, {}).get("waived_pending")}


def _status(audit: AuditReport, node: str, control_id: str) -> str | None:
    return next((r["status"] for r in audit.results.get(node, []) if r["id"] == control_id), None)
