"""Drift classification, run history, the report page and the changes callback, without nodes."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kubeharden import catalogue, history
from kubeharden.ansible_plugins.callback.kubeharden_changes import render_diff
from kubeharden.audit import AuditReport
from kubeharden.drift import EXIT_CLEAN, EXIT_DRIFTED, EXIT_ERROR, DriftReport, classify
from kubeharden.formats import history as report
from kubeharden.formats.junit import drift as to_junit
from kubeharden.formats.prometheus import drift as to_prometheus_drift
from kubeharden.formats.table import drift as to_table
from kubeharden.runner import Progress

ROOT = Path(__file__).resolve().parents[2]
CONTROLS = {c["id"]: c for c in catalogue.load()}


def result(cid, status):
    return {"id": cid, "status": status, "expected": "eq false", "evidence": f"{cid} evidence", "reason": ""}


def change(task, tags, diff="-a\n+b", failed=False):
    return {"host": "cp1", "task": task, "tags": tags, "diff": diff, "failed": failed, "msg": ""}


APISERVER = change("manifest of kube-apiserver", ["control_plane", "control_plane_apiserver"])
RESULTS = [result("1.2.15", "fail"), result("1.2.1", "fail"), result("1.2.2", "pass"), result("4.2.1", "fail")]


def test_a_failing_control_with_a_pending_fix_under_its_tag_has_drifted():
    found = classify(CONTROLS, RESULTS, [APISERVER], previous=None)
    # No baseline yet: every failing control whose tag has a pending change counts (4.2.1's tag has none).
    assert found["drifted"] == ["1.2.15", "1.2.1"] and found["expected_failures"] == []
    assert found["pending"][0]["controls"] == ["1.2.15", "1.2.1"] and found["baseline"] is False


def test_a_control_that_failed_without_drifting_last_time_is_an_expected_failure():
    previous = {"results": [result("1.2.15", "pass"), result("1.2.1", "fail")], "drifted": []}
    found = classify(CONTROLS, RESULTS, [APISERVER], previous)
    assert found["drifted"] == ["1.2.15"] and found["expected_failures"] == ["1.2.1"]


def test_drift_stays_drift_until_it_is_fixed():
    previous = {"results": [result("1.2.15", "fail"), result("1.2.1", "fail")], "drifted": ["1.2.15"]}
    assert classify(CONTROLS, RESULTS, [APISERVER], previous)["drifted"] == ["1.2.15"]


def test_no_pending_change_means_no_drift_and_failed_tasks_do_not_count():
    assert classify(CONTROLS, RESULTS, [], None)["drifted"] == []
    broken = change("manifest", ["control_plane_apiserver"], failed=True)
    found = classify(CONTROLS, RESULTS, [broken], None)
    assert found["drifted"] == [] and found["pending"] == []


def test_a_pending_change_under_no_failing_control_is_kept_unattributed():
    found = classify(CONTROLS, [result("1.2.2", "pass")], [APISERVER], None)
    assert found["drifted"] == [] and found["pending"][0]["controls"] == []


def test_a_control_the_audit_could_not_judge_makes_the_run_an_error_and_is_named():
    """An apiserver that is restarting answers no cluster control: neither clean nor drift, and said so."""
    unreadable = {**result("1.2.2", "error"), "reason": "kubectl get namespaces failed: Forbidden"}
    found = classify(CONTROLS, [*RESULTS[:2], unreadable], [APISERVER], None)
    assert found["unjudged"] == ["1.2.2"] and "1.2.2" not in found["drifted"]
    controls = {cid: CONTROLS[cid] for cid in ("1.2.15", "1.2.1", "1.2.2")}
    drift = DriftReport("run-1", "2026-11-28T12:00:00+00:00",
                        AuditReport(controls, {"cp1": [*RESULTS[:2], unreadable]}), {"cp1": found})
    assert drift.exit_code() == EXIT_ERROR
    assert "  NOT JUDGED 1.2.2: kubectl get namespaces failed: Forbidden" in to_table(drift).splitlines()
    suite = ET.fromstring(to_junit(drift)).find("testsuite")
    assert suite.get("errors") == "1"
    assert [c.find("error").get("message") for c in suite if c.find("error") is not None] == [
        "not judged: kubectl get namespaces failed: Forbidden"]


def test_every_remediation_tag_exists_in_the_hardening_playbooks(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    k8s_cluster:\n      children:\n        control_plane:\n"
                         "          hosts: {cp1: {}}\n        etcd:\n          hosts: {cp1: {}}\n"
                         "        workers:\n          hosts: {w1: {}}\n")
    listed = subprocess.run(["ansible-playbook", "-i", str(inventory), "--list-tags", str(ROOT / "playbooks/site.yml")],
                            capture_output=True, text=True,
                            env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert listed.returncode == 0, listed.stderr
    known = {tag.strip() for line in listed.stdout.splitlines() if "TASK TAGS:" in line
             for tag in line.split("[", 1)[1].rstrip("]").split(",")}
    used = {tag for control in CONTROLS.values() for tag in control["remediation"]["tags"]}
    assert used and used <= known, used - known
    untagged = [cid for cid, control in CONTROLS.items() if not control["remediation"]["tags"]]
    # Every node control has a fix drift can run (kube-proxy's, in the cluster, too: kubelet_kube_proxy)
    cluster = [cid for cid in untagged if CONTROLS[cid]["node_roles"] == ["cluster"]]
    assert [cid for cid in untagged if cid not in cluster] == []
    # The cluster's RBAC, secrets, exposure and workloads are a person's call: reported, never failed or "fixed"
    assert cluster and all(CONTROLS[cid]["type"] == "manual" and not CONTROLS[cid]["required"] for cid in cluster)


def audit_report():
    controls = {cid: CONTROLS[cid] for cid in ("1.2.15", "1.2.1", "1.2.2", "4.2.1")}
    return AuditReport(controls, {"cp1": RESULTS})


def test_exit_codes_and_machine_formats():
    found = classify(CONTROLS, RESULTS, [APISERVER], {"results": [result("1.2.1", "fail")], "drifted": []})
    drift = DriftReport("run-1", "2026-11-28T12:00:00+00:00", audit_report(), {"cp1": found})
    assert drift.exit_code() == EXIT_DRIFTED
    metrics = to_prometheus_drift(drift)
    assert 'kubeharden_control_drifted{node="cp1",control="1.2.15",severity="medium",' in metrics
    assert 'kubeharden_drifted_controls{node="cp1"} 1' in metrics
    assert "kubeharden_drift_last_run_timestamp_seconds 1795867200" in metrics
    suite = ET.fromstring(to_junit(drift)).find("testsuite")
    assert suite.get("failures") == "1"
    assert [c.get("name") for c in suite if c.find("failure") is not None] == [
        f"1.2.15 {CONTROLS['1.2.15']['title']}"]
    drift.errors["w1"] = "unreachable"
    assert drift.exit_code() == EXIT_ERROR
    # The summary counts the node it could not reach, and says nothing was remediated there.
    assert "== w1: NOT CHECKED: unreachable" in to_table(drift)
    assert to_table(drift).splitlines()[-1] == (
        "1 drifted control(s) on 1 of 1 node(s); 1 node(s) not checked and nothing remediated there (w1); run run-1")
    clean = DriftReport("run-2", "2026-11-28T12:00:00+00:00", audit_report(),
                        {"cp1": classify(CONTROLS, RESULTS, [], None)})
    assert clean.exit_code() == EXIT_CLEAN


def record(run_id, time, kind, statuses, drifted=()):
    results = [result(cid, status) for cid, status in statuses.items()]
    passed = sum(s == "pass" for s in statuses.values())
    return {"id": run_id, "kind": kind, "time": time, "inventory": "hosts.yml", "errors": {},
            "nodes": {"cp1": {"score": round(100 * passed / len(statuses), 1), "results": results,
                              "counts": {"fail": len(statuses) - passed}, "drifted": list(drifted)}}}


def test_history_is_private_atomic_pruned_and_ordered(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "KEEP_RECORDS", 3)
    for i in range(5):
        history.write_record(tmp_path, record(f"2026112{i}T000000Z-drift-0000", f"2026-11-2{i}T00:00:00+00:00",
                                              "drift", {"1.2.15": "pass"}))
    assert oct((tmp_path / "history").stat().st_mode & 0o777) == "0o700"
    records = history.load_records(tmp_path)
    assert [r["time"][:10] for r in records] == ["2026-11-22", "2026-11-23", "2026-11-24"]
    assert [r["time"][:10] for r in history.load_records(tmp_path, last=2)] == ["2026-11-23", "2026-11-24"]
    assert history.baselines(tmp_path, ["cp1", "w9"], ("drift",), "hosts.yml") == {"cp1": records[-1]["nodes"]["cp1"]}
    assert history.baselines(tmp_path, ["cp1"], ("audit",), "hosts.yml") == {}
    # Another cluster's cp1 is another node: its records are no baseline here.
    assert history.baselines(tmp_path, ["cp1"], ("drift",), "other/hosts.yml") == {}


def test_a_broken_record_is_reported_by_name(tmp_path):
    history.write_record(tmp_path, record("r1", "2026-11-20T00:00:00+00:00", "audit", {"1.2.15": "pass"}))
    (tmp_path / "history" / "r0.json").write_text("{not json")
    with pytest.raises(history.HistoryError, match=r"r0\.json"):
        history.load_records(tmp_path)


def test_state_dir_follows_option_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBEHARDEN_STATE_DIR", str(tmp_path / "env"))
    assert history.state_dir(str(tmp_path / "opt")) == tmp_path / "opt"
    assert history.state_dir() == tmp_path / "env"


def test_report_shows_what_changed_and_escapes_everything():
    records = [record("r1", "2026-11-20T00:00:00+00:00", "drift", {"1.2.15": "pass", "1.2.1": "fail"}),
               record("r2", "2026-11-21T00:00:00+00:00", "drift", {"1.2.15": "fail", "1.2.1": "fail"}, ["1.2.15"]),
               record("r3", "2026-11-22T00:00:00+00:00", "remediate", {"1.2.15": "pass", "1.2.1": "fail"})]
    assert "now failing: 1.2.15" in report.to_text(records[:2])
    text = report.to_text(records)
    assert "score 0.0% -> 50.0% (since r2)" in text and "now passing: 1.2.15" in text
    records[-1]["nodes"]["cp1"]["results"][1]["evidence"] = "<script>alert(1)</script>"
    page = report.to_html(records)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<polyline") == 1 and 'aria-label="score trend: 50.0, 0.0, 50.0"' in page
    assert "http" not in page.replace("https://", "")  # self-contained: nothing fetched
    assert "No runs recorded yet" in report.to_html([])


def test_changes_callback_renders_ansible_diffs():
    assert render_diff([{"before": "a\n", "after": "b\n", "before_header": "f", "after_header": "f"}]) == \
        "--- f\n+++ f\n@@ -1 +1 @@\n-a\n+b"
    assert render_diff([[{"prepared": "+ rule\n"}], None]) == "+ rule"
    assert '-  "mode": "0644"' in render_diff({"before": {"mode": "0644"}, "after": {"mode": "0600"}})


def test_progress_line_counts_per_host(tmp_path):
    stream = (tmp_path / "err").open("w+")
    progress = Progress("check", stream=stream, enabled=True)
    progress({"event": "playbook_on_task_start", "event_data": {"task": "Set kernel parameters"}})
    progress({"event": "runner_on_ok", "event_data": {"host": "cp1", "res": {"changed": True}}})
    progress({"event": "runner_on_failed", "event_data": {"host": "w1", "res": {}}})
    assert progress.line().endswith("cp1 1 ok/1 changed w1 0 ok/1 failed | Set kernel parameters")
    progress.close()
    stream.seek(0)
    assert "[check" in stream.read()


def test_records_keep_evidence_only_where_a_control_does_not_pass():
    entry = audit_report().record("r1", "audit", "2026-11-28T12:00:00+00:00", "hosts.yml")["nodes"]["cp1"]
    assert {"id": "1.2.2", "status": "pass"} in entry["results"]
    assert {"id": "1.2.15", "status": "fail", "expected": "eq false", "evidence": "1.2.15 evidence",
            "reason": ""} in entry["results"]
    assert entry["score"] == 25.0 and entry["counts"] == {"fail": 3, "pass": 1}


def test_the_fix_follows_how_etcd_runs_on_the_node():
    """1.1.11/1.1.12: kubeadm's etcd is fixed by the control_plane role, a host etcd's data directory by the etcd
    role; drift attributes a pending change, and runs a tag, only where it fixes the node's control."""
    data_dir = [result("1.1.11", "fail")]
    etcd_role = change("etcd data directory", ["etcd", "etcd_data_dir"])
    control_plane_role = change("etcd user", ["control_plane", "control_plane_etcd"])
    assert classify(CONTROLS, data_dir, [etcd_role], None, etcd="host")["drifted"] == ["1.1.11"]
    assert classify(CONTROLS, data_dir, [etcd_role], None, etcd="static_pod")["drifted"] == []
    assert classify(CONTROLS, data_dir, [control_plane_role], None, etcd="static_pod")["drifted"] == ["1.1.11"]
    assert classify(CONTROLS, data_dir, [control_plane_role], None, etcd="host")["drifted"] == []
    audit = AuditReport(CONTROLS, {"e1": data_dir, "cp1": data_dir}, etcd={"e1": "host", "cp1": "static_pod"})
    assert audit.fix("e1", "1.1.11") == {"role": "etcd", "variable": "etcd_user", "tags": ["etcd_data_dir"]}
    assert audit.fix("cp1", "1.1.11")["tags"] == ["control_plane_etcd"]
    assert catalogue.fix_text(audit.fix("e1", "1.1.11")) == "role etcd, variable etcd_user, tags etcd_data_dir"
