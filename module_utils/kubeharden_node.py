"""What a node really runs: the readers behind kubeharden's controls.

Runs on the node (shipped with kubeharden's modules), so it uses only the standard library and PyYAML.
Every reader answers from the files and processes the node actually uses: static pod manifests parsed as
YAML (never `ps` greps), the kubelet's real --config and --config-dir found through its systemd unit,
drop-ins, environment files and live command line, etcd as a static pod or a host service, sysctls as
persisted and as live.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import re
import shlex
import socket
import stat
import subprocess

try:
    import yaml
except ImportError:  # reported per control by the module, which says how to install it
    yaml = None

MANIFEST_DIR = "/etc/kubernetes/manifests"
SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
                     "/usr/lib/systemd/system", "/lib/systemd/system")
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                 "/lib/modprobe.d")


class ReadError(Exception):
    """A file the control needs is unreadable or malformed: that control's result is `error`."""


class NotApplicable(Exception):
    """What the control inspects does not exist on this node (no CNI config, no separate /tmp, ...)."""


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ReadError(f"cannot read {path}: {exc.strerror}") from None


def load_yaml(path: str):
    return parse_yaml(read_text(path), path)


def parse_yaml(text: str, path: str):
    """YAML from `text` (read from `path`); a syntax error becomes a ReadError naming the file and line."""
    if yaml is None:
        raise ReadError("PyYAML is not installed on the node (Debian/Ubuntu: apt-get install python3-yaml)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ReadError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


# -- command lines ---------------------------------------------------------------------------------------

def parse_flags(args: list[str]) -> dict[str, str]:
    """`--name=value`, `--name value` and bare `--name` (true); the last occurrence wins, as in pflag."""
    flags: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            if not sep:
                following = args[index + 1] if index + 1 < len(args) else None
                if following is not None and not following.startswith("-") and name not in BOOLEAN_FLAGS:
                    value, index = following, index + 1
                else:
                    value = "true"
            flags[name] = value
        index += 1
    return flags


# Flags that take no value when written bare; anything else consumes the next word.
BOOLEAN_FLAGS = frozenset({
    "anonymous-auth", "profiling", "client-cert-auth", "peer-client-cert-auth", "auto-tls", "peer-auto-tls",
    "rotate-certificates", "make-iptables-util-chains", "protect-kernel-defaults", "leader-elect",
    "use-service-account-credentials", "service-account-lookup", "allow-privileged",
    "enable-bootstrap-token-auth", "service-account-extend-token-expiration", "seccomp-default",
})


def find_processes(name: str) -> list[tuple[int, list[str]]]:
    found = []
    for comm_path in glob.glob("/proc/[0-9]*/comm"):
        try:
            if read_text(comm_path).strip() != name:
                continue
            pid = int(comm_path.split("/")[2])
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
        except (OSError, ReadError, ValueError):
            continue
        if argv:
            found.append((pid, argv))
    return sorted(found)


def process_started(pid: int) -> float | None:
    """When a process started, in seconds since the epoch (None when it is gone)."""
    try:
        stat_fields = read_text(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in read_text("/proc/stat").splitlines()
                    if line.startswith("btime "))
    except (OSError, ReadError, IndexError, StopIteration, ValueError):
        return None
    return boot + int(stat_fields[19]) / os.sysconf("SC_CLK_TCK")


class ManifestError(Exception):
    """A static pod manifest that is missing or cannot be read; the message names the file."""


def static_pod_processes(path: str) -> tuple[dict, dict[str, str], list[tuple[int, list[str]]]]:
    """A static pod manifest, the flags of its first container's command, and the processes with that command's
    executable name (each with its argv)."""
    try:
        pod = load_yaml(path)
        command = pod["spec"]["containers"][0]["command"]
    except (FileNotFoundError, NotApplicable) as exc:
        raise ManifestError(f"{path} does not exist") from exc
    except (ReadError, TypeError, KeyError, IndexError) as exc:
        raise ManifestError(f"{path} is not a readable static Pod manifest: {exc}") from exc
    return pod, parse_flags(command[1:]), find_processes(os.path.basename(command[0])[:15])  # comm: 15 characters


def process_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            entries = handle.read().split(b"\0")
    except OSError:
        return {}
    return dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)


