"""`kubeharden audit`: run the catalogue on an inventory through ansible-runner and report the results."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

from kubeharden import catalogue, history, waivers
from kubeharden.collection import ansible_command
from kubeharden.runner import Progress, RunError, ansible_options, quiet_env, run_playbook

AUDIT_TASK = "Evaluate every control that applies to the node"
SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}
EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class AuditError(RuntimeError):
    """The audit could not run at all (bad inventory, missing playbooks)."""


@dataclass
class AuditReport:
    controls: dict[str, dict]
    results: dict[str, list[dict]] = field(default_factory=dict)  # node -> results
    host_errors: dict[str, str] = field(default_factory=dict)  # node -> why it could not be audited
    certificates: dict[str, list[dict]] = field(default_factory=dict)  # node -> certificates with days left
    versions: dict[str, str] = field(default_factory=dict)  # node -> Kubernetes minor of its kubelet
    etcd: dict[str, str] = field(default_factory=dict)  # node -> how etcd runs there (static_pod, host, none)
    artifacts: str = ""  # ansible-runner's artifact directory of the run
    limited: bool = False  # run with --limit: controls of roles outside the limit are left unjudged on purpose
    waivers: list[dict] = field(default_factory=list)  # each waiver's state and use (kubeharden.waivers.apply)

    def unjudged_roles(self) -> dict[str, list[str]]:
        """Node roles no audited host had, with the selected controls only they would have judged: an inventory
        without a control-plane group (or whose names kubeharden_groups does not map) must not score 100%."""
        judged = {r["id"] for results in self.results.values() for r in results}
        missing: dict[str, list[str]] = defaultdict(list)
        for cid, control in self.controls.items():
            if cid not in judged:
                missing[" or ".join(control.get("node_roles") or ["any"])].append(cid)
        return dict(missing)

    def fix(self, node: str, control_id: str) -> dict:
        """The control's fix on this node (it can depend on how etcd runs there)."""
        return catalogue.remediation_for(self.controls[control_id], self.etcd.get(node))

    def failing(self, fail_on: str = "low") -> dict[str, list[dict]]:
        threshold = SEVERITY_RANK[fail_on]
        return {node: [r for r in results if r["status"] == "fail"
                       and SEVERITY_RANK[self.controls[r["id"]]["severity"]] >= threshold]
                for node, results in self.results.items()}

    def exit_code(self, fail_on: str = "low") -> int:
        if self.host_errors or any(r["status"] == "error" for rs in self.results.values() for r in rs):
            return EXIT_ERROR
        if not self.limited and self.unjudged_roles():
            return EXIT_ERROR
        return EXIT_FAILED if any(self.failing(fail_on).values()) else EXIT_OK

    def node_entry(self, node: str) -> dict:
        """What a history record keeps of the node: its score, counts and every result."""
        results = self.results[node]
        return {"score": self.score(node), "counts": dict(Counter(r["status"] for r in results)),
                "etcd": self.etcd.get(node, ""),
                # Passing results keep only their status: records stay small for large fleets.
                "results": [{k: r.get(k) for k in (("id", "status") if r["status"] == "pass" else
                                                   ("id", "status", "expected", "evidence", "reason"))}
                            | ({"waiver": r["waiver"]} if "waiver" in r else {}) for r in results],
                "certificates": [{k: c.get(k) for k in ("name", "subject", "days_left", "managed_by")}
                                 for c in self.certificates.get(node, [])]}

    def record(self, run_id: str, kind: str, started: str, inventory: str) -> dict:
        """The run's history record (kubeharden.history)."""
        return {"id": run_id, "kind": kind, "time": started, "inventory": str(Path(inventory).absolute()),
                "nodes": {node: self.node_entry(node) for node in self.results}, "errors": dict(self.host_errors),
                "artifacts": self.artifacts, "waivers": self.waivers}

    def score(self, node: str, with_waivers: bool = False) -> float:
        """Passing controls among those decided. A waived control counts as the failure it is, unless
        `with_waivers` leaves it out, as the operator accepted it."""
        counts = Counter(r["status"] for r in self.results[node])
        decided = counts["pass"] + counts["fail"] + counts["error"] + (0 if with_waivers else counts["waived"])
        return round(100.0 * counts["pass"] / decided, 1) if decided else 100.0

    def score_with_waivers(self, node: str) -> float:
        return self.score(node, with_waivers=True)


