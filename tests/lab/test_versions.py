"""Every supported Kubernetes release, hardened by site.yml on real kubeadm nodes, still runs and passes the audit.

The default release (the newest) is what every other lab test runs on; this file proves the older ones with
the same whole run: kubeadm init and join, site.yml, then the control plane's health and the audit. The release
before the newest is proven by tests/lab/test_upgrade.py, which then upgrades it (its own file: pytest's two
workers take one lab each).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from kubeharden.lab import cluster, kubernetes
from kubeharden.lab.lab import Topology
from tests.lab.conftest import (
    RELEASE_UNDER_TEST,
    _lab,
    assert_anonymous_health_only,
    assert_kubelets_verified,
    playbook,
)

pytestmark = pytest.mark.lab

OLDER = [minor for minor in kubernetes.SUPPORTED_MINORS if minor != kubernetes.DEFAULT_MINOR]
# kubeadm upgrades one minor at a time: the release before the one under test (the newest, or a pre-release) is
# proven, then upgraded, by test_upgrade.py.
UPGRADE_FROM = list(kubernetes.LAB_MINORS)[list(kubernetes.LAB_MINORS).index(RELEASE_UNDER_TEST) - 1]
# The releases this file proves on their own; never none, or the file would silently collect nothing.
PROVEN_HERE = [minor for minor in OLDER if minor != OLDER[-1]]
assert PROVEN_HERE, f"no supported release besides {kubernetes.DEFAULT_MINOR} and {UPGRADE_FROM} to prove here"
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
AUDITED = "1,2,4,KH-ETCD,KH-K8S,KH-PKI"


@pytest.fixture(scope="module", params=PROVEN_HERE)
def version_lab(request, tmp_path_factory):
    minor = request.param
    yield from _lab(tmp_path_factory, f"pytest-v{minor.replace('.', '')}", Topology(kubernetes=minor))


def test_site_yml_hardens_the_release_and_the_cluster_stays_healthy(version_lab):
    assert_hardened_release(version_lab)


def assert_hardened_release(version_lab) -> None:
    """site.yml on the lab's release: it runs, the control plane stays healthy, and nothing fails the audit."""
    run = playbook(version_lab, "site.yml")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    cp1 = version_lab.container("cp1")
    ready = cluster.kubectl(cp1, "get", "--raw", "/readyz")
    assert ready.stdout.strip() == "ok", ready.stdout + ready.stderr
    # A static pod restarted last (etcd) shows Pending until the kubelet reports it again: bounded wait.
    deadline = time.monotonic() + 120
    while True:
        pods = json.loads(cluster.kubectl(cp1, "get", "pods", "-n", "kube-system", "-o", "json", check=True).stdout)
        phases = {item["metadata"]["name"]: item["status"]["phase"] for item in pods["items"]}
        if all(phases.get(f"{component}-cp1") == "Running" for component in STATIC_PODS):
            break
        assert time.monotonic() < deadline, phases
        time.sleep(3)
    nodes = json.loads(cluster.kubectl(cp1, "get", "nodes", "-o", "json", check=True).stdout)
    versions = {item["status"]["nodeInfo"]["kubeletVersion"] for item in nodes["items"]}
    assert versions == {version_lab.state().topology.kubernetes}
    assert_anonymous_health_only(version_lab, "cp1")  # 1.2.1 on the real apiserver
    assert_kubelets_verified(version_lab)  # 1.2.5: kubectl logs on every node through the verified kubelet

    results = audit(version_lab)
    minor = ".".join(version_lab.state().topology.kubernetes.lstrip("v").split(".")[:2])
    # The node's release picks the benchmark and the rules of controls whose meaning changed with it.
    assert {node["kubernetes"] for node in results.values()} == {minor}
    assert all(node["benchmark"].startswith("CIS Kubernetes Benchmark v2.0.1") for node in results.values())
    failed = {r["id"] for node in results.values() for r in node["results"] if r["status"] in ("fail", "error")}
    assert failed == set(), failed


def audit(lab) -> dict:
    report = subprocess.run(["kubeharden", "audit", "-i", str(lab.inventory_path), "--format", "json",
                             "--controls", AUDITED], capture_output=True, text=True)
    assert report.stdout.startswith("{"), report.stderr[-2000:]
    return json.loads(report.stdout)["nodes"]


def statuses(results: dict) -> dict[str, dict[str, str]]:
    return {node: {r["id"]: r["status"] for r in data["results"]} for node, data in results.items()}
