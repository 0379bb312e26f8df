"""The control-plane restart gate: a component that does not come back gets its previous manifest back."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from kubeharden.lab import cluster, docker
from tests.conftest import ROOT

pytestmark = pytest.mark.lab
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
# The lab's stock kubelets sign their own serving certificates: the apiserver cannot verify them (1.2.5).
UNVERIFIED_KUBELETS = {"control_plane_kubelet_certificate_authority": ""}


def test_the_apiserver_is_not_told_to_verify_kubelets_it_cannot_verify(gate_lab):
    """1.2.5 would break kubectl logs/exec on every stock kubelet: the role stops before the manifest changes."""
    container = gate_lab.container("cp1")
    before = docker.exec_(container, "sha256sum", MANIFEST).stdout
    result = subprocess.run(
        ["ansible-playbook", "-i", str(gate_lab.inventory_path), str(ROOT / "playbooks/control-plane.yml"),
         "--tags", "control_plane_apiserver"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    stopped = "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt would break kubectl logs/exec on cp1:"
    assert stopped in result.stdout and "self-signed certificate" in result.stdout, result.stdout[-3000:]
    assert docker.exec_(container, "sha256sum", MANIFEST).stdout == before


# Long enough for a loaded kubelet to stop the old apiserver and start the new one at least once (40 s was not, in
# a CI run beside other labs: no process and no log yet), so that its own error can be read.
REFUSED_TIMEOUT = 75
REFUSED_CHANGES = {  # a change the real kube-apiserver refuses at start, and what its own error names
    "unknown flag": ({"no-such-flag": "true"}, "unknown flag: --no-such-flag"),
    "unreadable file": ({"egress-selector-config-file": "/etc/kubernetes/pki/no-such-egress.yaml"},
                        "/etc/kubernetes/pki/no-such-egress.yaml"),
}


@pytest.mark.parametrize("change", REFUSED_CHANGES, ids=list(REFUSED_CHANGES))
def test_gate_restores_the_manifest_when_the_apiserver_does_not_come_back(gate_lab, change):
    """A flag the real kube-apiserver refuses keeps it from starting: the previous manifest comes back, and the
    play fails naming the component and what the apiserver said about the flag."""
    extra_flags, named = REFUSED_CHANGES[change]
    container = gate_lab.container("cp1")
    first = subprocess.run(  # everything before the apiserver (etcd as its own user) settles first
        ["ansible-playbook", "-i", str(gate_lab.inventory_path), str(ROOT / "playbooks/control-plane.yml"),
         "--tags", "control_plane_files,control_plane_etcd"], capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stdout[-3000:]
    before = docker.exec_(container, "sha256sum", MANIFEST).stdout
    result = subprocess.run(
        ["ansible-playbook", "-i", str(gate_lab.inventory_path), str(ROOT / "playbooks/control-plane.yml"),
         "-e", json.dumps({"control_plane_health_timeout": REFUSED_TIMEOUT, **UNVERIFIED_KUBELETS,
                           "control_plane_apiserver_extra_flags": extra_flags})],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    gave_up = f"kube-apiserver did not run its new manifest and report healthy within {REFUSED_TIMEOUT} s"
    assert gave_up in result.stdout, result.stdout[-3000:]
    assert "previous manifest was restored from /var/backups/kubeharden/etc/kubernetes/manifests/" in result.stdout
    assert "Its last error: " in result.stdout and named in result.stdout, result.stdout[-3000:]
    assert docker.exec_(container, "sha256sum", MANIFEST).stdout == before
    assert docker.exec_(container, "stat", "-c", "%a %U:%G", MANIFEST).stdout.strip() == "600 root:root"
    # The play stopped at the apiserver: the controller-manager was not touched either.
    assert "profiling" not in docker.exec_(container, "cat", "/etc/kubernetes/manifests/kube-controller-manager.yaml"
                                           ).stdout
    # The kubelet runs the restored manifest: the apiserver is ready again.
    deadline = time.monotonic() + 120
    while cluster.kubectl(container, "get", "--raw", "/readyz").stdout.strip() != "ok":
        assert time.monotonic() < deadline, "the apiserver did not come back on its previous manifest"
        time.sleep(2)


def test_check_mode_never_triggers_the_gate(gate_lab):
    """Check mode changes no manifest, restarts no component and runs none of the gate's waits."""
    container = gate_lab.container("cp1")
    manifests = "sha256sum /etc/kubernetes/manifests/*.yaml"
    processes = "for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do pgrep -x $c; done"
    before = [docker.exec_(container, "sh", "-c", script).stdout for script in (manifests, processes)]
    result = subprocess.run(
        ["ansible-playbook", "-i", str(gate_lab.inventory_path), str(ROOT / "playbooks/control-plane.yml"),
         "--check", "-e", json.dumps({"control_plane_health_gate": True, "control_plane_health_timeout": 5})],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "changed=" in result.stdout and "changed=0" not in result.stdout.split("PLAY RECAP")[-1], \
        "check mode must find the stock control plane's changes to make"
    after = [docker.exec_(container, "sh", "-c", script).stdout for script in (manifests, processes)]
    assert after == before  # same manifest bytes, same processes (none restarted)
    # Every gate task was skipped: none waited on a component.
    for block in result.stdout.split("TASK [")[1:]:
        name, _sep, output = block.partition("]")
        if "Wait until the process runs the new manifest" in name or "Wait for the health endpoint" in name:
            assert output.strip().startswith(("*", "skipping")) and "ok:" not in output and "FAILED" not in output, \
                (name, output[:500])


def test_gate_lets_etcd_through_once_it_runs_the_new_manifest_as_its_user(gate_lab):
    """Real etcd (restarted by the kubelet) passes the gate: its process runs the new flags, /health is OK. The run
    starts where an interrupted switch stopped: etcd and the apiserver stopped, their manifests staged outside the
    kubelet's directory."""
    from kubeharden.lab.lab import etcdctl

    container = gate_lab.container("cp1")
    for component in ("etcd", "kube-apiserver"):
        docker.exec_(container, "mv", f"/etc/kubernetes/manifests/{component}.yaml",
                     f"/etc/kubernetes/{component}.yaml.kubeharden-staged")
    result = subprocess.run(
        ["ansible-playbook", "-i", str(gate_lab.inventory_path), str(ROOT / "playbooks/control-plane.yml"),
         "--tags", "control_plane_etcd", "-e", json.dumps({"control_plane_health_gate": True,
                                                           "control_plane_health_timeout": 60})],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Wait for the health endpoint of etcd" in result.stdout
    assert etcdctl(container, "endpoint", "health").returncode == 0
    assert docker.exec_(container, "ps", "-o", "user=", "-C", "etcd").stdout.split() == ["etcd"]
    assert docker.exec_(container, "stat", "-c", "%U:%G %a", "/var/lib/etcd").stdout.strip() == "etcd:etcd 700"
    assert docker.exec_(container, "sh", "-c", "ls /etc/kubernetes/*.kubeharden-staged", check=False).returncode != 0
    deadline = time.monotonic() + 120  # the apiserver's manifest is back: the kubelet starts it again
    while cluster.kubectl(container, "get", "--raw", "/readyz").stdout.strip() != "ok":
        assert time.monotonic() < deadline, "the apiserver did not come back from its staged manifest"
        time.sleep(2)
