"""Tools the lab tests run beside Kubernetes, built from the Go module proxy and cached beside the Kubernetes
builds: kube-bench (the second opinion on the CIS controls) and kube-router (a NetworkPolicy engine).

`go install MODULE@VERSION` cannot work here: the proxy refuses some modules' version lists, which `go install`
reads for deprecation notices. A wrapper module that requires the exact version builds the same binary. An entry
is used only while every file matches the checksums its manifest recorded when the build finished; a partial or
changed entry is rebuilt, never used.
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


@dataclass(frozen=True)
class GoTool:
    name: str  # the cache directory's name and the binary's
    module: str
    version: str
    package: str  # the main package built from the module
    recipe: str = "1"  # changes when the way it is built changes: a new cache key
    data_dir: str = ""  # a directory of the module's source kept beside the binary (kube-bench's cfg/)

    @property
    def key(self) -> str:
        return f"{self.version}-{hashlib.sha256(self.recipe.encode()).hexdigest()[:10]}"

    @property
    def directory(self) -> Path:
        return kubernetes.cache_dir() / self.name / self.key

    @property
    def binary(self) -> Path:
        return self.directory / "bin" / self.name


def digest(directory: Path) -> str:
    """One digest over every file of a tree: their relative paths and contents."""
    found = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        found.update(str(path.relative_to(directory)).encode() + b"\0")
        found.update(kubernetes._sha256(path).encode())
    return found.hexdigest()


def cached(tool: GoTool, directory: Path | None = None) -> bool:
    directory = directory or tool.directory
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    binary = directory / "bin" / tool.name
    if manifest.get("key") != directory.name or not binary.is_file() or \
            kubernetes._sha256(binary) != manifest.get("binary_sha256"):
        return False
    return not tool.data_dir or ((directory / tool.data_dir).is_dir() and
                                 digest(directory / tool.data_dir) == manifest.get(f"{tool.data_dir}_sha256"))


def ensure(tool: GoTool, log=print) -> Path:
    """The tool's cache entry, built first when no complete one exists."""
    if cached(tool):
        return tool.directory
    go = shutil.which("go")
    if go is None:
        raise LabError(f"building {tool.name} needs Go: install it and retry")
    root = tool.directory.parent
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".build-{tool.key}-{os.getpid()}"
    for stale in root.glob(f".build-{tool.key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    log(f"Building {tool.name} {tool.version} from the Go module proxy (cached in {tool.directory})")
    try:
        (work / "entry" / "bin").mkdir(parents=True)
        source = kubernetes._download(go, tool.module, tool.version, work)
        kubernetes._write_wrapper(work / "module", tool.module, tool.version, {})
        kubernetes._go_build(go, work / "module", work / "entry" / "bin" / tool.name, [tool.package], "-s -w",
                             cgo=False, log=log, label=f"{tool.name} {tool.version}")
        manifest = {"key": tool.key, "version": tool.version, "built_seconds": round(time.monotonic() - started),
                    "binary_sha256": kubernetes._sha256(work / "entry" / "bin" / tool.name)}
        if tool.data_dir:
            shutil.copytree(Path(source["Dir"]) / tool.data_dir, work / "entry" / tool.data_dir)
            for path in (work / "entry" / tool.data_dir).rglob("*"):  # the module cache's copies are read-only
                path.chmod(0o755 if path.is_dir() else 0o644)
            manifest[f"{tool.data_dir}_sha256"] = digest(work / "entry" / tool.data_dir)
        (work / "entry" / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if tool.directory.exists():
            shutil.rmtree(tool.directory)
        os.rename(work / "entry", tool.directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"Built {tool.name} {tool.version} in {time.monotonic() - started:.0f} s")
    return tool.directory
