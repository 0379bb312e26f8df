"""node_addresses: every address of some inventory hosts, for firewall sources."""

from __future__ import annotations


def node_addresses(hosts, hostvars) -> list[str]:
    """Gathered IPv4 and global IPv6 addresses of each host, else its ansible_host (facts not gathered)."""
    found: list[str] = []
    for host in hosts or []:
        variables = hostvars[host]
        facts = variables.get("ansible_facts") or {}
        if facts.get("all_ipv4_addresses") is not None:
            candidates = list(facts.get("all_ipv4_addresses") or []) + list(facts.get("all_ipv6_addresses") or [])
            found.extend(a for a in candidates if not a.startswith(("127.", "fe80", "::1")))
        else:
            found.append(str(variables.get("ansible_host", host)))
    return list(dict.fromkeys(found))


class FilterModule:
    def filters(self):
        return {"node_addresses": node_addresses}
