#!/usr/bin/python
"""Approve the kubelet serving certificate requests the inventory vouches for, and prove every kubelet serves one."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_kubelet_serving
short_description: Approve verifiable kubelet-serving CSRs and check that every kubelet serves a CA-signed certificate
description:
  - With C(serverTLSBootstrap) on, kubelets ask for serving certificates with C(kubernetes.io/kubelet-serving)
    CertificateSigningRequests that nothing in Kubernetes approves. This module approves exactly the pending
    requests it can verify - the requester is C(system:node:NAME) in C(system:nodes) for a node of
    O(approve_for), the subject is that node, the usages are serving ones, and every SAN is one of the names
    and addresses O(approve_for) gives the node - and leaves any other request pending, reporting why.
  - It then checks every Node of the cluster the way kube-apiserver does with C(--kubelet-certificate-authority)
    (CIS 1.2.5) - a TLS handshake with the kubelet at the Node's address that verifies its certificate against
    O(ca_file) and that address - and waits up to O(wait) seconds for kubelets whose request it just approved.
  - Runs C(kubectl) with O(kubeconfig) on a control-plane node. In check mode nothing is approved and nothing is
    waited for; the result says what would be approved. Approvals show in C(--diff).
version_added: "0.1.0"
options:
  approve_for:
    description:
      - Inventory nodes whose kubelet-serving requests may be approved, by Node name, each with the DNS names and
        IP addresses its certificate may carry (the Node name is always one of them). Empty approves nothing.
    type: dict
    default: {}
  nodes:
    description:
      - The Nodes this call is about - it approves only requests made with their credentials and checks only
        their kubelets - so that a run for one node (drift remediation of one worker) reports and fixes that node.
        Empty - every Node of the cluster, and every pending kubelet-serving request, whoever made it.
    type: list
    elements: str
    default: []
  ca_file:
    description: The CA the API server verifies kubelets against (the cluster CA that signs kubelet-serving CSRs).
    type: path
    default: /etc/kubernetes/pki/ca.crt
  port:
    description: The kubelet's HTTPS port.
    type: int
    default: 10250
  wait:
    description: Seconds to wait until every Node's kubelet serves a verified certificate; 0 checks once.
    type: int
    default: 120
  require_verified:
    description:
      - Fail when a Node's kubelet still serves no certificate verified by O(ca_file) after O(wait), naming the
        nodes and any request left pending with its reason. False reports them only.
    type: bool
    default: true
extends_documentation_fragment:
  - kubeharden_kubectl
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Approve the kubelets' serving certificates the inventory vouches for
  kubeharden_kubelet_serving:
    approve_for:
      cp1: [cp1.example.internal, 10.0.0.11]
      w1: [w1.example.internal, 10.0.0.21]

- name: From a control-plane node, approve one worker's request and wait until its kubelet serves the certificate
  kubeharden_kubelet_serving:
    nodes: [w1]
    approve_for:
      w1: [w1.example.internal, 10.0.0.21]
  delegate_to: cp1

- name: Check only, before the API server verifies kubelets against the cluster CA
  kubeharden_kubelet_serving:
    wait: 0
"""

RETURN = r"""
approved:
  description: The requests approved (in check mode, that would be), with the node each is for.
  returned: always
  type: list
  elements: dict
pending:
  description: Pending kubelet-serving requests left alone, each with its requester and the reason.
  returned: always
  type: list
  elements: dict
nodes:
  description: Per Node name, the address dialled, whether its serving certificate verified, and the detail.
  returned: always
  type: dict
unverified:
  description: Nodes whose kubelet serves no certificate that O(ca_file) verifies.
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_kubectl import KUBECTL_OPTIONS, Kubectl
from ansible.module_utils.kubeharden_kubelet_serving import (
    SIGNER,
    is_pending,
    node_address,
    node_name,
    serving_certificate,
    verdict,
)

POLL_SECONDS = 2


class Cluster(Kubectl):
    def items(self, kind: str) -> list[dict]:
        return self.get(kind).get("items") or []

    def approve(self, name: str) -> None:
        self.run("certificate", "approve", name)


def check_input(module: AnsibleModule) -> dict[str, list[str]]:
    allowed = module.params["approve_for"]
    for node, names in allowed.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            module.fail_json(msg=f"approve_for.{node} must be a list of the node's DNS names and IP addresses")
    return allowed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "approve_for": {"type": "dict", "default": {}},
            "nodes": {"type": "list", "elements": "str", "default": []},
            **KUBECTL_OPTIONS,
            "ca_file": {"type": "path", "default": "/etc/kubernetes/pki/ca.crt"},
            "port": {"type": "int", "default": 10250},
            "wait": {"type": "int", "default": 120},
            "require_verified": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    allowed = check_input(module)
    if module.params["wait"] < 0:
        module.fail_json(msg="wait must be 0 or more seconds")
    scope = set(module.params["nodes"])
    cluster = Cluster(module, module.params["kubectl"], module.params["kubeconfig"])
    deadline = time.monotonic() + module.params["wait"]
    approved, pending, nodes = [], {}, {}
    while True:
        for csr in cluster.items("certificatesigningrequests"):
            spec, name = csr.get("spec") or {}, csr["metadata"]["name"]
            if spec.get("signerName") != SIGNER or not is_pending(csr) or name in pending:
                continue
            if scope and node_name(spec.get("username", "")) not in scope:
                continue  # another node's request, or nobody's: for the call about every node
            reason = verdict(csr, allowed)
            if reason is not None:
                pending[name] = {"name": name, "requester": spec.get("username", ""), "reason": reason}
                continue
            if not module.check_mode:
                cluster.approve(name)
            approved.append({"name": name, "node": spec["username"].rpartition(":")[2]})
        for node in cluster.items("nodes"):
            name = node["metadata"]["name"]
            if nodes.get(name, {}).get("verified") or (scope and name not in scope):
                continue
            address = node_address(node)
            verified, detail = (serving_certificate(address, module.params["port"], module.params["ca_file"])
                                if address else (False, "the Node has no address"))
            nodes[name] = {"address": address, "verified": verified, "detail": detail}
        unverified = sorted(n for n, v in nodes.items() if not v["verified"])
        unverified += sorted(scope - set(nodes))  # not (yet) a Node of the cluster
        if not unverified or module.check_mode or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)

    result = {
        "changed": bool(approved), "approved": approved, "pending": list(pending.values()), "nodes": nodes,
        "unverified": unverified,
        "diff": {"before": "".join(f"pending {a['name']} ({a['node']})\n" for a in approved),
                 "after": "".join(f"approved {a['name']} ({a['node']})\n" for a in approved)},
    }
    for request in pending.values():  # a person decides on these: say so without -v
        module.warn(f"kubelet-serving request {request['name']} from {request['requester']} left pending: "
                    f"{request['reason']}")
    if unverified and module.params["require_verified"] and not module.check_mode:
        left = "; ".join(f"{p['name']} from {p['requester']}: {p['reason']}" for p in pending.values()) or "none"
        module.fail_json(
            msg=f"kubelets serving no certificate that {module.params['ca_file']} verifies after "
                f"{module.params['wait']} s: "
                + "; ".join(f"{n} ({nodes[n]['detail'] if n in nodes else 'no such Node'})" for n in unverified)
                + f". Requests left pending: {left}.", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
