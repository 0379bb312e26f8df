"""Container images of the control plane, etcd and pause, made from the binaries the lab built.

No registry is reachable, so the images kubeadm asks for (`registry.k8s.io/kube-apiserver:v1.37.2`, ...) are
written here as one `docker save`-format archive that each node's containerd imports. Each image is one
layer holding its static binary and the few files a distroless base image has (passwd, group, /tmp),
like upstream's images.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "registry.k8s.io"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" \
          "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
_GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


@dataclass(frozen=True)
class ComponentImage:
    name: str  # repository under the registry
    tag: str
    binaries: tuple[str, ...]  # installed in /usr/local/bin
    entrypoint: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{REGISTRY}/{self.name}:{self.tag}"


def images_for(version: str, etcd_tag: str, pause_tag: str) -> list[ComponentImage]:
    """The images kubeadm's static pods and containerd's sandboxes ask for."""
    control_plane = [ComponentImage(name, version, (name,))
                     for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    return [*control_plane,
            ComponentImage("etcd", etcd_tag, ("etcd", "etcdctl")),
            ComponentImage("pause", pause_tag, ("pause",), entrypoint=("/usr/local/bin/pause",))]


def _add(archive: tarfile.TarFile, name: str, data: bytes | None, mode: int, uid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 0
    if data is None:
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    else:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def _layer(image: ComponentImage, bin_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("etc", "usr", "usr/local", "usr/local/bin", "var", "var/run"):
            _add(archive, directory, None, 0o755)
        _add(archive, "tmp", None, 0o1777)
        _add(archive, "home", None, 0o755)
        _add(archive, "home/nonroot", None, 0o700, uid=65532)
        _add(archive, "etc/passwd", _PASSWD.encode(), 0o644)
        _add(archive, "etc/group", _GROUP.encode(), 0o644)
        _add(archive, "etc/nsswitch.conf", b"hosts: files dns\n", 0o644)
        for binary in image.binaries:
            _add(archive, f"usr/local/bin/{binary}", (bin_dir / binary).read_bytes(), 0o755)
    return buffer.getvalue()


def write_archive(images: list[ComponentImage], bin_dir: Path, target: Path) -> None:
    """One docker-archive (`docker save` layout) holding every image; `ctr images import` reads it."""
    manifest = []
    with tarfile.open(target, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for image in images:
            layer = _layer(image, bin_dir)
            layer_id = hashlib.sha256(layer).hexdigest()
            config = {
                "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
                "config": {"Env": [f"PATH={PATH}"], "Entrypoint": list(image.entrypoint) or None,
                           "WorkingDir": "/", "Labels": {"kubeharden.lab": "component"}},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
                "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubeharden lab"}],
            }
            config_bytes = json.dumps(config, sort_keys=True).encode()
            config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
            _add(archive, f"{layer_id}", None, 0o755)
            _add(archive, f"{layer_id}/layer.tar", layer, 0o644)
            _add(archive, config_name, config_bytes, 0o644)
            manifest.append({"Config": config_name, "RepoTags": [image.reference], "Layers": [f"{layer_id}/layer.tar"]})
        _add(archive, "manifest.json", json.dumps(manifest).encode(), 0o644)
