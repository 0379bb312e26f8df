"""Build and cache node images: debootstrap a Debian root filesystem, then `docker import` it.

An image is tagged with a hash of everything that goes into it (suite, package lists, this file and the
files copied into the node), so a rebuild happens only when one of those changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubeharden.lab import docker
from kubeharden.lab.errors import LabError

NODE_FILES = Path(__file__).parent / "node_files"
LAB_ADMIN_USER = "labadmin"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

SUITES = {"12": "bookworm", "13": "trixie"}

# What a Kubernetes node has before any hardening (../PLATFORM facts: a realistic kubeadm node).
NODE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-yaml", "openssh-server", "sudo", "cron",
    "nftables", "iptables", "kmod", "iproute2", "procps", "ca-certificates", "openssl",
    "conntrack", "socat", "ipset", "logrotate", "systemd-timesyncd", "apparmor", "curl",
    "etcd-server", "etcd-client",
    # The container runtime (containerd 2.x, runc, the CNI plugins) is not Debian's: runtime.py builds and installs
    # upstream's releases on every node, as a kubeadm user does.
)

# AIDE comes installed (not configured, no database), as on base images that ship it: its package's set-up writes
# some 200 configuration snippets through ucf, 25 s per node, which every first hardening run in the tests would
# otherwise pay. The molecule node_os scenarios purge it first, so the role's install of AIDE is still proven.
PREINSTALLED_PACKAGES = ("aide", "aide-common")

# Packages hardening roles install. Nodes have no network, so their .debs wait in apt's cache with the
# package lists present: `apt-get install` then works offline, as it would from a local mirror.
CACHED_PACKAGES = (
    "auditd", "aide", "aide-common", "libpam-pwquality", "apparmor-utils", "unattended-upgrades", "lynis",
    # node_os's optional security tools (node_os_security_packages): the lab can test every choice.
    "libpam-tmpdir", "debsums", "acct", "sysstat", "apt-listchanges", "apt-show-versions", "needrestart",
    "fail2ban", "rkhunter", "usbguard",
)


@dataclass(frozen=True)
class ImageSpec:
    debian: str = "12"
    mirror: str = DEFAULT_MIRROR

    @property
    def suite(self) -> str:
        try:
            return SUITES[self.debian]
        except KeyError:
            raise LabError(f"unsupported Debian release {self.debian!r}: choose one of {sorted(SUITES)}") from None

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for part in (self.suite, self.mirror, *NODE_PACKAGES, "|", *CACHED_PACKAGES, "|", *PREINSTALLED_PACKAGES,
                     LAB_ADMIN_USER):
            digest.update(part.encode() + b"\0")
        digest.update(Path(__file__).read_bytes())
        for path in sorted(NODE_FILES.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(NODE_FILES)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"kubeharden-node:debian{self.debian}-{self.content_hash()}"


def cache_dir() -> Path:
    base = os.environ.get("KUBEHARDEN_CACHE_DIR")
    if base:
        return Path(base)
    return Path("/var/cache/kubeharden") if os.geteuid() == 0 else Path.home() / ".cache" / "kubeharden"


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_image(spec: ImageSpec, log=print) -> str:
    """Return the tag of a node image for `spec`, building it first when it is not cached."""
    tag = spec.tag
    if docker.image_exists(tag):
        return tag
    with _build_lock():
        if docker.image_exists(tag):  # built by a concurrent caller while we waited
            return tag
        _require_debootstrap()
        started = time.monotonic()
        log(f"Building node image {tag} (Debian {spec.debian}, a few minutes the first time)")
        rootfs = cache_dir() / f"rootfs-{spec.debian}-{spec.content_hash()}"
        if rootfs.exists():
            shutil.rmtree(rootfs)
        try:
            _debootstrap(spec, rootfs, log)
            _customise(spec, rootfs, log)
            log("[image] importing root filesystem into docker")
            _import(rootfs, tag)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        log(f"Built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def _require_debootstrap() -> None:
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed: run `apt-get install -y debootstrap` (as root) and retry")
    if os.geteuid() != 0:
        raise LabError("building a node image needs root (debootstrap and chroot): rerun as root")


_NOISY_PREFIXES = ("I: Retrieving", "I: Validating", "I: Unpacking", "I: Configuring", "I: Extracting")


def _stream(cmd: list[str], log, label: str) -> None:
    """Run `cmd`, showing progress: every stage line, and every 40th per-package line."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for count, line in enumerate(proc.stdout):
        line = line.rstrip()
        tail = ([*tail, line])[-30:]
        if not line.startswith(_NOISY_PREFIXES) or count % 40 == 0:
            log(f"[{label} {time.monotonic() - started:4.0f}s] {line}")
    if proc.wait() != 0:
        details = "\n".join(tail)
        raise LabError(f"{label} failed (exit {proc.returncode}): {' '.join(cmd[:4])} ...\n{details}")


