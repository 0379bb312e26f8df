"""The rollback timer sshd and the firewall share: the commands it runs, and what it says when systemd refuses."""

from __future__ import annotations

import subprocess

from ansible.module_utils import kubeharden_rollback as rollback


def test_the_timer_is_armed_checked_and_disarmed_with_one_unit_name(monkeypatch):
    calls = []

    def run(argv, stdin=None, timeout=30):
        calls.append(argv)
        active = argv[:2] == ["systemctl", "is-active"]
        return subprocess.CompletedProcess(argv, 0, "active\n" if active else "", "")

    monkeypatch.setattr(rollback, "run", run)
    timer = rollback.RollbackTimer("kubeharden-test-rollback")
    assert timer.arm(90, ["/usr/sbin/nft", "-f", "/var/lib/kubeharden/firewall/rollback.nft"]) is None
    assert timer.armed()
    timer.disarm()
    assert calls == [
        ["systemd-run", "--unit=kubeharden-test-rollback", "--on-active=90", "--timer-property=AccuracySec=1s",
         "/usr/sbin/nft", "-f", "/var/lib/kubeharden/firewall/rollback.nft"],
        ["systemctl", "is-active", "kubeharden-test-rollback.timer"],
        ["systemctl", "stop", "kubeharden-test-rollback.timer", "kubeharden-test-rollback.service"],
        ["systemctl", "reset-failed", "kubeharden-test-rollback.service"]]


def test_a_refused_timer_says_why(monkeypatch):
    monkeypatch.setattr(rollback, "run", lambda argv, stdin=None, timeout=30: subprocess.CompletedProcess(
        argv, 1, "", "Failed to start transient timer unit: Unit kubeharden-test-rollback.timer already exists.\n"))
    timer = rollback.RollbackTimer("kubeharden-test-rollback")
    assert timer.arm(90, ["/bin/true"]) == ("Failed to start transient timer unit: Unit kubeharden-test-rollback.timer "
                                            "already exists.")
    assert not timer.armed()
