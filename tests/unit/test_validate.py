"""`kubeharden validate` (playbooks/validate.yml, which site.yml runs first): every role's bad values are refused on
the controller, named, before any node is contacted. The nodes here are loopback port 1: nothing could connect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kubeharden.audit import EXIT_ERROR
from tests.conftest import ROOT

INVENTORY = """all:
  vars: {ansible_host: 127.0.0.1, ansible_port: 1}
  children:
    kube_control_plane: {hosts: {cp1: {}}}
    kube_node: {hosts: {w1: {}}}
    etcd: {hosts: {cp1: {}}}
"""
BAD = {  # one refused value per role: its argument spec (types, choices) or its own rules
    "node_os_password_history": (500, "node_os_password_history: is how many previous passwords"),
    "node_os_ssh_permit_root_login": ("maybe", "node_os_ssh_permit_root_login"),
    "firewall_admin_cidrs": (["notacidr"], "firewall_admin_cidrs: notacidr is not an address or network"),
    "firewall_ssh_port": (70000, "firewall_ssh_port: 70000 is not a port"),
    "kubelet_health_timeout": ("soon", "argument 'kubelet_health_timeout' is of type str"),
    "pki_key_type": ("dsa", "pki_key_type"),
    "etcd_health_timeout": ("soon", "argument 'etcd_health_timeout' is of type str"),
    "control_plane_anonymous_auth": ("sometimes", "control_plane_anonymous_auth"),
    "cluster_policies_pod_security_level": ("open", "cluster_policies_pod_security_level"),
}


def validate(tmp_path, variables: dict | None = None, inventory: str | None = None) -> subprocess.CompletedProcess:
    if inventory is None:
        inventory = str(tmp_path / "hosts.yml")
        (tmp_path / "hosts.yml").write_text(INVENTORY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return subprocess.run([sys.executable, "-m", "kubeharden.cli", "validate", "-i", inventory,
                           *(["-e", json.dumps(variables)] if variables else [])],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)


@pytest.mark.parametrize("variable", BAD, ids=list(BAD))
def test_each_roles_bad_value_is_named_before_any_node_is_contacted(variable, tmp_path):
    value, named = BAD[variable]
    done = validate(tmp_path, {variable: value})
    assert done.returncode == EXIT_ERROR, done.stdout + done.stderr
    assert named in done.stdout, done.stdout
    assert "UNREACHABLE" not in done.stdout and "Connection refused" not in done.stdout


def test_every_refusal_of_a_run_is_named_together(tmp_path):
    done = validate(tmp_path, {"node_os_password_history": 500, "firewall_ssh_port": 70000})
    assert done.returncode == EXIT_ERROR
    line = next(line for line in done.stdout.splitlines() if line.startswith("cp1: "))
    assert "node_os_password_history" in line and "firewall_ssh_port: 70000" in line, done.stdout


@pytest.mark.parametrize("inventory", ["example", "example-kubespray"])
def test_the_example_inventories_are_valid(inventory, tmp_path):
    done = validate(tmp_path, inventory=str(ROOT / "inventories" / inventory))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "every role's variables are valid on 6 node(s): cp1, cp2, cp3, w1, w2, w3\n"
