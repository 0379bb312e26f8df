#!/usr/bin/python
"""Evaluate kubeharden catalogue controls on a node in one invocation."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_audit
short_description: Evaluate kubeharden's control catalogue on a node in one invocation
description:
  - Evaluates every control given to it that applies to the node's roles and returns one result per
    control, with the actual and expected values and the evidence (file, flag, process) behind them.
  - Reads static pod manifests as YAML, the kubelet's real configuration (its unit, drop-ins under /etc
    and /usr/lib, environment files, the live command line, C(--config) and C(--config-dir) drop-ins),
    etcd as a static pod or a host service, and sysctls as persisted and as live.
  - Read-only. It never changes the node, so check mode and normal mode behave the same and there is no diff.
  - A control whose input is unreadable or malformed gets status C(error) with the reason; the others still run.
version_added: "0.1.0"
options:
  controls:
    description:
      - Catalogue entries, as loaded by C(kubeharden.catalogue) (each with C(id) and C(check)).
    type: list
    elements: dict
    required: true
  node_roles:
    description:
      - Inventory groups of the node; a control is evaluated only if one of its C(node_roles) is here.
      - C(cluster) on one control-plane node evaluates the controls of the whole cluster there (CIS section 5,
        read over the API with the node's C(/etc/kubernetes/admin.conf)).
    type: list
    elements: str
    required: true
  kubeadm_config:
    description:
      - Judge the node as C(kubeadm init) will leave it from this kubeadm configuration file, before it runs.
        Only controls the configuration decides are evaluated (static pod flags, kubelet settings, and files
        those flags name, read from the node).
    type: path
  accepted_subjects:
    description:
      - RBAC subjects the operator has reviewed and accepts holding the powers section 5.1 minimizes, as the audit
        names them (C(User alice), C(Group ops), C(ServiceAccount ns/name)); they are not reported.
    type: list
    elements: str
    default: []
  pod_security_level:
    description:
      - The Pod Security level the operator chose for the cluster's namespaces (the cluster_policies role's
        C(cluster_policies_pod_security_level)); a namespace enforcing a weaker one without a recorded exemption
        fails 5.2.1, and KH-K8S-5 asks the apiserver which running pods it would reject.
    type: str
    default: restricted
    choices: [privileged, baseline, restricted]
  policy_namespaces:
    description:
      - The namespaces the operator put under the cluster's policies (the names in the cluster_policies role's
        C(cluster_policies_namespaces)); 5.5.1 fails while the image policy does not cover one of them without a
        recorded exemption.
    type: list
    elements: str
    default: []
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Audit the node against every control of the catalogue
  kubeharden_audit:
    controls: "{{ lookup('ansible.builtin.pipe', 'python3 -m kubeharden.catalogue --json') | from_json }}"
    node_roles: "{{ group_names }}"
  register: audit

- name: Audit only the kubelet controls (a list filtered by the caller)
  kubeharden_audit:
    controls: "{{ kubeharden_controls | selectattr('id', 'match', '^4\\.2\\.') | list }}"
    node_roles: [workers]
"""

RETURN = r"""
results:
  description: One entry per applicable control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "1.2.15"
      status: fail
      expected: eq false
      actual: null
      evidence: "--profiling not set (manifest /etc/kubernetes/manifests/kube-apiserver.yaml); default true applies"
      reason: ""
certificates:
  description: The node's certificates with days left (when a control read them), for expiry alerts.
  returned: always
  type: list
  elements: dict
  sample: [{name: /etc/kubernetes/pki/apiserver.crt, subject: /CN=kube-apiserver, days_left: 364,
            not_after: "2027-11-28T10:06:14+00:00", managed_by: kubeharden}]
summary:
  description: Count of results by status (pass, fail, manual, not_applicable, error, exception).
  returned: always
  type: dict
  sample: {pass: 120, fail: 14, manual: 6, not_applicable: 3, error: 0}
kubernetes_version:
  description: The Kubernetes minor of the node's kubelet (or of the kubeadm configuration), which picks the rule of
    a control whose meaning changed with the release; empty when unknown.
  returned: always
  type: str
  sample: "1.37"
etcd:
  description: How etcd runs on the node (static_pod, host or none); a control's fix can depend on it.
  returned: always
  type: str
  sample: static_pod
evaluation_seconds:
  description: How long evaluating the controls took on the node (reading its files and processes included).
  returned: always
  type: float
  sample: 0.84
"""

import time
from collections import Counter

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_controls import (
    CHECK_TYPES,
    Node,
    RenderedNode,
    decided_by_rendering,
    evaluate_all,
)
from ansible.module_utils.kubeharden_node import ReadError


def invalid_controls(controls: list) -> list[str]:
    problems = []
    for index, control in enumerate(controls):
        if not isinstance(control, dict) or "id" not in control or not isinstance(control.get("check"), dict):
            problems.append(f"controls[{index}] needs an id and a check mapping")
            continue
        read = control["check"].get("read")
        if read != "none" and read not in CHECK_TYPES:
            problems.append(f"control {control['id']}: unknown check.read {read!r}")
    return problems


def main() -> None:
    module = AnsibleModule(
        argument_spec={"controls": {"type": "list", "elements": "dict", "required": True},
                       "node_roles": {"type": "list", "elements": "str", "required": True},
                       "kubeadm_config": {"type": "path"},
                       "accepted_subjects": {"type": "list", "elements": "str", "default": []},
                       "pod_security_level": {"type": "str", "default": "restricted",
                                              "choices": ["privileged", "baseline", "restricted"]},
                       "policy_namespaces": {"type": "list", "elements": "str", "default": []}},
        supports_check_mode=True,
    )
    problems = invalid_controls(module.params["controls"])
    if problems:
        module.fail_json(msg="invalid controls: " + "; ".join(problems))
    controls = module.params["controls"]
    if module.params["kubeadm_config"]:
        try:
            state = RenderedNode(module.params["node_roles"], module.params["kubeadm_config"])
        except ReadError as exc:
            module.fail_json(msg=str(exc))
        controls = [c for c in controls if decided_by_rendering(c)]
    else:
        state = Node(module.params["node_roles"], module.params["accepted_subjects"],
                     pod_security_level=module.params["pod_security_level"],
                     policy_namespaces=module.params["policy_namespaces"])
    started = time.perf_counter()
    results = evaluate_all(controls, module.params["node_roles"], state)
    seconds = round(time.perf_counter() - started, 3)
    # Days left per certificate, for alerts weeks ahead; read only when a control already read them.
    certificates = [{k: c.get(k) for k in ("name", "subject", "not_after", "days_left", "managed_by")}
                    for c in state.certificates_read() if "error" not in c]
    version = state.kubernetes_version
    module.exit_json(changed=False, results=results, certificates=certificates, evaluation_seconds=seconds,
                     kubernetes_version=".".join(map(str, version)) if version else "", etcd=state.etcd_kind,
                     summary=dict(Counter(r["status"] for r in results)))


if __name__ == "__main__":
    main()
