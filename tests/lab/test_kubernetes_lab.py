"""The lab runs real Kubernetes: kubeadm init/join with the binaries built from the Go module proxy."""

from __future__ import annotations

import json
import os

import pytest

from kubeharden.lab import cluster, docker, kubernetes
from kubeharden.lab.lab import etcdctl

pytestmark = pytest.mark.lab

STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def kubectl_json(lab, *args: str) -> dict:
    result = cluster.kubectl(lab.container("cp1"), *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_apiserver_is_ready_and_every_node_is_ready(lab):
    ready = cluster.kubectl(lab.container("cp1"), "get", "--raw", "/readyz")
    assert ready.stdout.strip() == "ok", ready.stdout + ready.stderr
    nodes = kubectl_json(lab, "get", "nodes")
    states = {item["metadata"]["name"]: {c["type"]: c["status"] for c in item["status"]["conditions"]}["Ready"]
              for item in nodes["items"]}
    assert states == {"cp1": "True", "w1": "True"}


def test_the_binaries_report_the_release_they_were_built_from(lab):
    version = lab.state().topology.kubernetes
    nodes = kubectl_json(lab, "get", "nodes")
    assert {item["status"]["nodeInfo"]["kubeletVersion"] for item in nodes["items"]} == {version}
    server = kubectl_json(lab, "version")["serverVersion"]
    assert server["gitVersion"] == version
    kubeadm = docker.exec_(lab.container("w1"), "kubeadm", "version", "-o", "short").stdout.strip()
    assert kubeadm == version


def test_kubelets_run_every_static_pod_from_kubeadms_manifests(lab):
    pods = kubectl_json(lab, "get", "pods", "-n", "kube-system")
    running = {item["metadata"]["name"]: item["status"]["phase"] for item in pods["items"]}
    for component in STATIC_PODS:
        assert running.get(f"{component}-cp1") == "Running", running
    manifests = docker.exec_(lab.container("cp1"), "ls", "/etc/kubernetes/manifests").stdout.split()
    assert sorted(manifests) == sorted(f"{c}.yaml" for c in STATIC_PODS)


def test_etcd_is_the_built_release_and_healthy_with_kubeadms_certificates(lab):
    status = etcdctl(lab.container("cp1"), "endpoint", "status", "-w", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["Status"]["version"] == kubernetes.SUPPORTED_MINORS[
        ".".join(lab.state().topology.kubernetes.lstrip("v").split(".")[:2])].lstrip("v")


def test_the_kubelet_is_a_systemd_service_configured_by_kubeadm(lab):
    for node in ("cp1", "w1"):
        state = docker.exec_(lab.container(node), "systemctl", "is-active", "kubelet", check=False)
        assert state.stdout.strip() == "active", node
        config = docker.exec_(lab.container(node), "cat", "/var/lib/kubelet/config.yaml").stdout
        assert "failCgroupV1: false" in config, "the lab's setting for this cgroup v1 host reaches kubeadm's file"


def test_the_join_token_is_not_readable_by_others(lab):
    mode = docker.exec_(lab.container("w1"), "stat", "-c", "%a", cluster.KUBEADM_CONFIG).stdout.strip()
    assert mode == "600"


def test_the_host_kernel_is_never_written(lab):
    """The kubelet's tunables are presented to the node through bind mounts; the host keeps its own values."""
    with open("/proc/sys/vm/overcommit_memory") as host:
        host_value = host.read().strip()
    node_value = docker.exec_(lab.container("w1"), "cat", "/proc/sys/vm/overcommit_memory").stdout.strip()
    assert node_value == "1"
    if host_value == "1":
        pytest.skip("this host already runs vm.overcommit_memory=1: nothing to tell apart")
    assert host_value != node_value


@pytest.mark.skipif(os.environ.get("KUBEHARDEN_KEEP_LAB") == "1", reason="keeps the lab for inspection")
def test_up_again_keeps_the_cluster(lab):
    before = kubectl_json(lab, "get", "nodes")["items"][0]["metadata"]["uid"]
    lab.up(lab.state().topology)
    assert kubectl_json(lab, "get", "nodes")["items"][0]["metadata"]["uid"] == before
