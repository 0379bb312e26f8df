"""node_os's modules run for real by Ansible on the controller, against files in a temporary directory."""

from __future__ import annotations

import json
import os
import stat

from tests.conftest import run_module


def test_config_keys_writes_several_files_with_backups_and_is_idempotent(tmp_path):
    login_defs = tmp_path / "login.defs"
    login_defs.write_text("PASS_MAX_DAYS\t99999\n#UMASK\t022\n")
    login_defs.chmod(0o640)
    backups = tmp_path / "backups"
    args = {"backup_dir": str(backups), "files": [
        {"path": str(login_defs), "settings": {"PASS_MAX_DAYS": 365, "UMASK": "027"}},
        {"path": str(tmp_path / "useradd"), "style": "equals", "create": True, "settings": {"INACTIVE": 30}}]}
    check = run_module("kubeharden_config_keys", args, check=True, diff=True)
    assert check["changed"] and "+PASS_MAX_DAYS 365" in check["stdout"]
    assert login_defs.read_text() == "PASS_MAX_DAYS\t99999\n#UMASK\t022\n" and not (tmp_path / "useradd").exists()
    done = run_module("kubeharden_config_keys", args)
    assert done["changed_files"] == [str(login_defs), str(tmp_path / "useradd")]
    assert login_defs.read_text() == "PASS_MAX_DAYS 365\n#UMASK\t022\nUMASK 027\n"
    assert stat.S_IMODE(login_defs.stat().st_mode) == 0o640
    assert (tmp_path / "useradd").read_text() == "# Set by kubeharden\nINACTIVE=30\n"
    assert len(list(backups.rglob("login.defs.*"))) == 1
    assert run_module("kubeharden_config_keys", args)["changed"] is False


def test_config_keys_bad_input_fails_before_any_write(tmp_path):
    first = tmp_path / "first.conf"
    first.write_text("a = 1\n")
    result = run_module("kubeharden_config_keys", {"files": [
        {"path": str(first), "style": "spaced_equals", "settings": {"a": 2}},
        {"path": str(tmp_path / "missing.conf"), "settings": {"b": 1}}]})
    assert result["failed"] and "missing.conf does not exist; nothing written" in result["msg"]
    assert first.read_text() == "a = 1\n"
    bad = run_module("kubeharden_config_keys", {"path": str(first), "settings": {"bad key": 1}})
    assert bad["failed"] and "bad key" in bad["msg"] and first.read_text() == "a = 1\n"


def test_files_writes_creates_parents_fixes_modes_and_is_idempotent(tmp_path):
    target = tmp_path / "new" / "dir" / "limits.conf"
    existing = tmp_path / "issue"
    existing.write_text("old\n")
    existing.chmod(0o600)
    args = {"backup_dir": str(tmp_path / "b"), "files": [
        {"path": str(target), "content": "* hard core 0\n"},
        {"path": str(existing), "content": "old\n", "mode": "0644", "owner": "root", "group": "root"}]}
    check = run_module("kubeharden_files", args, check=True)
    assert check["changed"] and not target.exists() and stat.S_IMODE(existing.stat().st_mode) == 0o600
    done = run_module("kubeharden_files", args)
    assert done["changed_files"] == [str(target), str(existing)]
    assert target.read_text() == "* hard core 0\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE(existing.stat().st_mode) == 0o644
    assert run_module("kubeharden_files", args)["changed"] is False


def test_files_bad_input_writes_nothing(tmp_path):
    first = tmp_path / "a.conf"
    result = run_module("kubeharden_files", {"files": [{"path": str(first), "content": "x\n"},
                                                        {"path": str(tmp_path / "b"), "content": "y", "mode": "9z"}]})
    assert result["failed"] and "is not octal" in result["msg"] and not first.exists()
    relative = run_module("kubeharden_files", {"files": [{"path": "relative/path", "content": "x"}]})
    assert relative["failed"] and "absolute path" in relative["msg"]


