#!/usr/bin/python
"""Create, distribute and rotate the kube-apiserver's EncryptionConfiguration without ever showing a key."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeharden_encryption_config
short_description: Manage the EncryptionConfiguration for secrets at rest
description:
  - C(state=present) with C(content) writes exactly that configuration (how one node's file is copied to the
    others, byte for byte); without C(content) it creates a configuration when the file does not exist, with a
    key from the node's CSPRNG (or C(key)). An existing configuration is kept, never regenerated; changing the
    provider of an existing one fails (that is a key rotation).
  - C(state=add_key) adds a new key second (readable, not yet used for writes); C(state=promote) makes
    C(key_name) the key that encrypts writes; C(state=remove_key) removes C(key_name), never the writing key.
  - Validates everything before writing (provider, base64, key length, KMS endpoint is a unix socket) and writes
    atomically, mode 0600, owned by root, after a backup under C(backup_dir) (mode 0700).
  - Secrets never appear in results or diffs (the diff shows key names and digests), and C(content) and C(key)
    are no_log.
version_added: "0.1.0"
options:
  path:
    description: The EncryptionConfiguration file.
    type: path
    default: /etc/kubernetes/enc/encryption-config.yaml
  state:
    description: What to do.
    type: str
    choices: [present, add_key, promote, remove_key]
    default: present
  provider:
    description: Provider of a new configuration or a new key.
    type: str
    choices: [secretbox, aescbc, aesgcm, kms]
    default: secretbox
  resources:
    description: Resources encrypted (a new configuration; an existing one gets this list too).
    type: list
    elements: str
    default: [secrets]
  key:
    description: Base64 key to use instead of a generated one.
    type: str
  content:
    description: A whole configuration to write as it is (validated first).
    type: str
  key_name:
    description: provider:name of the key to promote or remove (as returned in C(keys)); with add_key, the
      new key's name (without provider), which makes adding it again a no-op.
    type: str
  kms:
    description: KMS v2 plugin settings (C(name), C(endpoint) unix:///..., C(timeout)).
    type: dict
extends_documentation_fragment:
  - kubeharden_backup.backup_dir
author:
  - kubeharden project (@kubeharden)
"""

EXAMPLES = r"""
- name: Encrypt secrets with secretbox (a key is generated on the node when no configuration exists)
  kubeharden_encryption_config:
    provider: secretbox
"""

RETURN = r"""
keys:
  description: provider:name of every key, in the order the apiserver tries them (no secret).
  returned: always
  type: list
write_key:
  description: provider:name of the key that encrypts new writes.
  returned: always
  type: str
sha256:
  description: SHA-256 of the file's content (equal on every control-plane node when they agree).
  returned: always
  type: str
added_key:
  description: provider:name of the key added by state=add_key.
  returned: when state is add_key
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kubeharden_encryption import (
    EncryptionConfigError,
    add_key,
    digest,
    initial,
    key_names,
    promote,
    redacted,
    remove_key,
    validate,
    write_provider,
)
from ansible.module_utils.kubeharden_files import BACKUP_DIR_OPTION, atomic_write, backup, read_or_empty

try:
    import yaml
except ImportError:
    yaml = None


def render(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/kubernetes/enc/encryption-config.yaml"},
            "state": {"type": "str", "choices": ["present", "add_key", "promote", "remove_key"],
                      "default": "present"},
            "provider": {"type": "str", "choices": ["secretbox", "aescbc", "aesgcm", "kms"], "default": "secretbox"},
            "resources": {"type": "list", "elements": "str", "default": ["secrets"]},
            "key": {"type": "str", "no_log": True},
            "content": {"type": "str", "no_log": True},
            "key_name": {"type": "str"},
            "kms": {"type": "dict"},
            **BACKUP_DIR_OPTION,
        },
        required_if=[("state", "promote", ["key_name"]), ("state", "remove_key", ["key_name"])],
        supports_check_mode=True,
    )
    p = module.params
    if yaml is None:
        module.fail_json(msg="PyYAML is missing on the node (Debian/Ubuntu: apt-get install python3-yaml)")
    before_text = read_or_empty(p["path"])
    try:
        before = yaml.safe_load(before_text) if before_text else None
        if before is not None:
            validate(before)
    except (yaml.YAMLError, EncryptionConfigError) as exc:
        if p["state"] != "present" or p["content"] is None:
            module.fail_json(msg=f"{p['path']} is not a valid EncryptionConfiguration ({exc}); left untouched. "
                                 "Fix or remove it by hand: the apiserver may need its keys to read secrets.")
        before = None
    result = {"changed": False}
    try:
        if p["state"] == "present" and p["content"] is not None:
            after = yaml.safe_load(p["content"])
            validate(after)
            after_text = p["content"]
        elif p["state"] == "present":
            if before is None:
                after = initial(p["provider"], p["resources"], key=p["key"], kms=p["kms"])
            else:
                writing = write_provider(before).split(":")[0]
                if writing != p["provider"]:
                    module.fail_json(msg=f"{p['path']} encrypts with {writing}, not {p['provider']}: changing the "
                                         "provider is a key rotation (playbooks/rotate-encryption-key.yml); "
                                         "left untouched")
                after = before if all(block["resources"] == p["resources"] for block in before["resources"]) \
                    else {**before, "resources": [{**block, "resources": list(p["resources"])}
                                                  for block in before["resources"]]}
            after_text = before_text if after == before else render(after)
        else:
            if before is None:
                module.fail_json(msg=f"{p['path']} does not exist: nothing to rotate")
            if p["state"] == "add_key":
                after, result["added_key"] = add_key(before, p["provider"], key=p["key"], kms=p["kms"],
                                                     name=p["key_name"])
            elif p["state"] == "promote":
                after = before if write_provider(before) == p["key_name"] else promote(before, p["key_name"])
            elif p["key_name"] not in key_names(before):
                after = before  # already removed: a resumed rotation
            else:
                after = remove_key(before, p["key_name"])
            after_text = before_text if after == before else render(after)
    except EncryptionConfigError as exc:
        module.fail_json(msg=f"{exc}; nothing written")
    except yaml.YAMLError as exc:
        module.fail_json(msg=f"content is not YAML ({exc}); nothing written")

    info = os.stat(p["path"]) if os.path.exists(p["path"]) else None
    wrong_mode = info is not None and ((info.st_mode & 0o777) != 0o600 or info.st_uid != 0)
    result.update(changed=after_text != before_text or wrong_mode, keys=key_names(after),
                  write_key=write_provider(after), sha256=digest(after_text))
    if after_text != before_text:
        result["diff"] = {"before": render(redacted(before)) if before else "", "after": render(redacted(after)),
                          "before_header": p["path"], "after_header": p["path"]}
    if result["changed"] and not module.check_mode:
        os.makedirs(os.path.dirname(p["path"]), mode=0o700, exist_ok=True)
        if before_text:
            os.makedirs(p["backup_dir"], mode=0o700, exist_ok=True)
            os.chmod(p["backup_dir"], 0o700)
            backup(p["path"], p["backup_dir"])
        atomic_write(p["path"], after_text, mode=0o600)
        os.chown(p["path"], 0, 0)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
