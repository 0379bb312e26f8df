"""kube-bench beside kubeharden's audit on the same node: where both decide a CIS control, they must agree.

docs/kube-bench.md lists, with evidence, every control only one of them decides (kube-bench WARN where the
benchmark says Manual and kubeharden's policy enforces it, for instance); the tests hold the page to what the
two tools really say.
"""

from __future__ import annotations

import json
import re
import subprocess

from kubeharden.lab import kube_bench
from tests.conftest import ROOT

DOC = ROOT / "docs/kube-bench.md"


def kube_bench_statuses(lab, node: str, role: str) -> dict[str, str]:
    """kube-bench's verdict per control ID on the node (PASS, FAIL, WARN, INFO), with its own cfg/."""
    return kube_bench.run_on_node(lab.container(node), role, log=lambda line: None)


def kubeharden_statuses(lab) -> dict[str, dict[str, str]]:
    report = subprocess.run(["kubeharden", "audit", "-i", str(lab.inventory_path), "--format", "json"],
                            capture_output=True, text=True, check=False)
    assert report.stdout.startswith("{"), report.stderr[-2000:]
    return {node: {r["id"]: r["status"] for r in data["results"]}
            for node, data in json.loads(report.stdout)["nodes"].items()}


def differences(bench: dict[str, str], ours: dict[str, str]) -> dict[str, str]:
    """Control ID -> "kube-bench X, kubeharden y" wherever the two do not decide alike. kube-bench leaves all of
    section 5 to a person (WARN); kubeharden reads it over the API: those are the doc's one paragraph, not rows."""
    found = {}
    for cid in set(bench) & set(ours):
        if cid.startswith("5.") and bench[cid] == "WARN":
            continue
        bench_decides, ours_decides = bench[cid] in ("PASS", "FAIL"), ours[cid] in ("pass", "fail")
        if (bench_decides or ours_decides) and bench[cid].lower() != ours[cid]:
            found[cid] = f"kube-bench {bench[cid]}, kubeharden {ours[cid]}"
    return found


def contradictions(bench: dict[str, str], ours: dict[str, str]) -> set[str]:
    return {cid for cid in set(bench) & set(ours)
            if bench[cid] in ("PASS", "FAIL") and ours[cid] in ("pass", "fail") and bench[cid].lower() != ours[cid]}


def documented(state: str, role: str) -> dict[str, str]:
    """docs/kube-bench.md's table rows for a node state (stock, hardened) and role: ID -> the two verdicts."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"\d+(\.\d+)+", cells[0]) and cells[1] == state and role in cells[2]:
            rows[cells[0]] = f"kube-bench {cells[3]}, kubeharden {cells[4]}"
    return rows


def assert_second_opinion(lab, state: str) -> None:
    ours = kubeharden_statuses(lab)
    for node in lab.state().nodes:
        role = node.role
        bench = kube_bench_statuses(lab, node.name, role)
        # Where both decide, they agree: no control passes for one and fails for the other.
        assert contradictions(bench, ours[node.name]) == set(), (node.name, state)
        found = differences(bench, ours[node.name])
        assert found == documented(state, role), (node.name, state, found)
