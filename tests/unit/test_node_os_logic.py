"""The text transformations behind node_os's modules (module_utils/kubeharden_os.py)."""

from __future__ import annotations

import pytest
from ansible.module_utils import kubeharden_os as os_logic

LOGIN_DEFS = """\
# Password aging controls:
#
#\tPASS_MAX_DAYS\tMaximum number of days a password may be used.
PASS_MAX_DAYS\t99999
PASS_MIN_DAYS\t0
PASS_WARN_AGE\t7
#UMASK\t\t022
PASS_MAX_DAYS 12
"""


def test_config_keys_rewrite_in_place_comment_duplicates_and_use_the_commented_example():
    after = os_logic.set_config_keys(LOGIN_DEFS, {"PASS_MAX_DAYS": 365, "UMASK": "027", "ENCRYPT_METHOD": "YESCRYPT"},
                                     "space")
    lines = after.splitlines()
    assert lines[3] == "PASS_MAX_DAYS 365"
    assert "# PASS_MAX_DAYS 12  # disabled by kubeharden" in lines
    assert lines[lines.index("#UMASK\t\t022") + 1] == "UMASK 027"
    assert lines[-2:] == ["# Set by kubeharden", "ENCRYPT_METHOD YESCRYPT"]
    assert os_logic.config_keys(after, "space")["PASS_MAX_DAYS"] == "365"
    assert os_logic.set_config_keys(after, {"PASS_MAX_DAYS": 365, "UMASK": "027", "ENCRYPT_METHOD": "YESCRYPT"},
                                    "space") == after


def test_config_keys_keep_a_line_whose_value_is_already_right():
    assert os_logic.set_config_keys(LOGIN_DEFS, {"PASS_WARN_AGE": 7}, "space") == LOGIN_DEFS


def test_config_keys_styles_and_removal():
    text = "# INACTIVE=-1\nSHELL=/bin/sh\n"
    assert os_logic.set_config_keys(text, {"INACTIVE": 30}, "equals") == "# INACTIVE=-1\nINACTIVE=30\nSHELL=/bin/sh\n"
    assert os_logic.set_config_keys("# minlen = 8\n", {"minlen": 14}, "spaced_equals") == "# minlen = 8\nminlen = 14\n"
    assert os_logic.set_config_keys("SHELL=/bin/sh\n", {"SHELL": None}, "equals") == \
        "# SHELL=/bin/sh  # disabled by kubeharden\n"


@pytest.mark.parametrize(("current", "limit", "expected"), [
    (0o644, 0o600, 0o600), (0o600, 0o644, 0o600), (0o755, 0o700, 0o700), (0o4755, 0o755, 0o755),
    (0o640, 0o640, 0o640), (0o777, 0o440, 0o440)])
def test_modes_are_only_ever_tightened(current, limit, expected):
    assert os_logic.tightened_mode(current, limit) == expected


def test_fstab_options_are_added_to_the_right_entry_only():
    fstab = ("UUID=1 / ext4 defaults 0 1\n/dev/sdb1  /tmp  ext4  defaults,nosuid  0 2\n"
             "# /dev/sdc /var/tmp ext4 defaults 0 2\n")
    after, found = os_logic.fstab_add_options(fstab, "/tmp", ["nodev", "nosuid", "noexec"])
    assert found
    assert after.splitlines()[1] == "/dev/sdb1  /tmp  ext4  nosuid,nodev,noexec  0 2"
    assert after.splitlines()[0] == "UUID=1 / ext4 defaults 0 1"
    assert os_logic.fstab_add_options(after, "/tmp", ["nodev"]) == (after, True)
    assert os_logic.fstab_add_options(fstab, "/var/tmp", ["nodev"])[1] is False  # commented out: no entry


def test_swap_entries_are_commented_out():
    fstab = "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n"
    after = os_logic.fstab_comment_swap(fstab)
    assert after.splitlines()[1].startswith("# /swapfile none swap sw 0 0")
    assert os_logic.fstab_comment_swap(after) == after


SYSCALLS = {"adjtimex", "settimeofday", "clock_settime", "init_module", "finit_module", "mount"}


@pytest.mark.parametrize("rule", [
    "-w /etc/passwd -p wa -k identity",
    "-a always,exit -F arch=b64 -S adjtimex,settimeofday,clock_settime -k time-change",
    "-a always,exit -F dir=/var/lib/etcd/ -F perm=wa -F auid>=1000 -F auid!=unset -k etcd-data",
    "-e 2", "-b 8192", "-D"])
def test_valid_audit_rules_pass(rule):
    assert os_logic.audit_rule_error(rule, SYSCALLS) is None


@pytest.mark.parametrize(("rule", "reason"), [
    ("-w etc/passwd -p wa", "absolute path"),
    ("-w /etc/passwd -p wz", "combination of r, w, x"),
    ("-a always,exti -S mount", "action,list"),
    ("-a always,exit -S mount,no_such_call", "unknown system call 'no_such_call'"),
    ("-a always,exit -F auid", "field<op>value"),
    ("-w /etc/passwd -k " + "k" * 40, "1 to 31"),
    ("-e 3", "0, 1 or 2"),
    ("-p wa", "needs -w"),
    ("-w /etc/passwd -z x", "unknown option -z")])
def test_invalid_audit_rules_are_named(rule, reason):
    assert reason in os_logic.audit_rule_error(rule, SYSCALLS)


