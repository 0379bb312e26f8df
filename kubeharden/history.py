"""Run history: one JSON record per audit or drift run, in a state directory only its owner can read.

Layout: `<state>/history/<run id>.json` (newest `KEEP_RECORDS` kept) and `<state>/artifacts/<run id>/`
(ansible-runner's artifacts of the run). The state directory is `--state-dir`, else `$KUBEHARDEN_STATE_DIR`,
else `/var/lib/kubeharden` for root and `~/.local/state/kubeharden` for anyone else.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

KEEP_RECORDS = 200
RECORD_VERSION = 1


class HistoryError(RuntimeError):
    pass


def state_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).absolute()
    if os.environ.get("KUBEHARDEN_STATE_DIR"):
        return Path(os.environ["KUBEHARDEN_STATE_DIR"]).absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/kubeharden")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "kubeharden"


def check_writable(state: Path) -> None:
    """Before a run: the state directory exists (or can be made) and this user can write it, so a run is never
    lost after it has read every node."""
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise HistoryError(f"state directory {state} cannot be created: {error.strerror}") from None
    if not state.is_dir() or not os.access(state, os.W_OK | os.X_OK):
        raise HistoryError(f"state directory {state} is not a directory this user can write (--state-dir)")


def new_run_id(kind: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{kind}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_record(state: Path, record: dict) -> Path:
    """Atomically, 0600; then drops the oldest records beyond KEEP_RECORDS."""
    directory = state / "history"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state, 0o700)
    path = directory / f"{record['id']}.json"
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".record-")
    with os.fdopen(handle, "w") as out:
        json.dump({"version": RECORD_VERSION, **record}, out, indent=1, sort_keys=True)
    os.replace(temporary, path)
    for old in sorted(directory.glob("*.json"))[:-KEEP_RECORDS]:
        old.unlink(missing_ok=True)  # another run may prune at the same time
    return path


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise HistoryError(f"unreadable history record {path} (move it away to go on): {error}") from None
    shaped = (isinstance(record, dict) and record.get("version") == RECORD_VERSION
              and isinstance(record.get("nodes"), dict) and all(isinstance(e, dict) for e in record["nodes"].values())
              and all(isinstance(record.get(key), str) for key in ("id", "kind", "time")))
    if not shaped:
        raise HistoryError(f"{path} is not a kubeharden record of version {RECORD_VERSION} (move it away to go on)")
    return record


def newest_first(state: Path):
    """Records, newest first, read one at a time (run IDs start with their UTC time, so names sort by age)."""
    for path in sorted((state / "history").glob("*.json"), reverse=True):
        yield _read(path)


def load_records(state: Path, last: int | None = None) -> list[dict]:
    """The newest `last` records (all when None), oldest first. An unreadable record is reported by name."""
    records = []
    for record in newest_first(state):
        if last is not None and len(records) >= last:
            break
        records.append(record)
    return sorted(records, key=lambda r: (r["time"], r["id"]))


def baselines(state: Path, nodes: list[str], kinds: tuple[str, ...], inventory: str) -> dict[str, dict]:
    """Each node's entry in the newest record of one of `kinds` on the same inventory that holds it (node names
    repeat across clusters); reads only as far back as needed."""
    found: dict[str, dict] = {}
    wanted = set(nodes)
    same = str(Path(inventory).absolute())
    for record in newest_first(state):
        if record["kind"] in kinds and str(Path(record.get("inventory") or "").absolute()) == same:
            missing = wanted - found.keys()
            found.update({node: entry for node, entry in record["nodes"].items() if node in missing})
        if len(found) == len(nodes):
            break
    return found
