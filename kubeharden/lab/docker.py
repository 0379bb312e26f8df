"""A thin wrapper over the docker CLI: the lab needs a handful of calls, not an SDK."""

from __future__ import annotations

import json
import shutil
import subprocess

from kubeharden.lab.errors import LabError

ENGINE_HINT = (
    "no Docker engine answers: install it with `apt-get install -y docker.io`, then start it "
    "(`systemctl start docker`, or `setsid dockerd >/var/log/dockerd.log 2>&1 &` where systemd does not run)"
)


def run(*args: str, check: bool = True, input: bytes | str | None = None) -> subprocess.CompletedProcess:
    if shutil.which("docker") is None:
        raise LabError(ENGINE_HINT)
    text = not isinstance(input, bytes)
    result = subprocess.run(["docker", *args], capture_output=True, input=input, text=text)
    if check and result.returncode != 0:
        stderr = result.stderr if text else result.stderr.decode(errors="replace")
        raise LabError(f"docker {' '.join(args[:3])} failed: {stderr.strip()}")
    return result


def require_engine() -> None:
    if shutil.which("docker") is None or run("info", "--format", "{{.ServerVersion}}", check=False).returncode:
        raise LabError(ENGINE_HINT)


def image_exists(tag: str) -> bool:
    return run("image", "inspect", tag, check=False).returncode == 0


def inspect(kind: str, name: str) -> dict | None:
    result = run(kind, "inspect", name, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)[0]


def list_ids(kind: str, label: str) -> list[str]:
    args = ["ps", "-a", "-q"] if kind == "container" else ["network", "ls", "-q"]
    return run(*args, "--filter", f"label={label}").stdout.split()


def exec_(container: str, *cmd: str, input: bytes | str | None = None, check: bool = True,
          user: str | None = None) -> subprocess.CompletedProcess:
    args = ["exec", "-i"] if input is not None else ["exec"]
    if user:
        args += ["--user", user]
    return run(*args, container, *cmd, input=input, check=check)
