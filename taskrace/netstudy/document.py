"""The network study's document: schema taskrace.network/1, written whole and scrubbed, and read back."""
from __future__ import annotations

import json

from taskrace.reporting.documents import write_document


SCHEMA = "taskrace.network/1"  # what the files say: kept when the module moved


def load_network(path: str) -> dict | None:
    """This command's document if ``path`` holds one (``taskrace report`` draws it), else
    None: the caller's own loader then reads the file and says in one line what is wrong."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None



def write_json(path: str, doc: dict) -> None:
    write_document(path, doc)
