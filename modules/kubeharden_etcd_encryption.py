#!/usr/bin/python
"""Report how every value under /registry/secrets/ (and other prefixes) is stored in etcd: plaintext, or
which provider and key encrypted it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_etcd_encryption
short_description: Read raw values from etcd over TLS and report which key encrypted each
description:
  - Reads every key under C(prefixes) from etcd's v3 API (its JSON gateway, over HTTPS with a client
    certificate), page by page, and classifies each value by its prefix C(k8s:enc:<provider>:v1:<key>:); any
    other value is plaintext. Needs no etcdctl on the node.
  - Values are never returned, only key paths and their classification.
  - With C(forbid), fails when any value is plaintext or encrypted by one of the listed provider:key names (the
    rotation's safety check before an old key is removed).
version_added: "0.1.0"
options:
  endpoint:
    description: An etcd client URL.
    type: str
    default: https://127.0.0.1:2379
  cacert:
    description: CA that signed etcd's server certificate.
    type: path
    default: /etc/kubernetes/pki/etcd/ca.crt
  cert:
    description: Client certificate etcd accepts.
    type: path
    default: /etc/kubernetes/pki/etcd/healthcheck-client.crt
  key:
    description: Its private key.
    type: path
    default: /etc/kubernetes/pki/etcd/healthcheck-client.key
  prefixes:
    description: Key prefixes to read.
    type: list
    elements: str
    default: [/registry/secrets/]
  forbid:
    description: Classifications that must not occur (C(plaintext) or provider:key), else the task fails.
    type: list
    elements: str
    default: []
  page_size:
    description: Keys read per request.
    type: int
    default: 500
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Refuse to go on while a secret is still encrypted with key1
  kubeharden_etcd_encryption:
    forbid: [secretbox:key1]
"""

RETURN = r"""
counts:
  description: Number of values per classification (plaintext, provider:key).
  returned: always
  type: dict
keys:
  description: Each etcd key read, with its classification.
  returned: always
  type: dict
forbidden:
  description: Keys whose classification is in forbid.
  returned: always
  type: list
"""

import ssl
import urllib.error

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_encryption import classify, etcd_range


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "endpoint": {"type": "str", "default": "https://127.0.0.1:2379"},
            "cacert": {"type": "path", "default": "/etc/kubernetes/pki/etcd/ca.crt"},
            "cert": {"type": "path", "default": "/etc/kubernetes/pki/etcd/healthcheck-client.crt"},
            "key": {"type": "path", "default": "/etc/kubernetes/pki/etcd/healthcheck-client.key", "no_log": False},
            "prefixes": {"type": "list", "elements": "str", "default": ["/registry/secrets/"]},
            "forbid": {"type": "list", "elements": "str", "default": []},
            "page_size": {"type": "int", "default": 500},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not p["endpoint"].startswith("https://"):
        module.fail_json(msg=f"endpoint {p['endpoint']} must be https://: secrets are read over TLS only")
    if not all(prefix.startswith("/") for prefix in p["prefixes"]) or p["page_size"] < 1:
        module.fail_json(msg="prefixes must start with / and page_size must be positive")
    try:
        context = ssl.create_default_context(cafile=p["cacert"])
        context.load_cert_chain(p["cert"], p["key"])
    except (OSError, ssl.SSLError) as exc:
        module.fail_json(msg=f"cannot load the etcd client credentials ({p['cert']}, {p['cacert']}): {exc}")
    keys: dict[str, str] = {}
    try:
        for prefix in p["prefixes"]:
            tls = {"ca_path": p["cacert"], "client_cert": p["cert"], "client_key": p["key"]}
            for key, value in etcd_range(p["endpoint"], tls, prefix, p["page_size"]):
                keys[key.decode(errors="replace")] = classify(value)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        module.fail_json(msg=f"cannot read {p['endpoint']}: {exc}")
    counts: dict[str, int] = {}
    for kind in keys.values():
        counts[kind] = counts.get(kind, 0) + 1
    forbidden = sorted(key for key, kind in keys.items() if kind in p["forbid"])
    result = {"changed": False, "counts": counts, "keys": keys, "forbidden": forbidden}
    if forbidden:
        module.fail_json(msg=f"{len(forbidden)} values in etcd are {', '.join(sorted({keys[k] for k in forbidden}))}"
                             f" (first: {', '.join(forbidden[:5])})", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
