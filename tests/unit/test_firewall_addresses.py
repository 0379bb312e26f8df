"""The firewall's peers are the same whether a run covers every node or --limit leaves the others' facts ungathered."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "roles/firewall/filter_plugins"))
from node_addresses import node_addresses

# cp1's facts (gathered when it is in the play) list its pod-network interfaces too; w1 has none (--limit).
HOSTVARS = {
    "cp1": {"ansible_host": "172.30.0.11",
            "ansible_facts": {"all_ipv4_addresses": ["172.30.0.11", "10.244.0.0", "10.244.0.1"]}},
    "w1": {"ansible_host": "172.30.0.21"},
    "edge": {"ansible_host": "198.51.100.4", "firewall_node_addresses": ["198.51.100.4", "10.0.0.4"]},
}


def test_facts_never_change_the_addresses():
    assert node_addresses(["cp1", "w1"], HOSTVARS) == ["172.30.0.11", "172.30.0.21"]
    without_facts = {**HOSTVARS, "cp1": {"ansible_host": "172.30.0.11"}}
    assert node_addresses(["cp1", "w1"], without_facts) == node_addresses(["cp1", "w1"], HOSTVARS)


def test_a_node_with_more_addresses_lists_them():
    assert node_addresses(["edge", "w1"], HOSTVARS) == ["198.51.100.4", "10.0.0.4", "172.30.0.21"]
