"""playbooks/groups.yml: kubespray's group names, and the operator's own through kubeharden_groups, become the groups
kubeharden's playbooks target, for the whole inventory even under --limit; a bad mapping stops the run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT

ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
KUBESPRAY = ROOT / "inventories/example-kubespray"


def mapped_groups(tmp_path: Path, inventory: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run groups.yml, then write the groups every later play sees (nothing connects to a node)."""
    out = tmp_path / "groups.json"
    probe = tmp_path / "probe.yml"
    probe.write_text(yaml.safe_dump([
        {"name": "Groups", "ansible.builtin.import_playbook": str(ROOT / "playbooks/groups.yml")},
        {"name": "Write them", "hosts": "localhost", "gather_facts": False, "connection": "local", "tags": ["always"],
         "tasks": [{"name": "Write", "ansible.builtin.copy": {"content": "{{ groups | to_json }}", "dest": str(out)}}]},
    ]))
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), str(probe), *extra], capture_output=True,
                          text=True, env=ENV, check=False)
    return done, (json.loads(out.read_text()) if out.exists() else {})


def test_kubespray_names_are_read_as_they_are(tmp_path):
    done, groups = mapped_groups(tmp_path, KUBESPRAY)
    assert done.returncode == 0, done.stdout[-2000:]
    assert sorted(groups["control_plane"]) == ["cp1", "cp2", "cp3"] == sorted(groups["etcd"])
    assert sorted(groups["workers"]) == ["w1", "w2", "w3"]
    assert sorted(groups["k8s_cluster"]) == ["cp1", "cp2", "cp3", "w1", "w2", "w3"]


def test_a_limited_run_still_knows_every_node(tmp_path):
    """The firewall lets in every node of the cluster: a run on w1 alone must see the control-plane nodes too, and
    a run limited to one area's tags (drift's remediation) maps them as well."""
    done, groups = mapped_groups(tmp_path, KUBESPRAY, "--limit", "w1,localhost", "--tags", "kubelet_config")
    assert done.returncode == 0, done.stdout[-2000:]
    assert sorted(groups["control_plane"]) == ["cp1", "cp2", "cp3"]


def test_the_operators_own_names_are_mapped_and_a_bad_mapping_is_refused(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "masters": {"hosts": {"m1": {}}}, "minions": {"hosts": {"n1": {}}},
        "cluster": {"children": {"masters": {}, "minions": {}}}}}}))
    own = {"kubeharden_groups": {"control_plane": ["masters"], "etcd": ["masters"], "workers": ["minions"],
                                 "k8s_cluster": ["cluster"]}}
    done, groups = mapped_groups(tmp_path, inventory, "-e", json.dumps(own))
    assert done.returncode == 0, done.stdout[-2000:]
    assert groups["control_plane"] == ["m1"] and groups["workers"] == ["n1"]
    assert sorted(groups["k8s_cluster"]) == ["m1", "n1"]
    (tmp_path / "groups.json").unlink()
    for bad in ({"control_plane": "masters"}, {"masters": ["control_plane"]}, ["masters"]):
        done, groups = mapped_groups(tmp_path, inventory, "-e", json.dumps({"kubeharden_groups": bad}))
        assert done.returncode != 0 and not groups
        assert "kubeharden_groups must map kubeharden's groups" in done.stdout, done.stdout[-2000:]
