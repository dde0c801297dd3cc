"""One self-contained HTML page from a results document: the environment, the main table
(the terminal's columns), every chart (PNG embedded as base64, SVG written beside it) and,
under each chart, a short "what you are seeing" text for someone learning the subject.

    write_report(doc, out_dir) -> path of out_dir/index.html

The page loads nothing from anywhere: inline CSS, images as data: URIs, no scripts.
"""
from __future__ import annotations

import base64
import html
import json
import os
import time

from taskrace.measuring.capacity import figures as capacity_figures
from taskrace.reporting import plots
from taskrace.reporting.columns import COLUMNS, Row, seconds
from taskrace.reporting.report import panels, rows_of, series_key

FILENAME = "index.html"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


# --- small readers ---------------------------------------------------------------------------

def _fmt(value, spec: str, none: str = "–") -> str:
    if value is None:
        return none
    text = format(value, spec)
    return text[1:] if text.startswith("-") and not text.strip("-0.%×,") else text  # no "-0.00"


def _labeller(runs: list[dict]):
    """run -> its series label: scenario, strategy, and the options a sweep varies."""
    labels = panels(runs)
    return lambda run: labels[series_key(run)]


def _summaries() -> tuple[dict, dict]:
    """One-line descriptions of the scenarios and tiers, when their registries import."""
    scen, tiers = {}, {}
    try:
        from scenarios import SCENARIOS, get_scenario

        for name in SCENARIOS:
            scen[name] = get_scenario(name).summary
    except Exception:  # a report must not fail because a registry does
        pass
    try:
        from workers import TIERS, get_tier

        for name in TIERS:
            try:
                tiers[name] = get_tier(name).summary
            except Exception:
                pass
    except Exception:
        pass
    return scen, tiers


def _repeat_counts(runs: list[dict]) -> tuple[set, set]:
    return ({r.get("repeat") or (r.get("wall") or {}).get("n") for r in runs} - {None},
            {r.get("warmup") for r in runs} - {None})


# --- sections --------------------------------------------------------------------------------

HIDDEN_SETTINGS = ("workers", "nodes_up", "queue", "extra_actor_workers")  # vary per point, or noise


def section_overview(doc: dict) -> str:
    runs = doc["runs"]
    scen_text, tier_text = _summaries()
    backends = plots.backends_in(runs)
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    strategies = list(dict.fromkeys(r["strategy"] for r in runs if r.get("strategy")))
    counts = plots.worker_counts(runs)
    repeats, warmups = _repeat_counts(runs)
    rows = []
    for b in backends:
        desc = next((r.get("tier") for r in runs if r["backend"] == b and r.get("tier")), {}) or {}
        settings = ", ".join(f"{k}={v}" for k, v in desc.items()
                             if k not in HIDDEN_SETTINGS and v not in (None, False, [], ""))
        rows.append(f"<tr><td><b>{esc(b)}</b></td><td>{esc(tier_text.get(b, ''))}</td>"
                    f"<td class=dim>{esc(settings) or '–'}</td></tr>")
    srows = [f"<tr><td><b>{esc(s)}</b></td><td>{esc(scen_text.get(s, ''))}</td>"
             f"<td class=dim>{esc(_params_text(runs, s))}</td></tr>" for s in scenarios]
    if repeats:
        rep = f"each point is the median of {'/'.join(map(str, sorted(repeats)))} measured run(s)"
        rep += (f", after {'/'.join(map(str, sorted(warmups)))} discarded warm-up run(s)" if warmups - {0}
                else ", without warm-up runs")
    else:
        rep = "single runs"
    return f"""
<section id=overview>
<h2>What was run</h2>
<p>{len(runs)} points: <b>tiers</b> {", ".join(f"<code>{esc(b)}</code>" for b in backends)};
<b>scenarios</b> {", ".join(f"<code>{esc(s)}</code>" for s in scenarios)}{
  f"; <b>bank strategies</b> {', '.join(f'<code>{esc(s)}</code>' for s in strategies)}" if strategies else ""};
<b>workers</b> {"n = " + ", ".join(map(str, counts)) if counts else "–"}{
  " (sequential: 1)" if "sequential" in backends else ""}; {esc(rep)}.</p>
<div class=cols>
<table class=plain><caption>Tiers (backends)</caption><tr><th>tier</th><th>what it is</th><th>settings</th></tr>
{"".join(rows)}</table>
<table class=plain><caption>Scenarios</caption><tr><th>scenario</th><th>what it does</th><th>parameters</th></tr>
{"".join(srows)}</table>
</div>
</section>"""


