"""Readers of the node's operating system: files and their modes, sysctls, kernel modules, sshd, key/value
files, packages, services, mounts, swap, accounts, audit rules and nftables."""

from __future__ import annotations

import glob
import os
import re
import time

from ansible.module_utils import kubeharden_comparisons as comparisons
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_os as os_logic
from ansible.module_utils import kubeharden_views as views

Observation = comparisons.Observation


def read_file(check: dict, state: views.Node) -> Observation:
    """Mode and owner of a file, or of every file under a directory (`recursive`), against the maxima."""
    path = views.resolve_path(check, state)
    patterns = path if isinstance(path, list) else [path]
    paths: list[str] = []
    for pattern in patterns:  # globs allowed; merged-/usr aliases (/lib -> /usr/lib) count once
        for candidate in sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]:
            if os.path.lexists(candidate) and os.path.realpath(candidate) not in map(os.path.realpath, paths):
                paths.append(candidate)
    path = ", ".join(patterns)
    if not paths:
        raise node.NotApplicable(f"{path} does not exist")
    facts = []
    for candidate in paths:
        facts.append(node.file_facts(candidate))
        if check.get("recursive") and os.path.isdir(candidate):
            for root, dirs, files in os.walk(candidate):
                facts.extend(node.file_facts(os.path.join(root, n)) for n in sorted(dirs + files))
    offenders = []
    max_mode = int(str(check.get("mode_max", "7777")), 8)  # 7777: any mode
    for fact in facts:
        mode_ok = (fact["is_dir"] and check.get("recursive")) or not fact["mode"] & ~max_mode
        owner_ok = "owner" not in check or f"{fact['owner']}:{fact['group']}" == check["owner"]
        if not (mode_ok and owner_ok):
            offenders.append(f"{fact['path']} {fact['mode']:04o} {fact['owner']}:{fact['group']}")
    summary = f"{facts[0]['mode']:04o} {facts[0]['owner']}:{facts[0]['group']}" if len(facts) == 1 else \
        f"{len(facts)} paths"
    offending = f"; offending: {', '.join(offenders[:5])}" if offenders else ""
    return Observation(offenders, f"{path}: {summary}{offending}")


def read_process_user(check: dict, state: views.Node) -> Observation:
    """The user a daemon runs as (its real uid), whichever way it is started (static pod or service)."""
    import pwd

    running = node.find_processes(check["process"])
    if not running:
        raise node.ReadError(f"no {check['process']} process runs")
    users = []
    for pid, _argv in running:
        uid = int(next(line.split()[1] for line in node.read_text(f"/proc/{pid}/status").splitlines()
                       if line.startswith("Uid:")))
        try:
            users.append(pwd.getpwuid(uid).pw_name)
        except KeyError:
            users.append(str(uid))
    value = "root" if "root" in users else users[0]
    return Observation(value, f"{check['process']} (pid {', '.join(str(p) for p, _a in running)}) runs as "
                              f"{', '.join(users)}")


def read_sysctl(check: dict, state: views.Node) -> Observation:
    """Persisted and live value; judged on both, or on the persisted one where /proc/sys is read-only."""
    key = check["key"]
    persisted, source = state.sysctl_persisted.get(key, (None, None))
    live = node.sysctl_live(key)
    expected = str(check["value"])
    evidence = f"persisted {persisted if persisted is not None else 'nowhere'}" + (f" ({source})" if source else "")
    evidence += f", live {live if live is not None else 'absent (kernel or namespace lacks it)'}"
    if persisted != expected:
        return Observation(persisted, evidence)
    if live is not None and live != expected:
        if state.proc_sys_writable:
            return Observation(f"{persisted} (live {live})", evidence)
        evidence += "; /proc/sys is read-only here (container), so the persisted value is judged"
    return Observation(persisted, evidence)


def read_module(check: dict, state: views.Node) -> Observation:
    module = check["module"].replace("-", "_")
    rule = state.modprobe.get(module, {})
    install = rule.get("install", "")
    if re.search(r"(^|/)(false|true)$", install):
        status = "disabled"
    elif rule.get("blacklist"):
        status = "blacklisted"
    else:
        status = "loadable"
    loaded = " (loaded now)" if module in state.loaded_modules else ""
    return Observation(status, f"{module}: {status}{loaded}" + (f", install {install}" if install else ""))


def read_sshd(check: dict, state: views.Node) -> Observation:
    value = state.sshd.get(check["key"].lower())
    return Observation(value, f"sshd -T: {check['key'].lower()} {value}")


def read_line(check: dict, state: views.Node) -> Observation:
    """The first capture group (or the match) of `pattern` in a file's uncommented lines; files may glob."""
    paths = sorted(glob.glob(check["path"]))
    if not paths:
        if check.get("if_missing"):
            raise node.NotApplicable(check["if_missing"])
        return Observation(None, f"{check['path']} does not exist")
    pattern = re.compile(check["pattern"], re.MULTILINE)
    for path in paths:
        text = "\n".join(line for line in node.read_text(path).splitlines() if not line.lstrip().startswith("#"))
        match = pattern.search(text)
        if match:
            value = match.group(1) if match.groups() else match.group(0)
            return Observation(value.strip(), f"{path}: {match.group(0).strip()}")
    return Observation(None, f"no line matching {check['pattern']!r} in {', '.join(paths)}")


