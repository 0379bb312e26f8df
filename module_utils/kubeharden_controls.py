"""Evaluate catalogue controls on a node: one reader per kind of state, one comparison per control.

A control's `check` names what to read (`read`), where (`path`, `component`, `flag`, `key`, ...), how to
compare (`op`) and against what (`value`, with `default` for a setting left unset). Each result carries the
actual and expected values and where the actual one came from, so a failure explains itself.
"""

from __future__ import annotations

from ansible.module_utils import kubeharden_comparisons as comparisons
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_readers_kubernetes as kubernetes_readers
from ansible.module_utils import kubeharden_readers_os as os_readers
from ansible.module_utils import kubeharden_views as views

# The names callers use: the node views and the comparison engine's vocabulary.
Node, RenderedNode = views.Node, views.RenderedNode
Observation, compare = comparisons.Observation, comparisons.compare

PASS, FAIL, MANUAL, NOT_APPLICABLE, ERROR = "pass", "fail", "manual", "not_applicable", "error"


# A benchmark control kubeharden does not apply on a Kubernetes node, with the reason the catalogue gives.
EXCEPTION = "exception"


class CheckType:
    """Everything about one `read:` type of kubeharden/catalogue/checks.yml (which declares the keys it takes):
    its reader, how its observation is judged, and whether a kubeadm configuration decides it before the node
    exists (RenderedNode, the bootstrap check).

    judge: `compare` (the check's op and value against the observed value), `offenders` (the observation lists
    offending items: passes when it is empty), `option` (passes when the check's `option` is among the observed
    options)."""

    JUDGES = ("compare", "offenders", "option")

    def __init__(self, read, judge: str = "compare", rendered: bool = False):
        if judge not in self.JUDGES:
            raise ValueError(f"unknown judge {judge!r}")
        self.read, self.judge, self.rendered = read, judge, rendered


CHECK_TYPES = {
    # Kubernetes components, as their manifests, unit files and configuration files set them
    "flag": CheckType(kubernetes_readers.read_flag, rendered=True),
    "kubelet": CheckType(kubernetes_readers.read_kubelet, rendered=True),
    "kubelet_serving": CheckType(kubernetes_readers.read_kubelet_serving),
    "kube_proxy": CheckType(kubernetes_readers.read_kube_proxy),
    "process_user": CheckType(os_readers.read_process_user),
    "encryption_provider": CheckType(kubernetes_readers.read_encryption_provider, rendered=True),
    "etcd_encryption": CheckType(kubernetes_readers.read_etcd_encryption),
    "pod_security": CheckType(kubernetes_readers.read_pod_security, rendered=True),
    "anonymous_auth": CheckType(kubernetes_readers.read_anonymous_auth, rendered=True),
    "certificates": CheckType(kubernetes_readers.read_certificates, judge="offenders"),
    "cluster": CheckType(kubernetes_readers.read_cluster, judge="offenders"),
    # the operating system
    "file": CheckType(os_readers.read_file, judge="offenders"),
    "same_file": CheckType(kubernetes_readers.read_same_file),
    "sysctl": CheckType(os_readers.read_sysctl),
    "module": CheckType(os_readers.read_module),
    "sshd": CheckType(os_readers.read_sshd),
    "line": CheckType(os_readers.read_line),
    "config_key": CheckType(os_readers.read_config_key),
    "package": CheckType(os_readers.read_package),
    "service": CheckType(os_readers.read_service),
    "mount": CheckType(os_readers.read_mount, judge="option"),
    "swap": CheckType(os_readers.read_swap, judge="offenders"),
    "accounts": CheckType(os_readers.read_accounts, judge="offenders"),
    "audit_rule": CheckType(os_readers.read_audit_rule),
    "nft_table": CheckType(os_readers.read_nft_table),
    # the container runtime
    "containerd": CheckType(kubernetes_readers.read_containerd),
    "containerd_rules": CheckType(kubernetes_readers.read_containerd_rules, judge="offenders"),
    "containerd_sandbox": CheckType(kubernetes_readers.read_containerd_sandbox),
}


