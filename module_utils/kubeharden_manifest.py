"""Edit a static pod manifest's command line and the hostPath mounts its files need; pure functions.

Flags are `--name=value` items of the first container's command. A flag set to None is removed; a new flag
is inserted in sorted position (kubeadm writes them sorted). List-valued flags (admission plugins, feature
gates) gain or lose single items; `Key=value` items are matched by key. Every absolute path a flag names
must be visible inside the container: where no hostPath mount covers it, its directory is mounted
read-only (kubernetes#53867: a flag naming an unmounted file keeps the apiserver from starting).
"""

from __future__ import annotations

import hashlib
import re

from ansible.module_utils.kubeharden_node import parse_minor

# Flags that name a file or directory the component writes: their directory is mounted read-write.
WRITABLE_PATH_FLAGS = frozenset({"audit-log-path", "data-dir", "cert-dir"})

# What each Kubernetes minor release removed or added, for flags and admission plugins kubeharden may write.
# A flag whose `removed` <= target, or whose `added` > target, is never written.
FLAG_FACTS: dict[str, dict[str, dict[str, str]]] = {
    "kube-apiserver": {
        "insecure-port": {"removed": "1.24"}, "insecure-bind-address": {"removed": "1.24"},
        "basic-auth-file": {"removed": "1.19"}, "kubelet-https": {"removed": "1.22"},
        "service-account-api-audiences": {"removed": "1.25"}, "authentication-config": {"added": "1.30"},
        "authorization-config": {"added": "1.30"}, "service-account-extend-token-expiration": {"added": "1.20"},
        "encryption-provider-config-automatic-reload": {"added": "1.26"},
    },
    "kube-controller-manager": {"port": {"removed": "1.24"}, "address": {"removed": "1.24"}},
    "kube-scheduler": {"port": {"removed": "1.23"}, "address": {"removed": "1.24"}},
    "etcd": {},
}
ADMISSION_PLUGIN_FACTS = {"PodSecurityPolicy": {"removed": "1.25"}, "PodSecurity": {"added": "1.23"},
                          "DenyServiceExternalIPs": {"added": "1.21"}, "SecurityContextDeny": {"removed": "1.30"}}


class ManifestError(ValueError):
    """The manifest or the requested change is invalid; nothing is written."""


def parse_version(text: str) -> tuple[int, int]:
    """kubeharden_node.parse_minor, refusing a text without a version."""
    version = parse_minor(text or "")
    if version is None:
        raise ManifestError(f"cannot read a Kubernetes version from {text!r}")
    return version


def container_of(pod) -> dict:
    try:
        container = pod["spec"]["containers"][0]
        if not isinstance(container.get("command"), list) or not container["command"]:
            raise KeyError("command")
        return container
    except (TypeError, KeyError, IndexError, AttributeError):
        raise ManifestError("not a static Pod manifest with a container command") from None


def image_version(pod) -> tuple[int, int] | None:
    image = container_of(pod).get("image", "")
    tag = image.rsplit(":", 1)[-1] if ":" in image else ""
    try:
        return parse_version(tag) if tag.startswith("v") else None
    except ManifestError:
        return None


def check_flag_facts(component: str, flags: dict, list_items: dict, version: tuple[int, int]) -> None:
    problems = []
    facts = FLAG_FACTS.get(component, {})
    for name, value in flags.items():
        if value is None:
            continue
        fact = facts.get(name, {})
        if "removed" in fact and version >= parse_version(fact["removed"]):
            problems.append(f"--{name} was removed in Kubernetes {fact['removed']}")
        if "added" in fact and version < parse_version(fact["added"]):
            problems.append(f"--{name} does not exist before Kubernetes {fact['added']}")
    for flag, change in list_items.items():
        if "admission-plugins" not in flag:
            continue
        for plugin in change.get("add") or []:
            fact = ADMISSION_PLUGIN_FACTS.get(plugin, {})
            if "removed" in fact and version >= parse_version(fact["removed"]):
                problems.append(f"admission plugin {plugin} was removed in Kubernetes {fact['removed']}")
            if "added" in fact and version < parse_version(fact["added"]):
                problems.append(f"admission plugin {plugin} does not exist before Kubernetes {fact['added']}")
    if problems:
        raise ManifestError(f"{component} v{version[0]}.{version[1]}: " + "; ".join(problems))


def _flag_name(arg: str) -> str | None:
    return arg[2:].split("=", 1)[0] if arg.startswith("--") else None


def _insert_sorted(args: list[str], item: str) -> list[str]:
    name = _flag_name(item)
    for index, existing in enumerate(args):
        existing_name = _flag_name(existing)
        if existing_name is not None and existing_name > name:
            return [*args[:index], item, *args[index:]]
    return [*args, item]


