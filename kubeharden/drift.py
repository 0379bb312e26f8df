"""`kubeharden drift`: what drifted from the hardened state on each node, the diff that restores it, and the fix.

A run is the audit plus the hardening playbooks (`site.yml`) in check and diff mode. A control has *drifted*
on a node when it fails there and the hardening would change something under the control's remediation tag
(catalogue `remediation.tags`), unless the node's previous drift record shows the same control failing without
having drifted: such a control fails in the hardened state too (docs/exceptions.md) and is reported as an
*expected failure*. Pending changes tied to no failing control are listed as well, and so are the controls the
audit could not judge (status error: an apiserver restarting, a file unreadable): such a run is not clean.
`--remediate` runs `site.yml` limited to the drifted nodes and to the drifted controls' tags, then runs the drift
check again.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kubeharden import catalogue, history
from kubeharden.audit import AuditReport, detail, label, run_audit, to_prometheus
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
    for result in results:
        if result["status"] != "fail" or not tags(result["id"]) & pending_tags:
            continue
        accepted = previous is not None and before.get(result["id"]) == "fail" and result["id"] not in drifted_before
        (expected if accepted else drifted).append(result["id"])
    pending = [{"task": change["task"], "tags": change["tags"], "diff": change["diff"],
                "controls": [cid for cid in drifted + expected
                             if tags(cid) & set(change["tags"])]}
               for change in changes if not change["failed"]]
    unjudged = [r["id"] for r in results if r["status"] == "error"]
    return {"drifted": drifted, "expected_failures": expected, "pending": pending, "unjudged": unjudged,
            "baseline": previous is not None}


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
    previous = history.baselines(state, sorted(audit.results), ("drift", "remediate"))
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
    tags = sorted({tag for node, ids in drifted.items() for cid in ids for tag in report.audit.fix(node, cid)["tags"]})
    run = run_playbook(HARDENING_PLAYBOOK, inventory, run_id=f"{report.run_id}-remediate",
                       artifacts_dir=state / "artifacts", limit=",".join(sorted(drifted)), tags=tags,
                       progress=Progress("remediate", enabled=progress))
    after = check(inventory, limit, state, progress)  # the record just written is its baseline
    after.remediation = {"tags": tags, "nodes": sorted(drifted), "rc": run.rc, "errors": run.host_errors(),
                         "fixed": {node: [cid for cid in ids if _status(after.audit, node, cid) == "pass"]
                                   for node, ids in drifted.items()}}
    after.before = report
    history.write_record(state, after.record(inventory, "remediate"))
    return after


def _status(audit: AuditReport, node: str, control_id: str) -> str | None:
    return next((r["status"] for r in audit.results.get(node, []) if r["id"] == control_id), None)


# -- formats ---------------------------------------------------------------------------------------------

def _indent(text: str, prefix: str = "        ") -> list[str]:
    return [prefix + line for line in text.splitlines()]


def _node_lines(report: DriftReport, node: str) -> list[str]:
    entry, audit = report.nodes[node], report.audit
    results = {r["id"]: r for r in audit.results[node]}
    failing = [r for r in audit.results[node] if r["status"] == "fail"]
    lines = [f"== {node}: {len(entry['drifted'])} drifted, {len(failing)} failing, {len(entry['pending'])} pending "
             f"change(s), score {audit.score(node)}%" + ("" if entry["baseline"] else " (no earlier drift run: "
                                                          "every failing control with a pending fix counts)")]
    for cid in entry["drifted"]:
        control, result = audit.controls[cid], results[cid]
        lines.append(f"  DRIFTED {cid:10} [{control['severity']}] {control['title']}")
        lines.append(f"          {detail(result)}")
        lines.append(f"          fix: {catalogue.fix_text(audit.fix(node, cid))}")
        for change in entry["pending"]:
            if cid in change["controls"]:
                lines.append(f"          would restore ({change['task']}):")
                lines += _indent(change["diff"] or "(no diff shown by the task)", "            ")
    if entry["expected_failures"]:
        lines.append(f"  failing in the hardened state too (not drift): {', '.join(entry['expected_failures'])}")
    for change in entry["pending"]:
        if not change["controls"]:
            lines.append(f"  pending change tied to no failing control: {change['task']} [{', '.join(change['tags'])}]")
            lines += _indent(change["diff"], "            ")
    why: dict[str, list[str]] = {}  # one reason often stops many controls (the apiserver answers none of them)
    for cid in entry.get("unjudged", []):
        why.setdefault(detail(results[cid]), []).append(cid)
    for reason, ids in why.items():
        lines.append(f"  NOT JUDGED {', '.join(ids)}: {reason}")
    if entry.get("check_error"):
        lines.append(f"  CHECK INCOMPLETE: {entry['check_error']}")
    return lines


def to_table(report: DriftReport, verbose: bool = False) -> str:
    lines = []
    if report.before:
        lines.append("Before remediation:")
        lines += ["  " + line for node in sorted(report.before.nodes) for line in _node_lines(report.before, node)]
        fix = report.remediation
        lines.append(f"Remediation: site.yml on {', '.join(fix['nodes'])} with tags {', '.join(fix['tags'])} "
                     f"(exit {fix['rc']})")
        for node, ids in sorted(fix["fixed"].items()):
            lines.append(f"  {node}: fixed {', '.join(ids) or 'nothing'}")
        for node, error in sorted(fix["errors"].items()):
            lines.append(f"  {node}: REMEDIATION FAILED: {error}")
        lines.append("After remediation:")
    for node in sorted(report.nodes):
        lines += _node_lines(report, node)
    for node, error in sorted(report.errors.items()):
        if node not in report.nodes or not report.nodes[node].get("check_error"):
            lines.append(f"== {node}: NOT CHECKED: {error}")
    total = sum(len(ids) for ids in report.drifted().values())
    unchecked = sorted(set(report.errors) - set(report.nodes))
    lines.append(f"{total} drifted control(s) on {len(report.drifted())} of {len(report.nodes)} node(s); "
                 + (f"{len(unchecked)} node(s) not checked and nothing remediated there "
                    f"({', '.join(unchecked)}); " if unchecked else "") + f"run {report.run_id}")
    return "\n".join(lines) + "\n"


def _json_report(report: DriftReport) -> dict:
    data = {"run": report.run_id, "time": report.time,
            "nodes": {node: {**entry, "score": report.audit.score(node)}
                      for node, entry in sorted(report.nodes.items())},
            "errors": report.errors}
    if report.remediation:
        data["remediation"] = report.remediation
        data["before"] = _json_report(report.before)
    return data


def to_json(report: DriftReport) -> str:
    return json.dumps(_json_report(report), indent=2) + "\n"


def to_junit(report: DriftReport) -> str:
    suites = ET.Element("testsuites", name="kubeharden drift")
    for node, entry in sorted(report.nodes.items()):
        results = report.audit.results[node]
        unjudged = entry.get("unjudged", [])
        suite = ET.SubElement(suites, "testsuite", name=node, tests=str(len(results)),
                              failures=str(len(entry["drifted"])),
                              errors=str(len(unjudged) + (1 if entry.get("check_error") else 0)))
        for result in results:
            control = report.audit.controls[result["id"]]
            case = ET.SubElement(suite, "testcase", classname=f"{node}.{control['section']}",
                                 name=f"{result['id']} {control['title']}")
            if result["id"] in entry["drifted"]:
                diffs = [change["diff"] for change in entry["pending"] if result["id"] in change["controls"]]
                ET.SubElement(case, "failure", message=f"drifted: {result['evidence']}",
                              type=control["severity"]).text = "\n".join(diffs)
            elif result["id"] in unjudged:
                ET.SubElement(case, "error", message=f"not judged: {detail(result)}")
        if entry.get("check_error"):
            ET.SubElement(ET.SubElement(suite, "testcase", name="check mode"), "error", message=entry["check_error"])
    for node, error in sorted(report.errors.items()):
        if node not in report.nodes:
            suite = ET.SubElement(suites, "testsuite", name=node, tests="1", failures="0", errors="1")
            ET.SubElement(ET.SubElement(suite, "testcase", name="reachable"), "error", message=error)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def to_prometheus_drift(report: DriftReport) -> str:
    """The audit's metrics plus drift: per drifted control, per node counts, and when the run happened."""
    lines = [to_prometheus(report.audit).rstrip("\n"),
             "# HELP kubeharden_control_drifted 1 for each control that drifted from the hardened state on the node.",
             "# TYPE kubeharden_control_drifted gauge"]
    for node, entry in sorted(report.nodes.items()):
        for cid in entry["drifted"]:
            control = report.audit.controls[cid]
            lines.append(f'kubeharden_control_drifted{{node="{label(node)}",control="{cid}",'
                         f'severity="{control["severity"]}",section="{label(control["section"])}"}} 1')
    for name, help_text, value in (
            ("kubeharden_drifted_controls", "Controls that drifted on the node.", lambda e: len(e["drifted"])),
            ("kubeharden_pending_changes", "Changes the hardening playbooks would make on the node.",
             lambda e: len(e["pending"])),
            ("kubeharden_drift_checked", "1 if the node's check-mode run completed.",
             lambda e: 0 if e.get("check_error") else 1)):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{node="{label(node)}"}} {value(entry)}' for node, entry in sorted(report.nodes.items())]
    lines += ["# HELP kubeharden_drift_last_run_timestamp_seconds When this drift run started.",
              "# TYPE kubeharden_drift_last_run_timestamp_seconds gauge",
              f"kubeharden_drift_last_run_timestamp_seconds {datetime.fromisoformat(report.time).timestamp():.0f}",
              "# HELP kubeharden_drift_run_errors Nodes the run could not check or audit.",
              "# TYPE kubeharden_drift_run_errors gauge", f"kubeharden_drift_run_errors {len(report.errors)}"]
    return "\n".join(lines) + "\n"


FORMATS = {"table": to_table, "json": to_json, "junit": to_junit, "prometheus": to_prometheus_drift}
