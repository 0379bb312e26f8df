"""CIS section 5 read from the cluster's objects (module_utils/kubeharden_cluster.py) and the object comparison
kubeharden_cluster_objects decides changes with. The same readers run against a real apiserver in
tests/lab/test_cluster_policies.py."""

from __future__ import annotations

from ansible.module_utils import kubeharden_cluster as cluster


def ns(name: str, labels: dict | None = None, exempt: str = "", reason: str = "") -> dict:
    annotations = {cluster.EXEMPT_FROM: exempt, cluster.EXEMPTION_REASON: reason} if exempt else {}
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}, "annotations": annotations}}


def pod(namespace: str, name: str, spec: dict) -> dict:
    return {"kind": "Pod", "metadata": {"namespace": namespace, "name": name}, "spec": spec,
            "status": {"phase": "Running"}}


def binding(name: str, role: str, subjects: list[dict], kind: str = "ClusterRoleBinding", labels=None) -> dict:
    return {"kind": kind, "metadata": {"name": name, "labels": labels or {}},
            "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": subjects}


CLUSTER_ADMIN = {"kind": "ClusterRole", "metadata": {"name": "cluster-admin",
                                                     "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                 "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}


def test_cluster_admin_bindings_leave_out_kubernetes_and_kubeadm_and_accepted_subjects():
    objects = [CLUSTER_ADMIN,
               binding("cluster-admin", "cluster-admin", [{"kind": "Group", "name": "system:masters"}],
                       labels={"kubernetes.io/bootstrapping": "rbac-defaults"}),
               binding("kubeadm:cluster-admins", "cluster-admin",
                       [{"kind": "Group", "name": "kubeadm:cluster-admins"}]),
               binding("eve-admin", "cluster-admin",
                       [{"kind": "User", "name": "eve"}, {"kind": "User", "name": "ops"}])]
    assert cluster.cluster_admin_bindings(cluster.ClusterState(objects)) == [
        "ClusterRoleBinding eve-admin: User eve, User ops"]
    assert cluster.cluster_admin_bindings(cluster.ClusterState(objects, ["User ops"])) == [
        "ClusterRoleBinding eve-admin: User eve"]
    # cluster-admin grants everything: its binding is a secrets reader too
    assert cluster.rbac_grants(cluster.ClusterState(objects), ["secrets"], ["get"]) == [
        "ClusterRoleBinding eve-admin -> ClusterRole cluster-admin: User eve, User ops"]


def test_grants_follow_resources_subresources_and_verbs_of_bound_roles_only():
    reader = {"kind": "ClusterRole", "metadata": {"name": "reader"},
              "rules": [{"apiGroups": [""], "resources": ["secrets", "nodes/proxy"], "verbs": ["get", "list"]}]}
    unbound = {"kind": "ClusterRole", "metadata": {"name": "unbound"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]}
    state = cluster.ClusterState([reader, unbound, binding("r", "reader", [{"kind": "Group", "name": "devs"}])])
    assert cluster.rbac_grants(state, ["secrets"], ["get"]) == [
        "ClusterRoleBinding r -> ClusterRole reader: Group devs"]
    assert cluster.rbac_grants(state, ["nodes/proxy"], ["get"]) != []
    assert cluster.rbac_grants(state, ["secrets"], ["create"]) == []
    assert cluster.rbac_grants(state, ["pods"], ["create"]) == []  # nobody is bound to it
    assert cluster.wildcard_roles(state) == []
    wild = {**unbound, "metadata": {"name": "wild"},
            "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}
    assert cluster.wildcard_roles(cluster.ClusterState([wild])) == ["ClusterRole wild: * in resources"]


def test_pod_security_labels_weaker_missing_and_exempt_namespaces():
    state = cluster.ClusterState([
        ns("apps", {cluster.ENFORCE: "restricted"}), ns("legacy", {cluster.ENFORCE: "privileged"}), ns("bare"),
        ns("kube-system", {cluster.ENFORCE: "privileged"}, "pod-security,default-deny", "static pods")])
    offenders, exempt = cluster.pod_security_labels(state, "baseline")
    assert offenders == ["bare: enforce not set", "legacy: enforce privileged"]
    assert exempt == ["kube-system (privileged: static pods)"]
    assert cluster.pod_security_labels(state, "restricted")[0] == offenders  # apps meets restricted


def test_default_deny_needs_both_directions_and_an_empty_selector():
    def policy(namespace, spec):
        return {"kind": "NetworkPolicy", "metadata": {"namespace": namespace, "name": "p"}, "spec": spec}
    state = cluster.ClusterState([
        ns("both"), policy("both", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ns("ingress"), policy("ingress", {"podSelector": {}}),  # policyTypes defaults to Ingress only
        ns("some"), policy("some", {"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Ingress", "Egress"]}),
        ns("allows"), policy("allows", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}]})])
    offenders, _exempt = cluster.default_deny(state)
    assert offenders == ["allows: no default deny of ingress", "ingress: no default deny of egress",
                         "some: no default deny of ingress and egress"]


