"""The control catalogue: one entry per control, driving both the audit and the remediation.

Each YAML file here holds `defaults` (merged into every entry), `sections` (by ID prefix: the title, and the
role tags that run the section's fix) and `controls`; checks.yml declares the check types. An entry has an `id` (the
CIS Kubernetes Benchmark ID where one exists, else KH-...), a `title`, a `severity`, the `node_roles` it
applies to, a `type` (automated, or manual where the benchmark leaves the call to the operator), the `check`
the audit module evaluates, and the `remediation`: the role and variable that fix it.

A manual control whose fix site.yml applies by default is kubeharden's policy, not the operator's call: it
fails when its state is off, and drift repairs it. That is derived, never written per control: the remediation
variable's default in its role sets what the check reads (`enforced_by_default`). The loader marks such a
control `required`; an entry may also say `required: true` itself where no role default can tell.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

import yaml

CATALOGUE_DIR = Path(__file__).parent
SEVERITIES = ("low", "medium", "high")
# `cluster`: the one control-plane node the audit reads the cluster's API from (controls of the whole cluster).
NODE_ROLES = ("control_plane", "workers", "etcd", "cluster")
TYPES = ("automated", "manual")
FIELDS = {"id", "title", "severity", "type", "required", "node_roles", "benchmark", "check", "remediation",
          "exception", "same_as"}
REMEDIATION_FIELDS = {"role", "variable", "tags"}
# The check types and the keys each takes (checks.yml); every other YAML file here is a part of the catalogue.
CHECK_TYPES_FILE = "checks.yml"


@cache
def check_types() -> dict:
    """checks.yml: `reads` (each check type's keys and what it observes), `common` and `path_from` keys."""
    return yaml.safe_load((CATALOGUE_DIR / CHECK_TYPES_FILE).read_text())

# The CIS Kubernetes Benchmark kubeharden follows for each Kubernetes minor (v2.0.1 kept v1.12's control IDs). A
# minor with no benchmark of its own follows the newest, as kube-bench steps down to its newest mapping.
BENCHMARKS = {"CIS Kubernetes Benchmark v1.12": ("1.32", "1.33"), "CIS Kubernetes Benchmark v2.0.1": ("1.34", "1.35")}


def benchmark_for(minor: str | None) -> str:
    """`1.35` -> "CIS Kubernetes Benchmark v2.0.1"; a minor no benchmark covers yet -> the newest, saying so."""
    newest = list(BENCHMARKS)[-1]
    for name, minors in BENCHMARKS.items():
        if minor in minors:
            return name
    return f"{newest} (the newest; Kubernetes {minor or 'of unknown version'} has no benchmark of its own yet)"


def _longest_prefix(control_id: str, prefixes) -> str | None:
    """The longest of `prefixes` that selects the ID (see `matches`), or None."""
    return max((p for p in prefixes if matches(control_id, p)), key=len, default=None)


class CatalogueError(ValueError):
    pass


def remediation_for(control: dict, etcd: str | None = None) -> dict:
    """The fix of a control on a node where etcd runs as `etcd` (the audit's "static_pod", "host" or "none"): a
    control whose fix depends on it names the host-service fix as `remediation.etcd_host`."""
    remediation = control["remediation"]
    if etcd == "host" and "etcd_host" in remediation:
        return remediation["etcd_host"]
    return {k: v for k, v in remediation.items() if k != "etcd_host"}


def fix_text(remediation: dict) -> str:
    """`role control_plane, variable control_plane_etcd_user, tags control_plane_etcd`: the one way every report
    names a fix."""
    tags = ", ".join(remediation.get("tags") or []) or "none (no playbook task fixes it)"
    return f"role {remediation['role']}, variable {remediation['variable']}, tags {tags}"


def matches(control_id: str, selector: str) -> bool:
    """`1.2` selects 1.2 and 1.2.x (not 1.20); `KH-OS` selects KH-OS-...; an exact ID selects itself."""
    selector = selector.rstrip(".-")
    return control_id == selector or control_id.startswith((selector + ".", selector + "-"))


def _merge(defaults: dict, entry: dict) -> dict:
    control = {**defaults, **entry}
    control["remediation"] = {**defaults.get("remediation", {}), **entry.get("remediation", {})}
    return control


# The comparisons module_utils/kubeharden_controls.compare knows.
COMPARISONS = ("set", "unset", "true", "false", "eq", "neq", "in", "has", "nothave", "subset", "gte", "lte", "gt",
               "regex")


def _check_problems(cid: str, check: dict) -> list[str]:
    """What is wrong with a control's check, against the check types of checks.yml."""
    types = check_types()
    read = check.get("read")
    if read not in types["reads"]:
        return [f"{cid}: check.read must be one of {sorted(types['reads'])}"]
    keys = types["reads"][read]["keys"]
    problems = []
    since = check.get("since", {})
    if not isinstance(since, dict) or not all(
            isinstance(k, str) and k.count(".") == 1 and isinstance(v, dict) for k, v in since.items()):
        problems.append(f"{cid}: check.since maps a Kubernetes minor (\"1.37\") to what changes from it on")
        since = {}
    for where, part in [("check", check), *((f"check.since.{m}", v) for m, v in since.items())]:
        unknown = set(part) - set(keys) - set(types["common"])
        if unknown:
            problems.append(f"{cid}: {where} has {', '.join(sorted(unknown))}, which a check of type {read} does "
                            f"not take (it takes {', '.join(keys) or 'nothing'} besides {', '.join(types['common'])})")
    missing = [k for k, need in keys.items() if need == "required" and k not in check]
    alternatives = sorted({need for need in keys.values() if need.startswith("one of ")})
    missing += [need[len("one of "):] for need in alternatives
                if not any(k in check for k, other in keys.items() if other == need)]
    if missing:
        problems.append(f"{cid}: a check of type {read} needs {', '.join(missing)}")
    for where, part in [("check", check), *((f"check.since.{m}", v) for m, v in since.items())]:
        if "op" in part and part["op"] not in COMPARISONS:  # YAML reads a bare true/false as a boolean
            problems.append(f"{cid}: {where}.op {part['op']!r} is not one of {', '.join(COMPARISONS)} (quote true "
                            "and false)")
    unknown = set(check.get("path_from") or {}) - set(types["path_from"])
    if unknown:
        problems.append(f"{cid}: check.path_from takes {', '.join(types['path_from'])}, "
                        f"not {', '.join(sorted(unknown))}")
    return problems


def validate(controls: list[dict]) -> None:
    problems, seen = [], set()
    for control in controls:
        cid = control.get("id", "<no id>")
        if cid in seen:
            problems.append(f"{cid}: duplicate id")
        seen.add(cid)
        unknown = set(control) - FIELDS - {"section"}
        if unknown:  # also catches a title with an unquoted comma, which YAML flow style splits
            problems.append(f"{cid}: unknown field(s) {sorted(unknown)}")
        for field in ("id", "title", "severity", "type", "node_roles", "check", "remediation"):
            if field not in control:
                problems.append(f"{cid}: missing {field}")
        if control.get("severity") not in SEVERITIES:
            problems.append(f"{cid}: severity must be one of {SEVERITIES}")
        if control.get("type") not in TYPES:
            problems.append(f"{cid}: type must be one of {TYPES}")
        if not set(control.get("node_roles") or ["?"]) <= set(NODE_ROLES):
            problems.append(f"{cid}: node_roles must be among {NODE_ROLES}")
        problems += _check_problems(cid, control.get("check") or {})
        if "exception" in control and not (isinstance(control["exception"], str) and control["exception"].strip()):
            problems.append(f"{cid}: exception must say why the control is not applied")
        if not control.get("section"):
            problems.append(f"{cid}: in no section its file declares (`sections`, by ID prefix)")
        remediation = control.get("remediation") or {}
        for where, fix in (("remediation", remediation), ("remediation.etcd_host", remediation.get("etcd_host"))):
            if fix is None:
                continue
            if not isinstance(fix, dict) or not fix.get("role") or not fix.get("variable"):
                problems.append(f"{cid}: {where} needs a role and a variable")
            elif not isinstance(fix.get("tags"), list):
                problems.append(f"{cid}: {where}.tags (or its section's tags) must be a list")
            elif extra := set(fix) - REMEDIATION_FIELDS - ({"etcd_host"} if where == "remediation" else set()):
                problems.append(f"{cid}: {where} has {sorted(extra)}; it takes {sorted(REMEDIATION_FIELDS)} "
                                "(and etcd_host: the fix where etcd is a host service)")
    if problems:
        raise CatalogueError("invalid catalogue:\n  " + "\n  ".join(problems))


def _read_part(path: Path) -> list[dict]:
    """One catalogue file: its controls, each merged with the file's `defaults` and placed in the longest of its
    `sections` that prefixes the ID (the section's title, and its `tags` unless the control names its own)."""
    document = yaml.safe_load(path.read_text())
    defaults = document.get("defaults") or {}
    sections = {str(prefix): section for prefix, section in (document.get("sections") or {}).items()}
    controls = []
    for entry in document["controls"]:
        control = _merge(defaults, entry)
        prefix = _longest_prefix(str(control.get("id", "")), sections)
        if prefix:
            control["section"] = f"{prefix} {sections[prefix]['title']}"
            control["remediation"].setdefault("tags", sections[prefix].get("tags"))
        controls.append(control)
    return controls


def _resolve_same_as(controls: list[dict]) -> None:
    """A control that is the same rule as another (`same_as: KH-OS-2.1`) takes that control's check and fix, so
    the rule has one expected state and one place that fixes it."""
    by_id = {control.get("id"): control for control in controls}
    for control in controls:
        same = by_id.get(control.get("same_as"))
        if control.get("same_as") and (same is None or same.get("same_as")):
            raise CatalogueError(f"{control['id']}: same_as {control['same_as']} names no control with a check of "
                                 "its own")
        if same is not None:
            control.setdefault("check", same["check"])
            control["remediation"] = {**same["remediation"], **{k: v for k, v in control["remediation"].items()
                                                                 if k not in ("role", "tags")}}


@cache
def _load(directory: str) -> tuple[dict, ...]:
    controls, roles = [], role_defaults()
    for path in sorted(Path(directory).glob("*.yml")):
        if path.name != CHECK_TYPES_FILE:
            controls.extend(_read_part(path))
    _resolve_same_as(controls)
    validate(controls)
    for control in controls:
        control["remediation"]["tags"] = list(control["remediation"]["tags"])
        if control["type"] == "manual":
            control["required"] = bool(control.get("required")) or enforced_by_default(control, roles)
    return tuple(controls)


def role_defaults() -> dict[str, dict]:
    """Each role's defaults (defaults/main.yml), from the content kubeharden runs: a checkout or its collection."""
    from kubeharden.runner import RunError, ansible_content

    try:
        roles = ansible_content()[0].parent / "roles"
    except RunError:
        return {}
    return {path.parent.parent.name: yaml.safe_load(path.read_text()) or {}
            for path in sorted(roles.glob("*/defaults/main.yml"))}


_UNSET = object()


def enforced_by_default(control: dict, defaults: dict[str, dict]) -> bool:
    """Whether site.yml, run with the roles' defaults, sets the state this control checks: a playbook task fixes
    it (remediation tags), and its remediation variable's default is on and covers what the check reads (the
    key or flag of a mapping, the value or path among a list's items)."""
    remediation, check = control["remediation"], control["check"]
    if not remediation["tags"] or check.get("read") == "none":
        return False
    value = defaults.get(remediation["role"], {}).get(remediation["variable"], _UNSET)
    if value is _UNSET or value in (None, "", [], {}, False):
        return False
    if isinstance(value, dict):
        keys = [k for k in (check.get("key"), check.get("flag")) if k]
        return any(_has_path(value, key) for key in keys)
    if isinstance(value, list):
        if isinstance(check.get("value"), str):
            return check["value"] in value
        paths = {item.get("path") for item in value if isinstance(item, dict)}
        if paths:
            return check.get("path") in paths
    return True


def _has_path(mapping: dict, dotted: str) -> bool:
    if dotted in mapping:
        return True
    head, _, rest = dotted.partition(".")
    return bool(rest) and isinstance(mapping.get(head), dict) and _has_path(mapping[head], rest)


def load(directory: Path = CATALOGUE_DIR) -> list[dict]:
    """Every control, in benchmark order (CIS sections, then kubeharden's own)."""
    return sorted((dict(c) for c in _load(str(directory))), key=lambda c: sort_key(c["id"]))


def sort_key(control_id: str) -> tuple:
    kh = control_id.startswith("KH-")
    parts = control_id.replace("KH-", "").replace("-", ".").split(".")
    return (kh, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts])


