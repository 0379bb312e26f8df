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
  started_after:
    description:
      - Also require that the process started after this time (seconds since the epoch), such as the
        C(signalled_at) that C(kubeharden_static_pod_restart) returns; 0 requires nothing.
    type: float
    default: 0
  pod_log_dir:
    description:
      - Where the kubelet keeps container logs (C(<namespace>_<pod>-<node>_<uid>/<container>/<restart>.log)).
        While the process does not run the manifest, the last lines of the component's newest container log
        say why (an unknown flag, a file it cannot read).
    type: path
    default: /var/log/pods
  wait:
    description:
      - Seconds to wait, polling four times a second, until the process runs the manifest; 0 answers at once.
        A gate's one call instead of Ansible retries, so that the wait ends within a quarter second of the
        restart rather than at the next retry.
    type: float
    default: 0
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Wait until kube-apiserver runs the new manifest
  kubeharden_static_pod_status:
    path: /etc/kubernetes/manifests/kube-apiserver.yaml
    wait: 300
  register: status
  failed_when: not status.current
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
last_log:
  description: The last lines (at most 20) of the component's newest container log, without the log's own
    time and stream prefix; empty while the process runs the manifest.
  returned: always
  type: list
  elements: str
last_error:
  description: The last of those lines that reports an error (the component's reason for stopping), or "".
  returned: always
  type: str
flags:
  description: The manifest's flags (name without dashes to value), such as etcd's C(data-dir).
  returned: always
  type: dict
waited:
  description: Seconds spent waiting (0 without C(wait)).
  returned: always
  type: float
"""

import glob
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_node import (
    ManifestError,
    parse_flags,
    process_started,
    static_pod_processes,
)

LOG_LINES = 20
# "Error: unknown flag: --x", klog's "E1201 12:00:00.000000 ..." and "F1201 ...", or a line that says failed.
ERROR_LINE = re.compile(r"^(Error:|[EF]\d{4} )|error|failed", re.IGNORECASE)


def last_log(pod_log_dir: str, namespace: str, pod: str, container: str) -> list[str]:
    """The last lines of the newest log the kubelet wrote for this static pod's container (any node, any uid)."""
    pattern = os.path.join(glob.escape(pod_log_dir), f"{namespace}_{pod}-*_*", container, "*.log")
    logs = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not logs:
        return []
    try:
        with open(logs[-1], encoding="utf-8", errors="replace") as handle:
            tail = handle.readlines()[-LOG_LINES:]
    except OSError:
        return []
    # CRI log lines: <time> <stream> <P|F> <text>
    return [parts[3] if len(parts) == 4 else line.rstrip("\n")
            for line in tail for parts in [line.rstrip("\n").split(" ", 3)]]


def last_error(lines: list[str]) -> str:
    return next((line for line in reversed(lines) if ERROR_LINE.search(line)), "")


def differences_from_manifest(path: str, started_after: float, started_after_manifest: bool):
    """The static pod, the processes started late enough, and the flags that differ between the manifest and the
    closest of them ({} when one runs exactly the manifest)."""
    pod, wanted, running = static_pod_processes(path)
    not_before = started_after
    if started_after_manifest:
        not_before = max(not_before, os.stat(path).st_mtime)
    if not_before:
        not_before -= 1  # clock ticks round the start time down
        running = [(pid, argv) for pid, argv in running if (process_started(pid) or 0) >= not_before]
    best: dict = {"(no process)": "not running"} if not running else {}
    for _pid, argv in running:
        actual = parse_flags(argv[1:])
        differences = {name: {"manifest": wanted.get(name), "running": actual.get(name)}
                       for name in set(wanted) | set(actual) if wanted.get(name) != actual.get(name)}
        if not differences:
            return pod, wanted, running, {}
        if not best or len(differences) < len(best):
            best = differences
    return pod, wanted, running, best


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True},
                                          "started_after_manifest": {"type": "bool", "default": False},
                                          "started_after": {"type": "float", "default": 0},
                                          "pod_log_dir": {"type": "path", "default": "/var/log/pods"},
                                          "wait": {"type": "float", "default": 0}},
                           supports_check_mode=True)
    params = module.params
    if params["wait"] < 0:
        module.fail_json(msg=f"wait must be 0 or more seconds, not {params['wait']}")
    started = time.monotonic()
    while True:
        try:
            pod, wanted, running, best = differences_from_manifest(params["path"], params["started_after"],
                                                                   params["started_after_manifest"])
        except ManifestError as exc:
            module.fail_json(msg=str(exc))
        if not best or time.monotonic() - started >= params["wait"]:
            break
        time.sleep(0.25)
    logged = []
    if best:
        logged = last_log(params["pod_log_dir"], pod.get("metadata", {}).get("namespace", "kube-system"),
                          pod.get("metadata", {}).get("name", ""), pod["spec"]["containers"][0].get("name", ""))
    module.exit_json(changed=False, current=not best, pids=[pid for pid, _argv in running], differences=best,
                     flags=wanted, last_log=logged, last_error=last_error(logged),
                     waited=round(time.monotonic() - started, 2))


if __name__ == "__main__":
    main()
