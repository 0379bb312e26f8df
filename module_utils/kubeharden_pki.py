"""A node's certificates: read them, judge them, and re-issue leaves from the node's own CA.

Runs on the node with the standard library only. Certificates are parsed from DER here (subject, SANs,
usages, key type and size, signature algorithm: no `openssl -text` output to scrape); everything that needs
cryptography goes through the `openssl` command every kubeadm node has: chain verification, key/certificate
matching, key generation and signing.
"""

from __future__ import annotations

import base64
import datetime as dt
import glob
import hashlib
import ipaddress
import os
import re
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache

from ansible.module_utils.kubeharden_node import run

PKI_DIR = "/etc/kubernetes/pki"
KUBECONFIG_DIR = "/etc/kubernetes"
KUBELET_PKI_DIR = "/var/lib/kubelet/pki"
ETCD_COPIES_DIR = "/etc/kubernetes/etcd-pki"  # the control_plane role's copies for a non-root etcd
HOST_ETCD_PKI_DIR = "/etc/etcd/pki"

# A certificate's key file and the static pods or services that read it: a renewal restarts these.
READERS = {
    "apiserver": ["kube-apiserver"], "apiserver-kubelet-client": ["kube-apiserver"],
    "apiserver-etcd-client": ["kube-apiserver"], "front-proxy-client": ["kube-apiserver"],
    "etcd/server": ["etcd"], "etcd/peer": ["etcd"], "etcd/healthcheck-client": [],
    "controller-manager.conf": ["kube-controller-manager"], "scheduler.conf": ["kube-scheduler"],
    "admin.conf": [], "super-admin.conf": [], "kubelet.conf": ["kubelet"],
}
# `kubeadm certs renew <name>` for each certificate kubeadm manages.
KUBEADM_NAMES = {
    "apiserver": "apiserver", "apiserver-kubelet-client": "apiserver-kubelet-client",
    "apiserver-etcd-client": "apiserver-etcd-client", "front-proxy-client": "front-proxy-client",
    "etcd/server": "etcd-server", "etcd/peer": "etcd-peer", "etcd/healthcheck-client": "etcd-healthcheck-client",
    "admin.conf": "admin.conf", "super-admin.conf": "super-admin.conf",
    "controller-manager.conf": "controller-manager.conf", "scheduler.conf": "scheduler.conf",
}
KEY_TYPES = ("keep", "rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384")
WEAK_SIGNATURE = re.compile(r"sha1|md5|md2", re.IGNORECASE)


class PKIError(Exception):
    """Bad input or a node state the module refuses to act on; the message names the file."""


# -- DER -------------------------------------------------------------------------------------------------

def _read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """One DER element at `offset`: (tag, content, offset after it)."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or offset + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    end = offset + length
    if end > len(data):
        raise ValueError("truncated DER element")
    return tag, data[offset:end], end


def _children(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The elements of a constructed value: (tag, content, the element's full encoding)."""
    items, offset = [], 0
    while offset < len(content):
        tag, value, end = _read_tlv(content, offset)
        items.append((tag, value, content[offset:end]))
        offset = end
    return items


def _oid(content: bytes) -> str:
    parts, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])


def _time(tag: int, content: bytes) -> dt.datetime:
    text = content.decode("ascii")
    if tag == 0x17:  # UTCTime: two-digit year, 1950-2049
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


NAME_OIDS = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
             "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress"}
SIGNATURES = {
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption", "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.10": "rsassaPss", "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption", "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1", "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384", "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.3.101.112": "ED25519",
}
CURVES = {"1.2.840.10045.3.1.7": ("P-256", 256), "1.3.132.0.34": ("P-384", 384), "1.3.132.0.35": ("P-521", 521)}
KEY_USAGE_BITS = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement",
                  "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")
