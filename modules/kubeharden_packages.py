#!/usr/bin/python
"""Install and purge Debian packages in one call with apt-get (no python3-apt needed, works from a local cache)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_packages
short_description: Install and purge Debian packages in one call
description:
  - Reads the package database with dpkg-query, then installs what is missing from C(present) and purges
    what is installed from C(absent), each with one apt-get transaction.
  - Needs nothing but dpkg and apt-get, so check mode works on a fresh node (the apt module needs
    python3-apt for that) and nodes installing from a local mirror or apt's cache work the same way.
  - Never refreshes package lists unless C(update_cache) is set, so an air-gapped node is not slowed down by
    unreachable mirrors.
version_added: "0.1.0"
options:
  present:
    description: Packages that must be installed.
    type: list
    elements: str
    default: []
  absent:
    description: Packages that must not be installed (purged, configuration included).
    type: list
    elements: str
    default: []
  update_cache:
    description: Run apt-get update first when something has to be installed.
    type: bool
    default: false
  install_recommends:
    description: Also install recommended packages (a mail server for AIDE's reports, for example). When off, a
      node gets what it needs and nothing more, and installs faster.
    type: bool
    default: false
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Install auditd and remove telnet
  kubeharden_packages:
    present: [auditd]
    absent: [telnet]
"""

RETURN = r"""
installed:
  description: Packages installed (or that would be, in check mode).
  returned: always
  type: list
purged:
  description: Packages purged (or that would be, in check mode).
  returned: always
  type: list
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_node import run

NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")


def package_states() -> dict[str, str]:
    done = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n"])
    states = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def apt_get(module: AnsibleModule, *args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}
    done = run(["apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold", *args], env=env, timeout=None)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        module.fail_json(msg=f"apt-get {' '.join(args[:2])} failed (exit {done.returncode}): {tail}")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "present": {"type": "list", "elements": "str", "default": []},
            "absent": {"type": "list", "elements": "str", "default": []},
            "update_cache": {"type": "bool", "default": False},
            "install_recommends": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    bad = [name for name in p["present"] + p["absent"] if not NAME.match(name)]
    both = sorted(set(p["present"]) & set(p["absent"]))
    if bad or both:
        module.fail_json(msg=f"invalid package lists: {'not Debian package names: ' + ', '.join(bad) if bad else ''}"
                             f"{' listed as present and absent: ' + ', '.join(both) if both else ''}")
    states = package_states()
    install = [name for name in dict.fromkeys(p["present"]) if not states.get(name, "").startswith("ii")]
    # The second letter of dpkg's status is the current state: installed, config-files left, unpacked.
    purge = [name for name in dict.fromkeys(p["absent"]) if states.get(name, "")[1:2] in ("i", "c", "u")]
    result = {"changed": bool(install or purge), "installed": install, "purged": purge}
    if result["changed"]:
        result["diff"] = {"before": "".join(f"{n} {states.get(n, 'not installed')}\n" for n in install + purge),
                          "after": "".join([f"{n} installed\n" for n in install] + [f"{n} purged\n" for n in purge])}
        if not module.check_mode:
            if install:
                if p["update_cache"]:
                    apt_get(module, "update")
                recommends = [] if p["install_recommends"] else ["--no-install-recommends"]
                apt_get(module, "install", *recommends, *install)
            if purge:
                apt_get(module, "purge", *purge)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
