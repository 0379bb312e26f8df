"""The alert rules: valid for Prometheus, equal in both forms, and firing on kubeharden's own metrics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kubeharden import catalogue
from kubeharden.audit import AuditReport
from kubeharden.drift import DriftReport, classify
from kubeharden.formats.prometheus import drift as to_prometheus_drift

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/kubeharden-rules.yml"
OPERATOR = ROOT / "deploy/prometheus/kubeharden-prometheusrule.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        if os.environ.get("KUBEHARDEN_REQUIRE_LAB") == "1":
            pytest.fail("promtool is missing (./dev setup extracts it into .venv/bin)")
        pytest.skip("promtool is missing: ./dev setup extracts it from Debian's prometheus package")
    return found


WAIVER = {"reason": "accepted", "owner": "platform", "expires": "2026-12-08", "hosts": "all", "resources": [],
          "waived_on": [], "failing_on": [], "unused": False}


def metrics() -> str:
    """Real exporter output: cp1 with a drifted control and two long-failing ones, two certificates."""
    controls = {c["id"]: c for c in catalogue.load() if c["id"] in ("1.2.15", "1.2.1", "4.2.1", "1.2.2")}
    results = [{"id": cid, "status": status, "expected": "", "evidence": "", "reason": ""}
               for cid, status in (("1.2.15", "fail"), ("1.2.1", "fail"), ("4.2.1", "fail"), ("1.2.2", "pass"))]
    audit = AuditReport(controls, {"cp1": results},
                        certificates={"cp1": [{"name": "apiserver", "subject": "CN=kube-apiserver", "days_left": 20,
                                               "managed_by": "kubeadm"},
                                              {"name": "kubelet-client", "subject": "CN=system:node:cp1",
                                               "days_left": 5, "managed_by": "kubelet"}]},
                        waivers=[WAIVER | {"index": 0, "control": "1.2.2", "state": "expiring", "days_left": 10},
                                 WAIVER | {"index": 1, "control": "4.2.1", "state": "expired", "days_left": -3}])
    change = {"task": "manifest", "tags": ["control_plane_apiserver"], "diff": "", "failed": False}
    entry = classify(controls, results, [change], {"results": [results[1]], "drifted": []})
    return to_prometheus_drift(DriftReport("r", "2026-11-28T12:00:00+00:00", audit, {"cp1": entry}))


def series(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out.append({"series": name, "values": f"{value}x480"})  # constant for 8 hours at 1m steps
    return out


def annotations(rule: dict, labels: dict) -> dict:
    """The rule's annotations with the alert's labels (and value, here days left) filled in."""
    values = {"value": {"kubelet-client": "5"}.get(labels.get("certificate"), "0")}

    def fill(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        return text.replace("{{ $value }}", values["value"])
    return {key: fill(text) for key, text in rule["annotations"].items()}


def test_both_forms_hold_the_same_rules():
    assert yaml.safe_load(OPERATOR.read_text())["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_every_metric_a_rule_reads_is_exported():
    exported = {line.split("{")[0].split(" ")[0] for line in metrics().splitlines() if line and line[0] != "#"}
    exprs = " ".join(rule["expr"] for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
    used = set(re.findall(r"kubeharden_[a-z_]+", exprs))  # descriptions name variables too, not metrics
    assert used <= exported, used - exported


def test_promtool_accepts_the_rules_and_they_fire_on_real_metrics(tmp_path):
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    node = {"node": "cp1"}
    high = {**node, "section": "4.2 Kubelet", "severity": "warning", "control": "4.2.1"}
    expectations = [
        {"eval_time": "5m", "alertname": "KubehardenControlDrifted",
         "exp_alerts": [{"exp_labels": {**node, "control": "1.2.15", "section": "1.2 API server",
                                        "severity": "warning"}}]},
        # High-severity 1.2.1 and 4.2.1 fire once they have failed for 6 hours (no CIS control is an exception).
        {"eval_time": "5m", "alertname": "KubehardenHighSeverityControlFailing", "exp_alerts": []},
        {"eval_time": "7h", "alertname": "KubehardenHighSeverityControlFailing",
         "exp_alerts": [{"exp_labels": {**high, "control": "1.2.1", "section": "1.2 API server"}},
                        {"exp_labels": high}]},
        {"eval_time": "5m", "alertname": "KubehardenCertificateExpiryCritical",
         "exp_alerts": [{"exp_labels": {**node, "certificate": "kubelet-client", "subject": "CN=system:node:cp1",
                                        "managed_by": "kubelet", "severity": "critical"}}]},
        {"eval_time": "40m", "alertname": "KubehardenNodeNotChecked", "exp_alerts": []},
        {"eval_time": "5m", "alertname": "KubehardenDriftRunsStopped", "exp_alerts": []},
        {"eval_time": "5m", "alertname": "KubehardenWaiverExpiring",
         "exp_alerts": [{"exp_labels": {"waiver": "0", "control": "1.2.2", "owner": "platform", "hosts": "all",
                                        "severity": "info"}}]},
        {"eval_time": "5m", "alertname": "KubehardenWaiverExpired",
         "exp_alerts": [{"exp_labels": {"waiver": "1", "control": "4.2.1", "owner": "platform", "hosts": "all",
                                        "severity": "warning"}}]},
        # The apiserver's count of the image policy's denials (kubeharden-image-policy), not kubeharden's metrics.
        {"eval_time": "20m", "alertname": "KubehardenImagePolicyRefused",
         "exp_alerts": [{"exp_labels": {"policy_binding": "kubeharden-image-policy", "enforcement_action": "deny",
                                        "severity": "info"}}]},
        {"eval_time": "7h", "alertname": "KubehardenImagePolicyRefused", "exp_alerts": []},  # no denial since 1h
    ]
    rules = {rule["alert"]: rule for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    for expectation in expectations:
        for alert in expectation["exp_alerts"]:
            alert["exp_annotations"] = annotations(rules[expectation["alertname"]], alert["exp_labels"])
    denials = {"series": 'apiserver_validating_admission_policy_check_total{policy="kubeharden-image-policy",'
                         'policy_binding="kubeharden-image-policy",enforcement_action="deny",error_type="no_error"}',
               "values": "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 2 3 3+0x460"}  # three denials after 15 minutes
    admitted = {"series": 'apiserver_validating_admission_policy_check_total{policy="kubeharden-image-policy",'
                          'policy_binding="kubeharden-image-policy",enforcement_action="allow",error_type="no_error"}',
                "values": "0+5x480"}  # admitted requests never alert
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": [*series(metrics()), denials, admitted],
                       "alert_rule_test": expectations}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    tested = subprocess.run([tool, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
