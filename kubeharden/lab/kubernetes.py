"""Real Kubernetes for the lab: kubeadm, the kubelet, the control plane and etcd built from the Go module proxy.

`k8s.io/kubernetes` cannot be `go install`ed: its go.mod requires every staging module (`k8s.io/api`, ...) at
v0.0.0 with `replace` lines that only apply inside its own repository. A wrapper module requires the release
and replaces each staging module with its published v0.MINOR.PATCH, the list taken from the release's own
go.mod, so that adding a release is a table entry and a build. etcd's server module is built the same way.

Builds land in the cache directory (outside any checkout), one directory per release and recipe. A build
writes into a temporary directory and renames it into place only after every binary is built and its
checksum recorded; a cached entry whose checksums no longer hold is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubeharden.lab import component_images
from kubeharden.lab.errors import LabError
from kubeharden.lab.image import cache_dir

# The Kubernetes minors kubeharden supports (upstream's supported releases), each with the etcd release its
# kubeadm accepts. The list itself is module_utils/kubeharden_kubeadm.SUPPORTED_MINORS (a unit test holds this
# table to it); adding a minor: a line there and here, then `kubeharden lab build --kubernetes-version 1.NN`.
SUPPORTED_MINORS = {"1.35": "v3.6.16", "1.36": "v3.6.16", "1.37": "v3.6.16"}
DEFAULT_MINOR = "1.37"
# The next minor while the proxy serves only its pre-releases (beta, rc), with the etcd its kubeadm deploys: built
# only when asked for by name (`--kubernetes-version 1.38`), never a default, never in CI, labelled as a pre-release
# wherever it is printed, and hardened only where the inventory opts in (control_plane_allow_prerelease). When its .0
# is served it moves to SUPPORTED_MINORS (and module_utils/kubeharden_kubeadm.SUPPORTED_MINORS, the roles' list).
PRERELEASE_MINORS = {"1.38": "v3.7.1"}
LAB_MINORS = {**SUPPORTED_MINORS, **PRERELEASE_MINORS}
# The newest release of each minor served on the day this table was written: used when the proxy cannot be asked.
KNOWN_PATCHES = {"1.35": "v1.35.4", "1.36": "v1.36.3", "1.37": "v1.37.2", "1.38": "v1.38.0-beta.0"}

KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
ETCD_STAGING = ("go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/pkg/v3", "go.etcd.io/etcd/client/v3",
                "go.etcd.io/etcd/pkg/v3")
# Upstream links everything but the kubelet statically (hack/lib/golang.sh: KUBE_STATIC_BINARIES).
STATIC_COMMANDS = ("kubeadm", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
CGO_COMMANDS = ("kubelet",)
# Kubernetes' own test workload (the lab's connectivity probes), from the same module, static as upstream's image.
AGNHOST_SOURCE = "test/images/agnhost"
ETCD_COMMANDS = {"etcd": ETCD_MODULE, "etcdctl": "go.etcd.io/etcd/etcdctl/v3"}
PAUSE_SOURCE = "build/pause/linux/pause.c"
BINARIES = (*STATIC_COMMANDS, *CGO_COMMANDS, *ETCD_COMMANDS, "pause", "agnhost")
IMAGES_ARCHIVE = "images.tar"
ENTRY_FILES = (*(f"bin/{name}" for name in BINARIES), IMAGES_ARCHIVE)
# Part of every cache key: bump it when the way binaries are built changes, so old builds are not reused.
RECIPE = "2"
GO_MINIMUM = {"1.35": (1, 25), "1.36": (1, 26), "1.37": (1, 26), "1.38": (1, 27)}
# A release that needs a newer Go than the machine's builds with the toolchain the Go module proxy serves
# (golang.org/toolchain, fetched by the go command itself): 1.38's go.mod says go 1.27.0.
GO_TOOLCHAINS = {"1.38": "go1.27.3"}


@dataclass(frozen=True)
class Release:
    """One Kubernetes release and the etcd built beside it."""

    version: str  # v1.37.2
    etcd: str  # v3.6.16

    @property
    def minor(self) -> str:
        return ".".join(self.version.lstrip("v").split(".")[:2])

    @property
    def prerelease(self) -> bool:
        return is_prerelease(self.version)

    @property
    def label(self) -> str:
        """The version as kubeharden prints it: a pre-release always says so."""
        return f"{self.version} (pre-release)" if self.prerelease else self.version

    @property
    def go_toolchain(self) -> str:
        return GO_TOOLCHAINS.get(self.minor, "local")

    @property
    def key(self) -> str:
        recipe = "|".join((RECIPE, self.version, self.etcd, *BINARIES))
        return f"{self.version}-etcd{self.etcd}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"

    @property
    def directory(self) -> Path:
        return cache_dir() / "kubernetes" / self.key

    @property
    def bin_dir(self) -> Path:
        return self.directory / "bin"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def images_archive(self) -> Path:
        return self.directory / IMAGES_ARCHIVE

    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())

    @property
    def coredns_version(self) -> str:
        """The CoreDNS release this Kubernetes release's kubeadm deploys (its CoreDNSVersion)."""
        return self.manifest()["coredns_version"]

    @property
    def agnhost_version(self) -> str:
        return self.manifest()["agnhost_version"]

    @property
    def etcd_image_tag(self) -> str:
        return f"{self.etcd.lstrip('v')}-0"


