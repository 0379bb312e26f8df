#!/usr/bin/python
"""Render a kubeadm configuration that carries kubeharden's hardening, for `kubeadm init` or `kubeadm join`."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_kubeadm_config
short_description: Write a hardened kubeadm configuration file for kubeadm init or join
description:
  - Renders InitConfiguration, ClusterConfiguration (every hardening flag as extraArgs of its component, every
    file the control plane reads as extraVolumes), KubeletConfiguration and KubeProxyConfiguration for the first
    control-plane node, or a JoinConfiguration for a node that joins, in kubeadm.k8s.io/v1beta4 (extraArgs as
    name/value pairs), the only version kubeadm reads from Kubernetes 1.36.
  - Flags kubeadm already sets to the wanted value are left out. A flag kubeharden removes that kubeadm sets by
    default, an unsupported Kubernetes version, or an extra argument that contradicts a hardening flag fails
    before anything is written, naming the setting.
  - Written atomically with a backup of the previous file, mode 0600 (a join file holds a bootstrap token).
    The diff and the results never show the token or the certificate key.
version_added: "0.1.0"
options:
  path:
    description: The configuration file to write.
    type: path
    default: /etc/kubernetes/kubeadm-config.yaml
  kubernetes_version:
    description: The Kubernetes version kubeadm installs, such as v1.37.2.
    type: str
    required: true
  allow_prerelease:
    description:
      - Render a configuration for the next minor while only its pre-releases exist (1.38 until 1.38.0), for a test
        cluster. Without it such a version is refused before anything is written.
    type: bool
    default: false
  advertise_address:
    description: The node's address the apiserver and etcd advertise.
    type: str
    required: true
  node_name:
    description: The node's name in the cluster.
    type: str
    required: true
  bind_port:
    description: The apiserver's port.
    type: int
    default: 6443
  control_plane_endpoint:
    description: A shared address for every control-plane node (a load balancer), needed for more than one.
    type: str
  service_subnet:
    description: The service network.
    type: str
    default: 10.96.0.0/12
  pod_subnet:
    description: The pod network (the CNI's), when the controller-manager allocates node CIDRs.
    type: str
  cluster_name:
    description: The cluster's name.
    type: str
    default: kubernetes
  flags:
    description:
      - Hardening flags per component (kube-apiserver, kube-controller-manager, kube-scheduler, etcd).
      - A null value asks for the flag's absence.
    type: dict
    default: {}
  extra_args:
    description: The user's own extra arguments per component; one that contradicts a hardening flag fails.
    type: dict
    default: {}
  volumes:
    description: hostPath volumes per component, each with C(path) and optional C(read_only), C(file).
    type: dict
    default: {}
  kubelet:
    description: KubeletConfiguration keys (the kubelet role's settings).
    type: dict
    default: {}
  kube_proxy:
    description:
      - KubeProxyConfiguration keys (the kubelet role's kube-proxy settings, such as C(metricsBindAddress) on
        loopback for CIS 4.3.1, and the site's own); kubeadm stores them in C(kube-system/kube-proxy).
    type: dict
    default: {metricsBindAddress: 127.0.0.1:10249}
  etcd_image_tag:
    description: The local etcd's image tag, when it is not the one kubeadm picks (an air-gapped registry's).
    type: str
  ignore_preflight_errors:
    description: kubeadm preflight checks this node cannot pass (nodeRegistration.ignorePreflightErrors).
    type: list
    elements: str
    default: []
  skip_phases:
    description: kubeadm init phases not to run (skipPhases), such as addon/kube-proxy where a CNI replaces it.
    type: list
    elements: str
    default: []
  join:
    description: Render a JoinConfiguration instead, with C(api_server_endpoint), C(token), C(ca_cert_hashes), and for a
      control-plane node C(control_plane=true) and C(certificate_key).
    type: dict
  validate:
    description:
      - Have the node's own kubeadm check the rendered file (C(kubeadm config validate)) before it is written, in
        check mode too; a file kubeadm rejects fails the task with kubeadm's message and leaves the file untouched.
      - Skipped, and said so in C(validated), where kubeadm is not installed yet.
    type: bool
    default: true
extends_documentation_fragment:
  - kubeharden_backup.backup_dir
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Render the first control-plane node's kubeadm configuration
  kubeharden_kubeadm_config:
    kubernetes_version: v1.37.2
    advertise_address: 192.0.2.10
    node_name: cp1
    flags:
      kube-apiserver: {profiling: "false"}
"""

