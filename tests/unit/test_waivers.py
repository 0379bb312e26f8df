"""Waivers (kubeharden_waivers): validation, host patterns, expiry, use, and how every report shows them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date

import pytest
import yaml

from kubeharden import catalogue, waivers
from kubeharden.audit import EXIT_ERROR, EXIT_FAILED, EXIT_OK, AuditReport
from kubeharden.cli import main
from kubeharden.drift import DriftReport, classify, withheld_tags
from kubeharden.formats import render

TODAY = date(2026, 12, 7)
CATALOGUE = {c["id"]: c for c in catalogue.load()}
KNOWN = set(CATALOGUE)
CONTROLS = {cid: CATALOGUE[cid] for cid in ("1.2.15", "1.2.1", "4.2.1", "5.2.2", "1.1.13")}
GROUPS = {"cp1": {"k8s_cluster", "control_plane", "etcd"}, "cp2": {"k8s_cluster", "control_plane", "etcd"},
          "w1": {"k8s_cluster", "workers"}, "w2": {"k8s_cluster", "workers"}}


def entry(**overrides) -> dict:
    return {"control": "1.2.15", "reason": "profiling is read by our tracing agent", "owner": "platform",
            "expires": "2027-03-31", **overrides}


def result(cid: str, status: str, actual=None) -> dict:
    return {"id": cid, "status": status, "expected": "eq false", "actual": actual, "evidence": f"{cid} evidence",
            "reason": ""}


def accepted(*entries: dict, hosts: set[str] | None = None, warn_days: int = 30) -> waivers.Waivers:
    parsed = waivers.parse(list(entries), KNOWN)
    return waivers.Waivers(parsed, {w: set(hosts or GROUPS) & waivers.hosts_of(w.hosts, GROUPS) for w in parsed},
                           warn_days)


def test_every_problem_is_named_with_the_variable_index_and_key():
    bad = [entry(control="9.9.9"), entry(reason=""), {"control": "1.2.1", "owner": "x", "expires": "2027-01-01"},
           entry(reason="TODO"), entry(expires="next year"), entry(expires="2027-02-30"), entry(hosts="~[unclosed"),
           entry(hosts="cp1,,w1"), entry(colour="red"), entry(resources="kube-system/*"), "just a string"]
    with pytest.raises(waivers.WaiverError) as raised:
        waivers.parse(bad, KNOWN)
    lines = str(raised.value).splitlines()
    assert lines == [
        "kubeharden_waivers[0] (9.9.9): control 9.9.9 is not in the catalogue",
        "kubeharden_waivers[1] (1.2.15): reason is missing",
        "kubeharden_waivers[2] (1.2.1): reason is missing",
        "kubeharden_waivers[3] (1.2.15): reason is still TODO: a person writes why this deviation is accepted",
        "kubeharden_waivers[4] (1.2.15): expires must be a date (YYYY-MM-DD), not 'next year'",
        "kubeharden_waivers[5] (1.2.15): expires must be a date (YYYY-MM-DD), not '2027-02-30'",
        lines[6],
        "kubeharden_waivers[7] (1.2.15): hosts 'cp1,,w1' has an empty or malformed part ''",
        "kubeharden_waivers[8] (1.2.15): unknown key(s) colour (known: control, expires, hosts, owner, reason, "
        "resources)",
        "kubeharden_waivers[9] (1.2.15): resources must be a list of patterns",
        "kubeharden_waivers[10] must be a mapping with control, reason, owner and expires"]
    assert lines[6].startswith("kubeharden_waivers[6] (1.2.15): hosts '~[unclosed' part '~[unclosed' is not a "
                               "regular expression")
    assert waivers.parse([entry(expires=date(2027, 3, 31))], KNOWN)[0].expires == date(2027, 3, 31)  # YAML's date
    assert waivers.parse(None, KNOWN) == []


@pytest.mark.parametrize(("pattern", "hosts"), [
    ("all", {"cp1", "cp2", "w1", "w2"}),
    ("workers", {"w1", "w2"}),
    ("workers:!w2", {"w1"}),
    ("control_plane,w1", {"cp1", "cp2", "w1"}),
    ("k8s_cluster:&etcd", {"cp1", "cp2"}),
    ("cp*", {"cp1", "cp2"}),
    ("~^w[12]$", {"w1", "w2"}),
    ("nosuchgroup", set()),
])
def test_hosts_are_chosen_as_ansible_reads_a_limit(pattern, hosts):
    assert waivers.pattern_problem(pattern) == ""
    assert waivers.hosts_of(pattern, GROUPS) == hosts


def test_the_inventory_groups_of_each_host_include_parent_groups():
    listed = {"_meta": {"hostvars": {"cp1": {}, "w1": {}}}, "all": {"children": ["k8s_cluster", "ungrouped"]},
              "k8s_cluster": {"children": ["kube_control_plane", "kube_node"]},
              "kube_control_plane": {"hosts": ["cp1"]}, "kube_node": {"hosts": ["w1"]}}
    assert waivers.host_groups(listed) == {"cp1": {"all", "k8s_cluster", "kube_control_plane"},
                                           "w1": {"all", "k8s_cluster", "kube_node"}}


def test_waivers_apply_only_to_the_hosts_whose_group_vars_hold_them():
    worker_waiver = [entry(control="4.2.1")]
    listed = {"_meta": {"hostvars": {"cp1": {}, "w1": {"kubeharden_waivers": worker_waiver},
                                     "w2": {"kubeharden_waivers": worker_waiver, "kubeharden_waiver_warn_days": 10}}},
              "workers": {"hosts": ["w1", "w2"]}, "control_plane": {"hosts": ["cp1"]}}
    found = waivers.from_inventory(listed, KNOWN)
    assert len(found.waivers) == 1 and found.applies_to[found.waivers[0]] == {"w1", "w2"} and found.warn_days == 30
    listed["_meta"]["hostvars"]["cp1"]["kubeharden_waiver_warn_days"] = "soon"
    with pytest.raises(waivers.WaiverError, match="kubeharden_waiver_warn_days must be a whole number of days"):
        waivers.from_inventory(listed, KNOWN)


def test_active_expiring_expired_and_unused_waivers():
    results = {"cp1": [result("1.2.15", "fail"), result("1.2.1", "fail"), result("1.1.13", "pass")],
               "w1": [result("4.2.1", "fail")]}
    found = waivers.apply(results, accepted(
        entry(),                                                        # active, waives 1.2.15 on cp1
        entry(control="4.2.1", expires="2026-12-20"),                   # expiring in 13 days
        entry(control="1.2.1", expires="2026-12-01"),                   # expired: 1.2.1 fails again
        entry(control="1.1.13")),                                       # 1.1.13 passes: unused
        TODAY)
    assert [r["status"] for r in results["cp1"]] == ["waived", "fail", "pass"]
    assert results["cp1"][0]["evidence"] == "1.2.15 evidence"  # still read and shown
    assert results["cp1"][0]["waiver"]["owner"] == "platform" and results["cp1"][0]["waiver"]["state"] == "active"
    assert results["w1"][0]["status"] == "waived" and results["w1"][0]["waiver"]["state"] == "expiring"
    assert results["cp1"][1]["waiver_expired"]["expires"] == "2026-12-01"
    assert [(w["control"], w["state"], w["days_left"], w["waived_on"], w["failing_on"], w["unused"]) for w in found] \
        == [("1.2.15", "active", 114, ["cp1"], [], False), ("4.2.1", "expiring", 13, ["w1"], [], False),
            ("1.2.1", "expired", -6, [], ["cp1"], False), ("1.1.13", "active", 114, [], [], True)]


def test_a_waiver_covers_only_its_hosts_and_resources():
    results = {"cp1": [result("5.2.2", "fail", ["monitoring/node-exporter-abc", "default/debug"])],
               "cp2": [result("1.2.15", "fail")]}
    found = waivers.apply(results, accepted(entry(control="5.2.2", resources=["monitoring/*"]),
                                            entry(hosts="cp1")), TODAY)
    assert results["cp1"][0]["status"] == "fail"  # default/debug is not covered
    assert results["cp2"][0]["status"] == "fail"  # the 1.2.15 waiver is for cp1 only
    assert [w["unused"] for w in found] == [True, False]  # 1.2.15 is not read on cp1 here: not judged, not unused
    results = {"cp1": [result("5.2.2", "fail", ["monitoring/node-exporter-abc"])]}
    waivers.apply(results, accepted(entry(control="5.2.2", resources=["monitoring/*"])), TODAY)
    assert results["cp1"][0]["status"] == "waived"


def waived_report() -> AuditReport:
    results = {"cp1": [result("1.2.15", "fail"), result("1.2.1", "pass"), result("1.1.13", "fail")]}
    report = AuditReport(CONTROLS, results, limited=True)
    report.waivers = waivers.apply(report.results, accepted(entry(), entry(control="4.2.1", expires="2026-12-10")),
                                   TODAY)
    return report


def test_waived_controls_do_not_fail_the_run_and_never_raise_the_score_silently():
    report = waived_report()
    assert report.score("cp1") == 33.3 and report.score_with_waivers("cp1") == 50.0
    assert report.exit_code("low") == EXIT_FAILED  # 1.1.13 still fails
    report.results["cp1"][2]["status"] = "pass"
    assert report.exit_code("low") == EXIT_OK


def test_every_format_shows_the_waiver_with_its_reason_owner_and_expiry():
    report = waived_report()
    table = render("audit", "table", report)
    assert "== cp1: score 33.3% (50.0% with 1 waived) (1 pass, 1 fail, 0 error, 0 manual, 0 n/a, 1 waived)" in table
    assert ("           waived: kubeharden_waivers[0] by platform until 2027-03-31: profiling is read by our "
            "tracing agent") in table
    assert "== Waiver expiring in 3 day(s), 4.2.1 on all:" in table
    data = json.loads(render("audit", "json", report))
    assert data["nodes"]["cp1"]["score_with_waivers"] == 50.0 and data["waivers"][1]["state"] == "expiring"
    assert data["nodes"]["cp1"]["results"][0]["waiver"]["reason"] == "profiling is read by our tracing agent"
    suite = ET.fromstring(render("audit", "junit", report)).find("testsuite")
    assert suite.get("skipped") == "1" and suite.get("failures") == "1"
    assert suite.find("testcase/skipped").get("message").startswith("waived: kubeharden_waivers[0] by platform")
    sarif = json.loads(render("audit", "sarif", report))["runs"][0]["results"]
    assert [r.get("suppressions", [{}])[0].get("status") for r in sarif] == ["accepted", None]
    metrics = render("audit", "prometheus", report)
    assert 'kubeharden_control_waived{node="cp1",control="1.2.15",owner="platform",expires="2027-03-31"} 1' in metrics
    assert 'kubeharden_waiver_expiring{waiver="1",control="4.2.1",owner="platform",hosts="all"} 1' in metrics
    assert 'kubeharden_node_score_with_waivers{node="cp1"} 50.0' in metrics


def test_drift_never_counts_a_waived_control_and_withholds_the_tags_that_would_undo_it():
    report = waived_report()
    apiserver = {"host": "cp1", "task": "manifest of kube-apiserver", "tags": ["control_plane_apiserver"],
                 "diff": "-a\n+b", "failed": False, "msg": ""}
    files = {"host": "cp1", "task": "modes", "tags": ["control_plane_files"], "diff": "-644\n+600", "failed": False,
             "msg": ""}
    entry_ = classify(CONTROLS, report.results["cp1"], [apiserver, files], None)
    assert entry_["drifted"] == ["1.1.13"] and entry_["waived_pending"] == ["1.2.15"]
    assert entry_["pending"][0]["waived"] == ["1.2.15"] and entry_["pending"][0]["controls"] == []
    drift = DriftReport("run", "2026-12-07T00:00:00+00:00", report, {"cp1": entry_})
    assert withheld_tags(drift, ["cp1"]) == {"cp1": {"1.2.15": ["control_plane_apiserver"]}}
    table = render("drift", "table", drift)
    assert "  WAIVED  1.2.15     yet site.yml would change it back" in table
    assert "pending change tied to no failing control" not in table


def test_the_baseline_lists_every_failing_control_once_and_is_refused_until_reasons_are_written():
    results = {"cp1": [result("1.2.15", "fail"), result("1.2.1", "pass"), result("1.1.13", "fail")],
               "cp2": [result("1.2.15", "fail"), result("1.2.1", "waived")]}
    text = waivers.baseline(results, CATALOGUE, "platform", date(2027, 3, 31), TODAY)
    assert text.startswith("# Waivers for the 2 control(s) failing on 2026-12-07")
    listed = yaml.safe_load(text)["kubeharden_waivers"]
    assert listed == [{"control": "1.1.13", "hosts": "cp1", "owner": "platform", "expires": date(2027, 3, 31),
                       "reason": "TODO"},
                      {"control": "1.2.15", "hosts": "cp1,cp2", "owner": "platform", "expires": date(2027, 3, 31),
                       "reason": "TODO"}]
    with pytest.raises(waivers.WaiverError, match=r"kubeharden_waivers\[0\] \(1.1.13\): reason is still TODO"):
        waivers.parse(listed, KNOWN)


def test_invalid_waivers_stop_the_audit_before_any_node_is_read(tmp_path, capsys, monkeypatch):
    def no_run(*_args, **_kwargs):
        raise AssertionError("the audit ran")

    monkeypatch.setattr("kubeharden.audit.run_playbook", no_run)
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    control_plane:\n      hosts:\n        cp1:\n")
    (tmp_path / "group_vars" / "all" / "waivers.yml").write_text(yaml.safe_dump(
        {"kubeharden_waivers": [entry(control="1.2.99", expires="someday")]}))
    assert main(["audit", "-i", str(tmp_path / "hosts.yml")]) == EXIT_ERROR
    assert capsys.readouterr().err == (
        "kubeharden: invalid waivers, nothing audited:\n"
        "  kubeharden_waivers[0] (1.2.99): control 1.2.99 is not in the catalogue\n"
        "  kubeharden_waivers[0] (1.2.99): expires must be a date (YYYY-MM-DD), not 'someday'\n")


def test_a_remediation_whose_every_tag_would_undo_a_waiver_runs_nothing_and_says_so(tmp_path, monkeypatch):
    """1.2.15 drifted and 1.2.1 is waived on the same node, both fixed under control_plane_apiserver: running that
    tag would undo the waiver, so nothing runs, and 1.2.15 is named as left drifted."""
    from kubeharden import drift

    controls = {cid: CATALOGUE[cid] for cid in ("1.2.15", "1.2.1")}
    results = {"cp1": [result("1.2.15", "fail"), result("1.2.1", "fail")]}
    audit_report = AuditReport(controls, results, limited=True)
    audit_report.waivers = waivers.apply(audit_report.results, accepted(entry(control="1.2.1")), TODAY)
    apiserver = {"host": "cp1", "task": "manifest of kube-apiserver", "tags": ["control_plane_apiserver"],
                 "diff": "-a\n+b", "failed": False, "msg": ""}
    checked = DriftReport("run", "2026-12-07T00:00:00+00:00", audit_report,
                          {"cp1": classify(controls, results["cp1"], [apiserver], None)})

    def no_playbook(*_args, **_kwargs):
        raise AssertionError("site.yml ran")

    monkeypatch.setattr(drift, "check", lambda *args: checked)
    monkeypatch.setattr(drift, "run_playbook", no_playbook)
    found = drift.run_drift(str(tmp_path / "hosts.yml"), state=tmp_path / "state", remediate=True)
    assert found.remediation["tags"] == [] and found.remediation["left_drifted"] == {"cp1": ["1.2.15"]}
    assert found.remediation["withheld"] == {"cp1": {"1.2.1": ["control_plane_apiserver"]}}
    table = render("drift", "table", found)
    assert "Remediation: nothing run, every drifted control's tags would undo a waiver" in table
    assert "  cp1: left drifted (their tags are left out): 1.2.15" in table
    assert found.exit_code() == 1  # still drifted
