"""Rendering a hardened kubeadm configuration, and reading back what kubeadm init will write from it."""

from __future__ import annotations

import re

import pytest
from ansible.module_utils import kubeharden_kubeadm as kubeadm

SPEC = {"kubernetes_version": "v1.37.2", "advertise_address": "192.0.2.10", "node_name": "cp1",
        "flags": {"kube-apiserver": {"profiling": "false", "authorization-mode": "Node,RBAC",
                                     "audit-log-path": "/var/log/kubernetes/audit/audit.log",
                                     "token-auth-file": None},
                  "etcd": {"client-cert-auth": "true", "auto-tls": None}},
        "kubelet": {"readOnlyPort": 0, "authentication": {"anonymous": {"enabled": False}}}}


def kinds(documents):
    return {d["kind"]: d for d in documents}


@pytest.mark.parametrize("version", ["v1.35.4", "v1.36.3", "v1.37.2"])
def test_extra_args_are_v1beta4_name_value_pairs(version):
    documents = kubeadm.render({**SPEC, "kubernetes_version": version})
    cluster = kinds(documents)["ClusterConfiguration"]
    assert cluster["apiVersion"] == kubeadm.V1BETA4 and isinstance(cluster["apiServer"]["extraArgs"], list)
    args = kubeadm.from_extra_args(cluster["apiServer"]["extraArgs"], "apiServer")
    # Only what differs from kubeadm's defaults; a removal of a flag kubeadm never sets needs nothing.
    assert args == {"profiling": "false", "audit-log-path": "/var/log/kubernetes/audit/audit.log"}
    assert "etcd" not in cluster or "extraArgs" not in cluster["etcd"]["local"]
    volumes = cluster["apiServer"]["extraVolumes"]
    assert [(v["hostPath"], v["readOnly"]) for v in volumes] == [("/var/log/kubernetes/audit", False)]


def test_effective_flags_are_kubeadm_defaults_plus_extra_args():
    result = kubeadm.effective(kubeadm.render(SPEC))
    apiserver = result["flags"]["kube-apiserver"]
    assert apiserver["profiling"] == "false" and apiserver["client-ca-file"] == "/etc/kubernetes/pki/ca.crt"
    assert apiserver["advertise-address"] == "192.0.2.10" and "token-auth-file" not in apiserver
    assert result["flags"]["etcd"]["name"] == "cp1" and result["flags"]["etcd"]["client-cert-auth"] == "true"
    # kubeadm leaves the zero port out of config.yaml, and the kubelet reads it as 0 again
    assert "readOnlyPort" not in result["kubelet"] and result["kubelet"]["rotateCertificates"] is True
    assert kinds(kubeadm.render(SPEC))["KubeProxyConfiguration"]["metricsBindAddress"] == "127.0.0.1:10249"


@pytest.mark.parametrize(("change", "message"), [
    ({"kubernetes_version": "v1.34.4"}, "kubernetes_version v1.34.4 is not supported"),
    ({"kubernetes_version": "v1.38.0-beta.0"}, "is a pre-release for kubeharden"),
    ({"kubernetes_version": "v1.39.0"}, "for Kubernetes 1.35 to 1.37"),
    ({"kubernetes_version": "latest"}, "kubernetes_version 'latest' is not a version"),
    ({"extra_args": {"kube-apiserver": {"profiling": "true"}}},
     "extra_args for kube-apiserver sets --profiling=true, which conflicts with kubeharden's --profiling=false"),
    ({"extra_args": {"kube-apiserver": {"token-auth-file": "/etc/tokens.csv"}}},
     "conflicts with kubeharden's removal"),
    ({"flags": {"kube-apiserver": {"enable-bootstrap-token-auth": None}}},
     "kubeharden removes --enable-bootstrap-token-auth, which kubeadm sets by default"),
    ({"advertise_address": ""}, "advertise_address is required"),
])
def test_bad_input_names_the_setting(change, message):
    with pytest.raises(kubeadm.ConfigError, match=re.escape(message)):
        kubeadm.render({**SPEC, **change})


def test_a_prerelease_is_rendered_only_when_opted_in():
    documents = kubeadm.render({**SPEC, "kubernetes_version": "v1.38.0-beta.0", "allow_prerelease": True})
    assert kinds(documents)["ClusterConfiguration"]["kubernetesVersion"] == "v1.38.0-beta.0"
    assert kubeadm.effective(documents)["flags"]["kube-apiserver"]["profiling"] == "false"


def test_agreeing_extra_args_are_accepted_and_others_added():
    spec = {**SPEC, "extra_args": {"kube-apiserver": {"profiling": "false", "event-ttl": "2h"}}}
    args = kubeadm.effective(kubeadm.render(spec))["flags"]["kube-apiserver"]
    assert args["event-ttl"] == "2h" and args["profiling"] == "false"


def test_a_configuration_in_the_wrong_form_is_refused():
    documents = kubeadm.render(SPEC)
    kinds(documents)["ClusterConfiguration"]["apiServer"]["extraArgs"] = {"profiling": "false"}
    with pytest.raises(kubeadm.ConfigError, match=r"apiServer\.extraArgs must be a list"):
        kubeadm.effective(documents)
    kinds(documents)["ClusterConfiguration"]["apiVersion"] = kubeadm.V1BETA3
    with pytest.raises(kubeadm.ConfigError, match=r"no longer reads from Kubernetes 1\.36"):
        kubeadm.effective(documents)


def test_join_configuration_for_a_control_plane_node():
    join = {"api_server_endpoint": "192.0.2.100:6443", "token": "abcdef.0123456789abcdef",
            "ca_cert_hashes": ["sha256:" + "0" * 64], "control_plane": True, "certificate_key": "k" * 64}
    (document,) = kubeadm.render({**SPEC, "join": join})
    assert document["kind"] == "JoinConfiguration" and document["controlPlane"]["certificateKey"] == "k" * 64
    assert document["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "192.0.2.100:6443"
    with pytest.raises(kubeadm.ConfigError, match=r"join\.token is required"):
        kubeadm.render({**SPEC, "join": {**join, "token": ""}})
