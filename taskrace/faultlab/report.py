"""The fault lab's report: a Jepsen-style timeline per fault and one self-contained HTML page.

    write_report(document, out_dir) -> path of out_dir/index.html

One figure per fault (and broker persistence, for faults that touch the broker), one
panel per delivery mode: operations applied and executions over time on the left axis,
the money moved on the right one, the fault window shaded. Both axes are scaled to the
plan, so "planned" is one height in every panel and a loss or a duplicate shows as a line
ending below or above it. PNG + SVG through taskrace.reporting.plots (matplotlib, Agg, no pyplot);
the page embeds the PNGs and loads nothing, like taskrace.reporting.html_report.
"""
from __future__ import annotations

import json
import os
import re
import textwrap
import time

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from taskrace.faultlab.document import SCHEMA, notes
from taskrace.faultlab.nemesis import FAULTS
from taskrace.reporting import plots
from taskrace.reporting.html_report import esc, figure, page, section_environment, write_page
from taskrace.reporting.results import BadResults
from workers.delivery import MODES

APPLIED, EXECUTED, MONEY, FAULT, PLAN = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"
INSTANT_FRACTION = 0.005  # of the time axis: a shorter fault window is drawn as a line
# kept: (table cell, chart title, CSS class); None: a broker without persistence, unsafe on purpose
PROMISE = {True: ("kept", "promise kept", "ok"), False: ("BROKEN", "promise BROKEN", "fail"),
           None: ("none", "no promise at stake", "unsafe")}


# --- reading the document ------------------------------------------------------------------

def load_faults(path: str) -> dict | None:
    """The fault lab's document if ``path`` holds one, else None: then the caller's own
    loader reads the file and gives its one-line error for a missing or broken file."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return None
    runs = doc.get("runs")
    if not isinstance(runs, list) or not runs:
        raise BadResults(f"{path} holds no fault runs")
    for i, run in enumerate(runs):
        missing = [k for k in ("fault", "mode", "counts", "timeline") if not isinstance(run, dict) or k not in run]
        if missing:
            raise BadResults(f"{path}: fault run {i} lacks {', '.join(missing)}")
    return doc


def restarts_broker(fault: str) -> bool:
    cls = FAULTS.get(fault)
    return bool(cls and cls.restarts_broker)


def group_title(record: dict) -> str:
    title = record["fault"]
    if restarts_broker(record["fault"]):
        title += f" (broker persistence: {record.get('broker_persistence')})"
    return title


def groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs by fault (+ persistence), in the file's order; modes in MODES' order within."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(group_title(r), []).append(r)
    order = {m: i for i, m in enumerate(MODES)}
    return {k: sorted(v, key=lambda r: order.get(r["mode"], len(order))) for k, v in out.items()}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def series(record: dict) -> dict[str, list[float]]:
    """The timeline's columns, each starting at (0, 0): the run begins with nothing done."""
    tl = record["timeline"]
    return {name: [0.0] + [p[i] for p in tl["points"]] for i, name in enumerate(tl["columns"])}


def has_money(record: dict) -> bool:
    """The jobs workload moves no money: no money axis there."""
    return record.get("workload", "bank") == "bank" and bool(record["timeline"].get("money_planned"))


def _run_end(record: dict) -> float:
    ends = [series(record)["t_s"][-1]]
    ends += [t for t in (record.get("fault_window") or []) if t is not None]
    if record.get("timed_out") and record.get("deadline_s"):
        ends.append(record["deadline_s"])
    return max(ends)


# --- the timeline chart ----------------------------------------------------------------------

def _headroom(rows: list[dict]) -> float:
    """The top of both axes as a multiple of the plan, shared by the group's panels:
    room above "planned" for duplicates (extra executions, money created)."""
    frac = 1.15
    for r in rows:
        s, planned = series(r), r["counts"]["planned"] or 1
        frac = max(frac, 1.05 * max(s["executions"]) / planned)
        if has_money(r):
            frac = max(frac, 1.05 * max(s["money_moved"]) / r["timeline"]["money_planned"])
    return frac


