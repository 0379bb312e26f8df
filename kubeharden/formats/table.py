"""The plain-text tables a person reads in a terminal."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import astuple

from kubeharden import catalogue
from kubeharden.formats.common import NOTEWORTHY, STATUS_MARKS, detail, waiver_states, waiver_text

UNJUDGED_HINT = ("Check the inventory's groups: control_plane (or kubespray's kube_control_plane), etcd, workers "
                 "(or kube_node), or map yours with kubeharden_groups; the cluster's controls are read from the "
                 "first control-plane host.")
EXPOSURE = "KH-EXP-1"


def audit(report, verbose: bool = False) -> str:
    """Per node: its score, each section's pass count, and the failing controls (every control with verbose)
    with why and the fix; then what the cluster exposes, the nodes not audited and the controls nobody judged."""
    lines = []
    for node in sorted(report.results):
        counts = Counter(r["status"] for r in report.results[node])
        waived = (f" ({report.score_with_waivers(node)}% with {counts['waived']} waived)" if counts["waived"]
                  else "")
        lines.append(f"== {node}: score {report.score(node)}%{waived} ({counts['pass']} pass, {counts['fail']} fail, "
                     f"{counts['error']} error, {counts['manual']} manual, {counts['not_applicable']} n/a"
                     + (f", {counts['exception']} exception" if counts["exception"] else "")
                     + (f", {counts['waived']} waived" if counts["waived"] else "") + ")")
        version = report.versions.get(node)
        lines.append(f"   Kubernetes {version or '(no kubelet found)'}: {catalogue.benchmark_for(version or None)}")
        by_section: dict[str, list[dict]] = defaultdict(list)
        for result in report.results[node]:
            by_section[report.controls[result["id"]]["section"]].append(result)
        for section, results in by_section.items():
            shown = results if verbose else [r for r in results if r["status"] in NOTEWORTHY]
            passed = sum(r["status"] == "pass" for r in results)
            lines.append(f"  {section}: {passed}/{len(results)} pass")
            for r in shown:
                control = report.controls[r["id"]]
                mark = STATUS_MARKS[r["status"]]
                lines.append(f"    {mark:6} {r['id']:10} [{control['severity']}] {control['title']}")
                lines.append(f"           {detail(r)}")
                if r["status"] == "waived":
                    lines.append(f"           waived: {waiver_text(r['waiver'])}")
                if r.get("waiver_expired"):
                    lines.append(f"           waiver EXPIRED: {waiver_text(r['waiver_expired'])}")
                if r["status"] == "fail":
                    lines.append(f"           fix: {catalogue.fix_text(report.fix(node, r['id']))}")
    lines += _exposure(report)
    lines += waivers(report.waivers)
    for node, error in sorted(report.host_errors.items()):
        lines.append(f"== {node}: NOT AUDITED: {error}")
    if not report.limited:
        lines += [f"== NOT JUDGED: {len(ids)} selected control(s) for {roles} nodes: no audited host is one "
                  f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}). {UNJUDGED_HINT}"
                  for roles, ids in sorted(report.unjudged_roles().items())]
    return "\n".join(lines) + "\n"


def _exposure(report) -> list[str]:
    """What the cluster exposes outside its network, one row each (KH-EXP-1, read once per cluster)."""
    for node, results in sorted(report.results.items()):
        found = next((r for r in results if r["id"] == EXPOSURE and isinstance(r.get("actual"), list)), None)
        if found is not None:
            rows = [row.split(": ", 1) for row in found["actual"]]
            width = max((len(what) for what, _how in rows), default=0)
            return [f"== Exposed outside the cluster network ({EXPOSURE}, read from {node}): {len(rows)}",
                    *(f"   {what:{width}}  {how}" for what, how in rows)]
    return []


def waivers(summaries: list[dict]) -> list[str]:
    """The waivers that need a person: expired ones (their controls fail again), expiring ones, unused ones."""
    lines = []
    for state, waiver in waiver_states(summaries):
        where = f"{waiver['control']} on {waiver['hosts']}"
        if state == "expired":
            now = f"failing on {', '.join(waiver['failing_on'])}" if waiver["failing_on"] else "it passes now"
            lines.append(f"== Waiver EXPIRED {-waiver['days_left']} day(s) ago, {where}: the control is judged again "
                         f"({now}). {waiver_text(waiver)}")
        elif state == "expiring":
            lines.append(f"== Waiver expiring in {waiver['days_left']} day(s), {where}: {waiver_text(waiver)}")
        else:
            lines.append(f"== Waiver unused, {where}: no failing result matches it; remove it. {waiver_text(waiver)}")
    return lines


def _indent(text: str, prefix: str = "        ") -> list[str]:
    return [prefix + line for line in text.splitlines()]


def _drift_node(report, node: str) -> list[str]:
    entry, audit_report = report.nodes[node], report.audit
    results = {r["id"]: r for r in audit_report.results[node]}
    failing = [r for r in audit_report.results[node] if r["status"] == "fail"]
    lines = [f"== {node}: {len(entry['drifted'])} drifted, {len(failing)} failing, {len(entry['pending'])} pending "
             f"change(s), score {audit_report.score(node)}%" + ("" if entry["baseline"] else " (no earlier drift run: "
                                                                 "every failing control with a pending fix counts)")]
    for cid in entry["drifted"]:
        control, result = audit_report.controls[cid], results[cid]
        lines.append(f"  DRIFTED {cid:10} [{control['severity']}] {control['title']}")
        lines.append(f"          {detail(result)}")
        lines.append(f"          fix: {catalogue.fix_text(audit_report.fix(node, cid))}")
        for change in entry["pending"]:
            if cid in change["controls"]:
                lines.append(f"          would restore ({change['task']}):")
                lines += _indent(change["diff"] or "(no diff shown by the task)", "            ")
    if entry["expected_failures"]:
        lines.append(f"  failing in the hardened state too (not drift): {', '.join(entry['expected_failures'])}")
    for cid in entry.get("waived_pending", []):
        fix = audit_report.fix(node, cid)
        lines.append(f"  WAIVED  {cid:10} yet site.yml would change it back: set {fix['variable']} to the waived value "
                     f"(README, Waivers); drift --remediate leaves its tags out ({', '.join(fix['tags'])})")
    for change in entry["pending"]:
        if not change["controls"] and not change.get("waived"):
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


def drift(report, verbose: bool = False) -> str:
    """Per node: the drifted controls with the diff that restores each, then the remediation (when one ran) and a
    one-line summary."""
    lines = []
    if report.remediation:
        if report.before:
            lines.append("Before remediation:")
            lines += ["  " + line for node in sorted(report.before.nodes)
                      for line in _drift_node(report.before, node)]
        fix = report.remediation
        lines.append(f"Remediation: site.yml on {', '.join(fix['nodes'])} with tags {', '.join(fix['tags'])} "
                     f"(exit {fix['rc']})" if fix["tags"] else
                     "Remediation: nothing run, every drifted control's tags would undo a waiver")
        for node, by_control in sorted(fix.get("withheld", {}).items()):
            for cid, tags in by_control.items():
                lines.append(f"  {node}: tags {', '.join(tags)} left out: they would undo waived {cid}")
        for node, ids in sorted(fix.get("left_drifted", {}).items()):
            lines.append(f"  {node}: left drifted (their tags are left out): {', '.join(ids)}")
        for node, ids in sorted(fix["fixed"].items()):
            lines.append(f"  {node}: fixed {', '.join(ids) or 'nothing'}")
        for node, error in sorted(fix["errors"].items()):
            lines.append(f"  {node}: REMEDIATION FAILED: {error}")
        if report.before:
            lines.append("After remediation:")
    for node in sorted(report.nodes):
        lines += _drift_node(report, node)
    lines += waivers(report.audit.waivers)
    for node, error in sorted(report.errors.items()):
        if node not in report.nodes or not report.nodes[node].get("check_error"):
            lines.append(f"== {node}: NOT CHECKED: {error}")
    total = sum(len(ids) for ids in report.drifted().values())
    unchecked = sorted(set(report.errors) - set(report.nodes))
    lines.append(f"{total} drifted control(s) on {len(report.drifted())} of {len(report.nodes)} node(s); "
                 + (f"{len(unchecked)} node(s) not checked and nothing remediated there "
                    f"({', '.join(unchecked)}); " if unchecked else "") + f"run {report.run_id}")
    return "\n".join(lines) + "\n"


IMAGE_HEADER = ("NAMESPACE", "POD", "NODE", "CONTAINER", "IMAGE", "DIGEST")


def images(rows, verbose: bool = False) -> str:
    """One row per container (kubeharden.images.RunningImage), columns aligned, then the counts."""
    cells = [IMAGE_HEADER, *(astuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(IMAGE_HEADER))]
    lines = ["  ".join(f"{cell:{width}}" for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    distinct = len({r.digest or r.image for r in rows})
    return "\n".join(lines) + f"\n{len(rows)} container(s), {distinct} distinct image(s)\n"