def _params_text(runs: list[dict], scenario: str) -> str:
    params = [r.get("params") or {} for r in runs if r["scenario"] == scenario]
    keys = sorted({k for p in params for k in p if k != "strategy"})
    parts = []
    for k in keys:
        values = list(dict.fromkeys(json.dumps(p.get(k)) for p in params))
        parts.append(f"{k}={'/'.join(v.strip(chr(34)) for v in values)}")
    return ", ".join(parts)


def section_environment(doc: dict) -> str:
    env = doc.get("environment") or {}
    gil = env.get("gil_enabled")
    items = [
        ("created", doc.get("created")),
        ("Python", f"{env.get('implementation', '')} {env.get('python', '')}".strip() or None),
        ("GIL", None if gil is None else ("enabled: one thread runs Python bytecode at a time" if gil
                                          else "disabled (free-threaded build)")),
        ("CPU cores", None if env.get("cpu_count") is None else
         f"{env.get('cpu_count')} (usable by this process: {env.get('cpus_usable')})"),
        ("CPU capacity", _capacity_text(env)),
        ("platform", env.get("platform")),
        ("machine", env.get("machine")),
        ("build", " ".join(str(x) for x in (env.get("build"), env.get("compiler")) if x) or None),
        ("default start method", env.get("default_start_method")),
        ("packages", ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v) or None),
        ("clock", env.get("clock")),
    ]
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items if v not in (None, ""))
    return f"""
<section id=environment>
<h2>Environment</h2>
<dl class=env>{body}</dl>
</section>"""


CSS_ALIGN = {"left": "l", "right": "r", "center": "c"}


def _cell(column, row: Row) -> str:
    """One cell of the page's table: the column's text, with a CSS class for a status
    and, under the median wall time, the min-max of the repeats."""
    value = column.get(row)
    if value is None:
        return "–"
    text = esc(column.fmt(value))
    status = column.status(row) if column.status else None
    if status:
        text = f"<span class={status}>{text}</span>"
    w = row.record.get("wall") or {}
    if column.key == "wall_s" and w.get("n", 0) > 1 and w.get("min") is not None:
        text += f"<br><span class=dim>{seconds(w['min'])}–{seconds(w['max'])}</span>"
    return text


def section_table(doc: dict) -> str:
    """The terminal table's columns, all of them (taskrace.reporting.columns); wall time also shows
    the min-max of the repeats."""
    rows = rows_of(doc["runs"])
    body = "".join("<tr>" + "".join(f"<td class={CSS_ALIGN[c.justify]}>{_cell(c, row)}</td>" for c in COLUMNS)
                   + "</tr>" for row in rows)
    head = "".join(f"<th class={CSS_ALIGN[c.justify]}>{esc(c.header)}</th>" for c in COLUMNS)
    return f"""
<section id=table>
<h2>All points</h2>
<p class=note>The terminal's table. <b>wall s</b> is the median of the repeats, with their min–max
below it; <b>speedup</b> = sequential wall ÷ this wall; <b>eff.</b> = speedup ÷ n; <b>CPU %</b> is for
the whole process tree (100 % = one core busy); <b>= seq</b> says whether every repeat's answer matched
the sequential one (– for strategies that are unsafe on purpose). A yellow verdict is an unsafe strategy
doing what it is there to show; red is a real failure.</p>
<div class=scroll><table class=runs><tr>{head}</tr>{body}</table></div>
{_executor_notes(doc)}
</section>"""


