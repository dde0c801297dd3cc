"""The report of ``taskrace network``: two charts and one self-contained HTML page.

    write_report(doc, out_dir) -> path of out_dir/index.html

1. ``cost_vs_rtt``: worker-seconds per task against the added round-trip time, one colour
   per workload, the repeats' median with their min-max, the fitted a + k x RTT dotted.
2. ``scaling``: speedup against workers for local processes and for celery at each of
   its round-trip times, the same work at every n (strong scaling), with the ideal line.

PNG + SVG through taskrace.reporting.plots (matplotlib, Agg, no pyplot); the page embeds the PNGs
and loads nothing, like taskrace.reporting.html_report, whose styles and page writer it shares.
"""
from __future__ import annotations

import os
import statistics
import time

import matplotlib
from matplotlib.ticker import FuncFormatter

from taskrace.netstudy.printing import commands_sentence, measured_sentence, ms, pays_sentences, rate, verdict
from taskrace.reporting import plots
from taskrace.reporting.html_report import esc, figure, page, section_environment, write_page

COST_TITLE = "Cost per task vs round-trip time"
SCALING_TITLE = "Local vs distributed scaling"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f"]
SERIES_STYLE = {"processes": ("#ff7f0e", "s")}  # celery series: greens, darker with RTT
CELERY_GREENS = ["#2ca02c", "#1b6e1b", "#98df8a", "#0b3d0b"]


def _cost_points(doc: dict, name: str) -> list[tuple[float, float, float, float]]:
    """(measured RTT ms, median, min, max) of the workload's cost per call, seconds, per
    RTT asked for."""
    by: dict[float, list[dict]] = {}
    for s in doc["samples"]:
        if s["part"] == "cost" and s["workload"] == name:
            by.setdefault(s["rtt_ms"], []).append(s)
    out = []
    for _, mine in sorted(by.items()):
        v = [s["cost_s"] for s in mine]
        out.append((statistics.mean(s["rtt_measured_ms"] for s in mine), statistics.median(v), min(v), max(v)))
    return out


def plot_cost(doc: dict):
    fits = doc.get("fits") or {}
    if not fits:
        return "no workload was measured"
    top = max([s["rtt_measured_ms"] for s in doc["samples"] if s["part"] == "cost"] + [1.0])
    with matplotlib.rc_context(plots.STYLE):
        fig = plots.new_figure(6.0)
        ax = fig.add_subplot(1, 1, 1)
        for i, (name, f) in enumerate(fits.items()):
            c = PALETTE[i % len(PALETTE)]
            pts = _cost_points(doc, name)
            label = name if f["k"] is None else f"{name}: {ms(f['a_s'])} ms + {f['k']:.2f} × RTT"
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                        color=c, marker="o", ms=6, ls="none", capsize=4, elinewidth=1.2, label=label, zorder=3)
            if f["k"] is not None:
                grid = [top * j / 60 for j in range(61)]
                line = [(x, f["a_s"] + f["k"] * x / 1e3) for x in grid]
                line = [(x, y) for x, y in line if y > 0]
                ax.plot([x for x, _ in line], [y for _, y in line], color=c, ls=":", lw=1.8, zorder=2)
        plots.log_time_axis(ax)
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_xlabel("round-trip time added between workers and Redis, measured (ms; 0 = loopback, no proxy)")
        ax.set_ylabel("cost per task: workers × wall ÷ tasks (per call when chunked)")
        ax.set_xlim(left=-0.02 * top)
        ax.set_title(f"{COST_TITLE}: celery -n {doc['settings']['workers']}, median and min–max of "
                     f"{doc['settings']['repeat']}, fit a + k × RTT dotted")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _minor_label(value: float, _pos=None) -> str:
    """Label the 2x and 5x minor ticks of a log time axis (a short range has few majors)."""
    mantissa = value / 10 ** int(f"{value:e}".split("e")[1])
    return plots.human_seconds(value) if round(mantissa, 6) in (2.0, 5.0) else ""


def _series_style(label: str, index: int) -> tuple[str, str]:
    if label in SERIES_STYLE:
        return SERIES_STYLE[label]
    return CELERY_GREENS[index % len(CELERY_GREENS)], "o"


