"""Container images made from the binaries the lab built: the control plane, etcd and pause (kubernetes.py), and the
cluster's addons (addons.py).

No registry is reachable, so the images kubeadm asks for (`registry.k8s.io/kube-apiserver:v1.37.2`, ...) are
written here as `docker save`-format archives that each node's containerd imports. A static binary's image is one
layer holding the binary and the few files a distroless base image has (passwd, group, /tmp), like upstream's
images; an image whose program runs netfilter tools (kube-proxy, flannel, kube-router) has a first layer with them
(addons.py: Debian's iptables, nft and ipset, as upstream's distroless-iptables base image is Debian's).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "registry.k8s.io"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NONROOT = 65532  # distroless' nonroot user, which upstream's CoreDNS image runs as
_PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" \
          "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
_GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


@dataclass(frozen=True)
class ComponentImage:
    name: str  # repository under the registry
    tag: str
    binaries: tuple[str, ...]  # installed in /usr/local/bin, or at the path `paths` gives
    entrypoint: tuple[str, ...] = ()
    registry: str = REGISTRY
    paths: tuple[tuple[str, str], ...] = ()  # (binary, path in the image) where it is not /usr/local/bin
    user: str = ""
    base: str = ""  # a layer shared by several images, by name (write_archive's `bases`)
    # File capabilities (`setcap NAMES+ep`) of a binary, as upstream's image sets them: a non-root program that
    # binds a low port (CoreDNS on 53) holds CAP_NET_BIND_SERVICE through its file, not through the container's
    # capabilities (Kubernetes gives a non-root process no ambient capabilities).
    file_capabilities: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.name}:{self.tag}"

    def path(self, binary: str) -> str:
        return dict(self.paths).get(binary, f"usr/local/bin/{binary}").lstrip("/")


def images_for(version: str, etcd_tag: str, pause_tag: str) -> list[ComponentImage]:
    """The images kubeadm's static pods and containerd's sandboxes ask for."""
    control_plane = [ComponentImage(name, version, (name,))
                     for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    return [*control_plane,
            ComponentImage("etcd", etcd_tag, ("etcd", "etcdctl")),
            ComponentImage("pause", pause_tag, ("pause",), entrypoint=("/usr/local/bin/pause",))]


CAP_NET_BIND_SERVICE = 10
_VFS_CAP_REVISION_2, _VFS_CAP_FLAGS_EFFECTIVE = 0x02000000, 0x000001


def capability_xattr(capabilities: tuple[int, ...]) -> bytes:
    """security.capability for `setcap CAPS+ep`: the kernel's vfs_cap_data, revision 2 (permitted, effective)."""
    permitted = sum(1 << cap for cap in capabilities)
    return struct.pack("<IIIII", _VFS_CAP_REVISION_2 | _VFS_CAP_FLAGS_EFFECTIVE, permitted & 0xFFFFFFFF, 0,
                       permitted >> 32, 0)


def _add(archive: tarfile.TarFile, name: str, data: bytes | None, mode: int, uid: int = 0,
         xattrs: dict[str, bytes] | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 0
    # PAX records as GNU tar and containerd's layer applier read extended attributes (binary values).
    info.pax_headers = {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                        for key, value in (xattrs or {}).items()}
    if data is None:
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    else:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def _layer(image: ComponentImage, bin_dirs: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        directories = {"etc", "usr", "usr/local", "usr/local/bin", "var", "var/run", "home"}
        for binary in image.binaries:
            parts = image.path(binary).split("/")[:-1]
            directories |= {"/".join(parts[:index]) for index in range(1, len(parts) + 1)}
        for directory in sorted(directories):
            _add(archive, directory, None, 0o755)
        _add(archive, "tmp", None, 0o1777)
        _add(archive, "home/nonroot", None, 0o700, uid=NONROOT)
        _add(archive, "etc/passwd", _PASSWD.encode(), 0o644)
        _add(archive, "etc/group", _GROUP.encode(), 0o644)
        _add(archive, "etc/nsswitch.conf", b"hosts: files dns\n", 0o644)
        for binary in image.binaries:
            source = next((directory / binary for directory in bin_dirs if (directory / binary).is_file()), None)
            if source is None:
                raise FileNotFoundError(f"{binary} (for {image.reference}) in none of {[str(d) for d in bin_dirs]}")
            capabilities = dict(image.file_capabilities).get(binary)
            _add(archive, image.path(binary), source.read_bytes(), 0o755,
                 xattrs={"security.capability": capability_xattr(capabilities)} if capabilities else None)
    return buffer.getvalue()


def write_archive(images: list[ComponentImage], bin_dirs: Path | list[Path], target: Path,
                  bases: dict[str, bytes] | None = None) -> None:
    """One docker-archive (`docker save` layout) holding every image; `ctr images import` reads it. An image with a
    `base` gets that layer (from `bases`) first; a layer shared by several images is stored once."""
    bin_dirs = [bin_dirs] if isinstance(bin_dirs, Path) else bin_dirs
    manifest = []
    written: set[str] = set()
    with tarfile.open(target, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for image in images:
            layers = ([(bases or {})[image.base]] if image.base else []) + [_layer(image, bin_dirs)]
            layer_ids = [hashlib.sha256(layer).hexdigest() for layer in layers]
            for layer, layer_id in zip(layers, layer_ids, strict=True):
                if layer_id not in written:
                    _add(archive, f"{layer_id}", None, 0o755)
                    _add(archive, f"{layer_id}/layer.tar", layer, 0o644)
                    written.add(layer_id)
            config = {
                "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
                "config": {"Env": [f"PATH={PATH}"], "Entrypoint": list(image.entrypoint) or None,
                           "WorkingDir": "/", "Labels": {"kubeharden.lab": "component"},
                           **({"User": image.user} if image.user else {})},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}" for layer_id in layer_ids]},
                "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubeharden lab"} for _ in layers],
            }
            config_bytes = json.dumps(config, sort_keys=True).encode()
            config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
            _add(archive, config_name, config_bytes, 0o644)
            manifest.append({"Config": config_name, "RepoTags": [image.reference],
                             "Layers": [f"{layer_id}/layer.tar" for layer_id in layer_ids]})
        _add(archive, "manifest.json", json.dumps(manifest).encode(), 0o644)
