"""The cluster seen through its API: objects kubeharden applies (identity, comparison, diff) and the state the audit
reads once per cluster (CIS section 5: RBAC, Pod Security, NetworkPolicies, secrets, exposure).

A namespace the cluster_policies role exempts from a policy carries the annotations EXEMPT_FROM (the policies,
comma-separated) and EXEMPTION_REASON; the audit reports it as exempt with that reason, never as passing silently.
"""

from __future__ import annotations

import json

try:
    import yaml
except ImportError:
    yaml = None

EXEMPT_FROM = "kubeharden.io/exempt-from"
EXEMPTION_REASON = "kubeharden.io/exemption-reason"
POLICIES = ("pod-security", "default-deny", "service-account-token")
ENFORCE = "pod-security.kubernetes.io/enforce"
LEVELS = ("privileged", "baseline", "restricted")
# Metadata the apiserver maintains: it differs between a live object and its dry-run apply without any change.
BOOKKEEPING = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")


# -- objects kubeharden applies --------------------------------------------------------------------------

def identity(obj: dict) -> tuple[str, str, str, str]:
    group = obj.get("apiVersion", "").rpartition("/")[0] if "/" in obj.get("apiVersion", "") else ""
    meta = obj.get("metadata") or {}
    return group, obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")


def identity_text(obj: dict) -> str:
    _group, kind, namespace, name = identity(obj)
    return f"{kind}/{namespace}/{name}"


def invalid_objects(objects: list) -> list[str]:
    problems = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            problems.append(f"item {index} is not a mapping")
            continue
        missing = [k for k in ("apiVersion", "kind") if not isinstance(obj.get(k), str) or not obj[k]]
        if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
            missing.append("metadata.name")
        if missing:
            problems.append(f"item {index} has no {', '.join(missing)}")
        elif obj["kind"] == "Secret":
            problems.append(f"item {index} is a Secret, which kubeharden does not apply: its values would show in "
                            "the diff and the task's result")
    return problems


def comparable(obj: dict | None) -> dict | None:
    """The object without status and the apiserver's bookkeeping: what a change of ours can alter."""
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in BOOKKEEPING}
    return {**{k: v for k, v in obj.items() if k not in ("status", "metadata")}, "metadata": meta}


def applied_by(obj: dict, manager: str) -> bool:
    """Whether `manager` owns fields of the live object through server-side apply (its managedFields say so)."""
    return any(entry.get("manager") == manager and entry.get("operation") == "Apply"
               for entry in (obj.get("metadata") or {}).get("managedFields") or [])


def _scalars(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, (str, int, float, bool)) for item in value)


def contested_lists(wanted: dict, live: dict | None) -> dict:
    """A JSON merge patch that sets each list of scalars `wanted` names to its value where the live object holds an
    element `wanted` does not; {} when there is none.

    Server-side apply merges a set-typed list (a binding's validationActions, a namespace's finalizers) element by
    element: an element another manager added stays even with --force-conflicts, so a hand-added `Warn` would
    be kept beside kubeharden's `Deny`. Lists reached through lists of maps are left to the apply (merge patches
    cannot address them; such lists are atomic in the Kubernetes API and the forced apply replaces them)."""
    patch: dict = {}
    if not isinstance(live, dict):
        return patch
    for key, value in wanted.items():
        if isinstance(value, dict):
            inner = contested_lists(value, live.get(key))
            if inner:
                patch[key] = inner
        elif _scalars(value) and _scalars(live.get(key)) and set(map(str, live[key])) - set(map(str, value)):
            patch[key] = value
    return patch


def yaml_text(obj: dict | None) -> str:
    if obj is None:
        return ""
    if yaml is None:
        return json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return yaml.safe_dump(obj, default_flow_style=False, sort_keys=True)


# -- what the audit reads --------------------------------------------------------------------------------

KINDS = ("namespaces", "pods", "serviceaccounts", "networkpolicies.networking.k8s.io", "services", "roles",
         "rolebindings", "clusterroles", "clusterrolebindings",
         "validatingadmissionpolicies.admissionregistration.k8s.io",
         "validatingadmissionpolicybindings.admissionregistration.k8s.io")
