"""A real kubeadm cluster on the lab's nodes: the release's binaries installed as packages would install them,
containerd with the component images imported, `kubeadm init` on the first control-plane node and
`kubeadm join` on every other node.

Everything here is what an operator does before and around kubeadm (install, container runtime, CNI
configuration, the kubeadm configuration file); everything kubeadm writes is kubeadm's own. The lab's own
settings, those a container on this host needs and a real node would not, are in `LAB_KUBELET` and
`IGNORED_PREFLIGHT`, each with its reason.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kubeharden.lab import addons, docker, runtime
from kubeharden.lab.errors import LabError
from kubeharden.lab.files import NodeLayout
from kubeharden.lab.kubernetes import Release

NODE_RELEASE_DIR = "/opt/kubeharden-lab/kubernetes"  # the cached build, mounted read-only into every node
LAB_CONFIG_DIR = "/etc/kubeharden-lab"
KUBEADM_CONFIG = f"{LAB_CONFIG_DIR}/kubeadm.yaml"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/12"
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
PKI_DIR = "/etc/kubernetes/pki"
HOST_ETCD_PKI = "/etc/etcd/pki"  # a host etcd's own copies of its CA, server and peer certificates
PACKAGE_BINARIES = ("kubeadm", "kubelet", "kubectl")
DEFAULT_CERT_DAYS = 365  # kubeadm's leaf validity  # what the kubeadm, kubelet and kubectl packages install

# The lab's KubeletConfiguration settings, merged into kubeadm's: facts of this host, not hardening choices.
LAB_KUBELET = {
    # The host runs cgroup v1, which the kubelet refuses from 1.35 unless told.
    "failCgroupV1": False,
    # The nodes' image filesystem is the host's disk, shared by every lab, and their images are imported, never
    # pulled (no registry): image garbage collection or disk-pressure eviction at the kubelet's default
    # thresholds (85 % used, 15 % free) would delete an image a static pod restarts from, for good.
    "imageGCHighThresholdPercent": 100,
    "imageGCLowThresholdPercent": 99,
    "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                     "nodefs.inodesFree": "1%"},
    # Pods that use the node's resolver (CoreDNS's upstream) get one that answers nothing (lab_resolv_conf).
    "resolvConf": f"{LAB_CONFIG_DIR}/resolv.conf",
}

# The lab's KubeProxyConfiguration settings: the connection-tracking table's size (nf_conntrack_max) is the host
# kernel's, which no lab node may write; kube-proxy leaves it as it is with maxPerCore 0.
LAB_KUBE_PROXY = {"conntrack": {"maxPerCore": 0}}
PROXY_MODES = ("iptables", "nftables")  # kube-proxy's modes the lab runs (iptables is kube-proxy's default)

# Preflight checks a container on this host cannot pass, each with the reason; every other check must pass.
IGNORED_PREFLIGHT = {
    # The kernel's configuration is not readable in a container (no /boot, no /proc/config.gz) and the host
    # runs cgroup v1: kubeadm's system verification reports both as errors.
    "SystemVerification": "no kernel configuration in a container; cgroup v1 host",
}

# kubeadm init runs every phase, its addons (kube-proxy, CoreDNS) included: their images are built (addons.py).
SKIPPED_PHASES: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterNode:
    name: str
    role: str  # control-plane or worker
    ip: str
    container: str
    index: int  # position in the lab, for the node's pod subnet


# What the kubelet and kubeadm Debian packages (pkgs.k8s.io) install beside the binaries.
KUBELET_SERVICE = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
--kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the \
KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, \
the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS \
should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""


def lab_resolv_conf(node: ClusterNode) -> str:
    """The resolver the kubelet gives pods that use the node's (CoreDNS, for names outside the cluster): the node's
    own address, where nothing answers DNS. CoreDNS refuses to start without an upstream, and no lookup may leave the
    lab (the node itself has no resolver: node_files/.../init)."""
    return (f"# kubeharden lab: pods that use the node's resolver (CoreDNS's upstream) ask the node itself, where\n"
            f"# nothing answers: no lookup leaves the lab.\nnameserver {node.ip}\noptions timeout:1 attempts:1\n")


def install_layout(node: ClusterNode, release: Release) -> NodeLayout:
    """What the packages and the operator put on a node before kubeadm runs."""
    manifest = release.manifest()
    layout = runtime.install_layout(manifest["pause_image"])
    layout.directory("/usr/lib/systemd/system/kubelet.service.d", 0o755)
    layout.file("/usr/lib/systemd/system/kubelet.service", KUBELET_SERVICE, 0o644)
    layout.file("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN, 0o644)
    layout.directory("/etc/cni", 0o755)
    layout.directory("/etc/cni/net.d", 0o755)
    # kubeadm's documented prerequisite ("Enable IPv4 packet forwarding"); the lab presets it per node.
    layout.file("/etc/sysctl.d/k8s.conf", "net.ipv4.ip_forward = 1\n", 0o644)
    layout.directory(LAB_CONFIG_DIR, 0o700)
    layout.file(LAB_KUBELET["resolvConf"], lab_resolv_conf(node), 0o644)
    return layout


def install_commands(release: Release, addon_images: str) -> str:
    """Install the runtime and the release as upstream's archives and packages do; import every image kubeadm and
    the addons ask for (no registry: `addon_images` is the node's path of the addons archive)."""
    binaries = " ".join(f"{NODE_RELEASE_DIR}/bin/{name}" for name in PACKAGE_BINARIES)
    # Debian's etcd-server package (there for host etcd's unit and user) leaves an etcd-owned /var/lib/etcd;
    # kubeadm creates its own, root-owned, and host etcd makes it again for the etcd user.
    return runtime.install_commands() + f"""
rm -rf /var/lib/etcd
install -m 0755 {binaries} /usr/bin/
systemctl daemon-reload
systemctl enable kubelet.service
ctr -n k8s.io images import --no-unpack=false {NODE_RELEASE_DIR}/{release.images_archive.name} >/dev/null
ctr -n k8s.io images import --no-unpack=false {addon_images} >/dev/null
"""


def _document(api_version: str, kind: str, body: dict) -> dict:
    return {"apiVersion": api_version, "kind": kind, **body}


def _registration(node: ClusterNode) -> dict:
    return {"name": node.name, "criSocket": CRI_SOCKET, "ignorePreflightErrors": sorted(IGNORED_PREFLIGHT)}


@dataclass(frozen=True)
class Secrets:
    """What `init` hands to `join`: a bootstrap token and the key of the uploaded control-plane certificates."""

    token: str
    certificate_key: str

    @classmethod
    def create(cls) -> Secrets:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        token = ("".join(secrets.choice(alphabet) for _ in range(6)) + "."
                 + "".join(secrets.choice(alphabet) for _ in range(16)))
        return cls(token, secrets.token_hex(32))


def _etcd_section(release: Release, external: list[ClusterNode] | None) -> dict:
    if not external:
        return {"local": {"imageTag": release.etcd_image_tag}}
    return {"external": {"endpoints": [f"https://{m.ip}:2379" for m in external],
                         "caFile": f"{PKI_DIR}/etcd/ca.crt", "certFile": f"{PKI_DIR}/apiserver-etcd-client.crt",
                         "keyFile": f"{PKI_DIR}/apiserver-etcd-client.key"}}


def _signing_duration(cert_days: int) -> dict:
    """Short-lived leaves: the kubelets' client certificates (signed by the controller-manager) as well."""
    if cert_days == DEFAULT_CERT_DAYS:
        return {}
    return {"controllerManager": {"extraArgs": [{"name": "cluster-signing-duration", "value": f"{cert_days * 24}h"}]}}


def kube_proxy_configuration(proxy_mode: str) -> dict:
    """The lab's KubeProxyConfiguration: its facts, and the mode asked for (kubeadm's default, iptables, unsaid)."""
    if proxy_mode not in PROXY_MODES:
        raise LabError(f"--kube-proxy-mode {proxy_mode!r} is not one the lab runs: choose one of "
                       f"{', '.join(PROXY_MODES)}")
    return {**LAB_KUBE_PROXY, **({"mode": proxy_mode} if proxy_mode != "iptables" else {})}


def init_configuration(node: ClusterNode, release: Release, endpoint: str, cert_days: int, keys: Secrets,
                       external_etcd: list[ClusterNode] | None = None, proxy_mode: str = "iptables") -> str:
    """kubeadm init's configuration; with `external_etcd`, the apiserver uses those members' host etcd."""
    kubeadm_api = "kubeadm.k8s.io/v1beta4"
    documents = [
        _document(kubeadm_api, "InitConfiguration", {
            "bootstrapTokens": [{"token": keys.token, "ttl": "2h0m0s"}],
            "certificateKey": keys.certificate_key,
            "localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": 6443},
            "nodeRegistration": _registration(node),
            "skipPhases": list(SKIPPED_PHASES),
        }),
        _document(kubeadm_api, "ClusterConfiguration", {
            "kubernetesVersion": release.version,
            "controlPlaneEndpoint": endpoint,
            "certificateValidityPeriod": f"{cert_days * 24}h0m0s",
            "networking": {"podSubnet": POD_SUBNET, "serviceSubnet": SERVICE_SUBNET},
            "etcd": _etcd_section(release, external_etcd),
            **_signing_duration(cert_days),
        }),
        _document("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration", dict(LAB_KUBELET)),
        _document("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration", kube_proxy_configuration(proxy_mode)),
    ]
    return yaml.safe_dump_all(documents, sort_keys=False)


