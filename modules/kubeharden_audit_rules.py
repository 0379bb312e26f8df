#!/usr/bin/python
"""Install auditd rules after checking every line, and load them where auditd runs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_audit_rules
short_description: Check, install and load kubeharden's audit rules
description:
  - Checks every rule before anything is written (options, permissions, field syntax, key length, and system
    call names against this architecture's table from C(ausyscall --dump)); one bad rule fails the task and
    names it.
  - Rules on a directory that does not exist on this node (the parent of a C(-w) watch, a C(-F dir=) field)
    are left out and reported in C(skipped_watches), as etcd's data directory exists only where etcd runs.
  - Writes the rules file atomically after a backup, with diff and check mode, plus a finalize file with
    C(-e 2) when C(immutable) is on (the kernel then refuses rule changes until a reboot).
  - Where auditd is running, loads the rules with augenrules; if the kernel rejects them the previous file
    is restored and the task fails. Where auditd is not running (always in a container, where the audit netlink
    socket belongs to the host) the rules are installed and C(loaded) is false with the reason.
version_added: "0.1.0"
options:
  rules:
    description: Audit rules, one per item, in auditctl syntax.
    type: list
    elements: str
    required: true
  path:
    description: kubeharden's rules file (augenrules reads rules.d in name order).
    type: path
    default: /etc/audit/rules.d/50-kubeharden.rules
  immutable:
    description: Lock the rules until the next reboot (C(-e 2), in a file read last).
    type: bool
    default: false
  finalize_path:
    description: The file that holds C(-e 2) when immutable is on.
    type: path
    default: /etc/audit/rules.d/99-kubeharden-finalize.rules
  load:
    description: Load the rules into a running auditd.
    type: bool
    default: true
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Audit changes to the Kubernetes configuration
  kubeharden_audit_rules:
    rules:
      - -w /etc/kubernetes/ -p wa -k kubernetes
"""

RETURN = r"""
path:
  description: The rules file.
  returned: always
  type: str
skipped_watches:
  description: Watch rules left out because their directory does not exist here.
  returned: always
  type: list
loaded:
  description: Whether the rules were loaded into the running kernel by this task.
  returned: always
  type: bool
auditd:
  description: The auditd service state (systemctl is-active), with the reason when it cannot run.
  returned: always
  type: str
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, atomic_write, backup, read_or_empty
from ansible.module_utils.kubeharden_node import in_container, run
from ansible.module_utils.kubeharden_os import audit_rule_directory, audit_rule_error

HEADER = "# Audit rules set by kubeharden (role node_os). Edit node_os_auditd_rules, not this file.\n"


def syscall_table(arch: str | None) -> set[str] | None:
    if not shutil.which("ausyscall"):
        return None
    done = run(["ausyscall", *([arch] if arch else []), "--dump"])
    if done.returncode != 0:
        return None
    return {line.split()[1] for line in done.stdout.splitlines()[1:] if len(line.split()) == 2}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "rules": {"type": "list", "elements": "str", "required": True},
            "path": {"type": "path", "default": "/etc/audit/rules.d/50-kubeharden.rules"},
            "immutable": {"type": "bool", "default": False},
            "finalize_path": {"type": "path", "default": "/etc/audit/rules.d/99-kubeharden-finalize.rules"},
            "load": {"type": "bool", "default": True},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    p = module.params
    for option in ("path", "finalize_path"):
        if not p[option].endswith(".rules"):
            module.fail_json(msg=f"{option} {p[option]} must end in .rules (augenrules reads only those)")
    native = syscall_table(None)
    compat = syscall_table("i386") if os.uname().machine == "x86_64" else None
    kept, skipped, errors = [], [], []
    for rule in (rule.strip() for rule in p["rules"]):
        if not rule or rule.startswith("#"):
            continue
        error = audit_rule_error(rule, compat if "arch=b32" in rule else native)
        if error:
            errors.append(f"{rule!r}: {error}")
            continue
        directory = audit_rule_directory(rule)
        if directory and not os.path.isdir(directory):
            skipped.append(rule)
            continue
        kept.append(rule)
    if errors:
        module.fail_json(msg="auditctl would reject these rules; nothing written: " + "; ".join(errors))

    files = {p["path"]: HEADER + "\n".join(kept) + "\n"}
    files[p["finalize_path"]] = HEADER + "-e 2\n" if p["immutable"] else None
    result = {"changed": False, "path": p["path"], "skipped_watches": skipped, "loaded": False}
    before = {path: read_or_empty(path) for path in files}
    changed = [path for path, text in files.items() if (text or "") != before[path]
               and not (text is None and not os.path.exists(path))]
    container = in_container()
    state = run(["systemctl", "is-active", "auditd.service"]).stdout.strip() or "unknown"
    result["auditd"] = state + (" (auditd cannot run in a container: rules installed, not loaded)"
                                if container and state != "active" else "")
    if changed:
        result["changed"] = True
        result["diff"] = [{"before": before[path], "after": files[path] or "", "before_header": path,
                           "after_header": path} for path in changed]
        if not module.check_mode:
            backups = {}
            for path in changed:
                if p["backup"] and os.path.exists(path):
                    backups[path] = backup(path, p["backup_dir"])
                if files[path] is None:
                    os.unlink(path)
                else:
                    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
                    atomic_write(path, files[path], mode=0o640)
            if p["load"] and state == "active":
                loaded = run(["augenrules", "--load"], timeout=120)
                if loaded.returncode != 0:
                    for path in changed:
                        if before[path]:
                            atomic_write(path, before[path], mode=0o640)
                        elif os.path.exists(path):
                            os.unlink(path)
                    run(["augenrules", "--load"], timeout=120)
                    module.fail_json(msg="the kernel rejected the rules; previous files restored: "
                                         + (loaded.stderr or loaded.stdout).strip())
                result["loaded"] = True
    module.exit_json(**result)


if __name__ == "__main__":
    main()
