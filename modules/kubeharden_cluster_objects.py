#!/usr/bin/python
"""Server-side apply of Kubernetes objects with kubectl on a control-plane node: check mode asks the apiserver."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_cluster_objects
short_description: Apply Kubernetes objects with server-side apply, as the field manager kubeharden
description:
  - Applies O(objects) with C(kubectl apply --server-side) as the field manager O(field_manager), taking over
    fields another manager set (C(--force-conflicts)), so the policy wins over a hand-made change; a field
    kubeharden applied before and no longer lists is removed by the apiserver.
  - Before anything changes, every object is read, and the apiserver's server-side dry run of the whole list says
    what would change; an object is applied only when its dry-run result differs from the live one (status and
    bookkeeping metadata aside), so a second run changes nothing and check mode reports exactly what a run would
    do. Admission (Pod Security label validation, webhooks) judges the dry run as it judges the real request.
  - Refuses the whole list, before any change, when a namespaced object's namespace does not exist, or when an
    object of a kind in O(existing_kinds) does not exist (kubeharden labels namespaces, it never creates them).
    Messages name O(input_name), the variable the objects come from.
  - Warnings the apiserver returns (Pod Security names the existing pods a new enforce level would reject) are
    returned in RV(apiserver_warnings) and shown as task warnings.
version_added: "0.1.0"
options:
  objects:
    description:
      - Complete Kubernetes objects (apiVersion, kind, metadata.name, metadata.namespace when namespaced).
      - Secrets are refused - their values would show in the diff and the result.
    type: list
    elements: dict
    required: true
  existing_kinds:
    description: Kinds whose objects must already exist; applying to one that does not fails before any change.
    type: list
    elements: str
    default: [Namespace]
  field_manager:
    description: The server-side apply field manager.
    type: str
    default: kubeharden
  input_name:
    description: The variable the objects come from, named in every message about bad input.
    type: str
    default: objects
extends_documentation_fragment:
  - kubeharden_kubectl
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Enforce the restricted Pod Security level in a namespace
  kubeharden_cluster_objects:
    input_name: cluster_policies_namespaces
    objects:
      - apiVersion: v1
        kind: Namespace
        metadata:
          name: team-a
          labels:
            pod-security.kubernetes.io/enforce: restricted
            pod-security.kubernetes.io/enforce-version: latest

- name: Default-deny every pod of a namespace
  kubeharden_cluster_objects:
    objects:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: kubeharden-default-deny, namespace: team-a}
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""

RETURN = r"""
applied:
  description: The objects that were applied (in check mode, would be), as KIND/NAMESPACE/NAME.
  returned: always
  type: list
  elements: str
  sample: [Namespace//team-a, NetworkPolicy/team-a/kubeharden-default-deny]
unchanged:
  description: The objects already as listed.
  returned: always
  type: list
  elements: str
  sample: [ServiceAccount/team-a/default]
apiserver_warnings:
  description: The apiserver's warnings about the change (kubectl's stderr lines that start with Warning).
  returned: always
  type: list
  elements: str
  sample: ['Warning: existing pods in namespace "team-a" violate the new PodSecurity enforce level "restricted:latest"']
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_cluster import (
    comparable,
    identity,
    identity_text,
    invalid_objects,
    yaml_text,
)
from ansible.module_utils.kubeharden_kubectl import KUBECTL_OPTIONS, Kubectl


def as_list(objects: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def items(output: str | None) -> list[dict]:
    if not output or not output.strip():
        return []
    data = json.loads(output)
    return data.get("items", []) if data.get("kind", "").endswith("List") else [data]


def main() -> None:
    module = AnsibleModule(
        argument_spec={"objects": {"type": "list", "elements": "dict", "required": True},
                       "existing_kinds": {"type": "list", "elements": "str", "default": ["Namespace"]},
                       "field_manager": {"type": "str", "default": "kubeharden"},
                       "input_name": {"type": "str", "default": "objects"},
                       **KUBECTL_OPTIONS},
        supports_check_mode=True,
    )
    name, objects = module.params["input_name"], module.params["objects"]
    problems = invalid_objects(objects)
    if problems:
        module.fail_json(msg=f"{name}: " + "; ".join(problems))
    if not objects:
        module.exit_json(changed=False, applied=[], unchanged=[], apiserver_warnings=[])
    kubectl = Kubectl(module, module.params["kubectl"], module.params["kubeconfig"])
    # Namespaces first: a namespaced object in a namespace that does not exist stops everything, unchanged.
    wanted_namespaces = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
                               | {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"
                                  and "Namespace" in module.params["existing_kinds"]})
    existing = {n["metadata"]["name"] for n in items(kubectl.run("get", "namespaces", "-o", "json"))}
    missing = [ns for ns in wanted_namespaces if ns not in existing]
    if missing:
        module.fail_json(msg=f"{name}: namespace(s) {', '.join(missing)} do not exist in the cluster; "
                             "create them first or remove them from the list (nothing was changed)")
    found = kubectl.run("get", "--ignore-not-found", "-o", "json", "-f", "-", data=as_list(objects))
    live = {identity(o): o for o in items(found)}
    absent = [identity_text(o) for o in objects
              if o["kind"] in module.params["existing_kinds"] and identity(o) not in live]
    if absent:
        module.fail_json(msg=f"{name}: {', '.join(absent)} do not exist; kubeharden does not create them "
                             "(nothing was changed)")
    apply = ["apply", "--server-side", "--force-conflicts", f"--field-manager={module.params['field_manager']}",
             "-o", "json", "-f", "-"]
    rc, out, err = kubectl.answer(*apply, "--dry-run=server", data=as_list(objects))
    if rc != 0:
        module.fail_json(msg=f"{name}: the apiserver refused the objects (server-side dry run; nothing was changed): "
                             f"{err.strip()}")
    planned = {identity(o): o for o in items(out)}
    changed, unchanged, diffs = [], [], []
    for obj in objects:
        key = identity(obj)
        before = comparable(live.get(key))
        after = comparable(planned.get(key))
        if before == after:
            unchanged.append(identity_text(obj))
            continue
        changed.append(obj)
        diffs.append({"before_header": identity_text(obj), "after_header": identity_text(obj),
                      "before": yaml_text(before), "after": yaml_text(after)})
    warnings = [line.strip() for line in err.splitlines() if line.strip().startswith("Warning")]
    if changed and not module.check_mode:
        rc, _out, err = kubectl.answer(*apply, data=as_list(changed))
        if rc != 0:
            module.fail_json(msg=f"{name}: applying failed: {err.strip()}",
                             applied=[], unchanged=unchanged)
        warnings = [line.strip() for line in err.splitlines() if line.strip().startswith("Warning")]
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=bool(changed), applied=[identity_text(o) for o in changed], unchanged=unchanged,
                     apiserver_warnings=warnings, diff=diffs)


if __name__ == "__main__":
    main()
