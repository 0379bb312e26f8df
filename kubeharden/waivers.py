"""Waivers: the operator's accepted deviations, `kubeharden_waivers` in the inventory, each with a reason, an owner
and an expiry date.

A failing result that an active waiver covers becomes `waived`: its evidence is still read and shown, the score is
reported with and without waivers, and the run does not fail on it. A waiver past its expiry covers nothing (the
control fails again) and is named as expired; one within `kubeharden_waiver_warn_days` of it is named as expiring;
one that covers no failing result anywhere is named as unused, so the list shrinks as the cluster improves.

An entry:

    - control: "4.2.6"               # a catalogue ID
      reason: the node agent needs ...
      owner: platform-team
      expires: 2027-03-31            # a date, YYYY-MM-DD
      hosts: "workers:!w3"           # optional: an Ansible host pattern, as --limit takes it (default: all)
      resources: ["monitoring/*"]    # optional, cluster controls: the offenders it covers, shell-style patterns
                                     # matched against the offender as the audit names it
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import date

import yaml

VARIABLE = "kubeharden_waivers"
WARN_DAYS_VARIABLE = "kubeharden_waiver_warn_days"
DEFAULT_WARN_DAYS = 30
PLACEHOLDER_REASON = "TODO"  # what `kubeharden waive --baseline` writes: a person must replace it
KEYS = {"control", "reason", "owner", "expires", "hosts", "resources"}


class WaiverError(ValueError):
    """The waiver list is not valid: every problem, one per line."""


@dataclass(frozen=True)
class Waiver:
    index: int  # position in kubeharden_waivers, as messages name it
    control: str
    reason: str
    owner: str
    expires: date
    hosts: str = "all"
    resources: tuple[str, ...] = ()

    def days_left(self, today: date) -> int:
        return (self.expires - today).days

    def state(self, today: date, warn_days: int) -> str:
        """active, expiring (within warn_days of its expiry) or expired (after its expiry date)."""
        left = self.days_left(today)
        return "expired" if left < 0 else "expiring" if left <= warn_days else "active"

    def summary(self) -> dict:
        return {"index": self.index, "control": self.control, "reason": self.reason, "owner": self.owner,
                "expires": self.expires.isoformat(), "hosts": self.hosts, "resources": list(self.resources)}


# -- host patterns, as Ansible reads --limit -----------------------------------------------------------------

def _pattern_items(pattern: str) -> list[str]:
    # Ansible splits on commas, and on colons when no comma is used (IPv6 addresses aside, not node names here).
    return [item.strip() for item in (pattern.split(",") if "," in pattern else pattern.split(":"))]


def pattern_problem(pattern) -> str:
    """Why `pattern` is not a host pattern, or ""."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "must be a non-empty host pattern"
    for item in _pattern_items(pattern):
        name = item.lstrip("!&")
        if not name or len(item) - len(name) > 1:
            return f"has an empty or malformed part {item!r}"
        if name.startswith("~"):
            try:
                re.compile(name[1:])
            except re.error as error:
                return f"part {item!r} is not a regular expression: {error}"
    return ""


def _matching(item: str, host_groups: dict[str, set[str]]) -> set[str]:
    """Hosts one pattern part names: a host, a group (its hosts), a shell-style wildcard or ~regex of either."""
    if item in ("all", "*"):
        return set(host_groups)
    if item.startswith("~"):
        regex = re.compile(item[1:])
        return {h for h, groups in host_groups.items() if regex.search(h) or any(regex.search(g) for g in groups)}
    return {h for h, groups in host_groups.items()
            if fnmatch.fnmatchcase(h, item) or any(fnmatch.fnmatchcase(g, item) for g in groups)}


def hosts_of(pattern: str, host_groups: dict[str, set[str]]) -> set[str]:
    """The hosts a pattern selects: parts are a union, `&part` intersects, `!part` excludes (Ansible's order)."""
    items = _pattern_items(pattern)
    chosen: set[str] = set()
    for item in (i for i in items if not i.startswith(("!", "&"))):
        chosen |= _matching(item, host_groups)
    for item in (i[1:] for i in items if i.startswith("&")):
        chosen &= _matching(item, host_groups)
    for item in (i[1:] for i in items if i.startswith("!")):
        chosen -= _matching(item, host_groups)
    return chosen


