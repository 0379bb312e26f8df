"""The PKI kubeadm writes on `init`/`join`, as real X.509: same names, subjects, SANs, usages and validity.

kubeadm (v1.31) issues RSA-2048 keys, CAs valid 10 years with keyCertSign and a SAN equal to their common
name, and leaves valid 1 year with digitalSignature + keyEncipherment. Keys are PKCS#1 PEM, written 0600;
certificates 0644.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass
class KeyPair:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate | None = None

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())

    def cert_pem(self) -> bytes:
        assert self.cert is not None
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(dns: list[str], ips: list[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]
                                       + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])


def new_ca(common_name: str, now: dt.datetime) -> KeyPair:
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_sans([common_name], []), critical=False)
    )
    return KeyPair(key, builder.sign(key, hashes.SHA256()))


def new_leaf(ca: KeyPair, common_name: str, usages: list[x509.ObjectIdentifier], now: dt.datetime,
             organizations: tuple[str, ...] = (), dns: list[str] | None = None, ips: list[str] | None = None,
             validity: dt.timedelta = LEAF_VALIDITY) -> KeyPair:
    assert ca.cert is not None
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations)).issuer_name(ca.cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + validity)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if dns or ips:
        builder = builder.add_extension(_sans(dns or [], ips or []), critical=False)
    return KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


@dataclass
class ClusterCAs:
    """What kubeadm shares between control-plane nodes (`kubeadm init phase upload-certs`)."""

    ca: KeyPair
    front_proxy_ca: KeyPair
    etcd_ca: KeyPair
    service_account: KeyPair

    @classmethod
    def create(cls, now: dt.datetime) -> ClusterCAs:
        return cls(new_ca("kubernetes", now), new_ca("front-proxy-ca", now), new_ca("etcd-ca", now),
                   KeyPair(new_key()))


@dataclass
class NodePKI:
    """Files under /etc/kubernetes/pki for one node: relative path -> PEM bytes (keys end in .key)."""

    files: dict[str, bytes] = field(default_factory=dict)
    kubeconfig_clients: dict[str, KeyPair] = field(default_factory=dict)

    def add(self, stem: str, pair: KeyPair) -> None:
        self.files[f"{stem}.crt"] = pair.cert_pem()
        self.files[f"{stem}.key"] = pair.key_pem()


def control_plane_pki(cas: ClusterCAs, hostname: str, node_ip: str, now: dt.datetime,
                      leaf_validity: dt.timedelta = LEAF_VALIDITY) -> NodePKI:
    def leaf(ca: KeyPair, cn: str, usages, **kwargs) -> KeyPair:
        return new_leaf(ca, cn, usages, now, validity=leaf_validity, **kwargs)

    pki = NodePKI()
    pki.add("ca", cas.ca)
    pki.add("front-proxy-ca", cas.front_proxy_ca)
    pki.add("etcd/ca", cas.etcd_ca)
    pki.files["sa.key"] = cas.service_account.key_pem()
    pki.files["sa.pub"] = cas.service_account.public_pem()
    service_names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     f"kubernetes.default.svc.{CLUSTER_DOMAIN}"]
    pki.add("apiserver", leaf(cas.ca, "kube-apiserver", [SERVER], dns=[hostname, *service_names],
                              ips=[SERVICE_IP, node_ip]))
    pki.add("apiserver-kubelet-client", leaf(cas.ca, "kube-apiserver-kubelet-client", [CLIENT],
                                             organizations=("kubeadm:cluster-admins",)))
    pki.add("apiserver-etcd-client", leaf(cas.etcd_ca, "kube-apiserver-etcd-client", [CLIENT]))
    pki.add("front-proxy-client", leaf(cas.front_proxy_ca, "front-proxy-client", [CLIENT]))
    etcd_names = {"dns": [hostname, "localhost"], "ips": [node_ip, "127.0.0.1", "::1"]}
    pki.add("etcd/server", leaf(cas.etcd_ca, hostname, [SERVER, CLIENT], **etcd_names))
    pki.add("etcd/peer", leaf(cas.etcd_ca, hostname, [SERVER, CLIENT], **etcd_names))
    pki.add("etcd/healthcheck-client", leaf(cas.etcd_ca, "kube-etcd-healthcheck-client", [CLIENT]))
    pki.kubeconfig_clients = {
        "admin.conf": leaf(cas.ca, "kubernetes-admin", [CLIENT], organizations=("kubeadm:cluster-admins",)),
        "super-admin.conf": leaf(cas.ca, "kubernetes-super-admin", [CLIENT], organizations=("system:masters",)),
        "controller-manager.conf": leaf(cas.ca, "system:kube-controller-manager", [CLIENT]),
        "scheduler.conf": leaf(cas.ca, "system:kube-scheduler", [CLIENT]),
    }
    return pki


def kubelet_client(cas: ClusterCAs, hostname: str, now: dt.datetime,
                   leaf_validity: dt.timedelta = LEAF_VALIDITY) -> KeyPair:
    """The kubelet's client certificate, as the CSR signer issues it after TLS bootstrap."""
    return new_leaf(cas.ca, f"system:node:{hostname}", [CLIENT], now, organizations=("system:nodes",),
                    validity=leaf_validity)


def kubelet_serving(hostname: str, node_ip: str, now: dt.datetime) -> tuple[KeyPair, KeyPair]:
    """The kubelet's self-signed serving pair (no serverTLSBootstrap): a one-off CA and the leaf it signs."""
    stamp = int(now.timestamp())
    ca = new_ca(f"{hostname}-ca@{stamp}", now)
    return new_leaf(ca, f"{hostname}@{stamp}", [SERVER], now, dns=[hostname], ips=[node_ip]), ca
