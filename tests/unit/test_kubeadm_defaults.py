"""Real kubeadm is the judge of what kubeharden predicts it writes.

The audit judges a rendered kubeadm configuration before `kubeadm init` runs (bootstrap.yml) by predicting the
static pod flags and the kubelet configuration kubeadm will write from it (`kubeharden_kubeadm.effective`). Here
each cached release's kubeadm writes a node from the same configuration (`init phase ... --rootfs`), and the
prediction must be exactly what it wrote.
"""

from __future__ import annotations

import pytest
import yaml
from ansible.module_utils import kubeharden_kubeadm as kubeadm

from tests import kubeadm_node

SPEC = {"advertise_address": kubeadm_node.NODE_IP, "node_name": kubeadm_node.NODE_NAME,
        "pod_subnet": "10.244.0.0/16",
        "flags": {"kube-apiserver": {"profiling": "false", "audit-log-path": "/var/log/kubernetes/audit/audit.log",
                                     "audit-policy-file": "/etc/kubernetes/audit/policy.yaml",
                                     "token-auth-file": None},
                  "kube-controller-manager": {"profiling": "false", "terminated-pod-gc-threshold": "10"},
                  "kube-scheduler": {"profiling": "false"},
                  "etcd": {"client-cert-auth": "true", "auto-tls": None}},
        "kubelet": {"readOnlyPort": 0, "protectKernelDefaults": True, "eventRecordQPS": 5,
                    "tlsCipherSuites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]}}


def flags(pod: dict) -> dict[str, str]:
    return dict(item[2:].split("=", 1) for item in pod["spec"]["containers"][0]["command"][1:])


@pytest.fixture(scope="module", params=kubeadm_node.cached_minors() or [kubeadm_node.kubernetes.DEFAULT_MINOR])
def written(request, tmp_path_factory):
    """(the rendered documents, the root kubeadm wrote from them) for one cached release."""
    release = kubeadm_node.release(request.param)
    documents = kubeadm.render({**SPEC, "kubernetes_version": release.version})
    root = kubeadm_node.write_node(tmp_path_factory.mktemp(f"kubeadm-{request.param}"), documents, release,
                                   ("control-plane all", "etcd local", "kubelet-start"))
    return documents, root


def test_static_pod_flags_are_what_kubeadm_writes(written):
    documents, root = written
    predicted = kubeadm.effective(documents)["flags"]
    for component in kubeadm.COMPONENTS:
        pod = yaml.safe_load((root / f"etc/kubernetes/manifests/{component}.yaml").read_text())
        assert predicted[component] == flags(pod), component


def test_kubelet_configuration_is_what_kubeadm_writes(written):
    documents, root = written
    assert kubeadm.effective(documents)["kubelet"] == yaml.safe_load((root / "var/lib/kubelet/config.yaml").read_text())


def test_default_mounts_are_what_kubeadm_mounts(written):
    """A flag's file outside these gets an extraVolume: they must be mounts kubeadm really gives each pod."""
    _, root = written
    for component, paths in kubeadm.DEFAULT_MOUNTS.items():
        pod = yaml.safe_load((root / f"etc/kubernetes/manifests/{component}.yaml").read_text())
        mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert set(paths) <= mounts, component


def test_rendered_extra_volumes_are_mounted(written):
    _, root = written
    pod = yaml.safe_load((root / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text())
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/var/log/kubernetes/audit"] is False and mounts["/etc/kubernetes/audit"] is True
