"""Which kubelet-serving requests kubeharden approves, and the TLS check the API server's 1.2.5 makes, on real
requests and certificates (cryptography writes them as a kubelet and kube-controller-manager do)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from ansible.module_utils import kubeharden_kubelet_serving as serving
from ansible.module_utils import kubeharden_pki as node_pki
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import run_module

INVENTORY = {"w1": ["w1", "10.0.0.21", "w1.example.internal"], "cp1": ["cp1", "10.0.0.11"]}
NOW = dt.datetime.now(dt.UTC)


def request_pem(common_name: str = "system:node:w1", organization: str = "system:nodes",
                dns: tuple[str, ...] = ("w1",), ips: tuple[str, ...] = ("10.0.0.21",), ca: bool = False) -> bytes:
    """A request as the kubelet's certificate manager writes it (P-256 key, SANs of its node addresses)."""
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def csr(pem: bytes | None = None, username: str = "system:node:w1", groups=("system:nodes", "system:authenticated"),
        usages=("digital signature", "server auth"), signer: str = serving.SIGNER) -> dict:
    return {"metadata": {"name": "csr-test"},
            "spec": {"signerName": signer, "username": username, "groups": list(groups), "usages": list(usages),
                     "request": base64.b64encode(pem or request_pem()).decode()}}


def test_the_request_parser_reads_what_cryptography_reads():
    pem = request_pem(dns=("w1", "w1.example.internal"), ips=("10.0.0.21", "fd00::21"))
    parsed = node_pki.parse_request(node_pki.pem_der(pem.decode()))
    expected = x509.load_pem_x509_csr(pem)
    assert parsed.subject == [("O", "system:nodes"), ("CN", "system:node:w1")]
    sans = expected.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert parsed.sans == [f"DNS:{d}" for d in sans.get_values_for_type(x509.DNSName)] + [
        f"IP:{i}" for i in sans.get_values_for_type(x509.IPAddress)]
    assert parsed.extensions == ["subjectAltName"] and not parsed.is_ca
    with pytest.raises(ValueError, match="not a certificate request"):
        node_pki.parse_request(b"\x30\x03\x02\x01\x00")


def test_a_kubelets_own_request_for_its_own_names_is_approved():
    assert serving.verdict(csr(), INVENTORY) is None
    # the FQDN the inventory gives, an RSA key's key encipherment usage, and names in any case
    pem = request_pem(dns=("W1.example.internal",), ips=("10.0.0.21",))
    assert serving.verdict(csr(pem, usages=("digital signature", "key encipherment", "server auth")),
                           INVENTORY) is None


@pytest.mark.parametrize(("change", "reason"), [
    ({"signer": "kubernetes.io/kube-apiserver-client-kubelet"}, "is not kubernetes.io/kubelet-serving"),
    ({"username": "kubernetes-admin"}, "not by a node's own credentials"),
    ({"username": "system:node:"}, "not by a node's own credentials"),
    ({"groups": ("system:authenticated",)}, "not in the system:nodes group"),
    ({"username": "system:node:w9", "pem": request_pem("system:node:w9", dns=("w9",), ips=())},
     "'w9' is not in the inventory"),
    ({"usages": ("digital signature", "server auth", "client auth")}, "not a serving certificate's"),
    ({"usages": ("digital signature",)}, "not a serving certificate's"),
    # w1's credentials asking for cp1's address, or for cp1's name: a certificate to impersonate it
    ({"pem": request_pem(ips=("10.0.0.21", "10.0.0.11"))}, "SAN IP:10.0.0.11 is not one of w1's"),
    ({"pem": request_pem(dns=("w1", "cp1"))}, "SAN DNS:cp1 is not one of w1's"),
    ({"pem": request_pem(common_name="system:node:cp1")}, "is not O=system:nodes, CN=system:node:w1"),
    ({"pem": request_pem(organization="system:masters")}, "is not O=system:nodes"),
    ({"pem": request_pem(ca=True)}, "extensions beyond the subject alternative names"),
    ({"pem": request_pem(dns=(), ips=())}, "names no subject alternative name"),
    ({"pem": b"not a request"}, "cannot be read"),
])
def test_anything_else_is_left_pending_with_the_reason(change, reason):
    pem = change.pop("pem", None)
    assert reason in serving.verdict(csr(pem, **change), INVENTORY)


