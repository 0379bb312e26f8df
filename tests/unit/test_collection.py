"""The Ansible collection kubeharden.hardening, as a user gets it: built, installed offline, documented, sane."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubeharden import catalogue, collection
from tests.conftest import ROOT

MODULES = sorted(p.stem for p in (ROOT / "modules").glob("kubeharden_*.py"))
PIP_BOOTSTRAP_VERSION = "24.2"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The tarball `kubeharden collection build` writes, installed offline; the environment that finds it."""
    scratch = tmp_path_factory.mktemp("collection")
    built = subprocess.run([sys.executable, "-m", "kubeharden.cli", "collection", "build", "--output",
                            str(scratch / "dist")], capture_output=True, text=True, cwd=scratch, check=False)
    assert built.returncode == 0, built.stderr
    tarball = Path(built.stdout.strip())
    assert tarball.name == f"kubeharden-hardening-{collection.version(ROOT)}.tar.gz" and tarball.exists()
    done = subprocess.run([collection.ansible_command("ansible-galaxy"), "collection", "install", "--offline",
                           "-p", str(scratch / "collections"), str(tarball)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # Not the checkout's ansible.cfg (it names the checkout's directories): what a user of the collection has.
    (scratch / "ansible.cfg").write_text("[defaults]\n")
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(scratch / "collections"),
            "ANSIBLE_CONFIG": str(scratch / "ansible.cfg"), "HOME": str(scratch)}


def test_ansible_doc_shows_every_module_with_the_shared_backup_options(installed):
    names = [f"{collection.FQCN}.{m}" for m in MODULES]
    done = subprocess.run(["ansible-doc", "--json", *names], capture_output=True, text=True, env=installed,
                          check=False)
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)
    assert sorted(docs) == names
    assert docs[f"{collection.FQCN}.kubeharden_sysctl"]["doc"]["options"]["backup_dir"]["default"] == \
        "/var/backups/kubeharden"
    assert f"{collection.FQCN}.kubeharden_sysctl:" in docs[f"{collection.FQCN}.kubeharden_sysctl"]["examples"]
    roles = subprocess.run(["ansible-doc", "-t", "role", "--list", "--json"], capture_output=True, text=True,
                           env=installed, check=False)
    assert {f"{collection.FQCN}.{r.name}" for r in (ROOT / "roles").iterdir()} <= set(json.loads(roles.stdout))


def test_a_module_runs_from_the_collection_with_its_module_utils(installed, tmp_path):
    target = tmp_path / "sysctl.conf"
    args = {"settings": {"kernel.kptr_restrict": 2}, "path": str(target), "apply_live": False,
            "backup_dir": str(tmp_path / "backups")}
    done = subprocess.run(["ansible", "localhost", "-c", "local", "-m", f"{collection.FQCN}.kubeharden_sysctl",
                           "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, env=installed, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.read_text().strip().endswith("kernel.kptr_restrict = 2")


def test_its_playbooks_find_their_roles_by_the_collection(installed):
    for playbook in (f"{collection.FQCN}.site", f"{collection.FQCN}.bootstrap"):
        done = subprocess.run(["ansible-playbook", "-i", str(ROOT / "inventories/example"), playbook,
                               "--syntax-check"], capture_output=True, text=True, env=installed, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_its_audit_reads_the_catalogue_it_carries(installed, tmp_path):
    """The collection alone runs the audit: the catalogue travels inside it, the kubeharden package is not asked."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    k8s_cluster:\n      hosts: {}\n")
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), f"{collection.FQCN}.audit", "-v"],
                          capture_output=True, text=True, env={**installed, "ANSIBLE_NOCOLOR": "1"}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = dict(re.findall(r"TASK \[([^\]]+)\] \*+\n(\w+):", done.stdout))
    assert tasks["Read the catalogue the collection carries"] == "ok", done.stdout
    assert tasks["Ask the kubeharden package for its catalogue"] == "skipping", done.stdout
    carried = json.loads((Path(installed["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections/kubeharden/hardening"
                          / "playbooks/catalogue.json").read_text())
    assert {c["id"] for c in carried} == {c["id"] for c in catalogue.load()}


def ensure_pip_bootstrap() -> None:
    """ansible-test bootstraps pip in its sanity venvs with a get-pip script from a host this machine cannot reach;
    its cache takes a script of the same name. This one runs the same `pip install` from pip's own wheel (PyPI)."""
    cache = Path.home() / ".ansible/test/cache"
    script = cache / f"get_pip_{PIP_BOOTSTRAP_VERSION.replace('.', '_')}.py"
    wheel = cache / f"pip-{PIP_BOOTSTRAP_VERSION}-py3-none-any.whl"
    if script.exists() and wheel.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache),
                    f"pip=={PIP_BOOTSTRAP_VERSION}"], check=True)
    script.write_text(f"""\
# Offline stand-in for get-pip.py (written by kubeharden's tests): the same pip install, from pip's wheel.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "{wheel.name}"))
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install", "--upgrade", "--force-reinstall",
               *(a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel"))]))
""")


def test_ansible_test_sanity_passes(tmp_path):
    ensure_pip_bootstrap()
    tree = collection.write(ROOT, tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)  # ansible-test lists the files git would
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run([collection.ansible_command("ansible-test"), "sanity", "--local", "--python", python,
                           "--requirements"], capture_output=True, text=True, cwd=tree, check=False)
    errors = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.startswith("ERROR")]
    assert done.returncode == 0, "\n".join(errors) or done.stderr[-3000:]


def test_a_roles_filter_is_the_collections_own(installed):
    """roles/firewall/filter_plugins is not loaded from a collection's role: it moves to plugins/filter."""
    # A host of its own whose address is not its name, so the filter's answer cannot be the host name echoed back
    # (the local connection sends nothing to that address).
    done = subprocess.run(["ansible", "-i", "node-a,", "node-a", "-c", "local", "-m", "ansible.builtin.debug", "-a",
                           "msg={{ ['node-a'] | kubeharden.hardening.node_addresses(hostvars) }}",
                           "-e", "ansible_host=192.0.2.7", "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, check=False,
                          env={**installed, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.split("=>", 1)[1])  # "node-a | SUCCESS => {...}"
    assert result["msg"] == ["192.0.2.7"], result
