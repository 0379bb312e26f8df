#!/usr/bin/python
"""The node as the audit reads it, for the roles: one reading of how etcd runs and of the static pods' flags."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_node_facts
short_description: Read how etcd runs and the static pods' flags, exactly as kubeharden's audit reads them
description:
  - Returns the audit's own views of the node (module_utils/kubeharden_views.py), so that a role decides from
    the same reading the audit judges. It reads how etcd runs (kubeadm's static pod, or a host service as
    kubespray runs it) and its effective settings, and the flags in each static pod's manifest.
  - etcd's settings come from its static pod manifest; else from the running etcd process (its command line and
    C(ETCD_*) environment); else from C(etcd.service) and its environment files.
  - Read-only; behaves the same in check mode and never reports a change.
version_added: "0.1.0"
options:
  manifest_dir:
    description: The kubelet's static pod directory.
    type: path
    default: /etc/kubernetes/manifests
  static_pods:
    description: Static pods (by component name, such as kube-apiserver) whose manifest flags to return.
    type: list
    elements: str
    default: []
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Read how etcd runs here, as the audit reads it
  kubeharden_node_facts:
    static_pods: [kube-apiserver]
  register: node_view

- name: Use etcd's data directory
  ansible.builtin.debug:
    msg: "{{ node_view.etcd.flags['data-dir'] | default('/var/lib/etcd') }}"
"""

RETURN = r"""
etcd:
  description: How etcd runs on the node.
  returned: always
  type: dict
  contains:
    kind:
      description: C(static_pod), C(host) or C(none).
      type: str
    flags:
      description: etcd's effective settings by flag name without dashes (C(data-dir)); empty for C(none).
      type: dict
    source:
      description: Where they were read (the manifest, the process, the unit's files), or why there is no etcd.
      type: str
    files:
      description: The files that configure it, systemd's specifiers expanded (C(/etc/default/%p)). The static
        pod's manifest, or C(etcd.service), its drop-ins and the environment files they name.
      type: list
      elements: str
static_pods:
  description: Per requested component, its manifest's flags and the manifest's path, with C(exists) false (and
    no flags) when the node has no manifest for it.
  returned: always
  type: dict
"""

from ansible.module_utils import kubeharden_node as node
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_node import NotApplicable, ReadError, unit_exec
from ansible.module_utils.kubeharden_views import Node


def etcd_view(view: Node) -> dict:
    try:
        flags, source = view.etcd
    except NotApplicable as exc:
        return {"kind": "none", "flags": {}, "source": str(exc), "files": []}
    if source.startswith("manifest "):
        return {"kind": "static_pod", "flags": flags, "source": source, "files": [source.split(" ", 1)[1]]}
    return {"kind": "host", "flags": flags, "source": source, "files": unit_exec("etcd.service")["files"]}


def static_pod_view(view: Node, component: str) -> dict:
    try:
        flags, source = view.manifest_flags(component)
    except NotApplicable as exc:
        return {"exists": False, "flags": {}, "source": str(exc)}
    return {"exists": True, "flags": flags, "source": source}


def main() -> None:
    module = AnsibleModule(argument_spec={"manifest_dir": {"type": "path", "default": node.MANIFEST_DIR},
                                          "static_pods": {"type": "list", "elements": "str", "default": []}},
                           supports_check_mode=True)
    node.MANIFEST_DIR = module.params["manifest_dir"]  # this run's node: the audit's views, read from there
    view = Node(node_roles=[])
    try:
        result = {"etcd": etcd_view(view),
                  "static_pods": {component: static_pod_view(view, component)
                                  for component in module.params["static_pods"]}}
    except ReadError as exc:  # a malformed manifest or unit: reported, never guessed around
        module.fail_json(msg=f"the node cannot be read as the audit reads it: {exc}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
