"""A rollback timer: a transient systemd timer that undoes a risky change (sshd's drop-in, the firewall's table)
unless a fresh connection confirms the change in time. One implementation for every module that arms one."""

from __future__ import annotations

from ansible.module_utils.kubeharden_node import run


class RollbackTimer:
    def __init__(self, unit: str):
        self.unit = unit

    def armed(self) -> bool:
        return run(["systemctl", "is-active", f"{self.unit}.timer"]).stdout.strip() == "active"

    def arm(self, seconds: int, command: list[str]) -> str | None:
        """Run `command` in `seconds` unless disarmed; returns why the timer could not be armed, else None."""
        armed = run(["systemd-run", f"--unit={self.unit}", f"--on-active={seconds}", "--timer-property=AccuracySec=1s",
                     *command])
        return armed.stderr.strip() or "systemd-run failed" if armed.returncode != 0 else None

    def disarm(self) -> None:
        run(["systemctl", "stop", f"{self.unit}.timer", f"{self.unit}.service"])
        run(["systemctl", "reset-failed", f"{self.unit}.service"])