EXTENDED_USAGES = {"1.3.6.1.5.5.7.3.1": "serverAuth", "1.3.6.1.5.5.7.3.2": "clientAuth",
                   "1.3.6.1.5.5.7.3.3": "codeSigning", "1.3.6.1.5.5.7.3.4": "emailProtection"}


def _name(content: bytes) -> list[tuple[str, str]]:
    attributes = []
    for _tag, rdn, _der in _children(content):
        for _tag, pair, _der in _children(rdn):
            (_tag, oid, _der), (_tag, value, _der) = _children(pair)[:2]
            key = _oid(oid)
            attributes.append((NAME_OIDS.get(key, key), value.decode("utf-8", "replace")))
    return attributes


def name_text(attributes: list[tuple[str, str]]) -> str:
    """`/O=system:masters/CN=kubernetes-admin`: openssl's -subj form, in the certificate's order."""
    return "".join(f"/{k}={v.replace(chr(92), chr(92) * 2).replace('/', chr(92) + '/')}" for k, v in attributes)


def _bits(content: bytes) -> set[str]:
    if not content:
        return set()
    value = int.from_bytes(content[1:], "big") if len(content) > 1 else 0
    width = (len(content) - 1) * 8
    return {name for index, name in enumerate(KEY_USAGE_BITS) if index < width and value >> (width - 1 - index) & 1}


@dataclass
class Certificate:
    subject: list[tuple[str, str]]
    issuer: list[tuple[str, str]]
    subject_der: bytes
    issuer_der: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    signature: str
    key_type: str
    key_bits: int
    curve: str | None
    public_key_der: bytes
    is_ca: bool = False
    sans: list[str] = field(default_factory=list)
    key_usage: list[str] = field(default_factory=list)
    extended_key_usage: list[str] = field(default_factory=list)
    critical: list[str] = field(default_factory=list)  # extension names marked critical
    has_subject_key_id: bool = False
    has_authority_key_id: bool = False

    @property
    def self_signed(self) -> bool:
        return self.subject_der == self.issuer_der


