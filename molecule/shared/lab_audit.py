"""Run `kubeharden audit` on a molecule scenario's nodes from the controller, for verify tests."""

import json
import os
import subprocess


def audit_statuses(controls: str = "", *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    """(exit code, node -> control ID -> status) for the scenario's inventory; every control when none given."""
    selection = ["--controls", controls] if controls else []
    result = subprocess.run(["kubeharden", "audit", "-i", os.environ["MOLECULE_INVENTORY_FILE"], *selection,
                             "--format", "json", *extra], capture_output=True, text=True, check=False)
    report = json.loads(result.stdout)
    return result.returncode, {node: {r["id"]: r["status"] for r in data["results"]}
                               for node, data in report["nodes"].items()}


def node_addresses() -> dict[str, str]:
    """Each node of the scenario's inventory by name: its address on the lab network."""
    import yaml

    with open(os.environ["MOLECULE_INVENTORY_FILE"]) as handle:
        inventory = yaml.safe_load(handle)
    found = {}
    pending = list(inventory.values())
    while pending:
        group = pending.pop()
        if not isinstance(group, dict):
            continue
        for name, variables in (group.get("hosts") or {}).items():
            if isinstance(variables, dict) and "ansible_host" in variables:
                found[name] = variables["ansible_host"]
        pending.extend((group.get("children") or {}).values())
    return found


PROBE = """import errno, socket, sys
s = socket.socket()
s.settimeout(2)
r = s.connect_ex((sys.argv[1], int(sys.argv[2])))
print("open" if r == 0 else "refused" if r == errno.ECONNREFUSED else
      "dropped" if r in (errno.EAGAIN, errno.ETIMEDOUT) else errno.errorcode.get(r, r))
"""


def connect(host, address: str, port: int) -> str:
    """From the testinfra host: open (handshake done), refused (RST) or dropped (no answer within 2 s)."""
    return host.run(f"python3 - {address} {port} <<'EOF'\n{PROBE}EOF").stdout.strip()


def tls_handshake(host, port: int, cafile: str, client: str = "") -> str:
    """openssl's report of a TLS handshake with the local server on `port` (with `client`, "-cert FILE -key FILE"):
    the independent judge of whether a server demands a client certificate."""
    with host.sudo():
        return host.run(f"{handshake_command(port, cafile, client)} 2>&1").stdout


def handshake_command(port: int, cafile: str, client: str = "") -> str:
    """The openssl s_client command of tls_handshake. In TLS 1.3 a server refuses a client without a certificate
    after the handshake, with an alert: without a certificate openssl waits (bounded) until the server closes, so
    that the alert is read rather than lost when openssl's input ends first."""
    if client:
        return f"echo | openssl s_client -connect 127.0.0.1:{port} -CAfile {cafile} {client}"
    return f"timeout 20 openssl s_client -ign_eof -connect 127.0.0.1:{port} -CAfile {cafile} </dev/null"
