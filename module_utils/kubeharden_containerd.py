"""containerd 2.x as it really runs: its effective configuration (what `containerd config dump` prints, imports and
the migration of older versions applied), its registry hosts files, and the TOML kubeharden writes.

One reading serves the container_runtime role (which refuses to write a configuration that breaks a rule below)
and the audit's KH-CRI controls (which judge the same effective configuration), so both read containerd alike.
Runs on the node: the standard library (tomllib, Python 3.11 and later) and kubeharden_node's one way to run a
command.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import re

from ansible.module_utils.kubeharden_node import run

try:
    import tomllib
except ImportError:  # Python before 3.11: reported by the callers, which name the node's Python
    tomllib = None

CONFIG = "/etc/containerd/config.toml"
CERTS_DIR = "/etc/containerd/certs.d"
# containerd 2.x configuration sections, as the effective (version 4) configuration names them.
CRI_RUNTIME = "io.containerd.cri.v1.runtime"
CRI_IMAGES = "io.containerd.cri.v1.images"
CRI_SERVER = "io.containerd.grpc.v1.cri"
DEBUG = "io.containerd.server.v1.debug"
METRICS = "io.containerd.server.v1.metrics"
GRPC = "io.containerd.server.v1.grpc"
GRPC_TCP = "io.containerd.server.v1.grpc-tcp"
# The header that records which settings kubeharden wrote: one of them changed by hand is drift to repair; the
# same key set by the operator to another value is a contradiction to name.
MANAGED_PREFIX = "# kubeharden manages: "
UNKNOWN_KEY = re.compile(r'msg="Ignoring unknown key in TOML[^"]*".*?key=(\S+) plugin=(\S+)')


class ConfigError(Exception):
    """containerd refused a configuration, or a file it reads is malformed; the message quotes the reason."""


def containerd_binary() -> str | None:
    for directory in ("/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin", "/opt/bin"):
        candidate = os.path.join(directory, "containerd")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def parse(text: str, source: str) -> dict:
    if tomllib is None:
        raise ConfigError("reading TOML needs Python 3.11 or later on the node (tomllib)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


def effective(config_path: str = CONFIG, binary: str | None = None,
              timeout: int = 30) -> tuple[dict, list[tuple[str, str]]]:
    """containerd's own reading of `config_path` (`containerd --config PATH config dump`) and the keys it ignores
    as unknown, as (plugin, key). Raises ConfigError with containerd's message when it refuses the file."""
    binary = binary or containerd_binary()
    if binary is None:
        raise FileNotFoundError("containerd is not installed (no containerd binary in /usr/local/bin or /usr/bin)")
    done = run([binary, "--config", config_path, "config", "dump"], timeout=timeout)
    if done.returncode != 0:
        reason = [line for line in done.stderr.splitlines() if line.startswith("containerd:")] or \
            done.stderr.strip().splitlines()[-1:]
        raise ConfigError(f"containerd refuses {config_path}: {' '.join(reason).strip()}")
    unknown = [(plugin_name.strip('"'), key.strip('"')) for key, plugin_name in UNKNOWN_KEY.findall(done.stderr)]
    return parse(done.stdout, f"containerd config dump of {config_path}"), unknown


def dig(document: dict, path: list[str]):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


def plugin(config: dict, name: str) -> dict:
    return (config.get("plugins") or {}).get(name) or {}


# -- the rules a hardened containerd keeps (the role refuses to write what breaks one; the audit judges them) --

