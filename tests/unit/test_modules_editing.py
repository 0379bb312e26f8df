"""kubeharden_static_pod run for real by Ansible on the controller, against files in a temporary directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests import kubeadm_node
from tests.conftest import run_module


@pytest.fixture
def manifest_path(tmp_path):
    path = tmp_path / "manifests" / "kube-apiserver.yaml"
    path.parent.mkdir()
    path.write_text(kubeadm_node.node_file("/etc/kubernetes/manifests/kube-apiserver.yaml"))
    path.chmod(0o600)
    return path


def test_sets_flags_with_backup_outside_the_manifest_dir(manifest_path, tmp_path):
    backups = tmp_path / "backups"
    result = run_module("kubeharden_static_pod", {"path": str(manifest_path), "backup_dir": str(backups),
                                                  "flags": {"profiling": False}})
    assert not result["failed"] and result["changed"] and "--profiling=false" in result["command"]
    assert "--profiling=false" in manifest_path.read_text()
    assert oct(manifest_path.stat().st_mode & 0o777) == "0o600"
    assert result["backup_file"].startswith(str(backups)) and os.listdir(manifest_path.parent) == [
        "kube-apiserver.yaml"]
    again = run_module("kubeharden_static_pod", {"path": str(manifest_path), "backup_dir": str(backups),
                                                 "flags": {"profiling": False}})
    assert again["changed"] is False


def test_check_mode_shows_the_diff_and_writes_nothing(manifest_path):
    before = manifest_path.read_text()
    result = run_module("kubeharden_static_pod", {"path": str(manifest_path), "flags": {"profiling": "false"}},
                        check=True, diff=True)
    assert result["changed"] and "+    - --profiling=false" in result["stdout"]
    assert manifest_path.read_text() == before


@pytest.mark.parametrize(("content", "args", "message"), [
    ("spec: [\n", {}, "is not valid YAML at line"),
    ("kind: ConfigMap\n", {}, "not a static Pod manifest"),
    (None, {"flags": {"insecure-port": "0"}}, "--insecure-port was removed in Kubernetes 1.24"),
    (None, {"list_flags": {"enable-admission-plugins": ["EventRateLimit"]}}, "must be a mapping"),
])
def test_bad_input_fails_and_leaves_the_file_untouched(manifest_path, content, args, message):
    if content is not None:
        manifest_path.write_text(content)
    before = manifest_path.read_text()
    result = run_module("kubeharden_static_pod", {"path": str(manifest_path), **args})
    assert result["failed"] and message in result["msg"] and "left untouched" in result["msg"]
    assert manifest_path.read_text() == before


# -- kubeharden_kubelet_config --------------------------------------------------------------------------------

@pytest.fixture
def kubelet_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(kubeadm_node.node_file("/var/lib/kubelet/config.yaml"))
    path.chmod(0o644)
    return path


def test_kubelet_settings_are_deep_merged_and_lists_replaced(kubelet_config, tmp_path):
    settings = {"authentication": {"anonymous": {"enabled": False}, "webhook": {"cacheTTL": "2m"}},
                "clusterDNS": ["10.96.0.53"], "podPidsLimit": 4096}
    result = run_module("kubeharden_kubelet_config", {"config_path": str(kubelet_config), "settings": settings,
                                                      "backup_dir": str(tmp_path / "b")})
    assert not result["failed"] and result["changed"]
    config = yaml.safe_load(kubelet_config.read_text())
    assert config["authentication"]["webhook"] == {"cacheTTL": "2m", "enabled": True}
    assert config["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"
    assert config["clusterDNS"] == ["10.96.0.53"] and config["podPidsLimit"] == 4096
    assert kubelet_config.stat().st_mode & 0o777 == 0o644  # modes are the role's business, not the editor's
    again = run_module("kubeharden_kubelet_config", {"config_path": str(kubelet_config), "settings": settings})
    assert again["changed"] is False


def test_kubelet_check_mode_writes_nothing(kubelet_config):
    before = kubelet_config.read_text()
    result = run_module("kubeharden_kubelet_config", {"config_path": str(kubelet_config),
                                                      "settings": {"seccompDefault": True}}, check=True, diff=True)
    assert result["changed"] and "+seccompDefault: true" in result["stdout"]
    assert kubelet_config.read_text() == before


@pytest.mark.parametrize(("content", "message"), [
    ("kind: KubeletConfiguration\nauthentication: [\n", "is not valid YAML at line"),
    ("apiVersion: v1\nkind: Pod\n", "is not a KubeletConfiguration"),
])
def test_kubelet_bad_config_is_left_untouched(kubelet_config, content, message):
    kubelet_config.write_text(content)
    result = run_module("kubeharden_kubelet_config", {"config_path": str(kubelet_config),
                                                      "settings": {"podPidsLimit": 1}})
    assert result["failed"] and message in result["msg"]
    assert kubelet_config.read_text() == content


def test_kubelet_missing_config_is_reported(tmp_path):
    result = run_module("kubeharden_kubelet_config", {"config_path": str(tmp_path / "nope.yaml"),
                                                      "settings": {"podPidsLimit": 1}})
    assert result["failed"] and "does not exist" in result["msg"]


# -- kubeharden_kubeadm_config ---------------------------------------------------------------------------------

KUBEADM_ARGS = {"kubernetes_version": "v1.37.2", "advertise_address": "192.0.2.10", "node_name": "cp1"}


def test_the_nodes_kubeadm_validates_the_file_before_it_is_written(tmp_path, monkeypatch):
    release = kubeadm_node.release()
    monkeypatch.setenv("PATH", f"{release.directory / 'bin'}:{os.environ['PATH']}")
    path = tmp_path / "kubeadm-config.yaml"
    args = {**KUBEADM_ARGS, "kubernetes_version": release.version, "path": str(path),
            "backup_dir": str(tmp_path / "backups")}
    done = run_module("kubeharden_kubeadm_config", args)
    assert not done["failed"] and done["validated"] == f"kubeadm {release.version} (kubeadm config validate)"
    before = path.read_text()
    refused = run_module("kubeharden_kubeadm_config", {**args, "pod_subnet": "10.244.0.0/33"}, check=True)
    assert refused["failed"] and "kubeadm rejects the rendered configuration (nothing was written)" in refused["msg"]
    assert "networking.podSubnet" in refused["msg"] and path.read_text() == before


def test_without_kubeadm_the_validation_says_it_was_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:/usr/bin:/bin")  # ansible, and no kubeadm
    done = run_module("kubeharden_kubeadm_config", {**KUBEADM_ARGS, "path": str(tmp_path / "k.yaml"),
                                                    "backup_dir": str(tmp_path / "b")})
    assert not done["failed"] and done["validated"] == "skipped: kubeadm is not installed on this node"


# -- the write tail every module shares ----------------------------------------------------------------------

def test_replace_file_backs_up_what_it_replaces_and_keeps_or_sets_the_mode(tmp_path):
    from ansible.module_utils.kubeharden_files import replace_file

    params = {"backup": True, "backup_dir": str(tmp_path / "backups")}
    target = tmp_path / "conf"
    assert replace_file(str(target), "one\n", params, new_mode=0o644) is None  # nothing to back up yet
    assert target.read_text() == "one\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    target.chmod(0o640)
    saved = replace_file(str(target), "two\n", params)
    assert Path(saved).read_text() == "one\n" and saved.startswith(params["backup_dir"])
    assert target.read_text() == "two\n" and oct(target.stat().st_mode & 0o777) == "0o640"  # its own mode kept
    assert replace_file(str(target), "three\n", {**params, "backup": False}, mode=0o600) is None
    assert oct(target.stat().st_mode & 0o777) == "0o600" and len(list((tmp_path / "backups").rglob("conf.*"))) == 1