def test_pods_are_judged_per_container_and_exempt_namespaces_are_counted_with_their_reason():
    token = {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    privileged = pod("apps", "root-shell", {"containers": [{"name": "a"}, {"name": "b",
                                                                            "securityContext": {"privileged": True}}],
                                            "volumes": [token]})
    confined = pod("apps", "web", {"securityContext": {"runAsNonRoot": True,
                                                       "seccompProfile": {"type": "RuntimeDefault"}},
                                   "containers": [{"name": "a", "securityContext": {
                                       "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
                                   "automountServiceAccountToken": False})
    static = pod("kube-system", "etcd-cp1", {"hostNetwork": True, "containers": [{"name": "etcd"}],
                                             "volumes": [{"name": "data", "hostPath": {"path": "/var/lib/etcd"}}]})
    state = cluster.ClusterState([ns("apps"), ns("kube-system", exempt="pod-security", reason="static pods"),
                                  privileged, confined, static])
    assert cluster.pods_with(state, "privileged") == (["apps/root-shell"], [])
    assert cluster.pods_with(state, "host_path") == ([], ["kube-system (static pods): 1 pod(s)"])
    for aspect in ("root", "seccomp", "allow_privilege_escalation", "net_raw", "token_mounted"):
        assert cluster.pods_with(state, aspect)[0] == ["apps/root-shell"], aspect
    assert cluster.exposure(state) == ["Pod kube-system/etcd-cp1: hostNetwork"]


def test_secrets_in_the_environment_and_default_service_accounts():
    token = {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    env = pod("apps", "env", {"volumes": [token], "containers": [{"name": "a", "env": [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]})
    from_secret = pod("apps", "envfrom", {"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "db"}}]}]})
    accounts = [{"kind": "ServiceAccount", "metadata": {"namespace": "apps", "name": "default"}},
                {"kind": "ServiceAccount", "metadata": {"namespace": "quiet", "name": "default"},
                 "automountServiceAccountToken": False}]
    leaving = {**ns("leaving"), "status": {"phase": "Terminating"}}
    state = cluster.ClusterState([ns("apps"), ns("quiet"), ns("new"), leaving, env, from_secret, *accounts])
    assert cluster.pods_with(state, "secret_env")[0] == ["apps/env", "apps/envfrom"]
    # A namespace the controller has not given its account yet gets one that mounts: the audit does not depend
    # on how far the controller got (a fresh cluster audited twice reads the same).
    assert cluster.default_service_accounts(state) == (
        ["apps/default: automountServiceAccountToken not false",
         "new/default: not created yet (the controller creates it with its token mounted)",
         "pod apps/env: default account, token mounted"], [])
    assert cluster.pods_with(state, "default_service_account")[0] == ["apps/env"]  # envfrom mounts no token


def test_exposure_lists_node_ports_load_balancers_external_ips_and_host_ports():
    services = [{"kind": "Service", "metadata": {"namespace": "apps", "name": "web"},
                 "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}},
                {"kind": "Service", "metadata": {"namespace": "apps", "name": "ip"},
                 "spec": {"type": "ClusterIP", "externalIPs": ["192.0.2.10"]}},
                {"kind": "Service", "metadata": {"namespace": "apps", "name": "inside"}, "spec": {"type": "ClusterIP"}}]
    host_port = pod("apps", "agent",
                    {"containers": [{"name": "a", "ports": [{"containerPort": 9100, "hostPort": 9100}]}]})
    assert cluster.exposure(cluster.ClusterState([*services, host_port])) == [
        "Pod apps/agent: hostPort 9100/TCP", "Service apps/ip: externalIPs 192.0.2.10",
        "Service apps/web: NodePort (node ports 30080)"]


def test_comparable_ignores_status_and_bookkeeping_but_not_labels():
    live = {"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"},
            "metadata": {"name": "a", "uid": "1", "resourceVersion": "7", "managedFields": [{}],
                         "labels": {"x": "1"}}}
    planned = {**live, "status": {}, "metadata": {**live["metadata"], "resourceVersion": "8", "managedFields": []}}
    assert cluster.comparable(live) == cluster.comparable(planned)
    relabelled = {**planned, "metadata": {**planned["metadata"], "labels": {"x": "2"}}}
    assert cluster.comparable(live) != cluster.comparable(relabelled)
    assert cluster.identity({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                             "metadata": {"name": "p", "namespace": "n"}}) == (
        "networking.k8s.io", "NetworkPolicy", "n", "p")
    assert cluster.invalid_objects([{"kind": "Namespace", "metadata": {}}, "x"]) == [
        "item 0 has no apiVersion, metadata.name", "item 1 is not a mapping"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}}
    assert cluster.invalid_objects([secret]) == ["item 0 is a Secret, which kubeharden does not apply: its values "
                                                 "would show in the diff and the task's result"]


def test_applied_by_reads_server_side_apply_ownership_only():
    def policy(*entries: tuple[str, str]) -> dict:
        return {"kind": "NetworkPolicy", "metadata": {"name": "kubeharden-default-deny", "managedFields": [
            {"manager": manager, "operation": operation} for manager, operation in entries]}}
    assert cluster.applied_by(policy(("kubeharden", "Apply")), "kubeharden")
    assert cluster.applied_by(policy(("kubectl-edit", "Update"), ("kubeharden", "Apply")), "kubeharden")
    # the same name made with kubectl (client-side apply is an Update), or a manager named alike that only updated
    assert not cluster.applied_by(policy(("kubectl-client-side-apply", "Update")), "kubeharden")
    assert not cluster.applied_by(policy(("kubeharden", "Update")), "kubeharden")
    assert not cluster.applied_by({"kind": "NetworkPolicy", "metadata": {"name": "p"}}, "kubeharden")


POLICY = {"kind": "ValidatingAdmissionPolicy", "metadata": {"name": cluster.IMAGE_POLICY}, "spec": {}}


def image_binding(actions: list[str]) -> dict:
    return {"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": cluster.IMAGE_POLICY},
            "spec": {"policyName": cluster.IMAGE_POLICY, "validationActions": actions}}


def test_the_image_policy_must_exist_deny_and_cover_every_listed_namespace():
    listed = ["default", "shop", "vendor"]
    namespaces = [ns("default"), ns("shop", {cluster.IMAGE_POLICY_EXEMPT: "true"}),
                  ns("vendor", {cluster.IMAGE_POLICY_EXEMPT: "true"}, exempt="image-policy", reason="its own")]
    assert cluster.image_policy(cluster.ClusterState(namespaces), listed)[0] == [
        "no ValidatingAdmissionPolicy kubeharden-image-policy: the apiserver admits images from anywhere"]
    assert "bound nowhere" in cluster.image_policy(cluster.ClusterState([*namespaces, POLICY]), listed)[0][0]
    warned = cluster.ClusterState([*namespaces, POLICY, image_binding(["Warn", "Audit"])])
    offenders, exempt = cluster.image_policy(warned, listed)
    assert offenders == ["binding kubeharden-image-policy: Warn, Audit, not Deny: refused images are reported, and run",
                         "namespace shop: left out of the image policy (kubeharden.io/exempt-image-policy) without a "
                         "recorded exemption"]
    assert exempt == ["vendor (its own)"]
    assert warned.image_policy_enforcing()
    assert not cluster.ClusterState([POLICY, image_binding(["Audit"])]).image_policy_enforcing()
    denied = cluster.ClusterState([ns("default"), POLICY, image_binding(["Deny"])])
    assert cluster.image_policy(denied, ["default", "absent"]) == ([], [])


def test_every_image_of_a_pod_counts():
    running = pod("shop", "web", {"containers": [{"image": "registry.k8s.io/pause:3.10"}],
                                  "initContainers": [{"image": "busybox"}],
                                  "ephemeralContainers": [{"image": "debug:latest"}]})
    assert cluster.pod_images(running) == ["registry.k8s.io/pause:3.10", "busybox", "debug:latest"]


def test_contested_lists_are_the_scalar_lists_holding_an_element_the_policy_does_not_list():
    wanted = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
              "metadata": {"name": "b", "labels": {"a": "1"}},
              "spec": {"validationActions": ["Deny"], "matchResources": {"namespaceSelector": {"matchExpressions": [
                  {"key": "k", "operator": "NotIn", "values": ["x"]}]}}}}
    warned = {**wanted, "spec": {**wanted["spec"], "validationActions": ["Warn"]}}
    assert cluster.contested_lists(wanted, warned) == {"spec": {"validationActions": ["Deny"]}}
    # kubeharden's own list, one it lacks an element of, or a list of maps: the apply decides them alone
    assert cluster.contested_lists(wanted, wanted) == {}
    assert cluster.contested_lists({"spec": {"validationActions": ["Deny", "Audit"]}},
                                   {"spec": {"validationActions": ["Deny"]}}) == {}
    widened = {"spec": {"matchResources": {"namespaceSelector": {"matchExpressions": [
        {"key": "k", "operator": "NotIn", "values": ["x", "y"]}]}}}}
    assert cluster.contested_lists(wanted, widened) == {}
    assert cluster.contested_lists(wanted, None) == {}
    assert cluster.contested_lists({"spec": {"ports": [1, 2]}}, {"spec": {"ports": "1"}}) == {}
