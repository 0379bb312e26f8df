"""kube-bench, built from the Go module proxy and cached beside the Kubernetes builds: the second opinion.

`go install github.com/aquasecurity/kube-bench@VERSION` cannot work here: the proxy refuses kube-bench's version
list, which `go install` reads for deprecation notices. A wrapper module that requires the exact version builds
the same binary. Its benchmark definitions (`cfg/`) come from the same module version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kubeharden.lab import go_tool
from kubeharden.lab.errors import LabError

MODULE = "github.com/aquasecurity/kube-bench"
# The newest kube-bench the proxy serves with a checksum-database entry (v0.16.0 has none; others are refused).
VERSION = "v0.15.1"
# kube-bench maps Kubernetes up to 1.34 to cis-1.12; 1.35-1.37 have no benchmark yet, so the newest applies.
BENCHMARK = "cis-1.12"
TOOL = go_tool.GoTool.single("kube-bench", MODULE, VERSION, MODULE, data_dir="cfg")


@dataclass(frozen=True)
class KubeBench:
    directory: Path

    @property
    def binary(self) -> Path:
        return self.directory / "bin" / "kube-bench"

    @property
    def config_dir(self) -> Path:
        return self.directory / "cfg"


def entry() -> KubeBench:
    return KubeBench(TOOL.directory)


def cached(found: KubeBench) -> bool:
    return go_tool.cached(TOOL, found.directory)


def ensure(log=print) -> KubeBench:
    """The cached kube-bench, built first when no complete entry exists (a partial one is rebuilt, never used)."""
    return KubeBench(go_tool.ensure(TOOL, log))


NODE_DIR = "/opt/kube-bench"
# kube-bench's targets for each kind of lab node.
TARGETS = {"control-plane": "master,controlplane,etcd,node,policies", "worker": "node"}


def run_on_node(container: str, role: str, log=print) -> dict[str, str]:
    """kube-bench's verdict per control ID (PASS, FAIL, WARN, INFO) on a lab node, with its own cfg/."""
    from kubeharden.lab import docker

    built = ensure(log=log)
    docker.exec_(container, "mkdir", "-p", f"{NODE_DIR}/bin")
    docker.run("cp", str(built.binary), f"{container}:{NODE_DIR}/bin/kube-bench")
    docker.run("cp", str(built.config_dir), f"{container}:{NODE_DIR}")
    done = docker.exec_(container, f"{NODE_DIR}/bin/kube-bench", "run", "--targets", TARGETS[role], "--benchmark",
                        BENCHMARK, "--config-dir", f"{NODE_DIR}/cfg", "--json")
    if done.returncode != 0 or not done.stdout.startswith("{"):
        raise LabError(f"kube-bench failed on {container}: {done.stderr[-2000:]}")
    return {result["test_number"]: result["status"] for control in json.loads(done.stdout)["Controls"]
            for test in control["tests"] for result in test["results"]}
