"""Every report format in one place. A report (an audit, a drift run, the images list) is plain data; each module
here renders it one way, and FORMATS is what the command line offers.

Adding a format: one module with a function per report kind it supports, named after the kind
(`audit(report, verbose=False)`, `drift(...)`, `images(rows, ...)`), and one line per kind below.
Adding a status: its mark and whether it decides the score in common.STATUS_MARKS and UNDECIDED; the formats
read those.
"""

from __future__ import annotations

from kubeharden.formats import data, junit, prometheus, sarif, table

FORMATS = {
    "audit": {"table": table.audit, "json": data.audit, "junit": junit.audit, "sarif": sarif.audit,
              "prometheus": prometheus.audit},
    "drift": {"table": table.drift, "json": data.drift, "junit": junit.drift, "prometheus": prometheus.drift},
    "images": {"table": table.images, "json": data.images},
}


def render(kind: str, name: str, report, verbose: bool = False) -> str:
    """The report of this kind (audit, drift, images) in the named format."""
    return FORMATS[kind][name](report, verbose=verbose)
