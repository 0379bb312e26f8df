"""The Ansible collection kubeharden.hardening, generated from the repository's one copy of every file.

The repository keeps the design card's layout (roles/, playbooks/, modules/, module_utils/, doc_fragments/ at the
top); a collection wants plugins/ and imports module_utils through its own name. `write()` lays the collection
out from the repository and changes only what the layout forces: modules and module_utils import
`ansible_collections.kubeharden.hardening.plugins.module_utils.X` instead of `ansible.module_utils.X`, and module
documentation names the collection's doc fragment and modules by their full names. Everything else is copied.

The wheel carries the generated collection (setup.py), and `kubeharden collection build` makes the tarball that
`ansible-galaxy collection install` takes offline. Standard library only: it runs inside the wheel's build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

NAMESPACE, NAME = "kubeharden", "hardening"
FQCN = f"{NAMESPACE}.{NAME}"
COLLECTION_DIR = Path("ansible_collections") / NAMESPACE / NAME
MODULE_UTILS_PACKAGE = f"ansible_collections.{NAMESPACE}.{NAME}.plugins.module_utils"
# The repository's Ansible content: copied as it is (roles, playbooks) or into plugins/ (Python).
COPIED = ("roles", "playbooks")
PLUGINS = {"modules": "modules", "module_utils": "module_utils", "doc_fragments": "doc_fragments"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
# ansible-core releases the collection supports (pyproject.toml's pin), each with its sanity ignore file.
ANSIBLE_CORE_RELEASES = ("2.17", "2.18", "2.19")
# The only sanity finding kept: kubeharden is Apache-2.0 (pyproject.toml), and validate-modules asks every module
# for a GPLv3 header.
SANITY_IGNORED = ("validate-modules:missing-gplv3-license",)


def ansible_command(name: str) -> str:
    """An Ansible command of the Python environment kubeharden runs in (a venv need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def checkout_root() -> Path | None:
    """The repository this package runs from, when it runs from a checkout (editable install or source tree)."""
    root = Path(__file__).resolve().parent.parent
    if all((root / name).is_dir() for name in (*COPIED, *PLUGINS)) and (root / "pyproject.toml").exists():
        return root
    return None


def version(source: Path) -> str:
    return tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]


def galaxy_yml(source: Path) -> str:
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    return f"""\
# Generated from pyproject.toml by kubeharden/collection.py; edit those, not this.
namespace: {NAMESPACE}
name: {NAME}
version: {project["version"]}
readme: README.md
authors:
  - kubeharden
description: "{project["description"]}"
license:
  - {project["license"]}
tags: [kubernetes, security, hardening, cis, kubeadm]
dependencies: {{}}
build_ignore:
  - "*.tar.gz"
"""


def rewrite_python(text: str) -> str:
    """A module or module_utils file as the collection needs it: its own module_utils by the collection's name,
    the doc fragment and example modules by their full names."""
    text = text.replace("from ansible.module_utils import kubeharden_",
                        f"from {MODULE_UTILS_PACKAGE} import kubeharden_")
    text = text.replace("ansible.module_utils.kubeharden_", f"{MODULE_UTILS_PACKAGE}.kubeharden_")
    text = re.sub(r"^(  - )(kubeharden_(?:backup|kubectl))\b", rf"\1{FQCN}.\2", text, flags=re.MULTILINE)
    return re.sub(r"^(\s*)(kubeharden_\w+):$", rf"\1{FQCN}.\2:", text, flags=re.MULTILINE)  # EXAMPLES tasks


