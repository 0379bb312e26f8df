"""Bring a lab of real Kubernetes nodes up, report on it, and take it down.

Nodes are systemd containers on a docker network the lab creates (`--internal`: no route out, never the
host network). Each runs sshd with the lab's key, containerd and the kubelet of a release built from source
(kubernetes.py); `kubeadm init` and `kubeadm join` make them a cluster (cluster.py), with etcd stacked as
kubeadm's static pod or run as the host's etcd.service.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kubeharden import catalogue
from kubeharden.lab import addons, cluster, connectivity, docker, kubernetes, runtime
from kubeharden.lab.errors import LabError
from kubeharden.lab.files import NodeLayout
from kubeharden.lab.image import LAB_ADMIN_USER, ImageSpec, ensure_image
from kubeharden.lab.kubernetes import DEFAULT_MINOR

ETCD_TOPOLOGIES = ("static", "host")
MARKER = "/etc/kubeharden-lab/node.json"
ADDONS_DIR = "/opt/kubeharden-lab/addons"  # the addons' images archive, mounted read-only into every node
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
RUN_OPTIONS = [
    # PLATFORM facts: --privileged fails here; this set runs systemd as PID 1.
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined", "--tmpfs", "/run", "--tmpfs", "/tmp",
    # What kubeadm's preflight demands of a node; the lab presets it in the node's network namespace.
    "--sysctl", "net.ipv4.ip_forward=1",
]
# Nodes run Kubernetes in their own cgroup namespace, which the node's first process (kubeharden-lab/init)
# remounts writable so the kubelet finds its cgroups where it creates them; containerd's overlay snapshots
# need a volume (overlay on docker's overlay does not work); a terminal gives the node a /dev/console for
# the kubelet's /dev/kmsg (kubeharden-lab-kernel.service), as the host's must stay unread.
# kubeadm's kube-proxy and the network addons run privileged, and runc gives a privileged container every device,
# which cgroup v1 allows only where the parent cgroup does: the node's device cgroup allows them (it sees only its own
# /dev, a tmpfs).
KUBERNETES_NODE_OPTIONS = ["--cgroupns=private", "--entrypoint", "/usr/local/lib/kubeharden-lab/init", "-t",
                           "-v", "/var/lib/containerd", "--device-cgroup-rule", "a *:* rwm"]

# Several labs share two cores. Restarting a stacked etcd stalls its node's kubelet (its calls to the local
# apiserver time out until etcd is back; measured over 2 min with two labs running), and a component that
# crashed meanwhile then sits in the kubelet's crash-loop back-off (up to 5 min) before it runs again.
LAB_HEALTH_TIMEOUT = 600


def kubernetes_group_vars(release: kubernetes.Release) -> str:
    """The lab's own facts, for playbooks/bootstrap.yml's kubeadm configuration (cluster.py has their reasons)."""
    facts = {"control_plane_kubeadm_kubelet_extra": cluster.LAB_KUBELET,
             "control_plane_kubeadm_kube_proxy_extra": cluster.LAB_KUBE_PROXY,
             "control_plane_kubeadm_etcd_image_tag": release.etcd_image_tag,
             "control_plane_kubeadm_ignore_preflight_errors": sorted(cluster.IGNORED_PREFLIGHT),
             "control_plane_kubeadm_skip_phases": list(cluster.SKIPPED_PHASES),
             "control_plane_kubeadm_pod_subnet": cluster.POD_SUBNET,
             "control_plane_health_timeout": LAB_HEALTH_TIMEOUT,
             # The cluster's pod network (addons.py): flannel's VXLAN between nodes, in the pod subnet.
             "firewall_cni_presets": ["vxlan"],
             "firewall_pod_cidrs": [cluster.POD_SUBNET],
             # The cluster's namespaces under its policies: the role's, and the probe workload's.
             "cluster_policies_namespaces": [*catalogue.role_defaults().get("cluster_policies", {}).get(
                 "cluster_policies_namespaces", []), addons.PROBE_NAMESPACE_POLICY]}
    if release.prerelease:
        # The lab was asked for this pre-release by name: its inventory opts in, a user's never does by default.
        facts["control_plane_allow_prerelease"] = True
    return ("---\n# Written by `kubeharden lab up`; removed by `down`. What kubeadm needs on these containers, for\n"
            "# playbooks/bootstrap.yml (kubeharden/lab/cluster.py says why each is needed).\n"
            + yaml.safe_dump(facts, sort_keys=False))


@dataclass(frozen=True)
class Topology:
    control_planes: int = 1
    workers: int = 1
    etcd: str = "static"
    debian: str = "12"
    cert_days: int = 365  # validity of the leaf certificates (shorter ones exercise renewal)
    # The Kubernetes release kubeadm bootstraps: a minor (the newest built or served patch) or an exact patch.
    kubernetes: str = DEFAULT_MINOR
    # False: Kubernetes installed (binaries, containerd, images) but kubeadm init and join left to the user,
    # as before playbooks/bootstrap.yml.
    kubeadm: bool = True
    containerd: str = runtime.DEFAULT_CONTAINERD  # the containerd release line (runtime.CONTAINERD_RELEASES)
    kube_proxy_mode: str = "iptables"  # or nftables
    cni: str = addons.DEFAULT_CNI  # the pod network (addons.CNIS)

    def validate(self) -> None:
        if self.control_planes not in (1, 3, 5):
            raise LabError(f"--control-planes must be 1, 3 or 5 (an etcd quorum), not {self.control_planes}")
        if not 0 <= self.workers <= 20:
            raise LabError(f"--workers must be between 0 and 20, not {self.workers}")
        if self.etcd not in ETCD_TOPOLOGIES:
            raise LabError(f"--etcd must be one of {', '.join(ETCD_TOPOLOGIES)}, not {self.etcd!r}")
        if not 1 <= self.cert_days <= 365:
            raise LabError(f"--cert-days must be between 1 and 365, not {self.cert_days}")
        ImageSpec(self.debian).suite  # noqa: B018 - raises for an unknown release
        runtime.Runtime(self.containerd)  # raises for a containerd the lab does not build
        cluster.kube_proxy_configuration(self.kube_proxy_mode)  # raises for an unknown mode
        if self.cni not in addons.CNIS:
            raise LabError(f"--cni {self.cni!r} is not a pod network the lab runs: choose one of "
                           f"{', '.join(addons.CNIS)}")

    def node_names(self) -> list[tuple[str, str]]:
        return ([(f"cp{i}", "control-plane") for i in range(1, self.control_planes + 1)]
                + [(f"w{i}", "worker") for i in range(1, self.workers + 1)])


@dataclass
class Node:
    name: str
    role: str
    ip: str
    container: str


# `lab down`: a container the engine could not remove is tried again (Lab.down).
REMOVE_ATTEMPTS, REMOVE_RETRY_SECONDS = 4, 5
FREEZER_ROOT = Path("/sys/fs/cgroup/freezer/docker")  # the engine's containers on a cgroup v1 host


def thaw(container: str, root: Path = FREEZER_ROOT) -> list[Path]:
    """Thaws every frozen cgroup of a node (cgroup v1). runc inside a node freezes a pod's cgroup while it changes
    it; a runc killed meanwhile (a kubelet or containerd restart) leaves it FROZEN, with a `runc init` stuck in it.
    The kernel cannot end the node's processes then: `docker rm -f` fails with "did not receive an exit event", and
    kill -9 of the node's init does nothing (seen in CI after the kubeadm upgrade test). Returns what it thawed."""
    thawed = []
    for directory in root.glob(f"{container}*"):
        for state in directory.rglob("freezer.state"):
            try:
                if state.read_text().strip() != "THAWED":
                    state.write_text("THAWED")
                    thawed.append(state)
            except OSError:
                continue  # the cgroup went away meanwhile, or this user may not write it
    return thawed


