"""inventories/example: a committed inventory a user starts from, which Ansible reads and every role accepts."""

from __future__ import annotations

import json
import os
import re
import subprocess

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from tests.conftest import ROOT

EXAMPLE = ROOT / "inventories/example"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}


def decisions() -> dict:
    return yaml.safe_load((EXAMPLE / "group_vars/all/kubeharden.yml").read_text())


def test_ansible_reads_three_control_planes_stacked_etcd_and_workers():
    done = subprocess.run(["ansible-inventory", "-i", str(EXAMPLE), "--list"], capture_output=True, text=True,
                          env=ENV, check=False)
    assert done.returncode == 0, done.stderr
    groups = json.loads(done.stdout)
    assert groups["control_plane"]["hosts"] == ["cp1", "cp2", "cp3"] == groups["etcd"]["hosts"]
    assert groups["workers"]["hosts"] == ["w1", "w2", "w3"]
    assert set(groups["k8s_cluster"]["children"]) == {"control_plane", "workers"}
    graph = subprocess.run(["ansible-inventory", "-i", str(EXAMPLE), "--graph"], capture_output=True, text=True,
                           env=ENV, check=False)
    assert graph.returncode == 0 and "@k8s_cluster" in graph.stdout


def test_site_yml_parses_with_it():
    done = subprocess.run(["ansible-playbook", "-i", str(EXAMPLE), str(ROOT / "playbooks/site.yml"),
                           "--syntax-check"], capture_output=True, text=True, env=ENV, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_it_decides_every_variable_readme_asks_for():
    section = (ROOT / "README.md").read_text().split("Decide these before the first real run", 1)[1]
    table = section.split("\n\n", 2)[1]
    asked = set(re.findall(r"`([a-z_]+)`", table))
    assert len(asked) > 15 and asked <= set(decisions()), sorted(asked - set(decisions()))


def test_every_decision_passes_its_roles_argument_spec():
    """The values validate as the roles validate them before any change (meta/argument_specs.yml)."""
    specs = {}
    for path in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(path.read_text())["argument_specs"].values():
            specs.update(entry.get("options") or {})
    values = decisions()
    unknown = sorted(set(values) - set(specs))
    assert not unknown, f"not a role variable: {unknown}"
    result = ArgumentSpecValidator({name: specs[name] for name in values}).validate(values)
    assert not result.error_messages, result.error_messages