def _executor_notes(doc: dict) -> str:
    """Points whose tasks ran on more executors than n (not counting actor scenarios,
    which start one executor per actor by design): a warning that n is not what it says."""
    runs = doc["runs"]
    actor_scenarios = {r["scenario"] for r in runs
                       if any("/actor-" in name for name in (r.get("nodes") or {}))}
    notes = []
    label = _labeller(runs)
    for r in runs:
        nodes = r.get("nodes") or {}
        if r["scenario"] in actor_scenarios or r["backend"] == "sequential" or len(nodes) <= r["workers"]:
            continue
        names = ", ".join(n.split("@")[0].rsplit("-", 1)[-1] for n in nodes)
        notes.append(f"<li><code>{esc(label(r))}</code> on <code>{esc(r['backend'])}</code> -n {r['workers']}: "
                     f"tasks ran on {len(nodes)} executors ({esc(names)})</li>")
    if not notes:
        return ""
    return ("<div class=warn><b>Check these points:</b> their tasks were spread over more executors than "
            "their worker count, so they measure more parallelism than <i>n</i> says. Their speedup is "
            "flattering."
            f"<ul>{''.join(notes)}</ul></div>")


def figure(chart: plots.Chart) -> str:
    """A chart, inlined (the page stands alone), with where its PNG and SVG files are."""
    if chart.skipped:
        return f"<p class=skipped>No chart: {esc(chart.skipped.rstrip('.'))}.</p>"
    with open(chart.png, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    alt = esc(chart.title)
    svg = os.path.basename(chart.svg)
    return (f'<figure><img src="data:image/png;base64,{data}" width="{chart.width}" height="{chart.height}" '
            f'alt="{alt}"><figcaption>{alt}. Also written as <code>{esc(os.path.basename(chart.png))}</code> and '
            f"<code>{esc(svg)}</code> next to this page.</figcaption></figure>")


# --- the "what you are seeing" texts ----------------------------------------------------------

def _at_largest(runs: list[dict], scenario: str) -> dict[str, dict]:
    n = plots.largest_count(runs)
    return {r["backend"]: r for r in runs if r["scenario"] == scenario and not r.get("strategy")
            and r["backend"] != "sequential" and r["workers"] == n}


def _capacity_text(env: dict) -> str | None:
    cap = env.get("cpu_capacity") or {}
    parts = [f"{c['capacity']:.2f}× one CPU's work {when} the runs" for when, c in cap.items() if isinstance(c, dict)]
    if not parts:
        return None
    return ("; ".join(parts) + f" (all {next(iter(cap.values()))['cpus']} CPUs busy at once; a pure-Python loop, "
            "measured: the most a CPU-bound tier can reach)")


def explain_speedup(doc: dict, chart: plots.Chart) -> str:
    runs = doc["runs"]
    env = doc.get("environment") or {}
    cores = env.get("cpu_count")
    repeats, _ = _repeat_counts(runs)
    n = plots.largest_count(runs)
    if chart.skipped:
        paras = ["<b>Speedup</b> S is the sequential run's wall time divided by a backend's, both medians of "
                 "the repeats: S = 2 means twice as fast as doing the work in one thread. The table above gives "
                 "it for every point; a curve needs at least two worker counts."]
    else:
        paras = [
            "Each panel is one scenario. <b>Speedup</b> S is the sequential run's wall time divided by this "
            "backend's, both medians of the repeats: S = 2 means twice as fast as doing the work in one thread. "
            "Error bars run from the slowest to the fastest repeat (the sequential median held fixed); when "
            "two backends' bars overlap, the difference between them is within the noise. "
            "The thick grey diagonal is the ideal S = n: n workers finishing n times faster."
            + (f" The dashed vertical line marks this machine's {cores} CPU cores: past it, CPU-bound work has "
               "no more cores to run on, so a curve that bends there is the hardware, not the tier." if cores else "")
            + (" The black stars on it are the <b>CPU capacity</b> measured before and after the runs: how "
               "many CPUs' worth of Python the cores really delivered with all of them busy. On a shared "
               "virtual machine that can be well below the core count, and no tier should be expected to pass "
               "it on CPU-bound work (within the measure's own noise of a few percent)." if capacity_figures(doc) else "")
            + " Panels where some point fell below 0.1× use a logarithmic axis, so the overhead-bound points "
            "stay visible.",
        ]
        paras.append(_scaling_text(runs))
    if env.get("gil_enabled", True):
        gil = ("<b>Why threads flatten on <code>power-cpu</code>:</b> CPython's Global Interpreter Lock (GIL) "
               "lets only one thread execute Python bytecode at a time, so two threads doing arithmetic share "
               "one core's worth of Python and S stays near 1 (or below: they also fight over the lock). "
               "Each process has its own interpreter and its own GIL, so <code>processes</code> can use every "
               "core, paying for it with start-up and with pickling arguments and results through pipes. "
               "On <code>power-io</code> the tasks sleep, and a sleeping (or waiting on I/O) thread releases "
               "the GIL, so threads overlap the waits as well as processes do.")
    else:
        gil = ("This Python build runs <b>without the GIL</b> (free-threaded), so threads can execute Python "
               "code on several cores at once: on <code>power-cpu</code> they can scale like processes, "
               "without the pickling.")
    cpu = {b: r for b, r in _at_largest(runs, "power-cpu").items() if r.get("speedup") is not None}
    if cpu and n:
        gil += " In this file, <code>power-cpu</code> at n = %d: %s." % (n, ", ".join(
            f"{esc(b)} S = {_fmt(r.get('speedup'), '.2f')}" for b, r in cpu.items()))
    io = {b: r for b, r in _at_largest(runs, "power-io").items() if r.get("speedup") is not None}
    if io and n:
        gil += " <code>power-io</code> at n = %d: %s." % (n, ", ".join(
            f"{esc(b)} S = {_fmt(r.get('speedup'), '.2f')}" for b, r in io.items()))
    paras.append(gil)
    paras.append(
        "<b>Why a tier stops scaling.</b> Amdahl's law says that if a fraction <i>f</i> of the work cannot "
        "run in parallel, S(n) = 1 / (f + (1 − f)/n), and no number of workers beats 1/f: with f = 0.1 "
        "the ceiling is 10×. "
        + ("" if chart.skipped else "The dotted curves are Amdahl's law fitted to each backend's points "
           "where the model applies: a fixed amount of work (not weak scaling), over the points where every "
           "worker had a task, and from at least two such points with n &gt; 1; each is labelled with its f "
           "(a fit of f ≥ 1 is listed but not drawn), and a series without one says why in its legend. ")
        + "The <b>Karp–Flatt</b> metric e = (1/S − 1/n) / (1 − 1/n) computes the same serial "
        "fraction from a single measured point (in the table below, when there is a sequential baseline). "
        "f or e near 0: the work parallelises; near 1: "
        "it does not parallelise at all; above 1: adding workers makes it <i>slower</i> (overhead outweighs "
        "the work, as for tiny runs like <code>globals</code> and <code>pipeline</code>); below 0: faster "
        "than ideal, which usually means the baseline was noisy or the point had more executors than n. "
        "An e that rises with n means the overhead grows with the workers (communication, contention), "
        "not just a fixed serial part."
        + ("" if chart.skipped else " Amdahl's curve starts at 1× for n = 1 by definition; a measured n = 1 "
        "point far below 1× is the tier's fixed cost per run (start-up of the work, pickling, the broker), "
        "far above 1× means more than one executor was at work (the bank always runs at least two actors; "
        "see the warnings under the table).")
        + (" With only two worker counts a series has one point with n &gt; 1, through which any curve "
           "passes: no fit is drawn, and e says what that point says." if len(plots.worker_counts(runs)) == 2 else "")
        + (f" Points are medians of {'/'.join(map(str, sorted(repeats)))} repeats." if repeats else ""))
    return "".join(f"<p>{p}</p>" for p in paras) + _fits_table(doc)


def _scaling_text(runs: list[dict]) -> str:
    """How each panel's work met its workers (compare --scaling), in this file's terms."""
    modes = {(r.get("scaling") or {}).get("mode") for r in runs if r["backend"] != "sequential"}
    text = ("<b>Which scaling.</b> Each panel's subtitle says it. <i>Same work at every n</i> (strong "
            "scaling): the tasks are the same at every point, and compare raises a task count you did not "
            "set to the largest n, so that no worker waits for want of a task. ")
    if "as-given" in modes:
        text += ("<i>As given</i>: the options as they were set, whatever n (and for scenarios whose "
                 "actors -n counts). ")
    if "weak" in modes:
        text += ("<i>Work grows with n</i> (weak scaling): the point at n runs n times the base tasks, and its "
                 "<b>scaled speedup</b> (Gustafson's) is n × the sequential time of the base work ÷ its own "
                 "time, the sequential run being measured at the base work only: S = n means n workers did "
                 "n times the work in the time one took for the base. No Amdahl curve is fitted there (it "
                 "is a law about a fixed amount of work); the grey diagonal is Gustafson's ideal too. ")
    if any((r.get("scaling") or {}).get("starved") for r in runs):
        text += ("<b>Hollow points are task-starved</b>: more workers than tasks, so some sat idle and the "
                 "speedup stops at the task count whatever the tier; they are left out of every fit. ")
    return text.rstrip()


def _fits_table(doc: dict) -> str:
    runs = doc["runs"]
    labels = panels(runs)
    fits = plots.fits_by_series(doc)
    skips = plots.fit_skips_by_series(doc)
    rows = []
    for key, label in labels.items():
        for b in plots.backends_in(runs):
            if b == "sequential":
                continue
            pts = sorted((r["workers"], r.get("speedup"), r.get("karp_flatt")) for r in runs
                         if series_key(r) == key and r["backend"] == b)
            if not any(s is not None for _, s, _ in pts):
                continue
            f = fits.get((*key, b))
            ceiling = "–" if f is None or f <= 0 else (f"{1 / f:.1f}×" if f < 1 else "none (f ≥ 1)")
            if (*key, b) in skips:
                ceiling = f"no fit: {esc(skips[(*key, b)].split(':')[0])}"
            cells = "; ".join(f"n={n}: S {_fmt(s, '.2f')}, e {_fmt(e, '.2f')}" for n, s, e in pts)
            rows.append(f"<tr><td>{esc(label)}</td><td>{esc(b)}</td><td>{cells}</td>"
                        f"<td class=r>{_fmt(f, '.3f')}</td><td class=r>{ceiling}</td></tr>")
    if not rows:
        return ""
    return ("<details open><summary>Speedup, Karp–Flatt e and Amdahl f per scenario and backend</summary>"
            "<div class=scroll><table class=runs><tr><th class=l>scenario</th><th class=l>backend</th>"
            "<th class=l>points (S = speedup, e = Karp–Flatt)</th><th class=r>Amdahl f</th>"
            "<th class=r>ceiling 1/f</th></tr>" + "".join(rows) + "</table></div></details>")


def explain_wall(doc: dict, chart: plots.Chart) -> str:
    runs = doc["runs"]
    n = plots.largest_count(runs)
    labels = panels(runs)
    paras = [
        "Bars are the median wall time of a whole scenario run, in seconds: from the first task submitted "
        "to the last result back, with the tier already started (its start-up is not included). "
        + (f"Every concurrent backend is shown at n = {n}, the largest worker count measured"
           + (", next to <code>sequential</code> (n = 1) as the reference. "
              if any(r["backend"] == "sequential" for r in runs) else ". ") if n else "")
        + "The whiskers span the fastest to the slowest repeat; if two whiskers overlap, do not trust the "
        "order of the bars. A logarithmic axis, used when the times span more than a factor of 30, turns "
        "equal ratios into equal steps: the distance between 1 ms and 10 ms is the distance between 1 s "
        "and 10 s.",
        "Tiny scenarios are where the fixed cost of each tier shows. A thread pool hands a task over "
        "through memory; a process pool pickles it through a pipe; Celery serialises it to JSON, pushes "
        "it to Redis, and a worker in another process picks it up and writes the result back to Redis. "
        "When the work per task is microseconds, that fixed cost is the whole bar.",
    ]
    best = []
    for key, label in labels.items():
        pts = [r for r in runs if series_key(r) == key and (r["backend"] == "sequential" or r["workers"] == n)]
        if len(pts) > 1:
            fastest = min(pts, key=lambda r: r["wall_s"] or float("inf"))
            took = plots.human_seconds(float(format(fastest["wall_s"], ".3g")))
            best.append(f"{esc(label)}: <b>{esc(fastest['backend'])}</b> ({took})")
    if best:
        paras.append("Fastest here: " + "; ".join(best) + ".")
    return "".join(f"<p>{p}</p>" for p in paras)


def explain_latency(doc: dict, chart: plots.Chart) -> str:
    runs = doc["runs"]
    backends = plots.backends_in(runs)
    paras = [
        "Every task is stamped four times on one monotonic clock: when the caller <i>submitted</i> it, "
        "when a worker <i>started</i> it, when it <i>finished</i>, and when the caller <i>saw</i> the "
        "result. <b>Queue wait</b> = started − submitted: time spent handing the task over and waiting in "
        "line. <b>Run</b> = finished − started: the work itself, the same function on every tier. "
        "<b>Return</b> = seen − finished: getting the result back to the caller. The bar is the median "
        "task (p50), the black tick the 95th percentile (p95: one task in twenty is slower). The y axis is "
        "logarithmic (each grid line is ten times the one below: 1 µs, 10 µs, ... 1 s), so a bar one line "
        "higher took ten times as long; anything under 1 µs is drawn at 1 µs.",
        "Queue wait also counts waiting for a free worker: with more tasks than workers, the later tasks "
        "wait for the earlier ones to finish, on every tier (compare <code>threads</code> at the same n to "
        "see how much of the wait is just that).",
    ]
    if "celery" in backends:
        text = ("<b>Celery is where the broker shows.</b> Its queue wait includes serialising the task, the "
                "round trip through Redis and a worker fetching it; its return includes the worker writing "
                "the result to Redis and the caller fetching it. That is typically milliseconds per task, "
                "against microseconds for a thread pool, so a broker pays off when each task runs much "
                "longer than that, or when the workers must live on other machines.")
        pairs = []
        for key, label in panels(runs).items():
            n = plots.largest_count(runs)
            got = {r["backend"]: r for r in runs if series_key(r) == key and r["workers"] == n}
            c, t = got.get("celery"), got.get("threads")
            if c and t and (c.get("latency") or {}).get("queue_wait") and (t.get("latency") or {}).get("queue_wait"):
                cq, tq = c["latency"]["queue_wait"]["p50"], t["latency"]["queue_wait"]["p50"]
                cr, tr = (c["latency"].get("return") or {}).get("p50"), (t["latency"].get("return") or {}).get("p50")
                both = cr is not None and tr is not None
                pairs.append(f"{esc(label)}: queue wait {cq * 1e3:.2f} ms vs {tq * 1e3:.2f} ms"
                             + (f", return {cr * 1e3:.2f} ms vs {tr * 1e3:.2f} ms" if both else ""))
        if pairs:
            text += " In this file (celery vs threads, p50, n = %d): %s." % (plots.largest_count(runs),
                                                                              "; ".join(pairs[:4]))
        paras.append(text)
    else:
        paras.append("There are no Celery runs in this file. With <code>--backend celery</code> the broker's "
                     "cost would appear here as extra queue wait and return time per task.")
    return "".join(f"<p>{p}</p>" for p in paras)


def explain_bank(doc: dict, chart: plots.Chart) -> str:
    runs = doc["runs"]
    if chart.skipped:
        return ("<p>The bank scenario moves money between accounts from several actors at once and checks "
                "that the total never changes; run it (<code>--scenario bank</code>) to see which update "
                "strategies keep the books balanced on each tier.</p>")
    paras = [
        "Each trial of the bank scenario starts with a known total and lets several actors move money "
        "between accounts at the same time. The top panel is that trial's <b>drift</b>: the money in the "
        "accounts at the end minus the money that should be there. Above zero, money was created; below "
        "zero, it was lost. The bottom panel counts <b>lost updates</b>: writes computed from a balance "
        "that someone else had already changed. Every dot is one trial of one repeat. The bank runs at least "
        "two actors whatever n is (a race needs two sides), so n = 1 races too.",
        "<b>Why <code>none</code> loses (or creates) money:</b> it reads a balance, waits (the race window), "
        "then writes back balance + delta. If two actors read the same balance, both write, and the second "
        "write silently erases the first: a lost update. Whether the erased update was a deposit or a "
        "withdrawal decides whether money vanishes or appears. <code>lock</code> makes read-modify-write one "
        "step nobody can interleave with; <code>atomic</code> lets the store add in one operation "
        "(a shared Value under its lock, Redis INCRBY); <code>optimistic</code> commits only if the balance "
        "is unchanged since it was read, and retries otherwise (compare-and-set, Redis WATCH/MULTI/EXEC); "
        "<code>queue</code> sends every change to the single owner of the balances, so there is nothing to "
        "race on. Those four sit on the zero line; on <code>sequential</code> even <code>none</code> does, "
        "because nothing runs at the same time.",
    ]
    rows = plots.bank_samples(runs)
    facts = []
    for b in plots.backends_in(runs):
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            mine = [r for r in rows if r["backend"] == b and r["strategy"] == strategy]
            bad = [r for r in mine if r["drift"] or r["lost_updates"]]
            if not mine:
                continue
            if strategy == "none" and b != "sequential":
                lost = -sum(min(r["drift"], 0) for r in mine)
                made = sum(max(r["drift"], 0) for r in mine)
                facts.append(f"<code>none</code> on {esc(b)}: {len(bad)}/{len(mine)} trials off, "
                             f"{sum(r['lost_updates'] or 0 for r in mine)} lost updates, "
                             f"{made} created and {lost} lost")
            elif strategy != "none" and bad:
                facts.append(f"<span class=fail><code>{esc(strategy)}</code> on {esc(b)}: {len(bad)}/{len(mine)} "
                             "trials off — a safe strategy should never be</span>")
    if facts:
        paras.append("In this file: " + "; ".join(facts) + ".")
    return "".join(f"<p>{p}</p>" for p in paras)


EXPLAIN = {"speedup": explain_speedup, "wall": explain_wall, "latency": explain_latency, "bank": explain_bank}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d232a;background:#f6f7f9;line-height:1.45}
main{max-width:1260px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:0 0 4px;font-size:28px}h2{margin:36px 0 10px;font-size:21px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
.sub{color:#56606b;margin:0 0 12px}code{background:#f0f2f4;padding:0 3px;border-radius:3px;font-size:92%}
.dim{color:#6b7480}.note{color:#3c4650;font-size:14px}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e6e8eb;vertical-align:top}
th{background:#f0f2f4;text-align:left}.r{text-align:right;font-variant-numeric:tabular-nums}.c{text-align:center}.l{text-align:left}
table.runs tr:nth-child(even) td{background:#fafbfc}table.runs td.r{white-space:nowrap}
.scroll{overflow-x:auto}.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.cols table{flex:1 1 480px}caption{text-align:left;font-weight:600;padding:4px 0}
dl.env{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;font-size:14px}dt{font-weight:600;color:#3c4650}dd{margin:0}
.ok{color:#1a7f37;font-weight:600}.unsafe{color:#9a6700;font-weight:600}.fail{color:#cf222e;font-weight:600}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{font-size:12px;color:#6b7480}
.seeing{background:#f3f7fc;border-left:4px solid #4a86c5;padding:6px 16px;margin:10px 0 18px;font-size:15px}
.seeing h3{margin:8px 0 4px;font-size:15px;color:#234e7d}
.skipped{background:#fff8e5;border-left:4px solid #d4a72c;padding:8px 14px}
.warn{background:#fff8e5;border-left:4px solid #d4a72c;padding:8px 14px;margin-top:12px;font-size:14px}
details{margin:10px 0}summary{cursor:pointer;font-weight:600}
"""


def section_nodes(doc: dict) -> str:
    """Per Celery worker node (one container each in the compose lab): what it ran and
    what it used, measured inside the worker itself."""
    rows = []
    label = _labeller(doc["runs"])
    for r in doc["runs"]:
        if r["backend"] != "celery":
            continue
        for node, m in (r.get("node_metrics") or {}).items():
            rows.append(f"<tr><td class=l>{esc(label(r))}</td><td class=r>{r['workers']}</td>"
                        f"<td class=l><code>{esc(node)}</code></td><td class=r>{m['tasks']}</td>"
                        f"<td class=r>{m['cpu_s']:.3f}</td><td class=r>{m['max_rss_bytes'] / 2**20:,.0f}</td></tr>")
    if not rows:
        return ""
    return f"""
<section id=nodes>
<h2>Per worker node</h2>
<p class=note>Each Celery worker node (in the compose lab: each worker container) with the tasks it
ran over all repeats, the CPU seconds those tasks used and the node's peak resident memory, all
measured inside the worker. Uneven task counts show how the broker spread the work; CPU seconds
far below wall time × n show workers waiting (for I/O, for the broker, or for each other).</p>
<div class=scroll><table class=runs><tr><th class=l>point</th><th class=r>n</th><th class=l>node</th>
<th class=r>tasks</th><th class=r>CPU s</th><th class=r>peak RSS MB</th></tr>{"".join(rows)}</table></div>
</section>"""


def render_html(doc: dict, charts: list[plots.Chart]) -> str:
    runs = doc["runs"]
    parts = []
    for chart in charts:
        explain = EXPLAIN.get(chart.name)
        text = explain(doc, chart) if explain else ""
        parts.append(f'<section id="{esc(chart.name)}"><h2>{esc(chart.title)}</h2>{figure(chart)}'
                     f'<div class=seeing><h3>What you are seeing</h3>{text}</div></section>')
    nav = " ".join(f'<a href="#{esc(c.name)}">{esc(c.title)}</a>' for c in charts)
    created = doc.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return page(f"taskrace report — {created}", "taskrace report", f"""<p class=sub>{len(runs)} points from {esc(created)}: the same work on each tier, measured from outside.</p>
<nav><a href="#overview">What was run</a> <a href="#environment">Environment</a>
<a href="#table">All points</a> {nav}</nav>
{section_overview(doc)}
{section_environment(doc)}
{section_table(doc)}
{section_nodes(doc)}
{"".join(parts)}""")


def page(title: str, heading: str, body: str) -> str:
    """One self-contained HTML page: the compare, network and fault-lab reports share its
    head and style. ``title`` and ``heading`` are text (escaped here), ``body`` is HTML."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>{esc(heading)}</h1>
{body}
</main></body></html>
"""


def write_report(doc: dict, out_dir: str) -> str:
    """Write the charts (PNG + SVG) and the HTML page into ``out_dir``; return the page's path."""
    os.makedirs(out_dir, exist_ok=True)
    charts = plots.write_charts(doc, out_dir)
    return write_page(out_dir, render_html(doc, charts))


def write_page(out_dir: str, html: str) -> str:
    """``out_dir``/index.html, written whole or not at all (a reader never sees half a page)."""
    path = os.path.join(out_dir, FILENAME)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, path)
    return path
