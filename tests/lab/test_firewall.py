"""The firewall role on a real cluster: kube-proxy, flannel's VXLAN between nodes, kube-router's NetworkPolicy
tables, CoreDNS and a workload on every node; real traffic between lab nodes (the lab's own network only)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from kubeharden.lab import connectivity, docker
from tests.conftest import ROOT
from tests.lab.conftest import matrix

pytestmark = pytest.mark.lab

# An unrelated native table of the operator's own, beside the cluster's (kube-proxy's, flannel's, kube-router's).
FOREIGN_SETUP = """
nft add table inet foreign && nft add chain inet foreign c '{ type filter hook input priority 10; }'
nft add rule inet foreign c tcp dport 9999 counter accept
"""


def sh(lab, node, script, check=True):
    return docker.exec_(lab.container(node), "sh", "-c", script, check=check)


def foreign(lab, node) -> dict[str, dict[str, list[str]]]:
    """Every table but kubeharden's, rule by rule without counters (connectivity.foreign_rules)."""
    return connectivity.foreign_rules(lab.container(node))


def table_handles(lab, node) -> dict[str, str]:
    """Every table but kubeharden's with the handle nftables gave it: a table deleted and made again (by a ruleset
    flush, or by its owner resyncing after one) gets a new handle, whatever rules its owner writes meanwhile."""
    listed = sh(lab, node, "nft -a list ruleset | grep '^table '").stdout
    return {line.split(" {")[0]: line.rsplit("# handle ", 1)[-1].split("#")[0].strip() for line in listed.splitlines()
            if not line.startswith("table inet kubeharden ")}


def other_node_row(lab) -> dict[str, str]:
    return matrix(lab).cells["pod-pod-other-node"]


def probe(lab, source: str, target_ip: str, port: int) -> str:
    """open (handshake done), refused (RST: nothing listens) or dropped (no answer within 2 s)."""
    script = ("import errno, socket\ns = socket.socket()\ns.settimeout(2)\n"
              f"r = s.connect_ex(('{target_ip}', {port}))\n"
              "print('open' if r == 0 else 'refused' if r == errno.ECONNREFUSED else "
              "'dropped' if r in (errno.EAGAIN, errno.ETIMEDOUT) else errno.errorcode.get(r, r))")
    return docker.exec_(lab.container(source), "python3", "-c", script).stdout.strip()


def harden(lab, variables=None, limit=None, env=None) -> subprocess.CompletedProcess:
    argv = ["ansible-playbook", "-i", str(lab.inventory_path), str(ROOT / "playbooks/firewall.yml"),
            "-e", json.dumps(variables or {})] + (["--limit", limit] if limit else [])
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


def ip(lab, node):
    return next(n.ip for n in lab.state().nodes if n.name == node)


@pytest.fixture(scope="module")
def hardened(firewall_lab):
    lab = firewall_lab
    for node in ("cp1", "w1", "w2"):
        sh(lab, node, FOREIGN_SETUP)
    stock = matrix(lab)
    assert stock.failures() == {}, stock.table()
    assert {table for table in foreign(lab, "w1")} >= {"table ip nat", "table ip filter", "table inet foreign"}
    before = {node: foreign(lab, node) for node in ("cp1", "w1")}
    result = harden(lab)
    assert result.returncode == 0, result.stdout[-3000:]
    return lab, before, stock


def test_foreign_tables_keep_every_rule_after_the_role(hardened):
    """kube-proxy's and flannel's iptables-nft tables, kube-router's and the operator's own: rule for rule."""
    lab, before, _ = hardened
    assert {node: foreign(lab, node) for node in ("cp1", "w1")} == before


def test_the_cluster_works_as_before_behind_the_firewall(hardened):
    lab, _, stock = hardened
    assert matrix(lab).cells == stock.cells, matrix(lab).table()