def ordered_config_files(directories, pattern: str = "*.conf") -> list[str]:
    """Files as systemd-style readers apply them (sysctl.d, modprobe.d, unit drop-ins): a file name in an
    earlier directory hides the same name in later ones, and the survivors are read in name order."""
    chosen: dict[str, str] = {}
    for directory in directories:
        for path in glob.glob(f"{directory}/{pattern}"):
            chosen.setdefault(os.path.basename(path), path)
    return [chosen[name] for name in sorted(chosen)]


# -- systemd units ---------------------------------------------------------------------------------------

def unit_files(unit: str) -> list[str]:
    """The unit file systemd loads, then its drop-ins in systemd's order."""
    main = next((f"{d}/{unit}" for d in SYSTEMD_UNIT_DIRS if os.path.isfile(f"{d}/{unit}")), None)
    return ([main] if main else []) + ordered_config_files(f"{d}/{unit}.d" for d in SYSTEMD_UNIT_DIRS)


def env_file_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        name, value = line.split("=", 1)
        name = name.strip()
        if name.startswith("export "):
            name = name[7:].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def unit_specifiers(unit: str, text: str) -> str:
    """systemd's specifiers in a unit setting (Debian's etcd.service reads EnvironmentFile=-/etc/default/%p and sets
    ETCD_NAME=%H): %n the unit's name, %N without its type, %p its prefix, %i its instance, %H the host name."""
    name, _dot, _kind = unit.rpartition(".")
    prefix, _at, instance = name.partition("@")
    values = {"n": unit, "N": name, "p": prefix, "i": instance, "H": socket.gethostname(), "%": "%"}
    return re.sub(r"%([nNpiH%])", lambda match: values[match.group(1)], text)


def unit_exec(unit: str) -> dict:
    """ExecStart of `unit` with $VARS expanded from Environment= and EnvironmentFile=, and where each came from."""
    files = unit_files(unit)
    if not files:
        return {"files": [], "argv": [], "environment": {}}
    environment: dict[str, str] = {}
    exec_start = ""
    env_files: list[str] = []
    for path in files:
        section = ""
        text = read_text(path).replace("\\\n", " ")
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
                continue
            if section != "[Service]" or "=" not in line or line.startswith(("#", ";")):
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            value = unit_specifiers(unit, value)
            if key == "Environment":
                for assignment in shlex.split(value):
                    if "=" in assignment:
                        name, val = assignment.split("=", 1)
                        environment[name] = val
            elif key == "EnvironmentFile":
                optional = value.startswith("-")
                env_path = value.lstrip("-")
                env_files.append(env_path)
                try:
                    environment.update(env_file_values(read_text(env_path)))
                except FileNotFoundError:
                    if not optional:
                        raise ReadError(f"{path}: EnvironmentFile {env_path} does not exist") from None
            elif key == "ExecStart":
                exec_start = value  # an empty ExecStart= resets the list; the last one is what runs

    def expand(match: re.Match) -> str:
        return environment.get(match.group(1) or match.group(2), "")

    expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", expand, exec_start.lstrip("-@+!:"))
    return {"files": files + env_files, "argv": shlex.split(expanded), "environment": environment}


# -- static pods and etcd --------------------------------------------------------------------------------

