"""Render kubeharden's nftables table from allow rules; pure functions.

The table is replaced atomically with the create-delete-define idiom in one `nft -f` transaction, so no
other table (kube-proxy's, the CNI's, iptables-nft's) is ever touched: never `flush ruleset`.
"""

from __future__ import annotations

import ipaddress
import re

ICMP_TYPES = "echo-request, echo-reply, destination-unreachable, time-exceeded, parameter-problem"
ICMPV6_TYPES = ("echo-request, echo-reply, destination-unreachable, packet-too-big, time-exceeded, "
                "parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert")


class RuleError(ValueError):
    """A rule is invalid; nothing is loaded."""


def parse_ports(ports, where: str) -> list[str]:
    parsed = []
    for port in ports if isinstance(ports, list) else [ports]:
        text = str(port).strip()
        match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", text)
        low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, -1)
        if not match or not 1 <= low <= high <= 65535:
            raise RuleError(f"{where}: {port!r} is not a port or port range (1-65535)")
        parsed.append(text)
    return parsed


def parse_sources(sources, where: str) -> tuple[list[str], list[str]]:
    """Split sources into IPv4 and IPv6 networks; an empty list means any source."""
    v4, v6 = [], []
    for source in sources or []:
        try:
            network = ipaddress.ip_network(str(source).strip(), strict=False)
        except ValueError:
            raise RuleError(f"{where}: {source!r} is not an IP address or CIDR") from None
        (v4 if network.version == 4 else v6).append(str(network))
    return sorted(set(v4)), sorted(set(v6))


def covers(sources, address: str) -> bool:
    """Whether any of `sources` (empty: any) contains `address`."""
    if not sources:
        return True
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(str(s), strict=False) for s in sources)


def render_rule(rule: dict, index: int) -> list[str]:
    where = f"rules[{index}] ({rule.get('comment', 'no comment')})"
    proto = rule.get("proto", "tcp")
    if proto not in ("tcp", "udp"):
        raise RuleError(f"{where}: proto must be tcp or udp, not {proto!r}")
    ports = parse_ports(rule.get("ports"), where)
    v4, v6 = parse_sources(rule.get("sources"), where)
    comment = re.sub(r'["\\]', "", str(rule.get("comment", "")))[:120]
    tail = f"{proto} dport {{ {', '.join(ports)} }} accept" + (f' comment "{comment}"' if comment else "")
    if rule.get("sources"):
        lines = [f"ip saddr {{ {', '.join(v4)} }} {tail}"] if v4 else []
        lines += [f"ip6 saddr {{ {', '.join(v6)} }} {tail}"] if v6 else []
        return lines
    return [tail]


def render(table: str, rules: list[dict], log_drops: bool = False) -> str:
    family, name = table.split()
    lines = [f"# Managed by kubeharden (role firewall). Only table {table} is replaced; no other table is touched.",
             f"table {table}", f"delete table {table}", f"table {table} {{", "\tchain input {",
             "\t\ttype filter hook input priority filter; policy drop;",
             '\t\tiif "lo" accept', "\t\tct state established,related accept", "\t\tct state invalid drop",
             f"\t\tmeta l4proto icmp icmp type {{ {ICMP_TYPES} }} accept",
             f"\t\tmeta l4proto ipv6-icmp icmpv6 type {{ {ICMPV6_TYPES} }} accept"]
    for index, rule in enumerate(rules):
        lines.extend(f"\t\t{line}" for line in render_rule(rule, index))
    if log_drops:
        lines.append('\t\tlimit rate 5/second log prefix "kubeharden drop: " level info')
    lines += ["\t}", "}"]
    if family not in ("inet", "ip", "ip6") or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise RuleError(f"table must be '<inet|ip|ip6> <name>', not {table!r}")
    return "\n".join(lines) + "\n"