def test_file_modes_tighten_never_widen_and_report_missing(tmp_path):
    loose, strict = tmp_path / "loose", tmp_path / "strict"
    loose.write_text("")
    strict.write_text("")
    loose.chmod(0o666)
    strict.chmod(0o600)
    args = {"files": [{"path": str(loose), "mode_max": "0640"}, {"path": str(strict), "mode_max": "0644"},
                      {"path": str(tmp_path / "absent"), "mode_max": "0600"}]}
    result = run_module("kubeharden_file_modes", args, diff=True)
    assert result["changed_files"] == [str(loose)] and result["missing"] == [str(tmp_path / "absent")]
    assert stat.S_IMODE(loose.stat().st_mode) == 0o640 and stat.S_IMODE(strict.stat().st_mode) == 0o600
    assert run_module("kubeharden_file_modes", args)["changed"] is False
    bad = run_module("kubeharden_file_modes", {"files": [{"path": str(loose), "mode_max": "rw-"}]})
    assert bad["failed"] and "not an octal mode" in bad["msg"]
    nobody = run_module("kubeharden_file_modes", {"files": [{"path": str(loose), "mode_max": "0600",
                                                             "owner": "no-such-user-here"}]})
    assert nobody["failed"] and "no-such-user-here" in nobody["msg"] and stat.S_IMODE(loose.stat().st_mode) == 0o640


def test_file_modes_refuse_a_symbolic_link_unless_told_to_follow_it(tmp_path):
    target, link = tmp_path / "kubelet.service", tmp_path / "link.service"
    target.write_text("")
    target.chmod(0o644)
    link.symlink_to(target)
    refused = run_module("kubeharden_file_modes", {"files": [{"path": str(link), "mode_max": "0600"}]})
    assert refused["failed"] and "symbolic link" in refused["msg"] and stat.S_IMODE(target.stat().st_mode) == 0o644
    other = tmp_path / "other.conf"
    other.write_text("")
    other.chmod(0o664)
    followed = run_module("kubeharden_file_modes", {"files": [{"paths": [str(link), str(other)], "mode_max": "0600",
                                                               "follow": True}]})
    assert followed["changed_files"] == [str(target), str(other)]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(other.stat().st_mode) == 0o600


def test_file_modes_wildcards_stand_for_the_files_they_match(tmp_path):
    drop_ins = tmp_path / "kubelet.service.d"
    drop_ins.mkdir()
    for name in ("10-kubeadm.conf", "20-extra.conf", "notes.txt"):
        (drop_ins / name).write_text("")
        (drop_ins / name).chmod(0o664)
    args = {"files": [{"paths": [str(drop_ins / "*.conf"), str(tmp_path / "empty.d" / "*.conf")],
                       "mode_max": "0644"}]}
    result = run_module("kubeharden_file_modes", args)
    assert result["changed_files"] == [str(drop_ins / "10-kubeadm.conf"), str(drop_ins / "20-extra.conf")]
    assert result["missing"] == [] and stat.S_IMODE((drop_ins / "notes.txt").stat().st_mode) == 0o664
    assert run_module("kubeharden_file_modes", args)["changed"] is False


def test_file_scan_finds_set_uid_and_world_writable_files_and_caches(tmp_path):
    root = tmp_path / "usr"
    root.mkdir()
    (root / "allowed").write_text("")
    (root / "allowed").chmod(0o4755)
    (root / "surprise").write_text("")
    (root / "surprise").chmod(0o2755)
    (root / "open").write_text("")
    (root / "open").chmod(0o666)
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    cache = tmp_path / "cache" / "scan.json"
    args = {"scan_roots": [str(root)], "suid_allowed": [str(root / "allowed")], "scan_cache": str(cache)}
    first = run_module("kubeharden_file_modes", args)
    assert first["unexpected_suid"] == [str(root / "surprise")]
    assert first["world_writable"] == [str(root / "open")]
    assert first["scan_cached"] is False and first["changed"] is False
    assert json.loads(cache.read_text())["result"]["unexpected_suid"] == [str(root / "surprise")]
    (root / "later").write_text("")
    (root / "later").chmod(0o4755)
    second = run_module("kubeharden_file_modes", args)
    assert second["scan_cached"] is True and second["unexpected_suid"] == [str(root / "surprise")]
    third = run_module("kubeharden_file_modes", {**args, "scan_max_age": 0})
    assert third["scan_cached"] is False and str(root / "later") in third["unexpected_suid"]


