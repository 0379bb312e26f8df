#!/usr/bin/python
"""Load kubeharden's own nftables table atomically, with a rollback armed until the caller confirms."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_nftables
short_description: Replace kubeharden's nftables table, never any other, with a lockout rollback
description:
  - Renders an input chain (policy drop) in its own table from allow rules, checks it with C(nft -c -f), and
    replaces only that table in one transaction. kube-proxy's, the CNI's and iptables-nft's tables are never
    touched (no C(flush ruleset)).
  - With C(rollback_seconds), a transient systemd timer restores the previous table (or removes the new one)
    unless C(state=confirmed) is called in time, typically over a fresh connection. Confirming also persists
    the table for boot. Live drift (someone edited the loaded table) is detected and reloaded.
  - Fails before loading anything on an invalid port or CIDR, or when C(must_allow) (the controller's own
    address and SSH port) would not be allowed.
version_added: "0.1.0"
options:
  state:
    description: C(present) loads (arming the rollback); C(confirmed) disarms it and persists.
    type: str
    choices: [present, confirmed]
    default: present
  table:
    description: Family and name of kubeharden's table.
    type: str
    default: inet kubeharden
  rules:
    description: Allow rules, each C({proto, ports, sources, comment}); empty sources allow any address.
    type: list
    elements: dict
    default: []
  log_drops:
    description: Log dropped packets (rate-limited).
    type: bool
    default: false
  must_allow:
    description: C({address, port}) that some tcp rule must allow, or nothing is loaded (lockout guard).
    type: dict
  rollback_seconds:
    description: Restore the previous table after this many seconds unless confirmed; 0 persists at once.
    type: int
    default: 0
  persist_path:
    description: File loaded at boot by kubeharden-firewall.service.
    type: path
    default: /etc/nftables.d/kubeharden.nft
  state_dir:
    description: Candidate, rollback and last-loaded copies.
    type: path
    default: /var/lib/kubeharden/firewall
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Load the firewall with a 60 s rollback
  kubeharden_nftables:
    rules:
      - {proto: tcp, ports: [22], sources: [192.0.2.0/24], comment: ssh from admins}
      - {proto: tcp, ports: [6443], comment: kube-apiserver}
    must_allow: {address: 192.0.2.10, port: 22}
    rollback_seconds: 60
  register: firewall

- name: Confirm over a fresh connection (disarms the rollback, persists for boot)
  kubeharden_nftables:
    state: confirmed
  when: firewall.changed
"""

RETURN = r"""
rollback_armed:
  description: Whether a rollback timer is waiting for confirmation.
  returned: always
  type: bool
ruleset:
  description: The rendered table.
  returned: state=present
  type: str
"""

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import atomic_write, backup
from ansible.module_utils.kubeharden_nft import RuleError, covers, parse_ports, render
from ansible.module_utils.kubeharden_node import run
from ansible.module_utils.kubeharden_rollback import RollbackTimer

ROLLBACK = RollbackTimer("kubeharden-firewall-rollback")


def nft(*args: str) -> subprocess.CompletedProcess:
    return run(["nft", *args])