def test_audit_rule_directory():
    assert os_logic.audit_rule_directory("-w /etc/kubernetes/ -p wa") == "/etc"
    assert os_logic.audit_rule_directory("-w /usr/bin/kubelet -p wa") == "/usr/bin"
    assert os_logic.audit_rule_directory("-a always,exit -F dir=/var/lib/etcd/ -F perm=wa") == "/var/lib/etcd/"
    assert os_logic.audit_rule_directory("-a always,exit -S mount") is None
    assert os_logic.audit_rule_directory("-a always,exit -F path=/usr/bin/chcon -F perm=x -k c") == "/usr/bin"


def test_sysctl_render_and_overrides():
    text = os_logic.render_sysctl({"b.x": 1, "a.y": True, "c.z": "4096 87380  6291456"}, "header")
    assert text == "# header\na.y = 1\nb.x = 1\nc.z = 4096 87380 6291456\n"
    persisted = {"b.x": ("0", "/etc/sysctl.d/zz-late.conf"), "a.y": ("1", "/etc/sysctl.d/zz-late.conf")}
    assert os_logic.sysctl_overrides({"b.x": 1, "a.y": 1}, persisted, "/etc/sysctl.d/99-zz-kubeharden.conf") == [
        "b.x = 0 in /etc/sysctl.d/zz-late.conf"]


def test_sshd_drop_in_and_algorithms():
    text = os_logic.render_sshd({"PermitRootLogin": "no", "X11Forwarding": False, "AllowGroups": [],
                                 "Ciphers": ["aes256-gcm@openssh.com", "aes128-ctr"], "MaxAuthTries": 3}, "h")
    assert text == ("# h\nPermitRootLogin no\nX11Forwarding no\nCiphers aes256-gcm@openssh.com,aes128-ctr\n"
                    "MaxAuthTries 3\n")
    assert os_logic.supported_algorithms(["mlkem768x25519-sha256", "curve25519-sha256"],
                                         {"curve25519-sha256", "ecdh-sha2-nistp256"}) == ["curve25519-sha256"]
    assert os_logic.parse_sshd_t("port 22\nHostKey /a\nhostkey /b\n") == {"port": "22", "hostkey": "/a /b"}


@pytest.mark.parametrize(("effective", "user", "groups", "password", "expected"), [
    ({"permitrootlogin": "no"}, "root", ["root"], False, "connects as root"),
    ({"permitrootlogin": "prohibit-password"}, "root", ["root"], True, "connects as root"),
    ({"passwordauthentication": "no"}, "admin", ["sudo"], True, "with a password"),
    ({"allowgroups": "ssh-users"}, "admin", ["admin", "sudo"], False, "AllowGroups would be ssh-users"),
    ({"allowusers": "alice bob@10.0.0.1"}, "admin", ["sudo"], False, "AllowUsers"),
    ({"denygroups": "sudo"}, "admin", ["admin", "sudo"], False, "DenyGroups"),
])
def test_lockouts_are_found(effective, user, groups, password, expected):
    reasons = os_logic.lockout_reasons(effective, user, groups, password)
    assert reasons and expected in reasons[0]


def test_no_lockout_for_a_key_user_in_an_allowed_group():
    effective = {"permitrootlogin": "no", "passwordauthentication": "no", "pubkeyauthentication": "yes",
                 "allowgroups": "sudo ssh-users", "allowusers": "labadmin@*"}
    assert os_logic.lockout_reasons(effective, "labadmin", ["labadmin", "sudo"], False) == []
    assert os_logic.lockout_reasons({"permitrootlogin": "prohibit-password"}, "root", ["root"], False) == []


PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/bin/sh
toor:x:0:0::/root:/bin/bash
ops:x:1000:1000::/home/ops:/bin/bash
ghost:*:1001:4242::/home/ghost:/bin/bash
ops:x:1002:0::/home/ops2:/bin/bash
"""
GROUP = """root:x:0:
daemon:x:1:
shadow:x:42:ops
games:x:60:
ops:x:1000:
ops:x:1000:
wheel:x:0:
"""
SHADOW = """root:$y$j9T$abc:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
sync:*:19000:0:99999:7:::
games::19000:0:99999:7:::
ops:$y$j9T$def:99999:1:365:7:::
"""


def test_account_rules_name_each_offending_account():
    def offenders(aspect):
        return os_logic.account_offenders(aspect, PASSWD, GROUP, SHADOW, today=20000)

    assert offenders("uid0") == ["toor"]
    assert offenders("gid0_users") == ["toor", "ops"]
    assert offenders("gid0_groups") == ["wheel"]
    assert offenders("root_access") == []
    assert offenders("system_shells") == ["games (/bin/sh)", "toor (/bin/bash)"]  # sync's /bin/sync is Debian's
    assert offenders("locked_without_shell") == []  # daemon is locked
    assert offenders("shadowed") == ["ghost"]
    assert offenders("empty_passwords") == ["games"]
    assert offenders("missing_groups") == ["sync (gid 65534)", "ghost (gid 4242)"]
    assert offenders("shadow_group") == ["member ops"]
    assert offenders("duplicate_uids") == ["0"]
    assert offenders("duplicate_gids") == ["0", "1000"]
    assert offenders("duplicate_users") == ["ops"]
    assert offenders("duplicate_groups") == ["ops"]
    assert offenders("future_password_change") == ["ops"]
    clean = "root:x:0:0:root:/root:/bin/bash\n"
    assert os_logic.account_offenders("root_access", clean, "root:x:0:\n", "root::1:::::\n", 1) == [
        "root: empty password"]
    with pytest.raises(ValueError, match="unknown account aspect"):
        os_logic.account_offenders("nope", clean, "", "", 1)
