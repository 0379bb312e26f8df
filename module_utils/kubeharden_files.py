"""Safe writes for kubeharden's modules: validate, back up outside watched directories, replace atomically.

Backups never go next to the file: a copy left in /etc/kubernetes/manifests would be run by the kubelet as
a second static pod. They go to `backup_dir`, mirroring the original path, named with a timestamp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

DEFAULT_BACKUP_DIR = "/var/backups/kubeharden"


def backup(path: str, backup_dir: str = DEFAULT_BACKUP_DIR) -> str:
    """Copy `path` (mode and owner kept) under `backup_dir`; return the copy's path."""
    target_dir = os.path.join(backup_dir, os.path.dirname(path).lstrip("/"))
    os.makedirs(target_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = os.path.join(target_dir, f"{os.path.basename(path)}.{stamp}.{os.getpid()}")
    shutil.copy2(path, target)
    info = os.stat(path)
    os.chown(target, info.st_uid, info.st_gid)
    return target


def atomic_write(path: str, content: str, mode: int | None = None) -> None:
    """Write to a temporary file in the same directory, then rename over `path`: readers never see half a file.

    Mode and owner of an existing file are kept unless `mode` is given.
    """
    directory = os.path.dirname(path) or "."
    previous = os.stat(path) if os.path.exists(path) else None
    descriptor, temporary = tempfile.mkstemp(prefix=".kubeharden-", dir=directory)  # hidden: the kubelet skips it
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None:
            os.chown(temporary, previous.st_uid, previous.st_gid)
        os.chmod(temporary, mode if mode is not None else (previous.st_mode & 0o7777 if previous else 0o600))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def replace_file(path: str, content: str, params: dict, mode: int | None = None, new_mode: int = 0o600) -> str | None:
    """The one write tail of kubeharden's modules: an existing `path` is first copied under params["backup_dir"]
    (unless params["backup"] is false), then `content` replaces it atomically. `mode` forces a mode; otherwise
    the file keeps its own, and a new one gets `new_mode`. Returns the backup's path, None when none was made."""
    existing = os.path.exists(path)
    backup_file = backup(path, params.get("backup_dir") or DEFAULT_BACKUP_DIR) \
        if existing and params.get("backup", True) else None
    atomic_write(path, content, mode=mode if mode is not None else (None if existing else new_mode))
    return backup_file


def read_or_empty(path: str) -> str:
    """A file's text, or "" when it does not exist (a file the module is about to create)."""
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


# The argument specs of the options doc_fragments/kubeharden_backup.py documents.
BACKUP_DIR_OPTION = {"backup_dir": {"type": "path", "default": DEFAULT_BACKUP_DIR}}
BACKUP_OPTIONS = {"backup": {"type": "bool", "default": True}, **BACKUP_DIR_OPTION}
