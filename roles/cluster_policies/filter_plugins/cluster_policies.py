"""cluster_policies_problems, cluster_policies_objects and cluster_policies_withdrawn: the role's inventory
checked, the Kubernetes objects it applies per area (pod_security, network, service_accounts, image_policy), and
the ones it takes back (from namespaces exempt from them, or a policy switched off), in one place a unit test
reaches (tests/unit/test_role_filters.py).
"""

from __future__ import annotations

import json
import re

LEVELS = ("privileged", "baseline", "restricted")
POLICIES = ("pod-security", "default-deny", "service-account-token", "image-policy")
EXEMPT_FROM = "kubeharden.io/exempt-from"
EXEMPTION_REASON = "kubeharden.io/exemption-reason"
# On a namespace exempt from the image policy: its binding's namespaceSelector leaves such namespaces out.
IMAGE_POLICY_EXEMPT = "kubeharden.io/exempt-image-policy"
DEFAULT_DENY = "kubeharden-default-deny"
ALLOW_DNS = "kubeharden-allow-dns"
IMAGE_POLICY = "kubeharden-image-policy"
# A registry, or a repository under it, as image references start: host[:port]/ then path segments, ending in "/" so
# that "registry.example.com/" never admits "registry.example.com.evil.org/...".
IMAGE_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?/([a-z0-9]+([._-][a-z0-9]+)*/)*$")
IMAGE_ACTIONS = ("Deny", "Warn", "Audit")


def _level(entry: dict, cluster_level: str) -> str:
    if "pod-security" in (entry.get("exempt_from") or []):
        return "privileged"
    return entry.get("pod_security") or cluster_level


def _exempt_from(entry: dict, cluster_level: str) -> list[str]:
    exempt = list(entry.get("exempt_from") or [])
    if "pod-security" not in exempt and LEVELS.index(_level(entry, cluster_level)) < LEVELS.index(cluster_level):
        exempt.insert(0, "pod-security")  # a weaker level than the cluster's is an exemption from it
    return [p for p in POLICIES if p in exempt]


def image_policy_problems(image: dict) -> list[str]:
    """The image policy's inputs: allowed prefixes required when it is on (no default that admits everything), each
    a registry or repository prefix ending in "/", and actions the apiserver takes (never Deny with Warn)."""
    problems = []
    registries, actions = list(image.get("registries") or []), list(image.get("actions") or [])
    if image.get("enabled") and not registries:
        problems.append("cluster_policies_image_registries: empty while cluster_policies_image_policy is on "
                        "(list the registries or repositories images may come from, such as registry.k8s.io/)")
    for index, prefix in enumerate(registries):
        if not isinstance(prefix, str) or not IMAGE_PREFIX.match(prefix):
            problems.append(f"cluster_policies_image_registries[{index}] ({prefix!r}): not a registry or repository "
                            "prefix such as registry.example.com/ or registry.example.com:5000/team/ (lower case, "
                            "ending in /)")
    unknown = [action for action in actions if action not in IMAGE_ACTIONS]
    if unknown or not actions:
        problems.append(f"cluster_policies_image_policy_actions ({actions}): one or more of "
                        f"{', '.join(IMAGE_ACTIONS)}")
    elif "Deny" in actions and "Warn" in actions:
        problems.append("cluster_policies_image_policy_actions: Deny and Warn together (the apiserver refuses it: "
                        "a denied request has nothing to warn about)")
    return problems


def cluster_policies_problems(namespaces, cluster_level: str, image: dict | None = None) -> list[str]:
    """What the argument spec cannot say: names unique, a reason for every exemption, the image policy's inputs.
    Each problem names the variable and the namespace."""
    problems, seen = [], set()
    for index, entry in enumerate(namespaces or []):
        where = f"cluster_policies_namespaces[{index}] ({entry.get('name')})"
        if entry.get("name") in seen:
            problems.append(f"{where}: listed twice")
        seen.add(entry.get("name"))
        if _exempt_from(entry, cluster_level) and not str(entry.get("reason") or "").strip():
            problems.append(f"{where}: exempt from {', '.join(_exempt_from(entry, cluster_level))} without a reason "
                            "(set reason: why)")
    return problems + (image_policy_problems(image) if image is not None else [])


def _namespace(entry: dict, cluster_level: str, version: str) -> dict:
    enforced = _level(entry, cluster_level)
    labels = {}
    for mode, level in (("enforce", enforced), ("audit", cluster_level), ("warn", cluster_level)):
        labels[f"pod-security.kubernetes.io/{mode}"] = level
        labels[f"pod-security.kubernetes.io/{mode}-version"] = version
    metadata = {"name": entry["name"], "labels": labels}
    exempt = _exempt_from(entry, cluster_level)
    if "image-policy" in exempt:
        labels[IMAGE_POLICY_EXEMPT] = "true"
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


