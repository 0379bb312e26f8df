"""SARIF 2.1.0, as code-scanning dashboards take findings: a rule per control, a result per failing node."""

from __future__ import annotations

import json

from kubeharden import catalogue
from kubeharden.formats.common import detail, waiver_text

LEVELS = {"high": "error", "medium": "warning", "low": "note"}


def audit(report, verbose: bool = False) -> str:
    rules = [{"id": c["id"], "name": c["id"], "shortDescription": {"text": c["title"]},
              "properties": {"severity": c["severity"], "section": c["section"], "benchmark": c["benchmark"]},
              "help": {"text": f"Fixed by {catalogue.fix_text(catalogue.remediation_for(c))}"}}
             for c in report.controls.values()]
    results = []
    for node, node_results in sorted(report.results.items()):
        for r in node_results:
            if r["status"] not in ("fail", "error", "waived"):
                continue
            control = report.controls[r["id"]]
            found = {
                "ruleId": r["id"], "level": "error" if r["status"] == "error" else LEVELS[control["severity"]],
                "message": {"text": f"{node}: {detail(r)}"},
                "locations": [{"logicalLocations": [{"name": node, "kind": "node"}]}]}
            if r["status"] == "waived":  # SARIF's own way to say a finding was accepted, and by whom
                found["suppressions"] = [{"kind": "external", "status": "accepted",
                                          "justification": waiver_text(r["waiver"])}]
            results.append(found)
    sarif = {"version": "2.1.0", "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
             "runs": [{"tool": {"driver": {"name": "kubeharden", "rules": rules}}, "results": results}]}
    return json.dumps(sarif, indent=2) + "\n"
