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
  - A list of scalars the objects name whose live value holds an element they do not (a set-typed list such as a
    binding's C(validationActions), where server-side apply would keep another manager's element beside
    kubeharden's) is first set to the listed value with a JSON merge patch, so the policy's list wins whole; check
    mode plans that object with the apiserver's dry run of a merge patch of the whole object.
  - Before anything changes, every object is read, and the apiserver's server-side dry run of the whole list says
    what would change; an object is applied only when its dry-run result differs from the live one (status and
    bookkeeping metadata aside), so a second run changes nothing and check mode reports exactly what a run would
    do. Admission (Pod Security label validation, webhooks) judges the dry run as it judges the real request.
  - Refuses the whole list, before any change, when a namespaced object's namespace does not exist, or when an
    object of a kind in O(existing_kinds) does not exist (kubeharden labels namespaces, it never creates them).
    Messages name O(input_name), the variable the objects come from.
  - O(withdrawn) names objects the policy no longer wants, since server-side apply never deletes an object it
    stops listing. Each one that exists and was applied by O(field_manager) is deleted; one of the same name
    that another manager made is left alone, with a warning.
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
  withdrawn:
    description:
      - Objects to delete when they exist and O(field_manager) applied them (apiVersion, kind, metadata.name,
        metadata.namespace); a missing one is nothing to do.
    type: list
    elements: dict
    default: []
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

- name: Take back the default deny from a namespace that is now exempt from it
  kubeharden_cluster_objects:
    objects: []
    withdrawn:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: kubeharden-default-deny, namespace: legacy}

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
deleted:
  description: The withdrawn objects that were deleted (in check mode, would be), as KIND/NAMESPACE/NAME.
  returned: always
  type: list
  elements: str
  sample: [NetworkPolicy/legacy/kubeharden-default-deny]
left:
  description: Withdrawn objects that exist but were not applied by O(field_manager), left in place.
  returned: always
  type: list
  elements: str
  sample: [NetworkPolicy/legacy/kubeharden-allow-dns]
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
    applied_by,
    comparable,
    contested_lists,
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


def apply_command(manager: str) -> list[str]:
    """kubectl's server-side apply as `manager`: the dry run that plans and the run that applies share it."""
    return ["apply", "--server-side", "--force-conflicts", f"--field-manager={manager}", "-o", "json", "-f", "-"]


def patch_command(patch: dict) -> list[str]:
    """A JSON merge patch of the object read from stdin: lists are replaced whole, whoever owns their elements."""
    return ["patch", "--type=merge", "-p", json.dumps(patch), "-o", "json", "-f", "-"]


def withdraw_plan(kubectl: Kubectl, withdrawn: list[dict], manager: str) -> tuple[list[dict], list[str]]:
    """The withdrawn objects that exist: those `manager` applied (to delete) and the names of the others."""
    if not withdrawn:
        return [], []
    live = items(kubectl.run("get", "--ignore-not-found", "--show-managed-fields", "-o", "json", "-f", "-",
                             data=as_list(withdrawn)))
    ours = [obj for obj in live if applied_by(obj, manager)]
    return ours, [identity_text(obj) for obj in live if not applied_by(obj, manager)]


def apply_plan(module: AnsibleModule, kubectl: Kubectl, name: str,
               objects: list[dict]) -> tuple[list[dict], list[str], list[dict], list[str], dict]:
    """What applying `objects` changes, from the apiserver's dry run: the objects to apply, the unchanged ones,
    their diffs, the apiserver's warnings and, per object to apply, the lists another manager holds elements of
    (see contested_lists). Fails, before any change, on a missing namespace or object."""
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
    contested = {identity(o): contested_lists(o, live.get(identity(o))) for o in objects}
    contested = {key: patch for key, patch in contested.items() if patch}
    planned, err = {}, ""
    plain = [o for o in objects if identity(o) not in contested]
    if plain:
        rc, out, err = kubectl.answer(*apply_command(module.params["field_manager"]), "--dry-run=server",
                                      data=as_list(plain))
        if rc != 0:
            module.fail_json(msg=f"{name}: the apiserver refused the objects (server-side dry run; nothing was "
                                 f"changed): {err.strip()}")
        planned = {identity(o): o for o in items(out)}
    for obj in objects:
        if identity(obj) in contested:
            # The whole object as a merge patch, dry run: what the list take-over and the apply leave behind.
            rc, out, patch_err = kubectl.answer(*patch_command(obj), "--dry-run=server", data=json.dumps(obj))
            if rc != 0:
                module.fail_json(msg=f"{name}: the apiserver refused {identity_text(obj)} (server-side dry run; "
                                     f"nothing was changed): {patch_err.strip()}")
            planned.update({identity(o): o for o in items(out)})
            err += patch_err
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
    contested_changed = {key: contested[key] for key in map(identity, changed) if key in contested}
    return changed, unchanged, diffs, warnings, contested_changed