def parse_certificate(der: bytes) -> Certificate:
    """The fields kubeharden reads from an X.509 certificate; ValueError when it is not one."""
    try:
        tag, body, _end = _read_tlv(der, 0)
        tbs_tag, tbs, _end = _read_tlv(body, 0)
        if tag != 0x30 or tbs_tag != 0x30:
            raise ValueError("not a DER SEQUENCE")
        fields = _children(tbs)
        if fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        serial, signature, issuer, validity, subject, spki = fields[:6]
        extensions = next((_children(_children(value)[0][1]) for t, value, _der in fields[6:] if t == 0xA3), [])
        (not_before_tag, not_before, _end), (not_after_tag, not_after, _end) = _children(validity[1])[:2]
        algorithm, public_bits = _children(spki[1])[:2]
        algorithm_fields = _children(algorithm[1])
        key_algorithm = _oid(algorithm_fields[0][1])
        cert = Certificate(
            subject=_name(subject[1]), issuer=_name(issuer[1]), subject_der=subject[2], issuer_der=issuer[2],
            not_before=_time(not_before_tag, not_before), not_after=_time(not_after_tag, not_after),
            serial=int.from_bytes(serial[1], "big"),
            signature=SIGNATURES.get(_oid(_children(signature[1])[0][1]), _oid(_children(signature[1])[0][1])),
            key_type="other", key_bits=0, curve=None, public_key_der=spki[2])
        if key_algorithm == "1.2.840.113549.1.1.1":
            modulus = _children(_read_tlv(public_bits[1][1:], 0)[1])[0][1]
            cert.key_type, cert.key_bits = "RSA", int.from_bytes(modulus, "big").bit_length()
        elif key_algorithm == "1.2.840.10045.2.1":
            curve = _oid(algorithm_fields[1][1]) if len(algorithm_fields) > 1 else ""
            cert.key_type = "EC"
            cert.curve, cert.key_bits = CURVES.get(curve, (curve, 0))
        elif key_algorithm == "1.3.101.112":
            cert.key_type, cert.key_bits = "Ed25519", 256
        for _tag, extension, _der in extensions:
            parts = _children(extension)
            oid = _oid(parts[0][1])
            critical = len(parts) == 3 and parts[1][1] == b"\xff"
            value = parts[-1][1]
            name = _read_extension(cert, oid, value)
            if critical and name:
                cert.critical.append(name)
        return cert
    except (IndexError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not an X.509 certificate ({exc})") from None


def _read_extension(cert: Certificate | CertificateRequest, oid: str, value: bytes) -> str | None:
    """Record what one extension says on a certificate or a request (both carry the same fields); its name."""
    if oid == "2.5.29.17":
        for tag, item, _der in _children(_read_tlv(value, 0)[1]):
            if tag == 0x82:
                cert.sans.append(f"DNS:{item.decode('ascii')}")
            elif tag == 0x87:
                cert.sans.append(f"IP:{ipaddress.ip_address(item)}")
            elif tag == 0x81:
                cert.sans.append(f"email:{item.decode('ascii')}")
            elif tag == 0x86:
                cert.sans.append(f"URI:{item.decode('ascii')}")
        return "subjectAltName"
    if oid == "2.5.29.15":
        cert.key_usage = [u for u in KEY_USAGE_BITS if u in _bits(_read_tlv(value, 0)[1])]
        return "keyUsage"
    if oid == "2.5.29.37":
        cert.extended_key_usage = [EXTENDED_USAGES.get(_oid(item), _oid(item))
                                   for _tag, item, _der in _children(_read_tlv(value, 0)[1])]
        return "extendedKeyUsage"
    if oid == "2.5.29.19":
        constraints = _children(_read_tlv(value, 0)[1])
        cert.is_ca = bool(constraints) and constraints[0][0] == 0x01 and constraints[0][1] != b"\x00"
        return "basicConstraints"
    if oid == "2.5.29.14":
        cert.has_subject_key_id = True
    elif oid == "2.5.29.35":
        cert.has_authority_key_id = True
    return None


EXTENSION_REQUEST = "1.2.840.113549.1.9.14"  # PKCS#9 extensionRequest: the extensions a CSR asks for


@dataclass
class CertificateRequest:
    """What a PKCS#10 request asks for. Its signature is the API server's to check (it refuses a bad one)."""

    subject: list[tuple[str, str]]
    sans: list[str] = field(default_factory=list)
    key_usage: list[str] = field(default_factory=list)
    extended_key_usage: list[str] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)  # every requested extension, by name or OID
    is_ca: bool = False
    has_subject_key_id: bool = False
    has_authority_key_id: bool = False