def read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def check_must_allow(rules: list[dict], must_allow: dict) -> None:
    address, port = str(must_allow["address"]), int(must_allow["port"])
    for index, rule in enumerate(rules):
        if rule.get("proto", "tcp") != "tcp":
            continue
        for item in parse_ports(rule.get("ports"), f"rules[{index}]"):
            low, _sep, high = item.partition("-")
            if int(low) <= port <= int(high or low) and covers(rule.get("sources"), address):
                return
    raise RuleError(f"no rule allows tcp port {port} from {address}, the address this play connects from: "
                    "loading it would lock the play out (check the admin CIDRs and SSH port)")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "confirmed"], "default": "present"},
            "table": {"type": "str", "default": "inet kubeharden"},
            "rules": {"type": "list", "elements": "dict", "default": []},
            "log_drops": {"type": "bool", "default": False},
            "must_allow": {"type": "dict"},
            "rollback_seconds": {"type": "int", "default": 0},
            "persist_path": {"type": "path", "default": "/etc/nftables.d/kubeharden.nft"},
            "state_dir": {"type": "path", "default": "/var/lib/kubeharden/firewall"},
        },
        supports_check_mode=True,
    )
    p = module.params
    candidate, rollback_file = f"{p['state_dir']}/candidate.nft", f"{p['state_dir']}/rollback.nft"
    loaded_listing = f"{p['state_dir']}/loaded.listing"

    if p["state"] == "confirmed":
        armed = ROLLBACK.armed()
        if module.check_mode:
            module.exit_json(changed=armed, rollback_armed=armed)
        ROLLBACK.disarm()
        changed = armed
        text = read(candidate)
        if text is not None and text != read(p["persist_path"]):
            os.makedirs(os.path.dirname(p["persist_path"]), exist_ok=True)
            if os.path.exists(p["persist_path"]):
                backup(p["persist_path"])
            atomic_write(p["persist_path"], text, mode=0o600)
            changed = True
        atomic_write(loaded_listing, nft("list", "table", *p["table"].split()).stdout, mode=0o600)
        module.exit_json(changed=changed, rollback_armed=False)

    try:
        if p["rollback_seconds"] < 0:
            raise RuleError("rollback_seconds must be 0 or more")
        text = render(p["table"], p["rules"], p["log_drops"])
        if p["must_allow"]:
            check_must_allow(p["rules"], p["must_allow"])
    except RuleError as exc:
        module.fail_json(msg=f"{exc}; nothing loaded")
    live = nft("list", "table", *p["table"].split())
    persisted = read(p["persist_path"])
    drifted = live.returncode != 0 or live.stdout != read(loaded_listing)
    result = {"changed": text != persisted or drifted, "ruleset": text, "rollback_armed": False,
              "drifted": drifted and text == persisted}
    if result["drifted"]:  # rules changed by hand: the diff shows what reloading the table restores
        result["diff"] = {"before": live.stdout if live.returncode == 0 else "", "after": read(loaded_listing) or "",
                          "before_header": f"nft list table {p['table']} (live)",
                          "after_header": f"{loaded_listing} (as loaded)"}
    elif result["changed"]:
        result["diff"] = {"before": persisted or "", "after": text, "before_header": p["persist_path"],
                          "after_header": p["persist_path"]}
    if not result["changed"] or module.check_mode:
        module.exit_json(**result)

    os.makedirs(p["state_dir"], mode=0o700, exist_ok=True)
    atomic_write(candidate, text, mode=0o600)
    checked = nft("-c", "-f", candidate)
    if checked.returncode != 0:
        module.fail_json(msg=f"nft rejects the rendered table, nothing loaded: {checked.stderr.strip()}", **result)
    family, name = p["table"].split()
    previous = f"table {family} {name}\ndelete table {family} {name}\n" + (live.stdout if live.returncode == 0 else "")
    atomic_write(rollback_file, previous, mode=0o600)
    ROLLBACK.disarm()
    if p["rollback_seconds"]:
        refused = ROLLBACK.arm(p["rollback_seconds"], ["/usr/sbin/nft", "-f", rollback_file])
        if refused:
            module.fail_json(msg=f"could not arm the rollback timer, nothing loaded: {refused}")
        result["rollback_armed"] = True
    loaded = nft("-f", candidate)
    if loaded.returncode != 0:
        ROLLBACK.disarm()
        module.fail_json(msg=f"nft could not load the table (the previous one stays): {loaded.stderr.strip()}")
    if not p["rollback_seconds"]:  # nothing to confirm: persist now
        os.makedirs(os.path.dirname(p["persist_path"]), exist_ok=True)
        atomic_write(p["persist_path"], text, mode=0o600)
        atomic_write(loaded_listing, nft("list", "table", family, name).stdout, mode=0o600)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