def test_without_the_cni_preset_pods_lose_the_other_nodes_and_get_them_back(hardened):
    """The proof can fail: flannel's VXLAN (UDP 8472) dropped at the other node cuts every pod off from pods on
    other nodes; the `vxlan` preset (the lab inventory's firewall_cni_presets) puts them back."""
    lab, _, stock = hardened
    cut = harden(lab, {"firewall_cni_presets": []})
    try:
        assert cut.returncode == 0, cut.stdout[-3000:]
        row = other_node_row(lab)
    finally:  # the next tests need the preset back, whatever this one found
        restored = harden(lab)
    assert set(row.values()) == {"TIMEOUT"}, row
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert matrix(lab).cells == stock.cells


def test_etcd_ports_are_closed_from_a_worker_and_open_from_another_control_plane(hardened):
    lab, _, _ = hardened
    assert probe(lab, "w1", ip(lab, "cp1"), 2379) == "dropped"
    assert probe(lab, "w1", ip(lab, "cp1"), 6443) == "open"  # the apiserver, open to every node
    assert probe(lab, "cp2", ip(lab, "cp1"), 2379) == "open"
    assert probe(lab, "cp3", ip(lab, "cp1"), 2380) == "open"


def test_kubelet_port_is_reachable_only_from_control_plane_nodes(hardened):
    lab, _, _ = hardened
    assert probe(lab, "cp1", ip(lab, "w1"), 10250) == "open"
    assert probe(lab, "w2", ip(lab, "w1"), 10250) == "dropped"


def test_etcd_quorum_survives_the_firewall(hardened):
    from kubeharden.lab.lab import etcdctl

    lab, _, _ = hardened
    assert etcdctl(lab.container("cp2"), "endpoint", "health", "--cluster").returncode == 0


def test_ssh_from_the_controller_still_works(hardened):
    lab, _, _ = hardened
    result = subprocess.run(lab.ssh_command("w2", ["sudo", "-n", "true"]), capture_output=True, timeout=30)
    assert result.returncode == 0


def test_the_table_is_persisted_for_boot_and_the_rollback_disarmed(hardened):
    lab, _, _ = hardened
    assert sh(lab, "w1", "systemctl is-enabled kubeharden-firewall.service").stdout.strip() == "enabled"
    assert sh(lab, "w1", "nft -c -f /etc/nftables.d/kubeharden.nft && echo valid").stdout.strip() == "valid"
    assert sh(lab, "w1", "systemctl is-active kubeharden-firewall-rollback.timer", check=False).stdout.strip() \
        != "active"


def test_a_rerun_that_changes_nothing_logs_in_once(hardened, tmp_path):
    """The confirmation drops the connection only after a change (Ansible's reset_connection ignores conditions,
    so a reset left in a conditional block would reconnect every node on every run)."""
    lab, _, _ = hardened

    def logins() -> int:
        time.sleep(1)  # sshd's lines reach the journal asynchronously
        return int(sh(lab, "w1", "journalctl -u ssh --no-pager -o cat | grep -c '^Accepted '", check=False).stdout)

    before = logins()
    # A control path of its own: the run starts on a fresh SSH connection, not one kept from an earlier run.
    result = harden(lab, limit="w1", env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path)})
    assert result.returncode == 0 and "changed=0" in result.stdout.split("PLAY RECAP")[1], result.stdout[-3000:]
    assert logins() - before == 1