def manifest_command(component: str) -> tuple[list[str], str]:
    path = f"{MANIFEST_DIR}/{component}.yaml"
    try:
        pod = load_yaml(path)
    except FileNotFoundError:
        raise NotApplicable(f"{path} does not exist on this node") from None
    try:
        container = pod["spec"]["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
    except (TypeError, KeyError, IndexError, AttributeError):
        raise ReadError(f"{path} is not a Pod manifest with a container") from None
    return command, path


def etcd_flags() -> tuple[dict[str, str], str]:
    """etcd's effective flags: its static pod manifest, else the host service's process or configuration."""
    try:
        command, path = manifest_command("etcd")
        return parse_flags(command[1:]), f"manifest {path}"
    except NotApplicable:
        pass
    running = find_processes("etcd")
    if running:
        pid, argv = running[0]
        flags = {name[5:].lower().replace("_", "-"): value
                 for name, value in process_environ(pid).items() if name.startswith("ETCD_")}
        flags.update(parse_flags(argv[1:]))
        return flags, f"running etcd process {pid} (command line and ETCD_* environment)"
    unit = unit_exec("etcd.service")
    if not unit["files"]:
        raise NotApplicable("no etcd on this node (no static pod manifest, no etcd.service)")
    flags = {name[5:].lower().replace("_", "-"): value
             for name, value in unit["environment"].items() if name.startswith("ETCD_")}
    flags.update(parse_flags(unit["argv"][1:]))
    return flags, "etcd.service: " + ", ".join(unit["files"])


# -- kube-proxy ------------------------------------------------------------------------------------------

def path_in_root(root: str, path: str, hops: int = 40) -> str:
    """`path` as a process whose root is `root` (/proc/PID/root) sees it, symlinks followed inside that root (a
    ConfigMap volume's files are links into a timestamped directory); the host path to stat."""
    current = root.rstrip("/") + "/" + path.lstrip("/")
    for _hop in range(hops):
        if not os.path.islink(current):
            return current
        target = os.readlink(current)
        current = (root.rstrip("/") + "/" + target.lstrip("/")) if target.startswith("/") else \
            os.path.normpath(os.path.join(os.path.dirname(current), target))
    raise ReadError(f"{path}: too many symbolic links under {root}")


def kube_proxy_state() -> dict:
    """The running kube-proxy's effective settings: its --config file (a DaemonSet's is in its pod's filesystem,
    read through /proc/PID/root), else its flags. NotApplicable where no kube-proxy runs (a CNI may replace it)."""
    running = find_processes("kube-proxy")
    if not running:
        raise NotApplicable("no kube-proxy runs on this node")
    # During a rollout the old pod's process may still be ending beside the new one: the newest is the one that stays.
    pid, argv = max(running, key=lambda found: (process_started(found[0]) or 0, found[0]))
    root = f"/proc/{pid}/root"
    flags = parse_flags(argv[1:])
    state = {"pid": pid, "root": root, "flags": flags, "config": None, "config_path": flags.get("config")}
    if state["config_path"]:
        state["config"] = parse_yaml(read_text(path_in_root(root, state["config_path"])), state["config_path"]) or {}
        if not isinstance(state["config"], dict):
            raise ReadError(f"kube-proxy's {state['config_path']} is not a KubeProxyConfiguration")
    return state


# -- kubelet ---------------------------------------------------------------------------------------------

def deep_merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def kubelet_version() -> tuple[int, int] | None:
    """The Kubernetes minor the node's kubelet runs (`kubelet --version`), or None without a kubelet."""
    running = find_processes("kubelet")
    binary = running[0][1][0] if running else "/usr/bin/kubelet"
    try:
        output = run([binary, "--version"], timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_minor(output)


def parse_minor(text: str) -> tuple[int, int] | None:
    """(1, 37) from "Kubernetes v1.37.2", "v1.37.2" or "1.37"; None when there is no version in the text."""
    match = re.search(r"v?(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


def kubelet_state() -> dict:
    """The kubelet's flags and effective KubeletConfiguration, from what really starts it."""
    running = find_processes("kubelet")
    if running:
        pid, argv = running[0]
        flags, flag_source = parse_flags(argv[1:]), f"running kubelet process {pid}"
    else:
        unit = unit_exec("kubelet.service")
        if not unit["files"]:
            raise NotApplicable("no kubelet on this node (no kubelet.service, no kubelet process)")
        flags, flag_source = parse_flags(unit["argv"][1:]), "kubelet.service: " + ", ".join(unit["files"])
    config: dict = {}
    sources = []
    config_path = flags.get("config")
    if config_path:
        try:
            loaded = load_yaml(config_path)
        except FileNotFoundError:
            raise ReadError(f"the kubelet's --config {config_path} does not exist") from None
        if not isinstance(loaded, dict):
            raise ReadError(f"{config_path} is not a KubeletConfiguration mapping")
        config, sources = loaded, [config_path]
    config_dir = flags.get("config-dir")
    if config_dir:
        for path in sorted(glob.glob(f"{config_dir}/*.conf")):
            overlay = load_yaml(path)
            if isinstance(overlay, dict):
                config = deep_merge(config, overlay)
                sources.append(path)
    return {"flags": flags, "flag_source": flag_source, "config": config, "config_path": config_path,
            "config_sources": sources}


def dig(document, dotted: str):
    node = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# -- sysctl, modules, mounts -----------------------------------------------------------------------------

def sysctl_persisted() -> dict[str, tuple[str, str]]:
    """key -> (value, file) as systemd-sysctl applies them at boot (last assignment wins)."""
    files = ordered_config_files(SYSCTL_DIRS)
    if os.path.isfile("/etc/sysctl.conf") and "/etc/sysctl.conf" not in (os.path.realpath(f) for f in files):
        files.append("/etc/sysctl.conf")
    values: dict[str, tuple[str, str]] = {}
    for path in files:
        for line in read_text(path).splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")) or "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            values[key.lstrip("-").replace("/", ".")] = (" ".join(value.split()), path)
    return values


def sysctl_live(key: str) -> str | None:
    try:
        return " ".join(read_text("/proc/sys/" + key.replace(".", "/")).split())
    except (FileNotFoundError, ReadError):
        return None


def in_container() -> bool:
    result = run(["systemd-detect-virt", "--container"]) if os.path.exists("/usr/bin/systemd-detect-virt") else None
    if result is not None and result.returncode == 0:
        return True
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


def proc_sys_writable() -> bool:
    """False in containers, where /proc/sys is mounted read-only: live values cannot be set there."""
    try:
        return not os.statvfs("/proc/sys").f_flag & os.ST_RDONLY
    except OSError:
        return False


def modprobe_rules() -> dict[str, dict[str, str]]:
    """module -> {"install": command, "blacklist": "yes"} from modprobe.d (module names normalise - to _)."""
    rules: dict[str, dict[str, str]] = {}
    for path in ordered_config_files(MODPROBE_DIRS):
        for line in read_text(path).splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0] in ("install", "blacklist"):
                entry = rules.setdefault(words[1].replace("-", "_"), {})
                entry[words[0]] = " ".join(words[2:]) if words[0] == "install" else "yes"
    return rules


def mount_options(mountpoint: str) -> list[str] | None:
    options = None
    for line in read_text("/proc/self/mounts").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == mountpoint:
            options = fields[3].split(",")  # the last mount on a path is the visible one
    return options


# -- files -----------------------------------------------------------------------------------------------

def file_facts(path: str) -> dict:
    info = os.lstat(path)
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return {"path": path, "mode": stat.S_IMODE(info.st_mode), "owner": owner, "group": group,
            "is_dir": stat.S_ISDIR(info.st_mode)}


def run(argv: list[str], stdin: str | bytes | None = None, timeout: int | None = 30,
        env: dict | None = None, text: bool = True) -> subprocess.CompletedProcess:
    """The one way kubeharden's node code runs a command: output captured (as text unless `text` is False, for
    binary output), never raising on its exit. `timeout` None for a command whose length depends on the node
    (apt-get). A command that cannot start raises OSError."""
    if not text and isinstance(stdin, str):
        stdin = stdin.encode()
    return subprocess.run(argv, input=stdin, capture_output=True, text=text, check=False, timeout=timeout, env=env)
