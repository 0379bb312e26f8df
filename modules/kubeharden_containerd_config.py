#!/usr/bin/python
"""Merge hardening settings into containerd 2.x's configuration, validated by containerd itself before it is
written."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_containerd_config
short_description: Merge settings into containerd's configuration, validated by containerd before it is written
description:
  - Merges O(settings) into containerd's configuration file (version 3 or 4, containerd 2.x) and keeps every other
    setting of the operator's. The settings kubeharden wrote are listed in a header comment; one of those changed
    by hand is set back, while the operator's own setting of the same key to another value fails the task, naming
    it (change the role's variable instead).
  - The candidate file is read by containerd itself (C(containerd --config CANDIDATE config dump)) before it
    replaces the old one; a file containerd refuses, a setting containerd does not know, a debug or API listener
    beyond loopback/unix sockets, in-line registry mirrors, or a registry hosts.toml with C(skip_verify = true) or
    plain HTTP fails the task with containerd's or the rule's message, and nothing is written.
  - Each setting's line is set in place, so the operator's comments and layout stay; where a setting's place cannot
    be found line by line (a dotted key, a table defined in-line), the whole file is written anew and its comments
    are only in the backup. Writes atomically after a backup, with diff and check mode. Restarting containerd is
    the caller's (the container_runtime role restarts it once, gated).
version_added: "0.2.0"
options:
  settings:
    description: Configuration keys to set, nested as in the file (plugin sections by their full names).
    type: dict
    required: true
  path:
    description: containerd's configuration file.
    type: path
    default: /etc/containerd/config.toml
  containerd:
    description: The containerd binary that judges the candidate; default the first found in /usr/local/bin, /usr/bin.
    type: path
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: No unprivileged ports or ping in pods, registries through hosts.toml only
  kubeharden_containerd_config:
    settings:
      plugins:
        io.containerd.cri.v1.runtime:
          enable_unprivileged_ports: false
          enable_unprivileged_icmp: false
        io.containerd.cri.v1.images:
          registry: {config_path: /etc/containerd/certs.d}
"""

RETURN = r"""
path:
  description: The file judged (and written when changed).
  returned: always
  type: str
managed:
  description: The settings kubeharden writes, as the file's header lists them.
  returned: always
  type: list
  elements: str
backup_file:
  description: Path of the backup, when the file changed and backup is on.
  returned: changed
  type: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_containerd import (
    MANAGED_PREFIX,
    ConfigError,
    containerd_binary,
    contradictions,
    effective,
    endpoint_problems,
    leaf_paths,
    managed,
    parse,
    path_text,
    registry_problems,
    written_text,
)
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, replace_file

HEADER = "# containerd's configuration. Settings kubeharden keeps (the container_runtime role) are listed below;\n" \
         "# set them through the role's variables, the rest is the operator's.\n"


def judge(module: AnsibleModule, candidate: str, binary: str, written_paths: list[tuple[str, ...]]) -> None:
    """containerd's reading of the candidate text, and the rules; fails, naming the problem, before any write."""
    directory = os.path.dirname(module.params["path"]) or "/"
    handle, path = tempfile.mkstemp(prefix=".kubeharden-candidate-", suffix=".toml", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(candidate)
        config, unknown = effective(path, binary)
    except ConfigError as exc:
        module.fail_json(msg=f"{exc} (the candidate for {module.params['path']}; nothing was written)")
    finally:
        os.unlink(path)
    wanted = {(path[1], path[-1]) for path in written_paths if len(path) > 2 and path[0] == "plugins"}
    ours = [f"{name}: {key}" for name, key in unknown if (name, key.rsplit(".", 1)[-1]) in wanted]
    if ours:
        module.fail_json(msg=f"containerd does not know the setting(s) {', '.join(ours)}: check "
                             "container_runtime_settings (nothing was written)")
    for name, key in unknown:
        if (name, key.rsplit(".", 1)[-1]) not in wanted:
            module.warn(f"containerd ignores the unknown setting {key} of {name} in {module.params['path']}")
    problems = endpoint_problems(config) + registry_problems(config)
    if problems:
        module.fail_json(msg=f"{module.params['path']}: " + "; ".join(problems) + " (nothing was written)",
                         problems=problems)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"settings": {"type": "dict", "required": True},
                       "path": {"type": "path", "default": "/etc/containerd/config.toml"},
                       "containerd": {"type": "path"},
                       **BACKUP_OPTIONS},
        supports_check_mode=True,
    )
    params = module.params
    path, settings = params["path"], params["settings"]
    binary = params["containerd"] or containerd_binary()
    if not binary:
        module.fail_json(msg="containerd is not installed on this node (no containerd binary in /usr/local/bin or "
                             "/usr/bin): set containerd")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        text = ""
    try:
        current = parse(text, path)
    except ConfigError as exc:
        module.fail_json(msg=f"{exc}; left untouched")
    version = current.get("version", 1 if text.strip() else 3)
    if not isinstance(version, int) or version < 3:
        module.fail_json(msg=f"{path} is configuration version {version} (containerd 1.x); kubeharden writes "
                             "version 3 or 4 for containerd 2.x: run `containerd config migrate` first; left untouched")
    paths = leaf_paths(settings)
    written = {path_text(p) for p in paths}
    contradicting = contradictions(current, settings, managed(text))
    if contradicting:
        module.fail_json(msg=f"{path} sets, as the operator's own choice, what kubeharden hardens: "
                             f"{'; '.join(contradicting)}. Change the container_runtime variable that decides it, "
                             "or the file; left untouched")
    header = HEADER + MANAGED_PREFIX + ", ".join(sorted(written)) + "\n"
    candidate = written_text(text, {"version": version, **current}, settings, header)
    changed = candidate != text
    judge(module, candidate if changed else text, binary, paths)
    result = {"changed": changed, "path": path, "managed": sorted(written)}
    if changed:
        result["diff"] = {"before": text, "after": candidate, "before_header": path, "after_header": path}
        if not module.check_mode:
            backup_file = replace_file(path, candidate, params)
            if backup_file:
                result["backup_file"] = backup_file
    module.exit_json(**result)


if __name__ == "__main__":
    main()
