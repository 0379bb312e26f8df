#!/usr/bin/python
"""Make the cluster's own kubeadm configuration carry the hardening, so that `kubeadm upgrade` keeps it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_kubeadm_cluster_config
short_description: Carry the hardening in kube-system/kubeadm-config and kube-system/kubelet-config
description:
  - C(kubeadm upgrade apply) and C(kubeadm upgrade node) write the control-plane manifests from the
    ClusterConfiguration in C(kube-system/kubeadm-config), and the kubelet's C(config.yaml) from
    C(kube-system/kubelet-config); C(kubeadm join) does too. Flags and settings that live only on the nodes are
    lost at the next upgrade. This module writes kubeharden's flags into the ClusterConfiguration as
    C(extraArgs), the files they name as C(extraVolumes), and the kubelet settings into the
    KubeletConfiguration, so that kubeadm writes hardened nodes by itself.
  - The operator's own extraArgs and settings are kept. One that contradicts a hardening value fails the task,
    naming it, and nothing is written. What kubeharden wrote is recorded in C(kube-system/kubeharden-managed)
    (kubeadm re-creates its own ConfigMaps at each upgrade), so that a changed hardening variable updates it
    instead of being taken for the operator's.
  - Runs C(kubectl) with O(kubeconfig) on a control-plane node; a ConfigMap is replaced with its
    resourceVersion (a concurrent change fails the task), after a copy of it is kept under O(backup_dir).
    A cluster without the ConfigMap (not made by kubeadm) is left alone and reported.
  - Check mode reports the change and shows it with C(--diff).
version_added: "0.1.0"
extends_documentation_fragment:
  - kubeharden_backup.BACKUP_DIR
  - kubeharden_kubectl
options:
  flags:
    description:
      - Component (kube-apiserver, kube-controller-manager, kube-scheduler, etcd) to its hardening flags, as the
        manifests get them (a null value is a flag that must be absent). Omitted - kubeadm-config is left alone.
    type: dict
  volumes:
    description: Component to explicit hostPath volumes (path, read_only), beside those the flags' files need.
    type: dict
    default: {}
  kubelet:
    description: KubeletConfiguration settings for kubelet-config. Omitted - kubelet-config is left alone.
    type: dict
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Make kubeadm upgrade write hardened manifests
  kubeharden_kubeadm_cluster_config:
    flags:
      kube-apiserver: {profiling: "false", token-auth-file: null}
      kube-scheduler: {profiling: "false"}
    volumes:
      kube-apiserver: [{path: /var/log/kubernetes/audit, read_only: false}]

- name: Make kubeadm upgrade node and kubeadm join write a hardened kubelet configuration
  kubeharden_kubeadm_cluster_config:
    kubelet: {readOnlyPort: 0, serverTLSBootstrap: true}
"""

RETURN = r"""
configmaps:
  description: Per ConfigMap (kubeadm-config, kubelet-config), whether it changed (or would), or why it was skipped.
  returned: always
  type: dict
backups:
  description: Copies of the ConfigMaps replaced.
  returned: changed and not check mode
  type: list
  elements: str
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import BACKUP_DIR_OPTION, atomic_write
from ansible.module_utils.kubeharden_kubeadm import (
    ConfigError,
    harden_cluster_configuration,
    harden_kubelet_configuration,
)
from ansible.module_utils.kubeharden_kubectl import KUBECTL_OPTIONS, Kubectl

try:
    import yaml
except ImportError:  # reported by main() with fail_json
    yaml = None

NAMESPACE = "kube-system"
# What kubeharden wrote into each ConfigMap, kept in one of its own: kubeadm re-creates its ConfigMaps at each
# upgrade, and with them any annotation.
RECORD = "kubeharden-managed"
# ConfigMap -> the data key holding the configuration.
KEYS = {"kubeadm-config": "ClusterConfiguration", "kubelet-config": "kubelet"}


def dump(document: dict) -> str:
    return yaml.safe_dump(document, default_flow_style=False, sort_keys=True)


class Cluster(Kubectl):
    def configmap(self, name: str) -> dict | None:
        return self.get("configmap", name, missing_ok=True)

    def replace(self, configmap: dict) -> None:
        self.run("replace", "-f", "-", data=json.dumps(configmap))

    def create(self, configmap: dict) -> None:
        self.run("create", "-f", "-", data=json.dumps(configmap))


def hardened(name: str, configmap: dict, managed: dict, params: dict) -> tuple[dict, dict]:
    """The ConfigMap's new configuration and what kubeharden manages there; ConfigError for a contradiction."""
    text = (configmap.get("data") or {}).get(KEYS[name])
    if not text:
        raise ConfigError(f"{NAMESPACE}/{name} has no {KEYS[name]} key")
    try:
        current = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{NAMESPACE}/{name} cannot be read: {exc}") from None
    if not isinstance(current, dict):
        raise ConfigError(f"{NAMESPACE}/{name}: {KEYS[name]} is not a mapping")
    if name == "kubeadm-config":
        return harden_cluster_configuration(current, params["flags"], params["volumes"], managed)
    configuration, paths = harden_kubelet_configuration(current, params["kubelet"], managed.get("kubelet", []))
    return configuration, {"kubelet": paths}