def select(controls: list[dict], include: list[str] | None = None, skip: list[str] | None = None) -> list[dict]:
    chosen = [c for c in controls if not include or any(matches(c["id"], s) for s in include)]
    return [c for c in chosen if not any(matches(c["id"], s) for s in skip or [])]


def _fix_cell(remediation: dict) -> str:
    tags = remediation["tags"]
    return f"`{remediation['role']}`: `{remediation['variable']}`" + (f" (tags {', '.join(tags)})" if tags
                                                                      else " (no tag)")


def render_markdown(controls: list[dict]) -> str:
    """docs/controls.md: every control, by section, with what it checks and what fixes it."""
    lines = ["# Controls", "",
             "Generated from `kubeharden/catalogue/*.yml` by `python -m kubeharden.catalogue --docs docs/controls.md`;",
             "a test fails when this file is stale. Type `manual`: the benchmark leaves the call to the operator.",
             "Where site.yml applies the fix by default (derived from the remediation variable's default), the",
             "control is kubeharden's policy, marked *enforced*: it fails when off and drift repairs it. The other",
             "manual controls show their evidence and leave the call to you (*operator's call*).", "",
             "Which benchmark applies: " + "; ".join(f"Kubernetes {', '.join(m)}: {n}" for n, m in BENCHMARKS.items())
             + "; a newer Kubernetes follows the newest. Where a release changed a setting's meaning, the check says",
             "from which minor on its rule changes (`since`), and the audit applies it by the node's kubelet version.",
             "", f"{len(controls)} controls.", ""]
    section = None
    for control in controls:
        if control["section"] != section:
            section = control["section"]
            lines += ["", f"## {section}", "", "| ID | Control | Severity | Nodes | Checks | Fixed by |",
                      "|---|---|---|---|---|---|"]
        check = control["check"]
        what = ", ".join(f"{k}={v}" for k, v in check.items()
                         if k != "reason" and not isinstance(v, (list, dict)))
        kind = control["type"]
        if kind == "manual":
            kind += ", enforced" if control.get("required") else ", operator's call"
        if control.get("exception"):
            kind = f"exception: {control['exception']}"
        if control.get("same_as"):
            kind += f"; the same rule as {control['same_as']}"
        fix = _fix_cell(control["remediation"])
        if "etcd_host" in control["remediation"]:
            fix += "; etcd as a host service: " + _fix_cell(control["remediation"]["etcd_host"])
        title = control["title"].replace("|", "\\|")
        lines.append(f"| {control['id']} | {title} ({kind}) | {control['severity']} | "
                     f"{', '.join(control['node_roles'])} | {what.replace('|', chr(92) + '|')} | {fix} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeharden.catalogue")
    parser.add_argument("--json", action="store_true", help="print the merged catalogue as JSON")
    parser.add_argument("--docs", metavar="PATH", help="write the Markdown reference to PATH")
    args = parser.parse_args(argv)
    controls = load()
    if args.docs:
        Path(args.docs).write_text(render_markdown(controls))
    if args.json or not args.docs:
        json.dump(controls, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
