"""`kubeharden audit`: run the catalogue on an inventory through ansible-runner and report the results."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kubeharden import catalogue, history
from kubeharden.collection import ansible_command
from kubeharden.runner import Progress, RunError, quiet_env, run_playbook

AUDIT_TASK = "Evaluate every control that applies to the node"
SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}
EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
# Every status a control can end in, as the table marks it; the last three decide nothing (the score leaves them
# out, JUnit counts them as skipped).
STATUS_MARKS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "manual": "MANUAL", "not_applicable": "N/A",
                "exception": "EXCEPTION"}
UNDECIDED = ("manual", "not_applicable", "exception")


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
                            for r in results],
                "certificates": [{k: c.get(k) for k in ("name", "subject", "days_left", "managed_by")}
                                 for c in self.certificates.get(node, [])]}

    def record(self, run_id: str, kind: str, started: str, inventory: str) -> dict:
        """The run's history record (kubeharden.history)."""
        return {"id": run_id, "kind": kind, "time": started, "inventory": str(Path(inventory).absolute()),
                "nodes": {node: self.node_entry(node) for node in self.results}, "errors": dict(self.host_errors),
                "artifacts": self.artifacts}

    def score(self, node: str) -> float:
        counts = Counter(r["status"] for r in self.results[node])
        decided = counts["pass"] + counts["fail"] + counts["error"]
        return round(100.0 * counts["pass"] / decided, 1) if decided else 100.0


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


def check_inventory(inventory: str) -> None:
    if problem := yaml_problem(Path(inventory)):
        raise AuditError(f"inventory {inventory} could not be parsed: {problem}")
    result = subprocess.run([ansible_command("ansible-inventory"), "-i", inventory, "--list"], capture_output=True,
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


def run_audit(inventory: str, limit: str | None = None, include: list[str] | None = None,
              skip: list[str] | None = None, *, run_id: str = "audit", artifacts_dir: Path | None = None,
              progress: Progress | None = None) -> AuditReport:
    check_inventory(inventory)
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


def detail(result: dict) -> str:
    """Why a result is what it is: its reason, else what was expected and what the node showed."""
    return result.get("reason") or f"expected {result.get('expected')}; {result.get('evidence')}"


# -- formats ---------------------------------------------------------------------------------------------

def to_table(report: AuditReport, verbose: bool = False) -> str:
    lines = []
    for node in sorted(report.results):
        counts = Counter(r["status"] for r in report.results[node])
        lines.append(f"== {node}: score {report.score(node)}% ({counts['pass']} pass, {counts['fail']} fail, "
                     f"{counts['error']} error, {counts['manual']} manual, {counts['not_applicable']} n/a"
                     + (f", {counts['exception']} exception" if counts["exception"] else "") + ")")
        version = report.versions.get(node)
        lines.append(f"   Kubernetes {version or '(no kubelet found)'}: {catalogue.benchmark_for(version or None)}")
        by_section: dict[str, list[dict]] = defaultdict(list)
        for result in report.results[node]:
            by_section[report.controls[result["id"]]["section"]].append(result)
        for section, results in by_section.items():
            shown = results if verbose else [r for r in results if r["status"] in ("fail", "error")]
            passed = sum(r["status"] == "pass" for r in results)
            lines.append(f"  {section}: {passed}/{len(results)} pass")
            for r in shown:
                control = report.controls[r["id"]]
                mark = STATUS_MARKS[r["status"]]
                lines.append(f"    {mark:6} {r['id']:10} [{control['severity']}] {control['title']}")
                lines.append(f"           {detail(r)}")
                if r["status"] == "fail":
                    lines.append(f"           fix: {catalogue.fix_text(report.fix(node, r['id']))}")
    lines += _exposure_table(report)
    for node, error in sorted(report.host_errors.items()):
        lines.append(f"== {node}: NOT AUDITED: {error}")
    if not report.limited:
        lines += [f"== NOT JUDGED: {len(ids)} selected control(s) for {roles} nodes: no audited host is one "
                  f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}). {UNJUDGED_HINT}"
                  for roles, ids in sorted(report.unjudged_roles().items())]
    return "\n".join(lines) + "\n"


UNJUDGED_HINT = ("Check the inventory's groups: control_plane (or kubespray's kube_control_plane), etcd, workers "
                 "(or kube_node), or map yours with kubeharden_groups; the cluster's controls are read from the "
                 "first control-plane host.")


EXPOSURE = "KH-EXP-1"


def _exposure_table(report: AuditReport) -> list[str]:
    """What the cluster exposes outside its network, one row each (KH-EXP-1, read once per cluster)."""
    for node, results in sorted(report.results.items()):
        found = next((r for r in results if r["id"] == EXPOSURE and isinstance(r.get("actual"), list)), None)
        if found is not None:
            rows = [row.split(": ", 1) for row in found["actual"]]
            width = max((len(what) for what, _how in rows), default=0)
            return [f"== Exposed outside the cluster network ({EXPOSURE}, read from {node}): {len(rows)}",
                    *(f"   {what:{width}}  {how}" for what, how in rows)]
    return []


