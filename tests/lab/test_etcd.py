"""Encryption at rest on a lab control-plane node (real kube-apiserver and etcd): the verification module, the
key's secrecy, the rotation through the apiserver with its safety check, and bad input. (TLS rolling restarts:
molecule scenarios etcd and etcd_host.)"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import yaml

from kubeharden.lab import cluster, docker
from kubeharden.lab.lab import Topology, etcdctl
from tests.lab.conftest import _lab, module, playbook, stored_in_etcd

CONFIG = "/etc/kubernetes/enc/encryption-config.yaml"
STATE = "/etc/kubernetes/enc/rotation-state.json"


@pytest.fixture(scope="module")
def etcd_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, "pytest-etcd", Topology(control_planes=1, workers=0))


def node_text(lab, path: str) -> str:
    return docker.exec_(lab.container("cp1"), "cat", path).stdout


def put(lab, key: str, value: bytes) -> None:
    done = subprocess.run(["docker", "exec", "-i", lab.container("cp1"), "etcdctl", "--endpoints=https://127.0.0.1:2379",
                           "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
                           "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
                           "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key", "put", key],
                          input=value, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def test_verification_module_reports_plaintext_and_the_key_that_encrypted(etcd_lab):
    put(etcd_lab, "/registry/secrets/default/plain", b'{"kind":"Secret","data":{}}')
    put(etcd_lab, "/registry/secrets/default/boxed", b"k8s:enc:secretbox:v1:key1:\x8f\x01\x02random")
    put(etcd_lab, "/registry/configmaps/default/other", b"not a secret")
    # Only the namespace this test writes to: the cluster's own secrets (kubeadm's) are there too.
    result = module(etcd_lab, "kubeharden_etcd_encryption", {"prefixes": ["/registry/secrets/default/"]})
    assert not result["failed"], result
    assert result["keys"] == {"/registry/secrets/default/plain": "plaintext",
                              "/registry/secrets/default/boxed": "secretbox:key1"}
    refused = module(etcd_lab, "kubeharden_etcd_encryption", {"prefixes": ["/registry/secrets/default/"],
                                                              "forbid": ["secretbox:key1"]})
    assert refused["failed"] and refused["forbidden"] == ["/registry/secrets/default/boxed"]
    # Values no apiserver can decode: left in etcd they would keep its secrets informer (and /readyz) failing.
    for name in ("boxed", "plain"):
        etcdctl(etcd_lab.container("cp1"), "del", f"/registry/secrets/default/{name}")
    etcdctl(etcd_lab.container("cp1"), "del", "/registry/configmaps/default/other")


def test_bad_encryption_input_fails_before_anything_is_written(etcd_lab):
    cases = {
        "etcd_encryption_key=@@notbase64@@": "etcd_encryption_key",
        "etcd_encryption_key=MDEyMzQ1Njc4OWFiY2RlZg==": "etcd_encryption_key",  # 16 bytes: secretbox needs 32
        'etcd_encryption_provider=kms etcd_encryption_kms={"name":"vault","endpoint":"tcp://10.0.0.1:1"}':
            "etcd_encryption_kms",
        "etcd_encryption_provider=rot13": "etcd_encryption_provider",
    }
    for extra, variable in cases.items():
        done = playbook(etcd_lab, "etcd.yml", "-e", extra, "-e", "etcd_encryption_config=/etc/kubernetes/enc/bad.yaml")
        assert done.returncode != 0 and variable in done.stdout, (extra, done.stdout[-1500:])
        assert docker.exec_(etcd_lab.container("cp1"), "test", "-e", "/etc/kubernetes/enc/bad.yaml",
                            check=False).returncode != 0


def test_key_is_made_on_the_node_root_only_and_never_in_ansible_output(etcd_lab):
    done = playbook(etcd_lab, "etcd.yml", "-vvv", "--diff")
    assert done.returncode == 0, done.stdout[-3000:]
    config = yaml.safe_load(node_text(etcd_lab, CONFIG))
    secret = config["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"]
    assert len(secret) == 44 and secret not in done.stdout + done.stderr
    assert docker.exec_(etcd_lab.container("cp1"), "stat", "-c", "%a %U", CONFIG).stdout.split() == ["600", "root"]
    again = playbook(etcd_lab, "etcd.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout.split("PLAY RECAP")[-1]
    assert yaml.safe_load(node_text(etcd_lab, CONFIG)) == config  # never regenerated


def test_rotation_keeps_every_secret_readable_and_removes_the_old_key_last(etcd_lab):
    cp1 = etcd_lab.container("cp1")
    # The apiserver reads the encryption configuration (the stock kubelets sign their own serving certificates).
    wired = playbook(etcd_lab, "control-plane.yml", "-e", "control_plane_kubelet_certificate_authority=")
    assert wired.returncode == 0, wired.stdout[-3000:]
    created = cluster.kubectl(cp1, "create", "secret", "generic", "kept", "--from-literal=value=before-rotation")
    assert created.returncode == 0, created.stderr
    many = {f"many-{i:03d}": f"value-{i}" for i in range(500)}  # the rewrite step at scale
    items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
              "stringData": {"value": value}} for name, value in many.items()]
    subprocess.run(["docker", "exec", "-i", cp1, "kubectl", f"--kubeconfig={cluster.ADMIN_KUBECONFIG}", "create",
                    "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                   capture_output=True, text=True, check=True)
    # Without an apiserver to rewrite through, the rotation stops after promoting the new key, and says so.
    first = playbook(etcd_lab, "rotate-encryption-key.yml", "-e", "rotation_kubeconfig=/nonexistent")
    assert first.returncode != 0 and "rerun this playbook when the apiserver answers" in first.stdout
    state = json.loads(node_text(etcd_lab, STATE))
    assert state["phase"] == "promoted" and state["old_key"] == "secretbox:key1"
    assert keys(etcd_lab) == [state["new_key"].split(":")[1], "key1"]
    assert secret_value(cp1, "kept") == "before-rotation"
    # A record that claims the secrets were rewritten while etcd still holds one under key1: refused, named.
    docker.exec_(cp1, "sed", "-i", 's/"promoted"/"rewritten"/', STATE)
    refused = playbook(etcd_lab, "rotate-encryption-key.yml")
    assert refused.returncode != 0 and "/registry/secrets/default/kept" in refused.stdout, refused.stdout[-2000:]
    assert "key1" in keys(etcd_lab)
    # Resumed from the true phase: every secret is rewritten, then the old key goes.
    docker.exec_(cp1, "sed", "-i", 's/"rewritten"/"promoted"/', STATE)
    done = playbook(etcd_lab, "rotate-encryption-key.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    assert keys(etcd_lab) == [state["new_key"].split(":")[1]]
    assert docker.exec_(cp1, "test", "-e", STATE, check=False).returncode != 0
    assert secret_value(cp1, "kept") == "before-rotation"
    listed = json.loads(cluster.kubectl(cp1, "get", "secrets", "-o", "json", check=True).stdout)["items"]
    assert {item["metadata"]["name"]: base64.b64decode(item["data"]["value"]).decode() for item in listed
            if item["metadata"]["name"] in many} == many
    stored = module(etcd_lab, "kubeharden_etcd_encryption", {})
    assert set(stored["counts"]) == {state["new_key"]}, stored["counts"]
    # etcd's own client agrees: every Secret written through the apiserver is stored under the new key.
    assert set(stored_in_etcd(etcd_lab, "/registry/secrets/").values()) == {state["new_key"]}
    manifest = node_text(etcd_lab, "/etc/kubernetes/manifests/kube-apiserver.yaml")
    assert "kubeharden.io/encryption-config-sha256" in manifest  # the apiserver was restarted to read it


def keys(lab) -> list[str]:
    config = yaml.safe_load(node_text(lab, CONFIG))
    return [key["name"] for key in config["resources"][0]["providers"][0]["secretbox"]["keys"]]


def secret_value(container: str, name: str) -> str:
    found = cluster.kubectl(container, "get", "secret", name, "-o", "jsonpath={.data.value}", check=True).stdout
    return base64.b64decode(found).decode()