@dataclass
class LabState:
    name: str
    topology: Topology
    network: str
    subnet: str
    image: str
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        if "kubernetes" not in raw["topology"]:
            raise LabError(f"the lab in {path.parent.parent} was made by a kubeharden before real Kubernetes "
                           f"(its nodes hold files that imitate kubeadm): run `kubeharden lab down --name "
                           f"{raw['name']}` and bring it up again")
        if "containerd" not in raw["topology"]:
            raise LabError(f"the lab in {path.parent.parent} was made by an older kubeharden (Debian's containerd 1.6, "
                           f"no kube-proxy, CoreDNS or pod network between nodes): run `kubeharden lab down --name "
                           f"{raw['name']}` and bring it up again")
        topology = Topology(**raw["topology"])
        return cls(raw["name"], topology, raw["network"], raw["subnet"], raw["image"],
                   [Node(**n) for n in raw["nodes"]])

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


class Lab:
    def __init__(self, name: str = "lab", inventory_dir: str | Path | None = None, log=print):
        if not name.replace("-", "").isalnum():
            raise LabError(f"lab name {name!r} may hold letters, digits and dashes only")
        self.name = name
        self.inventory_dir = Path(inventory_dir or Path("inventories") / name).absolute()
        self.state_dir = self.inventory_dir / ".lab"
        self.label = f"kubeharden.lab={name}"
        self.network = f"kubeharden-{name}"
        self.log = log

    # -- paths -----------------------------------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def inventory_path(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    @property
    def group_vars_path(self) -> Path:
        return self.inventory_dir / "group_vars" / "all" / "lab.yml"

    def container(self, node: str) -> str:
        return f"kh-{self.name}-{node}"

    def state(self) -> LabState | None:
        return LabState.load(self.state_path)

    # -- up --------------------------------------------------------------------------------------------
    def up(self, topology: Topology) -> LabState:
        topology.validate()
        docker.require_engine()
        _require_inotify_instances()
        release = kubernetes.resolve(topology.kubernetes, log=self.log)
        topology = replace(topology, kubernetes=release.version)
        state = self.state()
        if state is not None and state.topology != topology:
            raise LabError(f"lab {self.name!r} already runs {_describe(state.topology)}; "
                           f"run `kubeharden lab down --name {self.name}` before asking for {_describe(topology)}")
        image = ensure_image(ImageSpec(topology.debian), log=self.log)
        kubernetes.ensure_binaries(release, log=self.log)
        node_runtime = runtime.Runtime(topology.containerd)
        node_runtime.ensure(log=self.log)
        addon_images = addons.ensure_archive(release, image, log=self.log)
        if state is not None and not self._complete(state):
            self.log(f"lab {self.name!r} is incomplete (a node or its network is gone): recreating it")
            self.down(quiet=True)
            state = None
        if state is None:
            state = self._create(topology, image, release, node_runtime, addon_images)
        else:
            self._start_existing(state)
        if topology.kubeadm:
            self._wait_etcd(state)
            cluster.wait_ready(self.cluster_nodes(state))
        self._write_inventory(state)
        return state

    def cluster_nodes(self, state: LabState) -> list[cluster.ClusterNode]:
        return [cluster.ClusterNode(n.name, n.role, n.ip, n.container, index) for index, n in enumerate(state.nodes)]

    def _complete(self, state: LabState) -> bool:
        if docker.inspect("network", state.network) is None:
            return False
        return all(docker.inspect("container", node.container) is not None for node in state.nodes)

    def _start_existing(self, state: LabState) -> None:
        for node in state.nodes:
            if not docker.inspect("container", node.container)["State"]["Running"]:
                self.log(f"starting {node.name}")
                docker.run("start", node.container)
        self._wait_systemd(state.nodes)

    def _create(self, topology: Topology, image: str, release: kubernetes.Release, node_runtime: runtime.Runtime,
                addon_images: Path) -> LabState:
        self.down(quiet=True)  # leftovers of an `up` that failed half-way
        self.state_dir.mkdir(parents=True, exist_ok=True)
        subnet = self._create_network()
        hosts = list(ipaddress.ip_network(subnet).hosts())
        nodes = []
        for name, role in topology.node_names():
            # cpN gets host number 10+N, wN gets 100+N: addresses a reader can map back to nodes.
            offset = (10 if role == "control-plane" else 100) + int(name.lstrip("cpw")) - 1
            nodes.append(Node(name, role, str(hosts[offset]), self.container(name)))
        state = LabState(self.name, topology, self.network, subnet, image, nodes)
        public_key = self._ensure_key()
        # Every node gets the cached builds (the release, the runtime, the addons' images), mounted read-only.
        node_options = [*KUBERNETES_NODE_OPTIONS, "-v", f"{release.directory}:{cluster.NODE_RELEASE_DIR}:ro",
                        *runtime.node_mounts(node_runtime), "-v", f"{addon_images.parent}:{ADDONS_DIR}:ro"]
        for node in nodes:
            self.log(f"starting node {node.name} ({node.role}, {node.ip})")
            docker.run("run", "-d", *RUN_OPTIONS, *node_options, "--network", self.network, "--ip", node.ip,
                       "--hostname", node.name, "--name", node.container, "--label", self.label,
                       "--label", f"kubeharden.node={node.name}", "--label", f"kubeharden.role={node.role}",
                       image, "/sbin/init")
        self._wait_systemd(nodes)
        self._provision(state, public_key, release, f"{ADDONS_DIR}/{addon_images.name}")
        state.save(self.state_path)  # only a fully provisioned lab has a state file
        return state

    def _create_network(self) -> str:
        """Create the lab network on a subnet docker picks, pinned so nodes keep their addresses."""
        for _ in range(5):  # another lab may take the subnet between the two creates: ask docker again
            if docker.inspect("network", self.network) is not None:
                docker.run("network", "rm", self.network)
            docker.run("network", "create", "--internal", "--label", self.label, self.network)
            ipam = docker.inspect("network", self.network)["IPAM"]["Config"][0]
            docker.run("network", "rm", self.network)
            pinned = docker.run("network", "create", "--internal", "--label", self.label, "--subnet", ipam["Subnet"],
                                "--gateway", ipam["Gateway"], self.network, check=False)
            if pinned.returncode == 0:
                return ipam["Subnet"]
        raise LabError(f"could not pin a subnet for network {self.network}: {pinned.stderr.strip()}")

    def _ensure_key(self) -> str:
        if not self.key_path.exists():
            key = ed25519.Ed25519PrivateKey.generate()
            self.key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.OpenSSH,
                                                        serialization.NoEncryption()))
            self.key_path.chmod(0o600)
        key = serialization.load_ssh_private_key(self.key_path.read_bytes(), password=None)
        return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode() + f" kubeharden-{self.name}"

    def _wait_systemd(self, nodes: list[Node], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                result = docker.exec_(node.container, "systemctl", "is-system-running", check=False)
                if result.stdout.strip() in ("running", "degraded"):
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"node {node.name}: systemd did not finish booting within {timeout:.0f} s "
                                   f"(state {result.stdout.strip() or result.stderr.strip()!r})")
                time.sleep(0.5)

    def _node_files(self, node: Node, public_key: str) -> NodeLayout:
        """What every lab node carries whatever its kind: the lab marker and the admin user's SSH key."""
        layout = NodeLayout()
        layout.directory(os.path.dirname(MARKER), 0o755)
        layout.file(MARKER, json.dumps({"lab": self.name, "node": node.name, "role": node.role}) + "\n", 0o644)
        ssh_dir = f"/home/{LAB_ADMIN_USER}/.ssh"
        layout.directory(ssh_dir, 0o700, LAB_ADMIN_USER, LAB_ADMIN_USER)
        layout.file(f"{ssh_dir}/authorized_keys", public_key + "\n", 0o600, LAB_ADMIN_USER, LAB_ADMIN_USER)
        return layout

    def _provision(self, state: LabState, public_key: str, release: kubernetes.Release, addon_images: str) -> None:
        """Install the release on every node as its packages would, then bootstrap the cluster with kubeadm."""
        nodes = self.cluster_nodes(state)

        def install(node: Node, cluster_node: cluster.ClusterNode) -> None:
            layout = self._node_files(node, public_key)
            layout.files += cluster.install_layout(cluster_node, release).files
            docker.exec_(node.container, "tar", "-x", "-p", "-C", "/", input=layout.tar())
            started = time.monotonic()
            docker.exec_(node.container, "sh", "-euc", cluster.install_commands(release, addon_images))
            self.log(f"{node.name}: {runtime.Runtime(state.topology.containerd).describe()} and Kubernetes "
                     f"{release.label} installed, images imported ({time.monotonic() - started:.0f} s)")

        # Every node at once: each mostly waits on its own containerd importing the images.
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            for done in [pool.submit(install, node, cluster_node)
                         for node, cluster_node in zip(state.nodes, nodes, strict=True)]:
                done.result()  # the first failure, as a serial install would have raised it
        if not state.topology.kubeadm:
            return
        control_planes = [n for n in nodes if n.role == "control-plane"]
        workers = [n for n in nodes if n.role != "control-plane"]
        external_etcd = None
        if state.topology.etcd == "host":
            cluster.host_etcd(control_planes, release, state.topology.cert_days, self.log)
            self._wait_etcd(state)
            external_etcd = control_planes
        cluster.bootstrap(control_planes + workers, release, state.topology.cert_days, self.log, external_etcd,
                          state.topology.kube_proxy_mode)

    def _wait_etcd(self, state: LabState, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for node in (n for n in state.nodes if n.role == "control-plane"):
            while True:
                result = etcdctl(node.container, "endpoint", "health")
                if result.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"node {node.name}: etcd is not healthy after {timeout:.0f} s: "
                                   f"{(result.stderr or result.stdout).strip()[-400:]}")
                time.sleep(1)

    def _write_inventory(self, state: LabState) -> None:
        def hosts(role: str) -> dict:
            return {n.name: {"ansible_host": n.ip} for n in state.nodes if n.role == role}

        inventory = {"all": {
            "vars": {"ansible_user": LAB_ADMIN_USER, "ansible_ssh_private_key_file": str(self.key_path),
                     "ansible_ssh_common_args": " ".join(SSH_OPTIONS),
                     "ansible_python_interpreter": "/usr/bin/python3"},
            "children": {
                "k8s_cluster": {"children": {"control_plane": {"hosts": hosts("control-plane")},
                                             "workers": {"hosts": hosts("worker")}}},
                "etcd": {"hosts": {n.name: {} for n in state.nodes if n.role == "control-plane"}},
            },
        }}
        header = (f"# Written by `kubeharden lab up --name {self.name}` ({_describe(state.topology)}).\n"
                  "# Rewritten on every `up`; removed by `down`.\n")
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        self.inventory_path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
        self.group_vars_path.parent.mkdir(parents=True, exist_ok=True)
        self.group_vars_path.write_text(kubernetes_group_vars(
            kubernetes.Release(state.topology.kubernetes, kubernetes.LAB_MINORS[_minor(state.topology)])))

    # -- status, ssh, down -----------------------------------------------------------------------------
    def status(self) -> dict:
        state = self.state()
        if state is None:
            return {"name": self.name, "exists": False, "nodes": []}
        nodes = []
        for node in state.nodes:
            info = docker.inspect("container", node.container)
            running = bool(info and info["State"]["Running"])
            entry = {**asdict(node), "state": "running" if running else ("stopped" if info else "missing"),
                     "etcd": None}
            if running and node.role == "control-plane":
                entry["etcd"] = "healthy" if etcdctl(node.container, "endpoint", "health").returncode == 0 \
                    else "unhealthy"
            nodes.append(entry)
        return {"name": self.name, "exists": True, "topology": asdict(state.topology), "network": state.network,
                "subnet": state.subnet, "image": state.image, "inventory": str(self.inventory_path),
                "ssh_user": LAB_ADMIN_USER, "ssh_key": str(self.key_path), "nodes": nodes}

    def matrix(self) -> connectivity.Matrix:
        """The cluster's connectivity as its users see it (connectivity.py)."""
        state = self.state()
        if state is None:
            raise LabError(f"lab {self.name!r} is not up: run `kubeharden lab up` first")
        if not state.topology.kubeadm:
            raise LabError(f"lab {self.name!r} was brought up without kubeadm: there is no cluster to measure")
        return connectivity.measure(self.cluster_nodes(state))

    def ssh_command(self, node_name: str, command: list[str]) -> list[str]:
        state = self.state()
        if state is None:
            raise LabError(f"lab {self.name!r} is not up: run `kubeharden lab up` first")
        node = next((n for n in state.nodes if n.name == node_name), None)
        if node is None:
            raise LabError(f"no node {node_name!r} in lab {self.name!r}: "
                           f"choose one of {', '.join(n.name for n in state.nodes)}")
        return ["ssh", "-i", str(self.key_path), *SSH_OPTIONS, f"{LAB_ADMIN_USER}@{node.ip}", *command]

    def down(self, quiet: bool = False) -> int:
        docker.require_engine()
        containers = left = docker.list_ids("container", self.label)
        for attempt in range(REMOVE_ATTEMPTS):
            if not left:
                break
            for container in left:
                thaw(container)
            removed = docker.run("rm", "-f", "-v", *left, check=False)
            if removed.returncode == 0:
                break
            # The engine may not have seen the killed node end yet ("did not receive an exit event"): try again.
            if attempt == REMOVE_ATTEMPTS - 1:
                raise LabError(f"docker rm -f failed {REMOVE_ATTEMPTS} times: {removed.stderr.strip()}")
            time.sleep(REMOVE_RETRY_SECONDS)
            left = docker.list_ids("container", self.label)
        for network in docker.list_ids("network", self.label):
            docker.run("network", "rm", network)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        for path in (self.inventory_path, self.group_vars_path):
            if path.exists():
                path.unlink()
        if not quiet:
            self.log(f"lab {self.name!r}: removed {len(containers)} node(s) and its network")
        return len(containers)


