#!/usr/bin/python
"""Tell whether a static pod's process runs exactly the command its manifest holds."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_static_pod_status
short_description: Whether a static pod's live process runs its manifest's current command
description:
  - Reads the manifest's first container command and looks for a process with the same name whose flags
    are the manifest's. A restart gate polls this after a manifest change, so that a health check answered by
    the old process (before the kubelet replaced it) is not taken for success.
  - Read-only; behaves the same in check mode.
version_added: "0.1.0"
options:
  path:
    description: The static pod manifest.
    type: path
    required: true
  started_after_manifest:
    description:
      - Also require that the process started after the manifest was last written. After a change that keeps
        the flags (an annotation that asks for a restart), this is what tells the new process from the old.
    type: bool
    default: false
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Wait until kube-apiserver runs the new manifest
  kubeharden_static_pod_status:
    path: /etc/kubernetes/manifests/kube-apiserver.yaml
  register: status
  until: status.current
  retries: 30
  delay: 2
"""

RETURN = r"""
current:
  description: True when a process runs exactly the manifest's flags.
  returned: always
  type: bool
pids:
  description: Processes with the component's name.
  returned: always
  type: list
  elements: int
differences:
  description: Flags that differ between the manifest and the closest running process.
  returned: always
  type: dict
flags:
  description: The manifest's flags (name without dashes to value), such as etcd's C(data-dir).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_node import (
    NotApplicable,
    ReadError,
    find_processes,
    load_yaml,
    parse_flags,
    process_started,
)


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True},
                                          "started_after_manifest": {"type": "bool", "default": False}},
                           supports_check_mode=True)
    path = module.params["path"]
    try:
        pod = load_yaml(path)
        command = pod["spec"]["containers"][0]["command"]
    except (FileNotFoundError, NotApplicable):
        module.fail_json(msg=f"{path} does not exist")
    except (ReadError, TypeError, KeyError, IndexError) as exc:
        module.fail_json(msg=f"{path} is not a readable static Pod manifest: {exc}")
    wanted = parse_flags(command[1:])
    running = find_processes(os.path.basename(command[0])[:15])  # /proc/PID/comm keeps 15 characters
    if module.params["started_after_manifest"]:
        written = os.stat(path).st_mtime - 1  # clock ticks round the start time down
        running = [(pid, argv) for pid, argv in running if (process_started(pid) or 0) >= written]
    best: dict = {"(no process)": "not running"} if not running else {}
    for _pid, argv in running:
        actual = parse_flags(argv[1:])
        differences = {name: {"manifest": wanted.get(name), "running": actual.get(name)}
                       for name in set(wanted) | set(actual) if wanted.get(name) != actual.get(name)}
        if not differences:
            best = {}
            break
        if not best or len(differences) < len(best):
            best = differences
    module.exit_json(changed=False, current=not best, pids=[pid for pid, _argv in running], differences=best,
                     flags=wanted)


if __name__ == "__main__":
    main()
