"""What a cluster's users notice when hardening breaks it, measured on the lab as one table: pods reaching pods on their
own node and on another, a ClusterIP Service, the same Service by its DNS name (CoreDNS), the apiserver through the
`kubernetes` Service, a NodePort from outside the cluster network (the lab host), and `kubectl logs`, `exec` and
`port-forward` to a pod on each node.

Every probe is bounded (agnhost's own connect timeout, `timeout` around each kubectl); a cell holds `ok` or what
failed, in agnhost's words (TIMEOUT, REFUSED, DNS: ...) or kubectl's. Two measurements of an unchanged cluster give
the same table, so "hardening changed nothing a user sees" is `before == after`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kubeharden.lab import addons, cluster, docker
from kubeharden.lab.errors import LabError

OK = "ok"
NOT_APPLICABLE = "-"
ROWS = {
    "pod-pod-same-node": "pod to pod, same node",
    "pod-pod-other-node": "pod to pod, another node (pod network)",
    "pod-service": "pod to a ClusterIP Service",
    "pod-service-dns": "pod to a Service by DNS name (CoreDNS)",
    "pod-apiserver": "pod to the apiserver (kubernetes.default)",
    "nodeport-from-host": "NodePort from outside the cluster (lab host)",
    "kubectl-logs": "kubectl logs",
    "kubectl-exec": "kubectl exec",
    "kubectl-port-forward": "kubectl port-forward",
}
PROBE_TIMEOUT = "3s"  # one connection attempt
KUBECTL_TIMEOUT = "30"  # seconds for one kubectl call, port-forward included
SERVICE_NAME = f"probe.{addons.PROBE_NAMESPACE}.svc.cluster.local"


@dataclass
class Matrix:
    nodes: list[str]
    cells: dict[str, dict[str, str]] = field(default_factory=dict)  # row -> node -> ok | what failed

    def failures(self) -> dict[tuple[str, str], str]:
        return {(row, node): cell for row, by_node in self.cells.items() for node, cell in by_node.items()
                if cell not in (OK, NOT_APPLICABLE)}

    def table(self) -> str:
        width = max(len(text) for text in ROWS.values())
        columns = [max(12, len(node)) for node in self.nodes]
        header = "  ".join(f"{node:{size}}" for node, size in zip(self.nodes, columns, strict=True))
        lines = [f"{'':{width}}  {header}"]
        for row, text in ROWS.items():
            cells = [self.cells.get(row, {}).get(node, "?") for node in self.nodes]
            lines.append(f"{text:{width}}  " + "  ".join(f"{cell[:60]:{size}}"
                                                        for cell, size in zip(cells, columns, strict=True)))
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"nodes": self.nodes, "cells": self.cells}


@dataclass(frozen=True)
class ProbePod:
    name: str
    node: str
    ip: str


def _kubectl(first: cluster.ClusterNode, *args: str):
    return docker.exec_(first.container, "timeout", KUBECTL_TIMEOUT, "kubectl",
                        f"--kubeconfig={cluster.ADMIN_KUBECONFIG}", *args, check=False)


# kubectl exec's own last line after the command failed: the command's words (agnhost's TIMEOUT) come before it.
KUBECTL_EXIT = re.compile(r"^command terminated with exit code \d+$")


def _failure(result) -> str:
    if result.returncode == 124:
        return f"no answer within {KUBECTL_TIMEOUT} s"
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines()
             if line.strip() and not KUBECTL_EXIT.match(line.strip())]
    return re.sub(r"\s+", " ", lines[-1])[:200] if lines else f"exit {result.returncode}"


def probe_pods(first: cluster.ClusterNode) -> dict[tuple[str, str], ProbePod]:
    """The probe workload's running pods by (DaemonSet, node)."""
    listed = _kubectl(first, "get", "pods", "-n", addons.PROBE_NAMESPACE, "-o", "json")
    if listed.returncode != 0:
        raise LabError(f"cannot list the probe pods: {_failure(listed)}")
    found = {}
    for pod in json.loads(listed.stdout)["items"]:
        app = pod["metadata"].get("labels", {}).get("app.kubernetes.io/name")
        if pod["status"].get("phase") == "Running" and pod["status"].get("podIP"):
            found[(app, pod["spec"]["nodeName"])] = ProbePod(pod["metadata"]["name"], pod["spec"]["nodeName"],
                                                             pod["status"]["podIP"])
    return found


def _connect(first: cluster.ClusterNode, client: ProbePod, target: str) -> str:
    done = _kubectl(first, "exec", "-n", addons.PROBE_NAMESPACE, client.name, "--", "/agnhost", "connect",
                    f"--timeout={PROBE_TIMEOUT}", target)
    return OK if done.returncode == 0 else _failure(done)


def _node_port(address: str) -> str:
    """From the lab host, as a user outside the cluster network: the probe Service's NodePort on that node."""
    url = f"http://{address}:{addons.PROBE_NODE_PORT}/hostname"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return OK if answer.status == 200 and answer.read().strip() else f"HTTP {answer.status}"
    except (urllib.error.URLError, OSError) as error:
        return re.sub(r"\s+", " ", str(getattr(error, "reason", error)))[:200]


