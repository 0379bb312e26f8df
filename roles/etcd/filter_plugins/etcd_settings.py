"""etcd_setting: one of etcd's own settings, read where the running member takes it from.

A kubeadm static pod states it as `--flag=value` in its manifest's command; a host service (kubespray's
topology) as `ETCD_FLAG=value` in its environment file, quoted or not, as systemd reads it. The role reads its CA
and data directory from there, as the audit does, instead of a setting of its own that could disagree.
A unit test reaches it as a plain function (tests/unit/test_role_filters.py).
"""

from __future__ import annotations

import shlex

import yaml


def etcd_setting(text: str, flag: str, kind: str, default: str = "") -> str:
    """The value of `flag` (such as data-dir) in a static pod manifest (kind static_pod) or an environment file
    (kind host); `default` when it is not set there."""
    if kind == "static_pod":
        pod = yaml.safe_load(text) or {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            for argument in (container.get("command") or []) + (container.get("args") or []):
                if str(argument).startswith(f"--{flag}="):
                    return str(argument).split("=", 1)[1]
        return default
    variable = "ETCD_" + flag.upper().replace("-", "_")
    for line in text.splitlines():
        name, separator, value = line.strip().partition("=")
        if separator and name.strip() == variable:
            words = shlex.split(value)  # systemd strips the quotes around a value
            return words[0] if words else default
    return default


class FilterModule:
    def filters(self):
        return {"etcd_setting": etcd_setting}