def plot_scaling(doc: dict):
    sc = doc.get("scaling") or {}
    if not sc or not sc.get("series"):
        return "the scaling part was not run (--no-scaling)"
    counts = sorted({int(n) for s in sc["series"].values() for n in s})
    if len(counts) < 2:
        return f"only one worker count was measured (n = {counts[0]}): no curve to draw"
    xmax = max(counts)
    with matplotlib.rc_context(plots.STYLE):
        fig = plots.new_figure(5.2)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot([1, xmax], [1, xmax], color="#bbbbbb", lw=2.5, zorder=1, label="ideal: speedup = n")
        celery = 0
        labels = list(sc["series"])
        for i, label in enumerate(labels):
            colour, marker = _series_style(label, celery)
            celery += label != "processes"
            pts = sorted((int(n), s) for n, s in sc["series"][label].items())
            off = (i - (len(labels) - 1) / 2) * 0.025  # apart, yet on their n
            ax.errorbar([n + off for n, _ in pts], [s["median"] for _, s in pts],
                        yerr=[[s["median"] - s["min"] for _, s in pts], [s["max"] - s["median"] for _, s in pts]],
                        color=colour, marker=marker, ms=7, lw=1.8, capsize=4, zorder=3,
                        label=label + (f" ({sc['rtt_measured_ms'][label]:.1f} measured)"
                                       if label in sc.get("rtt_measured_ms", {}) else ""))
        ax.set_xticks(counts)
        ax.set_xlabel("workers n (local: processes; distributed: celery workers through the proxy)")
        ax.set_ylabel("speedup = sequential wall ÷ wall")
        ax.set_title(f"{SCALING_TITLE}: strong scaling, the same {sc['tasks']} power-io tasks "
                     f"({doc['settings']['scaling']['sleep_s'] * 1e3:g} ms sleep each) at every n")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", frameon=False)
    return fig


def write_charts(doc: dict, out_dir: str) -> dict[str, plots.Chart]:
    os.makedirs(out_dir, exist_ok=True)
    charts = {}
    for name, title, plot in (("cost_vs_rtt", COST_TITLE, plot_cost), ("scaling", SCALING_TITLE, plot_scaling)):
        fig = plot(doc)
        charts[name] = (plots.Chart(name, title, skipped=fig) if isinstance(fig, str)
                        else plots.save(fig, out_dir, name, title))
    return charts


# --- the page -------------------------------------------------------------------------------

def explain_cost(doc: dict) -> str:
    fits = doc.get("fits") or {}
    noop = fits.get("noop") or {}
    counted = (noop.get("counted") or {}).get("worker_round_trips")
    lines = ["<p>Each point is what one task cost the workers: <i>n</i> × wall ÷ tasks, in worker-seconds "
             "(for chunked workloads, per call). The x axis is the round-trip time the proxy adds between "
             "the workers and Redis, as measured (PING through the proxy less PING direct: its own hop "
             "and the machine's timer slack add a little to the delay asked for); the harness talks to Redis "
             "directly, so only the workers pay it. "
             "A worker that waits, one after the other, for <i>k</i> round trips per task pays "
             "<i>a</i> + <i>k</i> × RTT: the dotted lines are that model fitted to the points (least squares "
             "on the relative error), and <b><i>k</i> is the number of round trips per task</b> that the "
             "workers could not overlap with anything else. On a log axis a straight line bends: the flat "
             "start is <i>a</i>, the CPU cost of a task on loopback; the steep end is <i>k</i>.</p>"]
    if noop.get("k") is not None:
        text = (f"<p>Plain no-op tasks: <i>k</i> = {noop['k']:.2f}. ")
        if counted:
            text += (f"Counted in Redis, a worker makes {counted:g} round trips per message (BRPOP to fetch "
                     f"it; MULTI/EXEC noting it unacknowledged; MULTI/EXEC acknowledging it; a GET checking for "
                     f"an earlier result; MULTI/EXEC storing the result). They partly overlap, so <i>k</i> is "
                     f"less: by kombu's code the main process notes a message unacknowledged right after its "
                     f"BRPOP, but acknowledges it on a second connection while its next BRPOP is already out, "
                     f"and the pool child's GET and store run beside the main process's next fetch. ")
        text += ("Chunked tasks pay the same round trips once per message, so per call <i>k</i> falls with the "
                 "chunk size; prefetching lets a worker fetch the next messages while it runs one.</p>")
        lines.append(text)
    lines.append("<p>" + " ".join(esc(s) for s in pays_sentences(doc)) + "</p>")
    return "".join(lines)


def explain_scaling(doc: dict) -> str:
    sc = doc.get("scaling") or {}
    if not sc:
        return "<p>Not measured.</p>"
    return (f"<p>The same {sc['tasks']} power-io tasks at every <i>n</i> (strong scaling: the work does not "
            f"grow with <i>n</i>, and every point has at least <i>n</i> tasks, so no worker idles for want of "
            f"work). Speedup = the sequential tier's wall ({sc['baseline_s']:.2f} s, median) ÷ each run's wall; "
            f"the grey line is ideal. The tasks sleep, so they overlap on any number of cores: what keeps a "
            f"series under the line is overhead per task. Local processes pay a pipe per task; celery on "
            f"loopback pays the broker's round trips; celery over a network pays them × the round-trip time "
            f"(the first chart's <i>k</i>), on every task, however many workers share the work: the gap "
            f"between the celery series is the network.</p>{_at_largest(sc)}")


