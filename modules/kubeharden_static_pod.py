#!/usr/bin/python
"""Set or remove flags of a static pod manifest, with the hostPath mounts its files need."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_static_pod
short_description: Edit a Kubernetes static pod manifest's flags and mounts safely
description:
  - Sets or removes C(--flag=value) items of the first container's command, adds or removes single items of
    list-valued flags (admission plugins, feature gates), and ensures a hostPath volume and volumeMount for
    every file a flag names (a flag naming an unmounted file keeps the component from starting).
  - Refuses flags and admission plugins that the manifest's Kubernetes version removed or does not know yet.
  - Keeps everything else of the manifest. Writes atomically, after a backup kept outside the manifest
    directory (a copy inside it would be run by the kubelet as a second pod). Supports check mode and diff.
  - A malformed manifest or an invalid request fails with a message and leaves the file untouched.
version_added: "0.1.0"
options:
  path:
    description: The static pod manifest, e.g. C(/etc/kubernetes/manifests/kube-apiserver.yaml).
    type: path
    required: true
  flags:
    description: Flag name (without dashes) to value; C(null) removes the flag.
    type: dict
    default: {}
  list_flags:
    description:
      - Flag name to C({add, remove}) lists of items of a comma-separated flag. C(Key=value) items replace the
        item with the same key.
    type: dict
    default: {}
  volumes:
    description:
      - hostPath volumes to ensure, each C({path, name, type, read_only}) (type defaults to DirectoryOrCreate,
        read_only to true). Directories of flag paths no mount covers are added without being listed here.
    type: list
    elements: dict
    default: []
  pod_security_context:
    description: Keys merged into the pod's C(spec.securityContext), e.g. C(runAsUser).
    type: dict
    default: {}
  annotations:
    description: Pod annotations to set. Changing one makes the kubelet restart the pod, which is how a
      component is restarted to read a changed file it only reads at start (an encryption configuration).
    type: dict
    default: {}
  kubernetes_version:
    description: Target version (C(v1.37)); default the manifest image's tag.
    type: str
    default: ""
extends_documentation_fragment:
  - kubeharden_backup
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Ensure kube-apiserver profiling is off and an audit log is written
  kubeharden_static_pod:
    path: /etc/kubernetes/manifests/kube-apiserver.yaml
    flags:
      profiling: "false"
      audit-policy-file: /etc/kubernetes/audit/policy.yaml
      audit-log-path: /var/log/kubernetes/audit/audit.log
      token-auth-file: null
    list_flags:
      enable-admission-plugins: {add: [NodeRestriction, EventRateLimit]}
"""

RETURN = r"""
command:
  description: The container command after the change.
  returned: always
  type: list
  elements: str
mounts_changed:
  description: hostPath mount paths added or changed.
  returned: always
  type: list
  elements: str
kubernetes_version:
  description: The version the flags were checked against.
  returned: always
  type: str
backup_file:
  description: Path of the backup, when the file changed and backup is on.
  returned: changed
  type: str
"""

import copy
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_OPTIONS, replace_file
from ansible.module_utils.kubeharden_manifest import ManifestError, apply, container_of, image_version, parse_version
from ansible.module_utils.kubeharden_node import ReadError, parse_yaml

try:
    import yaml
except ImportError:
    yaml = None


def render(pod) -> str:
    return yaml.safe_dump(pod, sort_keys=True, default_flow_style=False, width=1 << 20)


def as_flag_value(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "flags": {"type": "dict", "default": {}},
            "list_flags": {"type": "dict", "default": {}},
            "volumes": {"type": "list", "elements": "dict", "default": []},
            "pod_security_context": {"type": "dict", "default": {}},
            "annotations": {"type": "dict", "default": {}},
            "kubernetes_version": {"type": "str", "default": ""},
            **BACKUP_OPTIONS,
        },
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    if yaml is None:
        module.fail_json(msg="PyYAML is missing on the node (Debian/Ubuntu: apt-get install python3-yaml)")
    if not os.path.isfile(path):
        module.fail_json(msg=f"{path} does not exist: nothing to harden on this node")
    with open(path) as handle:
        before_text = handle.read()
    try:
        before = parse_yaml(before_text, path)
    except ReadError as exc:
        module.fail_json(msg=f"{exc}; left untouched")
    for name, change in params["list_flags"].items():
        if not isinstance(change, dict) or set(change) - {"add", "remove"}:
            module.fail_json(msg=f"list_flags.{name} must be a mapping with 'add' and/or 'remove' lists; "
                                 f"{path} left untouched")
    try:
        container = container_of(before)
        component = container.get("name") or container["command"][0]
        version = parse_version(params["kubernetes_version"]) if params["kubernetes_version"] \
            else image_version(before)
        if version is None and component != "etcd":  # etcd's flags do not follow Kubernetes versions
            raise ManifestError(f"cannot tell the Kubernetes version from the image {container.get('image')!r}: "
                                "set kubernetes_version")
        after = copy.deepcopy(before)
        flags = {name: as_flag_value(value) for name, value in params["flags"].items()}
        changed_mounts = apply(after, component, flags, params["list_flags"], params["volumes"], version)
        if params["annotations"]:
            metadata = after.setdefault("metadata", {})
            metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                       **{str(k): str(v) for k, v in params["annotations"].items()}}
        if params["pod_security_context"]:
            after["spec"]["securityContext"] = {**(after["spec"].get("securityContext") or {}),
                                                **params["pod_security_context"]}
    except ManifestError as exc:
        module.fail_json(msg=f"{path}: {exc}; left untouched")
    result = {"changed": after != before, "command": container_of(after)["command"], "mounts_changed": changed_mounts,
              "kubernetes_version": f"v{version[0]}.{version[1]}" if version else None}
    if result["changed"]:
        after_text = render(after)
        result["diff"] = {"before": before_text, "after": after_text, "before_header": path, "after_header": path}
        if not module.check_mode:
            backup_file = replace_file(path, after_text, params)
            if backup_file:
                result["backup_file"] = backup_file
    module.exit_json(**result)


if __name__ == "__main__":
    main()
