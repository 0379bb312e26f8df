import ast
import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import kubeharden_controls

from kubeharden import catalogue
from tests.conftest import ROOT

# Every CIS control of sections 1.1-1.4, 2 and 4.1-4.3 in reference/cis-kubernetes.md (v1.12 numbering).
CIS_IDS = ([f"1.1.{i}" for i in range(1, 22)] + [f"1.2.{i}" for i in range(1, 31)] + [f"1.3.{i}" for i in range(1, 8)]
           + ["1.4.1", "1.4.2"] + [f"2.{i}" for i in range(1, 8)] + [f"4.1.{i}" for i in range(1, 11)]
           + [f"4.2.{i}" for i in range(1, 15)] + ["4.3.1"])


def test_catalogue_covers_every_cis_control_once():
    ids = [c["id"] for c in catalogue.load()]
    assert len(ids) == len(set(ids))
    assert set(CIS_IDS) <= set(ids)
    assert len(ids) >= 150


def test_catalogue_reads_are_what_the_module_implements():
    assert set(catalogue.check_types()["reads"]) - {"none"} == set(kubeharden_controls.READERS)


def test_every_control_names_its_fix():
    for control in catalogue.load():
        assert control["remediation"]["role"] in {"node_os", "container_runtime", "kubelet", "control_plane", "pki",
                                                  "etcd", "firewall", "cluster_policies"}
        assert control["remediation"]["variable"].startswith(control["remediation"]["role"] + "_")


PART = ("defaults: {node_roles: [workers], type: automated, severity: low, remediation: {role: node_os}}\n"
        "sections: {X: {title: Test controls, tags: [node_os_test]}}\n"
        "controls:\n")


def test_unknown_fields_are_refused(tmp_path):
    (tmp_path / "bad.yml").write_text(
        PART + "  - {id: X-1, title: Ensure a, b and c, check: {read: swap}, remediation: {variable: node_os_x}}\n")
    with pytest.raises(catalogue.CatalogueError, match="unknown field"):
        catalogue.load(tmp_path)


@pytest.mark.parametrize(("check", "message"), [
    ("{read: sysctl, key: kernel.sysrq, op: eq, valeu: 0}",
     "X-1: check has valeu, which a check of type sysctl does not take"),
    ("{read: sysctl, op: eq, value: 0}", "X-1: a check of type sysctl needs key"),
    ("{read: file, mode_max: '600'}", "X-1: a check of type file needs path/path_from"),
    ("{read: file, path_from: {read: flag, component: etcd, flg: data-dir}}", "X-1: check.path_from takes"),
    ("{read: flag, component: etcd, flag: x, since: {'1.36': {flg: y}}}", "X-1: check.since.1.36 has flg"),
    ("{read: sysctls, key: kernel.sysrq}", "X-1: check.read must be one of"),
])
def test_a_check_with_a_key_its_type_does_not_take_is_refused_when_the_catalogue_loads(tmp_path, check, message):
    control = f"  - {{id: X-1, title: t, check: {check}, remediation: {{variable: v}}}}\n"
    (tmp_path / "bad.yml").write_text(PART + control)
    with pytest.raises(catalogue.CatalogueError, match=re.escape(message)):
        catalogue.load(tmp_path)


def test_sections_come_from_the_file_and_give_their_remediation_tags(tmp_path):
    (tmp_path / "part.yml").write_text(
        PART + "  - {id: X-1, title: t, check: {read: swap}, remediation: {variable: node_os_x}}\n"
               "  - {id: X-2, title: t, check: {read: swap}, remediation: {variable: node_os_x, tags: [own]}}\n")
    first, second = catalogue.load(tmp_path)
    assert (first["section"], first["remediation"]["tags"]) == ("X Test controls", ["node_os_test"])
    assert (second["section"], second["remediation"]["tags"]) == ("X Test controls", ["own"])
    (tmp_path / "other").mkdir()  # the loader caches per directory
    (tmp_path / "other" / "part.yml").write_text(
        PART + "  - {id: Y-1, title: t, check: {read: swap}, remediation: {variable: node_os_x}}\n")
    with pytest.raises(catalogue.CatalogueError, match="Y-1: in no section its file declares"):
        catalogue.load(tmp_path / "other")


@pytest.mark.parametrize(("selector", "selected"), [
    ("1.2", True), ("1.2.1", True), ("1.20", False), ("1", True), ("KH-OS", False), ("1.2.15", False)])
def test_selectors_match_at_separators(selector, selected):
    assert catalogue.matches("1.2.1", selector) is selected


def test_select_includes_then_skips():
    chosen = catalogue.select(catalogue.load(), include=["1.2", "KH-OS-8"], skip=["1.2.1", "KH-OS-8.1"])
    ids = {c["id"] for c in chosen}
    assert "1.2.15" in ids and "KH-OS-8.2" in ids and "1.2.1" not in ids and "KH-OS-8.1" not in ids
    assert "1.2.10" in ids and "1.3.1" not in ids