def is_prerelease(version: str) -> bool:
    """A beta or release candidate (v1.38.0-beta.0), or any release or minor (1.38) not yet supported."""
    return "-" in version or ".".join(version.lstrip("v").split(".")[:2]) in PRERELEASE_MINORS


def supported_window() -> str:
    """The supported minors, first-last (pre-releases are not in it)."""
    minors = sorted(SUPPORTED_MINORS, key=lambda m: tuple(int(p) for p in m.split(".")))
    return f"{minors[0]}-{minors[-1]}"


def resolve(requested: str | None, log=print) -> Release:
    """`1.37` -> the newest served 1.37 patch; `1.37.2` / `v1.37.2` as given; `1.38` (a pre-release minor) -> its
    newest served pre-release, `1.38.0-beta.0` as given. Refuses versions outside the window."""
    text = (DEFAULT_MINOR if requested is None else requested).strip().lstrip("v")
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+)(-(?:alpha|beta|rc)\.\d+)?)?", text)
    if not match:
        raise LabError(f"--kubernetes-version {requested!r} is not a version such as 1.37, 1.37.2 or 1.38.0-beta.0")
    minor = f"{match.group(1)}.{match.group(2)}"
    if minor not in LAB_MINORS:
        raise LabError(f"Kubernetes {text} is outside the versions kubeharden supports ({supported_window()}"
                       + "".join(f"; {m} as a pre-release" for m in PRERELEASE_MINORS) + ")")
    if match.group(4) and minor not in PRERELEASE_MINORS:
        raise LabError(f"Kubernetes {text} is a pre-release of a minor kubeharden supports as released: "
                       f"ask for {minor} or one of its patches")
    if match.group(3) is not None:
        version = f"v{text}"
        if newest_cached(minor) == version:  # built before: no need to ask the proxy (labs come up offline)
            return Release(version, LAB_MINORS[minor])
        served = _served_versions(log)
        if served is not None and version not in served:
            newest = _newest_release(served, minor)
            raise LabError(f"Kubernetes {version} is not served by the Go module proxy"
                           + (f"; the newest {minor} {'release' if minor in PRERELEASE_MINORS else 'patch'} is "
                              f"{newest}" if newest else ""))
    else:
        version = newest_cached(minor)
        served = _served_versions(log) if version is None else None
        if version is None:
            version = _newest_release(served, minor) if served is not None else KNOWN_PATCHES[minor]
        if version is None:
            raise LabError(f"the Go module proxy serves no Kubernetes {minor} release")
    return Release(version, LAB_MINORS[minor])


_STAGES = {"alpha": 0, "beta": 1, "rc": 2}


def version_order(version: str) -> tuple[int, int, int, int]:
    """v1.38.0-alpha.1 < v1.38.0-beta.0 < v1.38.0-rc.1 < v1.38.0 < v1.38.1, as semantic versioning orders them."""
    match = re.fullmatch(r"v?\d+\.\d+\.(\d+)(?:-(alpha|beta|rc)\.(\d+))?", version)
    if not match:
        return (-1, -1, -1, -1)
    patch, stage, number = match.groups()
    return (int(patch), _STAGES[stage] if stage else len(_STAGES), int(number or 0), 0)


