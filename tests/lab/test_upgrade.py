"""The hardening survives the real `kubeadm upgrade` from the release before the newest to the newest.

A lab at that release (1.36) is hardened by site.yml (the same proof as tests/lab/test_versions.py gives the
other releases), then upgraded with the real kubeadm as the upgrade guide says. The cluster's own kubeadm
configuration carries the hardening (README, "Upgrading Kubernetes"); the real kubeadm also shows what an upgrade
from kubeadm's own configuration would have dropped, so the proof cannot pass by accident.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kubeharden.lab import addons, cluster, connectivity, docker, kubernetes
from kubeharden.lab.lab import Topology
from tests import kubeadm_node
from tests.lab.conftest import RELEASE_UNDER_TEST, _lab, assert_kubelets_verified
from tests.lab.test_versions import UPGRADE_FROM, assert_hardened_release, audit, statuses

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def upgrade_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, f"pytest-up{UPGRADE_FROM.replace('.', '')}", Topology(kubernetes=UPGRADE_FROM),
                    under_test=False)


def test_site_yml_hardens_the_release_before_the_newest(upgrade_lab):
    assert_hardened_release(upgrade_lab)


def addon_images(container: str) -> dict[str, str]:
    """The images of kubeadm's addons as the cluster runs them (kube-proxy's DaemonSet, CoreDNS's Deployment)."""
    found = {}
    for kind, name, key in (("daemonset", "kube-proxy", "kube-proxy"), ("deployment", "coredns", "coredns")):
        listed = cluster.kubectl(container, "get", kind, "-n", "kube-system", name, "-o",
                                 "jsonpath={.spec.template.spec.containers[0].image}", check=True)
        found[key] = listed.stdout.strip()
    return found


def kubelet_versions(container: str) -> set[str]:
    """The Nodes' kubelet versions; none while the restarted apiserver still refuses or forbids (RBAC warming)."""
    listed = cluster.kubectl(container, "get", "nodes", "-o", "json")
    if listed.returncode != 0:
        return set()
    return {item["status"]["nodeInfo"]["kubeletVersion"] for item in json.loads(listed.stdout)["items"]}


def settled_statuses(lab, timeout: float = 120) -> dict[str, dict[str, str]]:
    """The audit once no control is in error: right after the upgrade's restarts etcd may not answer yet."""
    deadline = time.monotonic() + timeout
    while True:
        found = statuses(audit(lab))
        if "error" not in {status for node in found.values() for status in node.values()} \
                or time.monotonic() >= deadline:
            return found
        time.sleep(5)


def flags(manifest: str) -> set[str]:
    return {arg for arg in yaml.safe_load(manifest)["spec"]["containers"][0]["command"][1:]}


