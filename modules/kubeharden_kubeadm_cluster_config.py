#!/usr/bin/python
"""Make the cluster's own kubeadm configuration carry the hardening, so that `kubeadm upgrade` keeps it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_kubeadm_cluster_config
short_description: Carry the hardening in kubeadm's component configurations (kubeadm, kubelet, kube-proxy)
description:
  - C(kubeadm upgrade apply) and C(kubeadm upgrade node) write the control-plane manifests from the
    ClusterConfiguration in C(kube-system/kubeadm-config), and the kubelet's C(config.yaml) from
    C(kube-system/kubelet-config); C(kubeadm join) does too. Flags and settings that live only on the nodes are
    lost at the next upgrade. This module writes kubeharden's flags into the ClusterConfiguration as
    C(extraArgs), the files they name as C(extraVolumes), and the kubelet settings into the
    KubeletConfiguration, so that kubeadm writes hardened nodes by itself.
  - kube-proxy reads its configuration from C(kube-system/kube-proxy) (C(config.conf)), which C(kubeadm upgrade
    apply) carries over; O(kube_proxy) settings go there. O(kube_proxy_config_mode) is the mode of the files of that
    ConfigMap in kube-proxy's pods (the C(defaultMode) of kube-proxy's DaemonSet volume; CIS 4.1.3, its kubeconfig
    is one of them); C(kubeadm upgrade apply) writes the DaemonSet anew, so this mode comes back as drift after an
    upgrade. When either changes, kube-proxy's pods are replaced (a rollout) and the task waits until every one
    runs the new configuration; a rollout that does not finish in O(rollout_timeout) puts the previous ConfigMap
    and DaemonSet back and fails.
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
  kube_proxy:
    description: KubeProxyConfiguration settings for kube-system/kube-proxy. Omitted - the ConfigMap is left alone.
    type: dict
  kube_proxy_config_mode:
    description: Mode of kube-proxy's configuration files in its pods (octal string). Omitted - left alone.
    type: str
  rollout_timeout:
    description: Seconds kube-proxy's rollout may take before the previous configuration is put back.
    type: int
    default: 180
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

- name: kube-proxy's metrics on loopback and its kubeconfig 0600 in its pods (CIS 4.3.1, 4.1.3)
  kubeharden_kubeadm_cluster_config:
    kube_proxy: {metricsBindAddress: "127.0.0.1:10249"}
    kube_proxy_config_mode: "0600"
"""

