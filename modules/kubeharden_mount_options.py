#!/usr/bin/python
"""Add restrictive options (nodev, nosuid, noexec) to mounts that exist as separate file systems."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_mount_options
short_description: Add mount options to separate mounts, in /etc/fstab and live
description:
  - For each mount point that is a separate mount on this node, adds the missing options to its /etc/fstab
    entry (atomically, after a backup, with diff) and remounts it live with them.
  - A mount point that is not a separate mount is reported in C(not_separate) and left alone; this module
    never creates mounts.
  - A separate mount without an /etc/fstab entry (a systemd mount unit, a container runtime's tmpfs) is
    fixed live and reported in C(not_in_fstab), with a warning, since its options persist where it is defined.
version_added: "0.1.0"
options:
  mounts:
    description: Mount point to the options it must have.
    type: dict
    default: {}
  swap_off:
    description: Comment out every swap entry in fstab and turn active swap off (the kubelet's requirement).
      In a container /proc/swaps shows the host's swap, which only the host can turn off.
    type: bool
    default: false
  fstab:
    description: The fstab file.
    type: path
    default: /etc/fstab
  remount:
    description: Also remount live mounts that lack an option.
    type: bool
    default: true
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Keep devices, set-uid programs and executables out of /tmp
  kubeharden_mount_options:
    mounts:
      /tmp: [nodev, nosuid, noexec]
"""

RETURN = r"""
remounted:
  description: Mount points remounted live with the missing options.
  returned: always
  type: list
not_separate:
  description: Mount points that are not separate mounts here (left alone).
  returned: always
  type: list
not_in_fstab:
  description: Separate mounts without an fstab entry (fixed live only).
  returned: always
  type: list
swap_turned_off:
  description: Whether active swap was turned off.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, read_or_empty, replace_file
from ansible.module_utils.kubeharden_node import in_container, mount_options, read_text, run
from ansible.module_utils.kubeharden_os import fstab_add_options, fstab_comment_swap

KNOWN_OPTIONS = {"nodev", "nosuid", "noexec", "ro", "noatime", "relatime", "nodiratime"}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mounts": {"type": "dict", "default": {}},
            "swap_off": {"type": "bool", "default": False},
            "fstab": {"type": "path", "default": "/etc/fstab"},
            "remount": {"type": "bool", "default": True},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    p = module.params
    for mountpoint, options in p["mounts"].items():
        if not os.path.isabs(mountpoint) or not isinstance(options, list) or not set(options) <= KNOWN_OPTIONS:
            module.fail_json(msg=f"mounts: {mountpoint!r} needs an absolute path and a list of options from "
                                 f"{', '.join(sorted(KNOWN_OPTIONS))}; nothing changed")
    before = read_or_empty(p["fstab"])
    after = before
    result = {"changed": False, "remounted": [], "not_separate": [], "not_in_fstab": [], "swap_turned_off": False}
    if p["swap_off"]:
        after = fstab_comment_swap(after)
        active = [line for line in read_text("/proc/swaps").splitlines()[1:] if line.strip()]
        if active and not in_container():
            result["swap_turned_off"] = True
            if not module.check_mode:
                done = run(["swapoff", "--all"], timeout=None)
                if done.returncode != 0:
                    module.fail_json(msg=f"swapoff --all failed: {done.stderr.strip()}", **result)
    for mountpoint, options in sorted(p["mounts"].items()):
        live = mount_options(mountpoint)
        if live is None:
            result["not_separate"].append(mountpoint)
            continue
        after, in_fstab = fstab_add_options(after, mountpoint, options)
        missing = [option for option in options if option not in live]
        if not in_fstab:
            result["not_in_fstab"].append(mountpoint)
            if missing:
                module.warn(f"{mountpoint} is a separate mount without an /etc/fstab entry: {','.join(missing)} "
                            "fixed live only; persist them where the mount is defined (a systemd mount unit, "
                            "the container runtime)")
        if missing and p["remount"]:
            result["remounted"].append(mountpoint)
            if not module.check_mode:
                done = run(["mount", "-o", "remount," + ",".join(missing), mountpoint])
                if done.returncode != 0:
                    module.fail_json(msg=f"remounting {mountpoint} with {','.join(missing)} failed: "
                                         f"{done.stderr.strip()}", **result)
    if after != before:
        result["diff"] = {"before": before, "after": after, "before_header": p["fstab"], "after_header": p["fstab"]}
        if not module.check_mode:
            backup_file = replace_file(p["fstab"], after, p, mode=0o644)
            if backup_file:
                result["backup_file"] = backup_file
    result["changed"] = after != before or bool(result["remounted"]) or result["swap_turned_off"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
