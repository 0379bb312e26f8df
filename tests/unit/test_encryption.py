"""Encryption at rest: configuration logic (module_utils/kubeharden_encryption.py) and its module, run by Ansible."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils import kubeharden_encryption as enc

from tests.conftest import ROOT, run_module

KEY16 = base64.b64encode(b"0123456789abcdef").decode()
KEY32 = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_initial_configuration_writes_with_a_fresh_key_and_still_reads_plaintext():
    one, two = enc.initial("secretbox", ["secrets"]), enc.initial("secretbox", ["secrets"])
    providers = one["resources"][0]["providers"]
    assert list(providers[0]) == ["secretbox"] and providers[-1] == {"identity": {}}
    secret = providers[0]["secretbox"]["keys"][0]["secret"]
    assert len(base64.b64decode(secret)) == 32
    assert secret != two["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"]
    assert enc.write_provider(one) == "secretbox:key1" and enc.key_names(one) == ["secretbox:key1"]


@pytest.mark.parametrize(("provider", "key", "kms", "message"), [
    ("secretbox", "not base64!", None, "not valid base64"),
    ("secretbox", KEY16, None, "must be 32 bytes"),
    ("aescbc", base64.b64encode(b"short").decode(), None, "16 or 24 or 32 bytes"),
    ("rot13", None, None, "unknown provider"),
    ("kms", None, {"name": "vault", "endpoint": "tcp://10.0.0.1:9000"}, "must be a unix socket"),
])
def test_bad_input_is_refused(provider, key, kms, message):
    with pytest.raises(enc.EncryptionConfigError, match=message):
        enc.initial(provider, ["secrets"], key=key, kms=kms)


def test_rotation_steps_follow_the_upstream_order():
    config = enc.initial("secretbox", ["secrets"], key=KEY32)
    added, name = enc.add_key(config, "secretbox", name="key2")
    assert name == "secretbox:key2" and enc.key_names(added) == ["secretbox:key1", "secretbox:key2"]
    assert enc.write_provider(added) == "secretbox:key1"  # readable everywhere before anything writes with it
    assert enc.add_key(added, "secretbox", name="key2")[0] == added  # resumed: nothing added twice
    promoted = enc.promote(added, "secretbox:key2")
    assert enc.key_names(promoted) == ["secretbox:key2", "secretbox:key1"]
    with pytest.raises(enc.EncryptionConfigError, match="encrypts new writes"):
        enc.remove_key(promoted, "secretbox:key2")
    done = enc.remove_key(promoted, "secretbox:key1")
    assert enc.key_names(done) == ["secretbox:key2"] and done["resources"][0]["providers"][-1] == {"identity": {}}


def test_changing_provider_adds_a_provider_block():
    config = enc.initial("aescbc", ["secrets"], key=KEY32)
    added, name = enc.add_key(config, "secretbox")
    assert name == "secretbox:key2" and [next(iter(p)) for p in added["resources"][0]["providers"]] == [
        "aescbc", "secretbox", "identity"]
    promoted = enc.promote(added, name)
    assert enc.write_provider(promoted) == "secretbox:key2"
    assert [next(iter(p)) for p in enc.remove_key(promoted, "aescbc:key1")["resources"][0]["providers"]] == [
        "secretbox", "identity"]


def test_values_are_classified_by_their_prefix():
    assert enc.classify(b"k8s:enc:secretbox:v1:key1:\x00\x01") == "secretbox:key1"
    assert enc.classify(b"k8s:enc:kms:v2:vault:...") == "kms:vault"
    assert enc.classify(b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret") == "plaintext"
    assert enc.classify(b'{"kind":"Secret"}') == "plaintext"


def test_redacted_configuration_shows_no_secret():
    config = enc.initial("secretbox", ["secrets"], key=KEY32)
    assert KEY32 not in yaml.safe_dump(enc.redacted(config))
    assert KEY32 in yaml.safe_dump(config)


def test_module_creates_once_keeps_the_key_and_copies_byte_for_byte(tmp_path):
    path = tmp_path / "enc" / "encryption-config.yaml"
    args = {"path": str(path), "backup_dir": str(tmp_path / "backups")}
    created = run_module("kubeharden_encryption_config", args)
    assert created["changed"] and created["keys"] == ["secretbox:key1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    again = run_module("kubeharden_encryption_config", args)
    assert again["changed"] is False and path.read_text() == text and again["sha256"] == created["sha256"]
    other = tmp_path / "other.yaml"
    copied = run_module("kubeharden_encryption_config", {"path": str(other), "content": text})
    assert copied["changed"] and other.read_bytes() == path.read_bytes() and copied["sha256"] == created["sha256"]
    moved = run_module("kubeharden_encryption_config", {**args, "provider": "aescbc"})
    assert moved["failed"] and "key rotation" in moved["msg"] and path.read_text() == text


@pytest.mark.parametrize(("args", "message"), [
    ({"key": "@@@not-base64@@@"}, "not valid base64"),
    ({"key": KEY16}, "must be 32 bytes"),
    ({"provider": "kms", "kms": {"name": "vault", "endpoint": "/run/kms.sock"}}, "unix socket"),
    ({"provider": "rot13"}, "value of provider must be one of"),
])
def test_module_bad_input_writes_nothing(tmp_path, args, message):
    path = tmp_path / "encryption-config.yaml"
    result = run_module("kubeharden_encryption_config", {"path": str(path), **args})
    assert result["failed"] and message in result["msg"] and not path.exists()


def test_module_never_prints_the_key_even_at_vvv(tmp_path):
    path = tmp_path / "encryption-config.yaml"
    argv = ["ansible", "localhost", "-c", "local", "-vvv", "--diff", "-m", "kubeharden_encryption_config",
            "-a", f"path={path} key={KEY32}", "-e", f"ansible_python_interpreter={sys.executable}"]
    env = {**os.environ, "ANSIBLE_LIBRARY": str(ROOT / "modules"), "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"),
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert KEY32 in path.read_text()  # the key is really in the file...
    assert KEY32 not in done.stdout + done.stderr  # ...and nowhere in Ansible's output
    assert "secretbox:key1" in done.stdout
