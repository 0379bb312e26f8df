"""The lab's nodes are what kubeadm init and join leave, proven on live nodes (real kubeadm, kubelet and etcd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kubeharden.audit import EXIT_OK
from kubeharden.lab import docker
from kubeharden.lab.lab import Lab, Topology, etcdctl
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "molecule" / "shared"))  # not a package
from lab_audit import handshake_command

pytestmark = pytest.mark.lab

PKI = "/etc/kubernetes/pki"
LEAVES = {  # leaf certificate -> the CA that must verify it
    "apiserver.crt": "ca.crt", "apiserver-kubelet-client.crt": "ca.crt",
    "apiserver-etcd-client.crt": "etcd/ca.crt", "front-proxy-client.crt": "front-proxy-ca.crt",
    "etcd/server.crt": "etcd/ca.crt", "etcd/peer.crt": "etcd/ca.crt", "etcd/healthcheck-client.crt": "etcd/ca.crt",
}
# What kubeadm leaves (reference: kubeadm layout): path -> "mode owner:group".
CONTROL_PLANE_MODES = {
    "/etc/kubernetes/manifests": "700 root:root",
    **{f"/etc/kubernetes/manifests/{m}.yaml": "600 root:root"
       for m in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")},
    **{f"/etc/kubernetes/{c}.conf": "600 root:root"
       for c in ("admin", "super-admin", "controller-manager", "scheduler", "kubelet")},
    PKI: "755 root:root", f"{PKI}/etcd": "755 root:root",
    f"{PKI}/ca.key": "600 root:root", f"{PKI}/ca.crt": "644 root:root", f"{PKI}/sa.key": "600 root:root",
    f"{PKI}/sa.pub": "600 root:root", f"{PKI}/etcd/server.key": "600 root:root",
    "/var/lib/etcd": "700 root:root", "/var/lib/kubelet": "700 root:root",
    "/var/lib/kubelet/config.yaml": "644 root:root", "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf":
        "644 root:root",
}


def sh(container: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return docker.exec_(container, "sh", "-c", script, check=check)


def cp1(lab: Lab) -> str:
    return lab.container("cp1")


@pytest.mark.parametrize(("leaf", "ca"), sorted(LEAVES.items()))
def test_leaf_verifies_against_its_ca_with_openssl(lab, leaf, ca):
    result = sh(cp1(lab), f"openssl verify -CAfile {PKI}/{ca} {PKI}/{leaf}", check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr


def test_leaf_does_not_verify_against_another_ca(lab):
    result = sh(cp1(lab), f"openssl verify -CAfile {PKI}/ca.crt {PKI}/etcd/server.crt", check=False)
    assert result.returncode != 0 and "unable to get local issuer certificate" in result.stdout + result.stderr


def test_apiserver_sans_include_service_names_service_ip_and_node_ip(lab):
    node_ip = lab.state().nodes[0].ip
    output = sh(cp1(lab), f"openssl x509 -in {PKI}/apiserver.crt -noout -ext subjectAltName").stdout
    sans = {name.strip() for name in output.splitlines()[1].split(",")}
    assert sans == {"DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                    "DNS:kubernetes.default.svc.cluster.local", "DNS:cp1", "IP Address:10.96.0.1",
                    f"IP Address:{node_ip}"}


def test_control_plane_modes_and_owners_match_kubeadm(lab):
    paths = " ".join(CONTROL_PLANE_MODES)
    lines = sh(cp1(lab), f"stat -c '%n %a %U:%G' {paths}").stdout.splitlines()
    actual = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}
    assert actual == CONTROL_PLANE_MODES


def test_worker_has_kubelet_state_and_no_control_plane_secrets(lab):
    worker = lab.container("w1")
    assert sh(worker, "stat -c '%a %U:%G' /etc/kubernetes/kubelet.conf /var/lib/kubelet/config.yaml").stdout \
        .split() == ["600", "root:root", "644", "root:root"]
    assert sh(worker, f"test -e {PKI}/ca.key", check=False).returncode == 1
    assert sh(worker, "ls /etc/kubernetes/manifests 2>/dev/null || true").stdout == ""
    client = sh(worker, "openssl x509 -in /var/lib/kubelet/pki/kubelet-client-current.pem -noout -subject").stdout
    assert "O = system:nodes, CN = system:node:w1" in client


def tls_handshake(client: str = "") -> str:
    """openssl's handshake with etcd on cp1, as the molecule scenarios run it (molecule/shared/lab_audit.py)."""
    return f"{handshake_command(2379, f'{PKI}/etcd/ca.crt', client)} 2>&1"


def test_etcd_serves_the_healthcheck_client_and_refuses_a_client_without_certificate(lab):
    """The refusal is etcd's TLS handshake asking for a client certificate (openssl's own report), not any error."""
    assert etcdctl(cp1(lab), "endpoint", "health").returncode == 0
    refused = sh(cp1(lab), tls_handshake(), check=False).stdout
    assert "alert certificate required" in refused, refused[-1500:]
    client = f"-cert {PKI}/etcd/healthcheck-client.crt -key {PKI}/etcd/healthcheck-client.key"
    accepted = sh(cp1(lab), tls_handshake(client), check=False).stdout
    assert "Verify return code: 0 (ok)" in accepted and "alert" not in accepted, accepted[-1500:]


