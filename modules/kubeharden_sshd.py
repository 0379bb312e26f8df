#!/usr/bin/python
"""Harden sshd through one drop-in, validated with `sshd -T` before it is written, never locking out the play."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_sshd
short_description: Write kubeharden's sshd drop-in safely, with a lockout check and a rollback timer
description:
  - Renders C(settings) (sshd keywords) into a drop-in read before every other sshd file (sshd keeps the
    first value it reads). Algorithm lists in C(crypto) are reduced to what the installed OpenSSH offers
    (C(ssh -Q)), in the given order of preference.
  - Before writing, builds the whole configuration as sshd would read it with the candidate drop-in, in a
    temporary directory, and runs C(sshd -t) and C(sshd -T -C user=...,addr=...) on it. It fails, writing
    nothing, when sshd rejects the syntax, when a setting would not take effect (the main file does not
    include the drop-in directory, or a Match block or earlier line wins), or when the connecting user could
    no longer log in (root login, password login, AllowUsers/AllowGroups/DenyUsers/DenyGroups).
  - When the file changes, arms a systemd timer that restores the previous drop-in and reloads sshd after
    C(rollback_seconds), then reloads sshd. Existing sessions survive a reload. Call again with
    C(state=confirmed) over a fresh connection to disarm the timer.
version_added: "0.1.0"
options:
  state:
    description: C(present) writes and reloads; C(confirmed) disarms the rollback timer.
    type: str
    choices: [present, confirmed]
    default: present
  settings:
    description: sshd keywords (as in sshd_config) to values; lists are joined with spaces.
    type: dict
    default: {}
  crypto:
    description: Preference lists for C(Ciphers), C(MACs), C(KexAlgorithms); unsupported names are dropped.
    type: dict
    default: {}
  dropin:
    description: kubeharden's drop-in; its directory must be included by the main file.
    type: path
    default: /etc/ssh/sshd_config.d/00-kubeharden.conf
  config:
    description: sshd's main configuration file.
    type: path
    default: /etc/ssh/sshd_config
  connecting_user:
    description: The user this play logs in as (checked against the new configuration).
    type: str
  connecting_address:
    description: The address this play connects from, for Match blocks.
    type: str
    default: 127.0.0.1
  connecting_with_password:
    description: Whether the play logs in with a password rather than a key.
    type: bool
    default: false
  lockout_hint:
    description: Appended to a lockout failure, to name the variables that decide it.
    type: str
    default: ""
  rollback_seconds:
    description: Restore the previous drop-in this long after a change unless confirmed; 0 disables.
    type: int
    default: 120
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: No root or password logins, modern algorithms
  kubeharden_sshd:
    settings: {PermitRootLogin: "no", PasswordAuthentication: "no"}
    crypto:
      KexAlgorithms: [mlkem768x25519-sha256, sntrup761x25519-sha512@openssh.com, curve25519-sha256]
    connecting_user: admin
"""

RETURN = r"""
effective:
  description: The values sshd reports (C(sshd -T)) for every key set, for the connecting user.
  returned: always
  type: dict
crypto:
  description: The algorithm lists written, after dropping what this OpenSSH lacks.
  returned: always
  type: dict
rollback_armed:
  description: Whether a rollback timer waits for confirmation.
  returned: always
  type: bool
"""

import glob
import grp
import os
import pwd
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, atomic_write, backup, read_or_empty
from ansible.module_utils.kubeharden_node import run
from ansible.module_utils.kubeharden_os import (
    lockout_reasons,
    parse_sshd_t,
    render_sshd,
    sshd_word,
    supported_algorithms,
)
from ansible.module_utils.kubeharden_rollback import RollbackTimer

HEADER = "sshd settings from kubeharden (role node_os); read first, so they win. Edit node_os_ssh_*, not this file."
ROLLBACK = RollbackTimer("kubeharden-sshd-rollback")
QUERY = {"ciphers": "cipher", "macs": "mac", "kexalgorithms": "kex"}
TIME_KEYS = {"logingracetime", "clientaliveinterval"}


def ssh_service() -> str | None:
    for unit in ("ssh.service", "sshd.service"):
        if run(["systemctl", "is-active", unit]).stdout.strip() == "active":
            return unit
    return None


def user_groups(user: str) -> list[str]:
    try:
        primary = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return []
    return [primary] + [group.gr_name for group in grp.getgrall() if user in group.gr_mem]


