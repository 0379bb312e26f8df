#!/usr/bin/python
"""Inventory every certificate of a Kubernetes node and renew the leaves that are due, from the node's own CA."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_pki
short_description: Inventory a node's certificates and renew leaf certificates before they expire
description:
  - Reads the kubeadm PKI (C(pki_dir) and its C(etcd/) directory), etcd's own copies
    (C(/etc/kubernetes/etcd-pki)), a host etcd's C(/etc/etcd/pki), client certificates embedded in the
    kubeconfigs of C(kubeconfig_dir) and the kubelet's C(pki) directory. For each certificate it returns
    subject, issuer, SANs, validity and days left, key type and size, signature algorithm, usages, whether the
    chain verifies against its CA on the node, whether the private key matches, and file modes and owners.
  - With O(renew=true), leaf certificates with fewer than O(renew_before_days) days left, or with a key or
    signature that KH-PKI-2/KH-PKI-3 reject, are renewed. With kubeadm installed (O(renew_with=auto)), through
    C(kubeadm certs renew); otherwise re-issued from the node's CA with openssl, keeping subject, SANs, key
    usages and key type, with a new key unless O(new_key=false). Replaced files are backed up under
    O(backup_dir); files are replaced atomically, key first. etcd's copies in C(/etc/kubernetes/etcd-pki)
    follow their renewed source.
  - A CA is never renewed. The kubelet's own certificates (C(/var/lib/kubelet/pki)) are reported, never
    renewed, because the kubelet rotates them.
  - Nothing is renewed when any certificate of the kubeadm PKI or a kubeconfig is unreadable or malformed,
    when a due certificate's key does not match it, or when its CA's key is not on the node. The module then
    fails naming the file, before any change.
  - Key material is never returned; diffs list certificate names and dates.
version_added: "0.1.0"
options:
  renew:
    description: Renew the certificates that are due. False only inventories.
    type: bool
    default: false
  renew_before_days:
    description: Renew a leaf certificate with fewer days than this left.
    type: int
    default: 30
  file_modes:
    description:
      - Make everything under O(pki_dir) owned by root:root, keys at most 0600 and certificates at most 0644
        (CIS 1.1.19-1.1.21). Modes are only tightened.
    type: bool
    default: true
  validity_days:
    description: Validity of a certificate re-issued with openssl (kubeadm issues leaves for 365 days).
    type: int
    default: 365
  new_key:
    description: Generate a new private key for each renewed certificate (false reuses a key that is strong enough).
    type: bool
    default: true
  key_type:
    description:
      - Key type of renewed certificates. C(keep) keeps each certificate's type and size, raised to RSA 2048 or
        P-256 when weaker.
    type: str
    default: keep
    choices: [keep, rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384]
  renew_with:
    description: C(auto) uses kubeadm for the certificates it manages when C(kubeadm) is installed, openssl otherwise.
    type: str
    default: auto
    choices: [auto, kubeadm, openssl]
  pki_dir:
    description: The kubeadm PKI directory.
    type: path
    default: /etc/kubernetes/pki
  kubeconfig_dir:
    description: Directory of the kubeconfigs (C(*.conf)) whose embedded client certificates are inventoried.
    type: path
    default: /etc/kubernetes
  kubelet_pki_dir:
    description: The kubelet's certificate directory (reported only).
    type: path
    default: /var/lib/kubelet/pki
extends_documentation_fragment:
  - kubeharden_backup.backup_dir
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Report every certificate
  kubeharden_pki:
  register: pki

- name: Renew certificates with fewer than 30 days left
  kubeharden_pki:
    renew: true
    renew_before_days: 30
  register: renewal
"""

RETURN = r"""
certificates:
  description: One entry per certificate (after renewal), without key material.
  returned: always
  type: list
  elements: dict
  sample: [{name: /etc/kubernetes/pki/apiserver.crt, days_left: 364, chain: ok, key_matches: true,
            key_type: RSA, key_bits: 2048, signature_algorithm: sha256WithRSAEncryption, mode: "0644"}]
problems:
  description: Certificates that could not be read or parsed, each as its name, a colon and why.
  returned: always
  type: list
  elements: str
due:
  description: Certificates that were (or in check mode would be) renewed, with the reasons.
  returned: always
  type: list
  elements: dict
modes:
  description: Files under pki_dir whose mode or owner was (or would be) fixed, with the old and new mode.
  returned: always
  type: list
  elements: str
renewed:
  description: Certificates renewed, with old and new not-after dates and the backup of each replaced file.
  returned: always
  type: list
  elements: dict
restart:
  description: Static pods or services that read a renewed certificate, each with a digest of what it now reads.
  returned: always
  type: dict
"""

import datetime as dt
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import (
    BACKUP_DIR_OPTION,
    atomic_write,
    backup,
    read_or_empty,
)
from ansible.module_utils.kubeharden_node import load_yaml, run
from ansible.module_utils.kubeharden_pki import (
    ETCD_COPIES_DIR,
    HOST_ETCD_PKI_DIR,
    KEY_TYPES,
    KUBEADM_NAMES,
    READERS,
    Item,
    PKIError,
    ca_key_path,
    collect,
    describe,
    digest,
    find_issuer,
    generate_key,
    kubeconfig_with,
    mode_changes,
    name_text,
    new_key_type,
    parse_certificate,
    pem_der,
    public_key_der,
    reissue,
    renewal_reasons,
    same_identity,
    stem,
    verify_chain,
    weaknesses,
)


