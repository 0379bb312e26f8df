"""The container runtime of every lab node, as a kubeadm user installs it from upstream's releases: containerd 2.x
with its systemd unit, runc and the CNI plugins, each built from the Go module proxy and cached by version and recipe.

containerd 2.3 is the default: the long-term-support line (maintained until 2028-04), which a platform team pins;
2.4, the newest minor, is a lab option. Debian 12's containerd 1.6 is out of upstream support and lacks the CRI
`RuntimeConfig` call the kubelet asks for its cgroup driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeharden.lab import go_tool
from kubeharden.lab.errors import LabError
from kubeharden.lab.files import NodeLayout

CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
CONTAINERD_RELEASES = {"2.3": "v2.3.7", "2.4": "v2.4.2"}
DEFAULT_CONTAINERD = "2.3"
RUNC_VERSION = "v1.5.3"
CNI_PLUGINS_VERSION = "v1.10.0"

_CONTAINERD_LDFLAGS = (f"-s -w -X {CONTAINERD_MODULE}/version.Version={{version}} "
                       f"-X {CONTAINERD_MODULE}/version.Revision={{commit}} -X {CONTAINERD_MODULE}/version.Package="
                       f"{CONTAINERD_MODULE}")


def containerd_tool(version: str) -> go_tool.GoTool:
    """containerd, ctr and the runc shim as upstream's Makefile builds them (the shim without gRPC, both static;
    no btrfs snapshotter: lab nodes use overlayfs and btrfs would need cgo headers)."""
    return go_tool.GoTool("containerd", CONTAINERD_MODULE, version, (
        go_tool.GoBuild(tuple((name, f"{CONTAINERD_MODULE}/cmd/{name}") for name in ("containerd", "ctr")),
                        tags=("urfave_cli_no_docs", "no_btrfs"), ldflags=_CONTAINERD_LDFLAGS),
        go_tool.GoBuild((("containerd-shim-runc-v2", f"{CONTAINERD_MODULE}/cmd/containerd-shim-runc-v2"),),
                        tags=("urfave_cli_no_docs", "no_grpc"), ldflags=_CONTAINERD_LDFLAGS),
    ), source_files=("containerd.service",))


# runc as upstream's `make static`: seccomp through libseccomp (a pod's RuntimeDefault profile needs it), linked
# statically. Without `libpathrs` (a Rust library upstream links when present): runc then uses its Go fallback.
RUNC = go_tool.GoTool("runc", "github.com/opencontainers/runc", RUNC_VERSION, (
    go_tool.GoBuild((("runc", "github.com/opencontainers/runc"),), cgo=True,
                    tags=("seccomp", "urfave_cli_no_docs", "netgo", "osusergo"),
                    ldflags="-s -w -X main.gitCommit={commit} -linkmode external -extldflags -static-pie",
                    flags=("-buildmode=pie",)),
))

_PLUGINS = "github.com/containernetworking/plugins/plugins"
# Every Linux plugin of upstream's release archive, as kubeadm's installation guide puts them in /opt/cni/bin.
CNI_PLUGIN_NAMES = {"main": ("bridge", "dummy", "host-device", "ipvlan", "loopback", "macvlan", "ptp", "tap", "vlan"),
                    "ipam": ("dhcp", "host-local", "static"),
                    "meta": ("bandwidth", "firewall", "portmap", "sbr", "tuning", "vrf")}
CNI_PLUGINS = go_tool.GoTool("cni-plugins", "github.com/containernetworking/plugins", CNI_PLUGINS_VERSION, (
    go_tool.GoBuild(tuple((name, f"{_PLUGINS}/{kind}/{name}") for kind, names in CNI_PLUGIN_NAMES.items()
                          for name in names),
                    ldflags="-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion="
                            "{version}"),
))

NODE_CONTAINERD_DIR = "/usr/local/bin"
NODE_RUNC = "/usr/local/sbin/runc"
NODE_CNI_BIN = "/opt/cni/bin"
NODE_UNIT = "/usr/local/lib/systemd/system/containerd.service"


@dataclass(frozen=True)
class Runtime:
    """The runtime a lab node runs: a containerd release line, with runc and the CNI plugins."""

    containerd: str = DEFAULT_CONTAINERD

    def __post_init__(self) -> None:
        if self.containerd not in CONTAINERD_RELEASES:
            raise LabError(f"--containerd {self.containerd!r} is not a containerd the lab builds: choose one of "
                           f"{', '.join(sorted(CONTAINERD_RELEASES))}")

    @property
    def tools(self) -> tuple[go_tool.GoTool, ...]:
        return (containerd_tool(CONTAINERD_RELEASES[self.containerd]), RUNC, CNI_PLUGINS)

    def ensure(self, log=print) -> None:
        for tool in self.tools:
            go_tool.ensure(tool, log=log)

    def describe(self) -> str:
        return f"containerd {CONTAINERD_RELEASES[self.containerd]}, runc {RUNC_VERSION}, CNI plugins " \
               f"{CNI_PLUGINS_VERSION}"


def containerd_config(pause_image: str) -> str:
    """What kubeadm's container runtime guide has a user set in containerd 2.x's configuration (version 3): runc
    with systemd cgroups (the kubelet's driver) and the sandbox image the Kubernetes release expects."""
    return f"""# kubeharden lab: containerd for the kubelet (CRI), as kubeadm's container runtime guide asks.
version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{pause_image}'

[plugins.'io.containerd.cri.v1.runtime']
  # Lab only: this host has no CAP_SYS_RESOURCE, so no process may lower its OOM score below where it
  # started; without this, every pod the kubelet asks for at -998 or -997 fails to start.
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


NODE_TOOLS_DIR = "/opt/kubeharden-lab"  # each tool's cached build, mounted read-only into every node


def node_mounts(runtime: Runtime) -> list[str]:
    """`docker run` options that show each of the runtime's cached builds to a node, read-only."""
    return [option for tool in runtime.tools
            for option in ("-v", f"{tool.directory}:{NODE_TOOLS_DIR}/{tool.name}:ro")]


def install_layout(pause_image: str) -> NodeLayout:
    layout = NodeLayout()
    layout.directory("/etc/containerd", 0o755)
    layout.file("/etc/containerd/config.toml", containerd_config(pause_image), 0o644)
    return layout


def install_commands() -> str:
    """Install the binaries and upstream's unit as its release archives and guide do; start containerd."""
    plugins = " ".join(f"{NODE_TOOLS_DIR}/cni-plugins/bin/{name}" for name in CNI_PLUGINS.binary_names)
    return f"""
install -m 0755 {NODE_TOOLS_DIR}/containerd/bin/containerd {NODE_TOOLS_DIR}/containerd/bin/ctr \
  {NODE_TOOLS_DIR}/containerd/bin/containerd-shim-runc-v2 {NODE_CONTAINERD_DIR}/
install -D -m 0755 {NODE_TOOLS_DIR}/runc/bin/runc {NODE_RUNC}
install -d -m 0755 {NODE_CNI_BIN}
install -m 0755 {plugins} {NODE_CNI_BIN}/
install -D -m 0644 {NODE_TOOLS_DIR}/containerd/containerd.service {NODE_UNIT}
systemctl daemon-reload
systemctl enable --now containerd.service
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr version >/dev/null
"""