def host_groups(listed: dict) -> dict[str, set[str]]:
    """Each host of `ansible-inventory --list` output with every group it is in (children resolved)."""
    def members(group: str, seen: frozenset = frozenset()) -> set[str]:
        entry = listed.get(group) or {}
        found = set(entry.get("hosts") or [])
        for child in entry.get("children") or []:
            if child not in seen:
                found |= members(child, seen | {group})
        return found

    hosts: dict[str, set[str]] = {host: set() for host in (listed.get("_meta") or {}).get("hostvars") or {}}
    for group in (g for g in listed if g != "_meta"):
        for host in members(group):
            hosts.setdefault(host, set()).add(group)
    return hosts


# -- reading and validating ----------------------------------------------------------------------------------

def _date(value) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def parse(entries, known_controls: set[str]) -> list[Waiver]:
    """The waivers of one kubeharden_waivers list; WaiverError names every problem (variable, index, key)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise WaiverError(f"{VARIABLE} must be a list of waivers, not {type(entries).__name__}")
    problems, waivers = [], []
    for index, entry in enumerate(entries):
        where = f"{VARIABLE}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a mapping with control, reason, owner and expires")
            continue
        where += f" ({entry.get('control')})" if entry.get("control") else ""
        found = []
        if unknown := sorted(set(entry) - KEYS):
            found.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
        control = str(entry.get("control") or "")
        if not control:
            found.append("control is missing")
        elif control not in known_controls:
            found.append(f"control {control} is not in the catalogue")
        for key in ("reason", "owner"):
            text = entry.get(key)
            if not isinstance(text, str) or not text.strip():
                found.append(f"{key} is missing")
            elif key == "reason" and text.strip().upper() == PLACEHOLDER_REASON:
                found.append(f"reason is still {PLACEHOLDER_REASON}: a person writes why this deviation is accepted")
        expires = _date(entry.get("expires"))
        if expires is None:
            found.append(f"expires must be a date (YYYY-MM-DD), not {entry.get('expires')!r}")
        hosts = entry.get("hosts", "all")
        if problem := pattern_problem(hosts):
            found.append(f"hosts {hosts!r} {problem}")
        resources = entry.get("resources", [])
        if not isinstance(resources, list) or not all(isinstance(r, str) and r for r in resources):
            found.append("resources must be a list of patterns")
        if found:
            problems += [f"{where}: {problem}" for problem in found]
            continue
        waivers.append(Waiver(index, control, entry["reason"].strip(), entry["owner"].strip(), expires,
                              str(hosts), tuple(resources)))
    if problems:
        raise WaiverError("\n".join(problems))
    return waivers


@dataclass
class Waivers:
    """The inventory's waivers and which hosts each applies to (its hosts pattern, among the hosts that carry it)."""
    waivers: list[Waiver] = field(default_factory=list)
    applies_to: dict[Waiver, set[str]] = field(default_factory=dict)
    warn_days: int = DEFAULT_WARN_DAYS

    def __bool__(self) -> bool:
        return bool(self.waivers)


def from_inventory(listed: dict, known_controls: set[str]) -> Waivers:
    """The waivers in an inventory (`ansible-inventory --list`): group_vars like every other decision, so a list in
    group_vars/workers applies to the workers only. WaiverError names every problem."""
    hostvars = (listed.get("_meta") or {}).get("hostvars") or {}
    groups = host_groups(listed)
    found = Waivers()
    problems: list[str] = []
    warn_days = {vars_.get(WARN_DAYS_VARIABLE, DEFAULT_WARN_DAYS) for vars_ in hostvars.values()} or {DEFAULT_WARN_DAYS}
    for value in warn_days:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{WARN_DAYS_VARIABLE} must be a whole number of days, not {value!r}")
    found.warn_days = max((v for v in warn_days if isinstance(v, int) and not isinstance(v, bool)),
                          default=DEFAULT_WARN_DAYS)
    parsed: dict[str, list[Waiver]] = {}
    selected: dict[Waiver, set[str]] = {}  # each waiver's hosts pattern, read once (fleets have many hosts)
    for host, vars_ in sorted(hostvars.items()):
        entries = vars_.get(VARIABLE)
        key = repr(entries)
        if key not in parsed:
            try:
                parsed[key] = parse(entries, known_controls)
            except WaiverError as error:
                problems += [line for line in str(error).splitlines() if line not in problems]
                parsed[key] = []
        for waiver in parsed[key]:
            if waiver not in found.applies_to:
                found.waivers.append(waiver)
                found.applies_to[waiver] = set()
                selected[waiver] = hosts_of(waiver.hosts, groups)
            if host in selected[waiver]:
                found.applies_to[waiver].add(host)
    if problems:
        raise WaiverError("\n".join(problems))
    return found


