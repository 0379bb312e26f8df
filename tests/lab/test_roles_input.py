"""Bad role input fails before anything on a node changes, with the variable named."""

from __future__ import annotations

import json
import subprocess

import pytest

from kubeharden.lab import docker
from tests.conftest import ROOT

pytestmark = pytest.mark.lab


# What each role would change first, read on the node before and after a run with bad input.
KUBELET_FILES = "stat -c '%a %Y' /var/lib/kubelet/config.yaml && sha256sum /var/lib/kubelet/config.yaml"
STATIC_POD_MANIFESTS = "sha256sum /etc/kubernetes/manifests/*.yaml"
NODE_OS_FILES = ("ls -l --time-style=+%s /etc/sysctl.d /etc/modprobe.d /etc/ssh/sshd_config.d /etc/login.defs "
                 "/etc/pam.d/su /etc/pam.d/common-auth /etc/pam.d/common-password /etc/sudoers.d /etc/security")


def node_output(lab, node: str, command: str) -> str:
    return docker.exec_(lab.container(node), "sh", "-c", command).stdout


def run_playbook(lab, playbook: str, variables: dict, *options: str) -> subprocess.CompletedProcess:
    argv = ["ansible-playbook", "-i", str(lab.inventory_path), *options, str(ROOT / "playbooks" / playbook),
            "-e", json.dumps(variables)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize(("variables", "named"), [
    ({"kubelet_tls_cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]}, "kubelet_tls_cipher_suites"),
    ({"kubelet_server_tls_bootstrap": "sometimes"}, "kubelet_server_tls_bootstrap"),
    ({"kubelet_config_file_mode": "0666"}, "kubelet_config_file_mode"),
    ({"kubelet_config": "podPidsLimit=10"}, "kubelet_config"),
])
def test_invalid_kubelet_variables_fail_before_any_change(lab, variables, named):
    before = node_output(lab, "w1", KUBELET_FILES)
    result = run_playbook(lab, "kubelet.yml", variables)
    assert result.returncode != 0
    assert named in result.stdout and "Validating arguments against arg spec" in result.stdout
    assert node_output(lab, "w1", KUBELET_FILES) == before


@pytest.mark.parametrize(("variables", "named"), [
    ({"control_plane_anonymous_auth": "never"}, "control_plane_anonymous_auth"),
    ({"control_plane_audit_log": {"policy_file": "/p.yaml", "path": "/a.log", "maxage": "a month",
                                  "maxbackup": 10, "maxsize": 100}}, "maxage"),
    ({"control_plane_pod_security_defaults": {"enforce": "strict"}}, "enforce"),
    ({"control_plane_file_modes": [{"path": "/etc/kubernetes/admin.conf", "mode_max": "0777"}]}, "mode_max"),
])
def test_invalid_control_plane_variables_fail_before_any_change(lab, variables, named):
    before = node_output(lab, "cp1", STATIC_POD_MANIFESTS)
    result = run_playbook(lab, "control-plane.yml", variables)
    assert result.returncode != 0
    assert named in result.stdout and "Validating arguments against arg spec" in result.stdout
    assert node_output(lab, "cp1", STATIC_POD_MANIFESTS) == before


@pytest.mark.parametrize(("variables", "named"), [
    ({"node_os_sysctls": {"net.ipv4.ip_forward": 0}}, "node_os_sysctls: sets net.ipv4.ip_forward"),
    ({"node_os_disabled_kernel_modules": ["overlay"]}, "node_os_disabled_kernel_modules: must hold"),
    ({"node_os_su_group": "Admins Group", "node_os_ssh_banner": "issue.net"},
     "node_os_ssh_banner: is an absolute path or none. node_os_su_group: is a group name"),
    ({"node_os_inactive_days": "thirty"}, "node_os_inactive_days"),
    # CIS Debian 12 settings: a sudo Defaults value with a quote would let a value end the line early.
    ({"node_os_sudo_defaults": {"logfile": '/var/log/sudo.log" !use_pty'}, "node_os_password_history": 500},
     "node_os_password_history: is how many previous passwords pam_pwhistory refuses (0 to 400), 0 to leave the "
     "history alone. node_os_sudo_defaults: maps sudo Defaults names"),
])
def test_invalid_node_os_variables_fail_before_any_change(lab, variables, named):
    before = node_output(lab, "w1", NODE_OS_FILES)
    result = run_playbook(lab, "node-os.yml", variables, "-l", "w1")
    assert result.returncode != 0
    assert named in " ".join(result.stdout.split()), result.stdout[-2000:]
    assert "changed=0" in result.stdout
    assert node_output(lab, "w1", NODE_OS_FILES) == before
