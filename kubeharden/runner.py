"""One way to run kubeharden's playbooks: through ansible-runner, keeping each run's artifacts.

The audit and drift commands share it: the same environment (kubeharden's modules and roles over the user's own
Ansible configuration), the artifacts of every run under the state directory (`artifacts/<run id>`, the newest
kept), an optional live status line per host, and the changes recorded by the `kubeharden_changes` callback.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kubeharden import collection

BUNDLED = Path(__file__).resolve().parent / "_ansible"  # the collection an installed wheel carries (setup.py)
CALLBACK_DIR = Path(__file__).resolve().parent / "ansible_plugins" / "callback"
KEEP_ARTIFACTS = 20


def quiet_env() -> dict[str, str]:
    """For Ansible commands whose output kubeharden reads or quotes: no colour codes, and no deprecation notice of
    a third-party library (ansible-core's SSH agent support imports cryptography's DSA) in front of every error.
    Matched by its message: a -W filter naming the warning's class is refused at start-up, before site-packages
    can be imported, and adds a line of its own."""
    ignored = "ignore:DSA is deprecated"
    own = os.environ.get("PYTHONWARNINGS", "")
    return {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            "PYTHONWARNINGS": f"{own},{ignored}" if own else ignored}


def user_config_env() -> dict[str, str]:
    """The ansible.cfg of the directory the user runs kubeharden from, which Ansible would read there: ansible-runner
    runs ansible-playbook from a directory of its own. ANSIBLE_CONFIG, ~/.ansible.cfg and /etc/ansible/ansible.cfg
    are found by Ansible itself; a world-writable directory's file is ignored, as Ansible ignores it."""
    if "ANSIBLE_CONFIG" in os.environ:
        return {}
    found = ansible_config_file()
    return {"ANSIBLE_CONFIG": str(found)} if found == Path.cwd() / "ansible.cfg" else {}


