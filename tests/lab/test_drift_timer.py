"""playbooks/drift-timer.yml on a lab node acting as the management host.

Lab nodes cannot install kubeharden (no package index reaches them), so the unit runs a small script in its
place that records the arguments it was given: what is proven is the service and timer as systemd runs them,
the exact `kubeharden drift` command line, exit 1 (drift found) counted as success, and bad input refused."""

from __future__ import annotations

import re

import pytest

from kubeharden.lab import docker
from kubeharden.lab.lab import Topology
from tests.lab.conftest import _lab, playbook

pytestmark = pytest.mark.lab

RECORDER = "/usr/local/bin/kubeharden-recorder"
UNIT = "/etc/systemd/system/kubeharden-drift.service"


@pytest.fixture(scope="module")
def timer_lab(tmp_path_factory):
    lab_gen = _lab(tmp_path_factory, "pytest-timer", Topology(control_planes=1, workers=0))
    lab = next(lab_gen)
    docker.exec_(lab.container("cp1"), "sh", "-c",
                 f"mkdir -p /etc/kubeharden && echo 'all: {{}}' > /etc/kubeharden/hosts.yml && "
                 f"printf '#!/bin/sh\\necho \"$KUBEHARDEN_STATE_DIR $*\" > /run/kubeharden-recorded\\nexit 1\\n' "
                 f"> {RECORDER} && chmod 755 {RECORDER}")
    yield lab
    next(lab_gen, None)


def install(lab, *extra: str):
    return playbook(lab, "drift-timer.yml", "-e", "drift_timer_hosts=cp1", "-e",
                    "drift_timer_inventory=/etc/kubeharden/hosts.yml", "-e", f"drift_timer_command={RECORDER}", *extra)


def on(lab, command: str) -> str:
    return docker.exec_(lab.container("cp1"), "sh", "-c", command, check=False).stdout


def changed(output: str) -> int:
    return int(re.search(r"cp1\s*:.*changed=(\d+)", output).group(1))


def test_timer_runs_the_drift_command_and_reruns_change_nothing(timer_lab):
    lab = timer_lab
    check = install(lab, "-e", "drift_timer_remediate=true", "--check", "--diff")
    assert check.returncode == 0, check.stdout[-3000:]
    assert on(lab, f"test -e {UNIT} && echo present").strip() == ""  # check mode wrote nothing
    first = install(lab, "-e", "drift_timer_remediate=true")
    assert first.returncode == 0, first.stdout[-3000:]
    assert on(lab, "systemctl is-enabled kubeharden-drift.timer; systemctl is-active kubeharden-drift.timer").split() \
        == ["enabled", "active"]
    assert "03:00:00" in on(lab, "systemctl show kubeharden-drift.timer -p TimersCalendar")

    started = docker.exec_(lab.container("cp1"), "systemctl", "start", "kubeharden-drift.service", check=False)
    assert started.returncode == 0, started.stderr  # the recorder exits 1, as drift does when it finds drift
    assert on(lab, "cat /run/kubeharden-recorded").strip() == (
        "/var/lib/kubeharden drift -i /etc/kubeharden/hosts.yml --remediate --state-dir /var/lib/kubeharden "
        "--textfile-dir /var/lib/prometheus/node-exporter --format json --output /var/lib/kubeharden/last-drift.json "
        "--no-progress")
    assert on(lab, "systemctl show kubeharden-drift.service -p Result").strip() == "Result=success"

    again = install(lab, "-e", "drift_timer_remediate=true")
    assert again.returncode == 0 and changed(again.stdout) == 0, again.stdout[-3000:]
    check_again = install(lab, "-e", "drift_timer_remediate=true", "--check")
    assert check_again.returncode == 0 and changed(check_again.stdout) == 0, check_again.stdout[-3000:]


@pytest.mark.parametrize(("extra", "message"), [
    (("-e", '{"drift_timer_schedule": "every tuesday-ish"}'),
     "drift_timer_schedule 'every tuesday-ish' is not a systemd calendar expression"),
    (("-e", "drift_timer_command=/usr/local/bin/nothing-here"), "drift_timer_command /usr/local/bin/nothing-here"),
    (("-e", "drift_timer_inventory=/etc/kubeharden/none.yml"), "drift_timer_inventory /etc/kubeharden/none.yml"),
    (("-e", "drift_timer_remediate=maybe"), "drift_timer_remediate"),
])
def test_bad_input_is_refused_before_any_unit_changes(timer_lab, extra, message):
    before = on(timer_lab, f"md5sum {UNIT} 2>/dev/null")
    result = install(timer_lab, *extra)
    assert result.returncode != 0 and message in result.stdout, result.stdout[-3000:]
    assert on(timer_lab, f"md5sum {UNIT} 2>/dev/null") == before
