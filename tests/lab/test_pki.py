"""Certificate renewal on a lab whose leaf certificates expire in 10 days: three control-plane nodes running a
real etcd cluster (renewed server and peer certificates must keep it serving) and a worker."""

from __future__ import annotations

import subprocess
import time

import pytest

from kubeharden.lab import docker
from kubeharden.lab.lab import Topology, etcdctl
from tests.lab.conftest import _lab, playbook

CONTROL_PLANES = ("cp1", "cp2", "cp3")
PKI = "/etc/kubernetes/pki"
LEAVES = ("apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client", "etcd/server",
          "etcd/peer", "etcd/healthcheck-client")


@pytest.fixture(scope="module")
def pki_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, "pytest-pki", Topology(control_planes=3, workers=1, cert_days=10))


def sh(lab, node: str, script: str) -> str:
    done = docker.exec_(lab.container(node), "sh", "-c", script)
    assert done.returncode == 0, f"{script}: {done.stderr}"
    return done.stdout


def describe(lab, node: str, path: str) -> dict:
    """What must survive a renewal (subject, issuer, extensions but key identifiers) and the end date."""
    text = sh(lab, node, f"openssl x509 -in {path} -noout -subject -issuer -enddate -ext "
                         "subjectAltName,keyUsage,extendedKeyUsage,basicConstraints -nameopt RFC2253")
    end = next(line for line in text.splitlines() if line.startswith("notAfter="))
    seconds = int(sh(lab, node, f"date -d '{end.split('=', 1)[1]}' +%s"))
    blocks: list[str] = []  # one per field or extension; extensions may come in another order
    for line in text.replace(end, "").splitlines():
        if line.startswith(" ") and blocks:
            blocks[-1] += line.strip()
        elif line:
            blocks.append(line)
    return {"identity": sorted(blocks), "days_left": (seconds - time.time()) / 86400}


def served_end(lab, node: str, port: int) -> float:
    """Days left on the certificate served on `port`: etcd's (2379 clients, 2380 peers), the apiserver's (6443)."""
    client = {2379: "healthcheck-client", 2380: "peer"}.get(port)
    credentials = f"-cert {PKI}/etcd/{client}.crt -key {PKI}/etcd/{client}.key" if client else ""
    address = next(n.ip for n in lab.state().nodes if n.name == node)  # peers listen on the node's address only
    end = sh(lab, node, f"echo | openssl s_client -connect {address}:{port} {credentials} 2>/dev/null "
                        "| openssl x509 -noout -enddate")
    return (int(sh(lab, node, f"date -d '{end.strip().split('=', 1)[1]}' +%s")) - time.time()) / 86400


def snapshot(lab, node: str) -> str:
    return sh(lab, node, f"find {PKI} /etc/kubernetes/*.conf -type f | sort | xargs sha256sum")


def etcd_started(lab, node: str) -> float:
    """When the node's running etcd process started (seconds since the epoch; the lab's nodes share a clock)."""
    return float(sh(lab, node, "echo $(( $(date +%s) - $(ps -o etimes= -p $(pgrep -x etcd)) ))"))


def test_check_mode_lists_due_certificates_and_changes_nothing(pki_lab):
    before = {n: snapshot(pki_lab, n) for n in CONTROL_PLANES}
    done = playbook(pki_lab, "pki.yml", "--check", "--diff")
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{PKI}/etcd/peer.crt: renewed (9 days left)" in done.stdout
    assert {n: snapshot(pki_lab, n) for n in CONTROL_PLANES} == before


