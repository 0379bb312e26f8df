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
