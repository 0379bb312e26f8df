"""firewall_variable_problems: what the firewall's variables say that nftables would refuse, found before any change
(the argument specs check types only)."""

from __future__ import annotations

import ipaddress
import re

PORT_RANGE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def _bad_networks(values) -> list[str]:
    bad = []
    for value in values or []:
        try:
            ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            bad.append(str(value))
    return bad


def _bad_ports(values) -> list[str]:
    bad = []
    for value in values or []:
        found = PORT_RANGE.match(str(value))
        first, last = (int(found.group(1)), int(found.group(2) or found.group(1))) if found else (0, 0)
        if not found or not 1 <= first <= last <= 65535:
            bad.append(str(value))
    return bad


def firewall_variable_problems(networks: dict, nodeport_range: str, ssh_port, extra_rules, rollback_seconds,
                               confirm_timeout) -> list[str]:
    """One line per problem, each naming its variable. `networks` maps a variable name to its list of CIDRs or
    addresses."""
    problems = [f"{name}: {', '.join(bad)} is not an address or network (such as 10.0.0.0/8)"
                for name, values in networks.items() if (bad := _bad_networks(values))]
    if _bad_ports([nodeport_range]) or "-" not in str(nodeport_range):
        problems.append(f"firewall_nodeport_range: {nodeport_range} is not a port range such as 30000-32767")
    if _bad_ports([ssh_port]) or "-" in str(ssh_port):
        problems.append(f"firewall_ssh_port: {ssh_port} is not a port (1-65535)")
    for index, rule in enumerate(extra_rules or []):
        if bad := _bad_ports(rule.get("ports")):
            problems.append(f"firewall_extra_rules[{index}].ports: {', '.join(bad)} is not a port or FIRST-LAST range")
        if not rule.get("ports"):
            problems.append(f"firewall_extra_rules[{index}].ports: empty")
        if bad := _bad_networks(rule.get("sources")):
            problems.append(f"firewall_extra_rules[{index}].sources: {', '.join(bad)} is not an address or network")
    if int(rollback_seconds) != 0 and int(rollback_seconds) <= int(confirm_timeout):
        problems.append(f"firewall_rollback_seconds: {rollback_seconds} must be longer than firewall_confirm_timeout "
                        f"({confirm_timeout}), or the previous table comes back while the confirmation still waits")
    return problems


class FilterModule:
    def filters(self):
        return {"firewall_variable_problems": firewall_variable_problems}
