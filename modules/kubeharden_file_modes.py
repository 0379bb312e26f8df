#!/usr/bin/python
"""Tighten modes and owners of many files in one call; optionally scan system paths for risky files."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_file_modes
short_description: Make files at most as permissive as allowed, and owned as required
description:
  - For each entry, removes the permission bits C(mode_max) does not allow (a file that is already stricter
    stays stricter, since this module never widens a mode) and sets the owner and group when given.
  - Missing files are reported in C(missing), not created.
  - A symbolic link is refused unless its entry sets C(follow), which acts on the link's target.
  - With C(scan_roots), also lists set-uid/set-gid files not in C(suid_allowed) and world-writable files
    (not directories with the sticky bit) under those roots, staying on their file systems. The scan is cached
    in C(scan_cache) and redone only when the cache is older than C(scan_max_age) hours, when the package
    database changed since, or when the roots or the allow-list changed; never a full find on every run.
version_added: "0.1.0"
options:
  files:
    description:
      - Entries with C(path), C(mode_max) (octal string), and optional C(owner), C(group), C(follow).
      - C(paths) (a list) instead of C(path) gives several files the same limits.
      - A path with a wildcard (C(*), C(?), C([)) stands for the files it matches now; one that matches
        nothing is not reported as missing (unit drop-in directories are often empty).
    type: list
    elements: dict
    default: []
  scan_roots:
    description: Directories to scan for set-uid/set-gid and world-writable files; empty means no scan.
    type: list
    elements: path
    default: []
  suid_allowed:
    description: Set-uid/set-gid files that are expected (reported only when absent from this list).
    type: list
    elements: path
    default: []
  scan_cache:
    description: Where the scan's result is cached.
    type: path
    default: /var/cache/kubeharden/file-scan.json
  scan_max_age:
    description: Hours after which the cached scan is redone.
    type: int
    default: 24
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Restrict the shadow file and cron directories
  kubeharden_file_modes:
    files:
      - {path: /etc/shadow, mode_max: "0640", owner: root, group: shadow}
      - {path: /etc/cron.d, mode_max: "0700", owner: root, group: root}
"""

RETURN = r"""
changed_files:
  description: Paths whose mode or owner changed (or would change in check mode).
  returned: always
  type: list
missing:
  description: Paths that do not exist on this node.
  returned: always
  type: list
unexpected_suid:
  description: Set-uid/set-gid files under scan_roots that are not in suid_allowed.
  returned: when scan_roots is set
  type: list
world_writable:
  description: World-writable files (and non-sticky directories) under scan_roots.
  returned: when scan_roots is set
  type: list
scan_cached:
  description: Whether the scan result came from the cache.
  returned: when scan_roots is set
  type: bool
"""

import glob
import grp
import hashlib
import json
import os
import pwd
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import atomic_write
from ansible.module_utils.kubeharden_os import tightened_mode

DPKG_STATUS = "/var/lib/dpkg/status"


def describe(mode: int, uid: int, gid: int) -> str:
    def name(lookup, number):
        try:
            return lookup(number)[0]
        except KeyError:
            return str(number)
    return f"{mode:04o} {name(pwd.getpwuid, uid)}:{name(grp.getgrgid, gid)}"


def scan(roots: list[str], allowed: set[str]) -> dict:
    suid, writable = [], []
    for root in roots:
        if not os.path.isdir(root):
            continue
        device = os.lstat(root).st_dev
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = [d for d in subdirs if os.lstat(os.path.join(directory, d)).st_dev == device]
            for name in files + subdirs:
                path = os.path.join(directory, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISLNK(info.st_mode):
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID) and path not in allowed:
                    suid.append(path)
                if info.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
                    writable.append(path)
    return {"unexpected_suid": sorted(set(suid)), "world_writable": sorted(set(writable))}


