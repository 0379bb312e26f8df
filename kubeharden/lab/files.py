"""Files the lab puts on a node in one step: collected as a layout, copied in as one tar archive."""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass, field


@dataclass
class NodeFile:
    path: str
    content: bytes | None  # None: a directory
    mode: int
    owner: str = "root"
    group: str = "root"


@dataclass
class NodeLayout:
    files: list[NodeFile] = field(default_factory=list)

    def directory(self, path: str, mode: int, owner: str = "root", group: str = "root") -> None:
        self.files.append(NodeFile(path, None, mode, owner, group))

    def file(self, path: str, content: bytes | str, mode: int, owner: str = "root", group: str = "root") -> None:
        data = content.encode() if isinstance(content, str) else content
        self.files.append(NodeFile(path, data, mode, owner, group))

    def tar(self) -> bytes:
        """The layout as a tar archive to extract at the node's / (`tar -x -p -C /`), modes and owners kept."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
            mtime = time.time()
            for item in self.files:
                info = tarfile.TarInfo(item.path.lstrip("/"))
                info.mode, info.uname, info.gname, info.mtime = item.mode, item.owner, item.group, mtime
                if item.content is None:
                    info.type = tarfile.DIRTYPE
                    archive.addfile(info)
                else:
                    info.size = len(item.content)
                    archive.addfile(info, io.BytesIO(item.content))
        return buffer.getvalue()
