"""Evaluate catalogue controls on a node: one reader per kind of state, one comparison per control.

A control's `check` names what to read (`read`), where (`path`, `component`, `flag`, `key`, ...), how to
compare (`op`) and against what (`value`, with `default` for a setting left unset). Each result carries the
actual and expected values and where the actual one came from, so a failure explains itself.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import time

try:
    from ansible.module_utils import kubeharden_cluster as cluster
    from ansible.module_utils import kubeharden_containerd as containerd
    from ansible.module_utils import kubeharden_encryption as encryption
    from ansible.module_utils import kubeharden_kubeadm as kubeadm
    from ansible.module_utils import kubeharden_node as node
    from ansible.module_utils import kubeharden_os as os_logic
    from ansible.module_utils import kubeharden_pki as pki
    from ansible.module_utils.kubeharden_kubectl import transient
except ImportError:  # imported directly by unit tests and the benchmark
    import kubeharden_cluster as cluster
    import kubeharden_containerd as containerd
    import kubeharden_encryption as encryption
    import kubeharden_kubeadm as kubeadm
    import kubeharden_node as node
    import kubeharden_os as os_logic
    import kubeharden_pki as pki
    from kubeharden_kubectl import transient

PASS, FAIL, MANUAL, NOT_APPLICABLE, ERROR = "pass", "fail", "manual", "not_applicable", "error"
# A benchmark control kubeharden does not apply on a Kubernetes node, with the reason the catalogue gives.
EXCEPTION = "exception"


class Observation:
    def __init__(self, value, evidence: str):
        self.value = value
        self.evidence = evidence


# -- comparisons -----------------------------------------------------------------------------------------

def _items(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def _norm(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower() if str(value).strip().lower() in ("true", "false") else str(value).strip()


def _number(value) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def compare(op: str, actual, expected) -> bool:
    """kube-bench's vocabulary (eq, has, nothave, gte, valid_elements, bitmask) plus a few of our own."""
    if op == "set":
        return actual is not None and str(actual) != ""
    if op == "unset":
        return actual is None
    if op == "true":
        return bool(actual)
    if op == "false":
        return not actual
    if actual is None:
        return False
    if op == "eq":
        return _norm(actual) == _norm(expected)
    if op == "neq":
        return _norm(actual) != _norm(expected)
    if op == "in":
        return _norm(actual) in [_norm(e) for e in expected]
    if op == "has":
        return str(expected) in _items(actual)
    if op == "nothave":
        return str(expected) not in _items(actual)
    if op == "subset":  # kube-bench valid_elements
        items = _items(actual)
        return bool(items) and all(item in expected for item in items)
    if op in ("gte", "lte", "gt"):
        number, limit = _number(actual), _number(expected)
        if number is None or limit is None:
            return False
        return {"gte": number >= limit, "lte": number <= limit, "gt": number > limit}[op]
    if op == "regex":
        return re.search(str(expected), str(actual)) is not None
    raise ValueError(f"unknown comparison {op!r}")


# -- the node, read once per audit ----------------------------------------------------------------------

