"""The lab runs a real cluster: kubeadm init/join with the binaries built from the Go module proxy, containerd 2.x,
kube-proxy, CoreDNS, a pod network between nodes and a workload on every node."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest

from kubeharden.lab import addons, cluster, connectivity, docker, kubernetes, runtime
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


def test_nodes_run_the_containerd_runc_and_cni_plugins_the_lab_built(lab):
    """The kubelet's own report of its runtime (the CRI answer), and the binaries: upstream's, not Debian's."""
    expected = runtime.CONTAINERD_RELEASES[lab.state().topology.containerd].lstrip("v")
    nodes = kubectl_json(lab, "get", "nodes")
    assert {item["status"]["nodeInfo"]["containerRuntimeVersion"] for item in nodes["items"]} == \
        {f"containerd://{expected}"}
    for node in ("cp1", "w1"):
        runc = docker.exec_(lab.container(node), "runc", "--version").stdout
        assert f"runc version {runtime.RUNC_VERSION.lstrip('v')}" in runc and "libseccomp" in runc, runc
        bridge = docker.exec_(lab.container(node), "/opt/cni/bin/bridge", check=False)
        assert runtime.CNI_PLUGINS_VERSION in bridge.stdout + bridge.stderr
        assert docker.exec_(lab.container(node), "dpkg", "-s", "containerd", check=False).returncode != 0
        unit = docker.exec_(lab.container(node), "systemctl", "show", "-p", "FragmentPath,ActiveState",
                            "containerd").stdout
        assert f"FragmentPath={runtime.NODE_UNIT}" in unit and "ActiveState=active" in unit, unit


def test_every_pod_is_ready_with_the_images_kubeadm_asks_for(lab):
    """kubeadm's addons (kube-proxy, CoreDNS) run under the image names kubeadm writes; flannel and kube-router
    run on every node; nothing in the cluster is left pending."""
    release = kubernetes.resolve(lab.state().topology.kubernetes)
    pods = kubectl_json(lab, "get", "pods", "--all-namespaces")["items"]
    not_ready = [p["metadata"]["name"] for p in pods
                 if {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready") != "True"]
    assert not_ready == []
    images = {(p["metadata"]["namespace"], p["metadata"].get("labels", {}).get("k8s-app")
               or p["metadata"].get("labels", {}).get("app.kubernetes.io/name")): p["spec"]["containers"][0]["image"]
              for p in pods}
    assert images[("kube-system", "kube-proxy")] == f"registry.k8s.io/kube-proxy:{release.version}"
    assert images[("kube-system", "kube-dns")] == f"registry.k8s.io/coredns/coredns:{release.coredns_version}"
    per_node = {}
    for pod in pods:
        per_node.setdefault(pod["spec"].get("nodeName"), set()).add(pod["metadata"]["name"].rsplit("-", 1)[0])
    for node in ("cp1", "w1"):
        assert {"kube-proxy", "flannel", "kube-router", "probe-a", "probe-b"} <= per_node[node], per_node[node]


def test_each_node_has_its_own_pod_subnet_linked_by_vxlan(lab):
    """The controller-manager's node CIDRs, flanneld's VXLAN device on every node, and each pod's address in its
    node's subnet."""
    nodes = {item["metadata"]["name"]: item["spec"]["podCIDR"] for item in kubectl_json(lab, "get", "nodes")["items"]}
    assert len(set(nodes.values())) == 2, nodes
    for node in ("cp1", "w1"):
        link = docker.exec_(lab.container(node), "ip", "-d", "link", "show", "flannel.1").stdout
        assert "vxlan id 1" in link and "dstport 8472" in link, link
    for pod in kubectl_json(lab, "get", "pods", "-n", addons.PROBE_NAMESPACE)["items"]:
        address = ipaddress.ip_address(pod["status"]["podIP"])
        assert address in ipaddress.ip_network(nodes[pod["spec"]["nodeName"]]), pod["metadata"]["name"]


def test_the_stock_cluster_passes_every_row_of_the_connectivity_matrix(lab):
    measured = connectivity.measure(lab.cluster_nodes(lab.state()))
    assert measured.failures() == {}, measured.table()
    assert measured.cells["nodeport-from-host"] == {"cp1": connectivity.NOT_APPLICABLE, "w1": connectivity.OK}
