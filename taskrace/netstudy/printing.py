"""The study in the terminal: its tables at the terminal's width and the sentences under
them (the HTML report reuses the sentences)."""
from __future__ import annotations

import statistics

from rich.console import Console

from taskrace.reporting import tables


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    v = seconds * 1e3
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def rate(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def print_fits(doc: dict, console: Console) -> None:
    fits, width = doc["fits"], console.width
    rows = []
    for name, f in fits.items():
        counted = (f.get("counted") or {}).get("worker_round_trips")
        rows.append([name, ms(f["a_s"]), "–" if f["k"] is None else f"{f['k']:.2f}",
                     "–" if f["k"] is None else f"{f['k_per_message']:.2f}",
                     "–" if counted is None else f"{counted:g}"])
    specs = [tables.Spec("workload"), tables.Spec("a ms", "right"), tables.Spec("k: round trips per task", "right"),
             tables.Spec("k per message", "right"), tables.Spec("counted per message", "right")]
    n = doc["settings"]["workers"]
    console.print(tables.fitted(f"Cost per task = a + k x RTT (worker-seconds per call, celery -n {n})",
                                specs, rows, width))
    console.print("counted: the Redis round trips a worker makes per message (INFO commandstats): "
                  "BRPOP, a GET, one per MULTI/EXEC", markup=False, highlight=False)


def print_checks(doc: dict, console: Console) -> None:
    rows = []
    for name, f in doc["fits"].items():
        for c in f.get("checks", []):
            t = c["tasks_per_s"]
            rows.append([name, f"{c['rtt_ms']:g}", f"{c['rtt_measured_ms']:.2f}", str(c["calls"]), rate(t["median"]),
                         f"{rate(t['min'])}..{rate(t['max'])}", rate(c["predicted_tasks_per_s"]),
                         verdict(c)])
    specs = [tables.Spec("workload"), tables.Spec("RTT set", "right"), tables.Spec("RTT measured", "right"),
             tables.Spec("calls", "right"),
             tables.Spec("tasks/s", "right"), tables.Spec("min..max", "right"), tables.Spec("fit", "right"),
             tables.Spec("fit within?")]
    reps = doc["settings"]["repeat"]
    console.print(tables.fitted(f"Measured tasks/s (median, min..max of {reps}) against the fit",
                                specs, rows, console.width))


def verdict(c: dict) -> str:
    if c["within"] is None:
        return "n/a (1 run)"
    if c["within"]:
        return "yes"
    return "no" if c["off"] is None else f"no ({c['off'] * 100:+.0f}%)"


def print_loo(doc: dict, console: Console) -> None:
    rows = []
    for name, f in doc["fits"].items():
        o = f.get("leave_one_out")
        if not o:
            continue
        t = o["tasks_per_s"]
        rows.append([name, f"{ms(o['a_s'])} ms + {o['k']:.2f} x RTT", rate(o["predicted_tasks_per_s"]),
                     f"{rate(t['min'])}..{rate(t['max'])}", verdict(o)])
    if not rows:
        console.print("Leave one out: needs at least three round-trip times", markup=False)
        return
    rtt = next(f["leave_one_out"]["rtt_ms"] for f in doc["fits"].values() if f.get("leave_one_out"))
    specs = [tables.Spec("workload"), tables.Spec(f"fit without {rtt:g} ms"),
             tables.Spec("predicted tasks/s", "right"), tables.Spec("measured min..max", "right"),
             tables.Spec("within?")]
    console.print(tables.fitted(f"Leave one out: fitted on the other RTTs, predicted at {rtt:g} ms",
                                specs, rows, console.width))


def pays_sentences(doc: dict) -> list[str]:
    out = []
    for p in doc.get("pays", []):
        name, rtt = p["workload"], p["twice_from_ms"]
        if rtt == 0:
            out.append(f"{name} beats plain no-op by 2x already on loopback ({p['ratio_at_0']:.1f}x at 0 ms, "
                       f"tending to {p['ratio_limit']:.1f}x as RTT grows).")
        elif rtt is not None:
            measured = max(doc["settings"]["rtts_ms"])
            beyond = " (beyond the measured range: extrapolated)" if rtt > measured else ""
            out.append(f"{name} beats plain no-op by 2x from an RTT of {rtt:.1f} ms{beyond} "
                       f"({p['ratio_at_0']:.2f}x at 0 ms, tending to {p['ratio_limit']:.1f}x).")
        else:
            even = p["pays_from_ms"]
            start = ("never pays" if even is None else "pays from loopback on" if even == 0
                     else f"pays from an RTT of {even:.1f} ms")
            out.append(f"{name} never beats plain no-op by 2x: {p['ratio_at_0']:.2f}x at 0 ms, at most "
                       f"{p['ratio_limit']:.2f}x as RTT grows (its k is more than half of plain's); it {start}.")
    return out


def commands_sentence(doc: dict) -> str | None:
    c = (doc["fits"].get("noop") or {}).get("counted")
    if not c:
        return None
    per = c["per_message"]
    shown = ", ".join(f"{cmd.upper()} {per[cmd]:g}" for cmd in ("brpop", "get", "multi", "exec", "lpush",
                                                               "subscribe", "unsubscribe") if cmd in per)
    return (f"Redis commands per no-op task at {c['rtt_ms']:g} ms: {shown}. The worker's round trips: "
            f"BRPOP (fetch), MULTI ZADD HSET EXEC (noted unacked), MULTI ZREM HDEL EXEC (ack), "
            f"GET (is there a result already?), MULTI SETEX PUBLISH EXEC (result): "
            f"{c['worker_round_trips']:g}; the harness's LPUSH and (UN)SUBSCRIBE pay no delay.")


def print_scaling(doc: dict, console: Console) -> None:
    sc = doc.get("scaling") or {}
    if not sc:
        return
    labels = list(sc["series"])
    counts = sorted({int(n) for s in sc["series"].values() for n in s})
    rows = []
    for n in counts:
        cells = []
        for label in labels:
            s = sc["series"][label].get(str(n))
            cells.append("–" if not s else f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})")
        rows.append([str(n), *cells])
    specs = [tables.Spec("n", "right")] + [tables.Spec(label, "right") for label in labels]
    console.print(tables.fitted(f"Speedup vs sequential ({sc['baseline_s']:.2f} s): the same {sc['tasks']} "
                                f"power-io tasks at every n (strong scaling)", specs, rows, console.width))


def measured_sentence(doc: dict) -> str | None:
    """What the proxy really added at each RTT asked for, over every set of workers."""
    by: dict[float, list[float]] = {}
    for t in doc.get("tiers", []):
        if t["rtt_ms"]:
            by.setdefault(t["rtt_ms"], []).append(t["rtt_measured_ms"])
    if not by:
        return None
    parts = [f"{r:g} ms -> {statistics.median(v):.2f} ms" + (f" ({min(v):.2f}..{max(v):.2f})" if len(v) > 1 else "")
             for r, v in sorted(by.items())]
    return ("RTT measured (PING through the proxy less PING straight to Redis, per set of workers; the fit "
            f"uses it): {'; '.join(parts)}.")


def print_all(doc: dict, console: Console) -> None:
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731 - wraps at the width
    print_fits(doc, console)
    text = measured_sentence(doc)
    if text:
        say(text)
    say("")
    print_checks(doc, console)
    say("")
    print_loo(doc, console)
    say("")
    for text in pays_sentences(doc):
        say(text)
    text = commands_sentence(doc)
    if text:
        say(text)
    say("")
    print_scaling(doc, console)