def what_kubeadm_writes(tmp_path: Path, configuration: dict, version: str, address: str, node: str) -> set[str]:
    """The kube-apiserver flags the real kubeadm of `version` writes from a ClusterConfiguration, as
    `kubeadm upgrade` does: the cluster's configuration with the new version, and the node's own endpoint."""
    documents = [
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
         "localAPIEndpoint": {"advertiseAddress": address, "bindPort": 6443},
         "nodeRegistration": {"name": node, "criSocket": cluster.CRI_SOCKET}},
        {**configuration, "kubernetesVersion": version},
    ]
    release = kubeadm_node.release(".".join(version.lstrip("v").split(".")[:2]))
    root = kubeadm_node.write_node(tmp_path / f"{version}-{len(list(tmp_path.iterdir()))}", documents, release,
                                   phases=("control-plane apiserver",))
    return flags((root / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text())


def install(lab, release: kubernetes.Release, *binaries: str) -> None:
    """Put a release's binaries (and its images) on every node, as the upgrade guide's package steps do."""
    for node in lab.state().nodes:
        staging = f"/opt/kubeharden-upgrade/{release.version}"
        docker.exec_(node.container, "mkdir", "-p", staging)
        for name in binaries:
            docker.run("cp", str(release.binary(name)), f"{node.container}:{staging}/{name}")
            docker.exec_(node.container, "install", "-m", "0755", f"{staging}/{name}", f"/usr/bin/{name}")
        if "kubeadm" in binaries:  # the release's images and its addons' (kube-proxy, CoreDNS), as a mirror holds
            archives = {"release.tar": release.directory / kubernetes.IMAGES_ARCHIVE,
                        "addons.tar": addons.ensure_archive(release, lab.state().image, log=lambda line: None)}
            for name, archive in archives.items():
                docker.run("cp", str(archive), f"{node.container}:{staging}/{name}")
                docker.exec_(node.container, "ctr", "-n", "k8s.io", "images", "import", "--no-unpack=false",
                             f"{staging}/{name}", check=True)


def test_the_hardening_survives_kubeadm_upgrade_to_the_newest_release(upgrade_lab, tmp_path):
    """After site.yml, the real `kubeadm upgrade apply` (first control plane) and `kubeadm upgrade node` (the
    others), then the new kubelets: the audit's results are those of before, nothing is left to repair."""
    state = upgrade_lab.state()
    target = kubeadm_node.release(RELEASE_UNDER_TEST)
    cp1 = upgrade_lab.container("cp1")
    address = next(n.ip for n in state.nodes if n.name == "cp1")
    before = statuses(audit(upgrade_lab))
    running = flags(docker.exec_(cp1, "cat", "/etc/kubernetes/manifests/kube-apiserver.yaml").stdout)

    # The counterfactual, judged by the real kubeadm: the cluster's configuration as kubeadm init left it (the
    # copy kept before site.yml changed it) makes the upgrade drop every hardening flag; the hardened one keeps all.
    kept = docker.exec_(cp1, "sh", "-c", "ls /var/backups/kubeharden/configmaps/kube-system/kubeadm-config.*.json "
                                         "| head -1 | xargs cat").stdout
    stock = yaml.safe_load(json.loads(kept)["data"]["ClusterConfiguration"])
    carried = yaml.safe_load(json.loads(cluster.kubectl(cp1, "get", "configmap", "-n", "kube-system",
                                                        "kubeadm-config", "-o", "json", check=True).stdout)
                             ["data"]["ClusterConfiguration"])
    hardening = running - what_kubeadm_writes(tmp_path, stock, state.topology.kubernetes, address, "cp1")
    assert {"--profiling=false", "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt"} <= hardening
    lost_without = hardening - what_kubeadm_writes(tmp_path, stock, target.version, address, "cp1")
    assert lost_without == hardening, "an upgrade from kubeadm's own configuration keeps no hardening flag"
    assert hardening - what_kubeadm_writes(tmp_path, carried, target.version, address, "cp1") == set()

    # The upgrade, as the guide says: kubeadm first, apply on the first control plane, node on the others, then
    # the kubelet and kubectl, and the kubelets restarted.
    install(upgrade_lab, target, "kubeadm")
    matrix_before = connectivity.measure(upgrade_lab.cluster_nodes(state))
    assert matrix_before.failures() == {}, matrix_before.table()
    applied = docker.exec_(cp1, "kubeadm", "upgrade", "apply", target.version, "--yes",
                           "--ignore-preflight-errors=" + ",".join(cluster.IGNORED_PREFLIGHT), check=False)
    assert applied.returncode == 0, (applied.stdout + applied.stderr)[-3000:]
    for node in state.nodes[1:]:
        upgraded = docker.exec_(node.container, "kubeadm", "upgrade", "node",
                                "--ignore-preflight-errors=" + ",".join(cluster.IGNORED_PREFLIGHT), check=False)
        assert upgraded.returncode == 0, (node.name, (upgraded.stdout + upgraded.stderr)[-3000:])
    install(upgrade_lab, target, "kubelet", "kubectl")
    for node in state.nodes:
        docker.exec_(node.container, "sh", "-c", "systemctl daemon-reload && systemctl restart kubelet", check=True)
    cluster.wait_ready(upgrade_lab.cluster_nodes(state))
    deadline = time.monotonic() + 120  # a restarted kubelet reports its new version with its next status
    while (versions := kubelet_versions(cp1)) != {target.version}:
        assert time.monotonic() < deadline, versions
        time.sleep(3)
    # kubeadm upgraded its addons too, and the cluster's users see no difference.
    assert addon_images(cp1) == {"kube-proxy": f"registry.k8s.io/kube-proxy:{target.version}",
                                 "coredns": f"registry.k8s.io/coredns/coredns:{target.coredns_version}"}
    assert connectivity.measure(upgrade_lab.cluster_nodes(state)).cells == matrix_before.cells

    upgraded = flags(docker.exec_(cp1, "cat", "/etc/kubernetes/manifests/kube-apiserver.yaml").stdout)
    assert hardening <= upgraded, hardening - upgraded
    # What kubeadm cannot carry: it writes etcd's manifest as root again (KH-ETCD-2), and kube-proxy's DaemonSet
    # anew, its configuration files 0644 again (4.1.3). Nothing else changed: kube-proxy's settings (4.3.1) are
    # carried over in its ConfigMap.
    after = settled_statuses(upgrade_lab)
    changed = {(node, cid): (before[node].get(cid), status) for node in after for cid, status in after[node].items()
               if before[node].get(cid) != status}
    assert changed == {("cp1", "KH-ETCD-2"): ("pass", "fail"), ("cp1", "4.1.3"): ("pass", "fail"),
                       ("w1", "4.1.3"): ("pass", "fail")}, changed

    # The one command after an upgrade (README): drift repairs exactly that, and leaves nothing pending. Onto a
    # pre-release, the operator first opts the inventory in, as the roles' refusal says.
    if target.prerelease:
        with open(upgrade_lab.group_vars_path, "a") as group_vars:
            group_vars.write("control_plane_allow_prerelease: true\n")
    drift = subprocess.run(["kubeharden", "drift", "-i", str(upgrade_lab.inventory_path), "--remediate", "--format",
                            "json", "--no-progress", "--state-dir", str(tmp_path / "drift")],
                           capture_output=True, text=True)
    report = json.loads(drift.stdout)
    fixed = {node: sorted(ids) for node, ids in report["remediation"]["fixed"].items()}
    assert fixed == {"cp1": ["4.1.3", "KH-ETCD-2"], "w1": ["4.1.3"]}, report["remediation"]
    assert all(not entry["drifted"] and not entry["pending"] for entry in report["nodes"].values()), report["nodes"]
    assert settled_statuses(upgrade_lab) == before
    assert_kubelets_verified(upgrade_lab)
