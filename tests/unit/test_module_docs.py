"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse, as `ansible-doc` renders them for users."""

from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import ROOT

MODULES = sorted(p.stem for p in (ROOT / "modules").glob("kubeharden_*.py"))


def test_every_module_documents_its_options_and_return_values():
    done = subprocess.run(["ansible-doc", "--json", *MODULES], capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_LIBRARY": str(ROOT / "modules"),
                               "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"),
                               "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)
    assert sorted(docs) == MODULES
    for name, doc in docs.items():
        assert doc["doc"].get("short_description"), name
        assert doc["examples"] and doc["return"], name


def test_backup_options_are_documented_once_in_the_shared_fragment():
    """Modules take the backup options from module_utils/kubeharden_files.py and document them through
    doc_fragments/kubeharden_backup.py: ansible-doc shows them, no module spells them again."""
    done = subprocess.run(["ansible-doc", "--json", *MODULES], capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    docs = json.loads(done.stdout)
    for name in MODULES:
        source = (ROOT / "modules" / f"{name}.py").read_text()
        documentation = source.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0]
        assert "backup_dir:" not in documentation and '"backup_dir": {' not in source, name
        options = docs[name]["doc"]["options"]
        if "**BACKUP_OPTIONS" in source:
            assert options["backup"]["default"] is True and "backup_dir" in options, name
        if "**BACKUP_DIR_OPTION" in source:
            assert options["backup_dir"]["default"] == "/var/backups/kubeharden" and "backup" not in options, name
