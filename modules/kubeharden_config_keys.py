#!/usr/bin/python
"""Set keys in a key/value configuration file (login.defs, /etc/default/useradd, pwquality.conf, ...)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_config_keys
short_description: Set keys in a key/value configuration file, one call per file
description:
  - Sets each key once. The first active line of a key is rewritten in place, later duplicates are commented
    out (programs differ on which one wins), and a missing key goes under its commented example or at the end.
  - A value of null comments the key out.
  - Writes atomically after a backup, with diff and check mode; a missing file fails unless C(create) is set.
version_added: "0.1.0"
options:
  path:
    description: The file (or use C(files) for several).
    type: path
  settings:
    description: Keys to their values (booleans become yes/no).
    type: dict
  files:
    description: Several files in one call, each with C(path), C(settings) and optional C(style), C(create).
    type: list
    elements: dict
  style:
    description: How a line looks. C(space) is C(KEY value) (login.defs), C(equals) is C(KEY=value)
      (shell-style files), C(spaced_equals) is C(key = value) (pwquality.conf, faillock.conf).
    type: str
    choices: [space, equals, spaced_equals]
    default: space
  create:
    description: Create the file (mode 0644) when it does not exist.
    type: bool
    default: false
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Age passwords and tighten the default umask
  kubeharden_config_keys:
    path: /etc/login.defs
    settings: {PASS_MAX_DAYS: 365, UMASK: "027"}

- name: Two files in one call
  kubeharden_config_keys:
    files:
      - {path: /etc/default/useradd, style: equals, settings: {INACTIVE: 30}}
      - {path: /etc/security/faillock.conf, style: spaced_equals, settings: {deny: 5}}
"""

RETURN = r"""
changed_files:
  description: The files changed (or that would be, in check mode).
  returned: always
  type: list
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, read_or_empty, replace_file
from ansible.module_utils.kubeharden_os import STYLES, set_config_keys

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def plan_file(module: AnsibleModule, spec: dict) -> tuple[str, str, str] | None:
    """Validate one file's request and return (path, before, after); fail before anything is written."""
    path, settings = spec.get("path"), spec.get("settings")
    style, create = spec.get("style") or "space", bool(spec.get("create", False))
    if not path or not os.path.isabs(path) or not isinstance(settings, dict) or style not in STYLES:
        module.fail_json(msg=f"{path or spec}: needs an absolute path, a settings mapping and a style among "
                             f"{', '.join(STYLES)}; nothing written")
    bad = [key for key, value in settings.items()
           if not KEY.match(key) or isinstance(value, (dict, list)) or "\n" in str(value)]
    if bad:
        module.fail_json(msg=f"invalid settings for {path}: {', '.join(bad)} (names, one-line scalar values); "
                             "nothing written")
    if not os.path.exists(path) and not create:
        module.fail_json(msg=f"{path} does not exist; nothing written")
    try:
        before = read_or_empty(path)
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}; left untouched")
    return path, before, set_config_keys(before, settings, style)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path"},
            "settings": {"type": "dict"},
            "files": {"type": "list", "elements": "dict"},
            "style": {"type": "str", "choices": ["space", "equals", "spaced_equals"], "default": "space"},
            "create": {"type": "bool", "default": False},
            **BACKUP_OPTIONS,
        },
        required_one_of=[["path", "files"]],
        mutually_exclusive=[["path", "files"]],
        required_together=[["path", "settings"]],
        supports_check_mode=True,
    )
    p = module.params
    specs = p["files"] or [{"path": p["path"], "settings": p["settings"], "style": p["style"], "create": p["create"]}]
    plans = [plan_file(module, spec) for spec in specs]  # every file validated before the first write
    result = {"changed": False, "changed_files": [], "diff": []}
    for path, before, after in plans:
        if after == before:
            continue
        result["changed_files"].append(path)
        result["diff"].append({"before": before, "after": after, "before_header": path, "after_header": path})
        if not module.check_mode:
            replace_file(path, after, p, new_mode=0o644)
    result["changed"] = bool(result["changed_files"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