def parse_request(der: bytes) -> CertificateRequest:
    """The subject and requested extensions of a DER certificate request; ValueError when it is not one."""
    try:
        tag, body, _end = _read_tlv(der, 0)
        info_tag, info, _end = _read_tlv(body, 0)
        if tag != 0x30 or info_tag != 0x30:
            raise ValueError("not a DER SEQUENCE")
        fields = _children(info)
        _version, subject, _spki = fields[:3]
        request = CertificateRequest(subject=_name(subject[1]))
        for attributes_tag, attributes, _der in fields[3:]:
            if attributes_tag != 0xA0:
                continue
            for _tag, attribute, _der in _children(attributes):
                oid, values = _children(attribute)[:2]
                if _oid(oid[1]) != EXTENSION_REQUEST:
                    continue
                for _tag, extensions, _der in _children(values[1]):
                    for _tag, extension, _der in _children(extensions):
                        parts = _children(extension)
                        extension_oid = _oid(parts[0][1])
                        name = _read_extension(request, extension_oid, parts[-1][1])
                        request.extensions.append(name or extension_oid)
        return request
    except (IndexError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a certificate request ({exc})") from None


PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s+(.*?)-----END \1-----", re.DOTALL)


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(label, the whole PEM block) for each block in `text`."""
    return [(m.group(1), m.group(0) + "\n") for m in PEM_BLOCK.finditer(text)]


def pem_der(block: str) -> bytes:
    body = PEM_BLOCK.search(block)
    if not body:
        raise ValueError("no PEM block")
    return base64.b64decode("".join(body.group(2).split()))


# -- what the node holds ----------------------------------------------------------------------------------

@dataclass
class Item:
    """One certificate on the node: a file, or a client certificate embedded in a kubeconfig."""

    name: str  # how reports name it: the path, or "<kubeconfig> (user <name>)"
    path: str  # the file holding it
    cert_pem: str = ""
    key_pem: str | None = None  # the matching private key's PEM, when the node holds it
    key_path: str | None = None
    kubeconfig_user: str | None = None
    managed_by: str = "kubeharden"  # or "kubelet" (rotates its own) or "copy" (follows its source)
    cert: Certificate | None = None
    error: str | None = None


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


def _file_item(path: str, managed_by: str = "kubeharden") -> Item:
    item = Item(name=path, path=path, managed_by=managed_by)
    try:
        blocks = pem_blocks(_read(path))
    except OSError as exc:
        item.error = f"unreadable: {exc.strerror}"
        return item
    certs = [b for label, b in blocks if label == "CERTIFICATE"]
    keys = [b for label, b in blocks if label.endswith("PRIVATE KEY")]
    if not certs:
        item.error = "no PEM certificate in the file"
        return item
    item.cert_pem = certs[0]
    if keys:  # a bundle such as kubelet-client-current.pem
        item.key_pem, item.key_path = keys[0], path
    else:
        key_path = re.sub(r"\.(crt|pem)$", ".key", path)
        if key_path != path and os.path.exists(key_path):
            item.key_path = key_path
            try:
                item.key_pem = _read(key_path)
            except OSError as exc:
                item.error = f"key {key_path} unreadable: {exc.strerror}"
    return item


def _kubeconfig_items(path: str, load_yaml) -> list[Item]:
    try:
        config = load_yaml(path) or {}
        users = config.get("users") or []
    except Exception as exc:
        return [Item(name=path, path=path, error=f"not a readable kubeconfig: {exc}")]
    items = []
    for user in users:
        data = (user.get("user") or {}) if isinstance(user, dict) else {}
        if not data.get("client-certificate-data"):
            continue  # a file reference (kubelet.conf -> kubelet-client-current.pem) is inventoried as a file
        item = Item(name=f"{path} (user {user.get('name')})", path=path, kubeconfig_user=user.get("name"))
        try:
            item.cert_pem = base64.b64decode(data["client-certificate-data"]).decode("ascii")
            if data.get("client-key-data"):
                item.key_pem = base64.b64decode(data["client-key-data"]).decode("ascii")
                item.key_path = path
        except (ValueError, UnicodeDecodeError):
            item.error = "client-certificate-data is not base64 PEM"
        items.append(item)
    return items


def collect(load_yaml, pki_dir: str = PKI_DIR, kubeconfig_dir: str = KUBECONFIG_DIR,
            kubelet_pki_dir: str = KUBELET_PKI_DIR,
            extra_dirs: tuple[str, ...] = (ETCD_COPIES_DIR, HOST_ETCD_PKI_DIR)) -> list[Item]:
    """Every certificate of the node, parsed; unreadable or malformed ones carry `error`."""
    items: list[Item] = []
    for path in sorted(glob.glob(f"{pki_dir}/*.crt") + glob.glob(f"{pki_dir}/etcd/*.crt")):
        items.append(_file_item(path))
    for directory in extra_dirs:
        managed = "copy" if directory == ETCD_COPIES_DIR else "kubeharden"
        items.extend(_file_item(p, managed) for p in sorted(glob.glob(f"{directory}/*.crt")))
    for path in sorted(glob.glob(f"{kubelet_pki_dir}/*.crt")):
        items.append(_file_item(path, "kubelet"))
    current = os.path.join(kubelet_pki_dir, "kubelet-client-current.pem")
    if os.path.exists(current):
        items.append(_file_item(current, "kubelet"))
    for path in sorted(glob.glob(f"{kubeconfig_dir}/*.conf")):
        items.extend(_kubeconfig_items(path, load_yaml))
    for item in items:
        if item.error is None:
            try:
                item.cert = parse_certificate(pem_der(item.cert_pem))
            except ValueError as exc:
                item.error = str(exc)
    return items


# -- judging ----------------------------------------------------------------------------------------------

def openssl(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return run(["openssl", *args], stdin=stdin, timeout=60)


@cache  # asked for the same key by the renewal's preflight and by the inventory
def public_key_der(key_pem: str) -> bytes | None:
    """The SubjectPublicKeyInfo of a private key (None when openssl cannot read the key)."""
    result = run(["openssl", "pkey", "-pubout", "-outform", "DER"], stdin=key_pem, timeout=60, text=False)
    return result.stdout if result.returncode == 0 else None


def ca_key_path(ca: Item) -> str:
    """kubeadm keeps a CA's key beside its certificate: ca.crt -> ca.key."""
    return ca.path[:-4] + ".key"


def find_issuer(item: Item, cas: list[Item]) -> Item | None:
    if item.cert is None:
        raise PKIError(f"{item.path}: no certificate was parsed to find the issuer of")
    if item.cert.self_signed:
        return item
    candidates = [ca for ca in cas if ca.cert and ca.cert.subject_der == item.cert.issuer_der
                  and ca.managed_by != "copy"]
    # A CA whose key is on the node first (kubeadm's etcd CA over a host etcd's copy of its certificate).
    candidates.sort(key=lambda ca: not os.path.exists(ca_key_path(ca)))
    return candidates[0] if candidates else None


def verify_chain(item: Item, issuer: Item) -> str:
    """"ok", or why openssl rejects the certificate against its CA."""
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca_file:
        ca_file.write(issuer.cert_pem)
        ca_file.flush()
        result = openssl(["verify", "-CAfile", ca_file.name], stdin=item.cert_pem)
    if result.returncode == 0:
        return "ok"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line]
    return "failed: " + (lines[0].split("error", 1)[1].strip(" :0123456789") if lines else "openssl verify failed")


