"""kubeharden installed as a Python user installs it: a wheel in a fresh venv, run from outside the checkout.

The wheel carries the Ansible collection its commands run, and not the node lab (a developer's tool, run from the
checkout); the wheel's audit of a real lab node says exactly what the checkout's says of the same node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_lab


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    scratch = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(scratch / "dist"),
                            str(ROOT)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    wheel = next((scratch / "dist").glob("kubeharden-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(scratch / "venv")], check=True)
    installed = subprocess.run([str(scratch / "venv/bin/pip"), "install", "-q", str(wheel)], capture_output=True,
                               text=True, check=False)
    assert installed.returncode == 0, installed.stderr
    return scratch / "venv"


def run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command of the venv, not activated, with nothing of the checkout in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KUBEHARDEN_HOME", "PYTHONPATH"))}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=cwd,
                          env=env, check=False)


def test_the_command_works_with_no_checkout(venv, tmp_path):
    done = run(venv, "kubeharden", "--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("kubeharden "), done.stderr
    where = run(venv, "python", "-c", "import kubeharden.runner as r; print(r.ansible_content()[0])", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    playbooks = Path(where.stdout.strip())
    assert playbooks.is_relative_to(venv) and (playbooks / "site.yml").exists()  # the wheel's collection
    tarball = run(venv, "kubeharden", "collection", "build", "--output", str(tmp_path), cwd=tmp_path)
    assert tarball.returncode == 0 and Path(tarball.stdout.strip()).exists(), tarball.stderr
    with tarfile.open(tarball.stdout.strip()) as packed:
        assert "LICENSE" in packed.getnames() and "playbooks/catalogue.json" in packed.getnames()
    # What pip shows of the license, and the license's text in the installed distribution.
    metadata = run(venv, "python", "-c", "import importlib.metadata as m; d = m.distribution('kubeharden'); "
                   "print(d.metadata['License-Expression']); print(*(f for f in d.files if f.name == 'LICENSE'))",
                   cwd=tmp_path)
    expression, license_file = metadata.stdout.split("\n")[:2]
    assert expression == "Apache-2.0" and license_file.endswith("LICENSE"), metadata.stdout + metadata.stderr
    # The node lab stays in the checkout: no `lab` command, no kubeharden.lab package in the wheel.
    lab = run(venv, "kubeharden", "lab", "status", cwd=tmp_path)
    assert lab.returncode == 2 and "invalid choice: 'lab'" in lab.stderr, lab.stderr
    assert run(venv, "python", "-c", "import kubeharden.lab", cwd=tmp_path).returncode != 0


def checkout_lab(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The checkout's `kubeharden lab`, which brings up the lab the wheel's commands then run on."""
    return subprocess.run([sys.executable, "-m", "kubeharden.cli", "lab", *argv], capture_output=True, text=True,
                          cwd=cwd, check=False)


def test_lab_up_audit_and_down_from_the_wheel(venv, tmp_path):
    require_lab()
    up = checkout_lab("up", "--name", "pytest-wheel", "--workers", "0", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        inventory = tmp_path / "inventories/pytest-wheel/hosts.yml"
        installed = run(venv, "kubeharden", "audit", "-i", str(inventory), "--format", "json", cwd=tmp_path)
        checkout = subprocess.run([sys.executable, "-m", "kubeharden.cli", "audit", "-i", str(inventory),
                                   "--format", "json"], capture_output=True, text=True, cwd=ROOT, check=False)
        statuses = []
        for report in (installed, checkout):  # a stock node: controls fail (exit 1), none in error
            assert report.returncode == 1 and report.stdout.startswith("{"), report.stderr[-2000:]
            statuses.append({r["id"]: r["status"] for r in json.loads(report.stdout)["nodes"]["cp1"]["results"]})
        assert len(statuses[0]) > 100 and "error" not in statuses[0].values()
        assert statuses[0] == statuses[1]
        # drift runs site.yml in check mode: every role and module of the wheel's collection, on a real node.
        drift = run(venv, "kubeharden", "drift", "-i", str(inventory), "--format", "json", "--no-progress",
                    "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
        assert drift.stdout.startswith("{"), drift.stderr[-2000:]
        report = json.loads(drift.stdout)
        assert report["errors"] == {} and drift.returncode in (0, 1), report
        pending = {change["task"] for change in report["nodes"]["cp1"]["pending"]}
        assert len(pending) > 10, pending  # a stock node: site.yml would change many things
    finally:
        down = checkout_lab("down", "--name", "pytest-wheel", cwd=tmp_path)
    assert down.returncode == 0 and "removed 1 node(s)" in down.stdout, down.stderr
