"""execution-environment.yml: ansible-builder accepts it, and the package it copies installs complete.

Building the image needs a container registry for the base image, which this machine cannot reach."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_ansible_builder_creates_the_context_with_kubeharden_and_its_pins(tmp_path):
    if not shutil.which("ansible-builder"):
        pytest.skip("ansible-builder is not installed (pip install -e '.[test]')")
    created = subprocess.run(["ansible-builder", "create", "-f", str(ROOT / "execution-environment.yml"),
                              "-c", str(tmp_path / "context")], capture_output=True, text=True, cwd=ROOT)
    assert created.returncode == 0, created.stdout + created.stderr
    containerfile = next((tmp_path / "context").glob("*file")).read_text()
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    definition = yaml.safe_load((ROOT / "execution-environment.yml").read_text())["dependencies"]
    core = next(pin for pin in pins if pin.startswith("ansible-core"))
    assert definition["ansible_core"]["package_pip"] == core and core in containerfile
    assert "pip install --no-cache-dir /tmp/kubeharden-src" in containerfile

    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                "--target", str(target), str(tmp_path / "context/_build/kubeharden")],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    package = target / "kubeharden"
    assert len(list((package / "catalogue").glob("*.yml"))) == 5
    assert (package / "ansible_plugins/callback/kubeharden_changes.py").exists()
    assert (package / "cli.py").exists() and (package / "drift.py").exists()
