"""The roles' logic that used to live in Jinja expressions: the apiserver's flags, the firewall's port matrix,
the units node_os manages and etcd's own settings, as plain functions (roles/*/filter_plugins)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tests.conftest import ROOT


def load(role: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "roles" / role / "filter_plugins" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apiserver = load("control_plane", "apiserver_flags").apiserver_effective_flags
firewall = load("firewall", "firewall_rules").firewall_node_rules
units = load("node_os", "node_os_units").node_os_managed_units
CONTROL_PLANE = yaml.safe_load((ROOT / "roles/control_plane/defaults/main.yml").read_text())


def apiserver_flags(**changes):
    choices = {"audit_log": CONTROL_PLANE["control_plane_audit_log"], "admission_dir": "/etc/kubernetes/admission",
               "authentication_dir": "/etc/kubernetes/authentication",
               "tls_cipher_suites": CONTROL_PLANE["control_plane_tls_cipher_suites"], "request_timeout": "",
               "kubelet_certificate_authority": "/etc/kubernetes/pki/ca.crt", "encryption_config_exists": True,
               "encryption_provider_config": "/etc/kubernetes/enc/encryption-config.yaml",
               "encryption_automatic_reload": False, "anonymous_mode": "endpoints", "extra_flags": {}}
    return apiserver(CONTROL_PLANE["control_plane_apiserver_flags"], **{**choices, **changes})


def test_the_apiserver_gets_a_flag_for_each_choice_of_the_defaults():
    flags = apiserver_flags()
    assert flags["audit-log-path"] == "/var/log/kubernetes/audit/audit.log" and flags["audit-log-maxage"] == "30"
    assert flags["admission-control-config-file"] == "/etc/kubernetes/admission/admission-config.yaml"
    assert flags["tls-cipher-suites"] == ",".join(CONTROL_PLANE["control_plane_tls_cipher_suites"])
    assert flags["kubelet-certificate-authority"] == "/etc/kubernetes/pki/ca.crt"
    assert flags["encryption-provider-config-automatic-reload"] is None  # removed: the restart picks keys up
    assert flags["anonymous-auth"] is None  # the AuthenticationConfiguration decides instead
    assert flags["authentication-config"] == "/etc/kubernetes/authentication/authentication-config.yaml"
    assert "request-timeout" not in flags


@pytest.mark.parametrize(("changes", "expected", "absent"), [
    ({"anonymous_mode": "disabled"}, {"anonymous-auth": "false"}, ["authentication-config"]),
    ({"encryption_config_exists": False}, {}, ["encryption-provider-config"]),
    ({"encryption_automatic_reload": True}, {"encryption-provider-config-automatic-reload": "true"}, []),
    ({"tls_cipher_suites": [], "kubelet_certificate_authority": ""}, {},
     ["tls-cipher-suites", "kubelet-certificate-authority"]),
    ({"request_timeout": "300s"}, {"request-timeout": "300s"}, []),
    ({"extra_flags": {"profiling": "true", "audit-log-maxage": "90"}}, {"profiling": "true", "audit-log-maxage": "90"},
     []),
])
def test_each_apiserver_choice_changes_only_its_flags(changes, expected, absent):
    flags = apiserver_flags(**changes)
    assert {name: flags[name] for name in expected} == expected
    assert not set(absent) & set(flags)


FIREWALL_CHOICES = {
    "ssh_port": 22, "admin_cidrs": ["192.0.2.0/24"], "control_plane_addresses": ["10.0.0.1", "10.0.0.2"],
    "pod_cidrs": ["10.244.0.0/16"], "is_control_plane": False, "apiserver_sources": ["0.0.0.0/0"],
    "etcd_addresses": ["10.0.0.2", "10.0.0.5"], "is_worker": True, "kube_proxy_health_sources": ["10.0.0.0/8"],
    "nodeports_enabled": False, "nodeport_range": "30000-32767", "nodeport_sources": ["0.0.0.0/0"],
    "cni_presets": [], "cni_ports": {"vxlan": [{"proto": "udp", "ports": ["4789", "8472"]}]},
    "cluster_addresses": ["10.0.0.1", "10.0.0.9"]}


def node_rules(extra=(), **changes):
    return firewall(list(extra), **{**FIREWALL_CHOICES, **changes})


def test_a_worker_opens_ssh_kubelet_and_kube_proxy_health_only():
    rules = node_rules()
    assert [(r["comment"], r["ports"]) for r in rules] == [
        ("ssh", ["22"]), ("kubelet API from control plane and pods", ["10250"]), ("kube-proxy health", ["10256"])]
    assert rules[1]["sources"] == ["10.0.0.1", "10.0.0.2", "10.244.0.0/16"]


def test_a_control_plane_node_opens_the_apiserver_and_etcd_to_members_and_control_planes_once_each():
    rules = {r["comment"]: r for r in node_rules(is_control_plane=True, is_worker=False)}
    assert rules["kube-apiserver"]["ports"] == ["6443"] and "kube-proxy health" not in rules
    assert rules["etcd from members and control plane"]["sources"] == ["10.0.0.2", "10.0.0.5", "10.0.0.1"]


def test_nodeports_cni_presets_and_extra_rules_come_last():
    exporter = {"proto": "tcp", "ports": ["9100"], "sources": ["10.0.0.0/8"], "comment": "node exporter"}
    rules = node_rules([exporter], nodeports_enabled=True, cni_presets=["vxlan"])
    assert [r["comment"] for r in rules][-4:] == ["NodePort tcp", "NodePort udp", "CNI between nodes", "node exporter"]
    assert rules[-2] == {"proto": "udp", "ports": ["4789", "8472"], "sources": ["10.0.0.1", "10.0.0.9"],
                         "comment": "CNI between nodes"}


def node_units(pending=(), **changes):
    choices = {"container": False, "auditd": True, "services": True, "swap_off": True, "time_sync": True,
               "has_chrony": False, "apparmor": True, "security_packages": ["fail2ban", "debsums"],
               "changed_files": [], "aide": True, "journald": True}
    return {u["name"]: u for u in units(list(pending), **{**choices, **changes})}


def test_node_os_starts_its_daemons_on_a_machine_and_only_enables_them_in_a_container():
    machine, container = node_units(), node_units(container=True)
    assert machine["auditd.service"]["state"] == "started" and container["auditd.service"]["state"] is None
    assert machine["systemd-timesyncd.service"]["enabled"] and "chrony.service" in node_units(has_chrony=True)
    assert machine["systemd-timesyncd.service"]["state"] == "started"
    servers = node_units(changed_files=["/etc/systemd/timesyncd.conf.d/kubeharden.conf"])
    assert servers["systemd-timesyncd.service"] == {"name": "systemd-timesyncd.service", "enabled": True,
                                                    "state": "restarted", "restart": True}
    assert machine["swap.target"] == {"name": "swap.target", "masked": True}
    assert machine["fail2ban.service"]["restart"] is False
    assert node_units(changed_files=["/etc/fail2ban/jail.local"])["fail2ban.service"]["restart"] is True
    assert machine["dailyaidecheck.timer"]["state"] == "started" and container["dailyaidecheck.timer"]["state"] is None
    # journald runs wherever systemd does: restarted, in a container too, only when its drop-in changed
    assert container["systemd-journald.service"] == {"name": "systemd-journald.service", "state": "restarted",
                                                      "restart": False}
    changed = node_units(container=True, changed_files=["/etc/systemd/journald.conf.d/kubeharden.conf"])
    assert changed["systemd-journald.service"]["restart"] is True


def test_a_unit_whose_package_is_not_installed_yet_is_left_alone_in_check_mode():
    pending = node_units(pending=["auditd", "apparmor", "fail2ban", "aide-common"])
    assert not {"auditd.service", "apparmor.service", "fail2ban.service", "dailyaidecheck.timer"} & set(pending)
    assert set(node_units(services=False, aide=False)) == {"auditd.service"}


cluster_policies = load("cluster_policies", "cluster_policies")
CLUSTER_POLICIES = yaml.safe_load((ROOT / "roles/cluster_policies/defaults/main.yml").read_text())
SETTINGS = {"level": "restricted", "version": "latest", "dns": CLUSTER_POLICIES["cluster_policies_dns"]}


def test_cluster_policies_defaults_label_every_namespace_and_exempt_kube_system_with_its_reason():
    namespaces = CLUSTER_POLICIES["cluster_policies_namespaces"]
    labelled = {o["metadata"]["name"]: o["metadata"] for o in
                cluster_policies.cluster_policies_objects(namespaces, "pod_security", SETTINGS)}
    assert set(labelled) == {"default", "kube-public", "kube-node-lease", "kube-system"}
    assert labelled["default"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "annotations" not in labelled["default"]
    system = labelled["kube-system"]
    assert system["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert system["labels"]["pod-security.kubernetes.io/warn"] == "restricted"  # violations stay visible
    assert system["annotations"]["kubeharden.io/exempt-from"] == "pod-security,default-deny,service-account-token"
    assert "host access" in system["annotations"]["kubeharden.io/exemption-reason"]
    network = cluster_policies.cluster_policies_objects(namespaces, "network", SETTINGS)
    assert {o["metadata"]["namespace"] for o in network} == {"default", "kube-public", "kube-node-lease"}
    accounts = cluster_policies.cluster_policies_objects(namespaces, "service_accounts", SETTINGS)
    # kube-system's account is applied without the field: a token kubeharden stopped there before mounts again
    assert {o["metadata"]["namespace"]: o.get("automountServiceAccountToken") for o in accounts} == {
        "default": False, "kube-public": False, "kube-node-lease": False, "kube-system": None}
    assert cluster_policies.cluster_policies_withdrawn(namespaces, "network") == [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": name, "namespace": "kube-system"}}
        for name in ("kubeharden-default-deny", "kubeharden-allow-dns")]
    assert cluster_policies.cluster_policies_withdrawn([{"name": "team-a"}], "network") == []
    with pytest.raises(ValueError, match="only the network and image_policy areas"):
        cluster_policies.cluster_policies_withdrawn(namespaces, "service_accounts")


def test_cluster_policies_default_deny_allows_dns_only_to_the_dns_pods():
    deny, dns = cluster_policies.cluster_policies_objects([{"name": "team-a"}], "network", SETTINGS)
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    rule = dns["spec"]["egress"][0]
    assert rule["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert rule["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_cluster_policies_a_weaker_level_is_an_exemption_that_needs_a_reason():
    weaker = {"name": "legacy", "pod_security": "baseline"}
    assert cluster_policies.cluster_policies_problems([weaker], "restricted") == [
        "cluster_policies_namespaces[0] (legacy): exempt from pod-security without a reason (set reason: why)"]
    assert cluster_policies.cluster_policies_problems([weaker], "baseline") == []
    (namespace,) = cluster_policies.cluster_policies_objects([{**weaker, "reason": "old images run as root"}],
                                                             "pod_security", SETTINGS)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert namespace["metadata"]["annotations"]["kubeharden.io/exempt-from"] == "pod-security"
    assert cluster_policies.cluster_policies_problems([{"name": "a"}, {"name": "a"}], "restricted") == [
        "cluster_policies_namespaces[1] (a): listed twice"]
    with pytest.raises(ValueError, match="unknown area"):
        cluster_policies.cluster_policies_objects([], "rbac", SETTINGS)


IMAGE = {"enabled": True, "registries": ["registry.k8s.io/", "registry.example.com:5000/team/"], "actions": ["Deny"],
         "require_digest": False}


@pytest.mark.parametrize(("image", "message"), [
    ({**IMAGE, "registries": []}, "cluster_policies_image_registries: empty while cluster_policies_image_policy is on"),
    ({**IMAGE, "registries": ["registry.k8s.io"]}, "cluster_policies_image_registries[0] ('registry.k8s.io'): not a"),
    ({**IMAGE, "registries": ["Registry.K8s.io/"]}, "cluster_policies_image_registries[0]"),
    ({**IMAGE, "registries": ["docker.io/*"]}, "cluster_policies_image_registries[0] ('docker.io/*')"),
    ({**IMAGE, "actions": ["Block"]}, "cluster_policies_image_policy_actions (['Block']): one or more of Deny"),
    ({**IMAGE, "actions": ["Deny", "Warn"]}, "cluster_policies_image_policy_actions: Deny and Warn together"),
])
def test_image_policy_bad_input_is_named_before_any_change(image, message):
    problems = cluster_policies.cluster_policies_problems([], "restricted", image)
    assert any(problem.startswith(message) for problem in problems), problems


def test_image_policy_off_needs_no_registries_and_withdraws_kubehardens_objects():
    off = {**IMAGE, "enabled": False, "registries": []}
    assert cluster_policies.cluster_policies_problems([], "restricted", off) == []
    settings = {**SETTINGS, "image": off}
    assert cluster_policies.cluster_policies_objects([], "image_policy", settings) == []
    withdrawn = cluster_policies.cluster_policies_withdrawn([], "image_policy", settings)
    assert [(o["kind"], o["metadata"]["name"]) for o in withdrawn] == [
        ("ValidatingAdmissionPolicyBinding", "kubeharden-image-policy"),
        ("ValidatingAdmissionPolicy", "kubeharden-image-policy")]
    assert cluster_policies.cluster_policies_withdrawn([], "image_policy", {**SETTINGS, "image": IMAGE}) == []


def test_image_policy_covers_pod_templates_and_leaves_out_exempt_namespaces():
    policy, binding = cluster_policies.cluster_policies_objects([], "image_policy", {**SETTINGS, "image": IMAGE})
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert {r for rule in rules for r in rule["resources"]} == {
        "pods", "pods/ephemeralcontainers", "replicationcontrollers", "deployments", "replicasets", "statefulsets",
        "daemonsets", "jobs", "cronjobs"}
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert json.loads(variables["registries"]) == IMAGE["registries"]  # a CEL list literal
    assert "ephemeralContainers" in variables["images"] and "initContainers" in variables["images"]
    assert len(policy["spec"]["validations"]) == 2  # registry, tag (digest only when required)
    assert all("kubeharden-image-policy: " in v["messageExpression"] for v in policy["spec"]["validations"])
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubeharden.io/exempt-image-policy", "operator": "DoesNotExist"}]
    pinned, _binding = cluster_policies.cluster_policies_objects([], "image_policy", {
        **SETTINGS, "image": {**IMAGE, "require_digest": True}})
    assert len(pinned["spec"]["validations"]) == 3
    (namespace,) = cluster_policies.cluster_policies_objects(
        [{"name": "vendor", "exempt_from": ["image-policy"], "reason": "vendor images"}], "pod_security", SETTINGS)
    assert namespace["metadata"]["labels"]["kubeharden.io/exempt-image-policy"] == "true"
    assert namespace["metadata"]["annotations"]["kubeharden.io/exempt-from"] == "image-policy"


def test_the_role_and_the_audit_name_the_image_policy_and_its_exemption_label_alike():
    from ansible.module_utils import kubeharden_cluster

    assert cluster_policies.IMAGE_POLICY == kubeharden_cluster.IMAGE_POLICY
    assert cluster_policies.IMAGE_POLICY_EXEMPT == kubeharden_cluster.IMAGE_POLICY_EXEMPT
