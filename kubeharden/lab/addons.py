"""What makes the lab's control plane a cluster: kubeadm's own addons (kube-proxy, CoreDNS), a pod network between
nodes, a NetworkPolicy engine and a small workload on every node, each built from the Go module proxy.

- **Pod network: flannel with its VXLAN backend.** Every node gets its own /24 of the pod network (the
  controller-manager's node CIDRs); flanneld links the nodes with a VXLAN device and routes, the most common network
  of kubeadm clusters. VXLAN rather than kube-router's BGP routes: its traffic between nodes (UDP 8472) is new to the
  firewall at every packet, so a firewall without the `vxlan` preset visibly cuts pods off from other nodes, and
  the preset visibly puts them back; no kernel module beyond the host's built-in VXLAN is needed.
  flannel's CNI plugin (github.com/flannel-io/cni-plugin) is not served by the Go module proxy: each node writes
  what that plugin hands the bridge plugin (the node's subnet and MTU from flanneld's /run/flannel/subnet.env) as
  its CNI configuration, whenever that file changes (node_files/usr/local/lib/kubeharden-lab/flannel-cni).
- **NetworkPolicies: kube-router's firewall alone** (no routing, no service proxy), as a DaemonSet beside flannel.
  kube-network-policies, the other engine the proxy serves, needs nftables' `queue`, which this host's kernel lacks.
- **The probe workload:** Kubernetes' own test image (agnhost, built from the release) serving HTTP on every node,
  behind a ClusterIP and a NodePort Service: what connectivity.py measures.

No registry is reachable: every image is written by component_images.py and imported into each node's containerd
under the name its manifest asks for (kubeadm's names for kube-proxy and CoreDNS). The programs that run netfilter
tools (kube-proxy, flanneld, kube-router) get a first layer with Debian's iptables, nft and ipset, taken from the
lab's node image, as upstream's distroless-iptables base image is made of Debian's packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from kubeharden.lab import component_images, docker, go_tool, kubernetes
from kubeharden.lab.errors import LabError

COREDNS_MODULE = "github.com/coredns/coredns"


def coredns_tool(version: str) -> go_tool.GoTool:
    """CoreDNS as upstream's Makefile builds it: every plugin of its plugin.cfg, static."""
    return go_tool.GoTool("coredns", COREDNS_MODULE, version, (
        go_tool.GoBuild((("coredns", COREDNS_MODULE),),
                        ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit={commit}"),))


FLANNEL = go_tool.GoTool(
    "flanneld", "github.com/flannel-io/flannel", "v0.28.10",
    # cgo on amd64, as upstream's Makefile: the UDP backend needs it.
    (go_tool.GoBuild((("flanneld", "github.com/flannel-io/flannel"),), cgo=True, tags=("netgo", "osusergo"),
                     ldflags="-s -w -X github.com/flannel-io/flannel/pkg/version.Version={version} "
                             "-extldflags -static"),),
    # flannel v0.28.10 asks for Tencent Cloud's VPC SDK v1.3.188, which the proxy does not serve; the lab never uses
    # the tencentvpc backend, and the served v1.1.0 compiles.
    replace=(("github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc", "v1.1.0"),))

# The only kube-router the module proxy lists (security flaws are reported against it): a lab-only NetworkPolicy
# engine, never run on the nodes kubeharden hardens, only on the lab's own, to judge the policies the cluster_policies
# role writes.
KUBE_ROUTER = go_tool.GoTool(
    "kube-router", "github.com/cloudnativelabs/kube-router/v2", "v2.1.0",
    (go_tool.GoBuild((("kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"),),
                     ldflags="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}"),))

# The pod networks the lab runs (flannel's VXLAN, with kube-router's NetworkPolicy firewall beside it).
CNIS = ("flannel",)
DEFAULT_CNI = "flannel"
NAMESPACE = "kube-system"
PROBE_NAMESPACE = "kubeharden-probe"
PROBE_PORT = 8080
PROBE_NODE_PORT = 30080
# The probe workload's namespace under the cluster's policies (the lab inventory's cluster_policies_namespaces):
# restricted pods and no token from its default service account, but no default deny, or the probes would measure
# the policy instead of the cluster.
PROBE_NAMESPACE_POLICY = {
    "name": PROBE_NAMESPACE, "exempt_from": ["default-deny"],
    "reason": "the lab's connectivity probe: its pods reach and are reached from every node, a NodePort and the "
              "apiserver, as any application that has not written its own NetworkPolicies yet"}
FLANNEL_SUBNET_FILE = "/run/flannel/subnet.env"
CNI_CONFIG = "/etc/cni/net.d/10-flannel.conflist"

# Recipe of the addons archive: bump it when the images or the way they are made change.
ARCHIVE_RECIPE = "2"  # 2: CoreDNS's binary carries cap_net_bind_service+ep, as upstream's image
ARCHIVE = "images.tar"


def tools(release: kubernetes.Release) -> tuple[go_tool.GoTool, ...]:
    return (coredns_tool(release.coredns_version), FLANNEL, KUBE_ROUTER)


def ensure_tools(release: kubernetes.Release, log=print) -> None:
    for tool in tools(release):
        go_tool.ensure(tool, log=log)


def images(release: kubernetes.Release) -> list[component_images.ComponentImage]:
    image = component_images.ComponentImage
    return [
        image("kube-proxy", release.version, ("kube-proxy",), base="netfilter"),
        image("coredns/coredns", release.coredns_version, ("coredns",), entrypoint=("/coredns",),
              paths=(("coredns", "coredns"),), user=f"{component_images.NONROOT}:{component_images.NONROOT}",
              file_capabilities=(("coredns", (component_images.CAP_NET_BIND_SERVICE,)),)),
        image("e2e-test-images/agnhost", release.agnhost_version, ("agnhost",), entrypoint=("/agnhost",),
              paths=(("agnhost", "agnhost"),)),
        image("flannel-io/flannel", FLANNEL.version, ("flanneld",), registry="ghcr.io",
              entrypoint=("/opt/bin/flanneld",), paths=(("flanneld", "opt/bin/flanneld"),), base="netfilter"),
        image("cloudnativelabs/kube-router", KUBE_ROUTER.version, ("kube-router",), registry="docker.io",
              entrypoint=("/usr/local/bin/kube-router",), base="netfilter"),
    ]


def reference(release: kubernetes.Release, name: str) -> str:
    return next(image.reference for image in images(release) if image.name.endswith(name))


# -- the addons archive ------------------------------------------------------------------------------------------

# Run in a container of the node image: Debian's netfilter tools and every library they load, as one layer. The
# iptables commands are the nft backend's (Debian 12's default, and what the node's own iptables uses).
NETFILTER_LAYER = r"""
set -eu
out=$(mktemp -d)
programs="/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft /usr/sbin/ipset /usr/sbin/conntrack"
extensions=/usr/lib/x86_64-linux-gnu/xtables
for file in $programs $extensions/*.so; do
  cp -L --parents "$file" "$out"
  ldd "$file" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p' |
    while read -r library; do [ -e "$out$library" ] || cp -L --parents "$library" "$out"; done
done
for file in /etc/protocols /etc/services /etc/ethertypes; do [ ! -e "$file" ] || cp -L --parents "$file" "$out"; done
cd "$out/usr/sbin"
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -s xtables-nft-multi "$name"
  ln -s xtables-nft-multi "$(echo "$name" | sed 's/tables/tables-nft/')"
  ln -s xtables-legacy-multi "$(echo "$name" | sed 's/tables/tables-legacy/')"
done
tar -C "$out" --owner=0 --group=0 -c .
"""


def archive_key(release: kubernetes.Release, node_image: str) -> str:
    recipe = "|".join((ARCHIVE_RECIPE, release.key, node_image, *(tool.key for tool in tools(release)),
                       NETFILTER_LAYER, *(image.reference for image in images(release))))
    return f"{release.version}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def archive_directory(release: kubernetes.Release, node_image: str) -> Path:
    return kubernetes.cache_dir() / "addons" / archive_key(release, node_image)


def _archive_complete(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    path = directory / ARCHIVE
    return manifest.get("key") == directory.name and path.is_file() and \
        kubernetes._sha256(path) == manifest.get("sha256")


def ensure_archive(release: kubernetes.Release, node_image: str, log=print) -> Path:
    """The addons' images as one archive for `ctr images import`, made once per release, node image and tool
    builds; a partial or altered archive is made again, never used."""
    directory = archive_directory(release, node_image)
    if _archive_complete(directory):
        return directory / ARCHIVE
    ensure_tools(release, log=log)
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = directory.parent / f".build-{directory.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.mkdir()
        started = time.monotonic()
        layer = docker.run("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", node_image, "-c",
                           NETFILTER_LAYER, input=b"", check=False)
        if layer.returncode != 0:
            raise LabError(f"could not take the netfilter tools from {node_image}: "
                           f"{layer.stderr.decode(errors='replace').strip()[-600:]}")
        bin_dirs = [release.bin_dir, *(tool.directory / "bin" for tool in tools(release))]
        component_images.write_archive(images(release), bin_dirs, work / ARCHIVE, bases={"netfilter": layer.stdout})
        manifest = {"key": directory.name, "images": [image.reference for image in images(release)],
                    "sha256": kubernetes._sha256(work / ARCHIVE)}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(work, directory)
        log(f"addon images for Kubernetes {release.version} written in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return directory / ARCHIVE


# -- manifests ---------------------------------------------------------------------------------------------------

def _service_account(name: str, rules: list[dict]) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]},
    ]


def _node_daemonset(name: str, container: dict, volumes: dict[str, str]) -> dict:
    """A host-network DaemonSet on every node (control planes included), as network addons run."""
    labels = {"app.kubernetes.io/name": name}
    container["volumeMounts"] = [{"name": volume, "mountPath": path} for volume, path in volumes.items()]
    host_paths = {"xtables-lock": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                  "run-flannel": {"path": "/run/flannel", "type": "DirectoryOrCreate"}}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical", "serviceAccountName": name,
                         "tolerations": [{"operator": "Exists", "effect": "NoSchedule"},
                                         {"operator": "Exists", "effect": "NoExecute"}],
                         "containers": [container],
                         "volumes": [{"name": volume, **({"configMap": {"name": name}} if volume == "config"
                                                         else {"hostPath": host_paths[volume]})}
                                     for volume in volumes]}}}}


