"""kubeharden_static_pod_restart run by Ansible on the controller, against real processes: only the process that
runs the manifest's exact flags is stopped, and a new one is told from it by started_after."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import run_module

# Once its SIGTERM handler is in place the stand-in writes ready-<port> in its --data-dir: a signal sent after that
# ends it with 143 (the handler ran), never the default death.
SCRIPT = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
          "flags = dict(arg[2:].split('=', 1) for arg in sys.argv[1:]); "
          "open(os.path.join(flags['data-dir'], 'ready-' + flags['secure-port']), 'w').close(); time.sleep(120)")


@pytest.fixture
def component(tmp_path):
    """A stand-in static pod: its executable has a name of its own (a link to this Python; /proc/PID/comm is the
    name it was started by), the manifest names it with one flag, and processes run it with or without it."""
    executable = tmp_path / "kh-unit-comp"
    executable.symlink_to(sys.executable)
    manifest = tmp_path / "component.yaml"
    # --data-dir is this test's own: tests running at the same time never match each other's processes.
    command = [str(executable), "-c", SCRIPT, f"--data-dir={tmp_path}", "--secure-port=1"]
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": "component", "namespace": "kube-system"},
                                        "spec": {"containers": [{"name": "component", "command": command}]}}))
    processes = [subprocess.Popen(command), subprocess.Popen([*command[:4], "--secure-port=2"])]
    for _attempt in range(200):  # bounded: 10 s for both to be ready
        if (tmp_path / "ready-1").exists() and (tmp_path / "ready-2").exists():
            break
        time.sleep(0.05)
    assert (tmp_path / "ready-1").exists() and (tmp_path / "ready-2").exists(), "the stand-ins did not start"
    yield manifest, processes
    for process in processes:
        process.kill()
        process.wait()


def test_only_the_process_running_the_manifest_is_stopped(component):
    manifest, (running_manifest, other_flags) = component
    before = manifest.read_bytes()
    result = run_module("kubeharden_static_pod_restart", {"path": str(manifest)}, diff=True)
    assert not result["failed"] and result["changed"], result
    # (others may hold processes of tests running beside this one: same name, their own --data-dir)
    assert result["pids"] == [running_manifest.pid] and other_flags.pid in result["others"]
    assert running_manifest.wait(timeout=10) == 143  # SIGTERM (its handler ran), never SIGKILL
    assert other_flags.poll() is None
    assert manifest.read_bytes() == before
    assert result["signalled_at"] <= time.time()
    # Nothing runs the manifest any more: the status module's started_after tells a new process from none.
    status = run_module("kubeharden_static_pod_status",
                        {"path": str(manifest), "started_after": result["signalled_at"]})
    assert status["current"] is False and running_manifest.pid not in status["pids"]


def test_check_mode_names_the_process_and_stops_nothing(component):
    manifest, (running_manifest, _other) = component
    result = run_module("kubeharden_static_pod_restart", {"path": str(manifest)}, check=True, diff=True)
    assert not result["failed"] and result["changed"] and result["pids"] == [running_manifest.pid]
    assert f"pid {running_manifest.pid} (started " in result["stdout"]
    with pytest.raises(subprocess.TimeoutExpired):  # still running: nothing was signalled
        running_manifest.wait(timeout=0.5)


def test_a_process_started_after_the_signal_is_the_new_one(component):
    manifest, (running_manifest, _other) = component
    old = run_module("kubeharden_static_pod_status", {"path": str(manifest), "started_after": time.time() + 5})
    assert old["current"] is False  # the running process started before that time
    status = run_module("kubeharden_static_pod_status", {"path": str(manifest), "started_after": time.time() - 60})
    assert status["current"] is True and running_manifest.pid in status["pids"]


def test_nothing_running_the_manifest_is_no_change(tmp_path):
    manifest = tmp_path / "etcd.yaml"
    manifest.write_text(yaml.safe_dump({"spec": {"containers": [{"name": "etcd",
                                                                 "command": ["/usr/local/bin/kh-unit-absent"]}]}}))
    result = run_module("kubeharden_static_pod_restart", {"path": str(manifest)})
    assert not result["failed"] and not result["changed"] and result["pids"] == []


@pytest.mark.parametrize(("text", "message"), [
    (None, "does not exist"),
    ("spec: {containers: []}\n", "is not a readable static Pod manifest"),
    ("spec: [unclosed\n", "is not a readable static Pod manifest"),
])
def test_a_missing_or_malformed_manifest_fails_and_is_left_as_it_is(tmp_path, text, message):
    manifest = tmp_path / "etcd.yaml"
    if text is not None:
        manifest.write_text(text)
    result = run_module("kubeharden_static_pod_restart", {"path": str(manifest)})
    assert result["failed"] and message in result["msg"], result
    assert (manifest.read_text() if text is not None else None) == text

