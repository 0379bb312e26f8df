"""The firewall's own variable rules (roles/firewall/filter_plugins/firewall_checks.py): what nftables would refuse
at load time, named before any change."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "firewall_checks", ROOT / "roles/firewall/filter_plugins/firewall_checks.py")
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)


def problems(networks=None, nodeport_range="30000-32767", ssh_port=22, extra_rules=(), rollback=60, confirm=20):
    return checks.firewall_variable_problems(networks or {}, nodeport_range, ssh_port, list(extra_rules), rollback,
                                             confirm)


def test_valid_values_pass():
    assert problems({"firewall_admin_cidrs": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]},
                    extra_rules=[{"ports": ["9100", "8000-8080"], "sources": ["10.1.0.0/16"]}]) == []
    assert problems(rollback=0) == []  # no rollback timer at all


def test_each_problem_names_its_variable():
    assert problems({"firewall_pod_cidrs": ["10.244.0.0/16", "pods"]}) == [
        "firewall_pod_cidrs: pods is not an address or network (such as 10.0.0.0/8)"]
    assert problems(nodeport_range="30000") == [
        "firewall_nodeport_range: 30000 is not a port range such as 30000-32767"]
    assert problems(nodeport_range="32767-30000")[0].startswith("firewall_nodeport_range:")
    assert problems(ssh_port=0) == ["firewall_ssh_port: 0 is not a port (1-65535)"]
    assert problems(extra_rules=[{"ports": ["80", "99999"], "sources": ["x"]}]) == [
        "firewall_extra_rules[0].ports: 99999 is not a port or FIRST-LAST range",
        "firewall_extra_rules[0].sources: x is not an address or network"]
    assert problems(extra_rules=[{"ports": []}]) == ["firewall_extra_rules[0].ports: empty"]
    assert problems(rollback=20, confirm=20)[0].startswith("firewall_rollback_seconds: 20 must be longer")
