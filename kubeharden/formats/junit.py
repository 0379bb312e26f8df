"""JUnit XML, as CI systems show test results: a suite per node, a case per control."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from kubeharden import catalogue
from kubeharden.formats.common import UNDECIDED, detail, waiver_text


def _case(suite: ET.Element, node: str, control: dict) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=f"{node}.{control['section']}",
                         name=f"{control['id']} {control['title']}")


def _unreachable(suites: ET.Element, node: str, error: str) -> None:
    """A node that could not be read: one suite with one erring case, so CI counts it."""
    suite = ET.SubElement(suites, "testsuite", name=node, tests="1", failures="0", errors="1")
    ET.SubElement(ET.SubElement(suite, "testcase", name="reachable"), "error", message=error)


def _text(suites: ET.Element) -> str:
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def audit(report, verbose: bool = False) -> str:
    suites = ET.Element("testsuites", name="kubeharden audit")
    for node, results in sorted(report.results.items()):
        counts = Counter(r["status"] for r in results)
        suite = ET.SubElement(suites, "testsuite", name=node, tests=str(len(results)),
                              failures=str(counts["fail"]), errors=str(counts["error"]),
                              skipped=str(sum(counts[status] for status in (*UNDECIDED, "waived"))))
        for r in results:
            control = report.controls[r["id"]]
            case = _case(suite, node, control)
            if r["status"] == "fail":
                ET.SubElement(case, "failure", message=detail(r), type=control["severity"]).text = \
                    f"fix: {catalogue.fix_text(report.fix(node, r['id']))}"
            elif r["status"] == "error":
                ET.SubElement(case, "error", message=detail(r))
            elif r["status"] in UNDECIDED:
                ET.SubElement(case, "skipped", message=f"{r['status']}: {detail(r)}")
            elif r["status"] == "waived":
                ET.SubElement(case, "skipped", message=f"waived: {waiver_text(r['waiver'])}; {detail(r)}")
    for node, error in sorted(report.host_errors.items()):
        _unreachable(suites, node, error)
    return _text(suites)


def drift(report, verbose: bool = False) -> str:
    suites = ET.Element("testsuites", name="kubeharden drift")
    for node, entry in sorted(report.nodes.items()):
        results = report.audit.results[node]
        unjudged = entry.get("unjudged", [])
        suite = ET.SubElement(suites, "testsuite", name=node, tests=str(len(results)),
                              failures=str(len(entry["drifted"])),
                              errors=str(len(unjudged) + (1 if entry.get("check_error") else 0)))
        for result in results:
            control = report.audit.controls[result["id"]]
            case = _case(suite, node, control)
            if result["id"] in entry["drifted"]:
                diffs = [change["diff"] for change in entry["pending"] if result["id"] in change["controls"]]
                ET.SubElement(case, "failure", message=f"drifted: {result['evidence']}",
                              type=control["severity"]).text = "\n".join(diffs)
            elif result["id"] in unjudged:
                ET.SubElement(case, "error", message=f"not judged: {detail(result)}")
            elif result["status"] == "waived":
                ET.SubElement(case, "skipped", message=f"waived: {waiver_text(result['waiver'])}")
        if entry.get("check_error"):
            ET.SubElement(ET.SubElement(suite, "testcase", name="check mode"), "error", message=entry["check_error"])
    for node, error in sorted(report.errors.items()):
        if node not in report.nodes:
            _unreachable(suites, node, error)
    return _text(suites)
