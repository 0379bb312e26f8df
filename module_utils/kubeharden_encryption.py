"""EncryptionConfiguration logic for secrets at rest: validate, generate, rotate; classify etcd values.

Keys are bytes from the operating system's CSPRNG (os.urandom), base64-encoded as the kube-apiserver
expects. Nothing here logs or returns a secret: callers get key names and digests only.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
import re

from ansible.module_utils.urls import open_url

API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
KEYED_PROVIDERS = {"secretbox": (32,), "aescbc": (16, 24, 32), "aesgcm": (16, 24, 32)}
PROVIDERS = set(KEYED_PROVIDERS) | {"kms"}
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_KEY_BYTES = {"secretbox": 32, "aescbc": 32, "aesgcm": 32}


class EncryptionConfigError(ValueError):
    """The configuration or a requested change is invalid; nothing should be written."""


def new_key(provider: str) -> str:
    return base64.b64encode(os.urandom(DEFAULT_KEY_BYTES[provider])).decode()


def check_key(provider: str, secret: str, where: str) -> None:
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise EncryptionConfigError(f"{where}: the key is not valid base64") from None
    if len(raw) not in KEYED_PROVIDERS[provider]:
        sizes = " or ".join(str(size) for size in KEYED_PROVIDERS[provider])
        raise EncryptionConfigError(f"{where}: a {provider} key must be {sizes} bytes, this one is {len(raw)}")


def check_kms(kms: dict, where: str) -> None:
    if not isinstance(kms, dict) or not kms.get("name"):
        raise EncryptionConfigError(f"{where}: a kms provider needs a name")
    endpoint = str(kms.get("endpoint", ""))
    if not endpoint.startswith("unix:///"):
        raise EncryptionConfigError(f"{where}: the KMS endpoint must be a unix socket (unix:///path), "
                                    f"not {endpoint or 'empty'}")
    if str(kms.get("apiVersion", "v2")) not in ("v1", "v2"):
        raise EncryptionConfigError(f"{where}: kms apiVersion must be v2 (or the deprecated v1)")


def validate(config) -> None:
    """Raise EncryptionConfigError unless `config` is an EncryptionConfiguration the apiserver accepts."""
    if not isinstance(config, dict) or config.get("kind") != KIND or config.get("apiVersion") != API_VERSION:
        raise EncryptionConfigError(f"not an {KIND} ({API_VERSION})")
    blocks = config.get("resources")
    if not isinstance(blocks, list) or not blocks:
        raise EncryptionConfigError("resources: at least one entry is needed")
    for index, block in enumerate(blocks):
        where = f"resources[{index}]"
        if not isinstance(block, dict) or not block.get("resources") or not block.get("providers"):
            raise EncryptionConfigError(f"{where}: needs resources and providers")
        names = set()
        for position, provider in enumerate(block["providers"]):
            if not isinstance(provider, dict) or len(provider) != 1:
                raise EncryptionConfigError(f"{where}.providers[{position}]: one provider per entry")
            kind, body = next(iter(provider.items()))
            if kind == "identity":
                continue
            if kind == "kms":
                check_kms(body, f"{where}.providers[{position}]")
                continue
            if kind not in KEYED_PROVIDERS:
                raise EncryptionConfigError(f"{where}.providers[{position}]: unknown provider {kind!r} "
                                            f"(secretbox, aescbc, aesgcm, kms, identity)")
            keys = (body or {}).get("keys") or []
            if not keys:
                raise EncryptionConfigError(f"{where}.providers[{position}]: {kind} needs keys")
            for key in keys:
                name = key.get("name", "") if isinstance(key, dict) else ""
                if not KEY_NAME.match(str(name)):
                    raise EncryptionConfigError(f"{where}.providers[{position}]: invalid key name {name!r}")
                if name in names:
                    raise EncryptionConfigError(f"{where}: key name {name} is used twice")
                names.add(name)
                check_key(kind, key.get("secret", ""), f"{where}.providers[{position}] key {name}")


def initial(provider: str, resources: list[str], key: str | None = None, kms: dict | None = None,
            key_name: str = "key1") -> dict:
    """A new configuration: `provider` writes, identity still reads what was stored before encryption."""
    if provider not in PROVIDERS:
        raise EncryptionConfigError(f"unknown provider {provider!r}: choose secretbox, aescbc, aesgcm or kms")
    if provider == "kms":
        check_kms(kms or {}, "kms")
        first = {"kms": {"apiVersion": "v2", **(kms or {})}}
    else:
        secret = key or new_key(provider)
        check_key(provider, secret, "key")
        first = {provider: {"keys": [{"name": key_name, "secret": secret}]}}
    config = {"apiVersion": API_VERSION, "kind": KIND,
              "resources": [{"resources": list(resources), "providers": [first, {"identity": {}}]}]}
    validate(config)
    return config


def key_names(config: dict) -> list[str]:
    """Names of the keys (and KMS plugins) in the order the apiserver tries them, for the first block."""
    names = []
    for provider in config["resources"][0]["providers"]:
        kind, body = next(iter(provider.items()))
        if kind == "kms":
            names.append(f"kms:{body['name']}")
        elif kind != "identity":
            names.extend(f"{kind}:{key['name']}" for key in body["keys"])
    return names


def write_provider(config: dict) -> str:
    """The provider:key that encrypts new writes (the first one), or identity."""
    names = key_names(config)
    first = next(iter(config["resources"][0]["providers"][0]))
    return names[0] if names and first != "identity" else "identity"


def _next_key_name(config: dict) -> str:
    numbers = [int(match.group(1)) for name in key_names(config) for match in [re.search(r":key(\d+)$", name)]
               if match]
    return f"key{max(numbers, default=0) + 1}"


def add_key(config: dict, provider: str, key: str | None = None, kms: dict | None = None,
            name: str | None = None) -> tuple[dict, str]:
    """Add a new key second in every block: the apiserver can read with it before any write uses it.
    A `name` already present means the key was added before (a resumed rotation): nothing changes."""
    if name and f"{provider}:{name}" in key_names(config):
        return config, f"{provider}:{name}"
    if name and not KEY_NAME.match(name):
        raise EncryptionConfigError(f"invalid key name {name!r}")
    config = copy.deepcopy(config)
    name = name or _next_key_name(config)
    for block in config["resources"]:
        providers = block["providers"]
        kind = next(iter(providers[0]))
        if provider == "kms":
            check_kms(kms or {}, "kms")
            providers.insert(1, {"kms": {"apiVersion": "v2", **(kms or {})}})
        elif kind == provider:
            secret = key or new_key(provider)
            check_key(provider, secret, "key")
            providers[0][provider]["keys"].insert(1, {"name": name, "secret": secret})
            key = secret  # the same key in every block
        else:
            secret = key or new_key(provider)
            check_key(provider, secret, "key")
            providers.insert(1, {provider: {"keys": [{"name": name, "secret": secret}]}})
            key = secret
    validate(config)
    return config, (f"kms:{kms['name']}" if provider == "kms" else f"{provider}:{name}")


def promote(config: dict, name: str) -> dict:
    """Make provider:key `name` the one that encrypts new writes."""
    config = copy.deepcopy(config)
    kind, _sep, key_name = name.partition(":")
    for block in config["resources"]:
        providers = block["providers"]
        for index, provider in enumerate(providers):
            this_kind, body = next(iter(provider.items()))
            if this_kind != kind:
                continue
            if kind == "kms" and body["name"] == key_name:
                providers.insert(0, providers.pop(index))
                break
            keys = (body or {}).get("keys") or []
            found = [position for position, key in enumerate(keys) if key["name"] == key_name]
            if found:
                keys.insert(0, keys.pop(found[0]))
                providers.insert(0, providers.pop(index))
                break
        else:
            raise EncryptionConfigError(f"no key {name} to promote")
    validate(config)
    return config


def remove_key(config: dict, name: str) -> dict:
    """Remove provider:key `name`; never the key that encrypts new writes."""
    if write_provider(config) == name:
        raise EncryptionConfigError(f"{name} encrypts new writes: promote another key before removing it")
    config = copy.deepcopy(config)
    kind, _sep, key_name = name.partition(":")
    removed = False
    for block in config["resources"]:
        kept = []
        for provider in block["providers"]:
            this_kind, body = next(iter(provider.items()))
            if this_kind == kind == "kms" and body["name"] == key_name:
                removed = True
                continue
            if this_kind == kind and kind in KEYED_PROVIDERS:
                keys = [key for key in body["keys"] if key["name"] != key_name]
                removed = removed or len(keys) != len(body["keys"])
                if not keys:
                    continue
                provider = {kind: {**body, "keys": keys}}
            kept.append(provider)
        block["providers"] = kept
    if not removed:
        raise EncryptionConfigError(f"no key {name} to remove")
    validate(config)
    return config


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def redacted(config: dict) -> dict:
    """The configuration with every secret replaced by the first 12 hex digits of its SHA-256 (for diffs)."""
    shown = copy.deepcopy(config)
    for block in shown.get("resources") or []:
        for provider in block.get("providers") or []:
            for body in provider.values():
                for key in (body or {}).get("keys") or [] if isinstance(body, dict) else []:
                    key["secret"] = f"<redacted sha256:{digest(str(key.get('secret')))[:12]}>"
    return shown


# -- values stored in etcd -----------------------------------------------------------------------------------

ENCRYPTED = re.compile(rb"^k8s:enc:(?P<provider>[a-z0-9]+):(?P<version>v[0-9]+):(?P<name>[^:]+):")


def classify(value: bytes) -> str:
    """`plaintext`, or provider:keyname for a value written through an encryption provider."""
    match = ENCRYPTED.match(value)
    if not match:
        return "plaintext"
    return f"{match.group('provider').decode()}:{match.group('name').decode(errors='replace')}"


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (etcd's range_end for a prefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def etcd_range(endpoint: str, tls: dict[str, str], prefix: str, page: int):
    """(key, value) pairs under `prefix`, page by page, from etcd's v3 JSON gateway over TLS; `tls` holds the
    paths of the CA (ca_path) and of the client's certificate and key (client_cert, client_key)."""
    start, end = prefix.encode(), prefix_end(prefix.encode())
    while True:
        body = json.dumps({"key": base64.b64encode(start).decode(), "range_end": base64.b64encode(end).decode(),
                           "limit": page}).encode()
        with open_url(f"{endpoint.rstrip('/')}/v3/kv/range", data=body, method="POST", timeout=30,
                      headers={"Content-Type": "application/json"}, use_proxy=False, **tls) as response:
            answer = json.load(response)
        kvs = answer.get("kvs") or []
        for kv in kvs:
            yield base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", ""))
        if not answer.get("more") or not kvs:
            return
        start = base64.b64decode(kvs[-1]["key"]) + b"\0"