def _node_env() -> list[dict]:
    return [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]


def network_manifests(release: kubernetes.Release, pod_subnet: str) -> list[dict]:
    """flannel (VXLAN) and kube-router's NetworkPolicy firewall, in kube-system."""
    flannel = [
        *_service_account("flannel", [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flannel", "namespace": NAMESPACE},
         "data": {"net-conf.json": json.dumps({"Network": pod_subnet, "Backend": {"Type": "vxlan"}})}},
        _node_daemonset("flannel", {
            "name": "flanneld", "image": reference(release, "flannel"), "imagePullPolicy": "IfNotPresent",
            "command": ["/opt/bin/flanneld", "--ip-masq", "--kube-subnet-mgr",
                        "--net-config-path=/etc/kube-flannel/net-conf.json"],
            "env": _node_env(),
            "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
            "securityContext": {"privileged": False, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
        }, {"run-flannel": "/run/flannel", "config": "/etc/kube-flannel", "xtables-lock": "/run/xtables.lock"}),
    ]
    router = [
        *_service_account("kube-router", [
            {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]),
        _node_daemonset("kube-router", {
            "name": "kube-router", "image": reference(release, "kube-router"), "imagePullPolicy": "IfNotPresent",
            "args": ["--run-router=false", "--run-firewall=true", "--run-service-proxy=false", "--v=0"],
            "env": _node_env(),
            "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
            "securityContext": {"privileged": True},
        }, {"xtables-lock": "/run/xtables.lock"}),
    ]
    return [*flannel, *router]


PROBE_SERVERS = ("probe-a", "probe-b")  # two pods on every node: a client and a server on the same node


def probe_manifests(release: kubernetes.Release) -> list[dict]:
    """agnhost's HTTP server twice on every node, a ClusterIP and a NodePort Service, restricted pods."""
    container = {
        "name": "agnhost", "image": reference(release, "agnhost"), "imagePullPolicy": "IfNotPresent",
        # netexec reports ready once its UDP server runs too
        "args": ["netexec", f"--http-port={PROBE_PORT}", f"--udp-port={PROBE_PORT + 1}"],
        "ports": [{"containerPort": PROBE_PORT, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PROBE_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    pod = {"securityContext": {"runAsNonRoot": True, "runAsUser": component_images.NONROOT,
                               "seccompProfile": {"type": "RuntimeDefault"}},
           "automountServiceAccountToken": False, "containers": [container],
           "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                            "effect": "NoSchedule"}]}
    documents: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROBE_NAMESPACE}}]
    for name in PROBE_SERVERS:
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "kubeharden-probe"}
        documents.append({"apiVersion": "apps/v1", "kind": "DaemonSet",
                          "metadata": {"name": name, "namespace": PROBE_NAMESPACE},
                          "spec": {"selector": {"matchLabels": labels},
                                   "template": {"metadata": {"labels": labels}, "spec": pod}}})
    selector = {"app.kubernetes.io/part-of": "kubeharden-probe"}
    documents += [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe", "namespace": PROBE_NAMESPACE},
         "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": PROBE_PORT}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe-nodeport", "namespace": PROBE_NAMESPACE},
         "spec": {"type": "NodePort", "selector": selector,
                  "ports": [{"port": 80, "targetPort": PROBE_PORT, "nodePort": PROBE_NODE_PORT}]}},
    ]
    return documents


def as_yaml(documents: list[dict]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)
