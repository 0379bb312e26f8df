"""kubeharden_static_pod_status run by Ansible on the controller: a component that does not run its manifest is
explained by the last error in the kubelet's log of its newest container."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import yaml

from tests.conftest import run_module

# A command no process on this machine runs (lab containers' processes are visible in the host's /proc).
MANIFEST = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kube-apiserver", "namespace": "kube-system"},
            "spec": {"containers": [{"name": "kube-apiserver",
                                     "command": ["/usr/local/bin/kubeharden-absent", "--no-such-flag=true"]}]}}


def write_log(directory, uid: str, lines: list[str], mtime: float) -> None:
    path = directory / f"kube-system_kube-apiserver-cp1_{uid}" / "kube-apiserver" / "0.log"
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"2026-12-01T20:00:00.{i:09d}Z stderr F {line}\n" for i, line in enumerate(lines)))
    os.utime(path, (mtime, mtime))


def test_the_newest_containers_last_error_is_returned_without_the_log_prefix(tmp_path):
    manifest = tmp_path / "kube-apiserver.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    logs = tmp_path / "pods"
    write_log(logs, "old", ["E1201 19:00:00.000000 1 run.go:72] an older failure"], mtime=1_000_000)
    write_log(logs, "new", ["I1201 20:00:00.000000 1 options.go:1] starting",
                            "Error: unknown flag: --no-such-flag", "Usage of a component"], mtime=2_000_000)
    result = run_module("kubeharden_static_pod_status", {"path": str(manifest), "pod_log_dir": str(logs),
                                                        "started_after_manifest": True})
    assert not result["failed"] and result["current"] is False
    assert result["last_log"] == ["I1201 20:00:00.000000 1 options.go:1] starting",
                                  "Error: unknown flag: --no-such-flag", "Usage of a component"]
    assert result["last_error"] == "Error: unknown flag: --no-such-flag"


def test_no_log_yet_gives_nothing_to_explain(tmp_path):
    manifest = tmp_path / "kube-apiserver.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    result = run_module("kubeharden_static_pod_status", {"path": str(manifest), "pod_log_dir": str(tmp_path / "no")})
    assert not result["failed"] and result["current"] is False
    assert result["differences"] == {"(no process)": "not running"}
    assert result["last_log"] == [] and result["last_error"] == ""


def test_wait_polls_until_the_process_runs_the_manifest(tmp_path):
    """The gate's wait ends when the process appears, well before its bound (a real process, started later)."""
    executable = tmp_path / f"khwait{os.getpid() % 100000}"  # the process's comm, unique on this machine
    shutil.copy("/bin/sleep", executable)
    manifest = tmp_path / "waited.yaml"
    manifest.write_text(yaml.safe_dump({**MANIFEST, "spec": {"containers": [
        {"name": "waited", "command": [str(executable), "30"]}]}}))
    # Started well after the module (Ansible takes a few seconds to start it on a busy machine).
    starter = threading.Timer(12.0, lambda: processes.append(subprocess.Popen([str(executable), "30"])))
    processes: list[subprocess.Popen] = []
    starter.start()
    try:
        result = run_module("kubeharden_static_pod_status", {"path": str(manifest), "wait": 60})
    finally:
        starter.join()
        for process in processes:
            process.kill()
            process.wait()
    assert not result["failed"] and result["current"] is True, result
    assert 0 < result["waited"] < 30, result["waited"]


def test_wait_is_bounded_and_says_what_differs(tmp_path):
    manifest = tmp_path / "kube-apiserver.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    result = run_module("kubeharden_static_pod_status", {"path": str(manifest), "wait": 1,
                                                        "pod_log_dir": str(tmp_path / "no")})
    assert not result["failed"] and result["current"] is False
    assert 1 <= result["waited"] < 10 and result["differences"] == {"(no process)": "not running"}


def test_a_negative_wait_is_refused_naming_the_option(tmp_path):
    manifest = tmp_path / "kube-apiserver.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    result = run_module("kubeharden_static_pod_status", {"path": str(manifest), "wait": -1})
    assert result["failed"] and "wait must be 0 or more" in result["msg"]
