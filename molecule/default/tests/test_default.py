"""The lab contract seen through molecule and testinfra, over SSH like every role scenario."""

import base64
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))  # not a package
from lab_audit import audit_statuses, connect, node_addresses


def test_sshd_runs(host):
    assert host.service("ssh").is_running


def test_the_connecting_user_can_become_root(host):
    assert host.user().name == "labadmin"
    assert host.run("sudo -n true").rc == 0


def test_node_keeps_its_kubeadm_kubelet_configuration_root_only(host):
    with host.sudo():  # /var/lib/kubelet is 0700, as kubeadm leaves it
        config = host.file("/var/lib/kubelet/config.yaml")
        assert config.exists and config.user == "root" and config.mode == 0o600  # kubeadm wrote 0644
        assert "kind: KubeletConfiguration" in config.content_string


def test_the_control_plane_is_healthy_after_the_whole_site(host):
    """Real kubelets restarted every hardened component: the apiserver is ready and every node Ready."""
    if not host.backend.get_hostname().startswith("cp"):
        pytest.skip("read from the control-plane node, which has the admin kubeconfig")
    with host.sudo():
        ready = host.run("kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz")
        nodes = host.run("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes --no-headers")
    assert ready.stdout.strip() == "ok", ready.stdout + ready.stderr
    assert [line.split()[1] for line in nodes.stdout.splitlines()] == ["Ready", "Ready"], nodes.stdout


def test_the_cluster_enforces_its_pod_security_levels_after_the_whole_site(host):
    """cluster_policies ran once, from cp1: kube-system exempt with its reason, default enforcing restricted,
    which the apiserver applies to a privileged pod (a server-side dry run goes through admission)."""
    if not host.backend.get_hostname().startswith("cp"):
        pytest.skip("read from the control-plane node, which has the admin kubeconfig")
    kubectl = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
    with host.sudo():
        enforced = host.run(f"{kubectl} get namespaces -o jsonpath="
                            "'{range .items[*]}{.metadata.name}={.metadata.labels.pod-security\\.kubernetes\\.io/"
                            "enforce} {end}'").stdout.split()
        privileged = host.run(f"{kubectl} run root-shell -n default --image=registry.k8s.io/pause:x "
                              "--image-pull-policy=Never --privileged --dry-run=server")
    assert {"default=restricted", "kube-system=privileged", "kube-public=restricted"} <= set(enforced), enforced
    assert privileged.rc != 0 and 'violates PodSecurity "restricted:latest"' in privileged.stderr, privileged.stderr


def test_etcd_listens_only_on_control_plane_nodes(host):
    is_control_plane = host.backend.get_hostname().startswith("cp")
    assert host.socket("tcp://127.0.0.1:2379").is_listening == is_control_plane


def test_firewall_table_is_loaded_and_persisted(host):
    with host.sudo():
        assert "chain input" in host.run("nft list table inet kubeharden").stdout
        assert host.service("kubeharden-firewall.service").is_enabled


def test_the_firewall_closes_etcd_to_a_worker_and_keeps_the_apiserver_open(host):
    """Real packets from the worker to the control-plane node: etcd's client port is dropped (only etcd members
    and control planes may reach it), the apiserver answers."""
    if host.backend.get_hostname().startswith("cp"):
        pytest.skip("probed from the worker, the node etcd must not answer")
    cp1 = node_addresses()["cp1"]
    assert connect(host, cp1, 2379) == "dropped"
    assert connect(host, cp1, 6443) == "open"


def test_secrets_are_encrypted_at_rest_with_a_root_only_configuration(host):
    if not host.backend.get_hostname().startswith("cp"):
        pytest.skip("read from the control-plane node, which has the admin kubeconfig")
    with host.sudo():
        config = host.file("/etc/kubernetes/enc/encryption-config.yaml")
        assert (config.mode, config.user) == (0o600, "root")
        assert "secretbox" in config.content_string
        manifest = host.file("/etc/kubernetes/manifests/kube-apiserver.yaml").content_string
    assert "--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml" in manifest


def test_a_secret_written_through_the_apiserver_is_stored_encrypted_in_etcd(host):
    """Judged by etcd's own client (the etcd release's etcdctl), not by kubeharden: the value etcd holds is
    secretbox's envelope with the configuration's first key."""
    if not host.backend.get_hostname().startswith("cp"):
        pytest.skip("etcd and the admin kubeconfig are on the control-plane node")
    kubectl = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
    pki = "/etc/kubernetes/pki/etcd"
    with host.sudo():
        config = host.file("/etc/kubernetes/enc/encryption-config.yaml").content_string
        key = yaml.safe_load(config)["resources"][0]["providers"][0]["secretbox"]["keys"][0]["name"]
        host.run(f"{kubectl} delete secret -n default kubeharden-molecule-probe --ignore-not-found")
        created = host.run(f"{kubectl} create secret generic -n default kubeharden-molecule-probe "
                           "--from-literal=value=plain-words")
        assert created.rc == 0, created.stderr
        stored = host.run(f"/opt/kubeharden-lab/kubernetes/bin/etcdctl --endpoints=https://127.0.0.1:2379 "
                          f"--cacert={pki}/ca.crt --cert={pki}/healthcheck-client.crt "
                          f"--key={pki}/healthcheck-client.key get /registry/secrets/default/kubeharden-molecule-probe "
                          "--print-value-only | head -c 64 | base64 -w0")
    value = base64.b64decode(stored.stdout)
    assert value.startswith(f"k8s:enc:secretbox:v1:{key}:".encode()), value
    assert b"plain-words" not in value


def test_aides_first_database_records_the_node_after_the_whole_site(host):
    """Built after site.yml's last role: AIDE's first report does not list the hardening itself."""
    changed_by_later_roles = ["/etc/nftables.d/kubeharden.nft", "/var/lib/kubelet/config.yaml"]
    if host.backend.get_hostname().startswith("cp"):
        changed_by_later_roles.append("/etc/kubernetes/manifests/kube-apiserver.yaml")
    with host.sudo():
        for _ in range(90):  # the first database is built in the background, at the lowest priority
            if host.run("systemctl is-active --quiet kubeharden-aide-init.service").rc != 0:
                break
            time.sleep(2)
        assert host.file("/var/lib/aide/aide.db").exists
        check = host.run("aide --check --config /etc/aide/aide.conf")
    assert check.rc < 8, check.stderr  # 0-7: added, removed, changed bits; 14 and up: AIDE could not check
    reported = {line.rsplit(": ", 1)[-1] for line in check.stdout.splitlines()}
    assert reported.isdisjoint(changed_by_later_roles), check.stdout[-3000:]


def test_whole_site_passes_every_cis_control():
    """After site.yml no CIS control fails on any node (docs/exceptions.md; run from the controller)."""
    _, nodes = audit_statuses()
    for node, statuses in nodes.items():
        failing = {cid for cid, status in statuses.items() if status in ("fail", "error")}
        cis = {cid for cid in failing if cid[0].isdigit()}
        assert cis == set(), (node, failing)
        assert not {cid for cid in failing if cid.startswith(("KH-OS", "KH-ETCD", "KH-FW"))}, (node, failing)
