"""What a reader observed, and the comparisons that judge it (kube-bench's vocabulary plus a few of ours)."""

from __future__ import annotations

import re


class Observation:
    def __init__(self, value, evidence: str):
        self.value = value
        self.evidence = evidence


def _items(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def _norm(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower() if str(value).strip().lower() in ("true", "false") else str(value).strip()


def _number(value) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def compare(op: str, actual, expected) -> bool:
    """kube-bench's vocabulary (eq, has, nothave, gte, valid_elements, bitmask) plus a few of our own."""
    if op == "set":
        return actual is not None and str(actual) != ""
    if op == "unset":
        return actual is None
    if op == "true":
        return bool(actual)
    if op == "false":
        return not actual
    if actual is None:
        return False
    if op == "eq":
        return _norm(actual) == _norm(expected)
    if op == "neq":
        return _norm(actual) != _norm(expected)
    if op == "in":
        return _norm(actual) in [_norm(e) for e in expected]
    if op == "has":
        return str(expected) in _items(actual)
    if op == "nothave":
        return str(expected) not in _items(actual)
    if op == "subset":  # kube-bench valid_elements
        items = _items(actual)
        return bool(items) and all(item in expected for item in items)
    if op in ("gte", "lte", "gt"):
        number, limit = _number(actual), _number(expected)
        if number is None or limit is None:
            return False
        return {"gte": number >= limit, "lte": number <= limit, "gt": number > limit}[op]
    if op == "regex":
        return re.search(str(expected), str(actual)) is not None
    raise ValueError(f"unknown comparison {op!r}")