def join_configuration(node: ClusterNode, endpoint: str, keys: Secrets, ca_hash: str) -> str:
    body = {
        "discovery": {"bootstrapToken": {"apiServerEndpoint": endpoint, "token": keys.token,
                                         "caCertHashes": [ca_hash]}},
        "nodeRegistration": _registration(node),
    }
    if node.role == "control-plane":
        body["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": 6443},
                                "certificateKey": keys.certificate_key}
    return yaml.safe_dump(_document("kubeadm.k8s.io/v1beta4", "JoinConfiguration", body), sort_keys=False)


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's discovery hash: sha256 over the CA's DER-encoded SubjectPublicKeyInfo."""
    public_key = x509.load_pem_x509_certificate(ca_pem).public_key()
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _kubeadm(node: ClusterNode, action: str, config: str, log, *extra: str) -> None:
    """Write the lab's kubeadm configuration on the node (0600: it holds the token) and run kubeadm with it."""
    _write_config(node, KUBEADM_CONFIG, config)
    started = time.monotonic()
    _run(node, ["kubeadm", action, "--config", KUBEADM_CONFIG, *extra], f"kubeadm {action}")
    log(f"{node.name}: kubeadm {action} done in {time.monotonic() - started:.0f} s")


def kubectl(container: str, *args: str, check: bool = False):
    return docker.exec_(container, "kubectl", f"--kubeconfig={ADMIN_KUBECONFIG}", "--request-timeout=10s", *args,
                        check=check)


