"""The lab's Kubernetes builds and kubeadm configuration: version window, wrapper module, cache integrity."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import tarfile

import pytest
import yaml

from kubeharden.lab import cluster, component_images, kubernetes
from kubeharden.lab.errors import LabError
from tests.conftest import ROOT

UPSTREAM_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/cri-streaming => ./staging/src/k8s.io/cri-streaming
)
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEHARDEN_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def served(monkeypatch):
    versions = ["v1.36.1", "v1.36.3", "v1.37.0", "v1.37.2", "v1.37.10", "v1.38.0-alpha.1"]
    monkeypatch.setattr(kubernetes, "_served_versions", lambda log: versions)
    return versions


def test_a_minor_resolves_to_its_newest_served_patch(cache, served):
    assert kubernetes.resolve("1.37").version == "v1.37.10"
    assert kubernetes.resolve("v1.36").version == "v1.36.3"
    assert kubernetes.resolve(None).version.startswith(f"v{kubernetes.DEFAULT_MINOR}.")


def test_an_exact_patch_must_be_served(cache, served):
    assert kubernetes.resolve("1.37.2").version == "v1.37.2"
    with pytest.raises(LabError, match=r"v1.37.7 is not served.*newest 1.37 patch is v1.37.10"):
        kubernetes.resolve("1.37.7")


@pytest.mark.parametrize("version", ["1.34", "1.39", "1.29.4", "2.0"])
def test_versions_outside_the_window_are_refused_naming_it(cache, served, version):
    window = kubernetes.supported_window()
    refusal = rf"outside the versions kubeharden supports \({window}; 1\.38 as a pre-release\)"
    with pytest.raises(LabError, match=refusal):
        kubernetes.resolve(version)


@pytest.mark.parametrize("version", ["latest", "1", "1.37.x", ""])
def test_malformed_versions_are_refused(cache, served, version):
    with pytest.raises(LabError, match=r"not a version such as 1\.37"):
        kubernetes.resolve(version)


def test_a_complete_cached_build_wins_over_asking_the_proxy(cache, monkeypatch):
    release = kubernetes.Release("v1.37.2", kubernetes.SUPPORTED_MINORS["1.37"])
    release.directory.mkdir(parents=True)
    (release.directory / "manifest.json").write_text(json.dumps({"version": release.version, "etcd": release.etcd}))

    def no_proxy(log):
        raise AssertionError("the proxy was asked although a build is cached")

    monkeypatch.setattr(kubernetes, "_served_versions", no_proxy)
    assert kubernetes.resolve("1.37") == release


def test_without_go_or_proxy_a_minor_falls_back_to_the_known_patch(cache, monkeypatch):
    monkeypatch.setattr(kubernetes, "_served_versions", lambda log: None)
    assert kubernetes.resolve("1.36").version == kubernetes.KNOWN_PATCHES["1.36"]


def test_every_supported_minor_has_a_known_patch_and_a_go_version():
    assert set(kubernetes.LAB_MINORS) == set(kubernetes.KNOWN_PATCHES) == set(kubernetes.GO_MINIMUM)
    for minor, patch in kubernetes.KNOWN_PATCHES.items():
        assert patch.startswith(f"v{minor}.")
    assert set(kubernetes.GO_TOOLCHAINS) <= set(kubernetes.LAB_MINORS)


def test_a_prerelease_minor_is_never_the_default_and_resolves_to_its_newest_prerelease(cache, monkeypatch):
    assert kubernetes.DEFAULT_MINOR not in kubernetes.PRERELEASE_MINORS
    assert not set(kubernetes.PRERELEASE_MINORS) & set(kubernetes.SUPPORTED_MINORS)
    served = ["v1.37.2", "v1.38.0-alpha.2", "v1.38.0-beta.0", "v1.38.0-alpha.10"]
    monkeypatch.setattr(kubernetes, "_served_versions", lambda log: served)
    release = kubernetes.resolve("1.38")
    assert release.version == "v1.38.0-beta.0" and release.prerelease
    assert release.label == "v1.38.0-beta.0 (pre-release)"
    assert release.etcd == kubernetes.PRERELEASE_MINORS["1.38"]
    assert kubernetes.resolve("1.38.0-beta.0").version == "v1.38.0-beta.0"
    assert not kubernetes.resolve("1.37").prerelease
    served.append("v1.38.0")  # the release itself outranks every pre-release
    assert kubernetes.resolve("1.38").version == "v1.38.0"
    with pytest.raises(LabError, match="pre-release of a minor kubeharden supports as released"):
        kubernetes.resolve("1.37.3-rc.0")
    with pytest.raises(LabError, match=r"1\.38 as a pre-release"):
        kubernetes.resolve("1.39")


def test_a_prerelease_lab_opts_its_own_inventory_in_and_a_supported_one_does_not():
    from kubeharden.lab.lab import kubernetes_group_vars

    prerelease = yaml.safe_load(kubernetes_group_vars(kubernetes.Release("v1.38.0-beta.0", "v3.7.1")))
    released = yaml.safe_load(kubernetes_group_vars(kubernetes.Release("v1.37.2", "v3.6.16")))
    assert prerelease["control_plane_allow_prerelease"] is True
    assert "control_plane_allow_prerelease" not in released


def test_the_wrapper_module_replaces_each_staging_module_with_the_published_release(tmp_path):
    upstream = tmp_path / "upstream.mod"
    upstream.write_text(UPSTREAM_GO_MOD)
    replacements = kubernetes._staging_replacements(upstream, "v1.37.2")
    assert replacements == {"k8s.io/api": "v0.37.2", "k8s.io/client-go": "v0.37.2", "k8s.io/cri-streaming": "v0.37.2"}
    kubernetes._write_wrapper(tmp_path / "w", "k8s.io/kubernetes", "v1.37.2", replacements)
    go_mod = (tmp_path / "w" / "go.mod").read_text()
    assert "\tk8s.io/kubernetes v1.37.2\n" in go_mod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.2\n" in go_mod
    if subprocess.run(["go", "version"], capture_output=True, check=False).returncode == 0:
        # The go command itself must accept the file (syntax only: nothing is downloaded).
        result = subprocess.run(["go", "mod", "edit", "-json"], cwd=tmp_path / "w", capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["Replace"]) == 3


def test_a_go_mod_without_staging_lines_is_refused(tmp_path):
    upstream = tmp_path / "upstream.mod"
    upstream.write_text("module k8s.io/kubernetes\n\ngo 1.26.0\n")
    with pytest.raises(LabError, match="no staging replace lines"):
        kubernetes._staging_replacements(upstream, "v1.37.2")


def test_binaries_are_stamped_with_the_release_as_upstream_does():
    flags = kubernetes._kubernetes_ldflags("v1.37.2", {"Origin": {"Hash": "abc123"}, "Time": "2026-11-12T10:00:00Z"})
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=37" in flags
        assert f"-X {package}.gitCommit=abc123" in flags
        assert f"-X {package}.buildDate=2026-11-12T10:00:00Z" in flags


def _fake_entry(release: kubernetes.Release) -> None:
    (release.directory / "bin").mkdir(parents=True)
    for name in kubernetes.ENTRY_FILES:
        (release.directory / name).write_bytes(name.encode())
    manifest = {"key": release.key, "version": release.version, "etcd": release.etcd,
                "sha256": {name: kubernetes._sha256(release.directory / name) for name in kubernetes.ENTRY_FILES}}
    (release.directory / "manifest.json").write_text(json.dumps(manifest))


def test_only_a_complete_unaltered_cache_entry_counts(cache):
    release = kubernetes.Release("v1.37.2", "v3.6.16")
    assert not kubernetes.cached(release)
    _fake_entry(release)
    assert kubernetes.cached(release)
    (release.directory / "bin" / "kubelet").write_bytes(b"truncated")
    assert not kubernetes.cached(release), "a binary that changed after the build must not be trusted"
    _fake_entry(kubernetes.Release("v1.37.3", "v3.6.16"))
    (cache / "kubernetes" / kubernetes.Release("v1.37.3", "v3.6.16").key / "manifest.json").unlink()
    assert not kubernetes.cached(kubernetes.Release("v1.37.3", "v3.6.16")), "no manifest: an interrupted build"


def test_the_cache_key_changes_with_version_etcd_and_recipe(monkeypatch):
    keys = {kubernetes.Release("v1.37.2", "v3.6.16").key, kubernetes.Release("v1.37.3", "v3.6.16").key,
            kubernetes.Release("v1.37.2", "v3.6.15").key}
    monkeypatch.setattr(kubernetes, "RECIPE", "changed")
    keys.add(kubernetes.Release("v1.37.2", "v3.6.16").key)
    assert len(keys) == 4


def test_a_build_without_go_says_so(cache, monkeypatch):
    monkeypatch.setattr(kubernetes.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match=r"needs Go 1\.26 or newer: install it"):
        kubernetes.ensure_binaries(kubernetes.Release("v1.37.2", "v3.6.16"))
    assert not list((cache / "kubernetes").glob("v1.37.2*")), "nothing half-built may be left behind"


def test_component_images_archive_is_what_docker_save_writes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "etcdctl", "pause"):
        (bin_dir / name).write_bytes(b"\x7fELF" + name.encode())
    images = component_images.images_for("v1.37.2", "3.6.16-0", "3.10.2")
    component_images.write_archive(images, bin_dir, tmp_path / "images.tar")
    with tarfile.open(tmp_path / "images.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        tags = [entry["RepoTags"][0] for entry in manifest]
        assert tags == ["registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
                        "registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/etcd:3.6.16-0",
                        "registry.k8s.io/pause:3.10.2"]
        etcd = manifest[3]
        config = json.load(archive.extractfile(etcd["Config"]))
        with tarfile.open(fileobj=archive.extractfile(etcd["Layers"][0])) as layer:
            assert {"usr/local/bin/etcd", "usr/local/bin/etcdctl", "etc/passwd", "tmp"} <= set(layer.getnames())
            assert layer.getmember("usr/local/bin/etcd").mode == 0o755
        assert any(item.startswith("PATH=") for item in config["config"]["Env"])


def test_kubeadm_configurations_hold_the_lab_facts_and_the_join_secrets():
    node = cluster.ClusterNode("cp1", "control-plane", "172.30.0.11", "kh-x-cp1", 0)
    keys = cluster.Secrets.create()
    release = kubernetes.Release("v1.37.2", "v3.6.16")
    init = list(yaml.safe_load_all(cluster.init_configuration(node, release, "172.30.0.11:6443", 10, keys)))
    kinds = {doc["kind"]: doc for doc in init}
    assert kinds["InitConfiguration"]["bootstrapTokens"][0]["token"] == keys.token
    assert kinds["InitConfiguration"]["nodeRegistration"]["ignorePreflightErrors"] == sorted(cluster.IGNORED_PREFLIGHT)
    assert kinds["ClusterConfiguration"]["kubernetesVersion"] == "v1.37.2"
    assert kinds["ClusterConfiguration"]["certificateValidityPeriod"] == "240h0m0s"
    assert kinds["ClusterConfiguration"]["etcd"]["local"]["imageTag"] == "3.6.16-0"
    assert kinds["KubeletConfiguration"]["failCgroupV1"] is False
    worker = cluster.ClusterNode("w1", "worker", "172.30.0.101", "kh-x-w1", 1)
    join = yaml.safe_load(cluster.join_configuration(worker, "172.30.0.11:6443", keys, "sha256:00"))
    assert "controlPlane" not in join
    cp2 = cluster.ClusterNode("cp2", "control-plane", "172.30.0.12", "kh-x-cp2", 2)
    join = yaml.safe_load(cluster.join_configuration(cp2, "172.30.0.11:6443", keys, "sha256:00"))
    assert join["controlPlane"]["certificateKey"] == keys.certificate_key
    assert len(bytes.fromhex(keys.certificate_key)) == 32


def test_ca_cert_hash_is_kubeadms_public_key_pin(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.crt").write_bytes(pem)
    # kubeadm's documented way: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum
    pubkey = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
                            capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True,
                         check=True).stdout
    assert cluster.ca_cert_hash(pem) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_the_lab_the_roles_and_the_modules_support_the_same_window():
    """One window of Kubernetes minors: what the lab builds is what the roles and modules accept."""
    from ansible.module_utils import kubeharden_kubeadm  # module_utils, on the path through tests/conftest.py

    low, high = kubeharden_kubeadm.SUPPORTED
    modules = [f"{low[0]}.{minor}" for minor in range(low[1], high[1] + 1)]
    assert list(kubeharden_kubeadm.SUPPORTED_MINORS) == modules
    role_vars = yaml.safe_load((ROOT / "roles/control_plane/vars/main.yml").read_text())
    assert list(kubernetes.SUPPORTED_MINORS) == modules == role_vars["control_plane_supported_minors"]
    assert list(kubernetes.PRERELEASE_MINORS) == list(kubeharden_kubeadm.PRERELEASE_MINORS) \
        == role_vars["control_plane_prerelease_minors"]
    assert modules[-1] == kubernetes.DEFAULT_MINOR
    assert f"`control_plane_kubernetes_version` ({modules[0]} to {modules[-1]})" in (ROOT / "README.md").read_text()


def test_a_failing_step_on_a_node_names_the_node_the_step_and_the_end_of_its_output(monkeypatch):
    node = cluster.ClusterNode("cp1", "control-plane", "172.30.0.11", "kh-x-cp1", 0)
    output = "\n".join(f"line {i}" for i in range(100)) + "\nerror execution phase preflight\n"
    monkeypatch.setattr(cluster.docker, "exec_", lambda *a, **k: subprocess.CompletedProcess(a, 1, output, ""))
    with pytest.raises(LabError, match=r"node cp1: kubeadm init failed \(exit 1\); its last lines:") as raised:
        cluster._run(node, ["kubeadm", "init"], "kubeadm init")
    assert str(raised.value).endswith("error execution phase preflight") and "line 59\n" not in str(raised.value)


def test_host_etcd_runs_with_the_flags_kubeadm_gives_a_member():
    from tests import kubeadm_node

    members = [cluster.ClusterNode(f"cp{i}", "control-plane", f"172.30.0.1{i}", f"c{i}", i) for i in (1, 2, 3)]
    text = cluster.etcd_environment(kubeadm_node.node_file("/etc/kubernetes/manifests/etcd.yaml"), members,
                                    "/etc/etcd/pki")
    variables = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert variables["ETCD_INITIAL_CLUSTER"] == ",".join(f"cp{i}=https://172.30.0.1{i}:2380" for i in (1, 2, 3))
    assert variables["ETCD_INITIAL_CLUSTER_STATE"] == "new" and variables["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert variables["ETCD_CERT_FILE"] == "/etc/etcd/pki/server.crt" and "/etc/kubernetes" not in text
    assert variables["ETCD_FEATURE_GATES"] == "InitialCorruptCheck=true"  # kubeadm's own, not a copy of it


def test_a_kube_bench_entry_is_used_only_while_its_files_match_their_checksums(tmp_path, monkeypatch):
    from kubeharden.lab import go_tool, kube_bench

    monkeypatch.setattr(go_tool.kubernetes, "cache_dir", lambda: tmp_path)
    found = kube_bench.entry()
    (found.directory / "bin").mkdir(parents=True)
    (found.directory / "cfg/cis-1.12").mkdir(parents=True)
    found.binary.write_bytes(b"\x7fELF kube-bench")
    (found.config_dir / "cis-1.12/node.yaml").write_text("controls: []\n")
    assert not kube_bench.cached(found)  # no manifest: a build that did not finish
    (found.directory / "manifest.json").write_text(json.dumps({
        "key": found.directory.name, "files": go_tool._checksums(found.directory)}))
    assert kube_bench.cached(found)
    (found.directory / "cfg/cis-1.12/extra.yaml").write_text("controls: []\n")
    assert not kube_bench.cached(found)  # a file the build did not write
    (found.directory / "cfg/cis-1.12/extra.yaml").unlink()
    (found.config_dir / "cis-1.12/node.yaml").write_text("controls: [changed]\n")
    assert not kube_bench.cached(found)
