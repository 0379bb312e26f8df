"""Run `kubeharden audit` on a molecule scenario's nodes from the controller, for verify tests."""

import json
import os
import subprocess


def audit_statuses(controls: str = "", *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    """(exit code, node -> control ID -> status) for the scenario's inventory; every control when none given."""
    selection = ["--controls", controls] if controls else []
    result = subprocess.run(["kubeharden", "audit", "-i", os.environ["MOLECULE_INVENTORY_FILE"], *selection,
                             "--format", "json", *extra], capture_output=True, text=True, check=False)
    report = json.loads(result.stdout)
    return result.returncode, {node: {r["id"]: r["status"] for r in data["results"]}
                               for node, data in report["nodes"].items()}