def test_controls_doc_is_current():
    expected = catalogue.render_markdown(catalogue.load())
    actual = (ROOT / "docs" / "controls.md").read_text()
    assert actual == expected, "docs/controls.md is stale: python -m kubeharden.catalogue --docs docs/controls.md"


def test_remediation_variables_exist_in_the_roles_that_have_landed():
    """Two hops: catalogue ID -> role and variable, which the role's argument spec must declare."""
    import yaml

    missing = []
    for control in catalogue.load():
        role_dir = ROOT / "roles" / control["remediation"]["role"]
        if not role_dir.exists() or (control["type"] == "manual" and not control.get("required")):
            continue
        spec = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())
        declared = {name for entry in spec["argument_specs"].values() for name in entry.get("options", {})}
        if control["remediation"]["variable"] not in declared:  # any entry point (etcd: main, encryption)
            missing.append(f"{control['id']}: {control['remediation']['role']}.{control['remediation']['variable']}")
    assert missing == []


def test_a_manual_control_site_yml_fixes_by_default_is_enforced():
    """Derived from the remediation: what the roles set by default fails when off; the rest is the operator's."""
    enforced = {c["id"] for c in catalogue.load() if c["type"] == "manual" and c.get("required")}
    assert {"4.2.4", "4.2.5", "4.2.12", "4.2.13", "4.2.14", "1.2.1", "1.2.3", "1.2.9", "1.2.27", "1.2.28",
            "1.2.29", "1.3.1", "1.1.20", "1.1.21", "4.1.7", "4.1.8", "2.7", "4.2.9", "4.1.3", "4.1.4",
            "4.3.1"} <= enforced
    # Defaults that are off (always-pull, request timeout), nothing in the kubelet defaults for the key, no
    # playbook task, no check: the operator's call.
    assert not enforced & {"1.2.11", "1.2.20", "4.2.7", "4.2.8", "1.1.9"}


def test_enforcement_follows_the_role_default():
    control = next(c for c in catalogue.load() if c["id"] == "4.2.4")
    roles = catalogue.role_defaults()
    assert catalogue.enforced_by_default(control, roles)
    without = {**roles, "kubelet": {**roles["kubelet"], "kubelet_config": {"podPidsLimit": 4096}}}
    assert not catalogue.enforced_by_default(control, without)
    serving = next(c for c in catalogue.load() if c["id"] == "4.2.9")  # a bool default: on or off
    assert catalogue.enforced_by_default(serving, roles)
    off = {**roles, "kubelet": {**roles["kubelet"], "kubelet_server_tls_bootstrap": False}}
    assert not catalogue.enforced_by_default(serving, off)
    assert not catalogue.enforced_by_default({**control, "remediation": {**control["remediation"], "tags": []}},
                                             roles)


def test_the_benchmark_follows_the_kubernetes_release():
    assert catalogue.benchmark_for("1.35") == "CIS Kubernetes Benchmark v2.0.1"
    assert catalogue.benchmark_for("1.33") == "CIS Kubernetes Benchmark v1.12"
    newest = catalogue.benchmark_for("1.37")
    assert newest.startswith("CIS Kubernetes Benchmark v2.0.1 (the newest") and "1.37 has no benchmark" in newest


def test_a_malformed_since_is_refused_when_the_catalogue_loads():
    control = dict(next(c for c in catalogue.load() if c["id"] == "4.2.8"))
    control["check"] = {**control["check"], "since": {"1.37.1": "gt"}}
    with pytest.raises(catalogue.CatalogueError, match=r"4\.2\.8: check\.since maps a Kubernetes minor"):
        catalogue.validate([control])


def test_every_control_has_a_section():
    assert [c["id"] for c in catalogue.load() if c["section"] == "Other"] == []


READER_FILES = ("kubeharden_views.py", "kubeharden_readers_os.py", "kubeharden_readers_kubernetes.py",
                "kubeharden_controls.py")


