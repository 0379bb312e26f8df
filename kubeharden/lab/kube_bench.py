"""kube-bench, built from the Go module proxy and cached beside the Kubernetes builds: the second opinion.

`go install github.com/aquasecurity/kube-bench@VERSION` cannot work here: the proxy refuses kube-bench's version
list, which `go install` reads for deprecation notices. A wrapper module that requires the exact version builds
the same binary. Its benchmark definitions (`cfg/`) come from the same module version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kubeharden.lab import kubernetes
from kubeharden.lab.errors import LabError

MODULE = "github.com/aquasecurity/kube-bench"
# The newest kube-bench the proxy serves with a checksum-database entry (v0.16.0 has none; others are refused).
VERSION = "v0.15.1"
RECIPE = "1"
# kube-bench maps Kubernetes up to 1.34 to cis-1.12; 1.35-1.37 have no benchmark yet, so the newest applies.
BENCHMARK = "cis-1.12"


@dataclass(frozen=True)
class KubeBench:
    directory: Path

    @property
    def binary(self) -> Path:
        return self.directory / "bin" / "kube-bench"

    @property
    def config_dir(self) -> Path:
        return self.directory / "cfg"


def _key() -> str:
    return f"{VERSION}-{hashlib.sha256(RECIPE.encode()).hexdigest()[:10]}"


def entry() -> KubeBench:
    return KubeBench(kubernetes.cache_dir() / "kube-bench" / _key())


def _digest(directory: Path) -> str:
    """One digest over every file of a tree: their relative paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(kubernetes._sha256(path).encode())
    return digest.hexdigest()


def cached(found: KubeBench) -> bool:
    try:
        manifest = json.loads((found.directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (manifest.get("key") == _key() and found.binary.is_file() and found.config_dir.is_dir()
            and kubernetes._sha256(found.binary) == manifest.get("binary_sha256")
            and _digest(found.config_dir) == manifest.get("cfg_sha256"))


def ensure(log=print) -> KubeBench:
    """The cached kube-bench, built first when no complete entry exists (a partial one is rebuilt, never used)."""
    found = entry()
    if cached(found):
        return found
    go = shutil.which("go")
    if go is None:
        raise LabError("building kube-bench needs Go: install it and retry")
    root = found.directory.parent
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".build-{_key()}-{os.getpid()}"
    for stale in root.glob(f".build-{_key()}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    log(f"Building kube-bench {VERSION} from the Go module proxy (cached in {found.directory})")
    try:
        (work / "entry" / "bin").mkdir(parents=True)
        source = kubernetes._download(go, MODULE, VERSION, work)
        kubernetes._write_wrapper(work / "module", MODULE, VERSION, {})
        kubernetes._go_build(go, work / "module", work / "entry" / "bin" / "kube-bench", [MODULE], "-s -w",
                             cgo=False, log=log, label=f"kube-bench {VERSION}")
        shutil.copytree(Path(source["Dir"]) / "cfg", work / "entry" / "cfg")
        for path in (work / "entry" / "cfg").rglob("*"):  # the module cache's copies are read-only
            path.chmod(0o755 if path.is_dir() else 0o644)
        manifest = {"key": _key(), "version": VERSION, "built_seconds": round(time.monotonic() - started),
                    "binary_sha256": kubernetes._sha256(work / "entry" / "bin" / "kube-bench"),
                    "cfg_sha256": _digest(work / "entry" / "cfg")}
        (work / "entry" / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if found.directory.exists():
            shutil.rmtree(found.directory)
        os.rename(work / "entry", found.directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"Built kube-bench {VERSION} in {time.monotonic() - started:.0f} s")
    return found


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