def read_record(record: dict | None) -> dict[str, dict]:
    try:
        return {name: json.loads(text) for name, text in ((record or {}).get("data") or {}).items()}
    except ValueError as exc:
        raise ConfigError(f"{NAMESPACE}/{RECORD} cannot be read: {exc}") from None


def keep_copy(configmap: dict, backup_dir: str) -> str:
    directory = os.path.join(backup_dir, "configmaps", NAMESPACE)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = os.path.join(directory, f"{configmap['metadata']['name']}.{stamp}.{os.getpid()}.json")
    atomic_write(path, json.dumps(configmap, indent=2) + "\n", mode=0o600)
    return path


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "flags": {"type": "dict"},
            "volumes": {"type": "dict", "default": {}},
            "kubelet": {"type": "dict"},
            **KUBECTL_OPTIONS,
            **BACKUP_DIR_OPTION,
        },
        supports_check_mode=True,
    )
    if yaml is None:
        module.fail_json(msg="PyYAML is needed on the node (python3-yaml)")
    params = module.params
    for component, flags in (params["flags"] or {}).items():
        if not isinstance(flags, dict):
            module.fail_json(msg=f"flags.{component} must be a mapping of flag names to values")
    wanted = [name for name, option in (("kubeadm-config", "flags"), ("kubelet-config", "kubelet"))
              if params[option] is not None]
    cluster = Cluster(module, params["kubectl"], params["kubeconfig"], NAMESPACE)
    record = cluster.configmap(RECORD)
    try:
        managed = read_record(record)
    except ConfigError as exc:
        module.fail_json(msg=str(exc))
    report, changes, before, after = {}, [], "", ""
    now_managed = dict(managed)
    for name in wanted:
        configmap = cluster.configmap(name)
        if configmap is None:
            report[name] = {"changed": False, "skipped": f"no {NAMESPACE}/{name}: not a kubeadm cluster"}
            continue
        try:
            configuration, now_managed[name] = hardened(name, configmap, managed.get(name) or {}, params)
        except ConfigError as exc:
            module.fail_json(msg=str(exc))
        current = yaml.safe_load(configmap["data"][KEYS[name]])
        report[name] = {"changed": current != configuration or now_managed[name] != managed.get(name)}
        if current == configuration:
            continue
        before += f"# {NAMESPACE}/{name} {KEYS[name]}\n{dump(current)}"
        after += f"# {NAMESPACE}/{name} {KEYS[name]}\n{dump(configuration)}"
        updated = json.loads(json.dumps(configmap))
        updated["data"][KEYS[name]] = dump(configuration)
        changes.append((configmap, updated))
    record_changed = now_managed != managed
    backups = []
    if not module.check_mode:
        for original, updated in changes:
            backups.append(keep_copy(original, params["backup_dir"]))
            cluster.replace(updated)
        if record_changed:
            data = {name: json.dumps(value, sort_keys=True) for name, value in sorted(now_managed.items())}
            if record is None:
                cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                                "metadata": {"name": RECORD, "namespace": NAMESPACE}})
            else:
                cluster.replace({**record, "data": data})
    module.exit_json(changed=bool(changes) or record_changed, configmaps=report, backups=backups,
                     diff={"before": before, "after": after})


if __name__ == "__main__":
    main()
