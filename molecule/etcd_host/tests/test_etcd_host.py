"""The etcd role on etcd as a host service (Debian 13): environment file, restart, data directory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))  # not a package
from lab_audit import tls_handshake

ETCDCTL = ("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt --command-timeout=5s")
CLIENT = ("--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
          "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")


def test_environment_file_has_the_tls_settings(host):
    text = host.file("/etc/default/etcd").content_string.splitlines()
    assert "ETCD_CLIENT_CERT_AUTH=true" in text and "ETCD_PEER_CLIENT_CERT_AUTH=true" in text
    assert not [line for line in text if line.startswith(("ETCD_AUTO_TLS=true", "ETCD_PEER_AUTO_TLS=true"))]


def test_running_etcd_requires_client_certificates(host):
    with host.sudo():
        assert host.service("etcd").is_running
        environ = host.check_output("cat /proc/$(systemctl show -p MainPID --value etcd)/environ | tr '\\0' '\\n'")
        assert "ETCD_CLIENT_CERT_AUTH=true" in environ.splitlines()
        assert host.run(f"{ETCDCTL} {CLIENT} endpoint health").rc == 0
    # openssl's own report of the handshake: etcd asks for a client certificate.
    refused = tls_handshake(host, 2379, "/etc/etcd/pki/ca.crt")
    assert "alert certificate required" in refused, refused[-1500:]


def test_data_directory_is_private_to_etcd(host):
    with host.sudo():
        data = host.file("/var/lib/etcd")
        assert (data.mode, data.user) == (0o700, "etcd")
