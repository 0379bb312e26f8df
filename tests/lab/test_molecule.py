"""Every molecule scenario (molecule/*/molecule.yml), as `molecule test` runs it on a lab of its own: check mode,
converge, idempotence (a second converge changes nothing), testinfra's verify, destroy. Here rather than in a
phase of its own, so that the scenarios share the two pytest workers with the other lab files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_lab

pytestmark = pytest.mark.lab

# The default scenario (site.yml on cp1 + w1: check, converge, idempotence, its testinfra tests) runs in
# tests/lab/test_drift.py, on that file's lab, which needs site.yml converged anyway: one lab and one converge fewer.
# `molecule test` runs it like any scenario.
IN_TEST_DRIFT = ("default",)
SCENARIOS = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml")
                   if path.parent.name not in IN_TEST_DRIFT)
# Seconds per scenario: a hung one fails with its log rather than holding the run. The default scenario checks,
# converges and converges again site.yml on a whole cluster (it reached verify at 20 min with three labs running).
LIMIT = 1800
# A failed idempotence step has been seen to leave molecule's own exit status at 0: its log says so.
FAILURE_MARKS = ("CRITICAL", "Executed: Failed")


def molecule() -> str:
    return shutil.which("molecule") or str(Path(sys.executable).with_name("molecule"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_every_step(scenario):
    require_lab()
    log = ROOT / ".cache" / f"molecule-{scenario}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w", encoding="utf-8") as output:
        run = subprocess.Popen([molecule(), "test", "-s", scenario], cwd=ROOT, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = run.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)  # molecule and the ansible runs under it
            run.wait()
            code = None
            # Killed before its own destroy step: its lab would load the machine for the rest of the run.
            subprocess.run([molecule(), "destroy", "-s", scenario], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                           timeout=300, check=False)
    text = log.read_text(encoding="utf-8", errors="replace")
    tail = "\n".join(text.splitlines()[-80:])
    assert code is not None, f"molecule {scenario} was stopped after {LIMIT} s; the end of {log}:\n{tail}"
    marks = [mark for mark in FAILURE_MARKS if mark in text]
    assert code == 0 and not marks, f"molecule {scenario} failed (exit {code}, {marks}); the end of {log}:\n{tail}"
