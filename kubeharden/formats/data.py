"""JSON: every result as the audit read it, for tools and for the history."""

from __future__ import annotations

import json
from dataclasses import asdict

from kubeharden import catalogue


def audit(report, verbose: bool = False) -> str:
    return json.dumps({"nodes": {node: {"score": report.score(node),
                                        "score_with_waivers": report.score_with_waivers(node),
                                        "kubernetes": report.versions.get(node, ""),
                                        "benchmark": catalogue.benchmark_for(report.versions.get(node) or None),
                                        "results": results}
                                 for node, results in sorted(report.results.items())},
                       "errors": report.host_errors,
                       "unjudged": {} if report.limited else report.unjudged_roles(),
                       "waivers": report.waivers}, indent=2) + "\n"


def _drift_data(report) -> dict:
    data = {"run": report.run_id, "time": report.time,
            "nodes": {node: {**entry, "score": report.audit.score(node)}
                      for node, entry in sorted(report.nodes.items())},
            "errors": report.errors, "waivers": report.audit.waivers}
    if report.remediation:
        data["remediation"] = report.remediation
    if report.before:
        data["before"] = _drift_data(report.before)
    return data


def drift(report, verbose: bool = False) -> str:
    return json.dumps(_drift_data(report), indent=2) + "\n"


def images(rows, verbose: bool = False) -> str:
    return json.dumps({"images": [asdict(r) for r in rows]}, indent=2) + "\n"
