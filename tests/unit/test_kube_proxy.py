"""kube-proxy as the audit reads it (what the running process reads, through its own filesystem) and as the kubelet
role sets it (kubeadm's kube-system/kube-proxy ConfigMap and DaemonSet). The lab proves both on a real kube-proxy
(tests/lab/test_drift.py: the metrics socket as `ss` shows it, before and after)."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible.module_utils import kubeharden_controls as controls
from ansible.module_utils import kubeharden_kubeadm as kubeadm
from ansible.module_utils import kubeharden_node as node

CONFIG = {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
          "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"}, "metricsBindAddress": "",
          "mode": "iptables"}


def configmap_volume(root, config: dict) -> None:
    """What the kubelet makes of a ConfigMap volume inside a pod: links into a timestamped directory."""
    volume = root / "var/lib/kube-proxy"
    data = volume / "..2026_12_06_18_25_55.312516925"
    data.mkdir(parents=True)
    (data / "config.conf").write_text(yaml.safe_dump(config))
    (data / "kubeconfig.conf").write_text("apiVersion: v1\nkind: Config\n")
    os.chmod(data / "kubeconfig.conf", 0o644)
    os.symlink(data.name, volume / "..data")
    for name in ("config.conf", "kubeconfig.conf"):
        os.symlink(f"..data/{name}", volume / name)


@pytest.fixture
def running(tmp_path, monkeypatch):
    """A kube-proxy process whose root is tmp_path/root (as /proc/PID/root shows a pod's filesystem)."""
    root = tmp_path / "root"
    configmap_volume(root, CONFIG)
    monkeypatch.setattr(node, "find_processes", lambda name: [(4242, ["/usr/local/bin/kube-proxy",
                                                                      "--config=/var/lib/kube-proxy/config.conf",
                                                                      "--hostname-override=w1"])]
                        if name == "kube-proxy" else [])
    real_path_in_root = node.path_in_root
    monkeypatch.setattr(node, "path_in_root", lambda _root, path: real_path_in_root(str(root), path))
    return root


def test_links_are_followed_inside_the_process_root_not_the_hosts(tmp_path):
    root = tmp_path / "root"
    configmap_volume(root, CONFIG)
    os.symlink("/var/lib/kube-proxy/config.conf", root / "absolute-link")
    found = node.path_in_root(str(root), "/var/lib/kube-proxy/kubeconfig.conf")
    assert found.startswith(str(root)) and os.path.realpath(found).endswith("/kubeconfig.conf")
    assert node.path_in_root(str(root), "/absolute-link").startswith(str(root))  # not the host's /var/lib/...


def test_the_running_kube_proxys_configuration_is_read(running):
    state = node.kube_proxy_state()
    assert state["pid"] == 4242 and state["config"]["mode"] == "iptables"


def test_during_a_rollout_the_newest_kube_proxy_is_read_not_the_one_ending(running, monkeypatch):
    """The old pod's process (a lower PID, started earlier) may still run beside the new one for a moment."""
    argv = ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"]
    monkeypatch.setattr(node, "find_processes", lambda name: [(900, argv), (4242, argv), (3100, argv)])
    started = {900: 1000.0, 4242: 1500.0, 3100: 1400.0}
    monkeypatch.setattr(node, "process_started", lambda pid: started[pid])
    assert node.kube_proxy_state()["pid"] == 4242
    started[900] = 2000.0  # PIDs wrap: the start time decides, not the number
    assert node.kube_proxy_state()["pid"] == 900


def test_no_kube_proxy_is_not_applicable(monkeypatch):
    monkeypatch.setattr(node, "find_processes", lambda name: [])
    with pytest.raises(node.NotApplicable, match="no kube-proxy runs on this node"):
        node.kube_proxy_state()


def control(cid: str) -> dict:
    from kubeharden import catalogue

    return next(c for c in catalogue.load() if c["id"] == cid)


def test_an_unset_metrics_address_is_kube_proxys_loopback_default(running):
    result = controls.evaluate(control("4.3.1"), controls.Node(["workers"]))
    assert result["status"] == "pass" and result["actual"] == "127.0.0.1:10249", result
    assert "default 127.0.0.1:10249 applies" in result["evidence"]


def test_metrics_on_every_address_fail_431(running):
    for path in running.rglob("config.conf"):
        if not path.is_symlink():
            path.write_text(yaml.safe_dump({**CONFIG, "metricsBindAddress": "0.0.0.0:10249"}))
    result = controls.evaluate(control("4.3.1"), controls.Node(["workers"]))
    assert result["status"] == "fail" and result["actual"] == "0.0.0.0:10249"


def test_the_kubeconfig_mode_is_the_files_in_the_pod(running):
    state = controls.Node(["workers"])
    assert controls.evaluate(control("4.1.3"), state)["status"] == "fail"  # the ConfigMap volume's 0644
    for path in running.rglob("kubeconfig.conf"):
        if not path.is_symlink():
            os.chmod(path, 0o600)
    assert controls.evaluate(control("4.1.3"), controls.Node(["workers"]))["status"] == "pass"


def test_kube_proxy_settings_merge_over_unset_fields_but_not_over_the_operators():
    merged, managed = kubeadm.harden_kube_proxy_configuration(CONFIG, {"metricsBindAddress": "127.0.0.1:10249"}, [])
    assert merged["metricsBindAddress"] == "127.0.0.1:10249" and merged["mode"] == "iptables"
    assert managed == ["metricsBindAddress"]
    operators = {**CONFIG, "metricsBindAddress": "0.0.0.0:10249"}
    with pytest.raises(kubeadm.ConfigError, match=r"kube-system/kube-proxy sets metricsBindAddress: '0.0.0.0:10249'"):
        kubeadm.harden_kube_proxy_configuration(operators, {"metricsBindAddress": "127.0.0.1:10249"}, [])
    # What kubeharden wrote before follows its variable.
    changed, _ = kubeadm.harden_kube_proxy_configuration(merged, {"metricsBindAddress": "127.0.0.1:10250"},
                                                         ["metricsBindAddress"])
    assert changed["metricsBindAddress"] == "127.0.0.1:10250"


DAEMONSET = {"kind": "DaemonSet", "metadata": {"name": "kube-proxy"}, "spec": {"template": {"spec": {"volumes": [
    {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock"}},
    {"name": "kube-proxy", "configMap": {"name": "kube-proxy", "defaultMode": 420}}]}}}}


def test_the_daemonset_patch_sets_the_configuration_volumes_mode_once():
    patch = kubeadm.mode_patch(DAEMONSET, 0o600)
    assert patch == [{"op": "test", "path": "/spec/template/spec/volumes/1/name", "value": "kube-proxy"},
                     {"op": "add", "path": "/spec/template/spec/volumes/1/configMap/defaultMode", "value": 0o600}]
    done = {**DAEMONSET, "spec": {"template": {"spec": {"volumes": [
        DAEMONSET["spec"]["template"]["spec"]["volumes"][0],
        {"name": "kube-proxy", "configMap": {"name": "kube-proxy", "defaultMode": 0o600}}]}}}}
    assert kubeadm.mode_patch(done, 0o600) is None


def test_a_daemonset_without_the_configuration_volume_is_refused():
    with pytest.raises(kubeadm.ConfigError, match="mounts no volume of the kube-proxy ConfigMap"):
        kubeadm.mode_patch({"spec": {"template": {"spec": {"volumes": []}}}}, 0o600)
