"""The fault lab's document: its schema, its JSON, and each run told in words (the
terminal's notes under a table and the report's lines both read ``notes``)."""
from __future__ import annotations

from taskrace.reporting.documents import write_document

SCHEMA = "taskrace.faults/1"


def notes(record: dict) -> list[str]:
    """What happened, in words, under the table."""
    out = [f"{record['mode']}: {record['summary']}"]
    if record["parked_unacked"]:
        out.append(f"  {record['parked_unacked']} message(s) left unacked in the broker, back after "
                   f"{record['delivery']['visibility_timeout_s']} s")
    if record["counts"]["duplicates_absorbed"]:
        out.append(f"  the idempotency key stopped {record['counts']['duplicates_absorbed']} repeat execution(s)")
    if record["timed_out"]:
        out.append(f"  ended at its deadline ({record['deadline_s']} s): missing then = lost")
    out.append(f"  {record['verdict']}")
    return out


def document(records: list[dict], contrast: list[dict]) -> dict:
    from taskrace.reporting.results import environment

    return {"schema": SCHEMA, "environment": environment(), "runs": records, "contrast": contrast}


def write_json(path: str, records: list[dict], contrast: list[dict]) -> None:
    write_document(path, document(records, contrast))
