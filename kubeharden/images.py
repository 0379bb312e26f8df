"""`kubeharden images`: every image the cluster runs, with the digest its node resolved, per namespace, pod, node and
container: the input an image scanner (Trivy, Grype) takes, without kubeharden shipping a vulnerability database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kubeharden.audit import AuditError, check_inventory
from kubeharden.runner import Progress, RunError, run_playbook

TASK = "Read every pod of the cluster over the API"


@dataclass(frozen=True)
class RunningImage:
    namespace: str
    pod: str
    node: str
    container: str
    image: str  # as the pod asks for it
    digest: str  # as the node resolved it (the container status's imageID); empty until the container started


def running_images(pods: dict) -> list[RunningImage]:
    """One row per container of every pod not finished, init and ephemeral containers included."""
    rows = []
    for pod in pods.get("items", []):
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        meta, spec = pod["metadata"], pod.get("spec") or {}
        resolved = {s.get("name"): s.get("imageID", "") for key in
                    ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
                    for s in status.get(key) or []}
        for key in ("initContainers", "containers", "ephemeralContainers"):
            for container in spec.get(key) or []:
                rows.append(RunningImage(meta["namespace"], meta["name"], spec.get("nodeName", ""),
                                         container["name"], container.get("image", ""),
                                         resolved.get(container["name"], "")))
    return sorted(rows, key=lambda r: (r.namespace, r.pod, r.container))


def list_images(inventory: str, artifacts_dir: Path | None = None,
                progress: Progress | None = None) -> list[RunningImage]:
    check_inventory(inventory)
    try:
        run = run_playbook("images.yml", inventory, run_id="images", artifacts_dir=artifacts_dir, progress=progress)
    except RunError as error:
        raise AuditError(str(error)) from None
    for event in run.events:
        data = event.get("event_data", {})
        if event["event"] == "runner_on_ok" and data.get("task") == TASK:
            try:
                return running_images(json.loads(data["res"]["stdout"]))
            except (ValueError, KeyError) as error:
                raise AuditError(f"the cluster's pods could not be read: {error}") from None
    errors = run.host_errors()
    raise AuditError("the cluster's pods could not be read from the first control-plane node: "
                     + ("; ".join(f"{host}: {error}" for host, error in errors.items()) or "no control_plane host"))
