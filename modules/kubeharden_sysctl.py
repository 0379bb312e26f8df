#!/usr/bin/python
"""Persist kernel parameters in one sysctl.d file and apply them live where the kernel lets us."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_sysctl
short_description: Set many kernel parameters in one call, persisted and live
description:
  - Writes every key of C(settings) to one file under /etc/sysctl.d (atomically, after a backup, with diff).
  - Fails, writing nothing, when another sysctl file read after it at boot sets one of the keys to another
    value (the node would silently lose the setting at the next boot), naming that file.
  - Applies each value live through /proc/sys when /proc/sys is writable. In a container /proc/sys is
    read-only, the file is still written and the keys are reported in C(live_skipped).
  - Keys the running kernel does not have (for example net.bridge.* before br_netfilter is loaded) are
    persisted and reported in C(live_missing); systemd-sysctl applies them when the module loads.
version_added: "0.1.0"
options:
  settings:
    description: Kernel parameters, dotted names, to their values.
    type: dict
    required: true
  path:
    description: The sysctl.d file kubeharden owns. Its name sorts after distribution defaults (such as
      systemd's 99-protect-links.conf), so it is read last at boot.
    type: path
    default: /etc/sysctl.d/99-zz-kubeharden.conf
  apply_live:
    description: Also set the running kernel's values (where /proc/sys is writable).
    type: bool
    default: true
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Keep forwarding on for pods and harden the rest
  kubeharden_sysctl:
    settings:
      net.ipv4.ip_forward: 1
      kernel.kptr_restrict: 2
"""

RETURN = r"""
path:
  description: The file written.
  returned: always
  type: str
live_changed:
  description: Keys whose running value was changed.
  returned: always
  type: list
live_skipped:
  description: Keys not applied live because /proc/sys is read-only (container).
  returned: always
  type: list
live_missing:
  description: Keys the running kernel does not have.
  returned: always
  type: list
backup_file:
  description: Path of the backup, when the file changed and backup is on.
  returned: changed
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, atomic_write, backup, read_or_empty
from ansible.module_utils.kubeharden_node import proc_sys_writable, sysctl_live, sysctl_persisted
from ansible.module_utils.kubeharden_os import SYSCTL_KEY, render_sysctl, sysctl_overrides, sysctl_value

HEADER = "Kernel parameters set by kubeharden (role node_os). Edit node_os_sysctls, not this file."


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "settings": {"type": "dict", "required": True},
            "path": {"type": "path", "default": "/etc/sysctl.d/99-zz-kubeharden.conf"},
            "apply_live": {"type": "bool", "default": True},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    p = module.params
    settings = p["settings"]
    bad = [key for key in settings if not SYSCTL_KEY.match(key) or settings[key] is None or
           isinstance(settings[key], (dict, list))]
    if bad:
        module.fail_json(msg=f"invalid sysctl settings (dotted lower-case names, scalar values): {', '.join(bad)}")
    if not p["path"].endswith(".conf"):
        module.fail_json(msg=f"path {p['path']} must end in .conf (systemd-sysctl reads only those)")

    text = render_sysctl(settings, HEADER)
    before = read_or_empty(p["path"])
    # Only files read after ours at boot can override it: later names in sysctl.d, then /etc/sysctl.conf.
    own_name = os.path.basename(p["path"])
    later = {key: found for key, found in sysctl_persisted().items()
             if found[1] != p["path"] and (os.path.basename(found[1]) > own_name or found[1] == "/etc/sysctl.conf")}
    overrides = sysctl_overrides(settings, later, p["path"])
    if overrides:
        module.fail_json(msg=f"another sysctl file read after {p['path']} overrides: {'; '.join(overrides)}. "
                             "Remove those lines (or set the same value); nothing written.")

    result = {"changed": text != before, "path": p["path"], "live_changed": [], "live_skipped": [],
              "live_missing": []}
    if result["changed"]:
        result["diff"] = {"before": before, "after": text, "before_header": p["path"], "after_header": p["path"]}
        if not module.check_mode:
            if p["backup"] and before:
                result["backup_file"] = backup(p["path"], p["backup_dir"])
            atomic_write(p["path"], text, mode=0o644)

    if p["apply_live"]:
        writable = proc_sys_writable()
        for key, value in sorted(settings.items()):
            live = sysctl_live(key)
            wanted = sysctl_value(value)
            if live is None:
                result["live_missing"].append(key)
            elif live != wanted:
                if not writable:
                    result["live_skipped"].append(key)
                    continue
                result["live_changed"].append(key)
                if not module.check_mode:
                    try:
                        with open("/proc/sys/" + key.replace(".", "/"), "w") as handle:
                            handle.write(wanted)
                    except OSError as exc:
                        module.fail_json(msg=f"the kernel refused {key} = {wanted}: {exc.strerror}", **result)
        result["changed"] = result["changed"] or bool(result["live_changed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
