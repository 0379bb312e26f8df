"""The lab contract seen through molecule and testinfra, over SSH like every role scenario."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))  # not a package
from lab_audit import audit_statuses


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
        return
    with host.sudo():
        ready = host.run("kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz")
        nodes = host.run("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes --no-headers")
    assert ready.stdout.strip() == "ok", ready.stdout + ready.stderr
    assert [line.split()[1] for line in nodes.stdout.splitlines()] == ["Ready", "Ready"], nodes.stdout


def test_the_cluster_enforces_its_pod_security_levels_after_the_whole_site(host):
    """cluster_policies ran once, from cp1: kube-system exempt with its reason, default enforcing restricted,
    which the apiserver applies to a privileged pod (a server-side dry run goes through admission)."""
    if not host.backend.get_hostname().startswith("cp"):
        return
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


def test_secrets_are_encrypted_at_rest_with_a_root_only_configuration(host):
    if not host.backend.get_hostname().startswith("cp"):
        return
    with host.sudo():
        config = host.file("/etc/kubernetes/enc/encryption-config.yaml")
        assert (config.mode, config.user) == (0o600, "root")
        assert "secretbox" in config.content_string
        manifest = host.file("/etc/kubernetes/manifests/kube-apiserver.yaml").content_string
    assert "--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml" in manifest


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