def test_due_certificates_are_renewed_and_etcd_serves_them(pki_lab):
    before = {(n, leaf): describe(pki_lab, n, f"{PKI}/{leaf}.crt") for n in CONTROL_PLANES for leaf in LEAVES}
    started = {n: etcd_started(pki_lab, n) for n in CONTROL_PLANES}
    done = playbook(pki_lab, "pki.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    for node in CONTROL_PLANES:
        for leaf in LEAVES:
            after = describe(pki_lab, node, f"{PKI}/{leaf}.crt")
            assert after["identity"] == before[(node, leaf)]["identity"], f"{node} {leaf}"
            assert after["days_left"] > 360 > 10 > before[(node, leaf)]["days_left"]
        ca = {leaf: f"{PKI}/etcd/ca.crt" if leaf.startswith("etcd") or leaf == "apiserver-etcd-client"
              else f"{PKI}/front-proxy-ca.crt" if leaf == "front-proxy-client" else f"{PKI}/ca.crt" for leaf in LEAVES}
        for leaf in LEAVES:
            sh(pki_lab, node, f"openssl verify -CAfile {ca[leaf]} {PKI}/{leaf}.crt")
        sh(pki_lab, node, "base64 -d <<EOF | openssl verify -CAfile /etc/kubernetes/pki/ca.crt\n"
                          + sh(pki_lab, node, "awk '/client-certificate-data/ {print $2}' /etc/kubernetes/admin.conf")
                          + "EOF")
        assert served_end(pki_lab, node, 2379) > 360 and served_end(pki_lab, node, 2380) > 360
        # The restarted apiserver serves its renewed certificate, and the renewed admin.conf is accepted.
        assert served_end(pki_lab, node, 6443) > 360
        assert sh(pki_lab, node, "kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz") == "ok"
    # One member at a time, in play order: each restart came after the previous member's.
    restarted = [etcd_started(pki_lab, n) for n in CONTROL_PLANES]
    assert all(restarted[i] > started[n] for i, n in enumerate(CONTROL_PLANES)) and restarted == sorted(restarted)
    health = etcdctl(pki_lab.container("cp1"), "endpoint", "health", "--cluster")
    assert health.returncode == 0 and (health.stdout + health.stderr).count("is healthy") == 3, health.stderr
    # The kubelet's own client certificate (it rotates it) and the worker are left alone.
    assert describe(pki_lab, "w1", "/var/lib/kubelet/pki/kubelet-client-current.pem")["days_left"] < 10


def test_a_second_run_renews_nothing(pki_lab):
    before = {n: snapshot(pki_lab, n) for n in CONTROL_PLANES}
    done = playbook(pki_lab, "pki.yml")
    assert done.returncode == 0 and "changed=0" in done.stdout and "changed=1" not in done.stdout, done.stdout[-2000:]
    assert {n: snapshot(pki_lab, n) for n in CONTROL_PLANES} == before


def test_etcds_own_copies_follow_a_renewal(pki_lab):
    # The control_plane role runs etcd as the etcd user, from etcd-owned copies of its certificates (its etcd step
    # only: the other components' hardening is not what this test is about, and each restart costs a minute).
    hardened = playbook(pki_lab, "control-plane.yml", "--limit", "cp3", "--tags", "control_plane_etcd")
    assert hardened.returncode == 0, hardened.stdout[-2000:]
    assert "/etc/kubernetes/etcd-pki/server.crt" in sh(pki_lab, "cp3", "cat /etc/kubernetes/manifests/etcd.yaml")
    before = served_end(pki_lab, "cp3", 2379)
    done = playbook(pki_lab, "pki.yml", "--limit", "cp3", "-e", "pki_renew_before_days=400 pki_validity_days=730")
    assert done.returncode == 0, done.stdout[-2000:]
    for name in ("server.crt", "server.key", "peer.crt", "peer.key"):
        sh(pki_lab, "cp3", f"cmp {PKI}/etcd/{name} /etc/kubernetes/etcd-pki/{name}")
        assert sh(pki_lab, "cp3", f"stat -c %U /etc/kubernetes/etcd-pki/{name}").strip() == "etcd"
    # Renewed by the real `kubeadm certs renew`: kubeadm's own validity applies (pki_validity_days is openssl's).
    assert served_end(pki_lab, "cp3", 2379) > before
    health = etcdctl(pki_lab.container("cp1"), "endpoint", "health", "--cluster")
    assert health.returncode == 0 and (health.stdout + health.stderr).count("is healthy") == 3, health.stderr


BROKEN_NODES = {  # what breaks the node, what repairs it, and what the failure must say
    "corrupt certificate": (
        f"cp {PKI}/front-proxy-client.crt /root/fp.crt && printf -- '-----BEGIN CERTIFICATE-----\\nAAAA\\n"
        f"-----END CERTIFICATE-----\\n' > {PKI}/front-proxy-client.crt",
        f"mv /root/fp.crt {PKI}/front-proxy-client.crt",
        f"{PKI}/front-proxy-client.crt: not an X.509 certificate"),
    "missing CA key": (
        f"mv {PKI}/front-proxy-ca.key /root/", f"mv /root/front-proxy-ca.key {PKI}/",
        f"the key of its CA {PKI}/front-proxy-ca.crt is missing ({PKI}/front-proxy-ca.key)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_NODES))
def test_a_broken_pki_is_named_and_nothing_is_renewed(pki_lab, case):
    breaks, repairs, message = BROKEN_NODES[case]
    sh(pki_lab, "cp1", breaks)
    try:
        before = snapshot(pki_lab, "cp1")
        # Everything is due with a 400-day threshold: only the broken file may stop the renewal.
        done = playbook(pki_lab, "pki.yml", "--limit", "cp1", "-e", "pki_renew_before_days=400 pki_validity_days=730")
        assert done.returncode != 0 and message in done.stdout, done.stdout[-2000:]
        assert snapshot(pki_lab, "cp1") == before
    finally:
        sh(pki_lab, "cp1", repairs)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("pki_renew_before_days", "400", "pki_renew_before_days (400) must be at least 0 and below pki_validity_days"),
    ("pki_key_type", "rsa-1024", "pki_key_type"),
])
def test_bad_variables_fail_before_any_change(pki_lab, variable, value, message):
    before = snapshot(pki_lab, "cp3")
    done = playbook(pki_lab, "pki.yml", "--limit", "cp3", "-e", f"{variable}={value}")
    assert done.returncode != 0 and message in done.stdout, done.stdout[-2000:]
    assert snapshot(pki_lab, "cp3") == before


def public_keys(lab, node: str) -> list[str]:
    """Digests of the public keys in sa.pub, and (last) of the signing key's public key."""
    return sh(lab, node, f"cd {PKI} && awk '/BEGIN/ {{n++}} {{print > (\"/tmp/sa-pub\" n)}}' sa.pub && "
                         "for f in /tmp/sa-pub*; do openssl pkey -pubin -in $f -outform DER | sha256sum; done; "
                         "rm -f /tmp/sa-pub*; openssl pkey -in sa.key -pubout -outform DER | sha256sum").split()[::2]


def create_token(lab) -> str:
    return sh(lab, "cp1", "kubectl --kubeconfig /etc/kubernetes/admin.conf create token default -n default "
                          "--duration 1h").strip()


def token_accepted(lab, node: str, token: str) -> bool:
    """Whether the node's own apiserver authenticates the token (only the token: no client certificate)."""
    address = next(n.ip for n in lab.state().nodes if n.name == node)  # a name of the apiserver's certificate
    done = docker.exec_(lab.container(node), "kubectl", "--kubeconfig", "/dev/null", "--server",
                        f"https://{address}:6443", "--certificate-authority", f"{PKI}/ca.crt", "--token", token,
                        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", check=False)
    if done.returncode == 0 and done.stdout == "system:serviceaccount:default:default":
        return True
    assert "Unauthorized" in done.stderr, done.stderr  # refused for its token, not for another reason
    return False


def test_service_account_key_rotation_overlaps_and_waits_out_the_grace_period(pki_lab):
    old_token = create_token(pki_lab)
    assert all(token_accepted(pki_lab, node, old_token) for node in CONTROL_PLANES)
    old = public_keys(pki_lab, "cp1")
    assert len(old) == 2 and old[0] == old[1]  # kubeadm: one public key, the signing key's
    done = playbook(pki_lab, "rotate-service-account-key.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "the old public key stays trusted until" in done.stdout
    keys = {n: public_keys(pki_lab, n) for n in CONTROL_PLANES}
    assert all(k == keys["cp1"] for k in keys.values())  # the same keys on every node
    published_old, published_new, signing = keys["cp1"]
    assert published_old == old[0] and signing == published_new != published_old
    for node in CONTROL_PLANES:  # every apiserver and controller-manager was asked to restart
        for component in ("kube-apiserver", "kube-controller-manager"):
            manifest = sh(pki_lab, node, f"cat /etc/kubernetes/manifests/{component}.yaml")
            assert f"kubeharden.io/service-account-signing-key: {signing[:16]}" in manifest
        assert "sa-next.key" not in sh(pki_lab, node, f"ls {PKI}")
    # Tokens signed before the switch still work everywhere in the grace period, and so do new ones.
    new_token = create_token(pki_lab)
    for node in CONTROL_PLANES:
        assert token_accepted(pki_lab, node, old_token) and token_accepted(pki_lab, node, new_token), node
    # Within the grace period the old key stays; after it, only the signing key is left.
    again = playbook(pki_lab, "rotate-service-account-key.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout and public_keys(pki_lab, "cp2") == keys["cp2"]
    done = playbook(pki_lab, "rotate-service-account-key.yml", "-e", "pki_service_account_grace_hours=0")
    assert done.returncode == 0, done.stdout[-3000:]
    for node in CONTROL_PLANES:
        assert public_keys(pki_lab, node) == [signing, signing]
        assert "sa-rotation-state.json" not in sh(pki_lab, node, "ls /etc/kubernetes")
        # The apiservers restarted with only the new key: the old token is refused, the new one still works.
        assert not token_accepted(pki_lab, node, old_token) and token_accepted(pki_lab, node, new_token), node
    assert "BEGIN" not in done.stdout.split("PLAY RECAP")[0].replace("BEGIN PUBLIC", "")  # no key in the output


def test_the_audit_reports_days_left_and_only_the_kubelets_own_certificate_fails(pki_lab):
    done = subprocess.run(["kubeharden", "audit", "-i", str(pki_lab.inventory_path), "--controls", "KH-PKI",
                           "--format", "prometheus"], capture_output=True, text=True, check=False)
    metrics = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines()
               if line.startswith("kubeharden_")}
    apiserver = next(v for k, v in metrics.items() if k.startswith("kubeharden_certificate_expiry_days{node=\"cp2\","
                                                                    f"certificate=\"{PKI}/apiserver.crt\""))
    kubelet = next(v for k, v in metrics.items() if k.startswith("kubeharden_certificate_expiry_days{node=\"w1\",")
                   and "kubelet-client-current.pem" in k)
    assert apiserver >= 364 and kubelet == 9
    failing = {k for k, v in metrics.items() if k.startswith("kubeharden_control_passed") and v == 0}
    assert failing == {f'kubeharden_control_passed{{node="{n}",control="KH-PKI-1",severity="high",'
                       f'section="KH-PKI Certificates"}}' for n in (*CONTROL_PLANES, "w1")}, done.stdout
