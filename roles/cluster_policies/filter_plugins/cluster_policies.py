"""cluster_policies_problems, cluster_policies_objects and cluster_policies_withdrawn: the role's inventory
checked, the Kubernetes objects it applies per area (pod_security, network, service_accounts), and the ones it
takes back from namespaces exempt from them, in one place a unit test reaches (tests/unit/test_role_filters.py).
"""

from __future__ import annotations

LEVELS = ("privileged", "baseline", "restricted")
POLICIES = ("pod-security", "default-deny", "service-account-token")
EXEMPT_FROM = "kubeharden.io/exempt-from"
EXEMPTION_REASON = "kubeharden.io/exemption-reason"
DEFAULT_DENY = "kubeharden-default-deny"
ALLOW_DNS = "kubeharden-allow-dns"


def _level(entry: dict, cluster_level: str) -> str:
    if "pod-security" in (entry.get("exempt_from") or []):
        return "privileged"
    return entry.get("pod_security") or cluster_level


def _exempt_from(entry: dict, cluster_level: str) -> list[str]:
    exempt = list(entry.get("exempt_from") or [])
    if "pod-security" not in exempt and LEVELS.index(_level(entry, cluster_level)) < LEVELS.index(cluster_level):
        exempt.insert(0, "pod-security")  # a weaker level than the cluster's is an exemption from it
    return [p for p in POLICIES if p in exempt]


def cluster_policies_problems(namespaces, cluster_level: str) -> list[str]:
    """What the argument spec cannot say: names unique, a reason for every exemption. Each problem names the
    variable and the namespace."""
    problems, seen = [], set()
    for index, entry in enumerate(namespaces or []):
        where = f"cluster_policies_namespaces[{index}] ({entry.get('name')})"
        if entry.get("name") in seen:
            problems.append(f"{where}: listed twice")
        seen.add(entry.get("name"))
        if _exempt_from(entry, cluster_level) and not str(entry.get("reason") or "").strip():
            problems.append(f"{where}: exempt from {', '.join(_exempt_from(entry, cluster_level))} without a reason "
                            "(set reason: why)")
    return problems


def _namespace(entry: dict, cluster_level: str, version: str) -> dict:
    enforced = _level(entry, cluster_level)
    labels = {}
    for mode, level in (("enforce", enforced), ("audit", cluster_level), ("warn", cluster_level)):
        labels[f"pod-security.kubernetes.io/{mode}"] = level
        labels[f"pod-security.kubernetes.io/{mode}-version"] = version
    metadata = {"name": entry["name"], "labels": labels}
    exempt = _exempt_from(entry, cluster_level)
    if exempt:
        metadata["annotations"] = {EXEMPT_FROM: ",".join(exempt), EXEMPTION_REASON: " ".join(entry["reason"].split())}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def _network_policies(namespace: str, dns: dict) -> list[dict]:
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": DEFAULT_DENY, "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    to_dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns["namespace"]}},
              "podSelector": {"matchLabels": dict(dns["pod_labels"])}}
    allow_dns = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": ALLOW_DNS, "namespace": namespace},
                 "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                          "egress": [{"to": [to_dns],
                                      "ports": [{"protocol": p, "port": int(dns["port"])} for p in ("UDP", "TCP")]}]}}
    return [deny, allow_dns]


def cluster_policies_objects(namespaces, area: str, settings: dict) -> list[dict]:
    """The objects of one area for every listed namespace not exempt from it; `settings`: the cluster's Pod
    Security `level` and `version`, and where its `dns` runs."""
    cluster_level, version, dns = settings["level"], settings["version"], settings["dns"]
    if area not in ("pod_security", "network", "service_accounts"):
        raise ValueError(f"unknown area {area!r}")
    objects = []
    for entry in namespaces or []:
        exempt = _exempt_from(entry, cluster_level)
        if area == "pod_security":
            objects.append(_namespace(entry, cluster_level, version))
        elif area == "network" and "default-deny" not in exempt:
            objects += _network_policies(entry["name"], dns)
        elif area == "service_accounts":
            account = {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "default", "namespace": entry["name"]}}
            # Exempt: applied without the field, so the apiserver drops the one kubeharden set before (a namespace
            # newly exempt mounts its token again), and leaves one another manager set.
            if "service-account-token" not in exempt:
                account["automountServiceAccountToken"] = False
            objects.append(account)
    return objects


def cluster_policies_withdrawn(namespaces, area: str) -> list[dict]:
    """The objects of one area that kubeharden applies and that listed namespaces exempt from the area must not
    keep (server-side apply never deletes an object it no longer lists): the module deletes those it applied."""
    if area != "network":
        raise ValueError(f"only the network area's objects are withdrawn, not {area!r}")
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": name, "namespace": entry["name"]}}
            for entry in namespaces or [] if "default-deny" in (entry.get("exempt_from") or [])
            for name in (DEFAULT_DENY, ALLOW_DNS)]


class FilterModule:
    def filters(self):
        return {"cluster_policies_objects": cluster_policies_objects,
                "cluster_policies_problems": cluster_policies_problems,
                "cluster_policies_withdrawn": cluster_policies_withdrawn}
