"""The kubectl options every kubeharden module that acts on the cluster from a control-plane node shares.

Modules list it in `extends_documentation_fragment` (`kubeharden_kubectl` in a checkout;
`kubeharden.hardening.kubeharden_kubectl` in the collection). Their argument specs take the same options from
module_utils/kubeharden_kubectl.py (KUBECTL_OPTIONS).
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description: A kubeconfig on the node with the rights the module needs (kubeadm's admin.conf by default).
    type: path
    default: /etc/kubernetes/admin.conf
  kubectl:
    description: The kubectl command.
    type: str
    default: kubectl
"""
