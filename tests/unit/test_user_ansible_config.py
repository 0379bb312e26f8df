"""kubeharden's commands run the user's Ansible: the ansible.cfg Ansible finds (here: the working directory's)
keeps its connection settings under `kubeharden audit`. The node is loopback port 1 or 2: refused at once, and the
error names the port and the ssh options that were used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kubeharden.audit import EXIT_ERROR


def audit_unreachable(workdir: Path, config: str | None) -> dict:
    (workdir / "hosts.yml").write_text("all:\n  children:\n    k8s_cluster:\n      children:\n        workers:\n"
                                       "          hosts:\n            ghost: {ansible_host: 127.0.0.1}\n")
    if config is not None:
        (workdir / "ansible.cfg").write_text(config)
    workdir.chmod(0o755)  # Ansible ignores an ansible.cfg in a world-writable directory
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}  # a user's shell, no ANSIBLE_CONFIG
    done = subprocess.run([sys.executable, "-m", "kubeharden.cli", "audit", "-i", "hosts.yml", "--controls",
                           "4.2.1", "--format", "json", "--state-dir", str(workdir / "state")],
                          capture_output=True, text=True, cwd=workdir, env=env, timeout=300, check=False)
    assert done.returncode == EXIT_ERROR, done.stdout + done.stderr
    return json.loads(done.stdout)["errors"]


def test_the_users_remote_port_is_used(tmp_path):
    errors = audit_unreachable(tmp_path, "[defaults]\nremote_port = 1\n")
    assert "port 1: Connection refused" in errors["ghost"], errors


def test_the_users_ssh_args_are_used(tmp_path):
    """A bastion's ProxyCommand or ssh config file lives in ssh_args: here, one ssh cannot open."""
    missing = tmp_path / "no-such-ssh-config"
    errors = audit_unreachable(tmp_path, f"[ssh_connection]\nssh_args = -F {missing}\n")
    assert f"Can't open user config file {missing}" in errors["ghost"], errors