def file_mode_owner(path: str) -> tuple[str, str]:
    import grp
    import pwd

    info = os.stat(path)
    try:
        owner = f"{pwd.getpwuid(info.st_uid).pw_name}:{grp.getgrgid(info.st_gid).gr_name}"
    except KeyError:
        owner = f"{info.st_uid}:{info.st_gid}"
    return f"{info.st_mode & 0o7777:04o}", owner


def describe(item: Item, cas: list[Item], now: dt.datetime) -> dict:
    """The inventory entry a report shows: no key material, only facts about it."""
    entry: dict = {"name": item.name, "path": item.path, "managed_by": item.managed_by}
    try:
        entry["mode"], entry["owner"] = file_mode_owner(item.path)
        if item.key_path and item.key_path != item.path:
            entry["key_path"] = item.key_path
            entry["key_mode"], entry["key_owner"] = file_mode_owner(item.key_path)
    except OSError:
        pass
    if item.error or item.cert is None:
        entry["error"] = item.error or "not parsed"
        return entry
    cert = item.cert
    entry.update({
        "subject": name_text(cert.subject), "issuer": name_text(cert.issuer), "sans": cert.sans,
        "serial": f"{cert.serial:x}", "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(), "days_left": days_left(cert, now),
        "key_type": cert.key_type, "key_bits": cert.key_bits, "curve": cert.curve,
        "signature_algorithm": cert.signature, "is_ca": cert.is_ca, "self_signed": cert.self_signed,
        "key_usage": cert.key_usage, "extended_key_usage": cert.extended_key_usage,
    })
    issuer = find_issuer(item, cas)
    entry["issuer_path"] = issuer.path if issuer else None
    entry["chain"] = verify_chain(item, issuer) if issuer else "issuer not on this node"
    if item.key_pem is not None:
        derived = public_key_der(item.key_pem)
        entry["key_matches"] = derived == cert.public_key_der if derived is not None else None
        if derived is None:
            entry["key_error"] = "openssl cannot read the private key"
    else:
        entry["key_matches"] = None
    return entry


