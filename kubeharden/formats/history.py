"""The history of runs (`kubeharden report`): what changed since the previous run, as text, and a self-contained
HTML page.

The page needs nothing but a browser: styles inline, the score trend of each node drawn as inline SVG, every
text escaped. Its parts: one card per node (score, trend, drifted and failing controls), what changed since the
previous run, and the failing controls with their evidence and the role and tags that fix them.
"""

from __future__ import annotations

import html
from pathlib import Path

from kubeharden import catalogue
from kubeharden.formats.common import detail, waiver_text


def node_history(records: list[dict], node: str) -> list[tuple[dict, dict]]:
    return [(record, record["nodes"][node]) for record in records if node in record["nodes"]]


def changes(records: list[dict]) -> dict[str, dict]:
    """Per node of the newest record: its result against the node's previous record."""
    if not records:
        return {}
    latest = records[-1]
    out = {}
    for node, entry in sorted(latest["nodes"].items()):
        earlier = node_history(records[:-1], node)
        now = {r["id"]: r["status"] for r in entry["results"]}
        if not earlier:
            out[node] = {"previous": None, "score": entry["score"], "score_before": None,
                         "newly_failing": sorted((c for c, s in now.items() if s == "fail"), key=catalogue.sort_key),
                         "newly_passing": [], "drifted": entry.get("drifted", [])}
            continue
        previous_record, previous = earlier[-1]
        then = {r["id"]: r["status"] for r in previous["results"]}
        out[node] = {
            "previous": previous_record["id"], "score": entry["score"], "score_before": previous["score"],
            "newly_failing": sorted((c for c, s in now.items() if s == "fail" and then.get(c) != "fail"),
                                    key=catalogue.sort_key),
            "newly_passing": sorted((c for c, s in now.items() if s == "pass" and then.get(c) == "fail"),
                                    key=catalogue.sort_key),
            "drifted": entry.get("drifted", [])}
    return out


def to_text(records: list[dict]) -> str:
    if not records:
        return "no runs recorded yet (kubeharden audit or kubeharden drift records one)\n"
    latest = records[-1]
    lines = [f"latest run: {latest['id']} ({latest['kind']}, {latest['time']}); {len(records)} run(s) read"]
    for node, delta in changes(records).items():
        since = f"since {delta['previous']}" if delta["previous"] else "first run of this node"
        score = (f"score {delta['score_before']}% -> {delta['score']}%" if delta["previous"]
                 else f"score {delta['score']}%")
        lines.append(f"== {node}: {score} ({since})")
        if delta["newly_failing"]:
            lines.append(f"   now failing: {', '.join(delta['newly_failing'])}")
        if delta["newly_passing"]:
            lines.append(f"   now passing: {', '.join(delta['newly_passing'])}")
        if delta["drifted"]:
            lines.append(f"   drifted: {', '.join(delta['drifted'])}")
        if delta["previous"] and not delta["newly_failing"] and not delta["newly_passing"]:
            lines.append("   no control changed its result")
    for node, error in sorted(latest.get("errors", {}).items()):
        lines.append(f"== {node}: {error}")
    return "\n".join(lines) + "\n"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2329;background:#f6f7f9}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:2rem 0 .6rem}.muted{color:#66707a}