def test_pending_means_no_decision_yet():
    assert serving.is_pending({"status": {}})
    assert serving.is_pending({"status": {"conditions": [{"type": "SomethingElse"}]}})
    for decided in ("Approved", "Denied", "Failed"):
        assert not serving.is_pending({"status": {"conditions": [{"type": decided}]}})


def test_the_address_is_the_one_the_apiserver_dials():
    node = {"status": {"addresses": [{"type": "Hostname", "address": "w1"},
                                     {"type": "InternalIP", "address": "10.0.0.21"}]}}
    assert serving.node_address(node) == "10.0.0.21"
    assert serving.node_address({"status": {"addresses": [{"type": "Hostname", "address": "w1"}]}}) == "w1"
    assert serving.node_address({"status": {}}) is None


# -- the TLS check, against a real TLS server ---------------------------------------------------------------

def _certificate(subject: str, key, issuer_name: x509.Name, issuer_key, ips=(), ca=False) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ips:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), critical=False)
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A cluster CA; kubelet certificates it signed (for 127.0.0.1, and for another address), and one the
    kubelet signed itself."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    ca = _certificate("kubernetes", ca_key, ca_name, ca_key, ca=True)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files = {"ca": directory / "ca.crt"}
    for label, signer, ips in (("cluster", "ca", ("127.0.0.1",)), ("elsewhere", "ca", ("10.0.0.21",)),
                               ("self", "self", ("127.0.0.1",))):
        key = ec.generate_private_key(ec.SECP256R1())
        name = "system:node:w1" if signer == "ca" else "w1@1700000000"
        issuer = (ca_name, ca_key) if signer == "ca" else (
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key)
        cert = _certificate(name, key, *issuer, ips=ips)
        path = directory / f"{label}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        files[label] = path
    return files


def serve_once(cert_file: Path) -> int:
    """A TLS server on loopback that completes one handshake with `cert_file`; returns its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def accept():
        with listener:
            try:
                connection, _ = listener.accept()
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass  # the client refused our certificate: that is what some tests want

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def test_a_kubelet_certificate_from_the_cluster_ca_for_the_dialled_address_is_verified(pki):
    verified, detail = serving.serving_certificate("127.0.0.1", serve_once(pki["cluster"]), str(pki["ca"]))
    assert verified, detail
    assert "system:node:w1" in detail


@pytest.mark.parametrize(("label", "reason"), [("self", "self-signed certificate"),
                                               ("elsewhere", "IP address mismatch")])
def test_the_apiserver_would_refuse_another_ca_or_another_address(pki, label, reason):
    verified, detail = serving.serving_certificate("127.0.0.1", serve_once(pki[label]), str(pki["ca"]))
    assert not verified and reason in detail, detail


def test_a_kubelet_that_does_not_answer_is_not_verified(pki):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    verified, detail = serving.serving_certificate("127.0.0.1", port, str(pki["ca"]), timeout=2)
    assert not verified and "127.0.0.1" in detail


def test_bad_input_fails_before_any_cluster_call():
    result = run_module("kubeharden_kubelet_serving", {"approve_for": {"w1": "10.0.0.21"},
                                                      "kubectl": "/nonexistent/kubectl"})
    assert result["failed"] and "approve_for.w1 must be a list" in result["msg"]
    result = run_module("kubeharden_kubelet_serving", {"wait": -1, "kubectl": "/nonexistent/kubectl"})
    assert result["failed"] and "wait must be 0 or more" in result["msg"]