def to_json(report: AuditReport) -> str:
    return json.dumps({"nodes": {node: {"score": report.score(node), "kubernetes": report.versions.get(node, ""),
                                        "benchmark": catalogue.benchmark_for(report.versions.get(node) or None),
                                        "results": results}
                                 for node, results in sorted(report.results.items())},
                       "errors": report.host_errors,
                       "unjudged": {} if report.limited else report.unjudged_roles()}, indent=2) + "\n"


def to_junit(report: AuditReport) -> str:
    suites = ET.Element("testsuites", name="kubeharden audit")
    for node, results in sorted(report.results.items()):
        counts = Counter(r["status"] for r in results)
        suite = ET.SubElement(suites, "testsuite", name=node, tests=str(len(results)),
                              failures=str(counts["fail"]), errors=str(counts["error"]),
                              skipped=str(sum(counts[status] for status in UNDECIDED)))
        for r in results:
            control = report.controls[r["id"]]
            case = ET.SubElement(suite, "testcase", classname=f"{node}.{control['section']}",
                                 name=f"{r['id']} {control['title']}")
            if r["status"] == "fail":
                ET.SubElement(case, "failure", message=detail(r), type=control["severity"]).text = \
                    f"fix: {catalogue.fix_text(report.fix(node, r['id']))}"
            elif r["status"] == "error":
                ET.SubElement(case, "error", message=detail(r))
            elif r["status"] in UNDECIDED:
                ET.SubElement(case, "skipped", message=f"{r['status']}: {detail(r)}")
    for node, error in sorted(report.host_errors.items()):
        suite = ET.SubElement(suites, "testsuite", name=node, tests="1", failures="0", errors="1")
        ET.SubElement(ET.SubElement(suite, "testcase", name="reachable"), "error", message=error)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def to_sarif(report: AuditReport) -> str:
    level = {"high": "error", "medium": "warning", "low": "note"}
    rules = [{"id": c["id"], "name": c["id"], "shortDescription": {"text": c["title"]},
              "properties": {"severity": c["severity"], "section": c["section"], "benchmark": c["benchmark"]},
              "help": {"text": f"Fixed by {catalogue.fix_text(catalogue.remediation_for(c))}"}}
             for c in report.controls.values()]
    results = []
    for node, node_results in sorted(report.results.items()):
        for r in node_results:
            if r["status"] not in ("fail", "error"):
                continue
            control = report.controls[r["id"]]
            results.append({
                "ruleId": r["id"], "level": "error" if r["status"] == "error" else level[control["severity"]],
                "message": {"text": f"{node}: {detail(r)}"},
                "locations": [{"logicalLocations": [{"name": node, "kind": "node"}]}]})
    sarif = {"version": "2.1.0", "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
             "runs": [{"tool": {"driver": {"name": "kubeharden", "rules": rules}}, "results": results}]}
    return json.dumps(sarif, indent=2) + "\n"


def label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def to_prometheus(report: AuditReport) -> str:
    lines = ["# HELP kubeharden_control_passed 1 if the control passes on the node, 0 if it fails.",
             "# TYPE kubeharden_control_passed gauge"]
    for node, results in sorted(report.results.items()):
        for r in results:
            if r["status"] in ("pass", "fail"):
                c = report.controls[r["id"]]
                lines.append(f'kubeharden_control_passed{{node="{label(node)}",control="{r["id"]}",'
                             f'severity="{c["severity"]}",section="{label(c["section"])}"}} '
                             f'{1 if r["status"] == "pass" else 0}')
    lines += ["# HELP kubeharden_controls Controls on the node by result status.", "# TYPE kubeharden_controls gauge"]
    for node, results in sorted(report.results.items()):
        counts = Counter(r["status"] for r in results)
        for status in STATUS_MARKS:
            lines.append(f'kubeharden_controls{{node="{label(node)}",status="{status}"}} {counts[status]}')
    lines += ["# HELP kubeharden_node_score Percentage of decided controls that pass.",
              "# TYPE kubeharden_node_score gauge"]
    lines += [f'kubeharden_node_score{{node="{label(n)}"}} {report.score(n)}' for n in sorted(report.results)]
    lines += ["# HELP kubeharden_node_audited 1 if the node could be audited.", "# TYPE kubeharden_node_audited gauge"]
    lines += [f'kubeharden_node_audited{{node="{label(n)}"}} 1' for n in sorted(report.results)]
    lines += [f'kubeharden_node_audited{{node="{label(n)}"}} 0' for n in sorted(report.host_errors)]
    lines += ["# HELP kubeharden_certificate_expiry_days Days until the certificate expires (negative: expired).",
              "# TYPE kubeharden_certificate_expiry_days gauge"]
    for node, certificates in sorted(report.certificates.items()):
        for cert in certificates:
            lines.append(f'kubeharden_certificate_expiry_days{{node="{label(node)}",certificate="{label(cert["name"])}",'
                         f'subject="{label(cert.get("subject") or "")}",managed_by="{cert.get("managed_by", "")}"}} '
                         f'{cert["days_left"]}')
    return "\n".join(lines) + "\n"


FORMATS = {"table": to_table, "json": to_json, "junit": to_junit, "sarif": to_sarif, "prometheus": to_prometheus}