def cached_scan(p: dict, write: bool) -> tuple[dict, bool]:
    key = hashlib.sha256(json.dumps([sorted(p["scan_roots"]), sorted(p["suid_allowed"]),
                                     os.stat(DPKG_STATUS).st_mtime if os.path.exists(DPKG_STATUS) else 0])
                         .encode()).hexdigest()
    try:
        with open(p["scan_cache"]) as handle:
            cache = json.load(handle)
        if cache.get("key") == key and time.time() - cache.get("time", 0) < p["scan_max_age"] * 3600:
            return cache["result"], True
    except (OSError, ValueError):
        pass
    result = scan(p["scan_roots"], set(p["suid_allowed"]))
    if not write:
        return result, False
    os.makedirs(os.path.dirname(p["scan_cache"]), mode=0o700, exist_ok=True)
    atomic_write(p["scan_cache"], json.dumps({"key": key, "time": time.time(), "result": result}), mode=0o600)
    return result, False


def matching_paths(path):
    if isinstance(path, str) and os.path.isabs(path) and glob.has_magic(path):
        return sorted(glob.glob(path))
    return [path]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "default": []},
            "scan_roots": {"type": "list", "elements": "path", "default": []},
            "suid_allowed": {"type": "list", "elements": "path", "default": []},
            "scan_cache": {"type": "path", "default": "/var/cache/kubeharden/file-scan.json"},
            "scan_max_age": {"type": "int", "default": 24},
        },
        supports_check_mode=True,
    )
    p = module.params
    plan = []
    # An entry with `paths` stands for one entry per path with the same mode, owner and group; an absolute
    # path with a wildcard for one entry per file it matches.
    entries = [{**{k: v for k, v in entry.items() if k != "paths"}, "path": match}
               for entry in p["files"] for path in (entry["paths"] if "paths" in entry else [entry.get("path")])
               for match in matching_paths(path)]
    for entry in entries:
        path, mode_max = entry.get("path"), str(entry.get("mode_max", ""))
        unknown = set(entry) - {"path", "mode_max", "owner", "group", "follow"}
        if not path or not isinstance(path, str) or not os.path.isabs(path) or unknown:
            module.fail_json(msg=f"files entry {entry!r}: needs an absolute path (or paths), mode_max, optional "
                                 "owner, group, follow")
        try:
            limit = int(mode_max, 8)
            if not 0 <= limit <= 0o7777:
                raise ValueError
        except ValueError:
            module.fail_json(msg=f"files entry {path}: mode_max {mode_max!r} is not an octal mode like 0640")
        try:
            uid = pwd.getpwnam(entry["owner"]).pw_uid if entry.get("owner") else None
            gid = grp.getgrnam(entry["group"]).gr_gid if entry.get("group") else None
        except KeyError as exc:
            module.fail_json(msg=f"files entry {path}: no such user or group {exc.args[0]!r} on this node")
        plan.append((os.path.realpath(path) if entry.get("follow") else path, limit, uid, gid))

    result = {"changed": False, "changed_files": [], "missing": []}
    before_lines, after_lines = [], []
    for path, limit, uid, gid in plan:
        if not os.path.lexists(path):
            result["missing"].append(path)
            continue
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            module.fail_json(msg=f"{path} is a symbolic link; name its target instead")
        mode = stat.S_IMODE(info.st_mode)
        new_mode = tightened_mode(mode, limit)
        new_uid = info.st_uid if uid is None else uid
        new_gid = info.st_gid if gid is None else gid
        if (new_mode, new_uid, new_gid) == (mode, info.st_uid, info.st_gid):
            continue
        result["changed_files"].append(path)
        before_lines.append(f"{path} {describe(mode, info.st_uid, info.st_gid)}")
        after_lines.append(f"{path} {describe(new_mode, new_uid, new_gid)}")
        if not module.check_mode:
            os.chown(path, new_uid, new_gid)
            os.chmod(path, new_mode)  # after chown, which clears set-id bits
    if result["changed_files"]:
        result["changed"] = True
        result["diff"] = {"before": "\n".join(before_lines) + "\n", "after": "\n".join(after_lines) + "\n"}

    if p["scan_roots"]:
        findings, cached = cached_scan(p, write=not module.check_mode)
        result.update(findings, scan_cached=cached)
        for path in result["unexpected_suid"][:20]:
            module.warn(f"set-uid/set-gid file not in node_os_suid_allowed: {path}")
        for path in result["world_writable"][:20]:
            module.warn(f"world-writable: {path}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