def bootstrap(nodes: list[ClusterNode], release: Release, cert_days: int, log,
              external_etcd: list[ClusterNode] | None = None, proxy_mode: str = "iptables") -> None:
    """`kubeadm init` on the first control-plane node, `kubeadm join` on the others one at a time, then the pod
    network and the probe workload."""
    first = nodes[0]
    endpoint = f"{first.ip}:6443"
    keys = Secrets.create()
    log(f"{first.name}: kubeadm init (Kubernetes {release.label})")
    # --upload-certs: the other control-plane nodes fetch the shared certificates with the certificate key.
    config = init_configuration(first, release, endpoint, cert_days, keys, external_etcd, proxy_mode)
    _kubeadm(first, "init", config, log, "--upload-certs")
    ca_pem = docker.exec_(first.container, "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    ca_hash = ca_cert_hash(ca_pem)
    for node in nodes[1:]:
        log(f"{node.name}: kubeadm join ({node.role})")
        _kubeadm(node, "join", join_configuration(node, endpoint, keys, ca_hash), log)
    if cert_days != DEFAULT_CERT_DAYS:
        _forget_short_validity(first)
    install_network(nodes, release, log)


def apply(first: ClusterNode, documents: str, what: str) -> None:
    done = docker.exec_(first.container, "kubectl", f"--kubeconfig={ADMIN_KUBECONFIG}", "--request-timeout=30s",
                        "apply", "-f", "-", input=documents, check=False)
    if done.returncode != 0:
        raise LabError(f"node {first.name}: applying {what} failed: {(done.stderr or done.stdout).strip()[-800:]}")


def install_network(nodes: list[ClusterNode], release: Release, log, timeout: float = 180) -> None:
    """flannel and kube-router's firewall (addons.py), then each node's CNI configuration from the subnet flanneld
    took for it, then the probe workload. Run once kubeadm made the nodes a cluster (or a user did, --no-kubeadm)."""
    first = nodes[0]
    started = time.monotonic()
    # The network's pods reach the apiserver through the `kubernetes` Service: kube-proxy first, or their first
    # connection waits out its timeout.
    proxy = docker.exec_(first.container, "kubectl", f"--kubeconfig={ADMIN_KUBECONFIG}", "-n", "kube-system",
                         "rollout", "status", "daemonset/kube-proxy", f"--timeout={timeout:.0f}s", check=False)
    if proxy.returncode != 0 and "NotFound" not in proxy.stderr:
        raise LabError(f"kube-proxy did not run on every node within {timeout:.0f} s: {proxy.stderr.strip()[-600:]}")
    apply(first, addons.as_yaml(addons.network_manifests(release, POD_SUBNET)), "the pod network (flannel)")
    deadline = started + timeout
    for node in nodes:  # each node writes its CNI configuration once flanneld has its subnet (flannel-cni)
        while docker.exec_(node.container, "test", "-s", addons.CNI_CONFIG, check=False).returncode:
            if time.monotonic() > deadline:
                logs = kubectl(first.container, "-n", addons.NAMESPACE, "logs", "--tail=20",
                               "--selector=app.kubernetes.io/name=flannel", "--prefix", "--all-containers")
                raise LabError(f"node {node.name}: no {addons.CNI_CONFIG} within {timeout:.0f} s (flanneld writes "
                               f"{addons.FLANNEL_SUBNET_FILE} first); flannel's last lines:\n"
                               f"{(logs.stdout or logs.stderr)[-1500:]}")
            time.sleep(1)
    apply(first, addons.as_yaml(addons.probe_manifests(release)), "the probe workload")
    log(f"pod network (flannel VXLAN), NetworkPolicy engine and probe workload in {time.monotonic() - started:.0f} s")


def _forget_short_validity(first: ClusterNode) -> None:
    """Short-lived certificates are the lab's starting state only: the cluster's stored configuration goes back to
    kubeadm's default validity, so `kubeadm certs renew` issues certificates as it would on any cluster."""
    script = (f"kubectl --kubeconfig={ADMIN_KUBECONFIG} -n kube-system get configmap kubeadm-config -o yaml"
              f" | sed '/certificateValidityPeriod:/d'"
              f" | kubectl --kubeconfig={ADMIN_KUBECONFIG} replace -f -")
    _run(first, ["sh", "-euc", script], "resetting the stored certificate validity")


def wait_ready(nodes: list[ClusterNode], timeout: float = 240, pods: bool = True) -> None:
    """Until the apiserver answers /readyz with ok, every node is Ready and (with `pods`) every pod of the cluster
    is Ready; names what is missing otherwise."""
    first = nodes[0]
    deadline = time.monotonic() + timeout
    problem = ""
    while time.monotonic() < deadline:
        ready = kubectl(first.container, "get", "--raw", "/readyz")
        if ready.returncode != 0 or ready.stdout.strip() != "ok":
            problem = f"/readyz answers {(ready.stdout or ready.stderr).strip()[-300:]!r}"
        else:
            listed = kubectl(first.container, "get", "nodes", "-o", "json")
            states = _node_ready(json.loads(listed.stdout)) if listed.returncode == 0 else {}
            missing = [n.name for n in nodes if states.get(n.name) is not True]
            waiting = _pods_not_ready(first) if pods and not missing else []
            if not missing and not waiting:
                return
            problem = (f"nodes not Ready yet: {', '.join(missing)}" if missing
                       else f"pods not Ready yet: {', '.join(waiting[:10])}")
        time.sleep(2)
    raise LabError(f"the cluster is not ready after {timeout:.0f} s: {problem}")


def _pods_not_ready(first: ClusterNode) -> list[str]:
    listed = kubectl(first.container, "get", "pods", "--all-namespaces", "-o", "json")
    if listed.returncode != 0:
        return [f"(pods unreadable: {listed.stderr.strip()[-200:]})"]
    waiting = []
    for pod in json.loads(listed.stdout)["items"]:
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if pod.get("status", {}).get("phase") != "Succeeded" and conditions.get("Ready") != "True":
            waiting.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
    return waiting


def _node_ready(node_list: dict) -> dict[str, bool]:
    states = {}
    for item in node_list.get("items", []):
        conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
        states[item["metadata"]["name"]] = conditions.get("Ready") == "True"
    return states


def host_etcd(members: list[ClusterNode], release: Release, cert_days: int, log) -> None:
    """etcd as a host systemd service on the control-plane nodes (kubespray's "host" deployment), for kubeadm's
    external etcd: the built etcd installed over Debian's package (dpkg-divert), its certificates issued by
    kubeadm's own certs phases from one etcd CA, copies owned by the etcd user, every member started together."""
    first = members[0]
    ca = {}
    for index, node in enumerate(members):
        config = yaml.safe_dump_all([
            _document("kubeadm.k8s.io/v1beta4", "InitConfiguration", {
                "localAPIEndpoint": {"advertiseAddress": node.ip}, "nodeRegistration": _registration(node)}),
            _document("kubeadm.k8s.io/v1beta4", "ClusterConfiguration", {
                "kubernetesVersion": release.version, "certificateValidityPeriod": f"{cert_days * 24}h0m0s"}),
        ], sort_keys=False)
        _write_config(node, f"{LAB_CONFIG_DIR}/kubeadm-etcd-certs.yaml", config)
        phases = ["etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client"]
        if index == 0:
            phases.insert(0, "etcd-ca")
        else:  # one etcd CA for every member, as kubeadm's external etcd guide copies it
            for name, content in ca.items():
                mode = "0600" if name.endswith(".key") else "0644"
                docker.exec_(node.container, "sh", "-euc", f"install -d -m 0755 {PKI_DIR}/etcd; umask 077; "
                             f"cat > {PKI_DIR}/etcd/{name}; chmod {mode} {PKI_DIR}/etcd/{name}", input=content)
        for phase in phases:
            _run(node, ["kubeadm", "init", "phase", "certs", phase, "--config",
                        f"{LAB_CONFIG_DIR}/kubeadm-etcd-certs.yaml"], f"kubeadm init phase certs {phase}")
        if index == 0:
            ca = {name: docker.exec_(first.container, "cat", f"{PKI_DIR}/etcd/{name}").stdout
                  for name in ("ca.crt", "ca.key")}
        # The flags kubeadm would give this member, from its own etcd phase written into a scratch root.
        render = f"{LAB_CONFIG_DIR}/etcd-render"
        _run(node, ["sh", "-euc", f"install -d -m 0700 {render}; cp {LAB_CONFIG_DIR}/kubeadm-etcd-certs.yaml "
                    f"{render}/kubeadm.yaml; kubeadm init phase etcd local --config /kubeadm.yaml --rootfs {render}"],
             "kubeadm init phase etcd local")  # --rootfs: kubeadm chroots there before it reads --config
        manifest = docker.exec_(node.container, "cat", f"{render}/etc/kubernetes/manifests/etcd.yaml").stdout
        docker.exec_(node.container, "rm", "-rf", render)
        environment = etcd_environment(manifest, members, HOST_ETCD_PKI)
        encoded = base64.b64encode(environment.encode()).decode()
        _run(node, ["sh", "-euc", f"""
dpkg-divert --quiet --local --rename --add /usr/bin/etcd
dpkg-divert --quiet --local --rename --add /usr/bin/etcdctl
install -m 0755 {NODE_RELEASE_DIR}/bin/etcd {NODE_RELEASE_DIR}/bin/etcdctl /usr/bin/
install -d -m 0700 -o etcd -g etcd {HOST_ETCD_PKI} /var/lib/etcd
for name in ca.crt server.crt peer.crt; do install -m 0644 -o etcd -g etcd {PKI_DIR}/etcd/$name {HOST_ETCD_PKI}/; done
for name in server.key peer.key; do install -m 0600 -o etcd -g etcd {PKI_DIR}/etcd/$name {HOST_ETCD_PKI}/; done
echo {encoded} | base64 -d > /etc/default/etcd
systemctl enable etcd.service
systemctl start --no-block etcd.service
"""], "installing etcd")
        log(f"{node.name}: etcd {release.etcd} as a host service")


def etcd_environment(manifest: str, members: list[ClusterNode], pki_dir: str) -> str:
    """/etc/default/etcd for etcd run as a host service: the flags of the member kubeadm would run (its etcd
    manifest), as variables; every member listed and started together, the certificates in `pki_dir`."""
    command = yaml.safe_load(manifest)["spec"]["containers"][0]["command"]
    flags = dict(item[2:].split("=", 1) for item in command[1:])
    flags["initial-cluster"] = ",".join(f"{m.name}=https://{m.ip}:2380" for m in members)
    flags["initial-cluster-state"] = "new"
    lines = ["# etcd as a host systemd service; read by etcd.service (EnvironmentFile)."]
    for name, value in flags.items():
        value = value.replace(f"{PKI_DIR}/etcd", pki_dir)
        lines.append(f"ETCD_{name.upper().replace('-', '_')}={value}")
    return "\n".join(lines) + "\n"


def _write_config(node: ClusterNode, path: str, content: str) -> None:
    encoded = base64.b64encode(content.encode()).decode()
    docker.exec_(node.container, "sh", "-euc",
                 f"install -d -m 0700 {LAB_CONFIG_DIR}; umask 077; echo {encoded} | base64 -d > {path}")


def _run(node: ClusterNode, command: list[str], what: str) -> None:
    """Run a command on the node; on failure, say what failed with the last 40 lines of its output."""
    result = docker.exec_(node.container, *command, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise LabError(f"node {node.name}: {what} failed (exit {result.returncode}); its last lines:\n"
                       + "\n".join(output[-40:]))
