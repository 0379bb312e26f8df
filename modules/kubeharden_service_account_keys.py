#!/usr/bin/python
"""The service-account key pair of a control-plane node, moved through a rotation with overlap."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_service_account_keys
short_description: Rotate the service-account signing key with an overlap, one step at a time
description:
  - kubeadm's apiserver verifies service-account tokens with every public key in C(sa.pub)
    (C(--service-account-key-file)) and signs with C(sa.key) (C(--service-account-signing-key-file)); the
    controller-manager signs legacy tokens with C(sa.key) too. This module moves a node through a rotation that
    never leaves a valid token unverifiable, keeping those file names so the manifests stay as kubeadm wrote them.
  - C(stage) writes the next private key to C(sa-next.key) (generated, or O(next_key) copied from the first node).
    C(publish) makes C(sa.pub) hold the current and the next public key. C(switch) makes the next key the signing
    key (C(sa.key)); C(sa.pub) still holds both. C(retire) leaves only the signing key's public key in C(sa.pub).
    C(status) changes nothing.
  - Each step is idempotent and refuses to run out of order, naming what is missing. Replaced files are backed
    up under O(backup_dir) and written atomically. Private keys never appear in results or diffs.
version_added: "0.1.0"
options:
  step:
    description: The rotation step to ensure.
    type: str
    default: status
    choices: [status, stage, publish, switch, retire]
  next_key:
    description: The next private key (PEM), copied from the node that generated it. Generated when omitted.
    type: str
  key_type:
    description: Type of a generated key.
    type: str
    default: rsa-2048
    choices: [rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384]
  pki_dir:
    description: Directory holding sa.key and sa.pub.
    type: path
    default: /etc/kubernetes/pki
extends_documentation_fragment:
  - kubeharden_backup.backup_dir
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Publish the next public key beside the current one
  kubeharden_service_account_keys:
    step: publish
"""

RETURN = r"""
signing:
  description: SHA-256 prefix of the signing key's public key (sa.key).
  returned: always
  type: str
published:
  description: SHA-256 prefixes of the public keys in sa.pub, in file order.
  returned: always
  type: list
  elements: str
next:
  description: SHA-256 prefix of the staged next key's public key, or null.
  returned: always
  type: str
sa_pub_sha256:
  description: Digest of sa.pub after the step (a restart annotation for the apiserver).
  returned: always
  type: str
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_files import (
    BACKUP_DIR_OPTION,
    atomic_write,
    backup,
    read_or_empty,
)
from ansible.module_utils.kubeharden_pki import PKIError, generate_key, pem_blocks, pem_der, public_key_der


def fingerprint(der: bytes | None) -> str | None:
    return hashlib.sha256(der).hexdigest()[:16] if der else None


def public_pem(der: bytes) -> str:
    import base64
    import textwrap

    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64)) \
        + "\n-----END PUBLIC KEY-----\n"


def private_public(path: str, text: str) -> bytes:
    der = public_key_der(text)
    if der is None:
        raise PKIError(f"{path} is not a private key openssl can read")
    return der


def read_state(key_path: str, pub_path: str, next_path: str) -> tuple[bytes, list[bytes], bytes | None, str, str]:
    """The signing key's public half, the published public keys, the staged key's public half, and the texts of
    sa.pub and sa-next.key, as they are on disk now."""
    key_text, pub_text, next_text = read_or_empty(key_path), read_or_empty(pub_path), read_or_empty(next_path)
    signing = private_public(key_path, key_text)
    published = [pem_der(block) for label, block in pem_blocks(pub_text) if label == "PUBLIC KEY"]
    if pub_text.strip() and not published:
        raise PKIError(f"{pub_path} holds no PEM public key: fix or restore it before rotating")
    next_der = private_public(next_path, next_text) if next_text else None
    return signing, published, next_der, pub_text, next_text


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "default": "status", "choices": ["status", "stage", "publish", "switch", "retire"]},
            "next_key": {"type": "str", "no_log": True},
            "key_type": {"type": "str", "default": "rsa-2048",
                         "choices": ["rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384"]},
            "pki_dir": {"type": "path", "default": "/etc/kubernetes/pki"},
            **BACKUP_DIR_OPTION,
        },
        supports_check_mode=True,
    )
    p = module.params
    key_path, pub_path, next_path = (os.path.join(p["pki_dir"], n) for n in ("sa.key", "sa.pub", "sa-next.key"))
    try:
        if not os.path.exists(key_path):
            raise PKIError(f"{key_path} does not exist: this is not a kubeadm control-plane node")
        signing, published, next_der, pub_text, next_text = read_state(key_path, pub_path, next_path)
        writes: list[tuple[str, str, int | None]] = []  # path, content, mode (None keeps it)
        removes: list[str] = []
        step = p["step"]
        if step == "stage":
            if p["next_key"] is not None:
                wanted = private_public("next_key", p["next_key"])
                if wanted == signing:
                    raise PKIError("next_key is the current signing key: a rotation needs a new key")
                if wanted != next_der:
                    writes.append((next_path, p["next_key"], 0o600))
            elif next_der is None and not module.check_mode:
                writes.append((next_path, generate_key(p["key_type"], traditional=False), 0o600))
            elif next_der is None:
                writes.append((next_path, "", 0o600))
        elif step == "publish":
            if next_der is None:
                raise PKIError(f"publish needs the next key ({next_path}): run the stage step first")
            wanted_pub = [signing, next_der]
            if published != wanted_pub:
                writes.append((pub_path, "".join(public_pem(d) for d in wanted_pub), None))
        elif step == "switch":
            if next_der is not None:
                if next_der not in published:
                    raise PKIError(f"switch needs the next key published in {pub_path}: run the publish step first")
                writes.append((key_path, next_text, 0o600))
                removes.append(next_path)
            elif len(published) < 2:
                raise PKIError(f"nothing to switch to: no {next_path} and a single key in {pub_path}")
        elif step == "retire":
            if next_der is not None:
                raise PKIError(f"{next_path} is staged but not signing yet: run the switch step before retiring")
            if published != [signing]:
                writes.append((pub_path, public_pem(signing), None))
        result = {"changed": bool(writes or removes)}
        if result["changed"]:
            result["diff"] = {"before": "".join(f"{w[0]}: replaced\n" for w in writes) + "".join(
                f"{r}: present\n" for r in removes),
                "after": "".join(f"{w[0]}: {step}\n" for w in writes) + "".join(f"{r}: removed\n" for r in removes)}
        if result["changed"] and not module.check_mode:
            for path, content, mode in writes:
                if os.path.exists(path):
                    backup(path, p["backup_dir"])
                atomic_write(path, content, mode=mode)
            for path in removes:
                backup(path, p["backup_dir"])
                os.unlink(path)
            signing, published, next_der, pub_text, next_text = read_state(key_path, pub_path, next_path)
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result, signing=fingerprint(signing), published=[fingerprint(d) for d in published],
                     next=fingerprint(next_der), sa_pub_sha256=hashlib.sha256(pub_text.encode()).hexdigest()[:16])


if __name__ == "__main__":
    main()
