"""Writing a document (results, fault lab, network study): one writer for all of them.

Whole or not at all (a reader never sees half a file: written beside it, then renamed)
and scrubbed (every string passes ``workers.infra.redact``: a broker URL keeps no password),
whatever the document's schema.
"""
from __future__ import annotations

import json
import os

from workers.infra.redact import scrub


def write_document(path: str, doc: dict) -> str:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(scrub(doc), fh, indent=1, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path
