"""kubectl for kubeharden's modules that act on the cluster from a control-plane node.

Right after a control-plane restart the API server refuses connections, or forbids requests while its RBAC
caches refill: a call is retried for a bounded time before the task fails with kubectl's own message.
"""

from __future__ import annotations

import json
import time

from ansible.module_utils.kubeharden_node import run

# The argument specs of the options doc_fragments/kubeharden_kubectl.py documents.
KUBECTL_OPTIONS = {"kubeconfig": {"type": "path", "default": "/etc/kubernetes/admin.conf"},
                   "kubectl": {"type": "str", "default": "kubectl"}}
SETTLE_SECONDS = 90
POLL_SECONDS = 2
# What kubectl says while an apiserver restarts or refills its caches: worth asking again, unlike a refusal
# (admission, validation), which is the answer.
TRANSIENT = ("connection refused", "currently unable to handle", "unable to handle the request", "i/o timeout",
             "TLS handshake timeout", "Unauthorized", "cannot get resource", "cannot list resource",
             "cannot patch resource", "etcdserver", "context deadline exceeded", "EOF")


def transient(stderr: str) -> bool:
    return any(words in stderr for words in TRANSIENT)


class Kubectl:
    def __init__(self, module, command: str, kubeconfig: str, namespace: str | None = None):
        self.module = module
        self.base = [command, "--kubeconfig", kubeconfig, "--request-timeout=10s"]
        if namespace:
            self.base += ["-n", namespace]

    def call(self, args: tuple[str, ...], data: str | None) -> tuple[int, str, str]:
        """One kubectl call (no retry); a kubectl that cannot start fails the task with the reason."""
        try:
            done = run([*self.base, *args], stdin=data, timeout=SETTLE_SECONDS)
        except OSError as exc:
            self.module.fail_json(msg=f"kubectl could not run ({self.base[0]}): {exc}")
            raise  # fail_json exits
        return done.returncode, done.stdout, done.stderr

    def run(self, *args: str, data: str | None = None, missing_ok: bool = False) -> str | None:
        """kubectl's output; None for an object that does not exist when `missing_ok`."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            rc, out, err = self.call(args, data)
            if rc == 0:
                return out
            if missing_ok and "NotFound" in err:
                return None
            if time.monotonic() >= deadline:
                self.module.fail_json(msg=f"kubectl {' '.join(args)} failed for {SETTLE_SECONDS} s: "
                                          f"{(err or out).strip()}")
            time.sleep(POLL_SECONDS)

    def answer(self, *args: str, data: str | None = None) -> tuple[int, str, str]:
        """kubectl's exit code, output and messages (warnings included), asked again for a bounded time while the
        apiserver is restarting; a refusal is returned at once."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            rc, out, err = self.call(args, data)
            if rc == 0 or not transient(err) or time.monotonic() >= deadline:
                return rc, out, err
            time.sleep(POLL_SECONDS)

    def get(self, *args: str, missing_ok: bool = False) -> dict | None:
        out = self.run("get", *args, "-o", "json", missing_ok=missing_ok)
        if out is None:
            return None
        try:
            return json.loads(out)
        except ValueError as exc:
            self.module.fail_json(msg=f"kubectl get {' '.join(args)} did not answer JSON: {exc}")
            raise  # fail_json exits
