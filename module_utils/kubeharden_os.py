"""Text transformations behind node_os's modules: pure functions, unit-tested without a node.

Each one takes a file's current text and returns the text it should have, so a module can diff, back up
and write atomically, and a malformed input is reported before anything is written.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter

# -- sysctl ------------------------------------------------------------------------------------------------

SYSCTL_KEY = re.compile(r"^[a-z0-9_][a-z0-9_.\-*/]*$")


def sysctl_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return " ".join(str(value).split())


def render_sysctl(settings: dict, header: str) -> str:
    lines = [f"# {header}"]
    lines += [f"{key} = {sysctl_value(value)}" for key, value in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def sysctl_overrides(settings: dict, persisted: dict, own_path: str) -> list[str]:
    """Keys whose boot-time value comes from another file than `own_path`, with a different value."""
    found = []
    for key, value in sorted(settings.items()):
        effective, path = persisted.get(key, (None, None))
        if path and path != own_path and effective != sysctl_value(value):
            found.append(f"{key} = {effective} in {path}")
    return found


# -- key/value configuration files (login.defs, /etc/default/useradd, pwquality.conf, faillock.conf) --------

STYLES = {
    "space": ("{key} {value}", r"^\s*{key}\s+(?P<value>.*?)\s*$"),
    "equals": ("{key}={value}", r"^\s*{key}\s*=\s*(?P<value>.*?)\s*$"),
    "spaced_equals": ("{key} = {value}", r"^\s*{key}\s*=\s*(?P<value>.*?)\s*$"),
}
COMMENTED = r"^\s*#\s*{key}(\s|=|$)"


def config_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def set_config_keys(text: str, settings: dict, style: str, tag: str = "kubeharden") -> str:
    """Set each key once: the first active line is rewritten in place (later duplicates are commented out, as
    readers differ on which one wins); a missing key replaces its commented example, else it is appended.
    A value of None removes the key (its active lines are commented out)."""
    line_format, active_pattern = STYLES[style]
    lines = text.splitlines()
    appended = []
    for key, value in settings.items():
        active = re.compile(active_pattern.format(key=re.escape(key)))
        wanted = None if value is None else line_format.format(key=key, value=config_value(value))
        seen = False
        for index, line in enumerate(lines):
            match = active.match(line)
            if not match:
                continue
            if wanted is None or seen:
                lines[index] = f"# {line.strip()}  # disabled by {tag}"
            else:
                if match.group("value") != config_value(value):  # same value, other spacing: keep the line
                    lines[index] = wanted
                seen = True
        if seen or wanted is None:
            continue
        example = re.compile(COMMENTED.format(key=re.escape(key)))
        spot = next((i for i, line in enumerate(lines) if example.match(line)), None)
        if spot is None:
            appended.append(wanted)
        else:
            lines.insert(spot + 1, wanted)
    if appended:
        lines += [f"# Set by {tag}", *appended]
    return "\n".join(lines) + "\n"


def config_keys(text: str, style: str) -> dict[str, str]:
    """The active key -> value pairs of a key/value file, as login.defs, pwquality and faillock read theirs: comments
    and blank lines skipped, the last line of a key wins, a key alone on its line (faillock's `even_deny_root`) is a
    flag with the value ""."""
    values = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if style == "space":
            parts = stripped.split(None, 1)
            values[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
        elif "=" in stripped:
            key, value = stripped.split("=", 1)
            values[key.strip()] = value.strip()
        else:
            values[stripped] = ""
    return values


# -- file modes --------------------------------------------------------------------------------------------

def tightened_mode(current: int, mode_max: int) -> int:
    """Remove the permission bits `mode_max` does not allow; never add any (a stricter file stays stricter)."""
    return current & ~(0o7777 & ~mode_max)


# -- fstab -------------------------------------------------------------------------------------------------

def fstab_add_options(text: str, mountpoint: str, options: list[str]) -> tuple[str, bool]:
    """Add `options` to the fstab entry of `mountpoint`; returns (text, whether the mount point has an entry)."""
    lines = text.splitlines()
    found = False
    for index, line in enumerate(lines):
        fields = line.split()
        if len(fields) < 4 or fields[0].startswith("#") or fields[1] != mountpoint:
            continue
        found = True
        current = [option for option in fields[3].split(",") if option and option != "defaults"]
        missing = [option for option in options if option not in current]
        if missing:
            replacement = ",".join(current + missing) if current else ",".join(["defaults", *missing])
            start = line.index(fields[3], line.index(fields[1]) + len(fields[1]))
            lines[index] = line[:start] + replacement + line[start + len(fields[3]):]
    return "\n".join(lines) + ("\n" if lines else ""), found


def fstab_comment_swap(text: str, tag: str = "kubeharden") -> str:
    """Comment out every swap entry (the kubelet refuses to run with swap on)."""
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "swap":
            line = f"# {line}  # swap off for the kubelet ({tag})"
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


# -- audit rules -------------------------------------------------------------------------------------------

AUDIT_PERMS = set("rwxa")
AUDIT_ACTIONS = {"always", "never"}
AUDIT_LISTS = {"task", "exit", "user", "exclude", "filesystem", "io_uring"}
AUDIT_FIELD = re.compile(r"^[a-z_0-9]+(=|!=|<=|>=|<|>|&=|&)\S+$")
AUDIT_CONTROL = {"-D", "-b", "-f", "-e", "-r", "--backlog_wait_time", "--reset-lost", "--loginuid-immutable",
                 "-i", "-c"}


def audit_rule_error(rule: str, syscalls: set[str] | None) -> str | None:
    """Why auditctl would reject `rule`, or None. `syscalls` is the architecture's table (ausyscall --dump)."""
    try:
        words = shlex.split(rule)
    except ValueError as exc:
        return f"cannot be split into words: {exc}"
    if not words:
        return None
    if words[0] in AUDIT_CONTROL:
        if words[0] in {"-b", "-f", "-e", "-r", "--backlog_wait_time"}:
            if len(words) != 2 or not words[1].isdigit():
                return f"{words[0]} takes one number"
            if words[0] == "-e" and words[1] not in {"0", "1", "2"}:
                return "-e takes 0, 1 or 2"
            if words[0] == "-f" and words[1] not in {"0", "1", "2"}:
                return "-f takes 0, 1 or 2"
        return None
    index = 0
    has_target = False
    while index < len(words):
        option = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        if option in {"-w", "-W"}:
            if not value or not value.startswith("/"):
                return f"{option} needs an absolute path"
            has_target = True
        elif option == "-p":
            if not value or not set(value) <= AUDIT_PERMS:
                return "-p takes a combination of r, w, x and a"
        elif option in {"-a", "-A"}:
            parts = set((value or "").split(","))
            if len(parts) != 2 or not (parts & AUDIT_ACTIONS) or not (parts & AUDIT_LISTS):
                return f"{option} takes action,list (always|never and exit|task|user|exclude|filesystem)"
            has_target = True
        elif option == "-S":
            for name in (value or "").split(","):
                if not name or (syscalls is not None and name != "all" and name not in syscalls
                                and not name.isdigit()):
                    return f"unknown system call {name!r} on this architecture"
        elif option in {"-F", "-C"}:
            if not value or not AUDIT_FIELD.match(value):
                return f"{option} takes field<op>value, got {value!r}"
        elif option == "-k":
            if not value or len(value) > 31:
                return "-k takes a key of 1 to 31 characters"
        else:
            return f"unknown option {option}"
        index += 2
    return None if has_target else "a rule needs -w PATH or -a action,list"


def audit_rule_directory(rule: str) -> str | None:
    """The directory that must exist for the kernel to accept `rule`: the parent of a watch or of a path= field,
    or a dir= field."""
    words = rule.split()
    for index, word in enumerate(words[:-1]):
        if word == "-w" or (word == "-F" and words[index + 1].startswith("path=")):
            path = words[index + 1].removeprefix("path=")
            return path.rstrip("/").rsplit("/", 1)[0] or "/"
        if word == "-F" and words[index + 1].startswith("dir="):
            return words[index + 1][len("dir="):]
    return None


# -- local accounts (CIS Debian 12 5.4.2, 7.2) -------------------------------------------------------------

NO_LOGIN_SHELLS = {"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"}
# Debian's accounts whose shell is a command, not a login shell, or whose primary group is root by design.
SPECIAL_ACCOUNTS = {"root", "sync", "shutdown", "halt", "operator"}
ACCOUNT_ASPECTS = ("uid0", "gid0_users", "gid0_groups", "root_access", "system_shells", "locked_without_shell",
                   "shadowed", "empty_passwords", "missing_groups", "shadow_group", "duplicate_uids",
                   "duplicate_gids", "duplicate_users", "duplicate_groups", "future_password_change")


def _entries(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.startswith(("#", "+", "-")):
            row = line.split(":")
            rows.append(row + [""] * (fields - len(row)))
    return rows


def _duplicates(values: list[str]) -> list[str]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


def account_offenders(aspect: str, passwd: str, group: str, shadow: str, today: int) -> list[str]:
    """What offends one CIS account rule, from the texts of /etc/passwd, /etc/group and /etc/shadow (`today`:
    days since the epoch). An empty list passes."""
    users, groups, shadows = _entries(passwd, 7), _entries(group, 4), {row[0]: row for row in _entries(shadow, 9)}
    gids = {row[2] for row in groups}
    if aspect == "uid0":
        return [row[0] for row in users if row[2] == "0" and row[0] != "root"]
    if aspect == "gid0_users":
        return [row[0] for row in users if row[3] == "0" and row[0] not in SPECIAL_ACCOUNTS]
    if aspect == "gid0_groups":
        return [row[0] for row in groups if row[2] == "0" and row[0] != "root"]
    if aspect == "root_access":
        return ["root: empty password"] if shadows.get("root", ["root", ""])[1] == "" else []
    if aspect == "system_shells":
        return [f"{row[0]} ({row[6]})" for row in users if row[0] not in SPECIAL_ACCOUNTS and row[2].isdigit()
                and int(row[2]) < 1000 and row[6] not in NO_LOGIN_SHELLS]
    if aspect == "locked_without_shell":
        return [row[0] for row in users if row[0] != "root" and row[6] in NO_LOGIN_SHELLS
                and not shadows.get(row[0], ["", "!"])[1].startswith(("!", "*"))]
    if aspect == "shadowed":
        return [row[0] for row in users if row[1] != "x"]
    if aspect == "empty_passwords":
        return [name for name, row in shadows.items() if row[1] == ""]
    if aspect == "missing_groups":
        return [f"{row[0]} (gid {row[3]})" for row in users if row[3] not in gids]
    if aspect == "shadow_group":
        shadow_rows = [row for row in groups if row[0] == "shadow"]
        members = [m for row in shadow_rows for m in row[3].split(",") if m]
        primary = [row[0] for row in users for g in shadow_rows if row[3] == g[2]]
        return [f"member {m}" for m in members] + [f"primary group of {u}" for u in primary]
    if aspect == "duplicate_uids":
        return _duplicates([row[2] for row in users])
    if aspect == "duplicate_gids":
        return _duplicates([row[2] for row in groups])
    if aspect == "duplicate_users":
        return _duplicates([row[0] for row in users])
    if aspect == "duplicate_groups":
        return _duplicates([row[0] for row in groups])
    if aspect == "future_password_change":
        return [name for name, row in shadows.items() if row[2].isdigit() and int(row[2]) > today]
    raise ValueError(f"unknown account aspect {aspect!r}")


# -- sshd --------------------------------------------------------------------------------------------------

def sshd_word(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


def render_sshd(settings: dict, header: str) -> str:
    """A drop-in: sshd keeps the first value it reads, so this file is read before everything else."""
    lines = [f"# {header}"]
    for key, value in settings.items():
        if value is None or value == [] or value == "":
            continue
        if key.lower() in {"ciphers", "macs", "kexalgorithms", "hostkeyalgorithms", "pubkeyacceptedalgorithms"}:
            value = ",".join(value) if isinstance(value, (list, tuple)) else value
        lines.append(f"{key} {sshd_word(value)}")
    return "\n".join(lines) + "\n"


def parse_sshd_t(text: str) -> dict[str, str]:
    """`sshd -T` output: one `key value` per line, keys lower-case; repeated keys (e.g. hostkey) are joined."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if not parts:
            continue
        key, value = parts[0].lower(), parts[1] if len(parts) > 1 else ""
        values[key] = f"{values[key]} {value}" if key in values else value
    return values


def supported_algorithms(preferred: list[str], supported: set[str]) -> list[str]:
    """The preferred algorithms this OpenSSH offers, in preference order."""
    return [name for name in preferred if name in supported]


def lockout_reasons(effective: dict[str, str], user: str, groups: list[str], password: bool) -> list[str]:
    """Why the connecting user could not log in again under `effective` (sshd -T -C user=...)."""
    reasons = []
    if user == "root":
        permit = effective.get("permitrootlogin", "")
        if permit == "no" or (password and permit in {"prohibit-password", "without-password",
                                                      "forced-commands-only"}):
            reasons.append(f"the play connects as root and PermitRootLogin would be {permit}")
    if password and effective.get("passwordauthentication") == "no" \
            and effective.get("kbdinteractiveauthentication") != "yes":
        reasons.append("the play logs in with a password and PasswordAuthentication would be no")
    if not password and effective.get("pubkeyauthentication") == "no":
        reasons.append("the play logs in with a key and PubkeyAuthentication would be no")
    allow_users = effective.get("allowusers", "").split()
    if allow_users and not any(entry.split("@", 1)[0] in {user, "*"} for entry in allow_users):
        reasons.append(f"AllowUsers would be {' '.join(allow_users)}, without {user}")
    allow_groups = effective.get("allowgroups", "").split()
    if allow_groups and not set(allow_groups) & set(groups) and "*" not in allow_groups:
        reasons.append(f"AllowGroups would be {' '.join(allow_groups)}; {user} is in {' '.join(groups) or 'none'}")
    if user in effective.get("denyusers", "").split():
        reasons.append(f"DenyUsers would list {user}")
    denied = set(effective.get("denygroups", "").split()) & set(groups)
    if denied:
        reasons.append(f"DenyGroups would list {' '.join(sorted(denied))}, a group of {user}")
    return reasons