def etcdctl(container: str, *args: str, cert: str = "healthcheck-client"):
    """Run etcdctl on a node against its local member, authenticating with a kubeadm client certificate."""
    etcd_pki = f"{cluster.PKI_DIR}/etcd"
    return docker.exec_(container, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints=https://127.0.0.1:2379",
                        f"--cacert={etcd_pki}/ca.crt", f"--cert={etcd_pki}/{cert}.crt", f"--key={etcd_pki}/{cert}.key",
                        "--dial-timeout=3s", "--command-timeout=5s", *args, check=False)


def _minor(topology: Topology) -> str:
    return ".".join(topology.kubernetes.lstrip("v").split(".")[:2])


INOTIFY_INSTANCES = 1024  # systemd, containerd and the kubelet of every node share the root user's instances


def _require_inotify_instances() -> None:
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    current = int(path.read_text()) if path.exists() else INOTIFY_INSTANCES
    if current < INOTIFY_INSTANCES:
        raise LabError(f"fs.inotify.max_user_instances is {current}: nodes running Kubernetes need at least "
                       f"{INOTIFY_INSTANCES} on the host (`sysctl -w fs.inotify.max_user_instances=8192`, "
                       "which ./dev setup does)")


def _describe(topology: Topology) -> str:
    return (f"{topology.control_planes} control-plane + {topology.workers} worker node(s), {topology.etcd} etcd, "
            f"Debian {topology.debian}, Kubernetes {topology.kubernetes}"
            + (" (pre-release)" if kubernetes.is_prerelease(topology.kubernetes) else ""))

