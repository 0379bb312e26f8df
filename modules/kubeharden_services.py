#!/usr/bin/python
"""Enable, start, restart or mask several systemd units in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_services
short_description: Bring several systemd units to their wanted state in one call
description:
  - For each unit, reads its state once (C(systemctl show)), then enables, masks, starts or restarts it only
    where that differs. One call instead of one task per unit keeps a hardening run short.
  - A unit that does not exist fails the task, naming it, before any unit is changed.
  - Check mode reports what would change; the diff lists each unit's state before and after.
version_added: "0.1.0"
options:
  units:
    description: Entries with C(name) and any of C(enabled) (bool), C(masked) (bool), C(state) (started,
      stopped, restarted; restarted is done only when C(restart) is true too, so a run that changed nothing
      restarts nothing).
    type: list
    elements: dict
    required: true
  daemon_reload:
    description: Run C(systemctl daemon-reload) first (not in check mode), for unit files written just before.
    type: bool
    default: false
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Keep auditd and the time daemon on, swap units off
  kubeharden_services:
    units:
      - {name: auditd.service, enabled: true, state: started}
      - {name: swap.target, masked: true}
"""

RETURN = r"""
changed_units:
  description: Units whose state changed (or would, in check mode).
  returned: always
  type: list
"""

import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_node import run

KEYS = {"name", "enabled", "masked", "state", "restart"}


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return run(["systemctl", *args])


def unit_state(name: str) -> dict[str, str]:
    shown = systemctl("show", "--property=LoadState,ActiveState,UnitFileState", name).stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def main() -> None:
    module = AnsibleModule(argument_spec={"units": {"type": "list", "elements": "dict", "required": True},
                                          "daemon_reload": {"type": "bool", "default": False}},
                           supports_check_mode=True)
    for entry in module.params["units"]:
        if (not entry.get("name") or set(entry) - KEYS
                or entry.get("state") not in (None, "started", "stopped", "restarted")):
            module.fail_json(msg=f"units entry {entry!r}: name and any of enabled, masked, state "
                                 "(started|stopped|restarted), restart")
    # After the entries are known good: bad input leaves systemd as it was.
    if module.params["daemon_reload"] and not module.check_mode:
        reloaded = systemctl("daemon-reload")
        if reloaded.returncode != 0:
            module.fail_json(msg=f"systemctl daemon-reload failed: {(reloaded.stderr or reloaded.stdout).strip()}")
    plans = []
    for entry in module.params["units"]:
        name = entry["name"]
        state = unit_state(name)
        if state.get("LoadState") == "not-found" and not entry.get("masked"):
            module.fail_json(msg=f"systemd has no unit {name}; nothing changed")
        plans.append((entry, state))

    result = {"changed": False, "changed_units": [], "diff": []}
    for entry, state in plans:
        name, actions = entry["name"], []
        file_state, active = state.get("UnitFileState", ""), state.get("ActiveState", "")
        if entry.get("masked") is True and file_state != "masked":
            actions.append(("mask", name))
        if entry.get("masked") is False and file_state == "masked":
            actions.append(("unmask", name))
        if entry.get("enabled") is True and file_state not in ("enabled", "static", "alias", "enabled-runtime"):
            actions.append(("enable", name))
        if entry.get("enabled") is False and file_state == "enabled":
            actions.append(("disable", name))
        wanted = entry.get("state")
        if wanted == "started" and active not in ("active", "activating", "reloading"):
            actions.append(("start", name))
        if wanted == "stopped" and active in ("active", "activating", "reloading"):
            actions.append(("stop", name))
        if wanted == "restarted" and entry.get("restart", False):
            actions.append(("restart", name))
        if not actions:
            continue
        result["changed_units"].append(name)
        result["diff"].append({"before": f"{name}: {file_state or 'unknown'}, {active or 'unknown'}\n",
                               "after": f"{name}: {', '.join(action for action, _detail in actions)}\n"})
        if module.check_mode:
            continue
        for action, unit in actions:
            done = systemctl(action, unit)
            if done.returncode != 0:
                module.fail_json(msg=f"systemctl {action} {unit} failed: {(done.stderr or done.stdout).strip()}",
                                 **result)
    result["changed"] = bool(result["changed_units"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