RETURN = r"""
api_version:
  description: The kubeadm API version rendered.
  returned: always
  type: str
  sample: kubeadm.k8s.io/v1beta4
kinds:
  description: The documents written, in order.
  returned: always
  type: list
  elements: str
path:
  description: The file written.
  returned: always
  type: str
validated:
  description: What validated the rendered file, or why nothing did.
  returned: always
  type: str
  sample: kubeadm v1.37.2 (kubeadm config validate)
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.kubeharden_files import (
    BACKUP_DIR_OPTION,
    read_or_empty,
    replace_file,
)
from ansible.module_utils.kubeharden_kubeadm import ConfigError, api_version, parse_version, render
from ansible.module_utils.kubeharden_node import run

try:
    import yaml
except ImportError:  # reported by main() with how to install it
    yaml = None

SECRET_KEYS = ("token", "certificateKey")


def dump(documents: list[dict]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in documents)


def redacted(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        key = line.strip().split(":", 1)[0]
        lines.append(line.split(":", 1)[0] + ": <redacted>\n" if key in SECRET_KEYS else line)
    return "".join(lines)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/kubernetes/kubeadm-config.yaml"},
            "kubernetes_version": {"type": "str", "required": True},
            "allow_prerelease": {"type": "bool", "default": False},
            "advertise_address": {"type": "str", "required": True},
            "node_name": {"type": "str", "required": True},
            "bind_port": {"type": "int", "default": 6443},
            "control_plane_endpoint": {"type": "str"},
            "service_subnet": {"type": "str", "default": "10.96.0.0/12"},
            "pod_subnet": {"type": "str"},
            "cluster_name": {"type": "str", "default": "kubernetes"},
            "flags": {"type": "dict", "default": {}},
            "extra_args": {"type": "dict", "default": {}},
            "volumes": {"type": "dict", "default": {}},
            "kubelet": {"type": "dict", "default": {}},
            "kube_proxy": {"type": "dict", "default": {"metricsBindAddress": "127.0.0.1:10249"}},
            "etcd_image_tag": {"type": "str"},
            "ignore_preflight_errors": {"type": "list", "elements": "str", "default": []},
            "skip_phases": {"type": "list", "elements": "str", "default": []},
            "join": {"type": "dict", "no_log": True},
            "validate": {"type": "bool", "default": True},
            **BACKUP_DIR_OPTION,
        },
        supports_check_mode=True,
    )
    if yaml is None:
        module.fail_json(msg=missing_required_lib("PyYAML"))
    p = module.params
    try:
        unknown = sorted((set(p["flags"]) | set(p["extra_args"]) | set(p["volumes"]))
                         - {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"})
        if unknown:
            raise ConfigError(f"flags, extra_args and volumes take kube-apiserver, kube-controller-manager, "
                              f"kube-scheduler or etcd, not {', '.join(unknown)}")
        documents = render(p)
    except ConfigError as exc:
        module.fail_json(msg=str(exc))
    content = dump(documents)
    current = read_or_empty(p["path"])
    result = {"changed": current != content, "path": p["path"], "kinds": [d["kind"] for d in documents],
              "api_version": api_version(parse_version(p["kubernetes_version"], p["allow_prerelease"])),
              "validated": kubeadm_validate(module, content) if p["validate"] else "not asked"}
    if result["changed"]:
        result["diff"] = {"before": redacted(current), "after": redacted(content), "before_header": p["path"],
                          "after_header": p["path"]}
        if not module.check_mode:
            os.makedirs(os.path.dirname(p["path"]), mode=0o755, exist_ok=True)
            replace_file(p["path"], content, p, mode=0o600)
    module.exit_json(**result)


def kubeadm_validate(module: AnsibleModule, content: str) -> str:
    """Run the node's kubeadm over the rendered file (from a private temporary copy: it holds the join token)."""
    kubeadm = module.get_bin_path("kubeadm")
    if kubeadm is None:
        return "skipped: kubeadm is not installed on this node"
    with tempfile.NamedTemporaryFile("w", prefix="kubeharden-kubeadm-", suffix=".yaml") as rendered:
        rendered.write(content)
        rendered.flush()
        validated = run([kubeadm, "config", "validate", "--config", rendered.name], timeout=60)
    if validated.returncode != 0:
        message = " ".join(line.strip() for line in (validated.stderr or validated.stdout).splitlines()
                           if line.strip() and "stack trace" not in line)
        module.fail_json(msg=f"kubeadm rejects the rendered configuration (nothing was written): {message}")
    version = run([kubeadm, "version", "-o", "short"]).stdout
    return f"kubeadm {version.strip()} (kubeadm config validate)"


if __name__ == "__main__":
    main()