# The pod template of every object the image policy admits: a Pod's own spec (an ephemeral container is added to
# the Pod), a CronJob's job template's, every other kind's template.
POD_SPEC = ("object.kind == 'Pod' ? object.spec : object.kind == 'CronJob' ? "
            "object.spec.jobTemplate.spec.template.spec : object.spec.template.spec")
IMAGES = ("variables.spec.containers.map(c, c.image)"
          " + (has(variables.spec.initContainers) ? variables.spec.initContainers.map(c, c.image) : [])"
          " + (has(variables.spec.ephemeralContainers) ? variables.spec.ephemeralContainers.map(c, c.image) : [])")
# Tagged (a ":" after the last "/", so a registry's port is not a tag) and not latest, or pinned by digest.
PINNED = "i.contains('@sha256:') || (i.substring(i.lastIndexOf('/') + 1).contains(':') && !i.endsWith(':latest'))"
ALLOWED = "variables.registries.exists(r, i.startsWith(r))"


def _image_rule(allowed: str, what: str) -> dict:
    """One validation: every image satisfies `allowed` (over `i`); the message names the images that do not."""
    return {"expression": f"variables.images.all(i, {allowed})",
            "messageExpression": f"'{IMAGE_POLICY}: ' + variables.images.filter(i, !({allowed})).join(', ') + "
                                 f"' {what}'",
            "reason": "Forbidden"}


def _image_policy(image: dict) -> list[dict]:
    """A ValidatingAdmissionPolicy the apiserver evaluates itself (CEL, no webhook), bound everywhere but in
    namespaces exempt from it."""
    validations = [
        _image_rule(ALLOWED, "not from an allowed registry: ' + variables.registries.join(', ') + "
                             "' (cluster_policies_image_registries)"),
        _image_rule(PINNED, "has no tag or the tag latest: pin a version or a digest"),
    ]
    if image.get("require_digest"):
        validations.append(_image_rule("i.contains('@sha256:')", "not pinned by digest (@sha256:...)"))
    resources = [("", ["pods", "pods/ephemeralcontainers", "replicationcontrollers"]),
                 ("apps", ["deployments", "replicasets", "statefulsets", "daemonsets"]),
                 ("batch", ["jobs", "cronjobs"])]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": IMAGE_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": kinds} for group, kinds in resources]},
            "variables": [{"name": "spec", "expression": POD_SPEC}, {"name": "images", "expression": IMAGES},
                          {"name": "registries", "expression": json.dumps(list(image["registries"]))}],
            "validations": validations,
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": IMAGE_POLICY},
        "spec": {"policyName": IMAGE_POLICY, "validationActions": list(image["actions"]),
                 "matchResources": {"namespaceSelector": {"matchExpressions": [
                     {"key": IMAGE_POLICY_EXEMPT, "operator": "DoesNotExist"}]}}},
    }
    return [policy, binding]


def cluster_policies_objects(namespaces, area: str, settings: dict) -> list[dict]:
    """The objects of one area for every listed namespace not exempt from it; `settings`: the cluster's Pod
    Security `level` and `version`, where its `dns` runs, and its `image` policy."""
    cluster_level, version, dns = settings["level"], settings["version"], settings["dns"]
    if area not in ("pod_security", "network", "service_accounts", "image_policy"):
        raise ValueError(f"unknown area {area!r}")
    if area == "image_policy":
        return _image_policy(settings["image"]) if settings["image"].get("enabled") else []
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


def cluster_policies_withdrawn(namespaces, area: str, settings: dict | None = None) -> list[dict]:
    """The objects of one area that kubeharden applies and that listed namespaces exempt from the area, or a policy
    switched off, must not keep (server-side apply never deletes an object it no longer lists): the module deletes
    those it applied."""
    if area == "image_policy":
        if (settings or {}).get("image", {}).get("enabled"):
            return []
        return [{"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": IMAGE_POLICY}}
                for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy")]
    if area != "network":
        raise ValueError(f"only the network and image_policy areas' objects are withdrawn, not {area!r}")
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": name, "namespace": entry["name"]}}
            for entry in namespaces or [] if "default-deny" in (entry.get("exempt_from") or [])
            for name in (DEFAULT_DENY, ALLOW_DNS)]


class FilterModule:
    def filters(self):
        return {"cluster_policies_objects": cluster_policies_objects,
                "cluster_policies_problems": cluster_policies_problems,
                "cluster_policies_withdrawn": cluster_policies_withdrawn}
