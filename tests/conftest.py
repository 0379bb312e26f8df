"""Shared test plumbing: the lab fixtures and the rule that a missing Docker engine skips, never fakes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ansible.module_utils
import pytest

ROOT = Path(__file__).resolve().parent.parent


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


# Tests import module_utils as Ansible's modules do (ansible.module_utils.kubeharden_X): the package's path also
# holds the checkout's module_utils.
ansible.module_utils.__path__.append(str(ROOT / "module_utils"))


def run_module(module: str, args: dict, check: bool = False, diff: bool = False) -> dict:
    """Run `module` on localhost through ansible itself; its result comes back from ansible's --tree file."""
    tree = tempfile.mkdtemp(prefix="kubeharden-module-")
    argv = ["ansible", "localhost", "-c", "local", "-m", module, "-a", json.dumps(args), "--tree", tree,
            "-e", f"ansible_python_interpreter={sys.executable}"]
    argv += ["--check"] if check else []
    argv += ["--diff"] if diff else []
    env = {**os.environ, "ANSIBLE_LIBRARY": str(ROOT / "modules"), "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"),
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0"}
    completed = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    try:
        # The tree file holds the module's result; whether it failed, and the diff, are in ansible's own output.
        return {**json.loads(Path(tree, "localhost").read_text()), "failed": completed.returncode != 0,
                "stdout": completed.stdout}
    finally:
        shutil.rmtree(tree)


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory):
    """Runs the tests record (kubeharden audit and drift) go to a directory of this session, not the machine's."""
    os.environ["KUBEHARDEN_STATE_DIR"] = str(tmp_path_factory.mktemp("kubeharden-state"))


# pytest-xdist hands whole files to its two workers in collection order (--no-loadscope-reorder, ./dev test): the
# longest first (by their durations in CI), so that the short ones fill the end and both workers finish together.
# Files not named here are shorter and keep their own order.
LONGEST_FIRST = ("tests/lab/test_ha_control_plane.py", "tests/lab/test_molecule.py", "tests/lab/test_drift.py",
                 "tests/lab/test_pki.py", "tests/lab/test_upgrade.py", "tests/lab/test_restart_gate.py",
                 "tests/lab/test_firewall.py", "tests/lab/test_versions.py", "tests/lab/test_lab_nodes.py",
                 "tests/lab/test_etcd.py", "tests/lab/test_bootstrap.py", "tests/lab/test_cluster_policies.py",
                 "tests/lab/test_audit.py", "tests/lab/test_install.py")
# Unless the older releases are cached already: on a new machine `./dev test` builds them in the background, and the
# files that need them come last.
OLDER_RELEASES = ("tests/lab/test_upgrade.py", "tests/lab/test_versions.py")


def pytest_collection_modifyitems(items):
    from kubeharden.lab import kubernetes

    order = list(LONGEST_FIRST)
    if not all(kubernetes.newest_cached(minor) for minor in kubernetes.SUPPORTED_MINORS):
        order = [path for path in order if path not in OLDER_RELEASES] + [None, *OLDER_RELEASES]
    rank = {path: index for index, path in enumerate(order) if path}
    unnamed = order.index(None) if None in order else len(order)
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], unnamed))


def pytest_runtest_logreport(report):
    """A failure written out as it happens (KUBEHARDEN_FAILURE_LOG, set by ./dev test), with its time: an hour of lab
    tests prints failures only at its end, and a run stopped at its time bound would print none."""
    path = os.environ.get("KUBEHARDEN_FAILURE_LOG")
    # Under pytest-xdist both the worker and the controller see each report: the controller writes it.
    if path and report.failed and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {report.nodeid} ({report.when}, {report.duration:.0f} s)\n"
                      f"{report.longreprtext}\n")