def _debootstrap(spec: ImageSpec, rootfs: Path, log) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}", spec.suite, str(rootfs),
           spec.mirror]
    _stream(cmd, log, "debootstrap")


def _chroot(rootfs: Path, script: str, log, label: str) -> None:
    env_prefix = "export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
    _stream(["chroot", str(rootfs), "/bin/sh", "-euc", env_prefix + script], log, label)


def _customise(spec: ImageSpec, rootfs: Path, log) -> None:
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    # Sources as the Debian installer writes them: the release, its updates and the security archive.
    security = spec.mirror.rsplit("/", 1)[0] + "/debian-security"
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {spec.mirror} {spec.suite} main\n"
        f"deb {spec.mirror} {spec.suite}-updates main\n"
        f"deb {security} {spec.suite}-security main\n")
    _chroot(rootfs, f"""
apt-get update -q
apt-get install -q -y --download-only {' '.join(CACHED_PACKAGES)}
apt-get install -q -y --no-install-recommends {' '.join(PREINSTALLED_PACKAGES)}
""", log, "apt-cache")
    for source in NODE_FILES.rglob("*"):
        if source.is_file():
            target = rootfs / source.relative_to(NODE_FILES)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
            target.chmod(0o755 if os.access(source, os.X_OK) else 0o644)
    # The node's SSH host keys are made at first boot, so no two lab nodes share them; etcd is started by
    # kubeadm (a static pod) or by the lab (a host service), never by the package's default unit.
    _chroot(rootfs, f"""
useradd --create-home --shell /bin/bash --groups sudo {LAB_ADMIN_USER}
printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {LAB_ADMIN_USER} > /etc/sudoers.d/{LAB_ADMIN_USER}
chmod 0440 /etc/sudoers.d/{LAB_ADMIN_USER}
visudo -cf /etc/sudoers.d/{LAB_ADMIN_USER}
rm -f /etc/ssh/ssh_host_*
systemctl enable kubeharden-lab-hostkeys.service kubeharden-lab-kernel.service kubeharden-lab-flannel-cni.path
systemctl disable etcd.service
systemctl mask getty@tty1.service console-getty.service systemd-firstboot.service
: > /etc/machine-id
: > /etc/resolv.conf
""", log, "customise")


def _import(rootfs: Path, tag: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    result = subprocess.run(
        ["docker", "import", "-c", 'CMD ["/sbin/init"]', "-c", "LABEL kubeharden.image=node", "-", tag],
        stdin=tar.stdout, capture_output=True, text=True,
    )
    tar.wait()
    if result.returncode != 0 or tar.returncode != 0:
        raise LabError(f"docker import failed: {result.stderr.strip()}")


if __name__ == "__main__":  # pragma: no cover - manual use: python -m kubeharden.lab.image 12
    print(ensure_image(ImageSpec(debian=sys.argv[1] if len(sys.argv) > 1 else "12")))
