"""firewall_node_rules: the port matrix, what one node accepts by its roles (control plane, worker, both).

The role's variables name the sources and choices; this builds the rules kubeharden_nftables loads, in one place
a unit test reaches (tests/unit/test_role_filters.py).
"""

from __future__ import annotations


def firewall_node_rules(extra_rules: list, *, ssh_port, admin_cidrs: list, control_plane_addresses: list,
                        pod_cidrs: list, is_control_plane: bool, apiserver_sources: list, etcd_addresses: list,
                        is_worker: bool, kube_proxy_health_sources: list, nodeports_enabled: bool,
                        nodeport_range: str, nodeport_sources: list, cni_presets: list, cni_ports: dict,
                        cluster_addresses: list) -> list[dict]:
    rules = [{"proto": "tcp", "ports": [str(ssh_port)], "sources": admin_cidrs, "comment": "ssh"},
             {"proto": "tcp", "ports": ["10250"], "comment": "kubelet API from control plane and pods",
              "sources": control_plane_addresses + pod_cidrs}]
    if is_control_plane:
        rules += [{"proto": "tcp", "ports": ["6443"], "sources": apiserver_sources, "comment": "kube-apiserver"},
                  {"proto": "tcp", "ports": ["2379-2380"], "comment": "etcd from members and control plane",
                   "sources": list(dict.fromkeys(etcd_addresses + control_plane_addresses))}]
    if is_worker:
        rules.append({"proto": "tcp", "ports": ["10256"], "sources": kube_proxy_health_sources,
                      "comment": "kube-proxy health"})
    if is_worker and nodeports_enabled:
        rules += [{"proto": proto, "ports": [nodeport_range], "sources": nodeport_sources,
                   "comment": f"NodePort {proto}"} for proto in ("tcp", "udp")]
    rules += [{**rule, "sources": cluster_addresses, "comment": "CNI between nodes"}
              for preset in cni_presets for rule in cni_ports[preset]]
    return rules + list(extra_rules)


class FilterModule:
    def filters(self):
        return {"firewall_node_rules": firewall_node_rules}