# -- applying them to an audit -------------------------------------------------------------------------------

def _covers(waiver: Waiver, result: dict) -> bool:
    """A waiver with resources covers a result only when every offender it lists matches one of them."""
    if not waiver.resources:
        return True
    offenders = result.get("actual")
    if not isinstance(offenders, list) or not offenders:
        return False
    return all(any(fnmatch.fnmatchcase(str(o), pattern) for pattern in waiver.resources) for o in offenders)


def apply(results: dict[str, list[dict]], waivers: Waivers, today: date) -> list[dict]:
    """Marks every failing result an active waiver covers as waived (in place), and returns each waiver's summary
    with its state, days left and the nodes it waived a result on (empty: unused)."""
    used: dict[Waiver, list[str]] = {w: [] for w in waivers.waivers}
    expired_hits: dict[Waiver, list[str]] = {w: [] for w in waivers.waivers}
    for node, node_results in results.items():
        for result in node_results:
            if result["status"] != "fail":
                continue
            for waiver in waivers.waivers:
                if waiver.control != result["id"] or node not in waivers.applies_to[waiver] \
                        or not _covers(waiver, result):
                    continue
                state = waiver.state(today, waivers.warn_days)
                if state == "expired":
                    expired_hits[waiver].append(node)
                    result["waiver_expired"] = {**waiver.summary(), "state": state}
                    continue
                result["status"] = "waived"
                result["waiver"] = {**waiver.summary(), "state": state}
                used[waiver].append(node)
                break
    def judged(waiver: Waiver) -> bool:  # its control was read on a node it applies to (not left out by a limit)
        return any(r["id"] == waiver.control for node in waivers.applies_to[waiver] & results.keys()
                   for r in results[node])

    return [{**waiver.summary(), "state": waiver.state(today, waivers.warn_days),
             "days_left": waiver.days_left(today), "waived_on": sorted(used[waiver]),
             "failing_on": sorted(expired_hits[waiver]),
             "unused": not used[waiver] and not expired_hits[waiver] and judged(waiver)}
            for waiver in waivers.waivers]


# -- a baseline for a cluster adopting kubeharden ------------------------------------------------------------

def baseline(results: dict[str, list[dict]], controls: dict[str, dict], owner: str, expires: date,
             today: date) -> str:
    """kubeharden_waivers entries for every control failing now (one per control, its failing nodes as hosts),
    each with reason TODO, which the validation refuses until a person writes why the deviation is accepted."""
    failing: dict[str, list[str]] = {}
    for node, node_results in sorted(results.items()):
        for result in node_results:
            if result["status"] == "fail":
                failing.setdefault(result["id"], []).append(node)
    entries = [{"control": cid, "hosts": ",".join(nodes), "owner": owner, "expires": expires,
                "reason": PLACEHOLDER_REASON}
               for cid, nodes in sorted(failing.items(), key=lambda item: _catalogue_order(item[0], controls))]
    header = (f"# Waivers for the {len(entries)} control(s) failing on {today.isoformat()} "
              "(kubeharden waive --baseline).\n"
              f"# Review each entry and replace reason: {PLACEHOLDER_REASON} with why the deviation is accepted (the\n"
              "# validation refuses TODO), then add the list to the inventory's group_vars/all. Controls already\n"
              "# waived are not listed again.\n")
    return header + yaml.safe_dump({VARIABLE: entries}, sort_keys=False, default_flow_style=False, width=120)


def _catalogue_order(control_id: str, controls: dict[str, dict]) -> int:
    return list(controls).index(control_id) if control_id in controls else len(controls)
