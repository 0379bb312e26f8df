"""The operating-system readers (module_utils/kubeharden_readers_os.py), each on input shaped as the node gives it
(dpkg-query's and systemctl's output, /proc files, login.defs-style files, nft's listing); the node's commands are
replaced, the parsing is the reader's own."""

from __future__ import annotations

import subprocess

import pytest
from ansible.module_utils import kubeharden_controls as controls
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_readers_os as readers


def answered(outputs: dict[tuple[str, ...], tuple[int, str]]):
    """node.run, answering each known command with (exit code, stdout)."""
    def run(argv, stdin=None, timeout=30, env=None):
        code, out = outputs[tuple(argv)]
        return subprocess.CompletedProcess(argv, code, out, "")
    return run


def state() -> controls.Node:
    return controls.Node(["workers"])


def test_package_reads_dpkg_status_and_any_of_several(monkeypatch):
    query = ("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n")
    monkeypatch.setattr(node, "run", answered({query: (0, "aide ii \nauditd rc \nsudo ii \n")}))
    node_state = state()
    assert readers.read_package({"package": "aide"}, node_state).value == "installed"
    removed = readers.read_package({"package": "auditd"}, node_state)  # removed, configuration left: rc
    assert removed.value == "absent" and removed.evidence == "auditd: not installed"
    assert readers.read_package({"packages": ["sudo-ldap", "sudo"]}, node_state).value == "installed"


def test_service_is_active_when_any_of_its_names_is(monkeypatch):
    monkeypatch.setattr(node, "run", answered({("systemctl", "is-active", "chrony"): (3, "inactive\n"),
                                               ("systemctl", "is-active", "systemd-timesyncd"): (0, "active\n"),
                                               ("systemctl", "is-active", "ntp"): (4, "unknown\n")}))
    assert readers.read_service({"units": ["chrony", "systemd-timesyncd"]}, state()).value == "active"
    stopped = readers.read_service({"units": ["chrony", "ntp"]}, state())
    assert (stopped.value, stopped.evidence) == ("inactive", "chrony: inactive, ntp: unknown")


def test_line_skips_comments_takes_the_first_group_and_names_a_missing_file(tmp_path):
    (tmp_path / "a.conf").write_text("# umask 000\numask 027\n")
    found = readers.read_line({"path": str(tmp_path / "*.conf"), "pattern": r"^\s*umask\s+(\d+)"}, state())
    assert found.value == "027" and found.evidence.endswith("a.conf: umask 027")
    assert readers.read_line({"path": str(tmp_path / "none"), "pattern": "x"}, state()).value is None
    with pytest.raises(node.NotApplicable, match="no journald"):
        readers.read_line({"path": str(tmp_path / "none"), "pattern": "x", "if_missing": "no journald"}, state())


def test_config_key_last_line_wins_over_every_globbed_file_and_a_flag_reads_present(tmp_path):
    (tmp_path / "10-a.conf").write_text("deny = 3\nfoo = 1\n")
    (tmp_path / "20-b.conf").write_text("deny = 5\n# deny = 9\neven_deny_root\n")
    path = str(tmp_path / "*.conf")
    assert readers.read_config_key({"path": path, "key": "deny"}, state()).value == "5"
    assert readers.read_config_key({"path": path, "key": "even_deny_root"}, state()).value == "present"
    assert readers.read_config_key({"path": path, "keys": ["unlock_time", "foo"]}, state()).value == "1"
    assert readers.read_config_key({"path": path, "key": "unlock_time"}, state()).value is None


def test_module_is_disabled_by_install_false_blacklisted_or_loadable(monkeypatch):
    node_state = state()
    node_state.__dict__["modprobe"] = {"cramfs": {"install": "/bin/false"}, "usb_storage": {"blacklist": "yes"}}
    node_state.__dict__["loaded_modules"] = {"overlay"}
    assert readers.read_module({"module": "cramfs"}, node_state).value == "disabled"
    assert readers.read_module({"module": "usb-storage"}, node_state).value == "blacklisted"
    loaded = readers.read_module({"module": "overlay"}, node_state)
    assert loaded.value == "loadable" and "(loaded now)" in loaded.evidence


def test_process_user_is_root_if_any_process_of_the_daemon_is(monkeypatch):
    monkeypatch.setattr(node, "find_processes", lambda name: [(101, ["etcd"]), (202, ["etcd"])])
    status = {"/proc/101/status": "Name:\tetcd\nUid:\t998\t998\t998\t998\n",
              "/proc/202/status": "Name:\tetcd\nUid:\t0\t0\t0\t0\n"}
    monkeypatch.setattr(node, "read_text", lambda path: status[path])
    judged = readers.read_process_user({"process": "etcd"}, state())
    assert judged.value == "root" and "pid 101, 202" in judged.evidence
    monkeypatch.setattr(node, "find_processes", lambda name: [])
    with pytest.raises(node.ReadError, match="no etcd process runs"):
        readers.read_process_user({"process": "etcd"}, state())


def test_mount_options_or_not_a_separate_mount(monkeypatch):
    monkeypatch.setattr(node, "mount_options", lambda mountpoint: ["rw", "nosuid", "nodev"] if mountpoint == "/tmp"
                        else None)
    assert readers.read_mount({"mountpoint": "/tmp", "option": "nodev"}, state()).value == ["rw", "nosuid", "nodev"]
    with pytest.raises(node.NotApplicable, match="/var/tmp is not a separate mount"):
        readers.read_mount({"mountpoint": "/var/tmp", "option": "nodev"}, state())


def test_audit_rule_searches_every_rules_file():
    node_state = state()
    node_state.__dict__["audit_rules"] = ("-w /etc/kubernetes/ -p wa -k kubernetes\n-a always,exit -F arch=b64 "
                                          "-S execve -C uid!=euid -k user_emulation\n", ["10.rules", "20.rules"])
    found = readers.read_audit_rule({"pattern": r"^-w /etc/kubernetes/ -p wa"}, node_state)
    assert found.value == "-w /etc/kubernetes/ -p wa" and "(2 rule files)" in found.evidence
    node_state.__dict__["audit_rules"] = ("", [])
    assert readers.read_audit_rule({"pattern": "x"}, node_state).value is None


def test_nft_table_as_loaded_names_rules_added_by_hand(monkeypatch, tmp_path):
    loaded = "table inet kubeharden {\n\tchain input {\n\t\ttcp dport 22 accept\n\t}\n}\n"
    (tmp_path / "loaded.nft").write_text(loaded)
    live = loaded.replace("\t\ttcp dport 22 accept\n", "\t\ttcp dport 22 accept\n\t\ttcp dport 31337 accept\n")
    monkeypatch.setattr(node, "run", answered({("nft", "list", "table", "inet", "kubeharden"): (0, live)}))
    drifted = readers.read_nft_table({"table": "inet kubeharden", "as_loaded": str(tmp_path / "loaded.nft")}, state())
    assert drifted.value != "as loaded" and "added: tcp dport 31337 accept" in drifted.evidence
    monkeypatch.setattr(node, "run", answered({("nft", "list", "table", "inet", "kubeharden"): (1, "")}))
    assert readers.read_nft_table({"table": "inet kubeharden"}, state()).value == "absent"
