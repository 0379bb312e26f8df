"""Shared steps called from other roles and playbooks have a declared interface: their entry point's argument
spec refuses bad input before the step runs."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import ROOT


def run_entry_point(tmp_path, role: str, entry: str, variables: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: {role}
        tasks_from: {entry}
      vars: {variables}
""")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    return subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_the_restart_gate_refuses_a_component_it_does_not_know_before_waiting(tmp_path):
    done = run_entry_point(tmp_path, "control_plane", "gate", "{control_plane_gate_component: kube-proxy}")
    assert done.returncode != 0
    assert "control_plane_gate_component" in done.stdout and "kube-proxy" in done.stdout, done.stdout[-2000:]
    assert "Wait until the process runs" not in done.stdout


def test_the_etcd_health_wait_refuses_a_missing_endpoint(tmp_path):
    done = run_entry_point(tmp_path, "etcd", "wait_healthy", "{etcd_health_endpoint: ''}")
    assert done.returncode != 0
    assert "etcd_health_endpoint" in done.stdout, done.stdout[-2000:]