def _keys_each_function_reads_from_check() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per function of the readers and the node views: the `check` keys it reads, and the functions it hands
    `check` to (by name, or as another module's attribute)."""
    keys, calls = {}, {}
    for name in READER_FILES:
        tree = ast.parse((Path(kubeharden_controls.__file__).parent / name).read_text())
        for function in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            if "check" not in [a.arg for a in function.args.args]:
                continue
            keys[function.name], calls[function.name] = set(), set()
            for node in ast.walk(function):
                is_check = lambda n: isinstance(n, ast.Name) and n.id == "check"  # noqa: E731
                if isinstance(node, ast.Subscript) and is_check(node.value) and isinstance(node.slice, ast.Constant):
                    keys[function.name].add(node.slice.value)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_check(node.func.value) \
                        and node.func.attr == "get" and isinstance(node.args[0], ast.Constant):
                    keys[function.name].add(node.args[0].value)
                elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                        and is_check(node.comparators[0]):
                    keys[function.name].add(node.left.value)
                elif isinstance(node, ast.Call) and any(map(is_check, node.args)):
                    if isinstance(node.func, ast.Name):
                        calls[function.name].add(node.func.id)
                    elif isinstance(node.func, ast.Attribute):
                        calls[function.name].add(node.func.attr)
    return keys, calls


def test_every_reader_reads_only_the_keys_checks_yml_declares_for_its_type():
    keys, calls = _keys_each_function_reads_from_check()
    types = catalogue.check_types()
    assert "mode_max" in keys["read_file"] and "key" in keys["resolve_path"] | keys["read_kubelet"]  # it sees reads
    for read, reader in kubeharden_controls.READERS.items():
        seen, todo, read_keys = set(), [reader.__name__], set()
        while todo:
            name = todo.pop()
            if name in seen or name not in keys:
                continue
            seen.add(name)
            read_keys |= keys[name]
            todo.extend(calls[name])
        declared = set(types["reads"][read]["keys"]) | set(types["common"])
        assert read_keys <= declared, f"{reader.__name__} reads {read_keys - declared}: declare them in checks.yml"


def test_every_fix_names_tags_that_select_tasks_of_its_role():
    """`drift --remediate` runs a control's tags: every tag must select some task, and one of them a task of the
    fixing role (in the role, or where a playbook includes it), for every topology a control names a fix for."""
    files = {path: path.read_text() for path in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml")]}

    def tagged(tag: str, role: str | None = None) -> bool:
        return any(re.search(rf"tags:.*[\[ ,]{re.escape(tag)}[\], ]", text) for path, text in files.items()
                   if role is None or f"/roles/{role}/" in str(path) or f"name: {role}\n" in text)

    missing = []
    for control in catalogue.load():
        fixes = [control["remediation"], *([control["remediation"]["etcd_host"]]
                                           if "etcd_host" in control["remediation"] else [])]
        for fix in fixes:
            missing += [f"{control['id']}: no task has tag {tag}" for tag in fix["tags"] if not tagged(tag)]
            if fix["tags"] and not any(tagged(tag, fix["role"]) for tag in fix["tags"]):
                missing.append(f"{control['id']}: no tag of {fix['tags']} selects a task of role {fix['role']}")
    assert missing == []


def test_the_audit_falls_back_on_the_cluster_policies_roles_own_defaults():
    """audit.yml reads the operator's choices for the cluster's controls from the inventory; unset, it must judge
    by what the role applies."""
    defaults = yaml.safe_load((ROOT / "roles/cluster_policies/defaults/main.yml").read_text())
    audit = (ROOT / "playbooks/audit.yml").read_text()
    level = defaults["cluster_policies_pod_security_level"]
    assert f"cluster_policies_pod_security_level | default('{level}')" in audit
    assert defaults["cluster_policies_rbac_accepted_subjects"] == [] and \
        "cluster_policies_rbac_accepted_subjects | default([])" in audit


def test_a_control_that_is_the_same_rule_takes_its_check_and_fix():
    controls = {c["id"]: c for c in catalogue.load()}
    same, original = controls["DEB12-1.1.1.1"], controls["KH-OS-2.1"]
    assert same["check"] == original["check"] and same["remediation"] == original["remediation"]
    with pytest.raises(catalogue.CatalogueError, match="same_as KH-NOPE names no control"):
        catalogue._resolve_same_as([{"id": "X", "same_as": "KH-NOPE", "remediation": {}}])


def test_every_cis_debian_exception_gives_its_reason_and_is_reported_as_one():
    exceptions = [c for c in catalogue.load() if c.get("exception")]
    assert {"DEB12-3.3.1", "DEB12-4.1.1", "DEB12-5.2.4"} <= {c["id"] for c in exceptions}
    with pytest.raises(catalogue.CatalogueError, match="exception must say why"):
        catalogue.validate([{**exceptions[0], "exception": " "}])


def test_a_comparison_the_engine_does_not_know_is_refused_when_the_catalogue_loads():
    from ansible.module_utils.kubeharden_controls import compare

    for op in catalogue.COMPARISONS:  # every listed comparison is one the engine answers
        compare(op, "1", "1" if op not in ("in", "subset") else ["1"])
    problems = catalogue._check_problems("X-1", {"read": "sysctl", "key": "a", "op": False})
    assert problems == ["X-1: check.op False is not one of " + ", ".join(catalogue.COMPARISONS) +
                        " (quote true and false)"]
