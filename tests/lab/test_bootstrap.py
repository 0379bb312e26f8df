"""A cluster born hardened: bootstrap.yml renders the kubeadm configuration on lab nodes where Kubernetes is
installed but not initialised, the audit catalogue judges what kubeadm init would write from it, then the real
`kubeadm init --config` and `kubeadm join --config` run with it and the cluster comes up hardened."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from kubeharden.lab import cluster as lab_cluster
from kubeharden.lab import docker, kubernetes
from kubeharden.lab.lab import Topology
from tests.conftest import ROOT
from tests.lab.conftest import _lab, assert_kubelets_verified, matrix, playbook

CONFIG = "/etc/kubernetes/kubeadm-config.yaml"


@pytest.fixture(scope="module")
def boot_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, "pytest-boot", Topology(control_planes=1, workers=1, kubeadm=False))


def installed_version(lab) -> str:
    return lab.state().topology.kubernetes


def bootstrap(lab, version: str, *extra: str) -> subprocess.CompletedProcess:
    return playbook(lab, "bootstrap.yml", "--tags", "bootstrap", "-e", f"control_plane_kubernetes_version={version}",
                    *extra)


def rendered(lab) -> dict:
    text = docker.exec_(lab.container("cp1"), "cat", CONFIG).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(text)}


def judged(lab) -> list[dict]:
    """The catalogue over what kubeadm init would write from the node's configuration."""
    controls = subprocess.run(["python", "-m", "kubeharden.catalogue", "--json"], capture_output=True, text=True,
                              check=True).stdout
    # The catalogue is longer than one command-line argument may be: it travels as an extra-vars file.
    catalogue_vars = lab.inventory_path.parent / "catalogue-vars.json"
    catalogue_vars.write_text(json.dumps({"kubeharden_controls": json.loads(controls)}))
    done = subprocess.run(["ansible", "-i", str(lab.inventory_path), "cp1", "-b", "-m", "kubeharden_audit",
                           "-e", f"@{catalogue_vars}",
                           "-a", json.dumps({"controls": "{{ kubeharden_controls }}",
                                             "node_roles": ["control_plane", "etcd", "k8s_cluster"],
                                             "kubeadm_config": CONFIG}), "--tree", str(lab.inventory_path.parent)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert done.returncode == 0, done.stdout[-2000:]
    return json.loads((lab.inventory_path.parent / "cp1").read_text())["results"]


@pytest.mark.parametrize("version", ["v1.35.4", "v1.36.3", "v1.37.2"])
def test_rendered_configuration_passes_what_a_hardened_node_passes(boot_lab, version):
    # The node's kubeadm (the lab's release) validates the file rendered for its own release; for the others the
    # catalogue is the judge here (kubeadm 1.37 rightly refuses to deploy a 1.35 control plane).
    validate = [] if version == installed_version(boot_lab) else ["-e", "control_plane_kubeadm_validate=false"]
    done = bootstrap(boot_lab, version, *validate)
    assert done.returncode == 0, done.stdout[-3000:]
    documents = rendered(boot_lab)
    cluster = documents["ClusterConfiguration"]
    assert cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4" and isinstance(cluster["apiServer"]["extraArgs"], list)
    assert documents["KubeProxyConfiguration"]["metricsBindAddress"] == "127.0.0.1:10249"  # 4.3.1
    results = judged(boot_lab)
    failing = {r["id"] for r in results if r["status"] in ("fail", "error")}
    assert failing == set(), [r for r in results if r["id"] in failing]
    decided = {r["id"] for r in results if r["status"] == "pass"}
    assert {"1.2.15", "1.2.16", "1.2.27", "1.2.29", "1.3.2", "1.4.1", "2.2", "4.2.4", "4.2.14", "KH-K8S-2",
            "KH-K8S-3"} <= decided
    again = bootstrap(boot_lab, version, *validate)
    assert again.returncode == 0 and "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-2000:]


def test_a_weakened_configuration_is_stopped_before_kubeadm_runs(boot_lab):
    done = bootstrap(boot_lab, installed_version(boot_lab), "--tags", "bootstrap_kubeadm", "-e",
                     json.dumps({"control_plane_apiserver_extra_flags": {"profiling": "true"}}))
    assert done.returncode != 0
    assert "kubeadm would write a control plane that fails 1.2.15: --profiling=true" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize(("extra", "message"), [
    ({"control_plane_kubernetes_version": "v1.34.4"}, "Kubernetes 1.34 is outside the versions kubeharden supports"),
    # A pre-release only where the inventory opts in, never by default.
    ({"control_plane_kubernetes_version": "v1.38.0-beta.0", "control_plane_allow_prerelease": False},
     "Kubernetes 1.38 is a pre-release for kubeharden: set control_plane_allow_prerelease: true"),
    ({"control_plane_kubeadm_extra_args": {"kube-apiserver": {"profiling": "true"}}},
     "extra_args for kube-apiserver sets --profiling=true, which conflicts with kubeharden's --profiling=false"),
    # Only kubeadm knows: the node's kubeadm validates the rendered file before it is written.
    ({"control_plane_kubeadm_pod_subnet": "10.244.0.0/33"}, "networking.podSubnet: Invalid value"),
])
def test_bad_input_fails_before_the_configuration_changes(boot_lab, extra, message):
    before = docker.exec_(boot_lab.container("cp1"), "sha256sum", CONFIG).stdout
    done = bootstrap(boot_lab, installed_version(boot_lab), "-e", json.dumps(extra))
    assert done.returncode != 0 and message in done.stdout, done.stdout[-2000:]
    assert docker.exec_(boot_lab.container("cp1"), "sha256sum", CONFIG).stdout == before


def test_a_worker_gets_a_join_configuration_without_its_token_in_the_output(boot_lab):
    token = "abcdef.0123456789abcdef"
    join = {"api_server_endpoint": "192.0.2.100:6443", "token": token, "ca_cert_hashes": ["sha256:" + "0" * 64]}
    done = bootstrap(boot_lab, installed_version(boot_lab), "--limit", "w1", "--diff", "-e",
                     json.dumps({"control_plane_kubeadm_join": join}))
    assert done.returncode == 0, done.stdout[-2000:]
    assert token not in done.stdout
    text = docker.exec_(boot_lab.container("w1"), "cat", CONFIG).stdout
    (document,) = yaml.safe_load_all(text)
    assert document["kind"] == "JoinConfiguration" and document["discovery"]["bootstrapToken"]["token"] == token
    assert docker.exec_(boot_lab.container("w1"), "stat", "-c", "%a", CONFIG).stdout.strip() == "600"


def test_kubeadm_init_and_join_with_the_rendered_configuration_bring_up_a_hardened_cluster(boot_lab):
    """The real kubeadm is the judge of the rendered file: init on cp1, join on w1, then the audit."""
    version = installed_version(boot_lab)
    done = bootstrap(boot_lab, version)
    assert done.returncode == 0, done.stdout[-3000:]
    cp1, w1 = boot_lab.container("cp1"), boot_lab.container("w1")
    init = docker.exec_(cp1, "kubeadm", "init", "--config", CONFIG, "--upload-certs", check=False)
    assert init.returncode == 0, (init.stdout + init.stderr)[-3000:]
    token = docker.exec_(cp1, "kubeadm", "token", "create").stdout.strip()
    ca_pem = docker.exec_(cp1, "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    join = {"api_server_endpoint": f"{boot_lab.state().nodes[0].ip}:6443", "token": token,
            "ca_cert_hashes": [lab_cluster.ca_cert_hash(ca_pem)]}
    done = bootstrap(boot_lab, version, "--limit", "w1", "-e", json.dumps({"control_plane_kubeadm_join": join}))
    assert done.returncode == 0, done.stdout[-3000:]
    joined = docker.exec_(w1, "kubeadm", "join", "--config", CONFIG, check=False)
    assert joined.returncode == 0, (joined.stdout + joined.stderr)[-3000:]
    # The pod network a user installs after kubeadm (the lab's: flannel, kube-router's firewall, the probes).
    nodes = boot_lab.cluster_nodes(boot_lab.state())
    lab_cluster.install_network(nodes, kubernetes.resolve(version), log=lambda line: None)
    lab_cluster.wait_ready(nodes)
    manifest = docker.exec_(cp1, "cat", "/etc/kubernetes/manifests/kube-apiserver.yaml").stdout
    assert "--profiling=false" in manifest and "--encryption-provider-config=" in manifest
    assert "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt" in manifest
    # Born verifying kubelets (1.2.5): their serving certificates wait for the approval kubelet.yml makes.
    approved = playbook(boot_lab, "kubelet.yml", "--tags", "kubelet_serving")
    assert approved.returncode == 0 and "changed=1" in approved.stdout.split("PLAY RECAP")[-1], approved.stdout[-3000:]
    assert_kubelets_verified(boot_lab)
    # Born hardened, behind the firewall bootstrap.yml loaded before kubeadm ran: the cluster works for its users.
    measured = matrix(boot_lab)
    assert measured.failures() == {}, measured.table()
    report = subprocess.run(["kubeharden", "audit", "-i", str(boot_lab.inventory_path), "--format", "json",
                             "--controls", "1.2,1.3,1.4,4.2,KH-CRI"], capture_output=True, text=True)
    results = json.loads(report.stdout)["nodes"]
    failing = {r["id"] for node in results.values() for r in node["results"] if r["status"] in ("fail", "error")}
    assert failing == set(), failing
