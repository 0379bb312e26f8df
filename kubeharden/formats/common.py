"""What every format shares: the statuses a control can end in, why a result is what it is, label escaping."""

from __future__ import annotations

# Every status a control can end in, as the table marks it. UNDECIDED decide nothing (the score leaves them out,
# JUnit counts them as skipped). A waived control is a failure the operator accepted (kubeharden.waivers): the
# score counts it as failing, the score with waivers leaves it out, and it does not fail the run.
STATUS_MARKS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "manual": "MANUAL", "not_applicable": "N/A",
                "exception": "EXCEPTION", "waived": "WAIVED"}
UNDECIDED = ("manual", "not_applicable", "exception")
# Shown to a person without --verbose: what needs attention, and what was accepted instead of fixed.
NOTEWORTHY = ("fail", "error", "waived")


def detail(result: dict) -> str:
    """Why a result is what it is: its reason, else what was expected and what the node showed."""
    return result.get("reason") or f"expected {result.get('expected')}; {result.get('evidence')}"


def label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def waiver_text(waiver: dict) -> str:
    """Who accepted a deviation, why and until when."""
    return (f"kubeharden_waivers[{waiver['index']}] by {waiver['owner']} until {waiver['expires']}"
            f"{' (expiring)' if waiver.get('state') == 'expiring' else ''}: {waiver['reason']}")


def waiver_states(waivers: list[dict]) -> list[tuple[str, dict]]:
    """The waivers a person must look at: expired (the control fails again), expiring, unused; in that order."""
    order = {"expired": 0, "expiring": 1, "unused": 2}
    found = [("expired" if w["state"] == "expired" else "expiring" if w["state"] == "expiring" else "unused", w)
             for w in waivers if w["state"] in ("expired", "expiring") or w.get("unused")]
    return sorted(found, key=lambda item: (order[item[0]], item[1]["index"]))
