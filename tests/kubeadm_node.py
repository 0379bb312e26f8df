"""A node's files exactly as real kubeadm writes them, under a temporary root: the fixtures of the unit tests.

`kubeadm init phase ... --rootfs DIR` chroots into DIR and writes there what it writes on a node: the PKI, the
kubeconfigs, the static pod manifests and the kubelet's configuration. The binary is the lab's cached build
(`kubeharden lab build`); without one the test is skipped with the command that builds it, or fails when
KUBEHARDEN_REQUIRE_LAB=1 (CI builds every supported release before the tests).
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from kubeharden.lab import kubernetes
from kubeharden.lab.errors import LabError

NODE_NAME, NODE_IP = "cp1", "172.30.0.11"
# What every node needs; "etcd local" writes the stacked etcd's manifest.
# A Debian node with ca-certificates has these; kubeadm mounts each into the control plane only if it exists.
CA_DIRS = ("etc/ssl/certs", "etc/ca-certificates", "usr/share/ca-certificates", "usr/local/share/ca-certificates")
PHASES = ("certs all", "kubeconfig all", "control-plane all", "etcd local", "kubelet-start")


def release(minor: str = kubernetes.DEFAULT_MINOR) -> kubernetes.Release:
    """The cached build of `minor` (no proxy asked), or a skip naming the command that builds it."""
    newest = kubernetes.newest_cached(minor)
    found = kubernetes.Release(newest, kubernetes.LAB_MINORS[minor]) if newest else None
    if found is None or not kubernetes.cached(found):
        message = f"no Kubernetes {minor} build is cached: run `kubeharden lab build --kubernetes-version {minor}`"
        if os.environ.get("KUBEHARDEN_REQUIRE_LAB") == "1":
            pytest.fail(f"KUBEHARDEN_REQUIRE_LAB=1 but {message}")
        pytest.skip(message)
    return found


def cached_minors() -> list[str]:
    """The supported minors with a cached build, for tests that run on every release built here."""
    return [m for m in sorted(kubernetes.SUPPORTED_MINORS) if kubernetes.newest_cached(m)]


def configuration(version: str, *, validity_days: int = 365, cluster: dict | None = None,
                  kubelet: dict | None = None) -> list[dict]:
    """A single control-plane node's InitConfiguration + ClusterConfiguration (+ KubeletConfiguration)."""
    documents = [
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
         "localAPIEndpoint": {"advertiseAddress": NODE_IP, "bindPort": 6443},
         "nodeRegistration": {"name": NODE_NAME, "criSocket": "unix:///run/containerd/containerd.sock"}},
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration", "kubernetesVersion": version,
         "certificateValidityPeriod": f"{validity_days * 24}h0m0s", **(cluster or {})},
    ]
    if kubelet is not None:
        documents.append({"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration", **kubelet})
    return documents


def write_node(root: Path, documents: list[dict], release_: kubernetes.Release,
               phases: tuple[str, ...] = PHASES) -> Path:
    """Run kubeadm's init phases for `documents` with `root` as the node's filesystem; returns root."""
    for directory in CA_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "kubeadm.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    kubeadm = release_.directory / "bin" / "kubeadm"
    for phase in phases:
        result = subprocess.run([str(kubeadm), "init", "phase", *phase.split(), "--config", "/kubeadm.yaml",
                                 "--rootfs", str(root)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LabError(f"kubeadm init phase {phase} failed: {(result.stderr or result.stdout)[-800:]}")
    (root / "kubeadm.yaml").unlink()
    return root


def kubelet_first_start(root: Path, release_: kubernetes.Release) -> None:
    """What the kubelet and kubeadm do once the kubelet first runs: the kubelet stores the client certificate of
    kubelet.conf in its PKI directory (a dated file and the kubelet-client-current.pem link, as it names them), and
    kubeadm's kubelet-finalize phase points kubelet.conf at that link so the kubelet can rotate it."""
    user = yaml.safe_load((root / "etc/kubernetes/kubelet.conf").read_text())["users"][0]["user"]
    pki = root / "var/lib/kubelet/pki"
    pki.mkdir(parents=True, exist_ok=True)
    dated = pki / "kubelet-client-2026-01-01-00-00-00.pem"
    dated.write_bytes(base64.b64decode(user["client-certificate-data"]) + base64.b64decode(user["client-key-data"]))
    dated.chmod(0o600)
    # The kubelet links by absolute path; relative here, so the link resolves inside the temporary root.
    (pki / "kubelet-client-current.pem").symlink_to(dated.name)
    write_node(root, configuration(release_.version), release_, ("kubelet-finalize enable-client-cert-rotation",))


@functools.cache
def _generated(minor: str, validity_days: int) -> Path:
    """One generated node per (release, validity) per test session; tests get copies of it."""
    release_ = release(minor)
    directory = Path(tempfile.mkdtemp(prefix=f"kubeadm-{minor}-"))
    root = write_node(directory / "root", configuration(release_.version, validity_days=validity_days), release_)
    kubelet_first_start(root, release_)
    return root


def control_plane(target: Path, *, minor: str = kubernetes.DEFAULT_MINOR, validity_days: int = 365) -> Path:
    """A fresh copy of a single control-plane node (stacked etcd) as `kubeadm init` leaves it, at `target`."""
    shutil.copytree(_generated(minor, validity_days), target, symlinks=True, dirs_exist_ok=True)
    return target


def node_file(path: str, *, minor: str = kubernetes.DEFAULT_MINOR) -> str:
    """The text of one file of that node, such as /etc/kubernetes/manifests/kube-apiserver.yaml."""
    return (_generated(minor, 365) / path.lstrip("/")).read_text()
