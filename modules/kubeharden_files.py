#!/usr/bin/python
"""Write several small configuration files in one call (fewer tasks: faster runs, shorter roles)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_files
short_description: Write several small files in one call
description:
  - Writes each file whose content, mode or owner differs, atomically and after a backup, with diff and
    check mode. Missing parent directories are created (mode 0755, root).
  - Meant for the short drop-ins a hardening role owns (modprobe.d, limits.d, profile.d, PAM profiles).
version_added: "0.1.0"
options:
  files:
    description: Entries with C(path), C(content), optional C(mode) (octal string, default 0644), C(owner) and
      C(group) (default root).
    type: list
    elements: dict
    required: true
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: No core dumps
  kubeharden_files:
    files:
      - path: /etc/security/limits.d/kubeharden-core.conf
        content: "* hard core 0\n"
"""

RETURN = r"""
changed_files:
  description: Paths written (or that would be, in check mode).
  returned: always
  type: list
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, replace_file


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "required": True},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    plan = []
    for entry in module.params["files"]:
        path, content = entry.get("path"), entry.get("content")
        unknown = set(entry) - {"path", "content", "mode", "owner", "group"}
        if not isinstance(path, str) or not os.path.isabs(path) or not isinstance(content, str) or unknown:
            module.fail_json(msg=f"files entry {str(entry)[:120]}: needs an absolute path and a string content "
                                 "(optional mode, owner, group); nothing written")
        try:
            mode = int(str(entry.get("mode", "0644")), 8)
            uid = pwd.getpwnam(entry.get("owner", "root")).pw_uid
            gid = grp.getgrnam(entry.get("group", "root")).gr_gid
        except ValueError:
            module.fail_json(msg=f"{path}: mode {entry.get('mode')!r} is not octal; nothing written")
        except KeyError as exc:
            module.fail_json(msg=f"{path}: no such user or group {exc.args[0]!r}; nothing written")
        plan.append((path, content, mode, uid, gid))

    result = {"changed": False, "changed_files": [], "diff": []}
    for path, content, mode, uid, gid in plan:
        before = ""
        if os.path.exists(path):
            if not os.path.isfile(path):
                module.fail_json(msg=f"{path} exists and is not a regular file; left untouched", **result)
            with open(path, encoding="utf-8", errors="replace") as handle:
                before = handle.read()
            info = os.stat(path)
            if before == content and (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, uid, gid):
                continue
        result["changed_files"].append(path)
        result["diff"].append({"before": before, "after": content, "before_header": path, "after_header": path})
        if module.check_mode:
            continue
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory)
            os.chmod(directory, 0o755)  # not the process umask: these are configuration directories others read
        replace_file(path, content, module.params, mode=mode)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    result["changed"] = bool(result["changed_files"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
