"""docs/contributing.md promises two hops from a control to what fixes it: the catalogue names the role, the variable
and the tags (hop 1); the role's tasks that carry one of those tags use the variable (hop 2). Read here from the
role files themselves: tags inherited from includes, imports and blocks, and variables the role derives from the
named one (defaults, vars, a task's vars) count as its use."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import yaml

from kubeharden import catalogue

ROOT = Path(__file__).resolve().parents[2]
INCLUDES = ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks")
BLOCKS = ("block", "rescue", "always")


def _as_set(tags) -> set[str]:
    return set(tags) if isinstance(tags, list) else {tags} if isinstance(tags, str) else set()


ROLE_INCLUDES = ("ansible.builtin.include_role", "ansible.builtin.import_role")


@functools.cache
def entry_points(role: str) -> list[tuple[str, dict, set[str]]]:
    """The role's task files the playbooks run by tasks_from, each with the include task and the tags it applies."""
    found = []

    def walk(tasks: list, inherited: set[str], where: str) -> None:
        for task in tasks or []:
            if not isinstance(task, dict):
                continue
            tags = inherited | _as_set(task.get("tags"))
            for key in (*BLOCKS, "tasks", "pre_tasks", "post_tasks"):
                if isinstance(task.get(key), list):
                    walk(task[key], tags, where)
            for key in ROLE_INCLUDES:
                spec = task.get(key)
                if isinstance(spec, dict) and spec.get("name") == role and spec.get("tasks_from"):
                    applied = _as_set((spec.get("apply") or {}).get("tags"))
                    found.append((f"{spec['tasks_from']}.yml", task, tags | applied))
                    found.append((where, task, tags))  # the include itself (its when:) uses variables too

    for playbook in sorted((ROOT / "playbooks").glob("*.yml")):
        walk(yaml.safe_load(playbook.read_text()), set(), f"../../../playbooks/{playbook.name}")
    return found


@functools.cache
def role_tasks(role: str) -> list[tuple[str, dict, set[str]]]:
    """Every task of a role reachable from tasks/main.yml or from a playbook's tasks_from, with the tags it runs
    under (its own and inherited)."""
    tasks_dir = ROOT / "roles" / role / "tasks"
    found: list[tuple[str, dict, set[str]]] = []

    def walk(tasks: list, inherited: set[str], where: str, seen: frozenset) -> None:
        for task in tasks or []:
            tags = inherited | _as_set(task.get("tags"))
            for key in BLOCKS:
                if key in task:
                    walk(task[key], tags, where, seen)
            for key in INCLUDES:
                if key in task:
                    spec = task[key]
                    name = spec if isinstance(spec, str) else spec.get("file", "")
                    applied = _as_set((spec.get("apply") or {}).get("tags")) if isinstance(spec, dict) else set()
                    path = tasks_dir / name
                    if "{{" not in name and path.is_file() and name not in seen:
                        walk(yaml.safe_load(path.read_text()), tags | applied, name, seen | {name})
            found.append((where, task, tags))

    walk(yaml.safe_load((tasks_dir / "main.yml").read_text()), set(), "main.yml", frozenset({"main.yml"}))
    for name, include, tags in entry_points(role):
        if (tasks_dir / name).is_file():
            walk(yaml.safe_load((tasks_dir / name).read_text()), tags, name, frozenset({name}))
        else:
            found.append((name, include, tags))
    return found


@functools.cache
def role_variables(role: str) -> dict[str, str]:
    """The role's defaults and vars as text per name, for following derived variables."""
    names: dict[str, str] = {}
    for part in ("defaults", "vars"):
        path = ROOT / "roles" / role / part / "main.yml"
        if path.is_file():
            names.update({k: json.dumps(v) for k, v in (yaml.safe_load(path.read_text()) or {}).items()})
    return names


def names_for(variable: str, variables: dict[str, str]) -> set[str]:
    """The variable and every role variable derived from it, transitively."""
    names, changed = {variable}, True
    while changed:
        changed = False
        for name, text in variables.items():
            if name not in names and any(re.search(rf"\b{re.escape(n)}\b", text) for n in names):
                names.add(name)
                changed = True
    return names


def second_hop(fix: dict) -> list[str]:
    """The task files whose tasks carry one of the fix's tags and use its variable (or one derived from it)."""
    uses = names_for(fix["variable"], role_variables(fix["role"]))
    return sorted({where for where, task, tags in role_tasks(fix["role"])
                   if tags & set(fix["tags"])
                   and any(re.search(rf"\b{re.escape(name)}\b", json.dumps(task)) for name in uses)})


def fixes() -> list[tuple[str, dict]]:
    out = []
    for control in catalogue.load():
        fix = catalogue.remediation_for(control)
        if fix["tags"]:  # a fix no playbook task applies (read-only controls) has no second hop to follow
            out.append((control["id"], fix))
        if (control.get("remediation") or {}).get("etcd_host"):
            out.append((control["id"] + " (etcd as a host service)", catalogue.remediation_for(control, "host")))
    return out


def test_every_control_reaches_a_task_that_applies_its_variable_in_two_hops():
    missing = [(cid, fix["role"], fix["variable"], fix["tags"]) for cid, fix in fixes() if not second_hop(fix)]
    assert not missing, f"{len(missing)} control(s) whose tags reach no task using their variable: {missing[:20]}"


@pytest.mark.parametrize("control_id", ["1.2.15", "4.2.4", "KH-OS-1.13"])
def test_the_hops_of_sample_controls(control_id, capsys):
    """Printed for docs/contributing.md: ID -> role, variable, tags (the catalogue) -> the task files."""
    control = next(c for c in catalogue.load() if c["id"] == control_id)
    fix = catalogue.remediation_for(control)
    files = second_hop(fix)
    with capsys.disabled():
        print(f"\n{control_id}: hop 1 role {fix['role']}, variable {fix['variable']}, tags {', '.join(fix['tags'])}; "
              f"hop 2 roles/{fix['role']}/tasks/{', '.join(files)}")
    assert files
