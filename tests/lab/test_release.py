"""The release named by `./dev test --release MINOR` (a pre-release, before kubeharden supports it), proven as the
supported ones are: site.yml on a fresh lab, a healthy control plane, no failing control, the cluster's users see
no difference, and drift finds nothing left and repairs a change. With bootstrap and upgrade (their own files, on
the same release), it is everything the supported releases prove.

The default release is proven by test_audit.py and test_drift.py in CI; this file runs only for a named release.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from kubeharden.lab import docker, kubernetes
from tests.lab.conftest import RELEASE_UNDER_TEST, matrix
from tests.lab.test_versions import assert_hardened_release

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not os.environ.get("KUBEHARDEN_TEST_RELEASE"),
                       reason="proves a release named with `./dev test --release MINOR`; the default release is "
                              "proven by test_audit.py and test_drift.py"),
]


def drift(lab, tmp_path, *extra: str) -> dict:
    done = subprocess.run(["kubeharden", "drift", "-i", str(lab.inventory_path), "--format", "json", "--no-progress",
                           "--state-dir", str(tmp_path / "drift"), *extra], capture_output=True, text=True)
    assert done.stdout.startswith("{"), done.stderr[-3000:]
    return json.loads(done.stdout)


def test_site_yml_hardens_the_release_under_test_and_drift_keeps_it(lab, tmp_path):
    release = lab.state().topology.kubernetes
    assert release.lstrip("v").startswith(RELEASE_UNDER_TEST + ".")
    if RELEASE_UNDER_TEST in kubernetes.PRERELEASE_MINORS:
        assert lab.group_vars_path.read_text().count("control_plane_allow_prerelease: true") == 1
    before = matrix(lab)
    assert before.failures() == {}, before.table()

    assert_hardened_release(lab)
    assert matrix(lab).cells == before.cells

    report = drift(lab, tmp_path)
    assert all(not entry["drifted"] and not entry["pending"] for entry in report["nodes"].values()), report["nodes"]
    docker.exec_(lab.container("cp1"), "chmod", "0644", "/etc/kubernetes/admin.conf", check=True)
    repaired = drift(lab, tmp_path, "--remediate")
    assert {node: sorted(ids) for node, ids in repaired["remediation"]["fixed"].items()} == {"cp1": ["1.1.13"]}
    mode = docker.exec_(lab.container("cp1"), "stat", "-c", "%a", "/etc/kubernetes/admin.conf").stdout.strip()
    assert mode == "600"