# Views of CHECK_TYPES, for callers that need only one aspect.
READERS = {name: check_type.read for name, check_type in CHECK_TYPES.items()}


OFFENDER_READERS = frozenset(name for name, check_type in CHECK_TYPES.items() if check_type.judge == "offenders")


def _expected_text(check: dict) -> str:
    read = check["read"]
    if read == "file":
        parts = [f"mode <= {check['mode_max']}" if "mode_max" in check else "", check.get("owner", "")]
        return " ".join(p for p in parts if p) + (" (recursive)" if check.get("recursive") else "")
    if CHECK_TYPES[read].judge == "offenders":
        return "none offending"
    value = check.get("value")
    op = check.get("op", "set")
    return op if value is None else f"{op} {value}"


def check_at(check: dict, version: tuple[int, int] | None) -> tuple[dict, str]:
    """The check as it reads on a node running Kubernetes `version`: `since` holds, per minor, what changes from
    that minor on (a meaning the release changed). Returns the check and the minor whose rule applied ("")."""
    since = check.get("since") or {}
    effective, applied = {k: v for k, v in check.items() if k != "since"}, ""
    for minor in sorted(since, key=node.parse_minor):
        if version is not None and version >= node.parse_minor(minor):
            effective.update(since[minor])
            applied = minor
    return effective, applied


def evaluate(control: dict, state: Node) -> dict:
    check, rule = control["check"], ""
    if "since" in check:
        check, rule = check_at(check, state.kubernetes_version)
    result = {"id": control["id"], "expected": "", "actual": None, "evidence": "", "reason": ""}
    if control.get("exception"):
        return {**result, "status": EXCEPTION, "reason": f"exception: {control['exception']}"}
    if check["read"] == "none":
        return {**result, "status": MANUAL, "reason": check.get("reason", "needs a person to decide")}
    if check.get("container") and state.in_container:
        return {**result, "status": NOT_APPLICABLE, "reason": f"in a container: {check['container']}"}
    try:
        result["expected"] = _expected_text(check) + (f" (the rule from Kubernetes {rule} on)" if rule else "")
        check_type = CHECK_TYPES[check["read"]]
        observation = READERS[check["read"]](check, state)  # READERS: a test may stand in for one reader
        actual = observation.value
        if check_type.judge == "offenders":
            passed = not actual
        elif check_type.judge == "option":
            passed = check["option"] in actual
        else:
            if check.get("zero_is_default") and str(actual) in ("0", "0s"):
                actual = None  # the kubelet defaults a zero duration, as if it were unset
            if actual is None and "default" in check:
                actual = check["default"]
                observation.evidence += f"; default {actual} applies"
            passed = compare(check.get("op", "set"), actual, check.get("value"))
    except node.NotApplicable as exc:
        return {**result, "status": NOT_APPLICABLE, "reason": str(exc)}
    except (node.ReadError, FileNotFoundError, PermissionError) as exc:
        return {**result, "status": ERROR, "reason": str(exc)}
    except Exception as exc:  # a bug in one control must not stop the others
        return {**result, "status": ERROR, "reason": f"{type(exc).__name__}: {exc}"}
    status = PASS if passed else FAIL
    if not passed and control.get("type") == "manual" and not control.get("required"):
        status = MANUAL  # the benchmark leaves the call to the operator; we show the evidence
    return {**result, "status": status, "actual": actual, "evidence": observation.evidence}


def decided_by_rendering(control: dict) -> bool:
    """Whether a kubeadm configuration decides the control before the node exists (RenderedNode): the check types
    CHECK_TYPES marks `rendered`, and the files the apiserver's flags name (written before kubeadm init)."""
    check = control["check"]
    return (check["read"] in CHECK_TYPES and CHECK_TYPES[check["read"]].rendered) or (
        check["read"] == "file" and (check.get("path_from") or {}).get("component") == "kube-apiserver")


def evaluate_all(controls: list[dict], node_roles: list[str], state: Node | None = None) -> list[dict]:
    state = state or Node(node_roles)
    return [evaluate(control, state) for control in controls
            if not control.get("node_roles") or set(control["node_roles"]) & set(node_roles)]