# The inventory groups playbooks/groups.yml maps by default: kubeharden's own and kubespray's.
KNOWN_GROUPS = ("k8s_cluster", "control_plane", "kube_control_plane", "etcd", "workers", "kube_node")


def yaml_problem(path: Path) -> str:
    """Where a YAML inventory file breaks, as an editor shows it (Ansible's message loses the line and column)."""
    if path.suffix not in (".yml", ".yaml") or not path.is_file():
        return ""
    try:
        yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        def where(mark) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        text = f"{where(error.problem_mark)}: {error.problem}" if error.problem_mark else str(error.problem)
        return text + (f" ({error.context} at {where(error.context_mark)})" if error.context_mark else "")
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as error:
        return str(error)
    return ""


def check_inventory(inventory: str) -> dict:
    """The inventory as Ansible reads it (`ansible-inventory --list`), or AuditError saying why it cannot be used."""
    if problem := yaml_problem(Path(inventory)):
        raise AuditError(f"inventory {inventory} could not be parsed: {problem}")
    result = subprocess.run([ansible_command("ansible-inventory"), "-i", inventory, "--list",
                             *ansible_options().inventory_args()], capture_output=True,
                            text=True,
                            env={**os.environ, **quiet_env(), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
                                 "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true"})
    if result.returncode != 0:
        detail = " ".join(line.strip() for line in result.stderr.splitlines() if line.strip())[-600:]
        raise AuditError(f"inventory {inventory} could not be parsed: {detail}")
    listed = json.loads(result.stdout)
    mapped = any("kubeharden_groups" in hostvars for hostvars in listed.get("_meta", {}).get("hostvars", {}).values())
    if not mapped and not any(listed.get(group, {}).get("hosts") or listed.get(group, {}).get("children")
                              for group in KNOWN_GROUPS):
        raise AuditError(f"inventory {inventory} has none of the groups {', '.join(KNOWN_GROUPS)}, and no "
                         "kubeharden_groups maps its own (playbooks/groups.yml)")
    return listed


def inventory_waivers(listed: dict) -> waivers.Waivers:
    """The inventory's kubeharden_waivers, checked against the whole catalogue; AuditError names every problem."""
    try:
        return waivers.from_inventory(listed, {c["id"] for c in catalogue.load()})
    except waivers.WaiverError as error:
        raise AuditError("invalid waivers, nothing audited:\n  " + str(error).replace("\n", "\n  ")) from None


def today() -> date:
    """The date waivers expire against (UTC, as the history's times)."""
    return datetime.now(UTC).date()


def run_audit(inventory: str, limit: str | None = None, include: list[str] | None = None,
              skip: list[str] | None = None, *, run_id: str = "audit", artifacts_dir: Path | None = None,
              progress: Progress | None = None) -> AuditReport:
    accepted = inventory_waivers(check_inventory(inventory))
    controls = catalogue.select(catalogue.load(), include, skip)
    if not controls:
        raise AuditError("no control matches --controls/--skip")
    report = AuditReport({c["id"]: c for c in controls}, limited=bool(limit))
    try:
        run = run_playbook("audit.yml", inventory, run_id=run_id, artifacts_dir=artifacts_dir,
                           extravars={"kubeharden_controls": controls}, limit=limit, progress=progress)
    except RunError as error:
        raise AuditError(str(error)) from None
    for event in run.events:
        data = event.get("event_data", {})
        if event["event"] == "runner_on_ok" and data.get("task") == AUDIT_TASK:
            report.results[data["host"]] = data["res"]["results"]
            report.certificates[data["host"]] = data["res"].get("certificates", [])
            report.versions[data["host"]] = data["res"].get("kubernetes_version", "")
            report.etcd[data["host"]] = data["res"].get("etcd", "")
    report.host_errors = run.host_errors()
    report.artifacts = run.artifacts
    report.waivers = waivers.apply(report.results, accepted, today())
    return report


def audit_and_record(inventory: str, limit: str | None = None, include: list[str] | None = None,
                     skip: list[str] | None = None, state: Path | None = None,
                     progress: Progress | None = None) -> AuditReport:
    """`kubeharden audit`: the audit, kept in the history (as `kubeharden drift` keeps its runs)."""
    state = state or history.state_dir()
    run_id, started = history.new_run_id("audit"), history.now_iso()
    report = run_audit(inventory, limit, include, skip, run_id=run_id, artifacts_dir=state / "artifacts",
                       progress=progress)
    history.write_record(state, report.record(run_id, "audit", started, inventory))
    return report
