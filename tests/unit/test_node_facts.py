"""kubeharden_node_facts: the roles read how etcd runs, and with which settings, through the audit's own views -
kubeadm's real manifest, a stopped host service as Debian's etcd.service configures it, or nothing."""

from __future__ import annotations

import importlib.util

import pytest
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils.kubeharden_views import Node

from tests import kubeadm_node
from tests.conftest import ROOT
from tests.unit.test_controls import write_debian_etcd_service

spec = importlib.util.spec_from_file_location("kubeharden_node_facts", ROOT / "modules/kubeharden_node_facts.py")
facts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(facts)


@pytest.fixture
def bare_node(tmp_path, monkeypatch):
    """A node with no manifest, no etcd process and no unit until a test writes them."""
    manifests, units = tmp_path / "manifests", tmp_path / "units"
    manifests.mkdir()
    units.mkdir()
    monkeypatch.setattr(node, "MANIFEST_DIR", str(manifests))
    monkeypatch.setattr(node, "SYSTEMD_UNIT_DIRS", (str(units),))
    monkeypatch.setattr(node, "find_processes", lambda name: [])
    monkeypatch.setattr(node.socket, "gethostname", lambda: "etcd1")
    return manifests, units


def test_kubeadms_static_pod_is_read_from_its_real_manifest(bare_node):
    manifests, _ = bare_node
    (manifests / "etcd.yaml").write_text(kubeadm_node.node_file("/etc/kubernetes/manifests/etcd.yaml"))
    etcd = facts.etcd_view(Node([]))
    assert etcd["kind"] == "static_pod" and etcd["files"] == [str(manifests / "etcd.yaml")]
    assert etcd["flags"]["data-dir"] == "/var/lib/etcd"
    assert etcd["flags"]["trusted-ca-file"] == "/etc/kubernetes/pki/etcd/ca.crt"


def test_a_stopped_host_service_is_read_as_systemd_would_start_it(tmp_path, bare_node):
    _, units = bare_node
    default = tmp_path / "default"
    write_debian_etcd_service(units, default, 'ETCD_DATA_DIR="/srv/etcd"\nETCD_TRUSTED_CA_FILE=/etc/etcd/ca.crt\n')
    etcd = facts.etcd_view(Node([]))
    assert etcd["kind"] == "host"
    assert etcd["flags"] == {"name": "etcd1", "data-dir": "/srv/etcd", "trusted-ca-file": "/etc/etcd/ca.crt"}
    assert etcd["files"] == [str(units / "etcd.service"), str(default / "etcd")]


def test_no_etcd_and_no_manifest_are_reported_not_guessed(bare_node):
    view = Node([])
    assert facts.etcd_view(view) == {"kind": "none", "flags": {}, "files": [],
                                     "source": "no etcd on this node (no static pod manifest, no etcd.service)"}
    assert facts.static_pod_view(view, "kube-apiserver")["exists"] is False


def test_a_malformed_manifest_is_an_error_the_role_reports(bare_node):
    manifests, _ = bare_node
    (manifests / "etcd.yaml").write_text("kind: Pod\nspec: {}\n")
    with pytest.raises(node.ReadError, match="is not a Pod manifest with a container"):
        facts.etcd_view(Node([]))
