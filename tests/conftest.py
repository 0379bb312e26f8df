"""Shared test plumbing: the lab fixtures and the rule that a missing Docker engine skips, never fakes."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "kubeharden/lab/node_files/usr/local/lib/kubeharden-lab/static-pod-runner"


def load_static_pod_runner():
    """The runner is a script installed on nodes; import it as a module to test its pure functions."""
    loader = importlib.machinery.SourceFileLoader("static_pod_runner", str(RUNNER))
    spec = importlib.util.spec_from_loader("static_pod_runner", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def require_lab() -> None:
    """Skip (with the reason) when no Docker engine answers; CI sets KUBEHARDEN_REQUIRE_LAB=1 to fail instead."""
    from kubeharden.lab import docker
    from kubeharden.lab.errors import LabError

    try:
        docker.require_engine()
    except LabError as error:
        if os.environ.get("KUBEHARDEN_REQUIRE_LAB") == "1":
            pytest.fail(f"KUBEHARDEN_REQUIRE_LAB=1 but {error}")
        pytest.skip(f"lab tests need a Docker engine: {error}")


# module_utils are imported by Ansible as ansible.module_utils.X; tests import them directly.
sys.path.insert(0, str(ROOT / "module_utils"))
