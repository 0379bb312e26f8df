"""Prometheus text exposition, for node_exporter's textfile collector: gauges per control, node and certificate;
drift adds its own. The alert rules in deploy/prometheus read these names."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from kubeharden.formats.common import STATUS_MARKS, label


def _gauge(name: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]


def _waivers(report) -> list[str]:
    """Each waived result, and each waiver's days left, expiring and unused state (deploy/prometheus alerts)."""
    lines = _gauge("kubeharden_control_waived", "1 for each failing control a waiver accepts on the node.")
    for node, results in sorted(report.results.items()):
        for r in results:
            if r["status"] == "waived":
                lines.append(f'kubeharden_control_waived{{node="{label(node)}",control="{r["id"]}",'
                             f'owner="{label(r["waiver"]["owner"])}",expires="{r["waiver"]["expires"]}"}} 1')
    for name, help_text, value in (
            ("kubeharden_waiver_expiry_days", "Days until the waiver expires (negative: expired, its control is "
                                              "judged again).", lambda w: w["days_left"]),
            ("kubeharden_waiver_expiring", "1 if the waiver expires within kubeharden_waiver_warn_days.",
             lambda w: int(w["state"] == "expiring")),
            ("kubeharden_waiver_unused", "1 if the waiver matches no failing result: remove it.",
             lambda w: int(w["unused"]))):
        lines += _gauge(name, help_text)
        lines += [f'{name}{{waiver="{w["index"]}",control="{w["control"]}",owner="{label(w["owner"])}",'
                  f'hosts="{label(w["hosts"])}"}} {value(w)}' for w in report.waivers]
    return lines


def audit(report, verbose: bool = False) -> str:
    lines = _gauge("kubeharden_control_passed", "1 if the control passes on the node, 0 if it fails.")
    for node, results in sorted(report.results.items()):
        for r in results:
            if r["status"] in ("pass", "fail"):
                c = report.controls[r["id"]]
                lines.append(f'kubeharden_control_passed{{node="{label(node)}",control="{r["id"]}",'
                             f'severity="{c["severity"]}",section="{label(c["section"])}"}} '
                             f'{1 if r["status"] == "pass" else 0}')
    lines += _gauge("kubeharden_controls", "Controls on the node by result status.")
    for node, results in sorted(report.results.items()):
        counts = Counter(r["status"] for r in results)
        for status in STATUS_MARKS:
            lines.append(f'kubeharden_controls{{node="{label(node)}",status="{status}"}} {counts[status]}')
    lines += _gauge("kubeharden_node_score", "Percentage of decided controls that pass.")
    lines += [f'kubeharden_node_score{{node="{label(n)}"}} {report.score(n)}' for n in sorted(report.results)]
    lines += _gauge("kubeharden_node_score_with_waivers", "The node's score with its waived controls left out.")
    lines += [f'kubeharden_node_score_with_waivers{{node="{label(n)}"}} {report.score_with_waivers(n)}'
              for n in sorted(report.results)]
    lines += _waivers(report)
    lines += _gauge("kubeharden_node_audited", "1 if the node could be audited.")
    lines += [f'kubeharden_node_audited{{node="{label(n)}"}} 1' for n in sorted(report.results)]
    lines += [f'kubeharden_node_audited{{node="{label(n)}"}} 0' for n in sorted(report.host_errors)]
    lines += _gauge("kubeharden_certificate_expiry_days", "Days until the certificate expires (negative: expired).")
    for node, certificates in sorted(report.certificates.items()):
        for cert in certificates:
            lines.append(f'kubeharden_certificate_expiry_days{{node="{label(node)}",certificate="{label(cert["name"])}",'
                         f'subject="{label(cert.get("subject") or "")}",managed_by="{cert.get("managed_by", "")}"}} '
                         f'{cert["days_left"]}')
    return "\n".join(lines) + "\n"


def drift(report, verbose: bool = False) -> str:
    """The audit's metrics plus drift: per drifted control, per node counts, and when the run happened."""
    lines = [audit(report.audit).rstrip("\n"),
             *_gauge("kubeharden_control_drifted",
                     "1 for each control that drifted from the hardened state on the node.")]
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
        lines += _gauge(name, help_text)
        lines += [f'{name}{{node="{label(node)}"}} {value(entry)}' for node, entry in sorted(report.nodes.items())]
    lines += [*_gauge("kubeharden_drift_last_run_timestamp_seconds", "When this drift run started."),
              f"kubeharden_drift_last_run_timestamp_seconds {datetime.fromisoformat(report.time).timestamp():.0f}",
              *_gauge("kubeharden_drift_run_errors", "Nodes the run could not check or audit."),
              f"kubeharden_drift_run_errors {len(report.errors)}"]
    return "\n".join(lines) + "\n"
