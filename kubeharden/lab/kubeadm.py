"""The files a node has just after `kubeadm init` / `kubeadm join` (Kubernetes v1.31), not yet hardened.

Manifests and kubeconfigs are serialised the way kubeadm does (Go structs through JSON: keys sorted,
sequences not indented), with kubeadm's flags, probes, volumes, modes and owners.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field

import yaml

from kubeharden import node_code
from kubeharden.lab import pki

KUBEADM = node_code.load("kubeharden_kubeadm")  # kubeadm's defaults, shared with the modules that judge configs

KUBERNETES_VERSION = "v1.31.4"
ETCD_IMAGE_TAG = "3.5.15-0"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
SERVICE_SUBNET = "10.96.0.0/12"
POD_SUBNET = "10.244.0.0/16"
CLUSTER_DNS = "10.96.0.10"
PKI_DIR = "/etc/kubernetes/pki"


@dataclass
class NodeFile:
    path: str
    content: bytes | None  # None: a directory
    mode: int
    owner: str = "root"
    group: str = "root"
    link_target: str | None = None


@dataclass
class NodeLayout:
    files: list[NodeFile] = field(default_factory=list)

    def directory(self, path: str, mode: int, owner: str = "root", group: str = "root") -> None:
        self.files.append(NodeFile(path, None, mode, owner, group))

    def file(self, path: str, content: bytes | str, mode: int, owner: str = "root", group: str = "root") -> None:
        data = content.encode() if isinstance(content, str) else content
        self.files.append(NodeFile(path, data, mode, owner, group))

    def symlink(self, path: str, target: str) -> None:
        self.files.append(NodeFile(path, b"", 0o777, link_target=target))


@dataclass(frozen=True)
class Member:
    name: str
    ip: str


def to_yaml(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, width=1 << 20)


def _host_path_volume(name: str, path: str, kind: str) -> dict:
    return {"hostPath": {"path": path, "type": kind}, "name": name}


def _mount(name: str, path: str, read_only: bool = True) -> dict:
    mount = {"mountPath": path, "name": name}
    if read_only:
        mount["readOnly"] = True
    return mount


def _flags(component: str, advertise_address: str = "0.0.0.0", **cluster: str) -> list[str]:
    """kubeadm's command-line flags for a component, sorted as kubeadm writes them."""
    defaults = KUBEADM.default_flags(component, {"advertise_address": advertise_address, "node_name": "",
                                                 "service_subnet": SERVICE_SUBNET, **cluster})
    return [f"--{name}={value}" for name, value in sorted(defaults.items())]


def _https_probe(host: str, path: str, port: int, failure_threshold: int, *, scheme: str = "HTTPS",
                 initial_delay: int | None = 10, period: int = 10) -> dict:
    probe = {"failureThreshold": failure_threshold,
             "httpGet": {"host": host, "path": path, "port": port, "scheme": scheme},
             "periodSeconds": period, "timeoutSeconds": 15}
    if initial_delay is not None:
        probe["initialDelaySeconds"] = initial_delay
    return probe


_CA_VOLUMES = [("ca-certs", "/etc/ssl/certs"), ("etc-ca-certificates", "/etc/ca-certificates"),
               ("usr-local-share-ca-certificates", "/usr/local/share/ca-certificates"),
               ("usr-share-ca-certificates", "/usr/share/ca-certificates")]