def _panel(ax, r: dict, frac: float, xmax: float, money_labels: bool, first: bool, last: bool,
           ncols: int) -> None:
    s, c = series(r), r["counts"]
    planned = c["planned"]
    ax.step(s["t_s"], s["ops_applied"], where="post", color=APPLIED, lw=2.2, zorder=3, gid="ops-applied")
    ax.step(s["t_s"], s["executions"], where="post", color=EXECUTED, lw=1.4, ls=(0, (4, 3)), zorder=4,
            gid="executions")
    ax.axhline(planned, color=PLAN, lw=1, ls=":", zorder=1)
    ax.set_ylim(0, frac * planned)
    top = frac * planned
    window = r.get("fault_window")
    if window:  # zorder 0: the lines stay readable across the shaded stretch
        fired, healed = window
        if not is_instant(window, xmax):
            ax.axvspan(fired, healed, color=FAULT, alpha=0.14, lw=0, zorder=0,
                       gid=f"fault-window-{slug(r['mode'])}")
        else:  # a kill with nothing to heal: the fault is an instant
            ax.axvline(fired, color=FAULT, lw=2, alpha=0.7, zorder=0, gid=f"fault-instant-{slug(r['mode'])}")
        ax.text(fired, top, " fault", color=FAULT, fontsize=8, va="top", ha="left")
        back = (r.get("recovery") or {}).get("victim_applied_s")
        if back is not None:  # where the op the fault hit finally landed, whoever ran it
            t = fired + back
            # the record rounds to 1 ms, the timeline to 0.1 ms: allow for it
            y = max((a for x, a in zip(s["t_s"], s["ops_applied"]) if x <= t + 0.002), default=0)
            ax.plot([t], [y], marker="o", ms=8, mfc="none", mec=FAULT, mew=1.8, zorder=5, gid="victim-applied")
    if r.get("timed_out") and r.get("deadline_s"):
        ax.axvline(r["deadline_s"], color="black", lw=1, ls="-.", zorder=1)
    gap = [f"{c['lost']} lost"] * bool(c["lost"]) + [f"{c['duplicated']} twice"] * bool(c["duplicated"])
    skipped = [f"{c['duplicates_absorbed']} repeat(s) skipped"] * bool(c.get("duplicates_absorbed"))
    if gap or skipped:  # one operation in sixty is a pixel or two: say it where the line ends
        ax.annotate(", ".join(gap + skipped), (s["t_s"][-1], s["ops_applied"][-1]), xytext=(5, -14),
                    textcoords="offset points", color=FAULT if gap else "#444444", fontsize=9,
                    fontweight="bold", ha="right" if s["t_s"][-1] > 0.7 * xmax else "left", zorder=6)
    if has_money(r):
        money = ax.twinx()
        money.step(s["t_s"], s["money_moved"], where="post", color=MONEY, lw=1.4, zorder=2, gid="money-moved")
        mp = r["timeline"]["money_planned"]
        money.axhline(mp, color=MONEY, lw=1.2, ls="--", zorder=1)
        money.set_ylim(0, frac * mp)  # same scale as the ops: "planned" at one height
        money.grid(False)
        money.tick_params(axis="y", colors=MONEY)
        if last:
            money.set_ylabel("money moved (units)", color=MONEY)
        # Inner panels repeat the last one's scale (same plan, same headroom): no ticks
        # between the panels, unless the runs planned different amounts of money.
        money.spines["right"].set_visible(last or money_labels)
        money.tick_params(right=last or money_labels, labelright=last or money_labels)
    _, word, _ = PROMISE[r.get("kept")]
    summary = textwrap.fill(r.get("summary", ""), width=max(30, 130 // ncols))
    ax.set_title(f"{r['mode']}: {word}\n{summary}", fontsize=10,
                 color=FAULT if r.get("kept") is False else "black", loc="left")
    ax.set_xlabel("seconds since the run started")
    if first:
        ax.set_ylabel(f"operations (of {planned} planned)")
    ax.text(0.98, 0.04, _counts_line(r), transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#cccccc", "alpha": 0.9}, zorder=6)


def _counts_line(r: dict) -> str:
    c = r["counts"]
    parts = [f"lost {c['lost']}", f"twice {c['duplicated']}"]
    if has_money(r):
        moved = [f"−{c['money_missing']}"] if c["money_missing"] else []
        moved += [f"+{c['money_created']}"] if c["money_created"] else []
        parts.append(f"units {' '.join(moved) or '±0'}")
    parts.append(f"redelivered {c['redeliveries']}")
    return " · ".join(parts)


def timeline_figure(rows: list[dict]) -> Figure:
    """One row of panels, one per delivery mode, for the runs of one fault."""
    frac = _headroom(rows)
    xmax = max(_run_end(r) for r in rows)
    with matplotlib.rc_context(plots.STYLE):
        fig = plots.new_figure(4.6)
        axes = fig.subplots(1, len(rows), sharex=True, sharey=True, squeeze=False)[0]
        money_labels = len({r["timeline"].get("money_planned") for r in rows if has_money(r)}) > 1
        for i, (ax, r) in enumerate(zip(axes, rows)):
            _panel(ax, r, frac, xmax, money_labels, first=i == 0, last=i == len(rows) - 1, ncols=len(rows))
            ax.set_xlim(0, xmax * 1.04 or 1)
        fig.legend(handles=_legend(rows, xmax), loc="outside lower center", ncols=4, frameon=False, fontsize=8.5)
        first = rows[0]
        cls = FAULTS.get(first["fault"])
        fig.suptitle(f"{group_title(first)}: {cls.help if cls else ''}".rstrip(": "), fontweight="bold",
                     fontsize=12)
    return fig


def is_instant(window: list[float], xmax: float) -> bool:
    """A window too short to see as a band (a kill: nothing to heal) is drawn as a line."""
    fired, healed = window
    return healed - fired < INSTANT_FRACTION * xmax


def _legend(rows: list[dict], xmax: float) -> list:
    handles = [Line2D([], [], color=APPLIED, lw=2.2, label="operations applied (distinct)"),
               Line2D([], [], color=EXECUTED, lw=1.4, ls=(0, (4, 3)),
                      label="executions (applied + repeats the key skipped)"),
               Line2D([], [], color=PLAN, lw=1, ls=":", label="operations planned")]
    if any(has_money(r) for r in rows):
        handles += [Line2D([], [], color=MONEY, lw=1.4, label="money moved (right axis)"),
                    Line2D([], [], color=MONEY, lw=1.2, ls="--", label="money planned")]
    windows = [r.get("fault_window") for r in rows if r.get("fault_window")]
    if any(not is_instant(w, xmax) for w in windows):
        handles.append(Patch(color=FAULT, alpha=0.14, label="fault window (injected → healed)"))
    if any(is_instant(w, xmax) for w in windows):
        handles.append(Line2D([], [], color=FAULT, lw=2, alpha=0.7, label="fault (an instant: nothing to heal)"))
    if any((r.get("recovery") or {}).get("victim_applied_s") is not None for r in rows):
        handles.append(Line2D([], [], color=FAULT, marker="o", mfc="none", mew=1.8, lw=0,
                              label="the op the fault hit, applied"))
    if any(r.get("timed_out") for r in rows):
        handles.append(Line2D([], [], color="black", lw=1, ls="-.", label="deadline: missing then = lost"))
    return handles


def write_charts(doc: dict, out_dir: str) -> dict[str, plots.Chart]:
    charts = {}
    for title, rows in groups(doc["runs"]).items():
        charts[title] = plots.save(timeline_figure(rows), out_dir, f"timeline-{slug(title)}",
                                   f"Timeline: {title}")
    return charts


# --- the page --------------------------------------------------------------------------------

# What each promise means in practice; the settings themselves come from the records.
MODE_MEANING = {
    "at-most-once": "Celery's defaults: a worker acknowledges a message when it <i>starts</i> the task. "
                    "If the worker dies mid-task the broker has already forgotten it: the task is gone, "
                    "and it is never run twice. Messages the worker had prefetched but not started stay "
                    "unacknowledged, and kombu's Redis transport hands those back only after its "
                    "<code>visibility_timeout</code>, an hour by default: within a run, as good as lost.",
    "at-least-once": "<code>task_acks_late</code>: acknowledge when the task <i>ends</i>, so a task whose "
                     "worker dies is still in the broker. <code>task_reject_on_worker_lost</code>: a killed "
                     "pool child's task goes back to the queue instead of being acked as failed. A short "
                     "<code>visibility_timeout</code> (with kombu's <code>unacked_restore_interval</code> and "
                     "<code>unacked_restore_throttle</code>, so the sweep looks every second instead of every "
                     "~100 s) gives an unacknowledged message to another worker within seconds. The price: "
                     "a worker that is only stalled still holds its copy and runs it when it wakes.",
    "acks-late-only": "<code>task_acks_late</code> alone, without <code>task_reject_on_worker_lost</code>: "
                      "the common half-measure. A task whose node dies or stalls comes back as under "
                      "at-least-once, but a killed pool child's task is still acknowledged: it fails with "
                      "WorkerLostError and is never retried, so kill-child loses it despite the late ack.",
    "effectively-once": "At-least-once delivery plus an idempotency key per operation: the apply script "
                        "(one Lua script, one atomic step in Redis) writes the operation's id with HSETNX and "
                        "moves the money only if the id was new. A second delivery still executes, but "
                        "changes nothing: executed twice, applied once.",
}

FAULT_LESSON = {
    "kill-worker": "A whole worker node is SIGKILLed and a new one started (what a supervisor does). "
                   "<b>At-most-once</b> loses the task the node was running (acked when it started) and the "
                   "messages it had prefetched: they stay unacknowledged in the broker for kombu's "
                   "visibility_timeout of an hour, far beyond the run. <b>At-least-once</b> gets all of them "
                   "back after its short visibility timeout, counted from when they were fetched: the "
                   "survivors keep working, and the last steps of the blue line, seconds after the rest, are "
                   "those messages coming back. <b>Effectively-once</b> does the same, and the key makes any "
                   "repeat harmless.",
    "kill-child": "Only the prefork child running a task is SIGKILLed; the node's main process survives and "
                  "logs a WorkerLostError. <b>At-most-once</b> had acked the task when it started: it is lost. "
                  "With <code>task_reject_on_worker_lost</code>, <b>at-least-once</b> and "
                  "<b>effectively-once</b> put it back to be delivered again. Without that setting (<b>acks-late-only</b>) the "
                  "late ack still acknowledges it, and the task fails for good.",
    "pause-worker": "A worker node is SIGSTOPped past the visibility timeout, then resumed. "
                    "<b>At-most-once</b> loses nothing here: the paused worker had acked its task and finishes "
                    "it on waking, only late. <b>At-least-once</b> redelivers the unacked task to another "
                    "worker after the visibility timeout, and when the stalled worker wakes it runs its copy "
                    "too: a duplicate, the orange executions line and the green money line ending above the "
                    "plan. <b>Effectively-once</b> runs it twice as well, but the idempotency key, written in "
                    "the same atomic step as the balance change, makes the second run change nothing.",
    "restart-broker": "Redis itself is SIGKILLed and started again. With <b>AOF</b> (appendfsync everysec) it "
                      "reloads the queue and the unacked index from its log, so the modes can keep their promises. "
                      "With <b>no persistence</b> the queue is gone: whatever had not been delivered is lost "
                      "under every mode, because no delivery setting can redeliver a message the broker no "
                      "longer has. That row is unsafe on purpose (no promise at stake): the lesson is that "
                      "the promises assume a durable broker. RDB keeps only its last snapshot.",
    "drop-connections": "Every client's connection to the broker is closed (CLIENT KILL TYPE normal). "
                        "Workers and the producer reconnect; nothing should be lost or doubled by a "
                        "reconnect alone.",
    "partition-worker": "A worker container is cut off from the lab's network, then reconnected: to the "
                        "broker it looks like a stalled worker, so the same duplicate as pause-worker can "
                        "follow under at-least-once.",
}

CONTRAST_LESSON = (
    "The same kind of fault against shared memory: a process holding a lock is killed or paused "
    "inside its critical section. A <code>multiprocessing.Lock</code> is never released if its holder "
    "dies: the survivors wait forever, so the lab detects the missing progress and stops them by PID "
    "(a deadlock, not a hang). A Redis lock with a lease expires instead, so another process takes over "
    "after a kill. But a paused holder that wakes after its lease still believes it holds the lock: two "
    "holders at once, a lost update, and a LockNotOwnedError when it releases. That is the queue's "
    "pause-worker duplicate in another form: a timeout cannot tell a dead process from a slow one.")


def _num(value) -> str:
    return "–" if value is None else esc(value)


def _flag(count) -> str:
    """A count that is not zero, in red: lost or duplicated work."""
    return f"<span class=fail>{_num(count)}</span>" if count else _num(count)


def _back(r: dict) -> str:
    if not r.get("fired"):
        return "no fault"
    back = (r.get("recovery") or {}).get("victim_applied_s")
    return "never" if back is None else f"{back:.1f}"


COLUMNS = ("mode", "planned", "applied once", "lost", "applied twice+", "units missing", "units created",
           "redeliveries", "WorkerLostErrors", "victim back after s", "promise")


def _table(rows: list[dict]) -> str:
    """The terminal's faults table (taskrace.faultlab.cli.faults_table), headers spelled out."""
    body = []
    for r in rows:
        c = r["counts"]
        money = has_money(r)
        word, _, css = PROMISE[r.get("kept")]
        cells = [f"<b>{esc(r['mode'])}</b>", _num(c["planned"]), _num(c["applied_once"]),
                 _flag(c["lost"]), _flag(c["duplicated"]),
                 _num(c["money_missing"]) if money else "–", _num(c["money_created"]) if money else "–",
                 _num(c["redeliveries"]), _num(r.get("worker_lost_errors")), esc(_back(r)),
                 f"<span class={css}>{esc(word)}</span>"]
        body.append("<tr>" + "".join(f"<td class={'l' if i in (0, 10) else 'r'}>{v}</td>"
                                     for i, v in enumerate(cells)) + "</tr>")
    head = "".join(f"<th class={'l' if i in (0, 10) else 'r'}>{esc(h)}</th>" for i, h in enumerate(COLUMNS))
    return f"<div class=scroll><table class=runs><tr>{head}</tr>{''.join(body)}</table></div>"


def _run_notes(r: dict) -> str:
    """Each run in words: the terminal's notes (summary, parked messages, verdict) with,
    after the summary, where the fault hit and when the operation it hit landed."""
    lines = [line.strip() for line in notes(r)]
    if r.get("fired"):
        info = r.get("fault_info") or {}
        where = ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in info.items())
        healed = r.get("healed_at_s")
        lines[1:1] = [f"fault at {r.get('fired_at_s')} s on {', '.join(r.get('victims') or []) or 'no op'}"
                      + (f" ({where})" if where else "")
                      + (f", healed at {healed} s" if healed not in (None, r.get("fired_at_s")) else ""),
                      _victim_line(r)]
    _, _, css = PROMISE[r.get("kept")]
    return ("<li>" + "<br>".join(f"<span class={css}>{esc(line)}</span>" if line == r.get("verdict")
                                 else esc(line) for line in lines) + "</li>")


def _victim_line(r: dict) -> str:
    """When the operation the fault hit landed, next to the timeout that governs it."""
    back = (r.get("recovery") or {}).get("victim_applied_s")
    vt = (r.get("delivery") or {}).get("visibility_timeout_s")
    timeout = f" (visibility timeout: {vt} s)" if vt is not None else ""
    if back is None:
        return f"the operation the fault hit was never applied{timeout}"
    return f"the operation the fault hit was applied {back:.1f} s after the fault{timeout}"


def section_fault(title: str, rows: list[dict], chart: plots.Chart) -> str:
    fault = rows[0]["fault"]
    lesson = FAULT_LESSON.get(fault, "")
    return f"""
<section id="{esc(slug(title))}">
<h2>{esc(title)}</h2>
{figure(chart)}
{_table(rows)}
<ul class=note>{''.join(_run_notes(r) for r in rows)}</ul>
<div class=seeing><h3>What you are seeing</h3>
<p>{lesson}</p></div>
</section>"""


READING = f"""
<section id=reading>
<h2>How to read a timeline</h2>
<p>Each fault has one figure, one panel per delivery mode, with time running from the moment the planned
operations were published. The <b style="color:{APPLIED}">blue</b> line counts planned operations applied at
least once, the <b style="color:{EXECUTED}">orange dashed</b> line every execution (it rises above the blue
one when an operation runs again, whether its effect landed twice or the idempotency key stopped it), and the
<b style="color:{MONEY}">green</b> line the money those operations moved (right axis; the jobs workload moves
none, so it has no money axis). Both axes are scaled so the plan is one height, the dotted and dashed lines:
a line that ends below it lost work, above it did work twice. The <b style="color:{FAULT}">red</b> band is
the fault, from injection to heal (a red line when it is an instant, like a kill); the red ring marks when
the operation the fault hit was finally applied, by whichever worker. The box in each panel gives the
counts; the table under the figure gives all of them.</p>
</section>"""


def section_modes(runs: list[dict]) -> str:
    """What each promise means and the exact settings that produced it, from the records."""
    seen = {}
    for r in sorted(runs, key=lambda r: list(MODES).index(r["mode"]) if r["mode"] in MODES else len(MODES)):
        seen.setdefault(r["mode"], r.get("delivery") or {})
    rows = []
    for mode, d in seen.items():
        settings = [f"{k} = {json.dumps(v)}" for k, v in (d.get("celery_settings") or {}).items()]
        transport = [f"{k} = {json.dumps(v)}" for k, v in (d.get("broker_transport_options") or {}).items()]
        rows.append(
            f"<tr><td class=l><b>{esc(mode)}</b></td><td class=l>{esc(d.get('promise', ''))}</td>"
            f"<td class=l>{'<br>'.join(f'<code>{esc(s)}</code>' for s in settings) or 'Celery defaults'}</td>"
            f"<td class=l>{'<br>'.join(f'<code>{esc(s)}</code>' for s in transport) or 'kombu defaults'}"
            f"<br><span class=dim>visibility timeout: {esc(d.get('visibility_timeout_s'))} s</span></td>"
            f"<td class=l>{'yes: HSETNX of the op id in the apply script' if d.get('idempotency_key') else 'no'}"
            "</td>"
            f"<td class=l>{MODE_MEANING.get(mode, '')}</td></tr>")
    return f"""
<section id=modes>
<h2>What each mode promises, and the settings it sets</h2>
<div class=scroll><table class=runs><tr><th class=l>mode</th><th class=l>promise</th>
<th class=l>Celery settings</th><th class=l>broker_transport_options</th><th class=l>idempotency key</th>
<th class=l>what it means</th></tr>{''.join(rows)}</table></div>
<p class=note>A mode keeps its promise or breaks it: at-most-once may lose but must never duplicate;
at-least-once must never lose; effectively-once must neither lose nor change money twice. The promises
assume a durable broker: with <code>--broker-persistence none</code> what is lost is a result to show,
not a broken promise ("no promise at stake"). Counting is against the plan: every planned operation id is
known, and the ledger records each application.</p>
</section>"""


def section_contrast(rows: list[dict]) -> str:
    if not rows:
        return ""
    body = []
    for r in rows:
        kept = r.get("kept")
        broken = ", ".join(r.get("broken") or [])
        body.append(
            f"<tr><td class=l><b>{esc(r.get('store'))}</b></td><td class=l>{esc(r.get('fault'))}</td>"
            f"<td class=l><span class={'ok' if kept else 'fail'}>{'kept' if kept else 'broken'}</span>"
            f"{esc(f': {broken}') if broken else ''}</td>"
            f"<td class=r>{_num(r.get('increments'))}/{_num(r.get('planned'))}</td>"
            f"<td class=r>{_num(r.get('lost_updates'))}</td><td class=r>{_num(r.get('max_holders_at_once'))}</td>"
            f"<td class=l>{esc(r.get('summary', ''))}<br>"
            f"<span class=dim>{esc(r.get('promise', ''))}</span></td></tr>")
    return f"""
<section id=contrast>
<h2>Shared memory under the same kind of fault</h2>
<div class=scroll><table class=runs><tr><th class=l>lock</th><th class=l>fault</th><th class=l>promise</th>
<th class=r>increments</th><th class=r>lost updates</th><th class=r>holders at once</th>
<th class=l>what happened</th></tr>{''.join(body)}</table></div>
<div class=seeing><h3>What you are seeing</h3><p>{CONTRAST_LESSON}</p></div>
</section>"""


def render_html(doc: dict, charts: dict[str, plots.Chart]) -> str:
    runs = doc["runs"]
    grouped = groups(runs)
    created = doc.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    where = ", ".join(dict.fromkeys(str(r.get("where", "?")) for r in runs))
    broken = sum(1 for r in runs if r.get("kept") is False)
    verdict = (f"<span class=fail>{broken} promise(s) broken</span>" if broken
               else "<span class=ok>every promise at stake held</span>")
    nav = " ".join(f'<a href="#{esc(slug(t))}">{esc(t)}</a>' for t in grouped)
    sections = "".join(section_fault(t, rows, charts[t]) for t, rows in grouped.items())
    contrast = doc.get("contrast") or []
    return page(f"taskrace fault lab — {created}", "taskrace fault lab", f"""<p class=sub>{len(runs)} fault runs on the {esc(where)} cluster, {esc(created)}: a fault injected while
planned operations run on real Celery workers, every operation counted against the plan. {verdict}.</p>
<nav><a href="#modes">Modes and settings</a> <a href="#reading">Reading a timeline</a> {nav}
{'<a href="#contrast">Shared memory</a>' if contrast else ''} <a href="#environment">Environment</a></nav>
{section_modes(runs)}
{READING}
{sections}
{section_contrast(contrast)}
{section_environment(doc)}
<p class=note><b>Columns.</b> planned: operations in the plan. applied once / lost / applied twice+: how many
times each planned operation's effect landed. units missing / created: the money of lost operations, and
of the extra applications. redeliveries: deliveries Celery flagged as redelivered. WorkerLostErrors: in the
workers' logs. victim back after s: from the fault to the moment the operation it hit was applied.</p>""")


def write_report(doc: dict, out_dir: str) -> str:
    """Write a timeline chart per fault (PNG + SVG) and index.html into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    charts = write_charts(doc, out_dir)
    return write_page(out_dir, render_html(doc, charts))
