#!/usr/bin/python
"""Restart a static pod's container by stopping its process; the manifest stays as it is."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_static_pod_restart
short_description: Restart a static pod's container without changing its manifest
description:
  - Sends SIGTERM to each process that runs the manifest's command (the executable's name and exactly the
    manifest's flags); the kubelet starts the container again in the same pod. For a component that reads
    files only at start (renewed certificates), this is the restart.
  - The manifest is not touched, so the pod keeps its identity. A manifest change makes the kubelet replace the
    pod's mirror Pod through the apiserver before it starts the new container, and while etcd is down the
    node's apiserver answers those calls only after its 34 s request timeout (measured on the lab, etcd was
    healthy 72 s after an annotation change and 10 s after this restart).
  - Wait for the new process with C(kubeharden_static_pod_status) and C(started_after=signalled_at).
  - A process with the component's name but other flags (the kubelet has not applied the manifest yet) is not
    stopped; it is reported in C(others). When no process runs the manifest nothing is signalled and
    C(changed) is false; the kubelet starts the component from what is on disk anyway.
  - Check mode reports the processes it would stop, without signalling them.
version_added: "0.1.0"
options:
  path:
    description: The manifest of the static pod to restart, in the kubelet's directory; it is only read.
    type: path
    required: true
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Restart etcd so that it reads its renewed certificates
  kubeharden_static_pod_restart:
    path: /etc/kubernetes/manifests/etcd.yaml
  register: restart

- name: Wait until a new etcd process runs the manifest
  kubeharden_static_pod_status:
    path: /etc/kubernetes/manifests/etcd.yaml
    started_after: "{{ restart.signalled_at }}"
  register: status
  until: status.current
  retries: 60
  delay: 2
"""

RETURN = r"""
pids:
  description: The processes that ran the manifest and were (in check mode would be) stopped.
  returned: always
  type: list
  elements: int
others:
  description: Processes with the component's name whose flags are not the manifest's; left alone.
  returned: always
  type: list
  elements: int
signalled_at:
  description: The time just before the signal, in seconds since the epoch; a new process starts after it.
  returned: always
  type: float
"""

import datetime as dt
import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_node import (
    ManifestError,
    parse_flags,
    process_started,
    static_pod_processes,
)


def describe(pid: int) -> str:
    started = process_started(pid)
    since = dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds") if started else "unknown"
    return f"pid {pid} (started {since})"


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True}}, supports_check_mode=True)
    path = module.params["path"]
    try:
        pod, wanted, running = static_pod_processes(path)
    except ManifestError as exc:
        module.fail_json(msg=str(exc))
    current = [pid for pid, argv in running if parse_flags(argv[1:]) == wanted]
    others = [pid for pid, _argv in running if pid not in current]
    name = pod.get("metadata", {}).get("name", os.path.basename(path))
    signalled_at = time.time()
    diff = {"before": "".join(f"{name}: {describe(pid)}\n" for pid in current),
            "after": "".join(f"{name}: pid {pid} stopped, the kubelet starts a new one\n" for pid in current)}
    if current and not module.check_mode:
        for pid in current:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # it ended on its own: the kubelet starts it again all the same
            except PermissionError as exc:
                module.fail_json(msg=f"cannot stop {name} ({describe(pid)}): {exc}", pids=current, others=others,
                                 signalled_at=signalled_at)
    module.exit_json(changed=bool(current), pids=current, others=others, signalled_at=signalled_at, diff=diff)


if __name__ == "__main__":
    main()
