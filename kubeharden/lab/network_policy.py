"""A real NetworkPolicy engine for the lab: kube-router's firewall alone (no routing, no service proxy) beside the
lab's bridge CNI, on iptables and ipset, which lab nodes have and this host's kernel supports.

kube-network-policies, the other engine the Go module proxy serves, queues packets to userspace with nftables'
`queue` statement, which this host's kernel lacks (CONFIG_NFT_QUEUE). kube-router runs on each node as a
systemd unit, with the node's kubeconfig, as its DaemonSet would (no registry serves its image here).
"""

from __future__ import annotations

from kubeharden.lab import docker, go_tool

# The only kube-router the module proxy lists (security flaws are reported against it). A lab-only test engine: it
# never runs on the nodes kubeharden
# hardens, only in the lab's own containers, to judge the NetworkPolicies the cluster_policies role writes.
TOOL = go_tool.GoTool("kube-router", "github.com/cloudnativelabs/kube-router/v2", "v2.1.0",
                      "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router")
NODE_BINARY = "/usr/local/bin/kube-router"
UNIT = "kube-router-netpol"


def start_on_node(container: str, node_name: str, kubeconfig: str, log=print) -> None:
    """kube-router enforcing NetworkPolicies on one lab node (a transient systemd unit: gone when the lab is)."""
    built = go_tool.ensure(TOOL, log=log)
    docker.run("cp", str(built / "bin" / TOOL.name), f"{container}:{NODE_BINARY}")
    docker.exec_(container, "systemd-run", f"--unit={UNIT}", NODE_BINARY, "--run-router=false",
                 "--run-firewall=true", "--run-service-proxy=false", f"--kubeconfig={kubeconfig}",
                 f"--hostname-override={node_name}", "--v=0")


def running(container: str) -> bool:
    return docker.exec_(container, "systemctl", "is-active", UNIT, check=False).stdout.strip() == "active"