def _etcd_pid(container: str) -> int | None:
    found = sh(container, "pgrep -x etcd", check=False).stdout.split()
    return int(found[0]) if found else None


def _wait_for(predicate, timeout: float = 30, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def test_editing_a_flag_in_etcd_yaml_restarts_etcd_with_it(lab):
    container = cp1(lab)
    before = _etcd_pid(container)
    manifest = "/etc/kubernetes/manifests/etcd.yaml"
    sh(container, f"cp -p {manifest} /root/etcd.yaml.orig && sed -i 's/--snapshot-count=10000/--snapshot-count=5000/'"
                  f" {manifest}")
    try:
        pid = _wait_for(lambda: (pid := _etcd_pid(container)) not in (None, before) and pid, timeout=90)
        cmdline = sh(container, f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
        assert "--snapshot-count=5000" in cmdline
        _wait_for(lambda: etcdctl(container, "endpoint", "health").returncode == 0)
    finally:
        sh(container, f"mv /root/etcd.yaml.orig {manifest}")
        _wait_for(lambda: etcdctl(container, "endpoint", "health").returncode == 0, timeout=90)


def test_a_flag_naming_an_unmounted_file_keeps_etcd_from_starting(lab):
    """The kubelet's container cannot open a file outside its hostPath mounts (kubernetes#53867)."""
    container = cp1(lab)
    manifest = "/etc/kubernetes/manifests/etcd.yaml"
    sh(container, f"cp -p {manifest} /root/etcd.yaml.orig && sed -i "
                  f"'s#--trusted-ca-file={PKI}/etcd/ca.crt#--trusted-ca-file={PKI}/ca.crt#' {manifest}")
    try:
        logs = "cat /var/log/pods/kube-system_etcd-cp1_*/etcd/*.log 2>/dev/null"
        _wait_for(lambda: f"{PKI}/ca.crt: no such file or directory" in sh(container, logs, check=False).stdout,
                  timeout=90)
        down = etcdctl(container, "endpoint", "health")
        assert down.returncode != 0 and "unhealthy" in down.stdout + down.stderr  # the reason is the log line above
    finally:
        sh(container, f"mv /root/etcd.yaml.orig {manifest}")
        _wait_for(lambda: etcdctl(container, "endpoint", "health").returncode == 0, timeout=120)


def test_ansible_reaches_every_node_over_ssh_and_becomes_root(lab):
    result = subprocess.run(["ansible", "-i", str(lab.inventory_path), "all", "--become", "-m",
                             "ansible.builtin.command", "-a", "id -un"], capture_output=True, text=True,
                            env={**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("CHANGED") == 2 and "root" in result.stdout


def test_up_twice_gives_the_same_lab(lab):
    def fingerprint():
        return sh(cp1(lab), f"openssl x509 -in {PKI}/apiserver.crt -noout -fingerprint -sha256").stdout

    before, nodes_before = fingerprint(), lab.state().nodes
    lab.up(lab.state().topology)
    assert fingerprint() == before and lab.state().nodes == nodes_before


def test_host_etcd_runs_as_etcd_user_with_tls(host_etcd_lab):
    container = host_etcd_lab.container("cp1")
    assert sh(container, "systemctl is-active etcd").stdout.strip() == "active"
    assert sh(container, "ps -o user= -C etcd").stdout.split() == ["etcd"]
    assert sh(container, "test -e /etc/kubernetes/manifests/etcd.yaml", check=False).returncode == 1
    assert etcdctl(container, "endpoint", "health").returncode == 0
    assert "trixie" in sh(container, "cat /etc/os-release").stdout


def test_host_etcd_is_audited_from_the_running_service(host_etcd_lab):
    """The audit of section 2 on etcd as a host service (here, beside the lab it needs, not one more lab)."""
    done = subprocess.run(["kubeharden", "audit", "-i", str(host_etcd_lab.inventory_path), "--controls",
                           "2,1.1.11,1.1.12", "--format", "json"], capture_output=True, text=True)
    report = json.loads(done.stdout)
    assert done.returncode == EXIT_OK, report
    results = {r["id"]: r for r in report["nodes"]["cp1"]["results"]}
    assert {cid: r["status"] for cid, r in results.items() if cid.startswith("2.")} == {
        "2.1": "pass", "2.2": "pass", "2.3": "pass", "2.4": "pass", "2.5": "pass", "2.6": "pass", "2.7": "pass"}
    assert "running etcd process" in results["2.2"]["evidence"]
    # The host service's data dir is etcd-owned (Debian's package), unlike kubeadm's static pod.
    assert results["1.1.12"]["status"] == "pass" and results["1.1.11"]["status"] == "pass"


def test_down_removes_only_what_the_lab_created(tmp_path):
    lab = Lab(f"pytest-down-{os.getpid()}", tmp_path, log=lambda line: None)
    lab.up(Topology(control_planes=1, workers=0))
    bystander = f"kubeharden-pytest-down-{os.getpid()}-bystander"
    docker.run("network", "create", "--internal", bystander)
    try:
        assert lab.down(quiet=True) == 1
        assert docker.list_ids("container", lab.label) == [] and docker.list_ids("network", lab.label) == []
        assert not lab.inventory_path.exists() and not lab.state_dir.exists()
        assert docker.inspect("network", bystander) is not None
    finally:
        docker.run("network", "rm", bystander)
