"""Writing a document (results, fault lab, network study): one writer for all of them.

Whole or not at all (a reader never sees half a file: written beside it, then renamed)
and scrubbed (every string passes ``workers.redact``: a broker URL keeps no password),
whatever the document's schema.
"""
from __future__ import annotations

import json
import os

from workers.redact import scrub


def write_document(path: str, doc: dict) -> str:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(scrub(doc), fh, indent=1, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


# Each document a command writes, by its schema: how to recognise, load and draw it.
# "results" (run, compare) is the fallback, whose loader explains a bad file in one line.
def load_document(path: str) -> tuple[str, dict]:
    """(kind, document) of a file written by ``--json``: "faults", "network" or
    "results"; BadResults (one line) for anything else."""
    from taskrace.faults.report import load_faults
    from taskrace.network import load_network
    from taskrace.results import load_json

    doc = load_faults(path)  # "schema": "taskrace.faults/1", else None
    if doc is not None:
        return "faults", doc
    doc = load_network(path)
    if doc is not None:
        return "network", doc
    return "results", load_json(path)


def write_report(kind: str, doc: dict, out_dir: str) -> str:
    """The HTML report (and its charts) of a document of ``kind``; returns the page's path."""
    if kind == "faults":
        from taskrace.faults.report import write_report as write
    elif kind == "network":
        from taskrace.network_report import write_report as write
    else:
        from taskrace.html_report import write_report as write
    return write(doc, out_dir)