def main() -> None:
    module = AnsibleModule(
        argument_spec={"objects": {"type": "list", "elements": "dict", "required": True},
                       "withdrawn": {"type": "list", "elements": "dict", "default": []},
                       "existing_kinds": {"type": "list", "elements": "str", "default": ["Namespace"]},
                       "field_manager": {"type": "str", "default": "kubeharden"},
                       "input_name": {"type": "str", "default": "objects"},
                       **KUBECTL_OPTIONS},
        supports_check_mode=True,
    )
    name, objects, withdrawn = module.params["input_name"], module.params["objects"], module.params["withdrawn"]
    manager = module.params["field_manager"]
    problems = invalid_objects(objects) + [f"withdrawn {problem}" for problem in invalid_objects(withdrawn)]
    if problems:
        module.fail_json(msg=f"{name}: " + "; ".join(problems))
    if not objects and not withdrawn:
        module.exit_json(changed=False, applied=[], deleted=[], left=[], unchanged=[], apiserver_warnings=[])
    kubectl = Kubectl(module, module.params["kubectl"], module.params["kubeconfig"])
    changed, unchanged, diffs, warnings, contested = [], [], [], [], {}
    if objects:
        changed, unchanged, diffs, warnings, contested = apply_plan(module, kubectl, name, objects)
    ours, left = withdraw_plan(kubectl, withdrawn, manager)
    diffs += [{"before_header": identity_text(obj), "after_header": f"{identity_text(obj)} (deleted)",
               "before": yaml_text(comparable(obj)), "after": ""} for obj in ours]
    if changed and not module.check_mode:
        for obj in changed:
            if identity(obj) in contested:
                rc, _out, err = kubectl.answer(*patch_command(contested[identity(obj)]), f"--field-manager={manager}",
                                               data=json.dumps(obj))
                if rc != 0:
                    module.fail_json(msg=f"{name}: taking over the lists of {identity_text(obj)} failed: "
                                         f"{err.strip()}", applied=[], unchanged=unchanged)
        rc, _out, err = kubectl.answer(*apply_command(manager), data=as_list(changed))
        if rc != 0:
            module.fail_json(msg=f"{name}: applying failed: {err.strip()}",
                             applied=[], unchanged=unchanged)
        warnings = [line.strip() for line in err.splitlines() if line.strip().startswith("Warning")]
    if ours and not module.check_mode:
        names = [{"apiVersion": o["apiVersion"], "kind": o["kind"],
                  "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"].get("namespace")}}
                 for o in ours]
        rc, _out, err = kubectl.answer("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                                       data=as_list(names))
        if rc != 0:
            module.fail_json(msg=f"{name}: deleting withdrawn objects failed: {err.strip()}",
                             applied=[identity_text(o) for o in changed], deleted=[])
    for warning in warnings:
        module.warn(warning)
    for other in left:
        module.warn(f"{other} is not kubeharden's (another manager made it): left in place")
    module.exit_json(changed=bool(changed or ours), applied=[identity_text(o) for o in changed],
                     deleted=[identity_text(o) for o in ours], left=left, unchanged=unchanged,
                     apiserver_warnings=warnings, diff=diffs)


if __name__ == "__main__":
    main()
