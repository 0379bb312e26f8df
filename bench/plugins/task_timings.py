"""Per-task wall time, per host, for the benchmarks: which tasks a playbook's time goes to.

Writes a JSON list (task, role, host, seconds, changed) to the file named by KUBEHARDEN_TIMINGS_FILE when the
playbook ends. A task's time on a host runs from the task's start to that host's result, so with the linear
strategy the slowest host of a task is what the playbook waited for.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_timings
type: aggregate
short_description: per-task, per-host wall time as JSON
description:
  - Writes the time each task took on each host to the file named by C(KUBEHARDEN_TIMINGS_FILE).
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_timings"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._records: list[dict] = []
        self._started = 0.0
        self._task = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._started, self._task = time.monotonic(), task

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _record(self, result, status: str) -> None:
        task = result._task
        self._records.append({
            "task": task.get_name(),
            "role": task._role.get_name(include_role_fqcn=False) if task._role else "",
            "host": result._host.get_name(),
            "seconds": round(time.monotonic() - self._started, 3),
            "status": "changed" if result._result.get("changed") else status,
        })

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("KUBEHARDEN_TIMINGS_FILE")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self._records, handle, indent=1)