def set_flags(command: list[str], flags: dict[str, str | None]) -> list[str]:
    binary, args = command[0], list(command[1:])
    for name, value in flags.items():
        positions = [i for i, arg in enumerate(args) if _flag_name(arg) == name]
        if value is None:
            args = [arg for i, arg in enumerate(args) if i not in positions]
        elif positions:
            args[positions[0]] = f"--{name}={value}"
            args = [arg for i, arg in enumerate(args) if i not in positions[1:]]
        else:
            args = _insert_sorted(args, f"--{name}={value}")
    return [binary, *args]


def flag_value(command: list[str], name: str) -> str | None:
    values = [arg.split("=", 1)[1] if "=" in arg else "true" for arg in command[1:] if _flag_name(arg) == name]
    return values[-1] if values else None


def edit_list_items(command: list[str], changes: dict[str, dict]) -> list[str]:
    """Add or remove items of comma-separated flags; `Key=value` items replace the item with that key."""
    for name, change in changes.items():
        current = flag_value(command, name)
        items = [item for item in (current or "").split(",") if item]

        def key(item: str) -> str:
            return item.split("=", 1)[0]

        for item in change.get("remove") or []:
            items = [existing for existing in items if existing != item and key(existing) != item]
        for item in change.get("add") or []:
            if any(key(existing) == key(item) for existing in items):
                items = [item if key(existing) == key(item) else existing for existing in items]
            else:
                items.append(item)
        command = set_flags(command, {name: ",".join(items) if items else None})
    return command


def mounts(pod) -> dict[str, tuple[str, dict, dict]]:
    """mountPath -> (host path, volume, volumeMount) for the first container's hostPath mounts."""
    spec = pod["spec"]
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if v.get("hostPath")}
    found = {}
    for mount in container_of(pod).get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        if volume:
            found[mount["mountPath"].rstrip("/") or "/"] = (volume["hostPath"]["path"], volume, mount)
    return found


def flag_paths(command: list[str]) -> list[tuple[str, str]]:
    """(flag, absolute path) for every path-valued flag, list values included."""
    found = []
    for arg in command[1:]:
        name = _flag_name(arg)
        if name and "=" in arg:
            found.extend((name, value) for value in arg.split("=", 1)[1].split(",") if value.startswith("/"))
    return found


def is_mounted(path: str, mount_paths) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mount_paths)


def volume_name(directory: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", directory.lower()).strip("-")
    name = f"kubeharden-{slug}"
    if len(name) > 63:  # a DNS label
        name = name[:54] + "-" + hashlib.sha256(directory.encode()).hexdigest()[:8]
    return name


def ensure_mounts(pod, command: list[str], explicit: list[dict]) -> list[str]:
    """Add hostPath volumes: the explicit ones, then each flag path's directory that no mount covers."""
    container = container_of(pod)
    spec = pod["spec"]
    added = []
    wanted = [dict(v) for v in explicit]
    covered = set(mounts(pod)) | {v["path"].rstrip("/") for v in wanted}
    for flag, path in flag_paths(command):
        if not is_mounted(path, covered):
            directory = path.rsplit("/", 1)[0] or "/"
            wanted.append({"path": directory, "read_only": flag not in WRITABLE_PATH_FLAGS})
            covered.add(directory)
    existing = mounts(pod)
    for volume in wanted:
        path = volume["path"].rstrip("/") or "/"
        if path in existing:
            _name, _volume, mount = existing[path]
            read_only = volume.get("read_only", True)
            if bool(mount.get("readOnly")) != read_only:
                if read_only:
                    mount["readOnly"] = True
                else:
                    mount.pop("readOnly", None)
                added.append(path)
            continue
        name = volume.get("name") or volume_name(path)
        spec.setdefault("volumes", []).append(
            {"hostPath": {"path": path, "type": volume.get("type", "DirectoryOrCreate")}, "name": name})
        mount = {"mountPath": path, "name": name}
        if volume.get("read_only", True):
            mount["readOnly"] = True
        container.setdefault("volumeMounts", []).append(mount)
        added.append(path)
    if added:  # only then: the order kubeadm wrote (it sorts its own way at each upgrade) is not a change
        spec["volumes"] = sorted(spec.get("volumes") or [], key=lambda v: v["name"])
        container["volumeMounts"] = sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"])
    return added


def apply(pod, component: str, flags: dict, list_items: dict, volumes: list[dict],
          version: tuple[int, int] | None) -> list[str]:
    """Change `pod` in place; return the mount paths added or changed."""
    container = container_of(pod)
    if version is not None:
        check_flag_facts(component, flags, list_items, version)
    command = set_flags(list(container["command"]), flags)
    command = edit_list_items(command, list_items)
    container["command"] = command
    return ensure_mounts(pod, command, volumes)
