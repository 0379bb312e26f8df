import copy
import datetime as dt

import pytest
import yaml
from ansible.module_utils import kubeharden_manifest as manifest

from tests import kubeadm_node


def apiserver():
    """The kube-apiserver manifest real kubeadm writes (the default release)."""
    return yaml.safe_load(kubeadm_node.node_file("/etc/kubernetes/manifests/kube-apiserver.yaml"))


def unmounted_paths(pod: dict) -> list[str]:
    """Absolute paths in the container's flags that no hostPath mount of the pod brings into the container."""
    mounts = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    paths = [value for flag in command(pod)[1:] if "=" in flag
             for value in flag.split("=", 1)[1].split(",") if value.startswith("/")]
    return [p for p in paths if not any(p == m or p.startswith(m.rstrip("/") + "/") for m in mounts)]


def command(pod):
    return pod["spec"]["containers"][0]["command"]


def test_set_flags_replaces_inserts_sorted_and_removes():
    cmd = ["kube-apiserver", "--a=1", "--c=3", "--c=4", "--e=5"]
    assert manifest.set_flags(cmd, {"c": "9", "d": "x", "e": None, "b": "2"}) == \
        ["kube-apiserver", "--a=1", "--b=2", "--c=9", "--d=x"]


def test_list_items_keyed_by_name():
    cmd = ["kube-apiserver", "--enable-admission-plugins=NodeRestriction", "--feature-gates=A=true,B=false"]
    cmd = manifest.edit_list_items(cmd, {
        "enable-admission-plugins": {"add": ["NodeRestriction", "EventRateLimit"]},
        "feature-gates": {"add": ["B=true"], "remove": ["A"]}})
    assert cmd[1:] == ["--enable-admission-plugins=NodeRestriction,EventRateLimit", "--feature-gates=B=true"]
    cmd = manifest.edit_list_items(cmd, {"feature-gates": {"remove": ["B"]}})
    assert cmd[1:] == ["--enable-admission-plugins=NodeRestriction,EventRateLimit"]


def test_new_file_flags_get_mounts():
    pod = apiserver()
    changed = manifest.apply(pod, "kube-apiserver", {
        "audit-policy-file": "/etc/kubernetes/audit/policy.yaml",
        "audit-log-path": "/var/log/kubernetes/audit/audit.log",
        "tls-cert-file": "/etc/kubernetes/pki/apiserver.crt"}, {}, [], (1, 37))
    assert sorted(changed) == ["/etc/kubernetes/audit", "/var/log/kubernetes/audit"]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/etc/kubernetes/audit"]["readOnly"] is True
    assert "readOnly" not in mounts["/var/log/kubernetes/audit"]  # the apiserver writes its log there
    assert unmounted_paths(pod) == []


def test_applying_twice_changes_nothing_more():
    pod = apiserver()
    args = ("kube-apiserver", {"profiling": "false", "audit-policy-file": "/etc/kubernetes/audit/p.yaml"},
            {"enable-admission-plugins": {"add": ["EventRateLimit"]}}, [{"path": "/etc/kubernetes/admission"}],
            (1, 37))
    manifest.apply(pod, *args)
    once = copy.deepcopy(pod)
    assert manifest.apply(pod, *args) == []
    assert pod == once


@pytest.mark.parametrize(("flags", "items", "message"), [
    ({"insecure-port": "0"}, {}, "--insecure-port was removed in Kubernetes 1.24"),
    ({"authentication-config": "/x"}, {}, None),
    ({}, {"enable-admission-plugins": {"add": ["PodSecurityPolicy"]}}, "PodSecurityPolicy was removed in"),
])
def test_version_facts_refuse_removed_flags(flags, items, message):
    if message is None:
        manifest.check_flag_facts("kube-apiserver", flags, items, (1, 31))
        with pytest.raises(manifest.ManifestError, match=r"does not exist before Kubernetes 1\.30"):
            manifest.check_flag_facts("kube-apiserver", flags, items, (1, 29))
    else:
        with pytest.raises(manifest.ManifestError, match=message):
            manifest.check_flag_facts("kube-apiserver", flags, items, (1, 31))


def test_image_tag_gives_the_version():
    assert manifest.image_version(apiserver()) == (1, int(kubeadm_node.release().version.split(".")[1]))
    etcd = yaml.safe_load(kubeadm_node.node_file("/etc/kubernetes/manifests/etcd.yaml"))
    assert manifest.image_version(etcd) is None  # etcd's tag is etcd's own version


def test_not_a_pod_is_refused():
    with pytest.raises(manifest.ManifestError, match="not a static Pod manifest"):
        manifest.container_of({"kind": "ConfigMap"})


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_kubeadm_serialisation_round_trips_byte_for_byte():
    """Editing a kubeadm manifest changes only what is asked: its text is what we would write."""
    text = kubeadm_node.node_file("/etc/kubernetes/manifests/kube-apiserver.yaml")
    assert yaml.safe_dump(yaml.safe_load(text), sort_keys=True, default_flow_style=False, width=1 << 20) == text
