"""Kubelet serving certificates signed by the cluster CA (CIS 1.2.5, 4.2.9).

With `serverTLSBootstrap: true` a kubelet asks the cluster for its serving certificate with a
`kubernetes.io/kubelet-serving` CertificateSigningRequest, which kube-controller-manager signs with the cluster
CA once somebody approves it: nothing in Kubernetes approves these, because the API server cannot tell which
names and addresses belong to which node. kubeharden approves a request only when the inventory vouches for
all of it (`verdict`), and proves the result the way the API server will use it: a TLS handshake with the
kubelet that verifies its certificate against the cluster CA and the address dialled (`serving_certificate`).
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl

from ansible.module_utils.kubeharden_pki import parse_request, pem_der

SIGNER = "kubernetes.io/kubelet-serving"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
# The usages a serving certificate may carry (the kubelet asks for key encipherment with an RSA key only).
SERVING_USAGES = {"digital signature", "key encipherment", "server auth"}
# Preference of the address the API server dials (kubeadm's --kubelet-preferred-address-types).
ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname")


def node_name(username: str) -> str | None:
    """The node a request's user is, `system:node:NAME` -> NAME; None for any other user."""
    if username.startswith(NODE_USER_PREFIX) and len(username) > len(NODE_USER_PREFIX):
        return username[len(NODE_USER_PREFIX):]
    return None


def is_pending(csr: dict) -> bool:
    conditions = {c.get("type") for c in (csr.get("status") or {}).get("conditions") or []}
    return not conditions & {"Approved", "Denied", "Failed"}


def _identities(name: str, allowed: list[str]) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) the inventory gives a node; the node name is always one of its names."""
    names, addresses = {name.lower()}, set()
    for item in allowed:
        try:
            addresses.add(str(ipaddress.ip_address(str(item))))
        except ValueError:
            names.add(str(item).lower().rstrip("."))
    return names, addresses


def verdict(csr: dict, allowed: dict[str, list[str]]) -> str | None:
    """None when kubeharden may approve this request, else why not (left pending, and reported).

    `allowed` maps each inventory node's name to its names and addresses. Approved only: a kubelet-serving
    request from the node's own credentials (`system:node:NAME` in `system:nodes`), for an inventory node, with
    serving usages only, whose subject is exactly that node and whose SANs are only that node's names and
    addresses, asking for no extension but them."""
    spec = csr.get("spec") or {}
    if spec.get("signerName") != SIGNER:
        return f"signer {spec.get('signerName')!r} is not {SIGNER}"
    username = spec.get("username", "")
    name = node_name(username)
    if name is None:
        return f"requested by {username!r}, not by a node's own credentials"
    if NODES_GROUP not in (spec.get("groups") or []):
        return f"requester {username!r} is not in the {NODES_GROUP} group"
    if name not in allowed:
        return f"node {name!r} is not in the inventory"
    usages = set(spec.get("usages") or [])
    if "server auth" not in usages or usages - SERVING_USAGES:
        return f"usages {sorted(usages)} are not a serving certificate's"
    try:
        request = parse_request(pem_der(base64.b64decode(spec.get("request", "")).decode("ascii")))
    except (ValueError, UnicodeDecodeError) as exc:
        return f"the request cannot be read: {exc}"
    if sorted(request.subject) != sorted([("O", NODES_GROUP), ("CN", username)]):
        subject = ", ".join(f"{k}={v}" for k, v in request.subject)
        return f"subject {subject!r} is not O={NODES_GROUP}, CN={username}"
    extra = [e for e in request.extensions if e != "subjectAltName"]
    if extra or request.is_ca:
        return f"asks for extensions beyond the subject alternative names: {extra}"
    if not request.sans:
        return "names no subject alternative name"
    names, addresses = _identities(name, allowed[name])
    for san in request.sans:
        kind, value = san.split(":", 1)
        if kind == "DNS" and value.lower().rstrip(".") in names:
            continue
        if kind == "IP" and value in addresses:
            continue
        return f"SAN {san} is not one of {name}'s names or addresses {sorted(names | addresses)}"
    return None


def node_address(node: dict) -> str | None:
    """The address the API server dials for a Node object, by kubeadm's preference."""
    addresses = (node.get("status") or {}).get("addresses") or []
    for kind in ADDRESS_TYPES:
        for address in addresses:
            if address.get("type") == kind and address.get("address"):
                return address["address"]
    return None


def serving_certificate(address: str, port: int, ca_file: str, timeout: float = 5.0) -> tuple[bool, str]:
    """(verified, detail): whether the kubelet at `address` serves a certificate that the cluster CA verifies
    for that address, as the API server checks it with --kubelet-certificate-authority."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    host = address[1:-1] if address.startswith("[") else address
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            subject = dict(pair for rdn in tls.getpeercert().get("subject", ()) for pair in rdn)
    except ssl.SSLCertVerificationError as exc:
        return False, f"{host}:{port}: {exc.verify_message or exc}"
    except (OSError, ssl.SSLError) as exc:
        return False, f"{host}:{port}: {exc}"
    return True, f"{host}:{port}: {subject.get('commonName', '?')}, verified by {ca_file}"
