"""The node_os role's real effects on lab nodes (Debian 12 and 13), and the audit's verdict on them."""

import os
import subprocess
import sys
from pathlib import Path

import ansible.module_utils
import yaml

# module_utils are imported as Ansible imports them (that package's path also holds the checkout's); molecule/shared
# is not a package.
ansible.module_utils.__path__.append(str(Path(__file__).resolve().parents[3] / "module_utils"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from ansible.module_utils import kubeharden_os  # noqa: E402 - after its path is added
from lab_audit import audit_statuses  # noqa: E402


def sshd_effective(host) -> dict:
    with host.sudo():
        return kubeharden_os.parse_sshd_t(host.check_output("sshd -T -C user=labadmin,host=x,addr=127.0.0.1"))


def test_sshd_runs_the_hardened_configuration(host):
    effective = sshd_effective(host)
    assert effective["permitrootlogin"] == "no" and effective["passwordauthentication"] == "no"
    assert effective["maxauthtries"] == "3" and effective["x11forwarding"] == "no"
    assert effective["banner"] == "/etc/issue.net"
    offered = set(host.check_output("ssh -Q kex").split())
    kex = effective["kexalgorithms"].split(",")
    assert set(kex) <= offered and kex[0] in {"mlkem768x25519-sha256", "sntrup761x25519-sha512",
                                              "sntrup761x25519-sha512@openssh.com"}
    assert not [cipher for cipher in effective["ciphers"].split(",") if "cbc" in cipher]
    with host.sudo():
        assert host.file("/etc/ssh/sshd_config.d/00-kubeharden.conf").mode == 0o600
        assert host.run("systemctl is-active kubeharden-sshd-rollback.timer").stdout.strip() != "active"


def test_a_fresh_ssh_login_still_gets_root_through_sudo(host):
    """A new connection from the controller, as the lab's admin user, with the inventory's key."""
    inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())
    name = host.backend.get_hostname()
    node = next(hosts[name] for group in inventory.values() for hosts in [group.get("hosts") or {}]
                if isinstance(hosts.get(name), dict) and "ansible_host" in hosts[name])
    done = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                           "UserKnownHostsFile=/dev/null", "-i", node["ansible_private_key_file"],
                           f"{node['ansible_user']}@{node['ansible_host']}", "sudo", "-n", "id", "-u"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


def test_kubernetes_sysctls_are_kept_and_hardening_persisted(host):
    text = host.file("/etc/sysctl.d/99-zz-kubeharden.conf").content_string
    for line in ("net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1", "kernel.panic = 10",
                 "vm.overcommit_memory = 1", "kernel.kptr_restrict = 2", "net.ipv4.conf.all.send_redirects = 0"):
        assert line in text.splitlines(), line


def test_unused_kernel_modules_cannot_load_and_kubernetes_ones_can(host):
    with host.sudo():
        for module in ("cramfs", "usb-storage", "sctp"):
            assert "install /bin/false" in host.run(f"/usr/sbin/modprobe -n -v {module}").stdout, module
    text = host.file("/etc/modprobe.d/kubeharden.conf").content_string
    assert "overlay" not in text and "br_netfilter" not in text
    assert host.file("/etc/modules-load.d/kubeharden-kubernetes.conf").content_string.split()[-2:] == [
        "overlay", "br_netfilter"]


def test_system_file_modes(host):
    with host.sudo():
        for path, mode, group in (("/etc/shadow", 0o640, "shadow"), ("/etc/crontab", 0o600, "root"),
                                  ("/etc/cron.d", 0o700, "root"), ("/etc/ssh/sshd_config", 0o600, "root"),
                                  ("/etc/passwd", 0o644, "root")):
            info = host.file(path)
            assert (info.mode, info.user, info.group) == (mode, "root", group), path


def test_accounts_and_pam(host):
    login_defs = host.file("/etc/login.defs").content_string
    assert "PASS_MAX_DAYS 365" in login_defs.splitlines() and "UMASK 027" in login_defs.splitlines()
    auth = [line.split() for line in host.file("/etc/pam.d/common-auth").content_string.splitlines()
            if line.strip() and not line.startswith("#")]
    names = [next(word for word in words if word.endswith(".so")) for words in auth]
    # preauth before pam_unix, authfail right after it: the order that makes faillock count and lock.
    assert names[names.index("pam_unix.so") - 1] == "pam_faillock.so" == names[names.index("pam_unix.so") + 1], names
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string
    assert "pam_wheel.so use_uid group=sudo" in host.file("/etc/pam.d/su").content_string
    assert "INACTIVE=30" in host.file("/etc/default/useradd").content_string.splitlines()


def test_audit_rules_parse_and_cover_kubernetes(host):
    with host.sudo():
        rules = host.file("/etc/audit/rules.d/50-kubeharden.rules").content_string.splitlines()
        syscalls = {line.split()[1] for line in host.check_output("ausyscall --dump").splitlines()[1:]}
        compat = {line.split()[1] for line in host.check_output("ausyscall i386 --dump").splitlines()[1:]}
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    errors = [(rule, kubeharden_os.audit_rule_error(rule, compat if "arch=b32" in rule else syscalls))
              for rule in rules]
    assert [error for error in errors if error[1]] == []
    assert "-w /etc/kubernetes/ -p wa -k kubernetes" in rules
    etcd_rule = [rule for rule in rules if "dir=/var/lib/etcd/" in rule]
    assert bool(etcd_rule) == host.file("/var/lib/etcd").is_directory
    # In a container auditd cannot start: the role installs and enables it, and says so rather than faking it.
    assert host.service("auditd").is_enabled


def test_swap_off_and_no_core_dumps(host):
    assert not [line for line in host.file("/etc/fstab").content_string.splitlines()
                if len(line.split()) > 2 and not line.startswith("#") and line.split()[2] == "swap"]
    assert host.run("systemctl is-enabled swap.target").stdout.strip() == "masked"
    assert "Storage=none" in host.file("/etc/systemd/coredump.conf.d/kubeharden.conf").content_string


def test_aide_ignores_kubernetes_churn(host):
    # prepare.yml purged AIDE (the lab's image ships it): converge installed it, from apt, in this run.
    assert host.package("aide").is_installed and host.package("aide-common").is_installed
    entries = host.file("/var/log/apt/history.log").content_string.split("\n\n")

    def touches(entry: str, action: str) -> bool:
        return any(line.startswith(f"{action}:") and "aide-common:" in line for line in entry.splitlines())

    purged = max(i for i, entry in enumerate(entries) if touches(entry, "Purge"))
    assert any(touches(entry, "Install") for entry in entries[purged + 1:]), "AIDE was not installed after prepare"
    text = host.file("/etc/aide/aide.conf.d/99_kubeharden_excludes").content_string
    assert "!/var/lib/containerd" in text and "!/var/log/pods" in text and "!/var/lib/etcd" in text
    with host.sudo():
        assert host.run("aide --config-check --config /etc/aide/aide.conf").rc == 0


def test_audit_passes_every_node_os_control():
    """Run once from the controller (testinfra runs this test per host; the first run answers for all)."""
    code, nodes = audit_statuses("KH-OS")
    assert code == 0, nodes
    for node, statuses in nodes.items():
        assert not [cid for cid, s in statuses.items() if s in ("fail", "error")], (node, statuses)
        assert statuses["KH-OS-6.11"] == "not_applicable"  # auditd cannot run in a container: reported, not faked


def test_sudo_logs_to_its_own_file_in_a_pty(host):
    """CIS Debian 12 5.2.2/5.2.3: the real sudo, through its drop-in (visudo checked it before it was written)."""
    with host.sudo():
        assert host.run("visudo -c").rc == 0
        host.check_output("sudo -u nobody true")
        assert "COMMAND=/usr/bin/true" in host.file("/var/log/sudo.log").content_string
        assert "Defaults use_pty" in host.file("/etc/sudoers.d/kubeharden").content_string


def test_password_history_and_quality_are_in_the_pam_stack(host):
    """CIS Debian 12 5.3.3: pam-auth-update wired pam_pwhistory after pam_pwquality and before pam_unix."""
    stack = [next(word for word in line.split() if word.endswith(".so"))
             for line in host.file("/etc/pam.d/common-password").content_string.splitlines()
             if line.startswith("password")]
    assert stack.index("pam_pwquality.so") < stack.index("pam_pwhistory.so") < stack.index("pam_unix.so"), stack
    assert "enforce_for_root" in host.file("/etc/security/pwquality.conf.d/50-kubeharden-root.conf").content_string


def test_login_shells_get_the_umask_and_journald_keeps_its_journal_on_disk(host):
    assert host.run("bash -lc umask").stdout.strip() == "0027"
    machine_id = host.file("/etc/machine-id").content_string.strip()
    with host.sudo():  # journald restarted with Storage=persistent: its journal moved to /var/log/journal
        assert host.file(f"/var/log/journal/{machine_id}").is_directory
        assert host.run("systemctl is-enabled dailyaidecheck.timer").stdout.strip() == "enabled"


def test_audit_reports_every_cis_debian_control_as_pass_not_applicable_or_an_exception():
    """Run once from the controller. Not applicable only with its reason (a container, a mount that is not separate);
    manual only where the catalogue leaves the call to the operator or to provisioning (partitions, bootloader)."""
    from kubeharden import catalogue

    controls = {c["id"]: c for c in catalogue.load() if c["id"].startswith("DEB12-")}
    code, nodes = audit_statuses("DEB12")
    assert code == 0, nodes
    for node, statuses in nodes.items():
        assert set(statuses) == set(controls)
        assert {cid for cid, s in statuses.items() if s == "exception"} == \
            {cid for cid, c in controls.items() if c.get("exception")}
        assert {cid for cid, s in statuses.items() if s == "manual"} == \
            {cid for cid, c in controls.items() if c["type"] == "manual" and not c.get("exception")}
        assert not [cid for cid, s in statuses.items() if s in ("fail", "error")], (node, statuses)