def test_sysctl_file_is_written_once_and_bad_keys_fail(tmp_path):
    path = tmp_path / "99-zz-kubeharden.conf"
    args = {"path": str(path), "apply_live": False, "settings": {"kernel.kptr_restrict": 2, "net.ipv4.ip_forward": 1}}
    done = run_module("kubeharden_sysctl", args)
    assert done["changed"] and path.read_text().splitlines()[1:] == ["kernel.kptr_restrict = 2",
                                                                     "net.ipv4.ip_forward = 1"]
    assert run_module("kubeharden_sysctl", args)["changed"] is False
    bad = run_module("kubeharden_sysctl", {**args, "settings": {"Kernel Panic": 1}})
    assert bad["failed"] and "Kernel Panic" in bad["msg"]
    wrong_name = run_module("kubeharden_sysctl", {**args, "path": str(tmp_path / "kubeharden.txt")})
    assert wrong_name["failed"] and "must end in .conf" in wrong_name["msg"]


def test_audit_rules_are_checked_before_writing(tmp_path):
    path = tmp_path / "rules.d" / "50-kubeharden.rules"
    finalize = tmp_path / "rules.d" / "99-kubeharden-finalize.rules"
    base = {"path": str(path), "finalize_path": str(finalize), "load": False}
    bad = run_module("kubeharden_audit_rules", {**base, "rules": ["-w /etc/passwd -p wa -k identity",
                                                                  "-w /etc/shadow -p wz"]})
    assert bad["failed"] and "'-w /etc/shadow -p wz'" in bad["msg"] and not path.exists()
    rules = ["-w /etc/passwd -p wa -k identity", f"-w {tmp_path}/nowhere/file -p wa",
             f"-a always,exit -F dir={tmp_path}/no-etcd -F perm=wa -k etcd-data"]
    done = run_module("kubeharden_audit_rules", {**base, "rules": rules, "immutable": True})
    assert done["changed"] and done["loaded"] is False
    assert done["skipped_watches"] == rules[1:]
    assert path.read_text().splitlines()[1:] == ["-w /etc/passwd -p wa -k identity"]
    assert finalize.read_text().splitlines()[-1] == "-e 2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    relaxed = run_module("kubeharden_audit_rules", {**base, "rules": rules, "immutable": False})
    assert relaxed["changed"] and not finalize.exists()
    assert run_module("kubeharden_audit_rules", {**base, "rules": rules})["changed"] is False


def test_mount_options_leave_non_mounts_alone_and_refuse_unknown_options(tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n")
    result = run_module("kubeharden_mount_options", {"fstab": str(fstab),
                                                     "mounts": {str(tmp_path / "not-a-mount"): ["nodev"]}})
    assert result["not_separate"] == [str(tmp_path / "not-a-mount")] and result["changed"] is False
    bad = run_module("kubeharden_mount_options", {"fstab": str(fstab), "mounts": {"/tmp": ["exec"]}})
    assert bad["failed"] and "/tmp" in bad["msg"]
    swap = run_module("kubeharden_mount_options", {"fstab": str(fstab), "swap_off": True}, check=True)
    assert swap["changed"] and "swap" in fstab.read_text().splitlines()[1] and not fstab.read_text().startswith("#")
    assert fstab.read_text() == "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n"  # check mode


def test_packages_reads_dpkg_and_refuses_bad_names():
    nothing = run_module("kubeharden_packages", {"present": ["dpkg"], "absent": ["no-such-package-kubeharden"]},
                         check=True)
    assert nothing["changed"] is False and nothing["installed"] == [] and nothing["purged"] == []
    bad = run_module("kubeharden_packages", {"present": ["Bad_Name"]})
    assert bad["failed"] and "Bad_Name" in bad["msg"]
    both = run_module("kubeharden_packages", {"present": ["dpkg"], "absent": ["dpkg"]})
    assert both["failed"] and "present and absent" in both["msg"]
    assert os.path.exists("/var/lib/dpkg/status")


def test_services_refuses_bad_entries_before_touching_any_unit():
    bad = run_module("kubeharden_services", {"units": [{"name": "ssh.service", "state": "running"}]})
    assert bad["failed"] and "started|stopped|restarted" in bad["msg"]
    nameless = run_module("kubeharden_services", {"units": [{"enabled": True}]})
    assert nameless["failed"] and "name" in nameless["msg"]


def test_etcd_encryption_reads_only_over_tls():
    plain = run_module("kubeharden_etcd_encryption", {"endpoint": "http://127.0.0.1:2379"})
    assert plain["failed"] and "must be https://" in plain["msg"]