def restart_targets(item: Item, pki_dir: str) -> list[str]:
    if item.path.startswith(HOST_ETCD_PKI_DIR + "/"):
        return ["etcd"] if "client" not in os.path.basename(item.path) else []
    return READERS.get(stem(item, pki_dir), [])


def due_items(items: list[Item], params: dict, now: dt.datetime) -> list[tuple[Item, list[str]]]:
    due = []
    for item in items:
        if item.managed_by != "kubeharden" or item.cert is None or item.cert.is_ca:
            continue
        reasons = renewal_reasons(item.cert, params["renew_before_days"], now)
        if reasons:
            due.append((item, reasons))
    return due


def preflight(due: list[tuple[Item, list[str]]], cas: list[Item]) -> dict[str, Item]:
    """Each due certificate's CA, after checking everything a renewal needs; PKIError before any change."""
    issuers = {}
    for item, _reasons in due:
        issuer = find_issuer(item, cas)
        if issuer is None or issuer is item:
            raise PKIError(f"{item.name} is due but its CA ({name_text(item.cert.issuer)}) is not on this node: "
                           "renew it where the CA and its key are")
        ca_key = ca_key_path(issuer)
        if not os.path.exists(ca_key):
            raise PKIError(f"{item.name} is due but the key of its CA {issuer.path} is missing ({ca_key}): "
                           "without the CA key nothing can be re-issued on this node")
        if item.key_pem is None:
            raise PKIError(f"{item.name} is due but its private key is not on this node")
        if public_key_der(item.key_pem) != item.cert.public_key_der:
            raise PKIError(f"{item.name} does not match its private key {item.key_path}: the node's PKI is "
                           "inconsistent, so nothing is renewed")
        issuers[item.name] = issuer
    return issuers


def renew_openssl(module: AnsibleModule, item: Item, issuer: Item, params: dict, now: dt.datetime) -> dict:
    old = item.cert
    if old is None or item.key_pem is None or item.key_path is None:
        raise PKIError(f"{item.path}: its certificate or key could not be read, so it cannot be renewed")
    ca_key = ca_key_path(issuer)
    if params["new_key"] or weaknesses(old.key_type, old.key_bits, old.signature) or params["key_type"] != "keep":
        key_pem = generate_key(new_key_type(old, params["key_type"]), "BEGIN PRIVATE KEY" not in item.key_pem)
    else:
        key_pem = item.key_pem
    cert_pem = reissue(old, key_pem, issuer.path, ca_key, params["validity_days"])
    new = parse_certificate(pem_der(cert_pem))
    differences = same_identity(old, new)
    renewed = Item(name=item.name, path=item.path, cert_pem=cert_pem, cert=new)
    chain = verify_chain(renewed, issuer)
    if differences or chain != "ok" or renewal_reasons(new, params["renew_before_days"], now):
        raise PKIError(f"the renewal of {item.name} came out wrong, nothing written for it: "
                       f"{'; '.join(differences) or chain}")
    backups = []
    if item.kubeconfig_user is not None:
        with open(item.path, encoding="utf-8") as handle:
            text = handle.read()
        updated = kubeconfig_with(text, item.cert_pem, item.key_pem, cert_pem, key_pem)
        backups.append(backup(item.path, params["backup_dir"]))
        atomic_write(item.path, updated)
    else:
        targets = [(item.key_path, key_pem), (item.path, cert_pem)] if item.key_path != item.path \
            else [(item.path, cert_pem + key_pem)]
        for path, content in targets:
            backups.append(backup(path, params["backup_dir"]))
            if path.endswith(".key"):
                atomic_write(path, content, mode=0o600)
            else:
                atomic_write(path, content)
    return {"cert_pem": cert_pem, "backups": backups, "not_after": new.not_after.isoformat()}


def refresh_etcd_copies(item: Item, params: dict) -> list[str]:
    """etcd's own copies (the control_plane role's, for a non-root etcd) take the renewed files' content."""
    if not stem(item, params["pki_dir"]).startswith("etcd/"):
        return []
    backups = []
    for source in (item.key_path, item.path):
        copy = os.path.join(ETCD_COPIES_DIR, os.path.basename(source or ""))
        if source and os.path.exists(copy):
            with open(source, encoding="ascii") as handle:
                content = handle.read()
            if read_or_empty(copy) != content:
                backups.append(backup(copy, params["backup_dir"]))
                atomic_write(copy, content)  # keeps the copy's owner (etcd) and mode
    return backups


