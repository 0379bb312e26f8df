from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import replace

import pytest

from kubeharden.lab import cluster, connectivity, docker, kubernetes
from kubeharden.lab.lab import Lab, Topology
from tests.conftest import ROOT, require_lab

# The release every lab runs unless its test names another: the default, or the one `./dev test --release MINOR`
# names (how a pre-release is proven, outside CI).
RELEASE_UNDER_TEST = os.environ.get("KUBEHARDEN_TEST_RELEASE") or kubernetes.DEFAULT_MINOR


def playbook(lab, name: str, *extra: str) -> subprocess.CompletedProcess:
    """Run playbooks/<name> on the lab's inventory."""
    return subprocess.run(["ansible-playbook", "-i", str(lab.inventory_path), str(ROOT / "playbooks" / name), *extra],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})


def module(lab, name: str, args: dict) -> dict:
    """Run one of kubeharden's modules on cp1 (ansible ad hoc, as root); its result, with "failed"."""
    done = subprocess.run(["ansible", "-i", str(lab.inventory_path), "cp1", "-b", "-m", name,
                           *(["-a", json.dumps(args)] if args else [])],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                               "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    return {"failed": done.returncode != 0, **json.loads(done.stdout.split("=>", 1)[1])}


ANONYMOUS_REQUEST = """
import ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile="/etc/kubernetes/pki/ca.crt")
try:
    print(urllib.request.urlopen(sys.argv[1], context=context, timeout=10).status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def anonymous_status(lab, node: str, path: str) -> int:
    """The HTTP status the node's kube-apiserver answers to a request without credentials (CIS 1.2.1)."""
    address = next(n.ip for n in lab.state().nodes if n.name == node)
    done = docker.exec_(lab.container(node), "python3", "-c", ANONYMOUS_REQUEST, f"https://{address}:6443{path}")
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def assert_anonymous_health_only(lab, node: str) -> None:
    """After site.yml: anonymous requests reach the health endpoints (kubelet probes, load balancers) and
    nothing else."""
    assert {path: anonymous_status(lab, node, path) for path in ("/readyz", "/livez", "/healthz")} == \
        {"/readyz": 200, "/livez": 200, "/healthz": 200}
    assert {path: anonymous_status(lab, node, path) for path in ("/api", "/api/v1/namespaces", "/version")} == \
        {"/api": 401, "/api/v1/namespaces": 401, "/version": 401}


PROBE_POD = """apiVersion: v1
kind: Pod
metadata: {name: kubeharden-probe, namespace: kube-system}
spec:
  containers: [{name: pause, image: "%s", imagePullPolicy: Never}]
"""


def wait_default_service_accounts(lab) -> None:
    """The service account controller creates each namespace's default account shortly after the cluster starts;
    until it has, 5.1.5 names the namespace's account as not created yet instead of judging its setting."""
    for namespace in ("default", "kube-public", "kube-node-lease", "kube-system"):
        waited = _kubectl(lab, "wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
        assert waited.returncode == 0, waited.stderr


def _kubectl(lab, *args: str) -> subprocess.CompletedProcess:
    return docker.exec_(lab.container("cp1"), "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf",
                        "--request-timeout=10s", *args, check=False)


def assert_kubelets_verified(lab, timeout: float = 120) -> None:
    """1.2.5 on the real apiserver, after site.yml: it verifies every kubelet against the cluster CA, and still
    reaches each one - `kubectl logs` of a static pod on every node (workers get a pause pod for it) and the
    node proxy both answer."""
    manifest = docker.exec_(lab.container("cp1"), "cat", "/etc/kubernetes/manifests/kube-apiserver.yaml").stdout
    assert "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt" in manifest
    pods = {}
    for node in lab.state().nodes:
        if node.role == "control-plane":
            pods[node.name] = f"kube-apiserver-{node.name}"
            continue
        pause = docker.exec_(node.container, "sh", "-c", "ctr -n k8s.io images ls -q | grep /pause:").stdout.split()[0]
        docker.exec_(node.container, "sh", "-c", "mkdir -p /etc/kubernetes/manifests && cat > "
                     f"/etc/kubernetes/manifests/kubeharden-probe.yaml <<'EOF'\n{PROBE_POD % pause}EOF")
        pods[node.name] = f"kubeharden-probe-{node.name}"
    deadline = time.monotonic() + timeout  # the kubelet scans a new static pod directory every 20 s
    for node, pod in pods.items():
        while (logs := _kubectl(lab, "-n", "kube-system", "logs", pod, "--tail=1")).returncode != 0:
            assert time.monotonic() < deadline, (node, logs.stderr)
            time.sleep(3)
        proxied = _kubectl(lab, "get", "--raw", f"/api/v1/nodes/{node}/proxy/healthz")
        assert proxied.stdout.strip() == "ok", (node, proxied.stderr)


def kube_proxy_metrics_listener(lab, node: str, timeout: float = 60, awaited: tuple[str, ...] = ()) -> str:
    """Where kube-proxy's metrics server listens on the node (the socket itself, as `ss` shows it): 127.0.0.1:10249
    for loopback, *:10249 or 0.0.0.0:10249 for every address. Waits, bounded, while a new kube-proxy starts, and
    with `awaited` until the listener is one of those (a rollout's old process may still listen for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = docker.exec_(lab.container(node), "ss", "-Hltn", "sport = :10249", check=False).stdout.split()
        found = listed[3] if len(listed) >= 4 else "nothing listens"
        if (found != "nothing listens" and (not awaited or found in awaited)) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def edit_kube_proxy_config(lab, old: str, new: str) -> None:
    """A hand-made change to kube-system/kube-proxy's config.conf, rolled out as an operator would."""
    done = _kubectl(lab, "get", "configmap", "-n", "kube-system", "kube-proxy", "-o", "json")
    configmap = json.loads(done.stdout)
    assert old in configmap["data"]["config.conf"], configmap["data"]["config.conf"]
    configmap["data"]["config.conf"] = configmap["data"]["config.conf"].replace(old, new)
    replaced = subprocess.run(["docker", "exec", "-i", lab.container("cp1"), "kubectl",
                               "--kubeconfig=/etc/kubernetes/admin.conf", "replace", "-f", "-"],
                              input=json.dumps(configmap), capture_output=True, text=True, check=False)
    assert replaced.returncode == 0, replaced.stderr
    for step in (("rollout", "restart", "daemonset/kube-proxy"),
                 ("rollout", "status", "daemonset/kube-proxy", "--timeout=120s")):
        done = docker.exec_(lab.container("cp1"), "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "-n",
                            "kube-system", *step, check=False)
        assert done.returncode == 0, done.stderr


# The etcd release's own client (the lab builds it beside the release), not Debian's etcd-client 3.4 in the image.
ETCDCTL = f"{cluster.NODE_RELEASE_DIR}/bin/etcdctl"


def stored_in_etcd(lab, prefix: str, node: str = "cp1") -> dict[str, str]:
    """How etcd stores each value under `prefix`, read with etcdctl, the independent judge of encryption at rest:
    the encryption envelope's provider and key (`secretbox:key1` for a `k8s:enc:secretbox:v1:key1:` value), or
    `plaintext` (the apiserver's protobuf, `k8s\x00`)."""
    pki = f"{cluster.PKI_DIR}/etcd"
    done = docker.exec_(lab.container(node), ETCDCTL, "--endpoints=https://127.0.0.1:2379", f"--cacert={pki}/ca.crt",
                        f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key",
                        "--command-timeout=30s", "get", "--prefix", prefix, "-w", "json", check=False)
    assert done.returncode == 0, done.stderr
    stored = {}
    for item in json.loads(done.stdout).get("kvs") or []:
        key, value = base64.b64decode(item["key"]).decode(), base64.b64decode(item["value"])
        if value.startswith(b"k8s:enc:"):
            _k8s, _enc, provider, _version, name = value.split(b":", 5)[:5]
            stored[key] = f"{provider.decode()}:{name.decode()}"
        else:
            stored[key] = "plaintext"
    return stored


def matrix(lab) -> connectivity.Matrix:
    """The cluster's connectivity as its users see it (kubeharden/lab/connectivity.py)."""
    return connectivity.measure(lab.cluster_nodes(lab.state()))


def _lab(tmp_path_factory, name: str, topology: Topology, under_test: bool = True):
    """A lab for one test module, taken down after it. Under test (the default), a topology on the default release
    runs the release under test instead; under_test=False keeps the topology's release as it is."""
    require_lab()
    if under_test and topology.kubernetes == kubernetes.DEFAULT_MINOR:
        topology = replace(topology, kubernetes=RELEASE_UNDER_TEST)
    name = f"{name}-{os.getpid()}"  # concurrent test runs on one machine get their own labs
    lab = Lab(name, tmp_path_factory.mktemp(name), log=lambda line: None)
    lab.up(topology)
    yield lab
    if os.environ.get("KUBEHARDEN_KEEP_LAB") != "1":
        lab.down(quiet=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The default topology: cp1 + w1 running the default Kubernetes release (kubeadm init and join), etcd as
    kubeadm's static pod, Debian 12. One per test module: two labs at once in the pytest phase (two workers)."""
    yield from _lab(tmp_path_factory, "pytest", Topology())


@pytest.fixture(scope="module")
def host_etcd_lab(tmp_path_factory):
    """kubespray's topology: etcd as a host systemd service, on Debian 13."""
    yield from _lab(tmp_path_factory, "pytest-host", Topology(control_planes=1, workers=0, etcd="host", debian="13"))


@pytest.fixture(scope="module")
def gate_lab(tmp_path_factory):
    """A control-plane node of its own: the restart-gate test changes manifests."""
    yield from _lab(tmp_path_factory, "pytest-gate", Topology(control_planes=1, workers=0))


@pytest.fixture(scope="module")
def firewall_lab(tmp_path_factory):
    """Three control-plane nodes (a real etcd cluster) and two workers: sources on both sides of each rule."""
    yield from _lab(tmp_path_factory, "pytest-fw", Topology(control_planes=3, workers=2))