def _newest_release(served: list[str], minor: str) -> str | None:
    """The newest patch of a supported minor; of a pre-release minor, its newest release of any kind."""
    stage = r"(?:-(?:alpha|beta|rc)\.\d+)?" if minor in PRERELEASE_MINORS else ""
    candidates = [v for v in served if re.fullmatch(rf"v{re.escape(minor)}\.\d+{stage}", v)]
    return max(candidates, key=version_order, default=None)


def newest_cached(minor: str) -> str | None:
    """A cached complete build of `minor`: a lab comes up offline once its version has been built."""
    root = cache_dir() / "kubernetes"
    found = []
    for manifest_path in root.glob(f"v{minor}.*/manifest.json") if root.exists() else []:
        manifest = json.loads(manifest_path.read_text())
        release = Release(manifest["version"], manifest["etcd"])
        if release.key == manifest_path.parent.name and release.etcd == LAB_MINORS[minor]:
            found.append(release.version)
    return max(found, key=version_order, default=None)


def _served_versions(log) -> list[str] | None:
    """The k8s.io/kubernetes versions the Go module proxy lists, or None when Go or the proxy cannot tell."""
    if shutil.which("go") is None:
        return None
    result = subprocess.run(["go", "list", "-m", "-versions", "-json", KUBERNETES_MODULE], capture_output=True,
                            text=True, env=_go_env(), cwd=cache_dir_ready(), check=False)
    if result.returncode != 0:
        log(f"could not ask the Go module proxy for Kubernetes releases: {result.stderr.strip()[-300:]}")
        return None
    return json.loads(result.stdout).get("Versions", [])