class Node:
    """Lazy, cached views of the node's state: each file or process is read once per audit."""

    def __init__(self, node_roles: list[str], accepted_subjects: list[str] | None = None,
                 kubeconfig: str = "/etc/kubernetes/admin.conf", pod_security_level: str = "restricted",
                 policy_namespaces: list[str] | None = None):
        self.node_roles = node_roles
        self.accepted_subjects = accepted_subjects or []  # the operator's choices for the cluster's controls
        self.pod_security_level = pod_security_level
        self.policy_namespaces = policy_namespaces or []
        self.kubeconfig = kubeconfig
        self._manifest_flags: dict[str, tuple[dict, str]] = {}
        self._certificates: list[dict] | None = None

    @functools.cached_property
    def kubernetes_version(self) -> tuple[int, int] | None:
        """The Kubernetes minor the node runs (its kubelet's), for checks whose meaning changed with it."""
        return node.kubelet_version()

    @functools.cached_property
    def in_container(self) -> bool:
        """The one container fact: controls that cannot hold in a container say why, and are not applicable."""
        return node.in_container()

    @functools.cached_property
    def kubelet(self) -> dict:
        return node.kubelet_state()

    @functools.cached_property
    def etcd(self) -> tuple[dict, str]:
        return node.etcd_flags()

    @functools.cached_property
    def kube_proxy(self) -> dict:
        return node.kube_proxy_state()

    @functools.cached_property
    def containerd(self) -> tuple[dict, str]:
        """containerd's effective configuration, as `containerd config dump` prints it (imports and migration
        applied), and where it came from."""
        try:
            config, _unknown = containerd.effective(containerd.CONFIG)
        except FileNotFoundError as exc:
            raise node.NotApplicable(str(exc)) from None
        except containerd.ConfigError as exc:
            raise node.ReadError(str(exc)) from None
        return config, f"containerd config dump ({containerd.CONFIG})"

    def manifest_flags(self, component: str) -> tuple[dict, str]:
        if component not in self._manifest_flags:
            command, path = node.manifest_command(component)
            self._manifest_flags[component] = node.parse_flags(command[1:]), f"manifest {path}"
        return self._manifest_flags[component]

    @functools.cached_property
    def cluster(self) -> cluster.ClusterState | node.ReadError:
        """The cluster's objects section 5 reads, from one request through the node's admin kubeconfig, asked
        again for up to 90 s while the apiserver restarts (a drift run can start right after a manifest change).
        A failure is kept: every cluster control reports it, and kubectl runs once."""
        if not os.path.exists(self.kubeconfig):
            return node.NotApplicable(f"no {self.kubeconfig} on this node to read the cluster with")
        command = ["kubectl", f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s", "get",
                   ",".join(cluster.KINDS), "--all-namespaces", "-o", "json"]
        deadline = time.monotonic() + 90
        while True:
            result = node.run(command, timeout=60)
            if result.returncode == 0 or not transient(result.stderr) or time.monotonic() > deadline:
                break
            time.sleep(3)
        if result.returncode != 0:
            message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no message"
            return node.ReadError(f"kubectl get {','.join(cluster.KINDS)} failed: {message}")
        try:
            return cluster.ClusterState(json.loads(result.stdout).get("items", []), self.accepted_subjects)
        except ValueError as exc:
            return node.ReadError(f"kubectl get did not answer JSON: {exc}")

    def pod_security_dry_run(self, namespace: dict, level: str) -> list[str]:
        """What the apiserver's Pod Security admission says of the namespace's running pods if it enforced
        `level`: a server-side dry run of the labels, which changes nothing. The apiserver judges running pods only
        when the enforce label or its version changes, so a namespace that already enforces `level` is asked with
        the other spelling of the same version (latest <-> this release's minor). One line per pod (or group)."""
        labels = namespace["metadata"].get("labels") or {}
        version = labels.get("pod-security.kubernetes.io/enforce-version", "latest")
        minor = self.kubernetes_version
        if labels.get("pod-security.kubernetes.io/enforce") == level and minor:
            version = f"v{minor[0]}.{minor[1]}" if version == "latest" else "latest"
        result = node.run(["kubectl", f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s", "label",
                           "--dry-run=server", "--overwrite", "namespace", namespace["metadata"]["name"],
                           f"pod-security.kubernetes.io/enforce={level}",
                           f"pod-security.kubernetes.io/enforce-version={version}", "-o", "name"], timeout=60)
        if result.returncode != 0:
            raise node.ReadError(f"dry run of the Pod Security label on {namespace['metadata']['name']} failed: "
                                 f"{result.stderr.strip()[-300:]}")
        return [line[len("Warning: "):] for line in result.stderr.splitlines()
                if line.startswith("Warning: ") and "existing pods in namespace" not in line]

    def image_policy_dry_run(self, namespace: str, images: list[str]) -> list[str]:
        """What the apiserver's admission says of a pod with these images in `namespace`: a server-side dry run of a
        minimal pod (only the images; a security context every Pod Security level admits), which creates nothing.
        The image policy's own messages (its Deny error or Warn warnings); none when it admits them."""
        containers = [{"name": f"c{index}", "image": image,
                       "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
                      for index, image in enumerate(images)]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "kubeharden-image-check-", "namespace": namespace},
               "spec": {"containers": containers, "securityContext": {
                   "runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}}}
        result = node.run(["kubectl", f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s", "create",
                           "--dry-run=server", "-o", "name", "-f", "-"], stdin=json.dumps(pod), timeout=60)
        said = result.stdout + result.stderr
        found = [line for line in said.splitlines() if cluster.IMAGE_POLICY + ":" in line]
        if result.returncode != 0 and not found:
            raise node.ReadError(f"dry run of a pod in {namespace} failed: {said.strip()[-300:]}")
        return [line[line.index(cluster.IMAGE_POLICY + ":") + len(cluster.IMAGE_POLICY) + 1:].strip()
                for line in found]

    @functools.cached_property
    def account_files(self) -> tuple[str, str, str]:
        """/etc/passwd, /etc/group and /etc/shadow, read once for every account control."""
        return tuple(node.read_text(path) for path in ("/etc/passwd", "/etc/group", "/etc/shadow"))

    @functools.cached_property
    def sysctl_persisted(self) -> dict:
        return node.sysctl_persisted()

    @functools.cached_property
    def proc_sys_writable(self) -> bool:
        return node.proc_sys_writable()

    @functools.cached_property
    def modprobe(self) -> dict:
        return node.modprobe_rules()

    @functools.cached_property
    def loaded_modules(self) -> set[str]:
        try:
            return {line.split()[0] for line in node.read_text("/proc/modules").splitlines() if line}
        except (FileNotFoundError, node.ReadError):
            return set()

    @functools.cached_property
    def sshd(self) -> dict[str, str]:
        if not os.path.exists("/usr/sbin/sshd"):
            raise node.NotApplicable("sshd is not installed")
        result = node.run(["/usr/sbin/sshd", "-T", "-C", "user=root,host=localhost,addr=127.0.0.1"])
        if result.returncode != 0:
            raise node.ReadError(f"sshd -T failed: {result.stderr.strip()}")
        settings: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, _sep, value = line.partition(" ")
            settings[key] = f"{settings[key]} {value}" if key in settings else value
        return settings

    @functools.cached_property
    def packages(self) -> dict[str, str]:
        result = node.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if len(line.split()) > 1}

    @functools.cached_property
    def audit_rules(self) -> tuple[str, list[str]]:
        files = sorted(glob.glob("/etc/audit/rules.d/*.rules"))
        return "\n".join(node.read_text(f) for f in files), files

    @property
    def certificates(self) -> list[dict]:
        if self._certificates is None:
            self._certificates = certificate_inventory()
        return self._certificates

    def certificates_read(self) -> list[dict]:
        """The certificates a control already read, or none: reporting them never costs a read of its own."""
        return self._certificates or []

    def flags(self, component: str) -> tuple[dict, str]:
        return self.etcd if component == "etcd" else self.manifest_flags(component)

    @property
    def etcd_kind(self) -> str:
        """How etcd runs here: "static_pod" (kubeadm), "host" (a service, as kubespray runs it) or "none". A
        control's fix can depend on it (catalogue `remediation.etcd_host`)."""
        if not {"etcd", "control_plane"} & set(self.node_roles):
            return "none"
        try:
            _flags, where = self.etcd
        except node.NotApplicable:
            return "none"
        return "static_pod" if where.startswith("manifest ") else "host"


class RenderedNode(Node):
    """A node as `kubeadm init` will leave it, from a kubeadm configuration: the static pods' flags and the
    kubelet's configuration come from the file; the files those flags name are read from the node itself."""

    # Controls a kubeadm configuration decides: the check types CHECK_TYPES marks `rendered` (flags, kubelet
    # settings), and the files the apiserver's flags name (written before kubeadm init). Modes of what kubeadm
    # itself creates (etcd's data directory, the kubelet's config.yaml) are for site.yml after it.

    def __init__(self, node_roles: list[str], path: str):
        super().__init__(node_roles)
        try:
            documents = list(node.yaml.safe_load_all(node.read_text(path)))
            self.rendered = kubeadm.effective(documents)
        except FileNotFoundError:
            raise node.ReadError(f"{path} does not exist") from None
        except (node.yaml.YAMLError, kubeadm.ConfigError) as exc:
            raise node.ReadError(f"{path}: {exc}") from None
        self.source = f"kubeadm configuration {path} ({self.rendered['api_version']})"

    @classmethod
    def decides(cls, control: dict) -> bool:
        check = control["check"]
        return (check["read"] in CHECK_TYPES and CHECK_TYPES[check["read"]].rendered) or (
            check["read"] == "file" and (check.get("path_from") or {}).get("component") == "kube-apiserver")

    def manifest_flags(self, component: str) -> tuple[dict, str]:
        return self.rendered["flags"][component], self.source

    @functools.cached_property
    def kubernetes_version(self) -> tuple[int, int] | None:
        return node.parse_minor(self.rendered["kubernetes_version"])

    @functools.cached_property
    def etcd(self) -> tuple[dict, str]:
        return self.rendered["flags"]["etcd"], self.source

    @property
    def etcd_kind(self) -> str:
        return "static_pod"  # kubeadm's local etcd

    @functools.cached_property
    def kubelet(self) -> dict:
        return {"flags": dict(kubeadm.KUBELET_FLAGS), "flag_source": self.source, "config": self.rendered["kubelet"],
                "config_path": kubeadm.KUBELET_FLAGS["config"], "config_sources": [self.source]}


# -- readers ---------------------------------------------------------------------------------------------

def _resolve_path(check: dict, state: Node) -> str:
    if "path" in check:
        return check["path"]
    source = check["path_from"]
    if source["read"] == "flag":
        flags, where = state.flags(source["component"])
        value = flags.get(source["flag"], source.get("default"))
    elif source["read"] == "kube_proxy":  # a file of the running kube-proxy, as its own filesystem shows it
        value, where = _kube_proxy_setting(state.kube_proxy, source["key"], source.get("flag"))
        return node.path_in_root(state.kube_proxy["root"], value) if value else \
            _no_path(source["key"], where)
    else:  # kubelet configuration key, or the kubelet's own --config
        kubelet = state.kubelet
        value = kubelet["config_path"] if source["key"] == "--config" else node.dig(kubelet["config"], source["key"])
        where = kubelet["flag_source"]
    if not value:
        _no_path(source.get("flag") or source.get("key"), where)
    return value


def _no_path(name: str, where: str):
    raise node.NotApplicable(f"no path: {name} is not set ({where})")


def _kube_proxy_setting(proxy: dict, key: str, flag: str | None) -> tuple[object, str]:
    """A kube-proxy setting: from its --config file when it has one (kube-proxy then ignores most flags), else its
    flag. "" and null, as kubeadm writes unset fields, are unset."""
    if proxy["config"] is not None:
        value = node.dig(proxy["config"], key)
        return (None if value in ("", None) else value), f"{proxy['config_path']} of kube-proxy (pid {proxy['pid']})"
    return proxy["flags"].get(flag) if flag else None, f"kube-proxy's command line (pid {proxy['pid']})"


def read_kube_proxy(check: dict, state: Node) -> Observation:
    """A setting of the running kube-proxy (its configuration file, or its flag `flag` without one)."""
    value, where = _kube_proxy_setting(state.kube_proxy, check["key"], check.get("flag"))
    return Observation(value, f"{check['key']}: {value} ({where})" if value is not None
                       else f"{check['key']} not set ({where})")


def read_file(check: dict, state: Node) -> Observation:
    """Mode and owner of a file, or of every file under a directory (`recursive`), against the maxima."""
    path = _resolve_path(check, state)
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


def read_flag(check: dict, state: Node) -> Observation:
    """One flag's value; with a list of flags (a certificate and its key), all must be set."""
    flags, where = state.flags(check["component"])
    names = check["flag"] if isinstance(check["flag"], list) else [check["flag"]]
    values = [flags.get(name) for name in names]
    shown = " ".join(f"--{n}={v}" if v is not None else f"--{n} not set" for n, v in zip(names, values, strict=False))
    value = None if None in values else ",".join(values)
    return Observation(value, f"{shown} ({where})")


def read_kubelet(check: dict, state: Node) -> Observation:
    kubelet = state.kubelet
    flag, key = check.get("flag"), check.get("key")
    if flag and flag in kubelet["flags"]:
        return Observation(kubelet["flags"][flag], f"--{flag}={kubelet['flags'][flag]} ({kubelet['flag_source']})")
    if key:
        if kubelet["config_path"] is None:
            raise node.ReadError(f"the kubelet has no --config ({kubelet['flag_source']}) and --{flag} is not set")
        value = node.dig(kubelet["config"], key)
        if value is not None:
            return Observation(value, f"{key}: {value} ({', '.join(kubelet['config_sources'])})")
        return Observation(None, f"{key} not set ({', '.join(kubelet['config_sources'])})")
    return Observation(None, f"--{flag} not set ({kubelet['flag_source']})")


def read_kubelet_serving(check: dict, state: Node) -> Observation:
    """Who signed the certificate the kubelet serves (4.2.9): "cluster-ca" when `check["ca"]` verifies it.

    The kubelet serves --tls-cert-file/tlsCertFile when set; else, with serverTLSBootstrap, the certificate the
    cluster CA issued for its request (kubelet-server-current.pem, none while the request is pending); else one
    it signed itself (kubelet.crt), which no CA verifies."""
    kubelet = state.kubelet
    config, flags = kubelet["config"] or {}, kubelet["flags"]
    cert_dir = flags.get("cert-dir", pki.KUBELET_PKI_DIR)
    bootstrap = flags.get("rotate-server-certificates", node.dig(config, "serverTLSBootstrap"))
    if flags.get("tls-cert-file") or node.dig(config, "tlsCertFile"):
        path, how = flags.get("tls-cert-file") or node.dig(config, "tlsCertFile"), "tlsCertFile"
    elif str(bootstrap).lower() == "true":
        path, how = os.path.join(cert_dir, "kubelet-server-current.pem"), "serverTLSBootstrap"
    else:
        path, how = os.path.join(cert_dir, "kubelet.crt"), "signed by the kubelet itself"
    if not os.path.exists(path):
        return Observation("none", f"{path} does not exist ({how}; its certificate request may be pending)")
    blocks = [block for label, block in pki.pem_blocks(node.read_text(path)) if label == "CERTIFICATE"]
    if not blocks:
        return Observation("none", f"{path} holds no certificate ({how})")
    result = pki.openssl(["verify", "-CAfile", check["ca"]], stdin=blocks[0])
    if result.returncode == 0:
        return Observation("cluster-ca", f"{path} ({how}) verified by {check['ca']}")
    return Observation("not-cluster-ca", f"{path} ({how}) not verified by {check['ca']}")


def read_process_user(check: dict, state: Node) -> Observation:
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


def read_sysctl(check: dict, state: Node) -> Observation:
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


def read_module(check: dict, state: Node) -> Observation:
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


def read_sshd(check: dict, state: Node) -> Observation:
    value = state.sshd.get(check["key"].lower())
    return Observation(value, f"sshd -T: {check['key'].lower()} {value}")


def read_line(check: dict, state: Node) -> Observation:
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


def read_config_key(check: dict, state: Node) -> Observation:
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


def read_package(check: dict, state: Node) -> Observation:
    """`installed` when the package (or any of `packages`) is installed, else `absent`."""
    names = check["packages"] if "packages" in check else [check["package"]]
    installed = [name for name in names if state.packages.get(name, "").startswith("ii")]
    return Observation("installed" if installed else "absent",
                       ", ".join(f"{name}: {'installed' if name in installed else 'not installed'}" for name in names))


def read_service(check: dict, state: Node) -> Observation:
    units = check["units"] if "units" in check else [check["unit"]]
    states = []
    for unit in units:
        active = node.run(["systemctl", "is-active", unit]).stdout.strip()
        states.append((unit, active))
        if active == "active":
            return Observation("active", f"{unit}: active")
    return Observation("inactive", ", ".join(f"{u}: {s}" for u, s in states))


def read_mount(check: dict, state: Node) -> Observation:
    options = node.mount_options(check["mountpoint"])
    if options is None:
        raise node.NotApplicable(f"{check['mountpoint']} is not a separate mount")
    return Observation(options, f"{check['mountpoint']}: {','.join(options)}")


def read_swap(check: dict, state: Node) -> Observation:
    active = [line.split()[0] for line in node.read_text("/proc/swaps").splitlines()[1:] if line.strip()]
    fstab = []
    if os.path.exists("/etc/fstab"):
        fstab = [line.split()[0] for line in node.read_text("/etc/fstab").splitlines()
                 if len(line.split()) >= 3 and not line.lstrip().startswith("#") and line.split()[2] == "swap"]
    swaps = active + [f"{entry} (fstab)" for entry in fstab]
    return Observation(swaps, "swap: " + (", ".join(swaps) if swaps else "none active, none in /etc/fstab"))


def read_accounts(check: dict, state: Node) -> Observation:
    """The local accounts offending one rule (/etc/passwd, /etc/group, /etc/shadow)."""
    aspect = check["aspect"]
    if aspect not in os_logic.ACCOUNT_ASPECTS:
        raise node.ReadError(f"unknown accounts aspect {aspect!r}")
    offenders = os_logic.account_offenders(aspect, *state.account_files, today=int(time.time() // 86400))
    return Observation(offenders, f"{aspect}: " + (", ".join(offenders) if offenders else "none"))


def read_audit_rule(check: dict, state: Node) -> Observation:
    text, files = state.audit_rules
    if not files:
        return Observation(None, "no /etc/audit/rules.d/*.rules")
    match = re.search(check["pattern"], text, re.MULTILINE)
    return Observation(match.group(0) if match else None,
                       f"{match.group(0) if match else 'no rule matching ' + repr(check['pattern'])} "
                       f"({len(files)} rule files)")


def _apiserver_config(state: Node, flag: str) -> tuple[object, str]:
    flags, where = state.flags("kube-apiserver")
    path = flags.get(flag)
    if not path:
        return None, f"--{flag} not set ({where})"
    try:
        return node.load_yaml(path), path
    except FileNotFoundError:
        raise node.ReadError(f"--{flag} names {path}, which does not exist") from None


# What anonymous requests may reach: the health endpoints the kubelet's probes call, and the public document
# kubeadm's token discovery reads before a node joins (kubeadm grants system:anonymous `get` on it, no more).
HEALTH_PATHS = {"/livez", "/readyz", "/healthz", "/api/v1/namespaces/kube-public/configmaps/cluster-info"}


def read_anonymous_auth(check: dict, state: Node) -> Observation:
    """1.2.1: `false`, `health-only` (an AuthenticationConfiguration allows anonymous requests to health
    endpoints only, as the kubelet's probes need, and kubeadm's cluster-info for joining nodes), or `true`."""
    flags, where = state.flags("kube-apiserver")
    if "authentication-config" not in flags:
        value = flags.get("anonymous-auth", "true")
        return Observation(value, f"--anonymous-auth={value}" + ("" if "anonymous-auth" in flags else " (default)")
                           + f" ({where})")
    config, path = _apiserver_config(state, "authentication-config")
    anonymous = (config or {}).get("anonymous") or {}
    if not anonymous.get("enabled"):
        return Observation("false" if anonymous else "true", f"{path}: anonymous "
                           + ("disabled" if anonymous else "not configured (enabled by default)"))
    paths = {c.get("path") for c in anonymous.get("conditions") or []}
    value = "health-only" if paths and paths <= HEALTH_PATHS else "true"
    return Observation(value, f"{path}: anonymous allowed for {sorted(paths) if paths else 'every path'}")


def read_encryption_provider(check: dict, state: Node) -> Observation:
    """The first provider for `secrets` in the apiserver's EncryptionConfiguration: the one that encrypts."""
    config, where = _apiserver_config(state, "encryption-provider-config")
    if config is None:
        return Observation(None, where)
    for resource in (config or {}).get("resources") or []:
        if "secrets" in (resource.get("resources") or []) or "*.*" in (resource.get("resources") or []):
            providers = resource.get("providers") or []
            first = next(iter(providers[0]), None) if providers else None
            return Observation(first, f"{where}: first provider for secrets is {first}")
    return Observation(None, f"{where}: no provider list covers secrets")


def read_pod_security(check: dict, state: Node) -> Observation:
    config, where = _apiserver_config(state, "admission-control-config-file")
    if config is None:
        return Observation(None, where + " (Pod Security Admission defaults to privileged)")
    for plugin in (config or {}).get("plugins") or []:
        if plugin.get("name") == "PodSecurity":
            psa = plugin.get("configuration")
            if psa is None and plugin.get("path"):
                psa = node.load_yaml(plugin["path"])
            level = ((psa or {}).get("defaults") or {}).get(check.get("mode", "enforce"))
            return Observation(level, f"{where}: PodSecurity defaults.{check.get('mode', 'enforce')} = {level}")
    return Observation(None, f"{where}: no PodSecurity plugin configuration")


def read_same_file(check: dict, state: Node) -> Observation:
    """Whether two flags name files with identical content (etcd must not trust the cluster CA)."""
    first_flags, where = state.flags(check["component"])
    other_flags, _source = state.flags(check["other_component"])
    first, other = first_flags.get(check["flag"]), other_flags.get(check["other_flag"])
    if not first or not other:
        raise node.NotApplicable(f"--{check['flag']} or --{check['other_flag']} is not set ({where})")
    same = os.path.realpath(first) == os.path.realpath(other) or node.read_text(first) == node.read_text(other)
    return Observation("same" if same else "different", f"{first} vs {other}: {'same' if same else 'different'} CA")


def read_containerd(check: dict, state: Node) -> Observation:
    """A setting of containerd's effective configuration; `key` is its path, plugin sections by full name."""
    config, source = state.containerd
    value = containerd.dig(config, check["key"])
    shown = containerd.path_text(tuple(check["key"]))
    return Observation(value, f"{shown} = {value if value is not None else 'not set'} ({source})")


CONTAINERD_RULES = {"endpoints": containerd.endpoint_problems, "registries": containerd.registry_problems}


def read_containerd_rules(check: dict, state: Node) -> Observation:
    """What breaks one of containerd's hardening rules (the container_runtime role refuses the same)."""
    config, source = state.containerd
    offenders = CONTAINERD_RULES[check["aspect"]](config)
    return Observation(offenders, f"{check['aspect']}: {len(offenders)} offending ({source})")


def read_nft_table(check: dict, state: Node) -> Observation:
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


def read_etcd_encryption(check: dict, state: Node) -> Observation:
    """How values under `prefix` are stored in this node's etcd, read over TLS with the health-check client."""
    import ssl

    flags, where = state.flags("etcd")
    ca = flags.get("trusted-ca-file")
    urls = [url for url in str(flags.get("listen-client-urls", "")).split(",") if url.startswith("https://")]
    if not ca or not urls:
        raise node.ReadError(f"etcd has no trusted CA or no https client URL ({where})")
    local = next((url for url in urls if "127.0.0.1" in url or "localhost" in url), urls[0])
    clients = [f"{os.path.dirname(ca)}/healthcheck-client", "/etc/kubernetes/pki/etcd/healthcheck-client",
               "/etc/kubernetes/pki/apiserver-etcd-client"]
    client = next((c for c in clients if os.path.exists(f"{c}.crt") and os.path.exists(f"{c}.key")), None)
    if client is None:
        raise node.ReadError(f"no etcd client certificate to read with (looked for {', '.join(clients)})")
    try:
        tls = {"ca_path": ca, "client_cert": f"{client}.crt", "client_key": f"{client}.key"}
        kinds = [encryption.classify(value) for _key, value in encryption.etcd_range(local, tls, check["prefix"], 500)]
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise node.ReadError(f"cannot read {check['prefix']} from etcd at {local}: {exc}") from None
    plaintext = kinds.count("plaintext")
    counts = {kind: kinds.count(kind) for kind in sorted(set(kinds))}
    return Observation(plaintext, f"{check['prefix']} in etcd ({local}): "
                       + (", ".join(f"{count} {kind}" for kind, count in counts.items()) or "no values"))


def certificate_inventory() -> list[dict]:
    """Every certificate of the node (kubeadm and etcd PKI, kubeconfig clients, the kubelet's), described."""
    import datetime as dt

    items = pki.collect(node.load_yaml)
    cas = [item for item in items if item.cert is not None and item.cert.is_ca]
    now = dt.datetime.now(dt.UTC)
    return [pki.describe(item, cas, now) for item in items]


def _certificate_offence(check: dict, cert: dict) -> str | None:
    aspect = check["aspect"]
    if aspect == "expiry" and cert["days_left"] < int(check["days"]):
        return f"{cert['days_left']} days left"
    weak = pki.weaknesses(cert["key_type"], cert["key_bits"], cert["signature_algorithm"])
    if aspect == "key_strength" and any(w.startswith("weak key") for w in weak):
        return f"{cert['key_type']} {cert['key_bits']} bits"
    if aspect == "signature" and any(w.startswith("weak signature") for w in weak):
        return cert["signature_algorithm"]
    if aspect == "chain":
        if cert["chain"] not in ("ok", "issuer not on this node"):
            return f"chain {cert['chain']}"
        if cert.get("key_matches") is False:
            return f"does not match its key {cert.get('key_path', cert['path'])}"
    return None


def read_certificates(check: dict, state: Node) -> Observation:
    certificates = state.certificates
    if not certificates:
        raise node.NotApplicable("no certificates on this node")
    offenders = [f"{c['name']}: {c['error']}" for c in certificates if "error" in c]
    for cert in (c for c in certificates if "error" not in c):
        offence = _certificate_offence(check, cert)
        if offence:
            offenders.append(f"{cert['name']}: {offence}")
    return Observation(offenders, f"{len(certificates)} certificates" + (f"; {'; '.join(offenders[:5])}"
                                                                         if offenders else ""))


def _with_exempt(offenders: list[str], exempt: list[str], what: str) -> Observation:
    evidence = f"{len(offenders)} {what}"
    if offenders:
        evidence += f": {'; '.join(offenders[:8])}" + ("..." if len(offenders) > 8 else "")
    if exempt:
        evidence += f"; exempt: {'; '.join(exempt)}"
    return Observation(offenders, evidence)


def _images_refused(view, state: Node) -> Observation:
    """The running pods whose images the cluster's image policy would refuse today, as the apiserver judges them
    (one dry run per namespace and set of images; pods of one workload share theirs)."""
    if not view.image_policy_enforcing():
        raise node.NotApplicable(f"no {cluster.IMAGE_POLICY} bound with Deny or Warn: nothing judges images "
                                 "(cluster_policies_image_policy)")
    offenders, exempt, judged = [], [], {}
    for pod in view.running_pods():
        namespace, images = pod["metadata"]["namespace"], cluster.pod_images(pod)
        reason = view.exemption(namespace, "image-policy")
        if reason is not None:
            exempt.append(f"{namespace} ({reason})")
            continue
        key = (namespace, tuple(images))
        if key not in judged:
            judged[key] = state.image_policy_dry_run(namespace, images)
        offenders += [f"{namespace}/{pod['metadata']['name']}: {message}" for message in judged[key]]
    return _with_exempt(sorted(offenders), sorted(set(exempt)), "pod(s) the image policy would refuse")


def read_cluster(check: dict, state: Node) -> Observation:
    """CIS section 5 over the API, once per cluster: the offending objects, and the namespaces exempt with the
    reason the cluster_policies role recorded on them."""
    view, aspect = state.cluster, check["aspect"]
    if isinstance(view, Exception):
        raise view
    if aspect == "grants":
        return _with_exempt(cluster.rbac_grants(view, check["resources"], check["verbs"]), [], "grant(s)")
    if aspect == "cluster_admin":
        return _with_exempt(cluster.cluster_admin_bindings(view), [], "binding(s) to cluster-admin")
    if aspect == "wildcards":
        return _with_exempt(cluster.wildcard_roles(view), [], "role(s) with wildcards")
    if aspect == "system_masters":
        return _with_exempt(cluster.system_masters(view), [], "binding(s) to system:masters")
    if aspect == "pod_security_labels":
        return _with_exempt(*cluster.pod_security_labels(view, state.pod_security_level), "namespace(s)")
    if aspect == "default_deny":
        return _with_exempt(*cluster.default_deny(view), "namespace(s)")
    if aspect == "default_service_accounts":
        return _with_exempt(*cluster.default_service_accounts(view), "finding(s)")
    if aspect == "would_be_rejected":
        level, offenders, exempt = state.pod_security_level, [], []
        for found in sorted(view.of("Namespace"), key=lambda n: n["metadata"]["name"]):
            namespace = found["metadata"]["name"]
            rejected = state.pod_security_dry_run(found, level)
            reason = view.exemption(namespace, "pod-security")
            if reason is not None and rejected:
                exempt.append(f"{namespace} ({reason}): {len(rejected)} pod line(s)")
            elif reason is None:
                offenders += [f"{namespace}: {line}" for line in rejected]
        return _with_exempt(offenders, exempt, f"pod(s) {level} would reject")
    if aspect == "exposure":
        return _with_exempt(cluster.exposure(view), [], "exposed")
    if aspect == "image_policy":
        return _with_exempt(*cluster.image_policy(view, state.policy_namespaces), "finding(s)")
    if aspect == "image_refused":
        return _images_refused(view, state)
    if aspect in cluster.POD_ASPECTS:
        return _with_exempt(*cluster.pods_with(view, aspect), "pod(s)")
    raise node.ReadError(f"unknown cluster aspect {aspect!r}")


class CheckType:
    """Everything about one `read:` type of kubeharden/catalogue/checks.yml (which declares the keys it takes):
    its reader, how its observation is judged, and whether a kubeadm configuration decides it before the node
    exists (RenderedNode, the bootstrap check).

    judge: `compare` (the check's op and value against the observed value), `offenders` (the observation lists
    offending items: passes when it is empty), `option` (passes when the check's `option` is among the observed
    options)."""

    JUDGES = ("compare", "offenders", "option")

    def __init__(self, read, judge: str = "compare", rendered: bool = False):
        if judge not in self.JUDGES:
            raise ValueError(f"unknown judge {judge!r}")
        self.read, self.judge, self.rendered = read, judge, rendered


CHECK_TYPES = {
    # Kubernetes components, as their manifests, unit files and configuration files set them
    "flag": CheckType(read_flag, rendered=True),
    "kubelet": CheckType(read_kubelet, rendered=True),
    "kubelet_serving": CheckType(read_kubelet_serving),
    "kube_proxy": CheckType(read_kube_proxy),
    "process_user": CheckType(read_process_user),
    "encryption_provider": CheckType(read_encryption_provider, rendered=True),
    "etcd_encryption": CheckType(read_etcd_encryption),
    "pod_security": CheckType(read_pod_security, rendered=True),
    "anonymous_auth": CheckType(read_anonymous_auth, rendered=True),
    "certificates": CheckType(read_certificates, judge="offenders"),
    "cluster": CheckType(read_cluster, judge="offenders"),
    # the operating system
    "file": CheckType(read_file, judge="offenders"),
    "same_file": CheckType(read_same_file),
    "sysctl": CheckType(read_sysctl),
    "module": CheckType(read_module),
    "sshd": CheckType(read_sshd),
    "line": CheckType(read_line),
    "config_key": CheckType(read_config_key),
    "package": CheckType(read_package),
    "service": CheckType(read_service),
    "mount": CheckType(read_mount, judge="option"),
    "swap": CheckType(read_swap, judge="offenders"),
    "accounts": CheckType(read_accounts, judge="offenders"),
    "audit_rule": CheckType(read_audit_rule),
    "nft_table": CheckType(read_nft_table),
    # the container runtime
    "containerd": CheckType(read_containerd),
    "containerd_rules": CheckType(read_containerd_rules, judge="offenders"),
}
# Views of CHECK_TYPES, for callers that need only one aspect.
READERS = {name: check_type.read for name, check_type in CHECK_TYPES.items()}
OFFENDER_READERS = frozenset(name for name, check_type in CHECK_TYPES.items() if check_type.judge == "offenders")


def _expected_text(check: dict) -> str:
    read = check["read"]
    if read == "file":
        parts = [f"mode <= {check['mode_max']}" if "mode_max" in check else "", check.get("owner", "")]
        return " ".join(p for p in parts if p) + (" (recursive)" if check.get("recursive") else "")
    if CHECK_TYPES[read].judge == "offenders":
        return "none offending"
    value = check.get("value")
    op = check.get("op", "set")
    return op if value is None else f"{op} {value}"


def check_at(check: dict, version: tuple[int, int] | None) -> tuple[dict, str]:
    """The check as it reads on a node running Kubernetes `version`: `since` holds, per minor, what changes from
    that minor on (a meaning the release changed). Returns the check and the minor whose rule applied ("")."""
    since = check.get("since") or {}
    effective, applied = {k: v for k, v in check.items() if k != "since"}, ""
    for minor in sorted(since, key=node.parse_minor):
        if version is not None and version >= node.parse_minor(minor):
            effective.update(since[minor])
            applied = minor
    return effective, applied


def evaluate(control: dict, state: Node) -> dict:
    check, rule = control["check"], ""
    if "since" in check:
        check, rule = check_at(check, state.kubernetes_version)
    result = {"id": control["id"], "expected": "", "actual": None, "evidence": "", "reason": ""}
    if control.get("exception"):
        return {**result, "status": EXCEPTION, "reason": f"exception: {control['exception']}"}
    if check["read"] == "none":
        return {**result, "status": MANUAL, "reason": check.get("reason", "needs a person to decide")}
    if check.get("container") and state.in_container:
        return {**result, "status": NOT_APPLICABLE, "reason": f"in a container: {check['container']}"}
    try:
        result["expected"] = _expected_text(check) + (f" (the rule from Kubernetes {rule} on)" if rule else "")
        check_type = CHECK_TYPES[check["read"]]
        observation = READERS[check["read"]](check, state)  # READERS: a test may stand in for one reader
        actual = observation.value
        if check_type.judge == "offenders":
            passed = not actual
        elif check_type.judge == "option":
            passed = check["option"] in actual
        else:
            if check.get("zero_is_default") and str(actual) in ("0", "0s"):
                actual = None  # the kubelet defaults a zero duration, as if it were unset
            if actual is None and "default" in check:
                actual = check["default"]
                observation.evidence += f"; default {actual} applies"
            passed = compare(check.get("op", "set"), actual, check.get("value"))
    except node.NotApplicable as exc:
        return {**result, "status": NOT_APPLICABLE, "reason": str(exc)}
    except (node.ReadError, FileNotFoundError, PermissionError) as exc:
        return {**result, "status": ERROR, "reason": str(exc)}
    except Exception as exc:  # a bug in one control must not stop the others
        return {**result, "status": ERROR, "reason": f"{type(exc).__name__}: {exc}"}
    status = PASS if passed else FAIL
    if not passed and control.get("type") == "manual" and not control.get("required"):
        status = MANUAL  # the benchmark leaves the call to the operator; we show the evidence
    return {**result, "status": status, "actual": actual, "evidence": observation.evidence}


def evaluate_all(controls: list[dict], node_roles: list[str], state: Node | None = None) -> list[dict]:
    state = state or Node(node_roles)
    return [evaluate(control, state) for control in controls
            if not control.get("node_roles") or set(control["node_roles"]) & set(node_roles)]