def renew_kubeadm(module: AnsibleModule, item: Item, params: dict) -> dict:
    name = KUBEADM_NAMES[stem(item, params["pki_dir"])]
    backups = [backup(path, params["backup_dir"]) for path in dict.fromkeys((item.path, item.key_path)) if path]
    try:
        renewed = run(["kubeadm", "certs", "renew", name], timeout=120)
    except OSError as exc:
        raise PKIError(f"kubeadm certs renew {name} could not run: {exc}") from exc
    if renewed.returncode != 0:
        raise PKIError(f"kubeadm certs renew {name} failed: {renewed.stderr.strip()}")
    return {"backups": backups, "kubeadm": name}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "renew": {"type": "bool", "default": False},
            "file_modes": {"type": "bool", "default": True},
            "renew_before_days": {"type": "int", "default": 30},
            "validity_days": {"type": "int", "default": 365},
            "new_key": {"type": "bool", "default": True},
            "key_type": {"type": "str", "default": "keep", "choices": list(KEY_TYPES)},
            "renew_with": {"type": "str", "default": "auto", "choices": ["auto", "kubeadm", "openssl"]},
            "pki_dir": {"type": "path", "default": "/etc/kubernetes/pki"},
            "kubeconfig_dir": {"type": "path", "default": "/etc/kubernetes"},
            "kubelet_pki_dir": {"type": "path", "default": "/var/lib/kubelet/pki"},
            **BACKUP_DIR_OPTION,
        },
        supports_check_mode=True,
    )
    params = module.params
    if not 0 <= params["renew_before_days"] < params["validity_days"]:
        module.fail_json(msg=f"renew_before_days ({params['renew_before_days']}) must be between 0 and "
                             f"validity_days ({params['validity_days']}): a renewal would be due again at once")
    if shutil.which("openssl") is None:
        module.fail_json(msg="openssl is not installed on this node; kubeharden reads certificates with it")
    now = dt.datetime.now(dt.UTC)
    items = collect(load_yaml, params["pki_dir"], params["kubeconfig_dir"], params["kubelet_pki_dir"])
    cas = [i for i in items if i.cert is not None and i.cert.is_ca]
    problems = [f"{i.name}: {i.error}" for i in items if i.error]
    due = due_items(items, params, now) if params["renew"] else []
    result: dict = {"changed": False, "problems": problems, "renewed": [], "restart": {},
                    "due": [{"name": i.name, "reasons": r, "not_after": i.cert.not_after.isoformat()}
                            for i, r in due if i.cert is not None]}
    kubeadm = params["renew_with"] == "kubeadm" or (params["renew_with"] == "auto" and shutil.which("kubeadm"))
    try:
        if due:
            blocking = [f"{i.name}: {i.error}" for i in items if i.error and i.managed_by == "kubeharden"]
            if blocking:
                raise PKIError("certificates are due, but nothing is renewed while these cannot be read: "
                               + "; ".join(blocking))
            if params["renew_with"] == "kubeadm" and not shutil.which("kubeadm"):
                raise PKIError("renew_with=kubeadm, but kubeadm is not installed on this node")
            issuers = preflight(due, cas)
            result["changed"] = True
            result["diff"] = {"before": "".join(f"{i.name}: not after {i.cert.not_after.isoformat()}\n"
                                                for i, _reasons in due if i.cert is not None),
                              "after": "".join(f"{i.name}: renewed ({', '.join(r)})\n" for i, r in due)}
            for item, reasons in due:
                if module.check_mode:
                    continue
                if kubeadm and stem(item, params["pki_dir"]) in KUBEADM_NAMES:
                    outcome = renew_kubeadm(module, item, params)
                else:
                    outcome = renew_openssl(module, item, issuers[item.name], params, now)
                outcome["backups"] += refresh_etcd_copies(item, params)
                result["renewed"].append({"name": item.name, "reasons": reasons,
                                          "old_not_after": item.cert.not_after.isoformat(),
                                          "not_after": outcome.get("not_after"), "backups": outcome["backups"]})
                for component in restart_targets(item, params["pki_dir"]):
                    result["restart"][component] = digest(result["restart"].get(component, ""),
                                                          outcome.get("cert_pem", item.name + str(now)))
    except PKIError as exc:
        module.fail_json(msg=str(exc), **{k: v for k, v in result.items() if k != "changed"},
                         changed=bool(result["renewed"]))
    modes = mode_changes(params["pki_dir"]) if params["file_modes"] and os.path.isdir(params["pki_dir"]) else []
    result["modes"] = [f"{path}: {old:04o}{' (owner)' if owner else ''} -> {new:04o} root:root"
                       for path, old, new, owner in modes]
    if modes:
        result["changed"] = True
        diff = result.setdefault("diff", {"before": "", "after": ""})
        diff["before"] += "".join(f"{path}: mode {old:04o}\n" for path, old, _new, _owner in modes)
        diff["after"] += "".join(f"{path}: mode {new:04o} root:root\n" for path, _old, new, _owner in modes)
        if not module.check_mode:
            for path, _old, new, owner in modes:
                if owner:
                    os.chown(path, 0, 0)
                os.chmod(path, new)
    if result["renewed"]:
        items = collect(load_yaml, params["pki_dir"], params["kubeconfig_dir"], params["kubelet_pki_dir"])
        cas = [i for i in items if i.cert is not None and i.cert.is_ca]
    result["certificates"] = [describe(item, cas, now) for item in items]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