def cache_dir_ready() -> Path:
    directory = cache_dir() / "kubernetes"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _go_env(toolchain: str = "local", **extra: str) -> dict:
    # GOFLAGS=-mod=mod lets the wrapper module record go.sum entries as the build needs them.
    return {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": toolchain, "GOWORK": "off", **extra}


# -- cache -------------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached(release: Release) -> bool:
    """True only for a complete entry whose every binary still has the checksum recorded when it was built."""
    manifest_path = release.directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("sha256", {})
    if set(files) != set(ENTRY_FILES) or manifest.get("key") != release.key:
        return False
    return all((release.directory / name).is_file() and _sha256(release.directory / name) == digest
               for name, digest in files.items())


@contextlib.contextmanager
def _lock(release: Release) -> Iterator[None]:
    with open(cache_dir_ready() / f".{release.version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_binaries(release: Release, log=print) -> Release:
    """Build the release's binaries unless a complete cached build exists; concurrent callers wait for one build."""
    if cached(release):
        return release
    with _lock(release):
        if cached(release):  # built by a concurrent caller while we waited
            return release
        _build(release, log)
    return release


def _require_go(release: Release) -> str:
    go = shutil.which("go")
    if go is None:
        raise LabError(f"building Kubernetes {release.version} needs Go {'.'.join(map(str, GO_MINIMUM[release.minor]))}"
                       " or newer: install it (Debian: golang-go from backports, or the release on go.dev) and retry")
    # With a toolchain named (GO_TOOLCHAINS), the go command fetches it from the Go module proxy here, once.
    answer = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False,
                            env=_go_env(release.go_toolchain))
    output = answer.stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", output)
    if not match or (int(match.group(1)), int(match.group(2))) < GO_MINIMUM[release.minor]:
        raise LabError(f"Kubernetes {release.minor} needs Go {'.'.join(map(str, GO_MINIMUM[release.minor]))} or "
                       f"newer; this machine has {output or 'an unknown Go'}"
                       + (f" (GOTOOLCHAIN={release.go_toolchain}: {answer.stderr.strip()[-300:]})"
                          if release.go_toolchain != "local" else ""))
    return go


def _build(release: Release, log) -> None:
    go = _require_go(release)
    started = time.monotonic()
    root = cache_dir_ready()
    work = root / f".build-{release.key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    # Leftovers of builds that were killed: never read, removed here.
    for stale in root.glob(f".build-{release.key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    log(f"Building Kubernetes {release.label} and etcd {release.etcd} from the Go module proxy "
        f"(cached in {release.directory}; a first build takes a while on a small machine)")
    try:
        bin_dir = work / "entry" / "bin"
        bin_dir.mkdir(parents=True)
        toolchain = release.go_toolchain
        kube = _download(go, KUBERNETES_MODULE, release.version, work, toolchain)
        _write_wrapper(work / "kubernetes", KUBERNETES_MODULE, release.version,
                       _staging_replacements(Path(kube["GoMod"]), release.version))
        ldflags = _kubernetes_ldflags(release.version, kube)
        _go_build(go, work / "kubernetes", bin_dir, [f"{KUBERNETES_MODULE}/cmd/{c}" for c in STATIC_COMMANDS]
                  + [f"{KUBERNETES_MODULE}/{AGNHOST_SOURCE}"], ldflags, cgo=False, log=log,
                  label=f"kubernetes {release.label}", toolchain=toolchain)
        _go_build(go, work / "kubernetes", bin_dir, [f"{KUBERNETES_MODULE}/cmd/{c}" for c in CGO_COMMANDS],
                  ldflags, cgo=True, log=log, label=f"kubelet {release.label}", toolchain=toolchain)
        _build_pause(Path(kube["Dir"]) / PAUSE_SOURCE, bin_dir / "pause", log)
        etcd = _download(go, ETCD_MODULE, release.etcd, work, toolchain)
        _write_wrapper(work / "etcd", ETCD_MODULE, release.etcd, {m: release.etcd for m in ETCD_STAGING},
                       extra_requires={ETCD_COMMANDS["etcdctl"]: release.etcd})
        etcd_commit = (etcd.get("Origin") or {}).get("Hash", "")[:8]
        etcd_ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={etcd_commit}"
        for name, package in ETCD_COMMANDS.items():
            _go_build(go, work / "etcd", bin_dir / name, [package], etcd_ldflags, cgo=False, log=log,
                      label=f"{name} {release.etcd}", toolchain=toolchain)
        missing = [name for name in BINARIES if not (bin_dir / name).is_file()]
        if missing:
            raise LabError(f"the build finished without {', '.join(missing)}")
        pause = _kubeadm_constant(Path(kube["Dir"]), "PauseVersion")
        coredns = _kubeadm_constant(Path(kube["Dir"]), "CoreDNSVersion")
        agnhost = (Path(kube["Dir"]) / AGNHOST_SOURCE / "VERSION").read_text().strip()
        images = component_images.images_for(release.version, release.etcd_image_tag, pause)
        component_images.write_archive(images, bin_dir, work / "entry" / IMAGES_ARCHIVE)
        log(f"[build] images: {', '.join(image.reference for image in images)}")
        manifest = {"key": release.key, "version": release.version, "etcd": release.etcd,
                    "etcd_image_tag": release.etcd_image_tag,
                    "pause_image": f"{component_images.REGISTRY}/pause:{pause}",
                    "coredns_version": coredns, "agnhost_version": agnhost,
                    "images": [image.reference for image in images],
                    "built_seconds": round(time.monotonic() - started),
                    "sha256": {name: _sha256(work / "entry" / name) for name in ENTRY_FILES}}
        (work / "entry" / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if release.directory.exists():  # an incomplete or corrupted entry: replaced, never mended
            shutil.rmtree(release.directory)
        os.rename(work / "entry", release.directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"Built Kubernetes {release.label} and etcd {release.etcd} in {time.monotonic() - started:.0f} s")


def _kubeadm_constant(source: Path, name: str) -> str:
    """A string constant of the release's kubeadm (cmd/kubeadm/app/constants), such as PauseVersion."""
    text = (source / "cmd/kubeadm/app/constants/constants.go").read_text()
    match = re.search(rf'^\s*{name}\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise LabError(f"kubeadm {name} not found in the release's constants.go")
    return match.group(1)


def _download(go: str, module: str, version: str, work: Path, toolchain: str = "local") -> dict:
    result = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True,
                            env=_go_env(toolchain), cwd=work, check=False)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip()[-800:]
        raise LabError(f"could not download {module}@{version} from the Go module proxy:\n{detail}")
    info = json.loads(result.stdout)
    if info.get("Error"):
        raise LabError(f"could not download {module}@{version}: {info['Error']}")
    return info


def _staging_replacements(upstream_go_mod: Path, version: str) -> dict[str, str]:
    """The release's `replace k8s.io/x => ./staging/...` lines, each pointed at the published v0.MINOR.PATCH."""
    staging_version = "v0." + version.lstrip("v").split(".", 1)[1]
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", upstream_go_mod.read_text(), re.MULTILINE)
    if not modules:
        raise LabError(f"{upstream_go_mod} has no staging replace lines: this release is built differently")
    return dict.fromkeys(modules, staging_version)


def _write_wrapper(directory: Path, module: str, version: str, replacements: dict[str, str],
                   extra_requires: dict[str, str] | None = None) -> None:
    directory.mkdir(parents=True)
    requires = {module: version, **(extra_requires or {})}
    lines = ["module kubeharden.invalid/build", "", "go 1.25", "", "require ("]
    lines += [f"\t{name} {ver}" for name, ver in requires.items()]
    lines += [")", "", "replace ("]
    lines += [f"\t{name} => {name} {ver}" for name, ver in sorted(replacements.items())]
    lines += [")", ""]
    (directory / "go.mod").write_text("\n".join(lines))


def _kubernetes_ldflags(version: str, info: dict) -> str:
    """Version stamping as upstream's hack/lib/version.sh does, so `--version` and kubeadm's checks see the release."""
    major, minor = version.lstrip("v").split(".")[:2]
    commit = (info.get("Origin") or {}).get("Hash", "")
    build_date = info.get("Time", "1970-01-01T00:00:00Z")
    values = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitCommit": commit,
              "gitTreeState": "clean", "buildDate": build_date}
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in values.items()]
    return " ".join(flags)


