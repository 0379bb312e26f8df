"""node_addresses: the addresses of some inventory hosts, for firewall sources."""

from __future__ import annotations


def node_addresses(hosts, hostvars) -> list[str]:
    """Each host's addresses: its `firewall_node_addresses` (a host variable, for nodes that talk over more than one
    address), else its ansible_host. Never gathered facts: a run limited to some nodes has no facts of the others,
    and a node's pod-network interfaces (cni0, flannel.1) are not where its peers connect from, so the table would
    change with --limit and with the CNI."""
    found: list[str] = []
    for host in hosts or []:
        variables = hostvars[host]
        listed = variables.get("firewall_node_addresses") or [variables.get("ansible_host", host)]
        found.extend(str(address) for address in listed)
    return list(dict.fromkeys(found))


class FilterModule:
    def filters(self):
        return {"node_addresses": node_addresses}
