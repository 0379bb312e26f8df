import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeharden.lab import pki

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def cas():
    return pki.ClusterCAs.create(NOW)


@pytest.fixture(scope="module")
def node(cas):
    return pki.control_plane_pki(cas, "cp1", "172.30.0.11", NOW)


def load(node, name):
    return x509.load_pem_x509_certificate(node.files[name])


def test_cas_last_ten_years_and_may_sign(cas):
    for pair, name in ((cas.ca, "kubernetes"), (cas.front_proxy_ca, "front-proxy-ca"), (cas.etcd_ca, "etcd-ca")):
        cert = pair.cert
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == [name]


@pytest.mark.parametrize(("leaf", "ca_name"), [
    ("apiserver.crt", "ca.crt"), ("apiserver-kubelet-client.crt", "ca.crt"),
    ("apiserver-etcd-client.crt", "etcd/ca.crt"), ("front-proxy-client.crt", "front-proxy-ca.crt"),
    ("etcd/server.crt", "etcd/ca.crt"), ("etcd/peer.crt", "etcd/ca.crt"),
    ("etcd/healthcheck-client.crt", "etcd/ca.crt"),
])
def test_each_leaf_is_signed_by_its_ca_for_one_year(node, leaf, ca_name):
    cert = load(node, leaf)
    cert.verify_directly_issued_by(load(node, ca_name))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=365)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_apiserver_names_cover_service_and_node(node):
    sans = load(node, "apiserver.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "cp1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("10.96.0.1"),
                                                              ipaddress.ip_address("172.30.0.11")}


def test_usages_match_kubeadm(node):
    def usages(name):
        return set(load(node, name).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert usages("apiserver.crt") == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert usages("etcd/peer.crt") == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages("etcd/healthcheck-client.crt") == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_client_subjects_carry_kubeadm_groups(node):
    admin = node.kubeconfig_clients["admin.conf"].cert.subject
    assert admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "kubeadm:cluster-admins"
    super_admin = node.kubeconfig_clients["super-admin.conf"].cert.subject
    assert super_admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"


def test_keys_are_pkcs1_rsa_2048(node):
    assert node.files["apiserver.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert load(node, "apiserver.crt").public_key().key_size == 2048
    assert node.files["sa.pub"].startswith(b"-----BEGIN PUBLIC KEY-----")
