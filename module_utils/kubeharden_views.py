"""The node as the readers see it, read once per audit: lazy, cached views of its files, processes and cluster,
and of what a kubeadm configuration says the node will be (RenderedNode, the bootstrap check)."""

from __future__ import annotations

import functools
import glob
import json
import os
import time

from ansible.module_utils import kubeharden_cluster as cluster
from ansible.module_utils import kubeharden_containerd as containerd
from ansible.module_utils import kubeharden_kubeadm as kubeadm
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_pki as pki
from ansible.module_utils.kubeharden_kubectl import transient


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
    def _containerd(self) -> tuple[dict, str] | Exception:
        try:
            config, _unknown = containerd.effective(containerd.CONFIG)
        except FileNotFoundError as exc:
            return node.NotApplicable(str(exc))
        except containerd.ConfigError as exc:
            return node.ReadError(str(exc))
        if not isinstance(config.get("version"), int) or config["version"] < 3:
            return node.ReadError(f"containerd's configuration is version {config.get('version', 1)}: containerd 1.x, "
                                  "out of upstream support; the KH-CRI controls judge containerd 2.x")
        return config, f"containerd config dump ({containerd.CONFIG})"

    @functools.cached_property
    def release_pause_image(self) -> str:
        """The pause image the node's kubeadm names for the kubelet's release (kubeadm config images list, offline
        with an explicit version): the sandbox image that release is tested with."""
        try:
            version = node.run(["kubelet", "--version"]).stdout.split()[-1]
            listed = node.run(["kubeadm", "config", "images", "list", "--kubernetes-version", version])
        except (FileNotFoundError, IndexError):
            raise node.NotApplicable("no kubelet and kubeadm on this node to name the release's pause image") from None
        pause = [line.strip() for line in listed.stdout.splitlines() if "/pause:" in line]
        if listed.returncode != 0 or not pause:
            raise node.ReadError(f"kubeadm config images list --kubernetes-version {version} named no pause image: "
                                 f"{listed.stderr.strip()[-300:]}")
        return pause[0]

    @property
    def containerd(self) -> tuple[dict, str]:
        """containerd's effective configuration, as `containerd config dump` prints it (imports and migration
        applied), and where it came from; read once, a failure kept for every control that reads it."""
        found = self._containerd
        if isinstance(found, Exception):
            raise found
        return found

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

    # Which controls it decides: kubeharden_controls.decided_by_rendering. Modes of what kubeadm itself creates
    # (etcd's data directory, the kubelet's config.yaml) are for site.yml after it.

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


def certificate_inventory() -> list[dict]:
    """Every certificate of the node (kubeadm and etcd PKI, kubeconfig clients, the kubelet's), described."""
    import datetime as dt

    items = pki.collect(node.load_yaml)
    cas = [item for item in items if item.cert is not None and item.cert.is_ca]
    now = dt.datetime.now(dt.UTC)
    return [pki.describe(item, cas, now) for item in items]


# -- where a file lives, as the node's components name it ------------------------------------------------

def resolve_path(check: dict, state: Node) -> str:
    if "path" in check:
        return check["path"]
    source = check["path_from"]
    if source["read"] == "flag":
        flags, where = state.flags(source["component"])
        value = flags.get(source["flag"], source.get("default"))
    elif source["read"] == "kube_proxy":  # a file of the running kube-proxy, as its own filesystem shows it
        value, where = kube_proxy_setting(state.kube_proxy, source["key"], source.get("flag"))
        return node.path_in_root(state.kube_proxy["root"], value) if value else \
            no_path(source["key"], where)
    else:  # kubelet configuration key, or the kubelet's own --config
        kubelet = state.kubelet
        value = kubelet["config_path"] if source["key"] == "--config" else node.dig(kubelet["config"], source["key"])
        where = kubelet["flag_source"]
    if not value:
        no_path(source.get("flag") or source.get("key"), where)
    return value


def no_path(name: str, where: str):
    raise node.NotApplicable(f"no path: {name} is not set ({where})")


def kube_proxy_setting(proxy: dict, key: str, flag: str | None) -> tuple[object, str]:
    """A kube-proxy setting: from its --config file when it has one (kube-proxy then ignores most flags), else its
    flag. "" and null, as kubeadm writes unset fields, are unset."""
    if proxy["config"] is not None:
        value = node.dig(proxy["config"], key)
        return (None if value in ("", None) else value), f"{proxy['config_path']} of kube-proxy (pid {proxy['pid']})"
    return proxy["flags"].get(flag) if flag else None, f"kube-proxy's command line (pid {proxy['pid']})"
