"""`kubeharden lab`: the local node lab's command line, for kubeharden's own development and tests (a checkout,
`./dev`); the wheel users install does not carry the lab, and its `kubeharden` has no `lab` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from kubeharden.lab import addons, cluster, kube_bench, kubernetes, runtime
from kubeharden.lab.errors import LabError
from kubeharden.lab.lab import ETCD_TOPOLOGIES, Lab, Topology

ERRORS = (LabError,)


def _lab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="lab", help="lab name (default: lab); several labs can coexist")
    parser.add_argument("--inventory-dir", help="where the lab writes hosts.yml (default: inventories/NAME)")


def add_parser(commands) -> None:
    """The `lab` command and its subcommands, under the CLI's subparsers."""
    lab = commands.add_parser("lab", help="the local node lab: real Kubernetes nodes in systemd containers")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True)
    up = lab_commands.add_parser("up", help="build (cached) node images and start the lab's nodes")
    _lab_arguments(up)
    # Topology options default to the running lab's, else to Topology's defaults (cp1 + w1, static etcd).
    up.add_argument("--control-planes", type=int, choices=(1, 3, 5),
                    help="control-plane nodes, each an etcd member (default: 1)")
    up.add_argument("--workers", type=int, help="worker nodes (default: 1)")
    up.add_argument("--etcd", choices=ETCD_TOPOLOGIES,
                    help="etcd as kubeadm's static pod (default) or as a host systemd service")
    up.add_argument("--debian", choices=("12", "13"), help="Debian release of the nodes (default: 12)")
    up.add_argument("--cert-days", type=int,
                    help="validity of the nodes' leaf certificates in days (default: 365, as kubeadm)")
    up.add_argument("--kubernetes-version", metavar="VERSION",
                    help=f"bootstrap real Kubernetes with kubeadm: {kubernetes.supported_window()} (the newest "
                         "built or served patch) or an exact patch such as 1.37.2; built once and cached"
                         + "".join(f"; {minor}: its newest pre-release, opted in for the lab's inventory only"
                                   for minor in kubernetes.PRERELEASE_MINORS))
    up.add_argument("--no-kubeadm", dest="kubeadm", action="store_const", const=False,
                    help="install Kubernetes, leave kubeadm init and join to you (as before playbooks/bootstrap.yml)")
    up.add_argument("--containerd", choices=sorted(runtime.CONTAINERD_RELEASES),
                    help=f"containerd release line of the nodes (default: {runtime.DEFAULT_CONTAINERD}, the LTS)")
    up.add_argument("--kube-proxy-mode", choices=cluster.PROXY_MODES, help="kube-proxy's mode (default: iptables)")
    up.add_argument("--cni", choices=addons.CNIS, help="the pod network (default: flannel's VXLAN, with kube-router's "
                                                       "NetworkPolicy firewall)")
    build = lab_commands.add_parser("build", help="build (or check the cache of) a Kubernetes release for the lab, "
                                                  "with its container runtime and addons")
    build.add_argument("--kubernetes-version", metavar="VERSION", default=kubernetes.DEFAULT_MINOR,
                       help=f"{kubernetes.supported_window()} or an exact patch (default: {kubernetes.DEFAULT_MINOR})"
                            + "".join(f"; {minor} builds its newest pre-release"
                                      for minor in kubernetes.PRERELEASE_MINORS))
    build.add_argument("--containerd", choices=sorted(runtime.CONTAINERD_RELEASES), default=runtime.DEFAULT_CONTAINERD,
                       help=f"containerd release line (default: {runtime.DEFAULT_CONTAINERD})")
    build.add_argument("--kube-bench", action="store_true",
                       help=f"build (or check the cache of) kube-bench {kube_bench.VERSION} instead, the tests' "
                            "second opinion")
    down = lab_commands.add_parser("down", help="remove the lab's nodes, network and generated inventory")
    _lab_arguments(down)
    status = lab_commands.add_parser("status", help="show the lab's nodes")
    _lab_arguments(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    matrix = lab_commands.add_parser("matrix", help="measure the cluster's connectivity: pods, Services, DNS, the "
                                                    "apiserver, a NodePort, kubectl logs/exec/port-forward, per node")
    _lab_arguments(matrix)
    matrix.add_argument("--json", action="store_true", help="machine-readable output")
    ssh = lab_commands.add_parser("ssh", help="open an SSH session (or run a command) on a lab node")
    _lab_arguments(ssh)
    ssh.add_argument("node")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER, help="command to run instead of a shell")


def _print_status(status: dict) -> None:
    if not status["exists"]:
        print(f"lab {status['name']!r} is not up (kubeharden lab up)")
        return
    topology = status["topology"]
    kind = f"Kubernetes {topology['kubernetes']}"
    print(f"lab {status['name']!r}: {kind}, Debian {topology['debian']}, {topology['etcd']} etcd, network "
          f"{status['network']} ({status['subnet']})")
    print(f"{'NODE':6} {'ROLE':14} {'ADDRESS':16} {'STATE':9} ETCD")
    for node in status["nodes"]:
        print(f"{node['name']:6} {node['role']:14} {node['ip']:16} {node['state']:9} {node['etcd'] or '-'}")
    print(f"inventory: {status['inventory']}")


def run(args: argparse.Namespace) -> int:
    lab = Lab(getattr(args, "name", "lab"), getattr(args, "inventory_dir", None))
    if args.lab_command == "up":
        current = lab.state()
        base = asdict(current.topology if current else Topology())
        asked = {"control_planes": args.control_planes, "workers": args.workers, "etcd": args.etcd,
                 "debian": args.debian, "cert_days": args.cert_days, "kubernetes": args.kubernetes_version,
                 "kubeadm": args.kubeadm, "containerd": args.containerd, "kube_proxy_mode": args.kube_proxy_mode,
                 "cni": args.cni}
        state = lab.up(Topology(**{**base, **{k: v for k, v in asked.items() if v is not None}}))
        print(f"lab {state.name!r} is up; try: ansible -i {lab.inventory_path} all -m ping")
        _print_status(lab.status())
    elif args.lab_command == "build" and args.kube_bench:
        print(f"kube-bench {kube_bench.VERSION}: {kube_bench.ensure().directory}")
    elif args.lab_command == "build":
        release = kubernetes.ensure_binaries(kubernetes.resolve(args.kubernetes_version))
        manifest = release.manifest()
        print(f"Kubernetes {release.label} and etcd {release.etcd}: {release.directory} "
              f"(built in {manifest['built_seconds']} s)")
        node_runtime = runtime.Runtime(args.containerd)
        node_runtime.ensure()
        addons.ensure_tools(release)
        print(f"{node_runtime.describe()}; CoreDNS {release.coredns_version}, flannel {addons.FLANNEL.version}, "
              f"kube-router {addons.KUBE_ROUTER.version}: built and cached")
    elif args.lab_command == "down":
        lab.down()
    elif args.lab_command == "status":
        status = lab.status()
        print(json.dumps(status, indent=2)) if args.json else _print_status(status)
    elif args.lab_command == "matrix":
        measured = lab.matrix()
        print(json.dumps(measured.as_dict(), indent=2) if args.json else measured.table(), end="")
        return 1 if measured.failures() else 0
    elif args.lab_command == "ssh":
        command = lab.ssh_command(args.node, args.remote_command)
        sys.stdout.flush()
        os.execvp(command[0], command)
    return 0