.cards{display:flex;flex-wrap:wrap;gap:1rem}.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;
padding:1rem;min-width:15rem}.score{font-size:2rem;font-weight:600}.good{color:#1a7f37}.warn{color:#9a6700}
.bad{color:#cf222e}table{border-collapse:collapse;width:100%;background:#fff}
td,th{border-bottom:1px solid #e5e8eb;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4}.tag{display:inline-block;border-radius:4px;padding:0 .4rem;font-size:.8rem;
color:#fff}.high{background:#cf222e}.medium{background:#bf8700}.low{background:#57606a}.drift{background:#8250df}
code{font-size:.85rem;word-break:break-all}
"""


def _score_class(score: float) -> str:
    return "good" if score >= 90 else "warn" if score >= 75 else "bad"


def sparkline(scores: list[float], width: int = 220, height: int = 48) -> str:
    """An inline SVG polyline of scores (0-100), oldest left."""
    if len(scores) < 2:
        return '<span class="muted">one run: no trend yet</span>'
    step = width / (len(scores) - 1)
    points = " ".join(f"{i * step:.1f},{height - score / 100 * height:.1f}" for i, score in enumerate(scores))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="score trend: {", ".join(str(s) for s in scores)}">'
            f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{points}"/></svg>')


def to_html(records: list[dict], trend_runs: int = 30) -> str:
    e = html.escape
    controls = {c["id"]: c for c in catalogue.load()}
    if not records:
        return _page("<p>No runs recorded yet: <code>kubeharden audit</code> or <code>kubeharden drift</code> "
                     "records one.</p>")
    latest = records[-1]
    delta = changes(records)
    parts = [f"<h1>kubeharden report</h1><p class='muted'>Latest run {e(latest['id'])} ({e(latest['kind'])}) at "
             f"{e(latest['time'])}; {len(records)} recent run(s); inventory {e(latest.get('inventory', ''))}</p>",
             "<div class='cards'>"]
    for node, entry in sorted(latest["nodes"].items()):
        trend = [n["score"] for _, n in node_history(records, node)][-trend_runs:]
        failing = entry["counts"].get("fail", 0)
        change = delta[node]
        since = (f"{change['score_before']}% before" if change["score_before"] is not None else "first run")
        parts.append(f"<div class='card'><div><b>{e(node)}</b></div>"
                     f"<div class='score {_score_class(entry['score'])}'>{entry['score']}%</div>"
                     f"<div class='muted'>{failing} failing, {len(entry.get('drifted', []))} drifted; {e(since)}</div>"
                     f"{sparkline(trend)}</div>")
    parts.append("</div>")
    for node, error in sorted(latest.get("errors", {}).items()):
        parts.append(f"<p class='bad'>{e(node)}: {e(error)}</p>")
    parts.append("<h2>Since the previous run</h2><table><tr><th>Node</th><th>Now failing</th><th>Now passing</th>"
                 "<th>Drifted</th></tr>")
    for node, change in delta.items():
        parts.append(f"<tr><td>{e(node)}</td><td>{e(', '.join(change['newly_failing'])) or '-'}</td>"
                     f"<td>{e(', '.join(change['newly_passing'])) or '-'}</td>"
                     f"<td>{e(', '.join(change['drifted'])) or '-'}</td></tr>")
    parts.append("</table><h2>Failing and waived controls</h2><table><tr><th>Node</th><th>Control</th><th>Severity</th>"
                 "<th>Evidence</th><th>Fixed by</th></tr>")
    for node, entry in sorted(latest["nodes"].items()):
        for result in sorted((r for r in entry["results"] if r["status"] in ("fail", "error", "waived")),
                             key=lambda r: catalogue.sort_key(r["id"])):
            control = controls.get(result["id"], {"title": "(not in this catalogue)", "severity": "low",
                                                  "remediation": {"role": "?", "variable": "?", "tags": []}})
            drift = " <span class='tag drift'>drifted</span>" if result["id"] in entry.get("drifted", []) else ""
            if result["status"] == "waived":
                drift += f" <span class='tag low'>waived</span><br><i>{e(waiver_text(result['waiver']))}</i>"
            evidence = detail(result)
            fix = catalogue.fix_text(catalogue.remediation_for(control, entry.get("etcd")))
            parts.append(f"<tr><td>{e(node)}</td><td><b>{e(result['id'])}</b>{drift}<br>{e(control['title'])}</td>"
                         f"<td><span class='tag {e(control['severity'])}'>{e(control['severity'])}</span></td>"
                         f"<td><code>{e(str(evidence))}</code></td>"
                         f"<td>{e(fix)}</td></tr>")
    parts.append("</table>")
    return _page("".join(parts))


def _page(body: str) -> str:
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>kubeharden report</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_html(records: list[dict], path: str) -> None:
    Path(path).write_text(to_html(records))
