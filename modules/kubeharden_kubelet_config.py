#!/usr/bin/python
"""Deep-merge settings into the KubeletConfiguration the kubelet really reads."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_kubelet_config
short_description: Merge settings into the kubelet's real configuration file
description:
  - Finds the KubeletConfiguration the kubelet really uses (its running command line, else its systemd unit,
    drop-ins under /etc and /usr/lib and their environment files) and deep-merges C(settings) into it.
  - When the kubelet uses C(--config-dir), the settings go to a drop-in there (C(dropin_name)), and the module
    fails if a drop-in sorted after it overrides one of them.
  - Lists (such as C(tlsCipherSuites)) are replaced, not merged. Writes atomically, after a backup, with diff
    and check mode. A missing or malformed configuration fails with a message and is left untouched.
version_added: "0.1.0"
options:
  settings:
    description: KubeletConfiguration keys to set, nested as in the file.
    type: dict
    required: true
  config_path:
    description: The configuration file; default the one the kubelet's C(--config) names.
    type: path
  dropin_name:
    description: File name of kubeharden's drop-in when the kubelet uses C(--config-dir).
    type: str
    default: 90-kubeharden.conf
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Ensure kubelet anonymous auth is off and pod PIDs are limited
  kubeharden_kubelet_config:
    settings:
      authentication: {anonymous: {enabled: false}}
      podPidsLimit: 4096
      seccompDefault: true
"""

RETURN = r"""
path:
  description: The file written (the configuration, or kubeharden's drop-in).
  returned: always
  type: str
config_path:
  description: The kubelet's main configuration file (its C(--config)).
  returned: always
  type: str
source:
  description: How the configuration file was found.
  returned: always
  type: str
backup_file:
  description: Path of the backup, when the file changed and backup is on.
  returned: changed
  type: str
"""

import glob
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, replace_file
from ansible.module_utils.kubeharden_kubeadm import KUBELET_OMITTED_WHEN_ZERO
from ansible.module_utils.kubeharden_node import (
    NotApplicable,
    ReadError,
    deep_merge,
    dig,
    kubelet_state,
    load_yaml,
)

try:
    import yaml
except ImportError:
    yaml = None

HEADER = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"}


def render(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, width=1 << 20)


def leaf_paths(settings: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in settings.items():
        dotted = f"{prefix}{key}"
        paths.extend(leaf_paths(value, dotted + ".") if isinstance(value, dict) and value else [dotted])
    return paths


def load_mapping(module: AnsibleModule, path: str) -> dict:
    try:
        document = load_yaml(path)
    except FileNotFoundError:
        module.fail_json(msg=f"the kubelet configuration {path} does not exist")
    except ReadError as exc:
        module.fail_json(msg=f"{exc}; left untouched")
    if document is None:
        document = {}
    if not isinstance(document, dict) or document.get("kind", HEADER["kind"]) != HEADER["kind"]:
        module.fail_json(msg=f"{path} is not a KubeletConfiguration; left untouched")
    return document


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "settings": {"type": "dict", "required": True},
            "config_path": {"type": "path"},
            "dropin_name": {"type": "str", "default": "90-kubeharden.conf"},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    params = module.params
    if yaml is None:
        module.fail_json(msg="PyYAML is missing on the node (Debian/Ubuntu: apt-get install python3-yaml)")
    config_dir = None
    if params["config_path"]:
        config_path, source = params["config_path"], "config_path"
    else:
        try:
            state = kubelet_state()
        except (NotApplicable, ReadError) as exc:
            module.fail_json(msg=f"cannot find the kubelet's configuration: {exc}; set config_path")
        config_path, source = state["config_path"], state["flag_source"]
        config_dir = state["flags"].get("config-dir")
        if not config_path:
            module.fail_json(msg=f"the kubelet runs without --config ({source}); set config_path")
    if not params["dropin_name"].endswith(".conf") or "/" in params["dropin_name"]:
        module.fail_json(msg="dropin_name must be a file name ending in .conf (the kubelet reads only those)")

    main_config = load_mapping(module, config_path)  # validates the main file even when a drop-in is written
    target = os.path.join(config_dir, params["dropin_name"]) if config_dir else config_path
    before = load_mapping(module, target) if os.path.exists(target) else {}
    # A plain field left out reads as zero (kubeadm writes it so, at init and at each upgrade): already right.
    settings = {key: value for key, value in params["settings"].items()
                if not (key in KUBELET_OMITTED_WHEN_ZERO and value in (0, False)
                        and key not in before and key not in main_config)}
    after = deep_merge(before or dict(HEADER), settings)
    if config_dir:
        later = [p for p in sorted(glob.glob(os.path.join(config_dir, "*.conf"))) if os.path.basename(p) >
                 params["dropin_name"]]
        for path in later:
            overlay = load_mapping(module, path)
            overridden = [key for key in leaf_paths(settings) if dig(overlay, key) is not None]
            if overridden:
                module.fail_json(msg=f"{path} sorts after {params['dropin_name']} and overrides "
                                     f"{', '.join(overridden)}: rename one of them; nothing written")

    result = {"changed": after != before, "path": target, "config_path": config_path, "source": source}
    if result["changed"]:
        before_text = render(before) if before else ""
        after_text = render(after)
        result["diff"] = {"before": before_text, "after": after_text, "before_header": target,
                          "after_header": target}
        if not module.check_mode:
            backup_file = replace_file(target, after_text, params)
            if backup_file:
                result["backup_file"] = backup_file
    module.exit_json(**result)


if __name__ == "__main__":
    main()