def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_problems(config: dict) -> list[str]:
    """Listeners beyond the CRI socket: debug only on a unix socket, metrics only on loopback, no plain gRPC on
    TCP, streaming (exec, attach, port-forward) only on loopback."""
    problems = []
    debug = plugin(config, DEBUG).get("address") or ""
    if debug and not debug.startswith("/"):
        problems.append(f"{DEBUG} address {debug!r} is not a unix socket (the debug API has no authentication)")
    metrics = plugin(config, METRICS).get("address") or ""
    if metrics and not _loopback(metrics):
        problems.append(f"{METRICS} address {metrics!r} is not on loopback")
    tcp = plugin(config, GRPC_TCP)
    if tcp.get("address") and not (tcp.get("tls_cert") and tcp.get("tls_key")):
        problems.append(f"{GRPC_TCP} address {tcp['address']!r} serves containerd's API on TCP without TLS")
    cri = plugin(config, CRI_SERVER)
    stream = cri.get("stream_server_address") or ""
    if not cri.get("disable_tcp_service", True):
        problems.append(f"{CRI_SERVER} disable_tcp_service is false (the CRI on TCP, unauthenticated)")
    if stream and not _loopback(stream):
        problems.append(f"{CRI_SERVER} stream_server_address {stream!r} is not on loopback")
    return problems


def registry_problems(config: dict, certs_dir: str | None = None) -> list[str]:
    """Registries only through config_path's hosts.toml files, over HTTPS, verified: the legacy in-line mirrors
    and auths, `skip_verify = true` and plain-HTTP hosts are named."""
    problems = []
    registry = plugin(config, CRI_IMAGES).get("registry") or {}
    for legacy in ("mirrors", "configs", "auths", "headers"):
        if registry.get(legacy):
            problems.append(f"{CRI_IMAGES} registry.{legacy} is set (deprecated in-line registry settings: use "
                            "config_path and hosts.toml)")
    directories = certs_dir or registry.get("config_path") or ""
    for directory in [d for d in directories.split(":") if d]:
        for path in sorted(glob.glob(os.path.join(directory, "*", "hosts.toml"))):
            try:
                with open(path, encoding="utf-8") as handle:
                    hosts = parse(handle.read(), path)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
                continue
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            entries = [("server", {"url": hosts["server"], **hosts})] if isinstance(hosts.get("server"), str) else []
            entries += [(f"host {url}", {"url": url, **settings})
                        for url, settings in (hosts.get("host") or {}).items() if isinstance(settings, dict)]
            for what, entry in entries:
                if str(entry["url"]).startswith("http://"):
                    problems.append(f"{path}: {what} is plain HTTP")
                if entry.get("skip_verify") is True:
                    problems.append(f"{path}: {what} sets skip_verify = true (TLS not verified)")
                problems += [f"{path}: {what} names {key} {file}, which does not exist (every pull would fail TLS)"
                             for key, file in _tls_files(entry) if not os.path.isfile(file)]
    return problems


def _tls_files(entry: dict) -> list[tuple[str, str]]:
    """The CA and client certificate files a hosts.toml entry names (`ca`, `client`: a path, a list, or pairs)."""
    files = []
    for key in ("ca", "client"):
        value = entry.get(key)
        for item in value if isinstance(value, list) else [value] if value else []:
            files += [(key, str(part)) for part in (item if isinstance(item, list) else [item])]
    return files


# -- the file kubeharden writes ---------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else "'" + key + "'" if "'" not in key else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) in TOML")


def toml_text(document: dict, header: str = "") -> str:
    """TOML for containerd's configuration: scalars and lists first, then one table per mapping, nested in order.
    Comments of the file it replaces are not kept (the backup has them)."""
    lines = [header] if header else []

    def table(data: dict, path: list[str], level: int) -> None:
        """`level`: how many enclosing tables have a header of their own (each indents its content)."""
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in data.items() if isinstance(v, dict)}
        headed = bool(path) and bool(scalars or not tables)
        indent = "  " * max(level - 1, 0)
        if headed:
            lines.append("")
            lines.append(f"{indent}[{'.'.join(map(_key, path))}]")
        for key, value in scalars.items():
            lines.append(f"{indent}{'  ' if path else ''}{_key(key)} = {_value(value)}")
        for key, value in tables.items():
            table(value, [*path, key], level + (1 if headed or not path else 0))

    table(document, [], 0)
    return "\n".join(lines).lstrip("\n") + "\n"


