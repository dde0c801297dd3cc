"""Reading a document back: one loader per schema, shared by ``taskrace report`` and the
library's ``taskrace.load``, and the report each kind of document draws.

    results  taskrace.results/1   run, compare (--json)      taskrace.reporting.html_report
    faults   taskrace.faults/1    taskrace faults (--json)   the fault lab's report
    network  taskrace.network/1   taskrace network (--json)  the network study's report
"""
from __future__ import annotations


# Each document a command writes, by its schema: how to recognise, load and draw it.
# "results" (run, compare) is the fallback, whose loader explains a bad file in one line.
def load_document(path: str) -> tuple[str, dict]:
    """(kind, document) of a file written by ``--json``: "faults", "network" or
    "results"; BadResults (one line) for anything else."""
    from taskrace.faultlab.report import load_faults
    from taskrace.netstudy.document import load_network
    from taskrace.reporting.results import load_json

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
        from taskrace.faultlab.report import write_report as write
    elif kind == "network":
        from taskrace.netstudy.report import write_report as write
    else:
        from taskrace.reporting.html_report import write_report as write
    return write(doc, out_dir)