def test_deliberate_lockout_is_rolled_back_and_ssh_comes_back(hardened):
    lab, _, _ = hardened
    listing = sh(lab, "w2", "nft --stateless list table inet kubeharden").stdout
    # Over the minute of the lockout kube-router and kube-proxy rewrite their own rules as they sync: the tables
    # themselves (their handles) and their chains are what the rollback must leave as they were.
    handles_before, chains_before = table_handles(lab, "w2"), {t: set(c) for t, c in foreign(lab, "w2").items()}
    since = sh(lab, "w2", "date +%s").stdout.strip()
    result = harden(lab, {"firewall_ssh_port": 2222, "firewall_lockout_check": False, "firewall_rollback_seconds": 15,
                          "firewall_confirm_timeout": 5}, limit="w2")
    assert result.returncode != 0
    assert "The new firewall rules cut this play off from w2" in result.stdout
    # Bounded wait for the rollback timer (15 s after loading): at most 20 tries over about 60 s.
    for _ in range(20):
        ssh = subprocess.run(["ssh", "-o", "ConnectTimeout=3", *lab.ssh_command("w2", ["true"])[1:]],
                             capture_output=True, timeout=30, check=False)
        if ssh.returncode == 0:
            break
        time.sleep(2)
    assert ssh.returncode == 0, "SSH did not come back after the rollback"
    # The rollback timer is what brought it back: its unit ran to the end since the change was loaded.
    fired = sh(lab, "w2", f"journalctl -u kubeharden-firewall-rollback.service --since @{since} -o cat").stdout
    assert "kubeharden-firewall-rollback.service: Deactivated successfully." in fired, fired
    assert sh(lab, "w2", "nft --stateless list table inet kubeharden").stdout == listing
    assert sh(lab, "w2", "grep -c 'dport { 22 }' /etc/nftables.d/kubeharden.nft").stdout.strip() == "1"
    assert table_handles(lab, "w2") == handles_before
    assert {t: set(c) for t, c in foreign(lab, "w2").items()} == chains_before


@pytest.mark.parametrize(("variables", "message"), [
    # Refused by the role's own checks (validate.yml) before any task, naming the variable.
    ({"firewall_admin_cidrs": ["300.1.1.1/8"]}, "firewall_admin_cidrs: 300.1.1.1/8 is not an address or network"),
    ({"firewall_extra_rules": [{"proto": "tcp", "ports": [70000]}]},
     "firewall_extra_rules[0].ports: 70000 is not a port or FIRST-LAST range"),
    ({"firewall_admin_cidrs": ["203.0.113.0/24"]}, "loading it would lock the play out"),
])
def test_bad_input_fails_before_anything_is_loaded(hardened, variables, message):
    lab, _, _ = hardened
    listing = sh(lab, "w1", "nft --stateless list table inet kubeharden").stdout
    result = harden(lab, variables, limit="w1")
    assert result.returncode != 0 and message in result.stdout
    assert sh(lab, "w1", "nft --stateless list table inet kubeharden").stdout == listing


def test_boot_unit_restores_only_kubeharden_table(hardened):
    """A firewall reload (the boot unit) replaces kubeharden's table alone: the cluster works as before."""
    lab, _, stock = hardened
    foreign_before = foreign(lab, "cp1")
    listing = sh(lab, "cp1", "nft --stateless list table inet kubeharden").stdout
    sh(lab, "cp1", "nft delete table inet kubeharden && systemctl restart kubeharden-firewall.service")
    assert sh(lab, "cp1", "nft --stateless list table inet kubeharden").stdout == listing
    assert foreign(lab, "cp1") == foreign_before
    assert matrix(lab).cells == stock.cells


def test_live_drift_in_the_table_is_detected_and_repaired(hardened):
    lab, _, _ = hardened
    listing = sh(lab, "w1", "nft --stateless list table inet kubeharden").stdout
    sh(lab, "w1", "nft add rule inet kubeharden input tcp dport 2379 accept")  # someone opened etcd by hand
    assert probe(lab, "w2", ip(lab, "w1"), 2379) == "refused"  # now reachable (nothing listens on a worker)
    result = harden(lab, limit="w1")
    assert result.returncode == 0 and "changed=0" not in result.stdout.split("PLAY RECAP")[1]
    assert sh(lab, "w1", "nft --stateless list table inet kubeharden").stdout == listing
    assert probe(lab, "w2", ip(lab, "w1"), 2379) == "dropped"
