"""The cluster's own kubeadm configuration carries the hardening: what is merged into kube-system/kubeadm-config
and kube-system/kubelet-config, what is the operator's and kept, and what contradiction stops the play. The
lab's upgrade test (tests/lab/test_upgrade.py) has the real kubeadm write nodes from the result."""

from __future__ import annotations

import pytest
from ansible.module_utils import kubeharden_kubeadm as kubeadm

STOCK = {"apiVersion": kubeadm.V1BETA4, "kind": "ClusterConfiguration", "kubernetesVersion": "v1.36.3",
         "apiServer": {}, "controllerManager": {}, "scheduler": {},
         "etcd": {"local": {"dataDir": "/var/lib/etcd"}}}
HARDENING = {"kube-apiserver": {"profiling": "false", "token-auth-file": None,
                                "audit-log-path": "/var/log/kubernetes/audit/audit.log"},
             "kube-scheduler": {"profiling": "false"},
             "etcd": {"client-cert-auth": "true"}}
VOLUMES = {"kube-apiserver": [{"path": "/var/log/kubernetes/audit", "read_only": False}]}


def args(configuration: dict, section: str) -> dict[str, str]:
    where = configuration[section]["local"] if section == "etcd" else configuration[section]
    return kubeadm.from_extra_args(where.get("extraArgs"), section)


def test_the_hardening_becomes_extra_args_and_volumes_and_is_recorded():
    result, managed = kubeadm.harden_cluster_configuration(STOCK, HARDENING, VOLUMES, {})
    assert args(result, "apiServer") == {"profiling": "false", "audit-log-path": "/var/log/kubernetes/audit/audit.log"}
    assert args(result, "scheduler") == {"profiling": "false"} and args(result, "etcd") == {"client-cert-auth": "true"}
    assert [v["hostPath"] for v in result["apiServer"]["extraVolumes"]] == ["/var/log/kubernetes/audit"]
    assert result["apiServer"]["extraVolumes"][0]["readOnly"] is False
    assert "controllerManager" not in result  # nothing to carry: no empty section
    assert managed == {"kube-apiserver": ["audit-log-path", "profiling"], "kube-scheduler": ["profiling"],
                       "etcd": ["client-cert-auth"]}
    assert STOCK["apiServer"] == {}  # the input is not modified
    again, _ = kubeadm.harden_cluster_configuration(result, HARDENING, VOLUMES, managed)
    assert again == result  # idempotent


def test_the_operators_own_extra_args_and_volumes_are_kept():
    oidc = {"name": "oidc", "hostPath": "/etc/oidc", "mountPath": "/etc/oidc"}
    mine = {**STOCK, "apiServer": {"extraArgs": [{"name": "oidc-issuer-url", "value": "https://id.example"}],
                                   "extraVolumes": [oidc]}}
    result, _ = kubeadm.harden_cluster_configuration(mine, HARDENING, VOLUMES, {})
    assert args(result, "apiServer")["oidc-issuer-url"] == "https://id.example"
    assert [v["hostPath"] for v in result["apiServer"]["extraVolumes"]] == ["/etc/oidc", "/var/log/kubernetes/audit"]


@pytest.mark.parametrize(("section", "extra", "message"), [
    ("apiServer", {"name": "profiling", "value": "true"}, "apiServer.extraArgs sets --profiling=true, which "
                                                          "contradicts kubeharden's --profiling=false"),
    ("apiServer", {"name": "token-auth-file", "value": "/etc/tokens.csv"},
     "sets --token-auth-file=/etc/tokens.csv, which contradicts kubeharden's removal of the flag"),
])
def test_an_operators_contradiction_stops_before_anything_is_written(section, extra, message):
    mine = {**STOCK, section: {"extraArgs": [extra]}}
    with pytest.raises(kubeadm.ConfigError, match=message.replace("(", r"\(")):
        kubeadm.harden_cluster_configuration(mine, HARDENING, VOLUMES, {})


def test_what_kubeharden_wrote_follows_its_variables():
    result, managed = kubeadm.harden_cluster_configuration(STOCK, HARDENING, VOLUMES, {})
    changed = {**HARDENING, "kube-scheduler": {}, "kube-apiserver": {**HARDENING["kube-apiserver"],
                                                                     "audit-log-path": "/srv/audit/audit.log"}}
    result, managed = kubeadm.harden_cluster_configuration(result, changed, VOLUMES, managed)
    assert args(result, "apiServer")["audit-log-path"] == "/srv/audit/audit.log"  # not the operator's: updated
    assert "scheduler" not in result  # a flag kubeharden no longer sets is removed
    assert managed["kube-scheduler"] == []


def test_a_role_carries_only_its_own_components():
    """The etcd role passes etcd's flags alone: what the control_plane role wrote stays, and stays its own."""
    result, managed = kubeadm.harden_cluster_configuration(STOCK, HARDENING, VOLUMES, {})
    etcd_only = {"etcd": {"client-cert-auth": "true", "peer-client-cert-auth": "true"}}
    after, now = kubeadm.harden_cluster_configuration(result, etcd_only, {}, managed)
    assert args(after, "apiServer") == args(result, "apiServer") and now["kube-apiserver"] == managed["kube-apiserver"]
    assert now["etcd"] == ["client-cert-auth", "peer-client-cert-auth"]


def test_an_external_etcd_and_an_old_api_version():
    external = {**STOCK, "etcd": {"external": {"endpoints": ["https://10.0.0.5:2379"]}}}
    result, _ = kubeadm.harden_cluster_configuration(external, HARDENING, VOLUMES, {})
    assert result["etcd"] == external["etcd"]
    with pytest.raises(kubeadm.ConfigError, match=r"not kubeadm\.k8s\.io/v1beta4"):
        kubeadm.harden_cluster_configuration({**STOCK, "apiVersion": kubeadm.V1BETA3}, HARDENING, {}, {})


def test_kubelet_settings_merge_over_kubeadms_defaults_but_not_over_the_operators():
    stock = {k: v for k, v in kubeadm.KUBELET_DEFAULTS.items()}
    settings = {"readOnlyPort": 0, "streamingConnectionIdleTimeout": "5m0s",
                "authentication": {"anonymous": {"enabled": False}}, "serverTLSBootstrap": True}
    merged, managed = kubeadm.harden_kubelet_configuration(stock, settings, [])
    assert merged["streamingConnectionIdleTimeout"] == "5m0s"  # kubeadm's 0s default is not the operator's
    assert "readOnlyPort" not in merged  # left out, as kubeadm uploads it: a plain field reads as zero
    assert merged["authentication"]["webhook"]["enabled"] is True  # the rest of the configuration is kept
    assert "streamingConnectionIdleTimeout" in managed and "authentication.anonymous.enabled" in managed
    assert kubeadm.harden_kubelet_configuration(merged, settings, managed)[0] == merged
    with pytest.raises(kubeadm.ConfigError, match="kubelet-config sets streamingConnectionIdleTimeout: '1h0m0s'"):
        kubeadm.harden_kubelet_configuration({**stock, "streamingConnectionIdleTimeout": "1h0m0s"}, settings, [])
    # Once kubeharden wrote a setting, a changed variable updates it.
    updated, _ = kubeadm.harden_kubelet_configuration(merged, {**settings, "streamingConnectionIdleTimeout": "10m0s"},
                                                      managed)
    assert updated["streamingConnectionIdleTimeout"] == "10m0s"