def _at_largest(sc: dict) -> str:
    n = max(int(k) for s in sc["series"].values() for k in s)
    parts = [f"{esc(label)} {s[str(n)]['median']:.2f}" for label, s in sc["series"].items() if str(n) in s]
    return f"<p>At <i>n</i> = {n}, median speedups: {'; '.join(parts)} (ideal {n}).</p>"


def _fits_table(doc: dict) -> str:
    rows = []
    for name, f in doc["fits"].items():
        counted = (f.get("counted") or {}).get("worker_round_trips")
        k = "–" if f["k"] is None else f"{f['k']:.2f}"
        per_msg = "–" if f["k"] is None else f"{f['k_per_message']:.2f}"
        rows.append(f"<tr><td>{esc(name)}</td><td class=r>{ms(f['a_s'])}</td><td class=r>{k}</td>"
                    f"<td class=r>{per_msg}</td><td class=r>{'–' if counted is None else f'{counted:g}'}</td></tr>")
    return ("<table class=runs><tr><th>workload</th><th class=r>a ms</th><th class=r>k: round trips per task</th>"
            "<th class=r>k per message</th><th class=r>counted per message</th></tr>" + "".join(rows) + "</table>")


def _checks_table(doc: dict) -> str:
    rows = []
    for name, f in doc["fits"].items():
        checks = list(f.get("checks", []))
        loo = f.get("leave_one_out")
        for c in checks + ([dict(loo, loo=True)] if loo else []):
            t = c["tasks_per_s"]
            css = "dim" if c["within"] is None else "ok" if c["within"] else "unsafe"
            what = f"{c['rtt_ms']:g} ({c['rtt_measured_ms']:.2f})" + (" left out" if c.get("loo") else "")
            rows.append(f"<tr><td>{esc(name)}</td><td class=r>{what}</td><td class=r>{rate(t['median'])}</td>"
                        f"<td class=r>{rate(t['min'])}..{rate(t['max'])}</td>"
                        f"<td class=r>{rate(c['predicted_tasks_per_s'])}</td>"
                        f"<td class={css}>{esc(verdict(c))}</td></tr>")
    return ("<div class=scroll><table class=runs><tr><th>workload</th><th class=r>RTT ms set (measured)</th>"
            "<th class=r>tasks/s</th><th class=r>min..max</th><th class=r>fit predicts</th><th>within?</th></tr>"
            + "".join(rows) + "</table></div>")


def render_html(doc: dict, charts: dict[str, plots.Chart]) -> str:
    created = doc.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    s = doc["settings"]
    commands = commands_sentence(doc)
    return page(f"taskrace network — {created}", "taskrace network: what a task costs over a network",
                f"""<p class=sub>{len(doc['samples'])} timed batches, {esc(created)}: celery -n {s['workers']} against an embedded
Redis, round-trip times {esc(', '.join(f'{r:g}' for r in s['rtts_ms']))} ms added by a proxy between workers
and Redis, each point {s['repeat']} times.</p>
<nav><a href="#cost_vs_rtt">{COST_TITLE}</a> <a href="#fits">Fits</a> <a href="#scaling">{SCALING_TITLE}</a>
<a href="#environment">Environment</a></nav>
<section id=cost_vs_rtt><h2>{COST_TITLE}</h2>{figure(charts['cost_vs_rtt'])}
<div class=seeing><h3>What you are seeing</h3>{explain_cost(doc)}</div></section>
<section id=fits><h2>Fits</h2>{_fits_table(doc)}
<p class=note>{esc(measured_sentence(doc) or '')}</p>
<p class=note>{esc(commands or '')}</p>
<p class=note>Measured tasks/s (median, min..max of the repeats) against what the fit predicts; the
"left out" rows come from a fit made without that round-trip time.</p>{_checks_table(doc)}</section>
<section id=scaling><h2>{SCALING_TITLE}</h2>{figure(charts['scaling'])}
<div class=seeing><h3>What you are seeing</h3>{explain_scaling(doc)}</div></section>
{section_environment(doc)}""")


def write_report(doc: dict, out_dir: str) -> str:
    """Both charts (PNG + SVG) and index.html in ``out_dir``; returns the page's path."""
    os.makedirs(out_dir, exist_ok=True)
    return write_page(out_dir, render_html(doc, write_charts(doc, out_dir)))