def move_role_filters(collection: Path) -> None:
    """Filters a role carries (roles/X/filter_plugins) are not loaded from a collection's roles: they become the
    collection's own (plugins/filter), and the roles and playbooks name them by their full names."""
    names = []
    (collection / "plugins" / "filter").mkdir(parents=True)
    for plugin_dir in sorted(collection.glob("roles/*/filter_plugins")):
        for path in sorted(plugin_dir.glob("*.py")):
            text = path.read_text()
            names += re.findall(r'"(\w+)":\s*\w+', text.split("def filters", 1)[-1])
            (collection / "plugins" / "filter" / path.name).write_text(text)
        shutil.rmtree(plugin_dir)
    if not names:
        return
    used = re.compile(r"\|\s*(" + "|".join(map(re.escape, names)) + r")\b")
    for pattern in ("roles/**/*.yml", "roles/**/*.j2", "playbooks/**/*.yml"):
        rewrite_filters(collection.glob(pattern), used)


def rewrite_filters(paths, used: re.Pattern) -> None:
    for path in paths:
        text = path.read_text()
        if used.search(text):
            path.write_text(used.sub(lambda m: f"| {FQCN}.{m.group(1)}", text))


def write(source: Path, target: Path) -> Path:
    """Write the collection under `target` (target/ansible_collections/kubeharden/hardening) and return the
    collection's directory. A complete tree replaces the old one. No ansible.cfg goes with it: the user's is used."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".collection-", dir=target))
    try:
        collection = staging / COLLECTION_DIR
        collection.mkdir(parents=True)
        for name in COPIED:
            shutil.copytree(source / name, collection / name, ignore=IGNORED)
        move_role_filters(collection)
        for name, plugin_type in PLUGINS.items():
            destination = collection / "plugins" / plugin_type
            destination.mkdir(parents=True)
            for path in sorted((source / name).glob("*.py")):
                (destination / path.name).write_text(rewrite_python(path.read_text()))
        modules = sorted(p.name for p in (collection / "plugins/modules").glob("*.py"))
        ignores = "".join(f"plugins/modules/{m} {test}\n" for m in modules for test in SANITY_IGNORED)
        (collection / "tests/sanity").mkdir(parents=True)
        for release in ANSIBLE_CORE_RELEASES:
            (collection / f"tests/sanity/ignore-{release}.txt").write_text(ignores)
        (collection / "meta").mkdir()
        (collection / "meta/runtime.yml").write_text('---\nrequires_ansible: ">=2.17.0"\n')
        (collection / "galaxy.yml").write_text(galaxy_yml(source))
        shutil.copy(source / "README.md", collection / "README.md")
        shutil.copy(source / "LICENSE", collection / "LICENSE")
        # The audit and kubeadm's bootstrap check read it there: the collection runs without the kubeharden package.
        (collection / "playbooks/catalogue.json").write_text(json.dumps(catalogue_controls()))
        old = target / "ansible_collections"  # swap in the complete tree
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        os.replace(staging / "ansible_collections", old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / COLLECTION_DIR


def catalogue_controls() -> list[dict]:
    from kubeharden import catalogue  # the catalogue finds the roles' defaults through this module's checkout_root

    return catalogue.load()


def build(output: Path, source: Path | None = None, bundled: Path | None = None) -> Path:
    """The collection tarball (`ansible-galaxy collection build`), for `ansible-galaxy collection install` offline:
    generated from a checkout (`source`), or packed from the collection an installed wheel carries (`bundled`)."""
    with tempfile.TemporaryDirectory(prefix="kubeharden-collection-") as scratch:
        if source is not None:
            collection = write(source, Path(scratch))
        elif bundled is not None and (bundled / COLLECTION_DIR).is_dir():
            collection = bundled / COLLECTION_DIR
        else:
            raise CollectionError("no kubeharden checkout and no installed collection to build from")
        output.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([ansible_command("ansible-galaxy"), "collection", "build", "--force",
                               "--output-path", str(output), str(collection)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise CollectionError(f"ansible-galaxy collection build failed: {(done.stderr or done.stdout).strip()}")
        return output / done.stdout.strip().rsplit(" ", 1)[-1].rsplit("/", 1)[-1]


class CollectionError(RuntimeError):
    """The collection could not be built."""
