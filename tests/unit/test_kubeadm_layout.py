import datetime as dt

import pytest
import yaml

from kubeharden.lab import kubeadm, pki
from tests.conftest import load_static_pod_runner

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MEMBERS = [kubeadm.Member("cp1", "172.30.0.11"), kubeadm.Member("cp2", "172.30.0.12")]


@pytest.fixture(scope="module")
def cas():
    return pki.ClusterCAs.create(NOW)


@pytest.fixture(scope="module")
def control_plane(cas):
    return {f.path: f for f in kubeadm.control_plane_layout(cas, MEMBERS[0], MEMBERS, NOW, host_etcd=False).files}


def manifest(layout, name):
    return yaml.safe_load(layout[f"/etc/kubernetes/manifests/{name}.yaml"].content)


@pytest.mark.parametrize("name", ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"])
def test_every_file_a_flag_names_is_mounted(control_plane, name):
    runner = load_static_pod_runner()
    pod = manifest(control_plane, name)
    command = pod["spec"]["containers"][0]["command"]
    assert command[0] == name
    assert runner.unmounted_paths(command, runner.host_path_map(pod)) == []


def test_manifests_are_serialised_like_kubeadm(control_plane):
    text = control_plane["/etc/kubernetes/manifests/kube-apiserver.yaml"].content.decode()
    assert text.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n")
    assert "  containers:\n  - command:\n    - kube-apiserver\n" in text
    assert text.endswith("status: {}\n")


def test_kubeadm_defaults_that_cis_flags(control_plane):
    flags = manifest(control_plane, "kube-apiserver")["spec"]["containers"][0]["command"]
    assert "--enable-admission-plugins=NodeRestriction" in flags
    assert not any(f.startswith(("--profiling", "--audit-log-path", "--anonymous-auth")) for f in flags)
    assert control_plane["/var/lib/kubelet/config.yaml"].mode == 0o644
    assert control_plane["/etc/kubernetes/manifests/etcd.yaml"].mode == 0o600
    assert control_plane["/var/lib/etcd"].owner == "root"


def test_etcd_initial_cluster_lists_every_member(control_plane):
    flags = manifest(control_plane, "etcd")["spec"]["containers"][0]["command"]
    assert "--initial-cluster=cp1=https://172.30.0.11:2380,cp2=https://172.30.0.12:2380" in flags
    assert "--client-cert-auth=true" in flags and "--peer-client-cert-auth=true" in flags


def test_host_etcd_has_no_manifest_and_an_env_file(cas):
    layout = {f.path: f for f in kubeadm.control_plane_layout(cas, MEMBERS[0], MEMBERS, NOW, host_etcd=True).files}
    assert "/etc/kubernetes/manifests/etcd.yaml" not in layout
    env = layout["/etc/default/etcd"].content.decode()
    assert "ETCD_CLIENT_CERT_AUTH=true\n" in env
    assert "ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt\n" in env
    assert layout["/etc/etcd/pki/server.key"].owner == "etcd"
    apiserver = yaml.safe_load(layout["/etc/kubernetes/manifests/kube-apiserver.yaml"].content)
    assert "--etcd-servers=https://172.30.0.11:2379,https://172.30.0.12:2379" in \
        apiserver["spec"]["containers"][0]["command"]


def test_worker_has_only_kubelet_state(cas):
    layout = {f.path: f for f in kubeadm.worker_layout(cas, "w1", "172.30.0.101", "https://172.30.0.11:6443",
                                                        NOW).files}
    assert "/etc/kubernetes/pki/ca.key" not in layout
    assert "/etc/kubernetes/admin.conf" not in layout
    kubeconfig = yaml.safe_load(layout["/etc/kubernetes/kubelet.conf"].content)
    assert kubeconfig["users"][0]["user"]["client-certificate"] == "/var/lib/kubelet/pki/kubelet-client-current.pem"
    assert layout["/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"].mode == 0o644
