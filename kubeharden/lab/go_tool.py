"""Programs the lab builds from the Go module proxy beside Kubernetes, each cached by version and recipe: the container
runtime (containerd, runc, the CNI plugins), the cluster's addons (CoreDNS, flannel, kube-router) and the tests'
second opinion (kube-bench).

`go install MODULE@VERSION` cannot work here: the proxy refuses some modules' version lists, which `go install`
reads for deprecation notices, and some programs need build tags, cgo or a replaced dependency. A wrapper module that
requires the exact version builds the same binaries. A tool's cache entry is used only while every file in it
matches the checksum its manifest recorded when the build finished; a partial or changed entry is rebuilt, never
used. Concurrent callers wait for one build (a lock per tool).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubeharden.lab import kubernetes
from kubeharden.lab.errors import LabError


@dataclass(frozen=True)
class GoBuild:
    """One `go build` of a tool: the binaries it writes (name, package) and how they are linked.

    `ldflags` may name `{version}` and `{commit}` (the module version's commit, when the proxy knows it)."""

    binaries: tuple[tuple[str, str], ...]
    cgo: bool = False
    tags: tuple[str, ...] = ()
    ldflags: str = "-s -w"
    flags: tuple[str, ...] = ()  # more `go build` flags, such as -buildmode=pie


@dataclass(frozen=True)
class GoTool:
    name: str  # the cache directory's name; the first binary's name for a single-binary tool
    module: str
    version: str
    builds: tuple[GoBuild, ...]
    # Dependencies the proxy does not serve at the version the module asks for, each replaced by a served one.
    replace: tuple[tuple[str, str], ...] = ()
    source_files: tuple[str, ...] = ()  # files of the module's source kept beside the binaries (a systemd unit)
    data_dir: str = ""  # a directory of the module's source kept beside the binaries (kube-bench's cfg/)
    recipe: str = "1"  # bump it when the way the tool is built changes in a way its fields do not show

    @classmethod
    def single(cls, name: str, module: str, version: str, package: str, **options) -> GoTool:
        return cls(name, module, version, (GoBuild(((name, package),)),), **options)

    @property
    def key(self) -> str:
        recipe = repr((self.recipe, self.module, self.builds, self.replace, self.source_files, self.data_dir))
        return f"{self.version}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"

    @property
    def directory(self) -> Path:
        return kubernetes.cache_dir() / self.name / self.key

    @property
    def binary_names(self) -> list[str]:
        return [name for build in self.builds for name, _ in build.binaries]

    def binary(self, name: str | None = None) -> Path:
        return self.directory / "bin" / (name or self.name)


def digest(directory: Path) -> str:
    """One digest over every file of a tree: their relative paths and contents."""
    found = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        found.update(str(path.relative_to(directory)).encode() + b"\0")
        found.update(kubernetes._sha256(path).encode())
    return found.hexdigest()


def _checksums(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): kubernetes._sha256(path)
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != "manifest.json"}


def cached(tool: GoTool, directory: Path | None = None) -> bool:
    """True only for a complete entry: every file it should hold, each with the checksum recorded at its build."""
    directory = directory or tool.directory
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("files") or {}
    wanted = {f"bin/{name}" for name in tool.binary_names} | set(tool.source_files)
    if manifest.get("key") != directory.name or not wanted <= set(files):
        return False
    if tool.data_dir and not any(name.startswith(f"{tool.data_dir}/") for name in files):
        return False
    return _checksums(directory) == files


@contextlib.contextmanager
def _lock(tool: GoTool) -> Iterator[None]:
    root = tool.directory.parent
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{tool.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(tool: GoTool, log=print) -> Path:
    """The tool's cache entry, built first when no complete one exists."""
    if cached(tool):
        return tool.directory
    with _lock(tool):
        if not cached(tool):  # built by a concurrent caller while this one waited
            _build(tool, log)
    return tool.directory


def _build(tool: GoTool, log) -> None:
    go = shutil.which("go")
    if go is None:
        raise LabError(f"building {tool.name} {tool.version} needs Go: install it and retry")
    root = tool.directory.parent
    for stale in root.glob(f".build-{tool.key}-*"):  # a killed build's leftovers: never read
        shutil.rmtree(stale, ignore_errors=True)
    work = root / f".build-{tool.key}-{os.getpid()}"
    started = time.monotonic()
    log(f"Building {tool.name} {tool.version} from the Go module proxy (cached in {tool.directory})")
    try:
        entry = work / "entry"
        (entry / "bin").mkdir(parents=True)
        source = kubernetes._download(go, tool.module, tool.version, work)
        commit = (source.get("Origin") or {}).get("Hash", "") or tool.version
        kubernetes._write_wrapper(work / "module", tool.module, tool.version, dict(tool.replace))
        for build in tool.builds:
            packages = [package for _, package in build.binaries]
            # One binary: written under its own name; several: `go build -o DIR/` names each after its package.
            output = entry / "bin" / build.binaries[0][0] if len(packages) == 1 else entry / "bin"
            kubernetes._go_build(go, work / "module", output, packages,
                                 build.ldflags.format(version=tool.version, commit=commit), cgo=build.cgo, log=log,
                                 label=f"{tool.name} {tool.version}", tags=build.tags, flags=build.flags)
        missing = [name for name in tool.binary_names if not (entry / "bin" / name).is_file()]
        if missing:
            raise LabError(f"building {tool.name} {tool.version} finished without {', '.join(missing)}")
        for name in tool.source_files:
            shutil.copyfile(Path(source["Dir"]) / name, entry / name)
        if tool.data_dir:
            shutil.copytree(Path(source["Dir"]) / tool.data_dir, entry / tool.data_dir)
        for path in entry.rglob("*"):  # the module cache's copies are read-only
            if not path.is_dir() and path.parent.name != "bin":
                path.chmod(0o644)
            elif path.is_dir():
                path.chmod(0o755)
        manifest = {"key": tool.key, "version": tool.version, "commit": commit,
                    "built_seconds": round(time.monotonic() - started), "files": _checksums(entry)}
        (entry / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if tool.directory.exists():  # an incomplete or altered entry: replaced, never mended
            shutil.rmtree(tool.directory)
        os.rename(entry, tool.directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"Built {tool.name} {tool.version} in {time.monotonic() - started:.0f} s")
