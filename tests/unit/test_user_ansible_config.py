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


def test_the_users_private_key_and_remote_user_are_passed_to_ssh(tmp_path):
    """--private-key and -u reach ssh itself: it names the key file it could not read, and refuses the user name."""
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    workers:\n      hosts:\n"
                                        "        ghost: {ansible_host: 127.0.0.1, ansible_port: 1}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}

    def errors(*options: str) -> str:
        done = subprocess.run([sys.executable, "-m", "kubeharden.cli", "audit", "-i", "hosts.yml", "--controls",
                               "4.2.1", "--format", "json", "--state-dir", str(tmp_path / "state"), *options],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
        assert done.returncode == EXIT_ERROR, done.stdout + done.stderr
        return json.loads(done.stdout)["errors"]["ghost"]

    assert "remote username contains invalid characters" in errors("-u", "bad;user")
    # A missing key is only a warning of ssh, which Ansible does not quote: ansible-runner's record of the command
    # it ran shows the option instead.
    errors("--private-key", "/nonexistent/kubeharden.key")
    ran = [json.loads((run / "command").read_text())["command"] for run in (tmp_path / "state" / "artifacts").iterdir()
           if (run / "command").is_file()]
    assert any("--private-key" in command and "/nonexistent/kubeharden.key" in command for command in ran), ran


def test_a_vaulted_inventory_is_read_with_the_users_vault_password_file(tmp_path):
    """ansible-vault's own encryption: without --vault-password-file the inventory cannot be read at all."""
    password = tmp_path / "vault-password"
    password.write_text("correct horse\n")
    vaulted = subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
                              "--vault-password-file", str(password), "500", "--name", "node_os_password_history"],
                             capture_output=True, text=True, check=True).stdout
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(vaulted)
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    k8s_cluster:\n      children:\n        workers:\n"
                                        "          hosts:\n            w1: {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}

    def validate(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kubeharden.cli", "validate", "-i", "hosts.yml", *options],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)

    # Without the password the value cannot be read; with it, it is read and judged (500 is out of range).
    refused = validate()
    assert refused.returncode == EXIT_ERROR and "vault" in (refused.stdout + refused.stderr).lower(), \
        refused.stdout + refused.stderr
    judged = validate("--vault-password-file", str(password))
    assert judged.returncode == EXIT_ERROR, judged.stdout + judged.stderr
    assert "node_os_password_history: is how many previous passwords" in judged.stdout, judged.stdout
