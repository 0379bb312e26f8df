"""kubeharden_pki on a kubeadm PKI written to a temporary directory: real certificates, real openssl."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import kubeharden_pki as node_pki
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import kubeadm_node
from tests.conftest import run_module

NOW = dt.datetime.now(dt.UTC)
CORRUPT = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def node(tmp_path: Path, validity_days: int = 365) -> dict:
    """A control-plane node's PKI and kubeconfigs as real kubeadm writes them under tmp_path; the module
    arguments that point at them."""
    kubeadm_node.control_plane(tmp_path, validity_days=validity_days)
    return {"pki_dir": str(tmp_path / "etc/kubernetes/pki"), "kubeconfig_dir": str(tmp_path / "etc/kubernetes"),
            "kubelet_pki_dir": str(tmp_path / "var/lib/kubelet/pki"), "backup_dir": str(tmp_path / "backups")}


def snapshot(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def embedded(path: Path) -> x509.Certificate:
    user = yaml.safe_load(path.read_text())["users"][0]["user"]
    return x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))


def identity(cert: x509.Certificate) -> tuple:
    extensions = {type(e.value).__name__: (e.critical, e.value) for e in cert.extensions
                  if not isinstance(e.value, x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier)}
    return cert.subject, cert.issuer, extensions


def test_the_parser_reads_what_cryptography_reads(tmp_path):
    args = node(tmp_path)
    for path in Path(args["pki_dir"]).rglob("*.crt"):
        expected = load(path)
        parsed = node_pki.parse_certificate(expected.public_bytes(serialization.Encoding.DER))
        assert parsed.not_after == expected.not_valid_after_utc and parsed.serial == expected.serial_number
        assert node_pki.name_text(parsed.subject) == "".join(
            f"/{a.rfc4514_attribute_name}={a.value}" for a in expected.subject)
        assert parsed.key_type == "RSA" and parsed.key_bits == 2048 and parsed.signature == "sha256WithRSAEncryption"
        sans = expected.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            if any(isinstance(e.value, x509.SubjectAlternativeName) for e in expected.extensions) else []
        assert parsed.sans == [f"DNS:{n.value}" if isinstance(n, x509.DNSName) else f"IP:{n.value}" for n in sans]
        assert parsed.is_ca == expected.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(ValueError, match=r"not an X\.509 certificate"):
        node_pki.parse_certificate(b"\x30\x03\x02\x01\x01")


def test_inventory_reports_chain_keys_modes_and_embedded_clients(tmp_path):
    args = node(tmp_path)
    result = run_module("kubeharden_pki", args)
    assert not result["failed"] and result["changed"] is False and result["problems"] == []
    by_name = {c["name"]: c for c in result["certificates"]}
    apiserver = by_name[f"{args['pki_dir']}/apiserver.crt"]
    assert apiserver["chain"] == "ok" and apiserver["key_matches"] is True and apiserver["days_left"] in (363, 364)
    assert apiserver["issuer_path"] == f"{args['pki_dir']}/ca.crt" and apiserver["mode"] == "0644"
    assert apiserver["key_mode"] == "0600" and "DNS:cp1" in apiserver["sans"] and "IP:10.96.0.1" in apiserver["sans"]
    assert by_name[f"{args['pki_dir']}/etcd/server.crt"]["issuer_path"] == f"{args['pki_dir']}/etcd/ca.crt"
    admin = by_name[f"{args['kubeconfig_dir']}/admin.conf (user kubernetes-admin)"]
    assert admin["subject"] == "/O=kubeadm:cluster-admins/CN=kubernetes-admin" and admin["key_matches"] is True
    kubelet = by_name[f"{args['kubelet_pki_dir']}/kubelet-client-current.pem"]
    assert kubelet["managed_by"] == "kubelet" and kubelet["chain"] == "ok" and kubelet["key_matches"] is True
    assert "PRIVATE KEY" not in json.dumps(result)


def test_renewal_keeps_identity_renews_due_leaves_only_and_is_idempotent(tmp_path):
    args = {**node(tmp_path, validity_days=10), "renew": True}
    pki_dir = Path(args["pki_dir"])
    before = snapshot(pki_dir)
    old_apiserver, old_admin = load(pki_dir / "apiserver.crt"), embedded(tmp_path / "etc/kubernetes/admin.conf")

    check = run_module("kubeharden_pki", args, check=True, diff=True)
    assert check["changed"] and {d["name"] for d in check["due"]} >= {str(pki_dir / "apiserver.crt")}
    assert all(d["reasons"] == ["9 days left"] for d in check["due"]) and check["renewed"] == []
    assert snapshot(pki_dir) == before

    done = run_module("kubeharden_pki", args)
    assert done["changed"] and len(done["renewed"]) == 11  # 7 leaves; admin, super-admin, controller-manager, scheduler
    new_apiserver, new_admin = load(pki_dir / "apiserver.crt"), embedded(tmp_path / "etc/kubernetes/admin.conf")
    for old, new in ((old_apiserver, new_apiserver), (old_admin, new_admin)):
        assert identity(new) == identity(old) and new.public_key() != old.public_key()
        assert (new.not_valid_after_utc - NOW).days >= 364
    for ca in ("ca.crt", "front-proxy-ca.crt", "etcd/ca.crt", "sa.pub"):  # CAs and the SA key untouched
        assert (pki_dir / ca).read_bytes() == before[pki_dir / ca]
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(pki_dir / "etcd/ca.crt"),
                             str(pki_dir / "etcd/peer.crt")], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr
    assert oct((pki_dir / "apiserver.key").stat().st_mode & 0o777) == "0o600"
    assert set(done["restart"]) == {"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"}
    assert len(list(Path(args["backup_dir"]).rglob("apiserver.crt.*"))) == 1
    kubeconfig = yaml.safe_load((tmp_path / "etc/kubernetes/admin.conf").read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://172.30.0.11:6443"
    assert "PRIVATE KEY" not in json.dumps(done)

    again = run_module("kubeharden_pki", args)
    assert again["changed"] is False and again["due"] == [] and again["problems"] == []
    assert all(c.get("chain") in ("ok", "issuer not on this node") for c in again["certificates"])


def test_a_weak_key_is_replaced_even_when_not_due(tmp_path):
    args = {**node(tmp_path), "renew": True}
    pki_dir = Path(args["pki_dir"])
    ca_key = serialization.load_pem_private_key((pki_dir / "front-proxy-ca.key").read_bytes(), None)
    current = load(pki_dir / "front-proxy-client.crt")
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = x509.CertificateBuilder().subject_name(current.subject).issuer_name(current.issuer) \
        .public_key(weak_key.public_key()).serial_number(1).not_valid_before(NOW).not_valid_after(
            NOW + dt.timedelta(days=300)).add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False) \
        .sign(ca_key, hashes.SHA256())
    (pki_dir / "front-proxy-client.crt").write_bytes(weak.public_bytes(serialization.Encoding.PEM))
    (pki_dir / "front-proxy-client.key").write_bytes(weak_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    done = run_module("kubeharden_pki", args)
    assert [r["name"] for r in done["renewed"]] == [str(pki_dir / "front-proxy-client.crt")]
    assert done["renewed"][0]["reasons"] == ["weak key (RSA 1024 bits)"]
    assert load(pki_dir / "front-proxy-client.crt").public_key().key_size == 2048
    assert run_module("kubeharden_pki", args)["changed"] is False


def test_a_corrupt_certificate_stops_every_renewal_and_is_named(tmp_path):
    args = {**node(tmp_path, validity_days=10), "renew": True}
    pki_dir = Path(args["pki_dir"])
    (pki_dir / "apiserver-kubelet-client.crt").write_text(CORRUPT)
    before = snapshot(pki_dir)
    result = run_module("kubeharden_pki", args)
    assert result["failed"] and f"{pki_dir}/apiserver-kubelet-client.crt: not an X.509 certificate" in result["msg"]
    assert snapshot(pki_dir) == before and result["renewed"] == []
    inventory = run_module("kubeharden_pki", {k: v for k, v in args.items() if k != "renew"})
    assert not inventory["failed"] and any("apiserver-kubelet-client.crt" in p for p in inventory["problems"])


def test_a_missing_ca_key_is_a_clear_error(tmp_path):
    args = {**node(tmp_path, validity_days=10), "renew": True}
    pki_dir = Path(args["pki_dir"])
    (pki_dir / "etcd/ca.key").unlink()
    before = snapshot(pki_dir)
    result = run_module("kubeharden_pki", args)
    assert result["failed"] and f"the key of its CA {pki_dir}/etcd/ca.crt is missing" in result["msg"]
    assert snapshot(pki_dir) == before


def test_bad_threshold_is_refused(tmp_path):
    result = run_module("kubeharden_pki", {**node(tmp_path), "renew_before_days": 400})
    assert result["failed"] and "renew_before_days (400)" in result["msg"]


def test_service_account_steps_refuse_to_run_out_of_order(tmp_path):
    args = node(tmp_path)
    pki_dir = Path(args["pki_dir"])
    original = snapshot(pki_dir)
    pub_mode = (pki_dir / "sa.pub").stat().st_mode & 0o777  # kubeadm writes it 0600
    sa = {"pki_dir": args["pki_dir"], "backup_dir": args["backup_dir"]}

    def step(name: str, **extra) -> dict:
        return run_module("kubeharden_service_account_keys", {**sa, "step": name, **extra})

    status = step("status")
    assert status["changed"] is False and status["published"] == [status["signing"]] and status["next"] is None
    assert "run the stage step first" in step("publish")["msg"]
    assert "nothing to switch to" in step("switch")["msg"]
    current = (pki_dir / "sa.key").read_text()
    assert "next_key is the current signing key" in step("stage", next_key=current)["msg"]
    assert snapshot(pki_dir) == original
    staged = step("stage")
    assert staged["changed"] and staged["next"] not in (None, staged["signing"])
    assert step("stage")["changed"] is False
    assert "run the switch step before retiring" in step("retire")["msg"]
    assert "run the publish step first" in step("switch")["msg"]
    published = step("publish")
    assert published["published"] == [staged["signing"], staged["next"]] and step("publish")["changed"] is False
    switched = step("switch")
    assert switched["signing"] == staged["next"] and switched["published"] == published["published"]
    assert not (pki_dir / "sa-next.key").exists() and step("switch")["changed"] is False
    retired = step("retire")
    assert retired["published"] == [staged["next"]] and step("retire")["changed"] is False
    assert oct((pki_dir / "sa.key").stat().st_mode & 0o777) == "0o600"
    assert (pki_dir / "sa.pub").stat().st_mode & 0o777 == pub_mode
    assert len(list(Path(args["backup_dir"]).rglob("sa.key.*"))) == 1


def test_pki_modes_are_tightened_never_widened(tmp_path):
    args = node(tmp_path)
    pki_dir = Path(args["pki_dir"])
    (pki_dir / "apiserver.key").chmod(0o644)
    (pki_dir / "apiserver.crt").chmod(0o666)
    (pki_dir / "ca.crt").chmod(0o600)
    check = run_module("kubeharden_pki", args, check=True)
    assert check["changed"] and sorted(check["modes"]) == [f"{pki_dir}/apiserver.crt: 0666 -> 0644 root:root",
                                                           f"{pki_dir}/apiserver.key: 0644 -> 0600 root:root"]
    assert oct((pki_dir / "apiserver.key").stat().st_mode & 0o777) == "0o644"
    assert run_module("kubeharden_pki", args)["changed"]
    assert oct((pki_dir / "apiserver.key").stat().st_mode & 0o777) == "0o600"
    assert oct((pki_dir / "apiserver.crt").stat().st_mode & 0o777) == "0o644"
    assert oct((pki_dir / "ca.crt").stat().st_mode & 0o777) == "0o600"
    assert run_module("kubeharden_pki", args)["changed"] is False


def test_kubeadm_asked_for_but_missing_is_a_clear_error(tmp_path):
    args = {**node(tmp_path, validity_days=10), "renew": True, "renew_with": "kubeadm"}
    before = snapshot(Path(args["pki_dir"]))
    result = run_module("kubeharden_pki", args)
    assert result["failed"] and "renew_with=kubeadm, but kubeadm is not installed on this node" in result["msg"]
    assert snapshot(Path(args["pki_dir"])) == before


def test_the_issuer_with_its_key_on_the_node_comes_first(tmp_path):
    args = node(tmp_path)
    pki_dir = Path(args["pki_dir"])
    copy_dir = tmp_path / "etc/etcd/pki"  # a host etcd's copy of the CA certificate, without its key
    copy_dir.mkdir(parents=True)
    (copy_dir / "ca.crt").write_bytes((pki_dir / "etcd/ca.crt").read_bytes())
    items = [node_pki._file_item(str(p)) for p in (copy_dir / "ca.crt", pki_dir / "etcd/ca.crt",
                                                   pki_dir / "etcd/server.crt")]
    for item in items:
        item.cert = node_pki.parse_certificate(node_pki.pem_der(item.cert_pem))
    assert node_pki.find_issuer(items[2], items[:2]).path == str(pki_dir / "etcd/ca.crt")