def read_config_key(check: dict, state: views.Node) -> Observation:
    """A key of a key/value file as the program that reads it sees it (kubeharden_os.config_keys, the parser the
    node_os role writes these files with): over every file `path` globs, in order, the last line of a key wins. With
    `keys`, the first of them that is set. A flag alone on its line reads as `present`."""
    paths = sorted(glob.glob(check["path"]))
    if not paths:
        return Observation(None, f"{check['path']} does not exist")
    found: dict[str, tuple[str, str]] = {}
    for path in paths:
        for key, value in os_logic.config_keys(node.read_text(path), check.get("style", "equals")).items():
            found[key] = (value, path)
    for key in check["keys"] if "keys" in check else [check["key"]]:
        if key in found:
            value, path = found[key]
            return Observation(value or "present", f"{path}: {key} {value or '(flag)'}")
    wanted = " or ".join(check["keys"] if "keys" in check else [check["key"]])
    return Observation(None, f"{wanted} not set in {', '.join(paths)}")


def read_package(check: dict, state: views.Node) -> Observation:
    """`installed` when the package (or any of `packages`) is installed, else `absent`."""
    names = check["packages"] if "packages" in check else [check["package"]]
    installed = [name for name in names if state.packages.get(name, "").startswith("ii")]
    return Observation("installed" if installed else "absent",
                       ", ".join(f"{name}: {'installed' if name in installed else 'not installed'}" for name in names))


def read_service(check: dict, state: views.Node) -> Observation:
    units = check["units"] if "units" in check else [check["unit"]]
    states = []
    for unit in units:
        active = node.run(["systemctl", "is-active", unit]).stdout.strip()
        states.append((unit, active))
        if active == "active":
            return Observation("active", f"{unit}: active")
    return Observation("inactive", ", ".join(f"{u}: {s}" for u, s in states))


def read_mount(check: dict, state: views.Node) -> Observation:
    options = node.mount_options(check["mountpoint"])
    if options is None:
        raise node.NotApplicable(f"{check['mountpoint']} is not a separate mount")
    return Observation(options, f"{check['mountpoint']}: {','.join(options)}")


def read_swap(check: dict, state: views.Node) -> Observation:
    active = [line.split()[0] for line in node.read_text("/proc/swaps").splitlines()[1:] if line.strip()]
    fstab = []
    if os.path.exists("/etc/fstab"):
        fstab = [line.split()[0] for line in node.read_text("/etc/fstab").splitlines()
                 if len(line.split()) >= 3 and not line.lstrip().startswith("#") and line.split()[2] == "swap"]
    swaps = active + [f"{entry} (fstab)" for entry in fstab]
    return Observation(swaps, "swap: " + (", ".join(swaps) if swaps else "none active, none in /etc/fstab"))


def read_accounts(check: dict, state: views.Node) -> Observation:
    """The local accounts offending one rule (/etc/passwd, /etc/group, /etc/shadow)."""
    aspect = check["aspect"]
    if aspect not in os_logic.ACCOUNT_ASPECTS:
        raise node.ReadError(f"unknown accounts aspect {aspect!r}")
    offenders = os_logic.account_offenders(aspect, *state.account_files, today=int(time.time() // 86400))
    return Observation(offenders, f"{aspect}: " + (", ".join(offenders) if offenders else "none"))


def read_audit_rule(check: dict, state: views.Node) -> Observation:
    text, files = state.audit_rules
    if not files:
        return Observation(None, "no /etc/audit/rules.d/*.rules")
    match = re.search(check["pattern"], text, re.MULTILINE)
    return Observation(match.group(0) if match else None,
                       f"{match.group(0) if match else 'no rule matching ' + repr(check['pattern'])} "
                       f"({len(files)} rule files)")


def read_nft_table(check: dict, state: views.Node) -> Observation:
    """Whether the table is loaded; with `as_loaded`, whether it still holds exactly what the firewall role
    loaded (its listing is saved when the load is confirmed), so a rule added or deleted by hand shows."""
    result = node.run(["nft", "list", "table", *check["table"].split()])
    present = result.returncode == 0
    if not check.get("as_loaded"):
        return Observation("present" if present else "absent", f"nft table {check['table']}: "
                           + ("present" if present else "absent"))
    try:
        loaded = node.read_text(check["as_loaded"])
    except FileNotFoundError:
        raise node.NotApplicable(f"{check['as_loaded']} is missing: the firewall role has not loaded "
                                 f"{check['table']} on this node") from None
    if not present:
        return Observation("absent", f"nft table {check['table']}: absent")
    if result.stdout == loaded:
        return Observation("as loaded", f"nft table {check['table']}: as loaded ({check['as_loaded']})")
    live_lines, loaded_lines = result.stdout.splitlines(), loaded.splitlines()
    added = [line.strip() for line in live_lines if line not in loaded_lines]
    removed = [line.strip() for line in loaded_lines if line not in live_lines]
    detail = [f"{what}: {' | '.join(lines)}" for what, lines in (("added", added), ("removed", removed)) if lines]
    return Observation("changed", f"nft table {check['table']} differs from what the firewall role loaded: "
                       + ("; ".join(detail) or "order changed"))
