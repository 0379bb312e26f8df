"""The control_plane role's manifests after the whole site, loaded as Pods: every file a flag names is mounted, every
flag is one the release's real binary takes, the worker has no static pod, etcd runs as its own user."""

import re
import subprocess
from pathlib import Path

import ansible.module_utils
import pytest
import yaml

from kubeharden.lab import kubernetes

# module_utils are imported as Ansible imports them: that package's path also holds the checkout's.
ansible.module_utils.__path__.append(str(Path(__file__).resolve().parents[3] / "module_utils"))
from ansible.module_utils import kubeharden_manifest  # noqa: E402 - after its path is added

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def manifest(host, component):
    with host.sudo():
        return yaml.safe_load(host.file(f"/etc/kubernetes/manifests/{component}.yaml").content_string)


def is_control_plane(host):
    return host.backend.get_hostname().startswith("cp")


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_file_a_flag_names_is_in_a_mounted_host_path(host, component):
    if not is_control_plane(host):
        pytest.skip("static pods exist on control-plane nodes only")
    pod = manifest(host, component)
    command = pod["spec"]["containers"][0]["command"]
    mounted = kubeharden_manifest.mounts(pod)
    for flag, path in kubeharden_manifest.flag_paths(command):
        assert any(path == m or path.startswith(m + "/") for m in mounted), f"{component} --{flag}={path}"
        host_path = mounted[max((m for m in mounted if path == m or path.startswith(m + "/")), key=len)][0]
        with host.sudo():
            assert host.file(path).exists or flag in kubeharden_manifest.WRITABLE_PATH_FLAGS, (flag, path, host_path)


def known_flags(component: str, version: str) -> set[str]:
    """The flags the component's real binary of that release takes: its own `--help` (the lab's cached build)."""
    release = kubernetes.resolve(version.lstrip("v"))
    shown = subprocess.run([str(release.binary(component)), "--help"], capture_output=True, text=True, check=False)
    flags = set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", shown.stdout + shown.stderr, re.MULTILINE))
    assert len(flags) > 20, f"{component} --help listed no flags: {shown.stderr[-500:]}"
    return flags


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_flag_of_the_running_manifest_is_one_the_real_binary_takes(host, component):
    """Judged by the release's own binary, not by kubeharden's flag table: an unknown or removed flag fails here."""
    if not is_control_plane(host):
        pytest.skip("static pods exist on control-plane nodes only")
    pod = manifest(host, component)
    version = next(c["image"] for c in manifest(host, "kube-apiserver")["spec"]["containers"]).rsplit(":", 1)[1]
    used = {arg[2:].split("=", 1)[0] for arg in pod["spec"]["containers"][0]["command"][1:] if arg.startswith("--")}
    assert used, f"{component}'s manifest has no flags"
    assert used - known_flags(component, version) == set()


def test_worker_is_untouched(host):
    if is_control_plane(host):
        pytest.skip("worker check")
    with host.sudo():
        assert host.run("ls /etc/kubernetes/manifests").stdout == ""
        assert not host.file("/etc/kubernetes/audit").exists


def test_etcd_runs_as_its_own_user_and_serves(host):
    if not is_control_plane(host):
        pytest.skip("etcd runs on control-plane nodes")
    with host.sudo():
        assert host.run("ps -o user= -C etcd").stdout.split() == ["etcd"]
        pki = "/etc/kubernetes/pki/etcd"
        health = host.run(f"ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={pki}/ca.crt "
                          f"--cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key endpoint health")
        assert health.rc == 0, health.stderr
        assert host.file("/var/lib/etcd").user == "etcd"
        assert host.run("find /etc/kubernetes/pki ! -user root").stdout == ""  # 1.1.19 still holds
