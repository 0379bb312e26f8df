"""CIS section 5 on a real cluster: the audit's findings over the API, confirmed by the apiserver itself
(`kubectl auth can-i`, Pod Security admission), and the cluster_policies role applied, idempotent and refusing bad
input before any change. One control-plane node of its own (a kubeadm cluster, no site.yml: the role needs only
the API). Removing a label by hand and drift restoring it is in test_drift.py (it needs the hardened state)."""

from __future__ import annotations

import json
import re
import subprocess
import time

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
ETCD_TAG = "ctr -n k8s.io images ls -q | sed -n 's|^registry.k8s.io/etcd:||p' | head -1"
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
    return re.search(r"registry\.k8s\.io/pause:([\w.-]+)", config).group(1)


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
    # kubeadm binds only its own; default accounts mount their token (5.1.5); the cluster's own API clients in
    # kube-system (kube-proxy, CoreDNS, flannel, kube-router) mount theirs, for the operator to judge (5.1.6, manual):
    # kube-system's exemption is recorded by cluster_policies, which has not run yet.
    assert {cid for cid, r in stock.items() if r["status"] != "pass"} == {"5.1.5", "5.1.6"}
    assert stock["5.1.6"]["status"] == "manual"
    clients = ("kube-system/kube-proxy-", "kube-system/coredns-", "kube-system/flannel-", "kube-system/kube-router-")
    mounted = stock["5.1.6"]["actual"]
    assert all(pod.startswith(clients) for pod in mounted), mounted
    assert all(any(pod.startswith(client) for pod in mounted) for client in clients), mounted
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
    found = audit(lab, tmp_path, "5.2.2,KH-K8S-5")
    assert found["5.2.2"]["actual"] == ["legacy/root-shell"]
    # The apiserver's own verdict (a dry run of the label): the same pod, and not the confined one in default.
    assert [line.split(",")[0] for line in found["KH-K8S-5"]["actual"]] == ["legacy: root-shell: privileged"]


# The lab has no registry: the etcd image, on every node, is the one with a TCP server (etcd) and a client
# (etcdctl). Both pods meet the restricted level the role enforces.
NETWORK_POD = """apiVersion: v1
kind: Pod
metadata: {name: NAME, namespace: shop, labels: {app: NAME}}
spec:
  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: etcd
      image: IMAGE
      imagePullPolicy: Never
      command: [etcd, --data-dir=/tmp/etcd, --listen-client-urls=http://0.0.0.0:2379,
                --advertise-client-urls=http://127.0.0.1:2379, --listen-peer-urls=http://127.0.0.1:2380]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"""