def _static_pod(component: str, image: str, command: list[str], probe_host: str, port: int, cpu: str,
                volumes: list[tuple[str, str, str]], annotations: dict | None = None,
                readiness_path: str | None = None, probe_scheme: str = "HTTPS",
                liveness_path: str = "/healthz", memory: str | None = None) -> dict:
    """A kubeadm static pod; `volumes` are (name, path, hostPath type), mounted at the same path."""
    container = {
        "command": command,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "livenessProbe": _https_probe(probe_host, liveness_path, port, 8, scheme=probe_scheme),
        "name": component,
        "resources": {"requests": {"cpu": cpu, **({"memory": memory} if memory else {})}},
        "startupProbe": _https_probe(probe_host, liveness_path, port, 24, scheme=probe_scheme),
        "volumeMounts": sorted((_mount(name, path, read_only=name not in {"etcd-data", "etcd-certs",
                                                                            "flexvolume-dir"})
                                for name, path, _ in volumes), key=lambda m: m["mountPath"]),
    }
    if readiness_path:
        container["readinessProbe"] = _https_probe(probe_host, readiness_path, port, 3, scheme=probe_scheme,
                                                   initial_delay=None, period=1)
    metadata = {"creationTimestamp": None, "labels": {"component": component, "tier": "control-plane"},
                "name": component, "namespace": "kube-system"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"containers": [container], "hostNetwork": True, "priority": 2000001000,
                 "priorityClassName": "system-node-critical",
                 "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                 "volumes": sorted((_host_path_volume(n, p, t) for n, p, t in volumes), key=lambda v: v["name"])},
        "status": {},
    }


def apiserver_manifest(node_ip: str, etcd_servers: str) -> dict:
    p = PKI_DIR
    flags = _flags("kube-apiserver", advertise_address=node_ip, etcd_servers=etcd_servers)
    volumes = [(n, path, "DirectoryOrCreate") for n, path in _CA_VOLUMES]
    volumes.append(("k8s-certs", p, "DirectoryOrCreate"))
    return _static_pod(
        "kube-apiserver", f"registry.k8s.io/kube-apiserver:{KUBERNETES_VERSION}", ["kube-apiserver", *flags],
        node_ip, 6443, "250m", volumes, liveness_path="/livez", readiness_path="/readyz",
        annotations={"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": f"{node_ip}:6443"})