def days_left(cert: Certificate, now: dt.datetime) -> int:
    return int((cert.not_after - now).total_seconds() // 86400)


def weaknesses(key_type: str, key_bits: int, signature: str) -> list[str]:
    """What KH-PKI-2 and KH-PKI-3 reject: RSA under 2048 bits, EC under P-256, SHA-1/MD5 signatures."""
    found = []
    if (key_type == "RSA" and key_bits < 2048) or (key_type == "EC" and key_bits < 256) or key_type == "other":
        found.append(f"weak key ({key_type} {key_bits} bits)")
    if WEAK_SIGNATURE.search(signature):
        found.append(f"weak signature ({signature})")
    return found


def renewal_reasons(cert: Certificate, renew_before_days: int, now: dt.datetime) -> list[str]:
    reasons = weaknesses(cert.key_type, cert.key_bits, cert.signature)
    left = days_left(cert, now)
    if left < renew_before_days:
        reasons.insert(0, f"{left} days left" if left >= 0 else f"expired {-left} days ago")
    return reasons


def stem(item: Item, pki_dir: str = PKI_DIR) -> str:
    """The name READERS and KUBEADM_NAMES use: `apiserver`, `etcd/server`, `admin.conf`..."""
    if item.kubeconfig_user is not None:
        return os.path.basename(item.path)
    relative = os.path.relpath(item.path, pki_dir)
    return relative[:-4] if relative.endswith(".crt") and not relative.startswith("..") else item.path


# -- re-issuing a leaf from the node's CA -------------------------------------------------------------------

def new_key_type(cert: Certificate, wanted: str) -> str:
    """The key type a renewal generates: `wanted`, or the current one (raised to the minimum when weak)."""
    if wanted != "keep":
        return wanted
    if cert.key_type == "EC":
        return "ecdsa-p384" if cert.key_bits >= 384 else "ecdsa-p256"
    if cert.key_type == "RSA" and cert.key_bits in (3072, 4096):
        return f"rsa-{cert.key_bits}"
    return "rsa-2048"


def generate_key(key_type: str, traditional: bool) -> str:
    if key_type.startswith("rsa-"):
        args = ["genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{key_type[4:]}"]
    else:
        curve = {"ecdsa-p256": "P-256", "ecdsa-p384": "P-384"}[key_type]
        args = ["genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}",
                "-pkeyopt", "ec_param_enc:named_curve"]
    result = openssl(args)
    if result.returncode != 0:
        raise PKIError(f"openssl could not generate a {key_type} key: {result.stderr.strip()}")
    if not traditional:
        return result.stdout
    converted = openssl(["pkey", "-traditional"], stdin=result.stdout)
    if converted.returncode != 0:
        raise PKIError(f"openssl could not convert the new key: {converted.stderr.strip()}")
    return converted.stdout


def extensions_config(cert: Certificate) -> str:
    """An openssl extension section that gives the renewed certificate the same extensions."""
    def line(name: str, value: str) -> str:
        return f"{name} = {'critical, ' if name in cert.critical else ''}{value}"

    lines = ["[renewal]", line("basicConstraints", "CA:FALSE")]
    if cert.key_usage:
        lines.append(line("keyUsage", ", ".join(cert.key_usage)))
    if cert.extended_key_usage:
        lines.append(line("extendedKeyUsage", ", ".join(cert.extended_key_usage)))
    if cert.sans:
        lines.append(line("subjectAltName", ", ".join(cert.sans)))
    lines.append("subjectKeyIdentifier = " + ("hash" if cert.has_subject_key_id else "none"))
    lines.append("authorityKeyIdentifier = " + ("keyid" if cert.has_authority_key_id else "none"))
    return "\n".join(lines) + "\n"


def reissue(cert: Certificate, key_pem: str, ca_cert_path: str, ca_key_path: str, validity_days: int) -> str:
    """A certificate with `cert`'s subject, SANs and usages for `key_pem`, signed by the CA: its PEM."""
    with tempfile.TemporaryDirectory(prefix="kubeharden-pki-") as work:
        key_file, csr_file, ext_file = (os.path.join(work, n) for n in ("leaf.key", "leaf.csr", "ext.cnf"))
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(key_pem)
        with open(ext_file, "w") as handle:
            handle.write(extensions_config(cert))
        request = openssl(["req", "-new", "-key", key_file, "-subj", name_text(cert.subject) or "/",
                           "-utf8", "-out", csr_file])
        if request.returncode != 0:
            raise PKIError(f"openssl could not build the request for {name_text(cert.subject)}: "
                           f"{request.stderr.strip()}")
        digest = "-sha384" if cert.key_type == "EC" and cert.key_bits >= 384 else "-sha256"
        signed = openssl(["x509", "-req", "-in", csr_file, "-CA", ca_cert_path, "-CAkey", ca_key_path,
                          "-set_serial", f"0x{secrets.randbits(63):x}", "-days", str(validity_days), digest,
                          "-extfile", ext_file, "-extensions", "renewal"])
    if signed.returncode != 0:
        raise PKIError(f"openssl could not sign with {ca_key_path}: {signed.stderr.strip()}")
    return signed.stdout


def same_identity(old: Certificate, new: Certificate) -> list[str]:
    """What differs between a certificate and its renewal, beyond validity, serial and key (must be nothing)."""
    differences = []
    for attribute in ("subject", "issuer", "sans", "key_usage", "extended_key_usage", "is_ca"):
        if getattr(old, attribute) != getattr(new, attribute):
            differences.append(f"{attribute}: {getattr(old, attribute)} -> {getattr(new, attribute)}")
    return differences


def kubeconfig_with(text: str, old_cert_pem: str, old_key_pem: str | None, cert_pem: str, key_pem: str) -> str:
    """The kubeconfig's text with the embedded client certificate and key replaced, nothing else touched."""
    replacements = [(base64.b64encode(old_cert_pem.encode()).decode(), base64.b64encode(cert_pem.encode()).decode())]
    if old_key_pem is not None:
        replacements.append((base64.b64encode(old_key_pem.encode()).decode(),
                             base64.b64encode(key_pem.encode()).decode()))
    for old, new in replacements:
        if text.count(old) != 1:
            raise PKIError("the embedded client certificate or key is not stored as one plain base64 value")
        text = text.replace(old, new)
    return text


def mode_changes(pki_dir: str) -> list[tuple[str, int, int, bool]]:
    """CIS 1.1.19-1.1.21 under the kubeadm PKI: everything owned by root:root, keys at most 0600, certificates and
    public keys at most 0644. Only tightens. Returns (path, current mode, wanted mode, owner to fix)."""
    changes = []
    for directory, _subdirs, files in os.walk(pki_dir):
        for path in [directory, *(os.path.join(directory, f) for f in sorted(files))]:
            info = os.lstat(path)
            if os.path.islink(path):
                continue
            mode = info.st_mode & 0o7777
            limit = 0o7777 if os.path.isdir(path) else 0o600 if path.endswith(".key") else 0o644
            wanted = mode & limit
            owner = info.st_uid != 0 or info.st_gid != 0
            if wanted != mode or owner:
                changes.append((path, mode, wanted, owner))
    return changes


def digest(*texts: str) -> str:
    return hashlib.sha256("".join(texts).encode()).hexdigest()[:16]