RETURN = r"""
configmaps:
  description: Per ConfigMap (kubeadm-config, kubelet-config, kube-proxy), whether it changed (or would), or why it
    was skipped.
  returned: always
  type: dict
daemonset:
  description: Whether kube-proxy's DaemonSet changed (or would), and whether its pods were rolled out again.
  returned: when kube_proxy or kube_proxy_config_mode is given
  type: dict
backups:
  description: Copies of the ConfigMaps and the DaemonSet replaced.
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
    KUBE_PROXY,
    ConfigError,
    config_volume,
    harden_cluster_configuration,
    harden_kube_proxy_configuration,
    harden_kubelet_configuration,
    mode_patch,
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
KEYS = {"kubeadm-config": "ClusterConfiguration", "kubelet-config": "kubelet", "kube-proxy": "config.conf"}


def dump(document: dict) -> str:
    return yaml.safe_dump(document, default_flow_style=False, sort_keys=True)


class Cluster(Kubectl):
    def configmap(self, name: str) -> dict | None:
        return self.get("configmap", name, missing_ok=True)

    def replace(self, configmap: dict) -> None:
        self.run("replace", "-f", "-", data=json.dumps(configmap))

    def create(self, configmap: dict) -> None:
        self.run("create", "-f", "-", data=json.dumps(configmap))

    def daemonset(self, name: str) -> dict | None:
        return self.get("daemonset", name, missing_ok=True)


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
    if name == KUBE_PROXY:
        configuration, paths = harden_kube_proxy_configuration(current, params["kube_proxy"],
                                                               managed.get("settings", []))
        return configuration, {"settings": paths}
    configuration, paths = harden_kubelet_configuration(current, params["kubelet"], managed.get("kubelet", []))
    return configuration, {"kubelet": paths}


def read_record(record: dict | None) -> dict[str, dict]:
    try:
        return {name: json.loads(text) for name, text in ((record or {}).get("data") or {}).items()}
    except ValueError as exc:
        raise ConfigError(f"{NAMESPACE}/{RECORD} cannot be read: {exc}") from None


def keep_copy(configmap: dict, backup_dir: str) -> str:
    directory = os.path.join(backup_dir, f"{configmap.get('kind', 'ConfigMap').lower()}s", NAMESPACE)
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
            "kube_proxy": {"type": "dict"},
            "kube_proxy_config_mode": {"type": "str"},
            "rollout_timeout": {"type": "int", "default": 180},
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
    wanted = [name for name, option in (("kubeadm-config", "flags"), ("kubelet-config", "kubelet"),
                                        (KUBE_PROXY, "kube_proxy")) if params[option] is not None]
    mode = None
    if params["kube_proxy_config_mode"] is not None:
        try:
            mode = int(params["kube_proxy_config_mode"], 8)
        except ValueError:
            module.fail_json(msg=f"kube_proxy_config_mode {params['kube_proxy_config_mode']!r} is not an octal mode")
        if mode & ~0o777 or mode & 0o400 == 0:
            module.fail_json(msg=f"kube_proxy_config_mode {params['kube_proxy_config_mode']!r} must be a file mode "
                                 "that lets kube-proxy (root) read its files, such as 0600")
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
    daemonset, patch, proxy_report = None, None, None
    if params["kube_proxy"] is not None or mode is not None:
        daemonset = cluster.daemonset(KUBE_PROXY)
        proxy_report = {"changed": False, "rolled_out": False}
        if daemonset is None:
            proxy_report["skipped"] = f"no {NAMESPACE}/{KUBE_PROXY} DaemonSet: kube-proxy is not kubeadm's here"
        elif mode is not None:
            try:
                patch = mode_patch(daemonset, mode)
            except ConfigError as exc:
                module.fail_json(msg=str(exc))
            if patch:
                shown = f"{config_volume(daemonset)[1]['configMap'].get('defaultMode', 0o644):04o}"
                before += f"# {NAMESPACE}/{KUBE_PROXY} DaemonSet: configuration files' mode\n{shown}\n"
                after += f"# {NAMESPACE}/{KUBE_PROXY} DaemonSet: configuration files' mode\n{mode:04o}\n"
                proxy_report["changed"] = True
    proxy_config_changed = any(original["metadata"]["name"] == KUBE_PROXY for original, _updated in changes)
    roll_out = daemonset is not None and (patch is not None or proxy_config_changed)
    backups = []
    if not module.check_mode:
        for original, updated in changes:
            backups.append(keep_copy(original, params["backup_dir"]))
            cluster.replace(updated)
        if roll_out:
            backups.append(keep_copy(daemonset, params["backup_dir"]))
            roll_out_kube_proxy(module, cluster, patch, changes, daemonset, params["rollout_timeout"])
            proxy_report["rolled_out"] = True
        if record_changed:
            data = {name: json.dumps(value, sort_keys=True) for name, value in sorted(now_managed.items())}
            if record is None:
                cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                                "metadata": {"name": RECORD, "namespace": NAMESPACE}})
            else:
                cluster.replace({**record, "data": data})
    result = {"daemonset": proxy_report} if proxy_report is not None else {}
    module.exit_json(changed=bool(changes) or record_changed or bool(patch), configmaps=report, backups=backups,
                     diff={"before": before, "after": after}, **result)


def roll_out_kube_proxy(module, cluster: Cluster, patch: list[dict] | None, changes: list, daemonset: dict,
                        timeout: int) -> None:
    """New kube-proxy pods with the new configuration (a DaemonSet change rolls them out by itself; a ConfigMap
    change alone does not), then wait for every one; otherwise put the previous objects back and fail."""
    if patch:
        cluster.run("patch", "daemonset", KUBE_PROXY, "--type=json", "-p", json.dumps(patch))
    else:
        cluster.run("rollout", "restart", f"daemonset/{KUBE_PROXY}")
    rc, out, err = cluster.answer("rollout", "status", f"daemonset/{KUBE_PROXY}", f"--timeout={timeout}s")
    if rc == 0:
        return
    for original, _updated in changes:
        if original["metadata"]["name"] == KUBE_PROXY:
            restored = json.loads(json.dumps(original))
            restored["metadata"].pop("resourceVersion", None)
            cluster.replace(restored)
    if patch:
        index, volume = config_volume(daemonset)
        previous = volume["configMap"].get("defaultMode", 0o644)
        cluster.run("patch", "daemonset", KUBE_PROXY, "--type=json", "-p", json.dumps(
            [{"op": "add", "path": f"/spec/template/spec/volumes/{index}/configMap/defaultMode", "value": previous}]))
    else:
        cluster.run("rollout", "restart", f"daemonset/{KUBE_PROXY}")
    logs = cluster.answer("logs", f"daemonset/{KUBE_PROXY}", "--tail=5")[1]
    module.fail_json(msg=f"kube-proxy's pods did not all run the new configuration within {timeout} s "
                         f"({(err or out).strip()}); the previous configuration is back. kube-proxy's last lines: "
                         f"{logs.strip()[-800:]}")


if __name__ == "__main__":
    main()