def ansible_config_file() -> Path | None:
    """The ansible.cfg Ansible itself would read: $ANSIBLE_CONFIG, ./ansible.cfg (not in a world-writable
    directory), ~/.ansible.cfg, /etc/ansible/ansible.cfg."""
    candidates = [Path(os.environ["ANSIBLE_CONFIG"]).expanduser()] if os.environ.get("ANSIBLE_CONFIG") else []
    here = Path.cwd()
    if not here.stat().st_mode & 0o002:
        candidates.append(here / "ansible.cfg")
    candidates += [Path.home() / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")]
    return next((path for path in candidates if path.is_file()), None)


def default_inventory() -> str | None:
    """The inventory Ansible uses without -i: $ANSIBLE_INVENTORY, else the `inventory` setting of its ansible.cfg
    (relative to that file, as Ansible reads it). None when neither names one: kubeharden asks for -i then, rather
    than Ansible's fallback /etc/ansible/hosts, which is rarely a cluster's."""
    if os.environ.get("ANSIBLE_INVENTORY"):
        return os.environ["ANSIBLE_INVENTORY"].split(",")[0]
    path = ansible_config_file()
    if path is None:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except configparser.Error:
        return None  # Ansible reports its own configuration's errors when it runs
    value = parser.get("defaults", "inventory", fallback="").split(",")[0].strip()
    return str(path.parent / Path(value).expanduser()) if value else None


@dataclass
class AnsibleOptions:
    """ansible-playbook's options a user passes through kubeharden's commands (-e, --vault-password-file,
    --private-key, -u, --ask-become-pass), for every playbook a command runs and for reading its inventory."""
    extra_vars: list[str] = field(default_factory=list)
    vault_password_files: list[str] = field(default_factory=list)
    private_key: str | None = None
    user: str | None = None
    become_password: str | None = None  # asked once by the CLI, given to Ansible when it prompts for it

    def inventory_args(self) -> list[str]:
        """What ansible-inventory needs too: vaulted group_vars are read with the vault's password."""
        return [arg for path in self.vault_password_files for arg in ("--vault-password-file", path)]

    def playbook_args(self) -> list[str]:
        return (self.inventory_args() + [arg for value in self.extra_vars for arg in ("-e", value)]
                + (["--private-key", self.private_key] if self.private_key else [])
                + (["-u", self.user] if self.user else [])
                + (["--ask-become-pass"] if self.become_password is not None else []))

    def passwords(self) -> dict[str, str]:
        """ansible-runner answers Ansible's prompts by pattern."""
        return {r"^BECOME password.*:\s*?$": self.become_password} if self.become_password is not None else {}


_options = AnsibleOptions()


def use_ansible_options(options: AnsibleOptions) -> None:
    """The options of this command's every Ansible run (the CLI sets them once, from its arguments)."""
    global _options
    _options = options


def ansible_options() -> AnsibleOptions:
    return _options


class RunError(RuntimeError):
    """A playbook could not be run at all (missing playbook, bad inventory)."""


def ansible_content() -> tuple[Path, dict[str, str]]:
    """Where kubeharden's playbooks are, and the environment that lets Ansible find their roles and modules:
    a checkout's directories (KUBEHARDEN_HOME, or the source tree this package runs from), else the collection
    the installed wheel carries. Nothing else: the user's Ansible configuration (ansible.cfg as Ansible finds it,
    with its port, bastion, keys, vault, become and host key settings) stays in force."""
    home = os.environ.get("KUBEHARDEN_HOME")
    root = Path(home) if home else collection.checkout_root()
    if root is not None:
        return root / "playbooks", {
            "ANSIBLE_LIBRARY": str(root / "modules"), "ANSIBLE_MODULE_UTILS": str(root / "module_utils"),
            "ANSIBLE_DOC_FRAGMENT_PLUGINS": str(root / "doc_fragments"), "ANSIBLE_ROLES_PATH": str(root / "roles")}
    if (BUNDLED / collection.COLLECTION_DIR).is_dir():
        return BUNDLED / collection.COLLECTION_DIR / "playbooks", {"ANSIBLE_COLLECTIONS_PATH": str(BUNDLED)}
    raise RunError(f"kubeharden's Ansible content is not installed ({BUNDLED} is missing): reinstall the wheel, or "
                   "set KUBEHARDEN_HOME to a kubeharden checkout")


@dataclass
class PlaybookRun:
    rc: int
    events: list[dict]
    changes: list[dict] = field(default_factory=list)  # kubeharden_changes records
    artifacts: str = ""
    stdout_tail: str = ""

    def host_errors(self) -> dict[str, str]:
        errors = {}
        for event in self.events:
            data = event.get("event_data", {})
            host = data.get("host")
            if event["event"] == "runner_on_unreachable":
                errors[host] = "unreachable: " + str(data.get("res", {}).get("msg", "")).strip()
            elif event["event"] == "runner_on_failed" and not data.get("ignore_errors"):
                # The last failure is the one that stopped the host: an earlier one may have been rescued.
                errors[host] = f"{data.get('task')}: {data.get('res', {}).get('msg', 'failed')}"
        if self.rc != 0 and not errors:
            errors["(play)"] = f"ansible-playbook exited with {self.rc}: {self.stdout_tail}"
        return errors


class Progress:
    """A one-line, per-host status on a terminal: tasks done, changed and failed, and the current task."""

    def __init__(self, label: str, stream=None, enabled: bool | None = None):
        self.label, self.stream = label, stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done: dict[str, Counter] = {}
        self.task, self.started, self.last = "", time.monotonic(), 0.0

    def __call__(self, event: dict) -> bool:
        kind, data = event.get("event", ""), event.get("event_data", {})
        if kind == "playbook_on_task_start":
            self.task = data.get("task", "")
        elif kind.startswith("runner_on_") and data.get("host"):
            counts = self.done.setdefault(data["host"], Counter())
            counts["failed" if kind in ("runner_on_failed", "runner_on_unreachable") else "done"] += 1
            if data.get("res", {}).get("changed"):
                counts["changed"] += 1
        if self.enabled and time.monotonic() - self.last > 0.2:
            self.last = time.monotonic()
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
        return True

    def line(self) -> str:
        hosts = " ".join(f"{host} {c['done']} ok" + (f"/{c['changed']} changed" if c["changed"] else "")
                         + (f"/{c['failed']} failed" if c["failed"] else "") for host, c in sorted(self.done.items()))
        return f"[{self.label} {time.monotonic() - self.started:4.0f}s] {hosts} | {self.task}"[:200]

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_playbook(name: str, inventory: str, *, run_id: str, artifacts_dir: Path | None, extravars: dict | None = None,
                 limit: str | None = None, tags: list[str] | None = None, check: bool = False,
                 progress: Progress | None = None, extra_args: list[str] | None = None) -> PlaybookRun:
    import ansible_runner

    playbooks, content_env = ansible_content()
    playbook = playbooks / name
    if not playbook.exists():
        raise RunError(f"{playbook} not found: run kubeharden from its checkout or set KUBEHARDEN_HOME")
    cmdline = " ".join(shlex.quote(arg) for arg in (["--check", "--diff"] if check else [])
                       + (["--tags", ",".join(tags)] if tags else []) + _options.playbook_args()
                       + (extra_args or [])) or None
    with tempfile.TemporaryDirectory(prefix="kubeharden-run-") as private:
        changes_file = Path(private) / "changes.jsonl"
        envvars = {
            **user_config_env(),
            **content_env,
            **quiet_env(),
            # ansible-playbook of the environment kubeharden runs in, even from a venv that is not activated
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
            "ANSIBLE_CALLBACKS_ENABLED": "kubeharden_changes",
            "KUBEHARDEN_CHANGES_FILE": str(changes_file),
        }
        options = {}
        if artifacts_dir is not None:
            artifacts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            options = {"artifact_dir": str(artifacts_dir), "ident": run_id, "rotate_artifacts": KEEP_ARTIFACTS}
        runner = ansible_runner.run(
            private_data_dir=private, playbook=str(playbook), inventory=str(Path(inventory).absolute()),
            extravars=extravars or {}, limit=limit, cmdline=cmdline, passwords=_options.passwords(),
            quiet=True, envvars=envvars, event_handler=progress, **options)
        if progress:
            progress.close()
        changes = [json.loads(line) for line in changes_file.read_text().splitlines()] if changes_file.exists() else []
        events = list(runner.events)
        tail = runner.stdout.read()[-600:] if runner.rc != 0 else ""
        return PlaybookRun(runner.rc, events, changes, str(Path(runner.config.artifact_dir)) if options else "", tail)