_HEADER_LINE = re.compile(r"^\s*\[(?!\[)(.+?)\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"^(\s*)((?:[A-Za-z0-9_-]+|'[^']*'|\"(?:[^\"\\]|\\.)*\"))\s*=")


def _key_path(text: str) -> tuple[str, ...] | None:
    """A dotted TOML key ("plugins.'io.containerd.cri.v1.runtime'") as its parts; None when it is not simple."""
    parts, rest = [], text.strip()
    while rest:
        match = re.match(r"([A-Za-z0-9_-]+|'[^']*'|\"(?:[^\"\\]|\\.)*\")\s*(\.\s*|$)", rest)
        if not match:
            return None
        token = match.group(1)
        parts.append(json.loads(token) if token.startswith('"') else token.strip("'"))
        rest = rest[match.end():]
    return tuple(parts)


def edited_text(text: str, settings: dict, header: str) -> str | None:
    """`text` with each setting's line set in place (comments and layout kept), `header` first; None when a
    setting's place cannot be found line by line (the caller writes the whole file instead)."""
    ours = header.splitlines()
    lines = [line for line in text.splitlines() if not line.startswith(MANAGED_PREFIX) and line not in ours]
    for path in leaf_paths(settings):
        table, key, value = path[:-1], path[-1], dig(settings, list(path))
        sections = [i for i, line in enumerate(lines)
                    if (m := _HEADER_LINE.match(line)) and _key_path(m.group(1)) == table]
        if not sections:
            lines += ["", f"[{path_text(table)}]", f"  {_key(key)} = {_value(value)}"]
            continue
        start = sections[0]
        end = next((i for i in range(start + 1, len(lines)) if _HEADER_LINE.match(lines[i])), len(lines))
        found = None
        for i in range(start + 1, end):
            match = _KEY_LINE.match(lines[i])
            if match and _key_path(match.group(2)) == (key,):
                found = i
                break
        indent = next((m.group(1) for i in range(start + 1, end) if (m := _KEY_LINE.match(lines[i]))),
                      re.match(r"\s*", lines[start]).group(0) + "  ")
        if found is not None:
            lines[found] = f"{_KEY_LINE.match(lines[found]).group(1)}{_key(key)} = {_value(value)}"
        else:
            last = max([i for i in range(start, end) if lines[i].strip()], default=start)
            lines.insert(last + 1, f"{indent}{_key(key)} = {_value(value)}")
    return "\n".join([*header.splitlines(), *lines]).rstrip("\n") + "\n"


def written_text(text: str, current: dict, settings: dict, header: str) -> str:
    """The new file: `text` edited in place when that reads back as the merged configuration, else the whole
    configuration written anew (comments lost; the backup keeps them)."""
    wanted = merged(current, settings)
    edited = edited_text(text, settings, header) if text.strip() else None
    if edited is not None:
        try:
            if parse(edited, "the edited configuration") == wanted:
                return edited
        except ConfigError:
            pass
    return toml_text(wanted, header)


def leaf_paths(settings: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, value in settings.items():
        paths.extend(leaf_paths(value, (*prefix, key)) if isinstance(value, dict) and value else [(*prefix, key)])
    return paths


def path_text(path: tuple[str, ...]) -> str:
    return ".".join(_key(part) for part in path)


def managed(text: str) -> set[str]:
    """The settings a file's kubeharden header says kubeharden wrote."""
    for line in text.splitlines():
        if line.startswith(MANAGED_PREFIX):
            return {part.strip() for part in line[len(MANAGED_PREFIX):].split(",") if part.strip()}
    return set()


def contradictions(current: dict, settings: dict, managed_paths: set[str]) -> list[str]:
    """The operator's own settings (not in kubeharden's header) that differ from a hardening value."""
    found = []
    for path in leaf_paths(settings):
        value, wanted = dig(current, list(path)), dig(settings, list(path))
        if value is not None and value != wanted and path_text(path) not in managed_paths:
            found.append(f"{path_text(path)} = {_value(value)} (kubeharden sets {_value(wanted)})")
    return found


def merged(current: dict, settings: dict) -> dict:
    result = dict(current)
    for key, value in settings.items():
        result[key] = merged(result.get(key) or {}, value) if isinstance(value, dict) else value
    return result