_PROGRESS_EVERY = 60  # packages between two progress lines


def _go_build(go: str, module_dir: Path, output: Path, packages: list[str], ldflags: str, *, cgo: bool, log,
              label: str, tags: tuple[str, ...] = (), flags: tuple[str, ...] = (), toolchain: str = "local") -> None:
    """`go build -v`, printing a progress line every _PROGRESS_EVERY packages; the Go error's tail on failure."""
    started = time.monotonic()
    target = str(output) + ("/" if output.is_dir() else "")
    command = [go, "build", "-v", "-trimpath", *flags, *(["-tags", " ".join(tags)] if tags else []),
               "-ldflags", ldflags, "-o", target, *packages]
    env = _go_env(toolchain, CGO_ENABLED="1" if cgo else "0")
    process = subprocess.Popen(command, cwd=module_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    tail: list[str] = []
    compiled = 0
    for line in process.stdout:
        line = line.rstrip()
        tail = [*tail, line][-40:]
        if line.startswith("go: downloading"):
            continue
        compiled += 1
        if compiled % _PROGRESS_EVERY == 0:
            log(f"[build {label} {time.monotonic() - started:4.0f}s] {compiled} packages ({line})")
    if process.wait() != 0:
        details = "\n".join(tail)
        raise LabError(f"building {label} failed (go build exit {process.returncode}); the end of Go's output:\n"
                       f"{details}")
    log(f"[build {label}] done in {time.monotonic() - started:.0f} s")


def _build_pause(source: Path, output: Path, log) -> None:
    """The pause container's binary from the release's own C source, linked statically as upstream does."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LabError("building the pause binary needs a C compiler: apt-get install -y gcc libc6-dev")
    if not source.is_file():
        raise LabError(f"the release has no {PAUSE_SOURCE}")
    result = subprocess.run([compiler, "-Os", "-Wall", "-Werror", "-static", "-DVERSION=kubeharden", "-o",
                             str(output), str(source)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"building pause failed:\n{result.stderr.strip()[-800:]}")
    subprocess.run(["strip", str(output)], check=False)
    log("[build pause] done")
