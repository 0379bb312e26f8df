import json
import xml.etree.ElementTree as ET

import pytest

from kubeharden import catalogue
from kubeharden.audit import EXIT_ERROR, EXIT_FAILED, EXIT_OK, AuditReport
from kubeharden.formats import render
from kubeharden.formats.data import audit as to_json
from kubeharden.formats.junit import audit as to_junit
from kubeharden.formats.prometheus import audit as to_prometheus
from kubeharden.formats.sarif import audit as to_sarif
from kubeharden.formats.table import audit as to_table

CONTROLS = {c["id"]: c for c in catalogue.load()
            if c["id"] in ("1.2.15", "1.2.5", "4.2.13", "KH-OS-9.2", "KH-EXP-1")}


def result(cid, status, evidence="--profiling not set"):
    return {"id": cid, "status": status, "expected": "eq false", "actual": None, "evidence": evidence,
            "reason": "boom" if status == "error" else ""}


@pytest.fixture
def report():
    return AuditReport(CONTROLS, {"cp1": [result("1.2.15", "fail"), result("1.2.5", "pass"),
                                          result("4.2.13", "manual"), result("KH-OS-9.2", "not_applicable")],
                                  "w1": [result("4.2.13", "pass")]},
                       limited=True)  # KH-EXP-1 is judged nowhere here: the unjudged controls have their own test


def test_exit_code_follows_threshold(report):
    assert report.exit_code("low") == EXIT_FAILED
    assert report.exit_code("high") == EXIT_OK  # 1.2.15 is medium
    report.results["w1"].append(result("KH-OS-9.2", "error"))
    assert report.exit_code("high") == EXIT_ERROR


def test_controls_no_host_could_judge_are_an_error_not_a_full_score():
    """An inventory without control-plane hosts (kubespray's group names, unmapped) judged only the workers: the
    control-plane controls are named, and the audit is an error, not a pass."""
    workers_only = AuditReport(CONTROLS, {"w1": [result("4.2.13", "pass"), result("KH-OS-9.2", "pass")]})
    assert workers_only.score("w1") == 100.0
    assert workers_only.exit_code("low") == EXIT_ERROR
    assert set(workers_only.unjudged_roles()) == {"control_plane", "cluster"}
    table = to_table(workers_only)
    assert "NOT JUDGED: 2 selected control(s) for control_plane nodes" in table and "kube_control_plane" in table
    assert json.loads(to_json(workers_only))["unjudged"]["control_plane"] == ["1.2.5", "1.2.15"]
    limited = AuditReport(CONTROLS, workers_only.results, limited=True)  # --limit w1 leaves them out on purpose
    assert limited.exit_code("low") == EXIT_OK and "NOT JUDGED" not in to_table(limited)


def test_unreachable_host_is_an_error(report):
    report.host_errors["w2"] = "unreachable"
    assert report.exit_code("high") == EXIT_ERROR
    assert "w2: NOT AUDITED" in to_table(report)


def test_score_counts_decided_controls_only(report):
    assert report.score("cp1") == 50.0 and report.score("w1") == 100.0


def test_table_groups_by_node_and_section_and_names_the_fix(report):
    table = to_table(report)
    assert "== cp1: score 50.0%" in table and "1.2 API server: 1/2 pass" in table
    assert "fix: role control_plane, variable control_plane_apiserver_flags" in table


def test_table_shows_the_clusters_exposure_as_one_table(report):
    assert "Exposed outside the cluster network" not in to_table(report)  # not read in this audit
    exposed = ["Pod kube-system/etcd-cp1: hostNetwork", "Service apps/web: NodePort (node ports 30080)"]
    report.results["cp1"].append({**result("KH-EXP-1", "manual", "2 exposed"), "actual": exposed})
    table = to_table(report).splitlines()
    start = table.index("== Exposed outside the cluster network (KH-EXP-1, read from cp1): 2")
    assert table[start + 1:start + 3] == ["   Pod kube-system/etcd-cp1  hostNetwork",
                                          "   Service apps/web          NodePort (node ports 30080)"]


def test_junit_has_a_suite_per_node(report):
    root = ET.fromstring(to_junit(report))
    cp1 = root.find("testsuite[@name='cp1']")
    assert cp1.get("failures") == "1" and cp1.get("skipped") == "2"
    assert cp1.find("testcase/failure").get("type") == "medium"


def test_sarif_reports_failures_with_levels(report):
    sarif = json.loads(to_sarif(report))
    results = sarif["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [("1.2.15", "warning")]
    assert {rule["id"] for rule in sarif["runs"][0]["tool"]["driver"]["rules"]} == set(CONTROLS)


def test_prometheus_exposition(report):
    text = to_prometheus(report)
    assert 'kubeharden_control_passed{node="cp1",control="1.2.15",severity="medium",section="1.2 API server"} 0' \
        in text
    assert 'kubeharden_controls{node="cp1",status="manual"} 1' in text
    assert 'kubeharden_node_score{node="w1"} 100.0' in text


def test_prometheus_exposition_has_days_left_per_certificate(report):
    report.certificates["cp1"] = [{"name": "/etc/kubernetes/admin.conf (user kubernetes-admin)", "days_left": 9,
                                   "subject": '/O=kubeadm:cluster-admins/CN="admin"', "managed_by": "kubeharden"}]
    text = to_prometheus(report)
    assert ('kubeharden_certificate_expiry_days{node="cp1",certificate="/etc/kubernetes/admin.conf (user '
            'kubernetes-admin)",subject="/O=kubeadm:cluster-admins/CN=\\"admin\\"",managed_by="kubeharden"} 9') in text
    assert "# TYPE kubeharden_certificate_expiry_days gauge" in text


def test_images_in_use_are_listed_per_container_with_the_digest_the_node_resolved():
    from kubeharden import images

    pods = {"items": [
        {"metadata": {"namespace": "shop", "name": "web"}, "status": {
            "phase": "Running",
            "initContainerStatuses": [{"name": "setup", "imageID": "docker.io/library/busybox@sha256:11"}],
            "containerStatuses": [{"name": "nginx", "imageID": "docker.io/library/nginx@sha256:22"}]},
         "spec": {"nodeName": "w1", "initContainers": [{"name": "setup", "image": "busybox:1.36"}],
                  "containers": [{"name": "nginx", "image": "nginx:1.27"}]}},
        {"metadata": {"namespace": "shop", "name": "done"}, "status": {"phase": "Succeeded"},
         "spec": {"containers": [{"name": "job", "image": "job:1"}]}},
        {"metadata": {"namespace": "app", "name": "pending"}, "status": {"phase": "Pending"},
         "spec": {"containers": [{"name": "api", "image": "registry.example.com/api:2"}]}},
    ]}
    rows = images.running_images(pods)
    assert [(r.namespace, r.pod, r.node, r.container, r.image, r.digest) for r in rows] == [
        ("app", "pending", "", "api", "registry.example.com/api:2", ""),
        ("shop", "web", "w1", "nginx", "nginx:1.27", "docker.io/library/nginx@sha256:22"),
        ("shop", "web", "w1", "setup", "busybox:1.36", "docker.io/library/busybox@sha256:11")]
    table = render("images", "table", rows)
    assert table.splitlines()[0].split() == ["NAMESPACE", "POD", "NODE", "CONTAINER", "IMAGE", "DIGEST"]
    assert table.rstrip().endswith("3 container(s), 3 distinct image(s)")
    assert json.loads(render("images", "json", rows))["images"][1]["digest"] == "docker.io/library/nginx@sha256:22"
