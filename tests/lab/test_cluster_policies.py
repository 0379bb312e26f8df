"""CIS section 5 on a real cluster: the audit's findings over the API, confirmed by the apiserver itself
(`kubectl auth can-i`, Pod Security admission), and the cluster_policies role applied, idempotent and refusing bad
input before any change. One control-plane node of its own (a kubeadm cluster, no site.yml: the role needs only
the API). Removing a label by hand and drift restoring it is in test_drift.py (it needs the hardened state)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from kubeharden.lab import docker
from kubeharden.lab.lab import Topology
from tests.lab.conftest import _lab, playbook, wait_default_service_accounts

pytestmark = pytest.mark.lab

PRIVILEGED_POD = """apiVersion: v1
kind: Pod
metadata: {name: root-shell, namespace: NAMESPACE}
spec:
  containers:
    - {name: pause, image: registry.k8s.io/pause:PAUSE, imagePullPolicy: Never, securityContext: {privileged: true}}
"""
RESTRICTED_POD = """apiVersion: v1
kind: Pod
metadata: {name: confined, namespace: default}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: pause
      image: registry.k8s.io/pause:PAUSE
      imagePullPolicy: Never
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"""
RBAC = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: eve-is-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: eve}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: default}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dev-reads-secrets, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: dev}]
"""


@pytest.fixture(scope="module")
def policies_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, "pytest-policies", Topology(control_planes=1, workers=0))


def kubectl(lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    command = ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "--request-timeout=20s", *args]
    if stdin is None:
        return docker.exec_(lab.container("cp1"), *command, check=False)
    return subprocess.run(["docker", "exec", "-i", lab.container("cp1"), *command], input=stdin,
                          capture_output=True, text=True, check=False)


def pause_tag(lab) -> str:
    """The pause image's tag: the one image every lab node holds (containerd's sandbox image)."""
    config = docker.exec_(lab.container("cp1"), "cat", "/etc/containerd/config.toml").stdout
    return config.split("registry.k8s.io/pause:")[1].split('"')[0]