ALLOW_CLIENT = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-server, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{protocol: TCP, port: 2379}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-to-server, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: server}}}], ports: [{protocol: TCP, port: 2379}]}]
"""


FOREIGN_DENY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: kubeharden-default-deny, namespace: vendor}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
TAGS = "cluster_policies_network,cluster_policies_service_accounts"


def policies(lab, namespace: str) -> set[str]:
    names = kubectl(lab, "get", "networkpolicies", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}")
    return set(names.stdout.split())


def connects(lab, server_ip: str) -> bool:
    done = kubectl(lab, "exec", "-n", "shop", "client", "--", "etcdctl", f"--endpoints=http://{server_ip}:2379",
                   "--dial-timeout=2s", "--command-timeout=3s", "endpoint", "health")
    return done.returncode == 0


def answers(lab, server_ip: str, connected: bool, attempts: int = 10) -> bool:
    """Whether the client's connection ends `connected` within 10 tries: the engine applies a policy change
    within seconds."""
    for _ in range(attempts):
        if connects(lab, server_ip) == connected:
            return True
        time.sleep(2)
    return False


def test_default_deny_refuses_a_connection_an_allow_policy_lets_through(policies_lab, tmp_path):
    """With the lab's NetworkPolicy engine (kube-router's firewall, a DaemonSet): two pods talk; the role's default
    deny stops them; an explicit allow policy lets the client through again; made exempt, the namespace loses the
    role's own policies (not another's of the same name) and the client connects without any allow policy."""
    lab = policies_lab
    engine = kubectl(lab, "get", "pods", "-n", "kube-system", "-l", "app.kubernetes.io/name=kube-router",
                     "--field-selector=spec.nodeName=cp1,status.phase=Running", "-o", "name")
    assert engine.stdout.strip(), f"no kube-router running on cp1: {engine.stderr}"
    assert kubectl(lab, "create", "namespace", "shop").returncode == 0
    # a pod is refused until the namespace's default account exists (the controller creates it within seconds)
    waited = kubectl(lab, "wait", "--for=create", "serviceaccount/default", "-n", "shop", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    image = f"registry.k8s.io/etcd:{docker.exec_(lab.container('cp1'), 'sh', '-c', ETCD_TAG).stdout.strip()}"
    for name in ("server", "client"):
        created = kubectl(lab, "apply", "-f", "-", stdin=NETWORK_POD.replace("NAME", name).replace("IMAGE", image))
        assert created.returncode == 0, created.stderr
    ready = kubectl(lab, "wait", "-n", "shop", "--for=condition=Ready", "pod/server", "pod/client", "--timeout=90s")
    assert ready.returncode == 0, ready.stderr
    server_ip = kubectl(lab, "get", "pod", "-n", "shop", "server", "-o", "jsonpath={.status.podIP}").stdout.strip()
    assert answers(lab, server_ip, connected=True), "no policy yet: the client must reach the server"

    listed = yaml.safe_load(lab.group_vars_path.read_text())["cluster_policies_namespaces"]  # the lab's own
    denied = run_policies(lab, tmp_path, "--tags", TAGS, variables={
        "cluster_policies_namespaces": [*listed, {"name": "shop"}]})
    assert denied.returncode == 0, denied.stdout[-2000:]
    assert answers(lab, server_ip, connected=False), "the default deny must refuse the connection"

    allowed = kubectl(lab, "apply", "-f", "-", stdin=ALLOW_CLIENT)
    assert allowed.returncode == 0, allowed.stderr
    assert answers(lab, server_ip, connected=True), "the explicit allow policy must let the client through"

    # shop becomes exempt (its allow policies gone first, so only the exemption can let the client through): the
    # role deletes the two policies it applied there and its token mounts again; in vendor, a policy of the same
    # name made by someone else stays.
    assert kubectl(lab, "delete", "-f", "-", stdin=ALLOW_CLIENT).returncode == 0
    assert answers(lab, server_ip, connected=False), "without the allow policies the default deny refuses again"
    assert kubectl(lab, "create", "namespace", "vendor").returncode == 0
    assert kubectl(lab, "apply", "-f", "-", stdin=FOREIGN_DENY).returncode == 0
    exempt = {"cluster_policies_namespaces": [
        *listed, {"name": "shop", "exempt_from": ["default-deny", "service-account-token"], "reason": "a test"},
        {"name": "vendor", "exempt_from": ["default-deny"], "reason": "its own policies"}]}
    checked = run_policies(lab, tmp_path, "--tags", TAGS, "--check", "--diff", variables=exempt)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "NetworkPolicy/shop/kubeharden-default-deny (deleted)" in checked.stdout, checked.stdout[-3000:]
    assert policies(lab, "shop") == {"kubeharden-default-deny", "kubeharden-allow-dns"}  # check mode kept them
    withdrawn = run_policies(lab, tmp_path, "--tags", TAGS, variables=exempt)
    assert withdrawn.returncode == 0 and "changed=2" in withdrawn.stdout.split("PLAY RECAP")[-1], \
        withdrawn.stdout[-3000:]
    assert policies(lab, "shop") == set() and policies(lab, "vendor") == {"kubeharden-default-deny"}
    assert ("NetworkPolicy/vendor/kubeharden-default-deny is not kubeharden's (another manager made it): left in "
            "place") in " ".join(withdrawn.stderr.split()), withdrawn.stderr
    account = json.loads(kubectl(lab, "get", "serviceaccount", "-n", "shop", "default", "-o", "json").stdout)
    assert "automountServiceAccountToken" not in account, account
    assert answers(lab, server_ip, connected=True), "exempt from default deny: the client reaches the server again"
    again = run_policies(lab, tmp_path, "--tags", TAGS, variables=exempt)
    assert again.returncode == 0 and "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-3000:]


AGNHOST_POD = """apiVersion: v1
kind: Pod
metadata: {name: POD_NAME, namespace: POD_NAMESPACE}
spec:
  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: agnhost
      image: IMAGE
      imagePullPolicy: Never
      args: [pause]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"""
# The lab's own registries: the cluster's images (kubeadm's, flannel's, kube-router's) keep running and updating.
LAB_REGISTRIES = ["registry.k8s.io/", "ghcr.io/flannel-io/", "docker.io/cloudnativelabs/"]


def agnhost_pod(name: str, namespace: str, image: str) -> str:
    return AGNHOST_POD.replace("POD_NAMESPACE", namespace).replace("POD_NAME", name).replace("IMAGE", image)


def denials(lab) -> float:
    """The apiserver's own count of the image policy's denials (what the Prometheus rule reads)."""
    metrics = kubectl(lab, "get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("apiserver_validating_admission_policy_check_total{")
               and 'policy="kubeharden-image-policy"' in line and 'enforcement_action="deny"' in line)


def settled(lab, pod: str, holds, timeout: float = 60) -> subprocess.CompletedProcess:
    """The apiserver's answer to a server-side dry run of `pod` once `holds(answer)`: a new or changed policy binding
    takes effect when the apiserver's informer sees it, a moment after it is applied. Bounded; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = kubectl(lab, "apply", "--dry-run=server", "-f", "-", stdin=pod)
        if holds(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(1)


def test_the_apiserver_admits_only_images_from_the_allowed_registries(policies_lab, tmp_path):
    """The image policy as the real apiserver applies it: an image from another registry and one tagged latest are
    refused with the rule's message, an allowed one is admitted, an exempt namespace admits any; a pod that ran
    before the policy is listed by the audit; drift restores a deleted binding."""
    lab = policies_lab
    agnhost = docker.exec_(lab.container("cp1"), "sh", "-c", "ctr -n k8s.io images ls -q | grep /agnhost: | head -1"
                           ).stdout.strip()
    # The same image under another registry's name and under the tag latest: present on the node, never pulled.
    elsewhere, latest = "quay.io/legacy/agnhost:2.66", agnhost.rsplit(":", 1)[0] + ":latest"
    for name in (elsewhere, latest):
        docker.exec_(lab.container("cp1"), "ctr", "-n", "k8s.io", "images", "tag", "--force", agnhost, name)
    for namespace in ("store", "partner"):
        assert kubectl(lab, "create", "namespace", namespace).returncode == 0
        waited = kubectl(lab, "wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
        assert waited.returncode == 0, waited.stderr
    before = kubectl(lab, "apply", "-f", "-", stdin=agnhost_pod("legacy", "store", elsewhere))
    assert before.returncode == 0, before.stderr  # no policy yet: anything runs
    listed = yaml.safe_load(lab.group_vars_path.read_text())["cluster_policies_namespaces"]  # the lab's own
    policy = {"cluster_policies_image_policy": True, "cluster_policies_image_registries": LAB_REGISTRIES,
              "cluster_policies_namespaces": [
                  *listed, {"name": "store"},
                  {"name": "partner", "exempt_from": ["image-policy"], "reason": "the partner's own images"}]}
    # Bad input first: on without registries stops before any change, naming the variable.
    empty = run_policies(lab, tmp_path, variables={**policy, "cluster_policies_image_registries": []})
    assert empty.returncode != 0 and "cluster_policies_image_registries: empty" in empty.stdout, empty.stdout[-2000:]
    assert kubectl(lab, "get", "validatingadmissionpolicy", "kubeharden-image-policy").returncode != 0

    # Rolled out as README says: warnings first (nothing refused), then Deny. The inventory holds the decision, so
    # that drift finds the same.
    # Loaded after the lab's own lab.yml (Ansible reads a group's directory in name order): its list wins.
    inventory_vars = lab.group_vars_path.with_name("policy.yml")
    inventory_vars.write_text(yaml.safe_dump({**policy, "cluster_policies_image_policy_actions": ["Warn", "Audit"]}))
    warned = run_policies(lab, tmp_path)
    assert warned.returncode == 0, warned.stdout[-3000:]
    warning = f"kubeharden-image-policy: {elsewhere} not from an allowed registry"
    admitted = settled(lab, agnhost_pod("try", "store", elsewhere), lambda answer: warning in answer.stderr)
    assert admitted.returncode == 0 and warning in admitted.stderr, admitted
    inventory_vars.write_text(yaml.safe_dump(policy))
    denied = run_policies(lab, tmp_path)
    assert denied.returncode == 0 and "changed=1" in denied.stdout.split("PLAY RECAP")[-1], denied.stdout[-3000:]
    counted = denials(lab)
    assert settled(lab, agnhost_pod("probe", "store", elsewhere), lambda answer: answer.returncode != 0).returncode

    refused = kubectl(lab, "apply", "-f", "-", stdin=agnhost_pod("elsewhere", "store", elsewhere))
    assert refused.returncode != 0, refused.stdout
    assert f"kubeharden-image-policy: {elsewhere} not from an allowed registry: registry.k8s.io/" in refused.stderr
    unpinned = kubectl(lab, "apply", "-f", "-", stdin=agnhost_pod("unpinned", "store", latest))
    assert unpinned.returncode != 0 and f"{latest} has no tag or the tag latest" in unpinned.stderr, unpinned.stderr
    allowed = kubectl(lab, "apply", "-f", "-", stdin=agnhost_pod("allowed", "store", agnhost))
    assert allowed.returncode == 0, allowed.stderr  # a restricted pod from an allowed registry, tagged
    exempt = kubectl(lab, "apply", "-f", "-", stdin=agnhost_pod("theirs", "partner", elsewhere))
    assert exempt.returncode == 0, exempt.stderr
    workload = kubectl(lab, "create", "deployment", "web", "-n", "store", f"--image={latest}")
    assert workload.returncode != 0 and "kubeharden-image-policy" in workload.stderr, workload  # pod templates too
    assert denials(lab) >= counted + 3  # the apiserver counted each denial (KubehardenImagePolicyRefused reads it)

    found = audit(lab, tmp_path, "5.5.1,KH-K8S-6", inventory_vars=policy)
    assert found["5.5.1"]["status"] == "pass", found["5.5.1"]
    assert "partner (the partner's own images)" in found["5.5.1"]["evidence"]
    assert found["KH-K8S-6"]["actual"] == [f"store/legacy: {elsewhere} not from an allowed registry: "
                                           f"{', '.join(LAB_REGISTRIES)} (cluster_policies_image_registries)"]

    # Someone deletes the binding: the apiserver admits the image again, 5.5.1 fails, and the control's one place of
    # repair (its tag, which drift --remediate runs for it) restores it. drift itself is proven on a hardened lab
    # (test_drift.py): this node never ran site.yml, so every control it fails would be drift.
    assert kubectl(lab, "delete", "validatingadmissionpolicybinding", "kubeharden-image-policy").returncode == 0
    reopened = settled(lab, agnhost_pod("reopened", "store", elsewhere), lambda answer: answer.returncode == 0)
    assert reopened.returncode == 0, reopened.stderr
    unbound = audit(lab, tmp_path, "5.5.1", inventory_vars=policy)["5.5.1"]  # a manual control: not a pass
    assert unbound["status"] != "pass" and unbound["actual"] == [
        "ValidatingAdmissionPolicy kubeharden-image-policy is bound nowhere: it judges nothing"], unbound
    repaired = run_policies(lab, tmp_path, "--tags", "cluster_policies_image_policy")
    assert repaired.returncode == 0 and "changed=1" in repaired.stdout.split("PLAY RECAP")[-1], repaired.stdout[-3000:]
    assert audit(lab, tmp_path, "5.5.1", inventory_vars=policy)["5.5.1"]["status"] == "pass"
    again = settled(lab, agnhost_pod("again", "store", elsewhere), lambda answer: answer.returncode != 0)
    assert again.returncode != 0 and "kubeharden-image-policy" in again.stderr
    # Someone switches the binding to Warn: the apiserver admits with a warning, 5.5.1 names the action, and the
    # same tag sets Deny again.
    warned = kubectl(lab, "patch", "validatingadmissionpolicybinding", "kubeharden-image-policy", "--type=merge",
                     "-p", '{"spec": {"validationActions": ["Warn"]}}')
    assert warned.returncode == 0, warned.stderr
    softened = audit(lab, tmp_path, "5.5.1", inventory_vars=policy)["5.5.1"]
    assert softened["status"] != "pass" and "Warn, not Deny" in " ".join(softened["actual"]), softened
    actions = ("get", "validatingadmissionpolicybinding", "kubeharden-image-policy", "-o",
               "jsonpath={.spec.validationActions}")
    # Server-side apply alone would keep the hand-made Warn beside Deny (a set-typed list), which the apiserver
    # refuses: check mode plans the whole list's take-over and changes nothing.
    planned = run_policies(lab, tmp_path, "--tags", "cluster_policies_image_policy", "--check", "--diff")
    assert planned.returncode == 0 and "changed=1" in planned.stdout.split("PLAY RECAP")[-1], planned.stdout[-3000:]
    assert re.search(r"^-.*\bWarn\b", planned.stdout, re.M) and re.search(r"^\+.*\bDeny\b", planned.stdout, re.M), \
        planned.stdout[-3000:]
    assert kubectl(lab, *actions).stdout == '["Warn"]'
    repaired = run_policies(lab, tmp_path, "--tags", "cluster_policies_image_policy")
    assert repaired.returncode == 0 and "changed=1" in repaired.stdout.split("PLAY RECAP")[-1], repaired.stdout[-3000:]
    assert kubectl(lab, *actions).stdout == '["Deny"]'
    settled_again = run_policies(lab, tmp_path, "--tags", "cluster_policies_image_policy")
    assert "changed=0" in settled_again.stdout.split("PLAY RECAP")[-1], settled_again.stdout[-3000:]
    images = subprocess.run(["kubeharden", "images", "-i", str(lab.inventory_path), "--format", "json"],
                            capture_output=True, text=True)
    rows = {(r["namespace"], r["pod"]): r for r in json.loads(images.stdout)["images"]}
    assert rows[("store", "legacy")]["image"] == elsewhere and rows[("store", "legacy")]["node"] == "cp1"
    assert rows[("store", "legacy")]["digest"], "the digest the node resolved"
    inventory_vars.unlink()