def _port_forward(first: cluster.ClusterNode, pod: ProbePod, local_port: int) -> str:
    """`kubectl port-forward` on the first control-plane node, then one request through it."""
    log = f"/tmp/port-forward-{local_port}.log"  # one per node's column: they run at the same time
    script = (f"timeout {KUBECTL_TIMEOUT} kubectl --kubeconfig={cluster.ADMIN_KUBECONFIG} port-forward -n "
              f"{addons.PROBE_NAMESPACE} pod/{pod.name} {local_port}:{addons.PROBE_PORT} >{log} 2>&1 &"
              f" forward=$!; answer=''; for _ in $(seq 50); do"
              f" answer=$(curl -s -m 2 http://127.0.0.1:{local_port}/hostname) && break; sleep 0.2; done;"
              f" kill $forward 2>/dev/null; echo \"$answer\"; [ -n \"$answer\" ] || tail -2 {log}")
    done = docker.exec_(first.container, "sh", "-c", script, check=False)
    answer = done.stdout.strip().splitlines()
    if answer and answer[0] == pod.name:
        return OK
    return re.sub(r"\s+", " ", " ".join(answer) or done.stderr.strip() or "no answer")[:200]


PARALLEL_PROBES = 6  # probes at once: each is mostly waiting (kubectl's round trips), the table is the same


def measure(nodes: list[cluster.ClusterNode]) -> Matrix:
    """Every row for every node: the client is the node's probe-a pod, the server its probe-b pod (or the next
    node's for the row across nodes). The probes are independent of each other and run a few at a time."""
    first = next(node for node in nodes if node.role == "control-plane")
    pods = probe_pods(first)
    names = [node.name for node in nodes]
    matrix = Matrix(names, {row: {} for row in ROWS})
    service = _kubectl(first, "get", "service", "-n", addons.PROBE_NAMESPACE, "probe", "-o",
                       "jsonpath={.spec.clusterIP}")
    service_ip = service.stdout.strip() if service.returncode == 0 else ""
    probes: dict[tuple[str, str], Callable[[], str]] = {}
    for index, node in enumerate(nodes):
        for row in ROWS:
            matrix.cells[row][node.name] = NOT_APPLICABLE
        client, server = pods.get((addons.PROBE_SERVERS[0], node.name)), pods.get((addons.PROBE_SERVERS[1], node.name))
        other = pods.get((addons.PROBE_SERVERS[1], names[(index + 1) % len(names)])) if len(names) > 1 else None
        if client is None or server is None:
            for row in ROWS:
                matrix.cells[row][node.name] = "no probe pod running on this node"
            continue
        probes.update(_node_probes(first, node, index, client, server, other, service_ip, service))
    with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
        answers = {key: pool.submit(probe) for key, probe in probes.items()}
        for (row, node_name), answer in answers.items():
            matrix.cells[row][node_name] = answer.result()
    return matrix


def _node_probes(first, node, index, client, server, other, service_ip, service) -> dict:
    """The probes of one node's column, by (row, node), each a call that returns its cell."""
    port = addons.PROBE_PORT
    probes = {
        "pod-pod-same-node": lambda: _connect(first, client, f"{server.ip}:{port}"),
        "pod-service": ((lambda: _connect(first, client, f"{service_ip}:80")) if service_ip
                        else (lambda: _failure(service))),
        "pod-service-dns": lambda: _connect(first, client, f"{SERVICE_NAME}:80"),
        "pod-apiserver": lambda: _connect(first, client, "kubernetes.default:443"),
        "kubectl-logs": lambda: _logs(first, server),
        "kubectl-exec": lambda: _exec(first, server),
        "kubectl-port-forward": lambda: _port_forward(first, server, 18080 + index),
    }
    if other is not None:
        probes["pod-pod-other-node"] = lambda: _connect(first, client, f"{other.ip}:{port}")
    # kubeharden's firewall serves NodePorts on workers only (firewall_nodeports_enabled): a control plane's is not
    # a path users are given.
    if node.role != "control-plane":
        probes["nodeport-from-host"] = lambda: _node_port(node.ip)
    return {(row, node.name): probe for row, probe in probes.items()}


def _logs(first: cluster.ClusterNode, server: ProbePod) -> str:
    logs = _kubectl(first, "logs", "-n", addons.PROBE_NAMESPACE, server.name, "--tail=1")
    return OK if logs.returncode == 0 and logs.stdout.strip() else _failure(logs)


def _exec(first: cluster.ClusterNode, server: ProbePod) -> str:
    executed = _kubectl(first, "exec", "-n", addons.PROBE_NAMESPACE, server.name, "--", "/agnhost", "dns-server-list")
    return OK if executed.returncode == 0 and executed.stdout.strip() else _failure(executed)


def foreign_rules(container: str) -> dict[str, dict[str, list[str]]]:
    """Every nftables table of a node but kubeharden's own (kube-proxy's, flannel's and kube-router's iptables-nft
    tables), as table -> chain -> its rules, sorted, without counters: what the firewall role must never change.
    Sorted because kube-proxy rewrites its chains in another order whenever an endpoint comes and goes."""
    listed = docker.exec_(container, "nft", "--stateless", "list", "ruleset", check=False)
    tables: dict[str, dict[str, list[str]]] = {}
    table = chain = None
    for line in listed.stdout.splitlines():
        text = line.strip()
        if line.startswith("table "):
            table, chain = line.rstrip(" {"), None
            tables[table] = {}
        elif table and text.startswith("chain ") and text.endswith("{"):
            chain = text[len("chain "):-1].strip()
            tables[table][chain] = []
        elif table and chain and text and text != "}":
            tables[table][chain].append(re.sub(r"\s+", " ", text))
    return {name: {c: sorted(rules) for c, rules in chains.items()} for name, chains in tables.items()
            if name != "table inet kubeharden"}
