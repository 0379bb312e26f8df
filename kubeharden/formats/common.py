"""What every format shares: the statuses a control can end in, why a result is what it is, label escaping."""

from __future__ import annotations

# Every status a control can end in, as the table marks it; the last three decide nothing (the score leaves them
# out, JUnit counts them as skipped).
STATUS_MARKS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "manual": "MANUAL", "not_applicable": "N/A",
                "exception": "EXCEPTION"}
UNDECIDED = ("manual", "not_applicable", "exception")


def detail(result: dict) -> str:
    """Why a result is what it is: its reason, else what was expected and what the node showed."""
    return result.get("reason") or f"expected {result.get('expected')}; {result.get('evidence')}"


def label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
