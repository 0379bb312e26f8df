"""Facts written in two places are held to one: the catalogue states what a control expects, the roles' defaults
must satisfy it. (The supported Kubernetes releases: tests/unit/test_lab_kubernetes.py.)"""

from __future__ import annotations

import re

import yaml
from ansible.module_utils import kubeharden_controls, kubeharden_kubeadm

from kubeharden import catalogue
from tests.conftest import ROOT


def _templated(value) -> bool:
    return isinstance(value, str) and "{{" in value


def _role_vars(role: str) -> dict:
    path = ROOT / "roles" / role / "vars" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _default_for(control: dict, defaults: dict) -> tuple[bool, object]:
    """The value the remediation variable's default gives to what the control's check reads, if it names one;
    else the value a mapping of the role's vars/main.yml gives it (what Kubernetes needs, not a choice)."""
    value = defaults.get(control["remediation"]["role"], {}).get(control["remediation"]["variable"])
    check = control["check"]
    name = check.get("key") or check.get("flag")
    if isinstance(value, dict) and isinstance(name, str) and name not in value:
        value = next((mapping for mapping in _role_vars(control["remediation"]["role"]).values()
                      if isinstance(mapping, dict) and name in mapping), value)
    if not isinstance(value, dict) or not isinstance(name, str):
        return False, None
    if check["read"] == "sshd":  # sshd -T prints lower-case names and yes/no
        value = {k.lower(): ({True: "yes", False: "no"}[v] if isinstance(v, bool) else v) for k, v in value.items()}
    for part in [name] if name in value else name.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return not _templated(value), value


def test_the_roles_defaults_give_every_control_they_set_the_value_the_catalogue_expects():
    """Direction: the catalogue states the expected value (the benchmark's rule, often a bound such as
    MaxAuthTries <= 4); a role's default is a choice within it (3). A default outside the rule fails here."""
    defaults, compared, wrong = catalogue.role_defaults(), [], []
    for control in catalogue.load():
        found, value = _default_for(control, defaults)
        check = control["check"]
        if not found or check["read"] in kubeharden_controls.OFFENDER_READERS or "op" not in check \
                or control.get("exception"):  # an exception is a benchmark rule kubeharden does not follow
            continue
        check, _rule = kubeharden_controls.check_at(check, kubeharden_controls.node.parse_minor(
            kubeharden_kubeadm.SUPPORTED_MINORS[-1]))
        compared.append(control["id"])
        if not kubeharden_controls.compare(check["op"], value, check.get("value")):
            wrong.append(f"{control['id']}: {control['remediation']['variable']} gives {value!r}, the catalogue "
                         f"expects {check['op']} {check.get('value')!r}")
    assert not wrong, "\n".join(wrong)
    # What it covers: sysctls, sshd settings, kubelet settings and component flags (not only one kind).
    assert {re.sub(r"[.-]\d+$", "", cid) for cid in compared} >= {"KH-OS-1", "KH-OS-8", "4.2", "1.2", "1.3"}
    assert "KH-OS-1.1" in compared  # net.ipv4.ip_forward: Kubernetes' own need, in node_os's vars/main.yml
    assert len(compared) >= 60, compared


def test_node_code_runs_commands_one_way():
    """Every command a module or module_utils file runs goes through kubeharden_node.run (text, timeout, never
    raising on the exit code): no second helper with other defaults, no AnsibleModule.run_command."""
    others = []
    for path in sorted([*(ROOT / "modules").glob("*.py"), *(ROOT / "module_utils").glob("*.py")]):
        if path.name == "kubeharden_node.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bsubprocess\.(run|Popen|call|check_output|check_call)\(|\.run_command\(|os\.system\(",
                         line):
                others.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not others, "\n".join(others)