def simulate(module, main_text: str, dropin: str, candidate: str, user: str, address: str) -> dict[str, str]:
    """Run sshd -t and -T on the configuration as it would be with `candidate` in place of the drop-in."""
    directory = os.path.dirname(dropin)
    workdir = tempfile.mkdtemp(prefix="kubeharden-sshd-")
    try:
        copy = os.path.join(workdir, "sshd_config.d")
        os.mkdir(copy)
        for path in glob.glob(os.path.join(directory, "*")):
            if os.path.isfile(path) and path != dropin:
                shutil.copy(path, copy)
        with open(os.path.join(copy, os.path.basename(dropin)), "w") as handle:
            handle.write(candidate)
        relative = os.path.relpath(directory, "/etc/ssh")
        included = re.compile(rf"^(\s*Include\s+)(?:{re.escape(directory)}|{re.escape(relative)})/", re.I | re.M)
        if not included.search(main_text):
            module.fail_json(msg=f"{module.params['config']} does not Include {directory}/*.conf, so the drop-in "
                                 "would be ignored; add the Include line first. Nothing written.")
        main = os.path.join(workdir, "sshd_config")
        with open(main, "w") as handle:
            handle.write(included.sub(lambda m: m.group(1) + copy + "/", main_text))
        checked = run(["sshd", "-t", "-f", main])
        if checked.returncode != 0:
            module.fail_json(msg=f"sshd rejects the new configuration, nothing written: {checked.stderr.strip()}")
        shown = run(["sshd", "-T", "-f", main, "-C", f"user={user},host=localhost,addr={address}"])
        if shown.returncode != 0:
            module.fail_json(msg=f"sshd -T failed on the new configuration, nothing written: {shown.stderr.strip()}")
        return parse_sshd_t(shown.stdout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def normalise(key: str, value: str) -> str:
    value = value.strip().lower()
    if key in TIME_KEYS and value.endswith("s") and value[:-1].isdigit():
        value = value[:-1]
    return value


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "confirmed"], "default": "present"},
            "settings": {"type": "dict", "default": {}},
            "crypto": {"type": "dict", "default": {}},
            "dropin": {"type": "path", "default": "/etc/ssh/sshd_config.d/00-kubeharden.conf"},
            "config": {"type": "path", "default": "/etc/ssh/sshd_config"},
            "connecting_user": {"type": "str"},
            "connecting_address": {"type": "str", "default": "127.0.0.1"},
            "connecting_with_password": {"type": "bool", "default": False, "no_log": False},
            "lockout_hint": {"type": "str", "default": ""},
            "rollback_seconds": {"type": "int", "default": 120},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "confirmed":
        armed = ROLLBACK.armed()
        if armed and not module.check_mode:
            ROLLBACK.disarm()
        module.exit_json(changed=armed, rollback_armed=False, effective={}, crypto={})
    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        module.fail_json(msg="sshd is not installed on this node")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if not os.path.exists(p["config"]):
        module.fail_json(msg=f"{p['config']} does not exist")

    settings = dict(p["settings"])
    crypto = {}
    for key, preferred in p["crypto"].items():
        kind = QUERY.get(key.lower())
        if kind is None or not isinstance(preferred, list):
            module.fail_json(msg=f"crypto: {key!r} is not one of Ciphers, MACs, KexAlgorithms with a list")
        offered = set(run(["ssh", "-Q", kind]).stdout.split())
        crypto[key] = supported_algorithms(preferred, offered)
        if not crypto[key]:
            module.fail_json(msg=f"crypto: none of {', '.join(preferred)} is offered by this OpenSSH "
                                 f"({', '.join(sorted(offered))}); nothing written")
        settings[key] = crypto[key]
    for key, value in settings.items():
        if not re.match(r"^[A-Za-z][A-Za-z0-9]*$", key) or "\n" in sshd_word(value):
            module.fail_json(msg=f"settings: {key!r} is not an sshd keyword with a one-line value")

    candidate = render_sshd(settings, HEADER)
    with open(p["config"]) as handle:
        main_text = handle.read()
    user = p["connecting_user"] or "root"
    effective = simulate(module, main_text, p["dropin"], candidate, user, p["connecting_address"])
    ignored = []
    for key, value in settings.items():
        wanted = sshd_word(",".join(value) if key.lower() in QUERY and isinstance(value, list) else value)
        if value in (None, "", []):
            continue
        got = effective.get(key.lower())
        if got is None or normalise(key.lower(), got) != normalise(key.lower(), wanted):
            ignored.append(f"{key} (wanted {wanted}, sshd would use {got})")
    if ignored:
        module.fail_json(msg="these settings would not take effect (an earlier line or a Match block wins): "
                             + "; ".join(ignored) + ". Nothing written.")
    if p["connecting_user"]:
        reasons = lockout_reasons(effective, user, user_groups(user), p["connecting_with_password"])
        if reasons:
            module.fail_json(msg=f"refusing to lock this play out of the node: {'; '.join(reasons)}. Nothing "
                                 f"written. {p['lockout_hint']}".strip())

    before = read_or_empty(p["dropin"])
    result = {"changed": candidate != before, "effective": {k.lower(): effective.get(k.lower()) for k in settings},
              "crypto": crypto, "rollback_armed": False}
    if result["changed"]:
        result["diff"] = {"before": before, "after": candidate, "before_header": p["dropin"],
                          "after_header": p["dropin"]}
        if not module.check_mode:
            restore = "rm -f " + p["dropin"]
            if before:
                result["backup_file"] = backup(p["dropin"], p["backup_dir"])
                restore = f"cp -p {result['backup_file']} {p['dropin']}"
            service = ssh_service()
            ROLLBACK.disarm()
            if p["rollback_seconds"] and service:
                refused = ROLLBACK.arm(p["rollback_seconds"],
                                       ["/bin/sh", "-c", f"{restore} && systemctl reload {service}"])
                if refused:
                    module.fail_json(msg=f"could not arm the rollback timer, nothing written: {refused}")
                result["rollback_armed"] = True
            os.makedirs(os.path.dirname(p["dropin"]), mode=0o755, exist_ok=True)
            atomic_write(p["dropin"], candidate, mode=0o600)
            if service:
                reloaded = run(["systemctl", "reload", service])
                if reloaded.returncode != 0:
                    module.fail_json(msg=f"sshd did not reload: {reloaded.stderr.strip()}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
