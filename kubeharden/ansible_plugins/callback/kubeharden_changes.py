"""Records every changed or failed task result, with the task's tags and its diff, as JSON lines.

`kubeharden drift` runs the hardening playbooks in check and diff mode with this callback enabled: the tags
tie a pending change to the catalogue controls whose remediation runs under the same tag, which ansible-runner's
own events do not carry. Results of `no_log` tasks reach callbacks already censored, so no secret is written.
"""

from __future__ import annotations

import difflib
import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kubeharden_changes
type: aggregate
short_description: JSON lines of changed and failed task results with tags and diffs
description:
  - Writes one JSON object per changed or failed task result to the file named by C(KUBEHARDEN_CHANGES_FILE).
requirements:
  - enabled in callbacks_enabled
"""


def render_diff(diff) -> str:
    """One unified text from Ansible's diff structure(s): `prepared` text or before/after pairs."""
    parts = []
    for item in diff if isinstance(diff, list) else [diff]:
        if isinstance(item, list):
            parts.append(render_diff(item))
            continue
        if not isinstance(item, dict):
            continue
        if item.get("prepared"):
            parts.append(str(item["prepared"]).rstrip("\n"))
            continue
        before, after = item.get("before", ""), item.get("after", "")
        if isinstance(before, dict) or isinstance(after, dict):
            before, after = json.dumps(before, indent=2, sort_keys=True), json.dumps(after, indent=2, sort_keys=True)
        lines = difflib.unified_diff(str(before).splitlines(), str(after).splitlines(),
                                     str(item.get("before_header", "before")), str(item.get("after_header", "after")),
                                     lineterm="")
        parts.append("\n".join(lines))
    return "\n".join(part for part in parts if part)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kubeharden_changes"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("KUBEHARDEN_CHANGES_FILE")

    def _record(self, result, failed: bool) -> None:
        if not self._path:
            return
        res = result._result
        diffs = [res.get("diff")] + [item.get("diff") for item in res.get("results", []) if isinstance(item, dict)]
        task = result._task
        record = {
            "host": result._host.get_name(),
            "task": task.get_name(),
            "role": task._role.get_name(include_role_fqcn=False) if task._role else None,
            "tags": sorted({str(tag) for tag in task.tags}),
            "failed": failed,
            "msg": str(res.get("msg", ""))[:2000] if failed else "",
            "diff": render_diff(diffs),
        }
        with open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            self._record(result, failed=False)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, failed=True)