def audit(lab, tmp_path, controls: str, inventory_vars: dict | None = None) -> dict[str, dict]:
    inventory = lab.inventory_path
    if inventory_vars:
        data = yaml.safe_load(lab.inventory_path.read_text())
        data["all"].setdefault("vars", {}).update(inventory_vars)
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(yaml.safe_dump(data))
    done = subprocess.run(["kubeharden", "audit", "-i", str(inventory), "--controls", controls, "--format", "json",
                           "--state-dir", str(tmp_path / "state"), "--no-progress"], capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return {r["id"]: r for r in json.loads(done.stdout)["nodes"]["cp1"]["results"]}


def labels(lab, namespace: str) -> dict:
    return json.loads(kubectl(lab, "get", "namespace", namespace, "-o", "json").stdout)["metadata"].get("labels", {})


def run_policies(lab, tmp_path, *extra: str, variables: dict | None = None) -> subprocess.CompletedProcess:
    if variables is not None:
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        extra = (*extra, "-e", f"@{tmp_path / 'vars.json'}")
    return playbook(lab, "cluster-policies.yml", *extra)


def test_rbac_findings_are_what_the_apiserver_grants(policies_lab, tmp_path):
    lab = policies_lab
    wait_default_service_accounts(lab)
    stock = audit(lab, tmp_path, "5.1")
    assert {cid for cid, r in stock.items() if r["status"] != "pass"} == {"5.1.5"}  # kubeadm binds only its own
    created = kubectl(lab, "apply", "-f", "-", stdin=RBAC)
    assert created.returncode == 0, created.stderr
    found = audit(lab, tmp_path, "5.1")
    assert found["5.1.1"]["status"] == "manual" and found["5.1.1"]["actual"] == [
        "ClusterRoleBinding eve-is-admin: User eve"]
    assert "RoleBinding default/dev-reads-secrets -> Role default/secret-reader: User dev" in found["5.1.2"]["actual"]
    # The apiserver agrees: eve may do anything, dev may read secrets in default and nowhere else.
    assert kubectl(lab, "auth", "can-i", "*", "*", "--as", "eve").stdout.strip() == "yes"
    assert kubectl(lab, "auth", "can-i", "get", "secrets", "-n", "default", "--as", "dev").stdout.strip() == "yes"
    assert kubectl(lab, "auth", "can-i", "get", "secrets", "-n", "kube-system", "--as", "dev").stdout.strip() == "no"
    assert kubectl(lab, "auth", "can-i", "create", "pods", "-n", "default", "--as", "dev").stdout.strip() == "no"
    assert "User dev" not in " ".join(found["5.1.4"]["actual"])
    # A subject the operator accepts (inventory) is no longer named.
    accepted = audit(lab, tmp_path, "5.1.1,5.1.2", {"cluster_policies_rbac_accepted_subjects": ["User eve"]})
    assert accepted["5.1.1"]["status"] == "pass" and "User eve" not in " ".join(accepted["5.1.2"]["actual"])


def test_bad_input_fails_before_any_change_naming_the_variable(policies_lab, tmp_path):
    lab = policies_lab
    assert kubectl(lab, "create", "namespace", "probe").returncode == 0
    cases = [
        ({"cluster_policies_pod_security_level": "strict"}, "cluster_policies_pod_security_level"),
        ({"cluster_policies_namespaces": [{"name": "probe"}, {"name": "does-not-exist"}]},
         "cluster_policies_namespaces: namespace(s) does-not-exist do not exist"),
        ({"cluster_policies_namespaces": [{"name": "probe", "exempt_from": {"pod-security": True}}]}, "exempt_from"),
        ({"cluster_policies_namespaces": [{"name": "probe", "exempt_from": ["default-deny"]}]},
         "cluster_policies_namespaces[0] (probe): exempt from default-deny without a reason"),
    ]
    for variables, message in cases:
        done = run_policies(lab, tmp_path, variables=variables)
        assert done.returncode != 0 and message in done.stdout, (variables, done.stdout[-2000:])
        assert "changed=0" in done.stdout.split("PLAY RECAP")[-1], variables
    assert not any(k.startswith("pod-security") for k in labels(lab, "probe"))
    assert kubectl(lab, "get", "networkpolicy", "-n", "probe", "-o", "name").stdout.strip() == ""
    assert kubectl(lab, "delete", "namespace", "probe", "--timeout=60s").returncode == 0


def test_policies_check_mode_then_applied_once_then_nothing_to_do(policies_lab, tmp_path):
    lab = policies_lab
    checked = run_policies(lab, tmp_path, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "+    pod-security.kubernetes.io/enforce: restricted" in checked.stdout
    assert "pod-security.kubernetes.io/enforce" not in labels(lab, "default")  # check mode changed nothing
    applied = run_policies(lab, tmp_path)
    assert applied.returncode == 0 and "changed=3" in applied.stdout.split("PLAY RECAP")[-1], applied.stdout[-3000:]
    for extra in ((), ("--check",)):
        again = run_policies(lab, tmp_path, *extra)
        assert "changed=0" in again.stdout.split("PLAY RECAP")[-1] and again.returncode == 0, again.stdout[-3000:]
    assert labels(lab, "default")["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels(lab, "kube-system")["pod-security.kubernetes.io/enforce"] == "privileged"
    results = audit(lab, tmp_path, "5.1.5,5.2,5.3.2")
    assert {cid for cid, r in results.items() if r["status"] != "pass"} == set(), results
    # kube-system is not passing silently: its exemption and reason are the evidence.
    assert "exempt: kube-system (" in results["5.2.2"]["evidence"] + results["5.2.5"]["evidence"]
    assert "host access" in results["5.3.2"]["evidence"]


def test_privileged_pod_is_rejected_where_enforced_and_admitted_where_exempt(policies_lab, tmp_path):
    lab, tag = policies_lab, pause_tag(policies_lab)
    refused = kubectl(lab, "apply", "-f", "-", stdin=PRIVILEGED_POD.replace("NAMESPACE", "default")
                      .replace("PAUSE", tag))
    assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr, refused
    assert "privileged" in refused.stderr
    confined = kubectl(lab, "apply", "-f", "-", stdin=RESTRICTED_POD.replace("PAUSE", tag))
    assert confined.returncode == 0, confined.stderr  # the level rejects what it should, not every pod
    exempt = kubectl(lab, "apply", "-f", "-", stdin=PRIVILEGED_POD.replace("NAMESPACE", "kube-system")
                     .replace("PAUSE", tag))
    assert exempt.returncode == 0, exempt.stderr
    assert 'would violate PodSecurity "restricted:latest"' in exempt.stderr  # warned at the cluster's level
    # Labelling a namespace where such a pod already runs: the apiserver names it, the role passes it on.
    assert kubectl(lab, "create", "namespace", "legacy").returncode == 0
    legacy = kubectl(lab, "apply", "-f", "-", stdin=PRIVILEGED_POD.replace("NAMESPACE", "legacy").replace("PAUSE", tag))
    assert legacy.returncode == 0, legacy.stderr
    labelled = run_policies(lab, tmp_path, "--tags", "cluster_policies_pod_security", variables={
        "cluster_policies_namespaces": [{"name": "legacy"}]})
    assert labelled.returncode == 0, labelled.stdout[-2000:]
    assert 'existing pods in namespace "legacy" violate the new PodSecurity enforce level' in labelled.stderr
    assert audit(lab, tmp_path, "5.2.2")["5.2.2"]["actual"] == ["legacy/root-shell"]