def controller_manager_manifest() -> dict:
    p, conf = PKI_DIR, "/etc/kubernetes/controller-manager.conf"
    flags = _flags("kube-controller-manager", pod_subnet=POD_SUBNET)
    volumes = [(n, path, "DirectoryOrCreate") for n, path in _CA_VOLUMES]
    volumes += [("flexvolume-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "DirectoryOrCreate"),
                ("k8s-certs", p, "DirectoryOrCreate"), ("kubeconfig", conf, "FileOrCreate")]
    return _static_pod("kube-controller-manager",
                       f"registry.k8s.io/kube-controller-manager:{KUBERNETES_VERSION}",
                       ["kube-controller-manager", *flags], "127.0.0.1", 10257, "200m", volumes)


def scheduler_manifest() -> dict:
    conf = "/etc/kubernetes/scheduler.conf"
    flags = _flags("kube-scheduler")
    return _static_pod("kube-scheduler", f"registry.k8s.io/kube-scheduler:{KUBERNETES_VERSION}",
                       ["kube-scheduler", *flags], "127.0.0.1", 10259, "100m",
                       [("kubeconfig", conf, "FileOrCreate")])


def etcd_flags(member: Member, members: list[Member], pki_dir: str = f"{PKI_DIR}/etcd",
               data_dir: str = "/var/lib/etcd") -> dict[str, str]:
    """etcd's flags as kubeadm sets them, by name (without the leading dashes)."""
    flags = KUBEADM.default_flags("etcd", {
        "advertise_address": member.ip, "node_name": member.name, "etcd_data_dir": data_dir,
        "initial_cluster": ",".join(f"{m.name}=https://{m.ip}:2380" for m in members)})
    return {name: value.replace(f"{PKI_DIR}/etcd", pki_dir) for name, value in flags.items()}


def etcd_manifest(member: Member, members: list[Member]) -> dict:
    flags = [f"--{name}={value}" for name, value in etcd_flags(member, members).items()]
    volumes = [("etcd-certs", f"{PKI_DIR}/etcd", "DirectoryOrCreate"),
               ("etcd-data", "/var/lib/etcd", "DirectoryOrCreate")]
    pod = _static_pod("etcd", f"registry.k8s.io/etcd:{ETCD_IMAGE_TAG}", ["etcd", *flags], "127.0.0.1", 2381,
                      "100m", volumes, probe_scheme="HTTP", liveness_path="/livez", readiness_path="/readyz",
                      memory="100Mi",
                      annotations={"kubeadm.kubernetes.io/etcd.advertise-client-urls": f"https://{member.ip}:2379"})
    return pod


def etcd_environment(member: Member, members: list[Member], pki_dir: str) -> str:
    """/etc/default/etcd for etcd run as a host service (kubespray's "host" deployment type)."""
    lines = ["# etcd as a host systemd service; read by etcd.service (EnvironmentFile)."]
    flags = etcd_flags(member, members, pki_dir=pki_dir)
    flags["initial-cluster-state"] = "new"
    for name, value in flags.items():
        lines.append(f"ETCD_{name.upper().replace('-', '_')}={value}")
    return "\n".join(lines) + "\n"


def kubeconfig(server: str, user: str, ca: pki.KeyPair, client: pki.KeyPair | None = None,
               cert_path: str | None = None, cluster: str = "kubernetes", context: str | None = None) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    if client is not None:
        credentials = {"client-certificate-data": b64(client.cert_pem()), "client-key-data": b64(client.key_pem())}
    else:
        credentials = {"client-certificate": cert_path, "client-key": cert_path}
    context = context or f"{user}@{cluster}"
    return to_yaml({
        "apiVersion": "v1",
        "clusters": [{"cluster": {"certificate-authority-data": b64(ca.cert_pem()), "server": server},
                      "name": cluster}],
        "contexts": [{"context": {"cluster": cluster, "user": user}, "name": context}],
        "current-context": context, "kind": "Config", "preferences": {},
        "users": [{"name": user, "user": credentials}],
    })


KUBELET_CONFIG = KUBEADM.KUBELET_DEFAULTS

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

KUBEADM_FLAGS_ENV = ('KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock'
                     f' --pod-infra-container-image={PAUSE_IMAGE}"\n')


# kubeadm's documented prerequisite ("Enable IPv4 packet forwarding"), done before `kubeadm init/join`.
K8S_SYSCTL_CONF = "# sysctl params required by setup, params persist across reboots\nnet.ipv4.ip_forward = 1\n"


def _kubelet_files(layout: NodeLayout, cas: pki.ClusterCAs, hostname: str, node_ip: str, now: dt.datetime,
                   leaf_validity: dt.timedelta) -> None:
    layout.file("/etc/sysctl.d/k8s.conf", K8S_SYSCTL_CONF, 0o644)
    layout.directory("/var/lib/kubelet", 0o700)
    layout.file("/var/lib/kubelet/config.yaml", to_yaml(KUBELET_CONFIG), 0o644)
    layout.file("/var/lib/kubelet/kubeadm-flags.env", KUBEADM_FLAGS_ENV, 0o644)
    layout.directory("/var/lib/kubelet/pki", 0o755)
    client = pki.kubelet_client(cas, hostname, now, leaf_validity)
    stamped = f"kubelet-client-{now.strftime('%Y-%m-%d-%H-%M-%S')}.pem"
    layout.file(f"/var/lib/kubelet/pki/{stamped}", client.cert_pem() + client.key_pem(), 0o600)
    layout.symlink("/var/lib/kubelet/pki/kubelet-client-current.pem", f"/var/lib/kubelet/pki/{stamped}")
    serving, serving_ca = pki.kubelet_serving(hostname, node_ip, now)
    layout.file("/var/lib/kubelet/pki/kubelet.crt", serving.cert_pem() + serving_ca.cert_pem(), 0o644)
    layout.file("/var/lib/kubelet/pki/kubelet.key", serving.key_pem(), 0o600)
    layout.directory("/usr/lib/systemd/system/kubelet.service.d", 0o755)
    layout.file("/usr/lib/systemd/system/kubelet.service", KUBELET_SERVICE, 0o644)
    layout.file("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN, 0o644)
    layout.file("/etc/default/kubelet", "KUBELET_EXTRA_ARGS=\n", 0o644)


def control_plane_layout(cas: pki.ClusterCAs, member: Member, members: list[Member], now: dt.datetime,
                         host_etcd: bool, etcd_owner: str = "etcd",
                         leaf_validity: dt.timedelta = pki.LEAF_VALIDITY) -> NodeLayout:
    layout = NodeLayout()
    node_pki = pki.control_plane_pki(cas, member.name, member.ip, now, leaf_validity)
    layout.directory("/etc/kubernetes", 0o755)
    layout.directory(PKI_DIR, 0o755)
    layout.directory(f"{PKI_DIR}/etcd", 0o755)
    for relative, content in sorted(node_pki.files.items()):
        layout.file(f"{PKI_DIR}/{relative}", content, 0o600 if relative.endswith(".key") else 0o644)
    server = f"https://{member.ip}:6443"
    for name, client in node_pki.kubeconfig_clients.items():
        user = client.cert.subject.get_attributes_for_oid(pki.NameOID.COMMON_NAME)[0].value
        layout.file(f"/etc/kubernetes/{name}", kubeconfig(server, user, cas.ca, client), 0o600)
    node_user = f"system:node:{member.name}"
    layout.file("/etc/kubernetes/kubelet.conf",
                kubeconfig(server, node_user, cas.ca, cert_path="/var/lib/kubelet/pki/kubelet-client-current.pem"),
                0o600)
    layout.directory("/etc/kubernetes/manifests", 0o700)
    etcd_servers = ",".join(f"https://{m.ip}:2379" for m in members) if host_etcd else "https://127.0.0.1:2379"
    manifests = {"kube-apiserver": apiserver_manifest(member.ip, etcd_servers),
                 "kube-controller-manager": controller_manager_manifest(),
                 "kube-scheduler": scheduler_manifest()}
    if host_etcd:
        etcd_pki = "/etc/etcd/pki"
        layout.directory("/etc/etcd", 0o755)
        layout.directory(etcd_pki, 0o700, etcd_owner, etcd_owner)
        for stem in ("ca.crt", "server.crt", "server.key", "peer.crt", "peer.key"):
            layout.file(f"{etcd_pki}/{stem}", node_pki.files[f"etcd/{stem}"],
                        0o600 if stem.endswith(".key") else 0o644, etcd_owner, etcd_owner)
        layout.file("/etc/default/etcd", etcd_environment(member, members, etcd_pki), 0o644)
        layout.directory("/var/lib/etcd", 0o700, etcd_owner, etcd_owner)
    else:
        manifests["etcd"] = etcd_manifest(member, members)
        layout.directory("/var/lib/etcd", 0o700)
    for name, manifest in manifests.items():
        layout.file(f"/etc/kubernetes/manifests/{name}.yaml", to_yaml(manifest), 0o600)
    _kubelet_files(layout, cas, member.name, member.ip, now, leaf_validity)
    return layout


def worker_layout(cas: pki.ClusterCAs, hostname: str, node_ip: str, api_server: str, now: dt.datetime,
                  leaf_validity: dt.timedelta = pki.LEAF_VALIDITY) -> NodeLayout:
    layout = NodeLayout()
    layout.directory("/etc/kubernetes", 0o755)
    layout.directory(PKI_DIR, 0o755)
    layout.file(f"{PKI_DIR}/ca.crt", cas.ca.cert_pem(), 0o644)
    layout.directory("/etc/kubernetes/manifests", 0o700)
    # Written by the kubelet itself after TLS bootstrap, hence its generic names.
    layout.file("/etc/kubernetes/kubelet.conf",
                kubeconfig(api_server, "default-auth", cas.ca, cluster="default-cluster", context="default-context",
                           cert_path="/var/lib/kubelet/pki/kubelet-client-current.pem"), 0o600)
    _kubelet_files(layout, cas, hostname, node_ip, now, leaf_validity)
    return layout
