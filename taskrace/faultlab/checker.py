"""Counting against the plan: what a fault did to every planned operation, and whether
the delivery mode kept its promise. Pure functions over plain data: tests hand them
ledgers with operations missing, repeated or invented.
"""
from __future__ import annotations

from workers.delivery import DeliveryMode


def amount(op: dict) -> int:
    """The money an operation moves: what its credits add up to (0 for a plain job)."""
    return sum(d for _, d in op.get("deltas") or [] if d > 0)


def count_against_plan(plan: list[dict], applied: dict[str, int], initial: list[int],
                       final: list[int], skipped: dict[str, int] | None = None,
                       redelivered: dict[str, int] | None = None) -> dict:
    """Per planned operation, how many times its effect landed (``applied``, from the
    ledger), and the balances that should follow from that.

    lost: planned, never applied. duplicated: applied two or more times. unplanned:
    applied but never planned. ``ledger_consistent``: the final balances are exactly the
    initial ones plus every recorded application, so no effect happened unrecorded.
    """
    planned_ids = {op["op"] for op in plan}
    lost = [op for op in plan if applied.get(op["op"], 0) == 0]
    duplicated = [op for op in plan if applied.get(op["op"], 0) >= 2]
    unplanned = sorted(op_id for op_id, n in applied.items() if n and op_id not in planned_ids)
    extra = sum(applied[op["op"]] - 1 for op in duplicated)
    from_ledger = list(initial)
    for op in plan:
        for account, delta in op.get("deltas") or []:
            from_ledger[account] += delta * applied.get(op["op"], 0)
    return {
        "planned": len(plan),
        "applied_once": sum(1 for op in plan if applied.get(op["op"], 0) == 1),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "extra_applications": extra,
        "unplanned": len(unplanned),
        "money_missing": sum(amount(op) for op in lost),
        "money_created": sum(amount(op) * (applied[op["op"]] - 1) for op in duplicated),
        "duplicates_absorbed": sum((skipped or {}).values()),
        "redeliveries": sum((redelivered or {}).values()),
        "ledger_consistent": from_ledger == list(final),
        "lost_ops": [op["op"] for op in lost][:20],
        "duplicated_ops": [op["op"] for op in duplicated][:20],
        "unplanned_ops": unplanned[:20],
    }


def promise_kept(mode: DeliveryMode, counts: dict, durable_broker: bool, fired: bool) -> tuple[bool | None, str]:
    """(kept, why). ``None``: no promise was at stake (a broker without persistence is
    unsafe on purpose, like the bank's ``none`` strategy: what it loses is the lesson).
    A fault that never fired proves nothing: that is not a pass."""
    if not fired:
        return False, "the fault never fired (the run ended first): nothing was tested"
    if not counts["ledger_consistent"]:
        return False, "balances disagree with the ledger: an effect happened unrecorded"
    if counts["unplanned"]:
        return False, f"{counts['unplanned']} operations applied that were never planned"
    broken = []
    if counts["lost"] and not mode.may_lose:
        broken.append(f"lost {counts['lost']}")
    if counts["duplicated"] and not mode.may_duplicate:
        broken.append(f"applied {counts['duplicated']} twice")
    if not durable_broker:
        return None, "no promise: the broker kept nothing across the restart (unsafe on purpose)"
    if broken:
        return False, f"promise broken: {', '.join(broken)} ({mode.promise})"
    return True, f"kept: {mode.promise}"


def summary(counts: dict, money: bool) -> str:
    """One line, e.g. "3 transfers lost: 117 units missing; 2 applied twice: 45 units created"."""
    noun = "transfers" if money else "jobs"
    parts = []
    if counts["lost"]:
        parts.append(f"{counts['lost']} {noun} lost" + (f": {counts['money_missing']} units missing" if money else ""))
    if counts["duplicated"]:
        parts.append(f"{counts['duplicated']} applied twice" + (f": {counts['money_created']} units created" if money else ""))
    if counts["duplicates_absorbed"]:
        parts.append(f"{counts['duplicates_absorbed']} duplicate deliveries absorbed by the key")
    return "; ".join(parts) or f"all {counts['planned']} {noun} applied exactly once"