# The image policy the cluster_policies role applies (a ValidatingAdmissionPolicy and its binding, one name), and
# the namespace label its binding leaves out.
IMAGE_POLICY = "kubeharden-image-policy"
IMAGE_POLICY_EXEMPT = "kubeharden.io/exempt-image-policy"


class ClusterState:
    """Every object the section 5 controls read, from one `kubectl get` (`objects`: its items)."""

    def __init__(self, objects: list[dict], accepted_subjects: list[str] | None = None):
        self.by_kind: dict[str, list[dict]] = {}
        for obj in objects:
            self.by_kind.setdefault(obj.get("kind", ""), []).append(obj)
        self.accepted_subjects = set(accepted_subjects or [])

    def of(self, kind: str) -> list[dict]:
        return self.by_kind.get(kind, [])

    def namespace(self, name: str) -> dict:
        return next((n for n in self.of("Namespace") if n["metadata"]["name"] == name), {"metadata": {}})

    def running_pods(self) -> list[dict]:
        return [pod for pod in self.of("Pod") if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    def image_policy_binding(self) -> dict | None:
        return next((b for b in self.of("ValidatingAdmissionPolicyBinding")
                     if (b.get("spec") or {}).get("policyName") == IMAGE_POLICY), None)

    def image_policy_enforcing(self) -> bool:
        """The image policy exists and a binding makes the apiserver say so when it refuses (Deny or Warn)."""
        binding = self.image_policy_binding()
        return any(p["metadata"]["name"] == IMAGE_POLICY for p in self.of("ValidatingAdmissionPolicy")) and \
            binding is not None and bool({"Deny", "Warn"} & set(binding["spec"].get("validationActions") or []))

    def exemption(self, namespace: str, policy: str) -> str | None:
        """The recorded reason when `namespace` is exempt from `policy`, else None."""
        annotations = self.namespace(namespace)["metadata"].get("annotations") or {}
        exempt = [p.strip() for p in annotations.get(EXEMPT_FROM, "").split(",")]
        return annotations.get(EXEMPTION_REASON, "no reason recorded") if policy in exempt else None


def _system(obj: dict) -> bool:
    """Kubernetes' own RBAC objects (bootstrap policy) and kubeadm's: not the operator's to minimize."""
    meta = obj["metadata"]
    return (meta.get("labels") or {}).get("kubernetes.io/bootstrapping") == "rbac-defaults" or \
        meta["name"].startswith(("system:", "kubeadm:"))


def _subjects(binding: dict) -> list[str]:
    return [f"{s.get('kind')} {s.get('namespace') + '/' if s.get('namespace') else ''}{s.get('name')}"
            for s in binding.get("subjects") or []]


def _rule_grants(rule: dict, resources: list[str], verbs: list[str]) -> bool:
    """Whether an RBAC rule grants one of `verbs` on one of `resources` (`res/sub` for a subresource)."""
    rule_resources, rule_verbs = set(rule.get("resources") or []), set(rule.get("verbs") or [])
    on = "*" in rule_resources or bool(rule_resources & set(resources)) or any(
        r.split("/")[0] + "/*" in rule_resources for r in resources if "/" in r)
    return on and ("*" in rule_verbs or bool(rule_verbs & set(verbs)))


def _bound(state: ClusterState, kind: str, name: str, namespace: str | None) -> list[tuple[dict, list[str]]]:
    """The bindings of a role and their subjects not accepted by the operator."""
    found = []
    for binding in state.of("ClusterRoleBinding") + state.of("RoleBinding"):
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != kind or ref.get("name") != name:
            continue
        if kind == "Role" and binding["metadata"].get("namespace") != namespace:
            continue
        subjects = [s for s in _subjects(binding) if s not in state.accepted_subjects]
        if subjects and not _system(binding):
            found.append((binding, subjects))
    return found


def _where(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta['namespace'] + '/' if meta.get('namespace') else ''}{meta['name']}"


def rbac_grants(state: ClusterState, resources: list[str], verbs: list[str]) -> list[str]:
    """Subjects a role outside Kubernetes' and kubeadm's own grants one of `verbs` on `resources`, with the
    binding that grants it (cluster-admin's own bindings included: binding it is what grants everything)."""
    offenders = []
    for role in state.of("ClusterRole") + state.of("Role"):
        if _system(role) and role["metadata"]["name"] != "cluster-admin":
            continue
        if not any(_rule_grants(rule, resources, verbs) for rule in role.get("rules") or []):
            continue
        for binding, subjects in _bound(state, role["kind"], role["metadata"]["name"],
                                        role["metadata"].get("namespace")):
            offenders.append(f"{_where(binding)} -> {_where(role)}: {', '.join(subjects)}")
    return sorted(set(offenders))


def cluster_admin_bindings(state: ClusterState) -> list[str]:
    return sorted(f"{_where(binding)}: {', '.join(subjects)}"
                  for binding, subjects in _bound(state, "ClusterRole", "cluster-admin", None))


def wildcard_roles(state: ClusterState) -> list[str]:
    offenders = []
    for role in state.of("ClusterRole") + state.of("Role"):
        if _system(role) or role["metadata"]["name"] in ("cluster-admin", "admin", "edit", "view"):
            continue
        wild = sorted({part for rule in role.get("rules") or [] for part in ("resources", "verbs", "apiGroups")
                       if "*" in (rule.get(part) or [])})
        if wild:
            offenders.append(f"{_where(role)}: * in {', '.join(wild)}")
    return offenders


def system_masters(state: ClusterState) -> list[str]:
    """Bindings to the group system:masters besides Kubernetes' own (which no RBAC rule can limit anyway)."""
    return sorted(_where(b) for b in state.of("ClusterRoleBinding") + state.of("RoleBinding")
                  if "Group system:masters" in _subjects(b) and not _system(b)
                  and b["metadata"]["name"] != "cluster-admin")


# -- namespaces ------------------------------------------------------------------------------------------

def _namespaces(state: ClusterState) -> list[str]:
    return sorted(n["metadata"]["name"] for n in state.of("Namespace"))


def pod_security_labels(state: ClusterState, level: str) -> tuple[list[str], list[str]]:
    """Namespaces that enforce no Pod Security level, or one weaker than `level`; and the exempt ones."""
    offenders, exempt = [], []
    for name in _namespaces(state):
        labels = state.namespace(name)["metadata"].get("labels") or {}
        enforced = labels.get(ENFORCE)
        reason = state.exemption(name, "pod-security")
        if reason is not None:
            exempt.append(f"{name} ({enforced or 'no label'}: {reason})")
        elif enforced not in LEVELS or LEVELS.index(enforced) < LEVELS.index(level):
            offenders.append(f"{name}: enforce {enforced or 'not set'}")
    return offenders, exempt


def _denies(policy: dict, direction: str) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") is not None else ["Ingress"])
    return spec.get("podSelector") in ({}, None) and direction in types and not spec.get(direction.lower())


def default_deny(state: ClusterState) -> tuple[list[str], list[str]]:
    """Namespaces without a NetworkPolicy that denies all ingress and one that denies all egress."""
    offenders, exempt = [], []
    for name in _namespaces(state):
        policies = [p for p in state.of("NetworkPolicy") if p["metadata"]["namespace"] == name]
        missing = [d for d in ("Ingress", "Egress") if not any(_denies(p, d) for p in policies)]
        reason = state.exemption(name, "default-deny")
        if reason is not None:
            exempt.append(f"{name} ({reason})")
        elif missing:
            offenders.append(f"{name}: no default deny of {' and '.join(d.lower() for d in missing)}")
    return offenders, exempt


# -- pods ------------------------------------------------------------------------------------------------

def _containers(pod: dict) -> list[dict]:
    spec = pod.get("spec") or {}
    return (spec.get("initContainers") or []) + (spec.get("containers") or []) + \
        (spec.get("ephemeralContainers") or [])


def _context(pod: dict, container: dict, key: str):
    value = (container.get("securityContext") or {}).get(key)
    return value if value is not None else ((pod.get("spec") or {}).get("securityContext") or {}).get(key)


def _caps(container: dict) -> set[str]:
    return set(((container.get("securityContext") or {}).get("capabilities") or {}).get("add") or [])


def _drops_all_or_net_raw(container: dict) -> bool:
    dropped = set(((container.get("securityContext") or {}).get("capabilities") or {}).get("drop") or [])
    return bool(dropped & {"ALL", "NET_RAW"})


def _token_mounted(pod: dict) -> bool:
    """Whether the pod has a service account token mounted: the ServiceAccount admission plugin added a projected
    token volume (static pods and pods with automount off have none)."""
    return any(source.get("serviceAccountToken") for volume in (pod.get("spec") or {}).get("volumes") or []
               for source in (volume.get("projected") or {}).get("sources") or [])


def _secret_env(container: dict) -> bool:
    return any((e.get("valueFrom") or {}).get("secretKeyRef") for e in container.get("env") or []) or \
        any(e.get("secretRef") for e in container.get("envFrom") or [])


def _seccomp_confined(pod: dict, container: dict) -> bool:
    profile = (_context(pod, container, "seccompProfile") or {}).get("type")
    return profile in ("RuntimeDefault", "Localhost")


# What a pod does that each control minimizes: a predicate per container, or per pod (`pod:` prefix).
POD_ASPECTS = {
    "privileged": lambda s, p, c: bool((c.get("securityContext") or {}).get("privileged")),
    "host_pid": lambda s, p, c: bool(p["spec"].get("hostPID")),
    "host_ipc": lambda s, p, c: bool(p["spec"].get("hostIPC")),
    "host_network": lambda s, p, c: bool(p["spec"].get("hostNetwork")),
    "allow_privilege_escalation": lambda s, p, c: (c.get("securityContext") or {}).get(
        "allowPrivilegeEscalation") is not False,
    "root": lambda s, p, c: _context(p, c, "runAsNonRoot") is not True and _context(p, c, "runAsUser") in (None, 0),
    "net_raw": lambda s, p, c: "NET_RAW" in _caps(c) or "ALL" in _caps(c) or not _drops_all_or_net_raw(c),
    "added_capabilities": lambda s, p, c: bool(_caps(c) - {"NET_BIND_SERVICE"}),
    "host_process": lambda s, p, c: bool(_context(p, c, "windowsOptions") and
                                         _context(p, c, "windowsOptions").get("hostProcess")),
    "host_path": lambda s, p, c: any(v.get("hostPath") for v in p["spec"].get("volumes") or []),
    "host_ports": lambda s, p, c: any(port.get("hostPort") for port in c.get("ports") or []),
    "secret_env": lambda s, p, c: _secret_env(c),
    "seccomp": lambda s, p, c: not _seccomp_confined(p, c),
    "default_service_account": lambda s, p, c: p["spec"].get("serviceAccountName", "default") == "default"
    and _token_mounted(p),
    "token_mounted": lambda s, p, c: _token_mounted(p),
    "in_default_namespace": lambda s, p, c: p["metadata"]["namespace"] == "default",
}
# Aspects a Pod Security exemption covers (the level a namespace enforces decides them).
POD_SECURITY_ASPECTS = {"privileged", "host_pid", "host_ipc", "host_network", "allow_privilege_escalation", "root",
                        "net_raw", "added_capabilities", "host_process", "host_path", "host_ports", "seccomp"}


def pods_with(state: ClusterState, aspect: str) -> tuple[list[str], list[str]]:
    """Pods that do what `aspect` names (offenders), and those in namespaces exempt from it (with the reason)."""
    predicate = POD_ASPECTS[aspect]
    offenders, exempt = [], {}
    for pod in state.of("Pod"):
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if not any(predicate(state, pod, c) for c in _containers(pod) or [{}]):
            continue
        namespace = pod["metadata"]["namespace"]
        policy = "pod-security" if aspect in POD_SECURITY_ASPECTS else \
            "service-account-token" if aspect in ("default_service_account", "token_mounted") else None
        reason = state.exemption(namespace, policy) if policy else None
        if reason is not None:
            exempt.setdefault(f"{namespace} ({reason})", 0)
            exempt[f"{namespace} ({reason})"] += 1
        else:
            offenders.append(f"{namespace}/{pod['metadata']['name']}")
    return sorted(offenders), [f"{where}: {count} pod(s)" for where, count in sorted(exempt.items())]


def default_service_accounts(state: ClusterState) -> tuple[list[str], list[str]]:
    """Default service accounts that still mount their token into pods that do not say otherwise, and the running
    pods that use a default account with its token mounted (created before the account changed, or asking)."""
    offenders, exempt = [], []
    defaults = {account["metadata"]["namespace"]: account for account in state.of("ServiceAccount")
                if account["metadata"]["name"] == "default"}
    for found in state.of("Namespace"):
        namespace = found["metadata"]["name"]
        if (found.get("status") or {}).get("phase") == "Terminating":
            continue
        account = defaults.get(namespace)
        if account is not None and account.get("automountServiceAccountToken") is False:
            continue
        # A namespace whose account the controller has not created yet gets one that mounts its token.
        problem = "automountServiceAccountToken not false" if account is not None else \
            "not created yet (the controller creates it with its token mounted)"
        reason = state.exemption(namespace, "service-account-token")
        if reason is not None:
            exempt.append(f"{namespace} ({reason})")
        else:
            offenders.append(f"{namespace}/default: {problem}")
    pods, exempt_pods = pods_with(state, "default_service_account")
    return sorted(offenders) + [f"pod {pod}: default account, token mounted" for pod in pods], \
        sorted(exempt) + exempt_pods


def exposure(state: ClusterState) -> list[str]:
    """Everything reachable from outside the cluster network, as one table: Services of type NodePort or
    LoadBalancer, external IPs, host-network pods and host ports."""
    rows = []
    for service in state.of("Service"):
        spec, where = service.get("spec") or {}, f"{service['metadata']['namespace']}/{service['metadata']['name']}"
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            ports = ",".join(str(p.get("nodePort", "")) for p in spec.get("ports") or [])
            rows.append(f"Service {where}: {spec['type']} (node ports {ports})")
        if spec.get("externalIPs"):
            rows.append(f"Service {where}: externalIPs {', '.join(spec['externalIPs'])}")
    for pod in state.of("Pod"):
        where = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if (pod.get("spec") or {}).get("hostNetwork"):
            rows.append(f"Pod {where}: hostNetwork")
        for container in _containers(pod):
            for port in container.get("ports") or []:
                if port.get("hostPort"):
                    rows.append(f"Pod {where}: hostPort {port['hostPort']}/{port.get('protocol', 'TCP')}")
    return sorted(rows)


def pod_images(pod: dict) -> list[str]:
    """Every image a pod runs: its containers', init containers' and ephemeral containers'."""
    spec = pod.get("spec") or {}
    return [c.get("image", "") for key in ("containers", "initContainers", "ephemeralContainers")
            for c in spec.get(key) or []]


def image_policy(state: ClusterState, listed: list[str]) -> tuple[list[str], list[str]]:
    """5.5.1 through the apiserver's own admission: the image policy exists, its binding refuses (Deny), and it
    covers every namespace the operator listed, but those exempt with a recorded reason."""
    offenders, exempt = [], []
    if not any(p["metadata"]["name"] == IMAGE_POLICY for p in state.of("ValidatingAdmissionPolicy")):
        return [f"no ValidatingAdmissionPolicy {IMAGE_POLICY}: the apiserver admits images from anywhere"], []
    binding = state.image_policy_binding()
    if binding is None:
        return [f"ValidatingAdmissionPolicy {IMAGE_POLICY} is bound nowhere: it judges nothing"], []
    actions = binding["spec"].get("validationActions") or []
    if "Deny" not in actions:
        offenders.append(f"binding {binding['metadata']['name']}: {', '.join(actions) or 'no action'}, not Deny: "
                         "refused images are reported, and run")
    for name in sorted(listed):
        found = state.namespace(name)
        if not found["metadata"]:
            continue  # not in the cluster (yet): 5.2.1 names it
        labelled = IMAGE_POLICY_EXEMPT in (found["metadata"].get("labels") or {})
        reason = state.exemption(name, "image-policy")
        if reason is not None:
            exempt.append(f"{name} ({reason})")
        elif labelled:
            offenders.append(f"namespace {name}: left out of the image policy ({IMAGE_POLICY_EXEMPT}) without a "
                             "recorded exemption")
    return offenders, exempt
