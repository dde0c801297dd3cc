"""Charts of a results document (matplotlib, Agg, no pyplot).

Every chart is a ``matplotlib.figure.Figure`` of its own, drawn on an Agg canvas and saved
as PNG and SVG; nothing touches pyplot's global figure registry or the global rcParams
(styles are applied inside ``rc_context``). Each ``plot_*`` function returns either a
Figure or a string: the reason there is nothing to draw (one worker count, no bank runs...).

    speedup     speedup vs workers, one panel per scenario (+strategy, +swept option)
    wall        wall time per scenario per backend at the largest worker count
    latency     per-task queue wait / run / return, p50 bars with p95 markers
    bank        the bank's drift (money created / lost) and lost updates per trial
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from taskrace.measuring.capacity import figures as capacity_figures
from taskrace.measuring.stats import amdahl_speedup
from taskrace.reporting.report import panels, series_key
from workers import TIERS

DPI = 100
WIDTH_IN = 12.0  # every chart is 1200 px wide
WIDTH_PX = int(WIDTH_IN * DPI)

KNOWN_BACKENDS = tuple(TIERS)  # the registry's order: a new tier is placed without a list to edit
# The registered tiers' colours, fixed so that a chart reads the same from file to file;
# a tier missing here still gets one of EXTRA_COLORS (picked from its name).
COLORS = {"sequential": "#7f7f7f", "threads": "#1f77b4", "asyncio": "#9467bd", "processes": "#ff7f0e",
          "celery": "#2ca02c"}
EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728"]
PHASES = (("queue_wait", "queue wait", "#9ecae1"), ("run", "run", "#3182bd"), ("return", "return", "#fd8d3c"))
LATENCY_FLOOR_MS = 1e-3  # 1 us: log axes cannot show zero
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True,
    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "taskrace", "figure.facecolor": "white", "savefig.facecolor": "white",
}


@dataclass
class Chart:
    """One chart as written: both files, the PNG's pixel size, or why it was skipped."""
    name: str
    title: str
    png: str | None = None
    svg: str | None = None
    width: int = 0
    height: int = 0
    skipped: str | None = None


# --- reading the document -----------------------------------------------------------------

def backends_in(runs: list[dict]) -> list[str]:
    """Backends in a stable order: the known tiers first, then any other by appearance."""
    seen = list(dict.fromkeys(r["backend"] for r in runs))
    return [b for b in KNOWN_BACKENDS if b in seen] + [b for b in seen if b not in KNOWN_BACKENDS]


def color(backend: str) -> str:
    if backend in COLORS:
        return COLORS[backend]
    return EXTRA_COLORS[sum(map(ord, backend)) % len(EXTRA_COLORS)]


def worker_counts(runs: list[dict]) -> list[int]:
    """Worker counts measured on the concurrent backends."""
    return sorted({r["workers"] for r in runs if r["backend"] != "sequential"})


def baselines(runs: list[dict]) -> dict[tuple, dict]:
    return {series_key(r): r for r in runs if r["backend"] == "sequential"}


def speedup_range(run: dict, base: dict) -> tuple[float, float, float] | None:
    """(median, low, high) speedup of ``run``: the sequential median over this point's
    median, max and min wall time (the spread of the repeats)."""
    if not base or not base.get("wall_s") or not run.get("wall_s"):
        return None
    wall = run.get("wall") or {}
    mid = base["wall_s"] / run["wall_s"]
    lo = base["wall_s"] / wall["max"] if wall.get("max") else mid
    hi = base["wall_s"] / wall["min"] if wall.get("min") else mid
    return mid, min(lo, mid), max(hi, mid)


def fits_by_series(doc: dict) -> dict[tuple, float]:
    out = {}
    for fit in doc.get("fits") or []:
        f = fit.get("amdahl_serial_fraction")
        if f is None:
            continue
        key = (fit["scenario"], json.dumps(fit.get("params") or {}, sort_keys=True), fit["backend"])
        out[key] = f
    return out


def fit_skips_by_series(doc: dict) -> dict[tuple, str]:
    """(scenario, params, backend) -> why the series has no Amdahl fit (taskrace.measuring.sweep)."""
    return {(fit["scenario"], json.dumps(fit.get("params") or {}, sort_keys=True), fit["backend"]):
            fit["amdahl_skipped"] for fit in doc.get("fits") or [] if fit.get("amdahl_skipped")}


def scaling_subtitle(runs: list[dict]) -> str:
    """What a speedup panel's series held fixed or grew (taskrace.measuring.sweep's scaling)."""
    scaling = next((r.get("scaling") for r in runs if r.get("scaling")), None) or {}
    tasks = scaling.get("tasks")
    if scaling.get("mode") == "weak":
        return f"work grows with n ({scaling.get('given')} tasks × n; scaled speedup)"
    counted = f" ({tasks} tasks)" if tasks is not None else ""
    return f"same work at every n{counted}" + (", as given" if scaling.get("mode") == "as-given" else "")


def speedup_word(runs: list[dict], key: tuple) -> str:
    weak = any((r.get("scaling") or {}).get("mode") == "weak" for r in runs if series_key(r) == key)
    return "scaled speedup" if weak else "speedup"


def bank_samples(runs: list[dict]) -> list[dict]:
    """One row per bank trial, from every raw repeat (or the record's verdict if the
    repeats are missing): backend, strategy, workers, drift and lost updates."""
    rows = []
    for r in runs:
        if r["scenario"] != "bank":
            continue
        strategy = r.get("strategy") or (r.get("params") or {}).get("strategy") or "?"
        verdicts = [s.get("verdict") or {} for s in r.get("repeats") or []] or [r["verdict"]]
        for v in verdicts:
            d = v.get("details") or {}
            drifts = d.get("drift_per_trial") or []
            lost = d.get("lost_updates_per_trial") or [None] * len(drifts)
            for drift, lu in zip(drifts, lost):
                rows.append({"backend": r["backend"], "strategy": strategy, "workers": r["workers"],
                             "drift": drift, "lost_updates": lu})
    return rows


def largest_count(runs: list[dict]) -> int | None:
    counts = worker_counts(runs)
    return counts[-1] if counts else None


# --- rendering ------------------------------------------------------------------------------

def new_figure(height_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out_dir: str, name: str, title: str) -> Chart:
    """Write ``name``.png and ``name``.svg; the PNG is exactly figsize x DPI pixels."""
    png, svg = os.path.join(out_dir, f"{name}.png"), os.path.join(out_dir, f"{name}.svg")
    with matplotlib.rc_context(STYLE):
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": "taskrace"})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": "taskrace"})
    w, h = fig.get_size_inches()
    return Chart(name, title, png, svg, int(round(w * DPI)), int(round(h * DPI)))


def human_seconds(value: float, _pos=None) -> str:
    """A tick label for a time in seconds: 100 µs, 2.5 ms, 1 s."""
    if value <= 0:
        return "0"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if value >= scale * 0.999:
            return f"{value / scale:g} {unit}"
    return f"{value:g} s"


def log_time_axis(ax, scale: float = 1.0) -> None:
    """Log y axis whose ticks read as times; ``scale`` converts the plotted unit to seconds."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, pos: human_seconds(v * scale)))


def _grid(n: int, ncols_max: int = 3) -> tuple[int, int]:
    ncols = max(1, min(ncols_max, n))
    return math.ceil(n / ncols), ncols


def _hide_unused(axes, used: int) -> None:
    for ax in axes[used:]:
        ax.set_visible(False)


# --- 1. speedup -----------------------------------------------------------------------------

def plot_speedup(doc: dict) -> Figure | str:
    runs = doc["runs"]
    counts = worker_counts(runs)
    if not any(r["backend"] == "sequential" for r in runs):
        return ("there is no sequential run in this file, so there is no baseline to compute a "
                "speedup against (run compare with the sequential backend)")
    if len(counts) < 2:
        only = f"n = {counts[0]}" if counts else "no concurrent backend"
        return (f"only one worker count was measured ({only}), so there is no speedup curve to draw; "
                "the table gives the speedup at that point. Sweep with e.g. -n 1,2,4 to see one.")
    labels = panels(runs)
    base = baselines(runs)
    fits = fits_by_series(doc)
    skips = fit_skips_by_series(doc)
    cores = (doc.get("environment") or {}).get("cpu_count")
    caps = capacity_figures(doc) if cores else []
    backends = [b for b in backends_in(runs) if b != "sequential"]
    keys = [k for k in labels if k in base and any(series_key(r) == k and r["backend"] != "sequential" for r in runs)]
    if not keys:
        return "no scenario has both a sequential baseline and a concurrent run"
    with matplotlib.rc_context(STYLE):
        fig, axes = panel_grid(len(keys), 3.3)
        xmax = max(counts + [cores or 0])
        any_fit = any_starved = False
        offsets = {b: (i - (len(backends) - 1) / 2) * 0.04 * xmax / 2 for i, b in enumerate(backends)}
        for ax, key in zip(axes, keys):
            top, low = xmax, 1.0
            ax.plot([1, xmax], [1, xmax], color="#bbbbbb", lw=2.5, zorder=1)
            if cores:
                ax.axvline(cores, color="black", lw=1, ls=(0, (5, 4)), zorder=1)
            if caps:  # what the cores really delivered: the ceiling for CPU-bound work at n = cores
                ax.plot([cores] * len(caps), caps, color="black", marker="*", ms=11, lw=1.2, zorder=4)
                top = max(top, max(caps))
            fit_handles, unfitted = [], {}  # unfitted: why not (legend's short form) -> backends
            for b in backends:
                mine = [r for r in runs if series_key(r) == key and r["backend"] == b]
                factor = {r["workers"]: (r.get("scaling") or {}).get("factor", 1) for r in mine}
                pts = sorted((r["workers"], speedup_range(r, base[key])) for r in mine)
                # weak scaling: the scaled speedup, n x T_seq(base work) / T_n (taskrace.measuring.sweep)
                pts = [(n, tuple(factor[n] * v for v in s)) for n, s in pts if s]
                if not pts:
                    continue
                xs = [n + offsets[b] for n, _ in pts]
                mids = [s[0] for _, s in pts]
                yerr = [[s[0] - s[1] for _, s in pts], [s[2] - s[0] for _, s in pts]]
                ax.errorbar(xs, mids, yerr=yerr, color=color(b), marker="o", ms=6, lw=1.8,
                            capsize=4, elinewidth=1.2, zorder=3)
                starved = {r["workers"] for r in mine if (r.get("scaling") or {}).get("starved")}
                if starved:  # hollow: some workers had no task, the point says nothing of the tier
                    ax.plot([x for x, (n, _) in zip(xs, pts) if n in starved],
                            [m for m, (n, _) in zip(mids, pts) if n in starved], ls="none", marker="o",
                            ms=6, mfc="white", mec=color(b), mew=1.6, zorder=4)
                    any_starved = True
                top = max(top, max(s[2] for _, s in pts))
                low = min(low, min(s[1] for _, s in pts))
                f = fits.get((*key, b))
                if f is None:
                    if (*key, b) in skips:
                        unfitted.setdefault(skips[(*key, b)].split(":")[0], []).append(b)
                    continue
                any_fit = True
                if -1 <= f < 1:  # a curve worth drawing; f >= 1 means "slower with every worker"
                    grid = [1 + i * (xmax - 1) / 60 for i in range(61)]
                    (line,) = ax.plot(grid, [amdahl_speedup(f, p) for p in grid], color=color(b), ls=":",
                                      lw=1.8, zorder=2)
                    fit_handles.append((line, f"{b}: Amdahl f = {0.0 if abs(f) < 0.005 else f:.2f}"))
                else:
                    blank = Line2D([], [], color=color(b), ls="none", marker="x", ms=5)
                    fit_handles.append((blank, f"{b}: f = {f:.3g} (≥ 1: more workers, slower)"))
            drawn = [b for b in backends if any(series_key(r) == key and r["backend"] == b for r in runs)]
            for why, which in unfitted.items():  # one line per reason, naming the backends if not all
                blank = Line2D([], [], color=color(which[0]) if len(which) == 1 else "black", ls="none",
                               marker="o", mfc="white", ms=5)
                fit_handles.append((blank, f"no Amdahl fit{'' if which == drawn else ' (' + ', '.join(which) + ')'}"
                                           f": {why}"))
            ax.set_title(f"{labels[key]}\n{scaling_subtitle([r for r in runs if series_key(r) == key])}")
            ax.set_xlabel("workers (n)")
            ax.set_xlim(0.7, xmax + 0.3)
            ax.set_xticks(sorted(set(counts + ([cores] if cores else []))))
            room = 0.06 + 0.1 * len(fit_handles)  # share of the height kept free for the fit legend
            if low < 0.1:  # overhead-bound: a linear axis would flatten everything onto zero
                ax.set_yscale("log")
                bottom = low / 2
                ax.set_ylim(bottom, bottom * (top / bottom) ** (1 / (1 - room)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}×"))
                ax.set_ylabel(f"{speedup_word(runs, key)} vs sequential (×, log)")
            else:
                ax.set_ylim(0, top / (1 - room))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}×"))
                ax.set_ylabel(f"{speedup_word(runs, key)} vs sequential (×)")
            if fit_handles:
                ax.legend([h for h, _ in fit_handles], [t for _, t in fit_handles], loc="upper left",
                          fontsize=8, framealpha=0.9, handlelength=2.2, borderaxespad=0.3)
        _hide_unused(axes, len(keys))
        handles = [Line2D([], [], color=color(b), marker="o", lw=1.8, label=b) for b in backends]
        handles.append(Line2D([], [], color="#bbbbbb", lw=2.5, label="ideal (speedup = n)"))
        if cores:
            handles.append(Line2D([], [], color="black", lw=1, ls=(0, (5, 4)), label=f"{cores} CPU cores"))
        if caps:
            handles.append(Line2D([], [], color="black", marker="*", ms=11, lw=0, label="CPU capacity measured"))
        if any_fit:
            handles.append(Line2D([], [], color="black", ls=":", lw=1.8, label="Amdahl fit (dotted)"))
        if any_starved:
            handles.append(Line2D([], [], color="black", marker="o", mfc="white", lw=0,
                                  label="task-starved (n > tasks)"))
        handles.append(Line2D([], [], color="black", marker="|", ms=10, lw=0, label="min–max of repeats"))
        rows = math.ceil(len(handles) / 7)  # at most 7 a row: 1200 px hold that many
        fig.legend(handles=handles, loc="outside lower center", ncols=math.ceil(len(handles) / rows),
                   frameon=False)
        modes = {(r.get("scaling") or {}).get("mode") for r in runs if r["backend"] != "sequential"}
        how = {"strong": "; strong scaling", "weak": "; weak scaling"}.get(modes.pop() if len(modes) == 1 else "", "")
        fig.suptitle(f"Speedup vs number of workers (median of repeats; higher is better{how})",
                     fontweight="bold", fontsize=13)
    return fig


# --- 2. wall time ------------------------------------------------------------------------------

def panel_grid(panels: int, row_height: float) -> tuple[Figure, list]:
    """A figure with one small panel per scenario, in rows of up to three."""
    nrows, ncols = _grid(panels)
    fig = new_figure(0.9 + row_height * nrows)
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).flat)


def at_largest_n(runs: list[dict], keep=lambda r: True):
    """The runs a per-backend bar chart shows: sequential, and every other backend at the
    largest worker count. Returns (n, panel labels, backends, {(panel, backend): run},
    the panels that have any)."""
    n = largest_count(runs)
    labels = panels(runs)
    backends = backends_in(runs)
    chosen = {(series_key(r), r["backend"]): r for r in runs
              if keep(r) and (r["backend"] == "sequential" or r["workers"] == n)}
    keys = [k for k in labels if any((k, b) in chosen for b in backends)]
    return n, labels, backends, chosen, keys


def plot_wall(doc: dict) -> Figure | str:
    n, labels, backends, chosen, keys = at_largest_n(doc["runs"])
    if not keys:
        return "no runs to draw"
    walls = [v for r in chosen.values() for v in ((r.get("wall") or {}).get("min"), r["wall_s"]) if v]
    log = bool(walls) and max(walls) / max(min(walls), 1e-9) > 30
    with matplotlib.rc_context(STYLE):
        fig = new_figure(6.0)
        ax = fig.subplots()
        width = min(0.8 / len(backends), 0.3)
        for i, b in enumerate(backends):
            xs, ys, lo, hi = [], [], [], []
            for j, k in enumerate(keys):
                r = chosen.get((k, b))
                if not r or not r["wall_s"]:
                    continue
                w = r.get("wall") or {}
                xs.append(j + (i - (len(backends) - 1) / 2) * width)
                ys.append(r["wall_s"])
                lo.append(r["wall_s"] - w.get("min", r["wall_s"]))
                hi.append(w.get("max", r["wall_s"]) - r["wall_s"])
            label = b if b != "sequential" else "sequential (n = 1)"
            ax.bar(xs, ys, width=width * 0.95, color=color(b), label=label, yerr=[lo, hi], capsize=2.5,
                   error_kw={"elinewidth": 1, "ecolor": "#333333"}, zorder=2)
        ax.set_xticks(range(len(keys)), [labels[k] for k in keys], rotation=25, ha="right")
        ax.set_xlim(-0.6, len(keys) - 0.4)
        if log:
            log_time_axis(ax)
            ax.set_ylabel("wall time, median of repeats (log scale)")
        else:
            ax.set_ylabel("wall time, median of repeats (s)")
        ax.set_xlabel("scenario")
        where = f"concurrent backends at n = {n}" if n else "one run per backend"
        ax.set_title(f"Wall time per scenario and backend ({where}; lower is better; whiskers: min–max)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="backend")
        ax.grid(axis="x", visible=False)
    return fig


# --- 3. latency split --------------------------------------------------------------------------

def plot_latency(doc: dict) -> Figure | str:
    n, labels, backends, chosen, keys = at_largest_n(
        doc["runs"], keep=lambda r: any((r.get("latency") or {}).get(p) for p, _, _ in PHASES))
    if not keys:
        return "no run in this file recorded per-task timestamps, so there is no latency split to show"
    with matplotlib.rc_context(STYLE):
        fig, axes = panel_grid(len(keys), 3.2)
        width = 0.26
        for ax, key in zip(axes, keys):
            present = [b for b in backends if (key, b) in chosen]
            for j, b in enumerate(present):
                lat = chosen[(key, b)]["latency"]
                for i, (phase, _, col) in enumerate(PHASES):
                    p = lat.get(phase)
                    if not p:
                        continue
                    x = j + (i - 1) * width
                    p50 = max(p["p50"] * 1e3, LATENCY_FLOOR_MS)
                    p95 = max(p["p95"] * 1e3, LATENCY_FLOOR_MS)
                    ax.bar(x, p50, width=width * 0.95, color=col, zorder=2)
                    ax.plot([x], [p95], marker="_", ms=11, mew=2.2, color="black", zorder=3)
            log_time_axis(ax, 1e-3)
            ax.set_xticks(range(len(present)),
                          [b if b == "sequential" else f"{b}\nn = {n}" for b in present])
            ax.set_xlim(-0.6, len(present) - 0.4)
            ax.set_title(labels[key])
            ax.set_ylabel("time per task (log scale)")
            ax.grid(axis="x", visible=False)
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, LATENCY_FLOOR_MS * 0.7), hi * 1.5)
        _hide_unused(axes, len(keys))
        handles = [Patch(color=col, label=f"{text} (p50)") for _, text, col in PHASES]
        handles.append(Line2D([], [], color="black", marker="_", ms=11, mew=2.2, lw=0, label="p95"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        fig.suptitle("Where a task's time goes: queue wait → run → return (per task, median bar, p95 tick)",
                     fontweight="bold", fontsize=13)
    return fig


# --- 4. bank verdicts --------------------------------------------------------------------------

def plot_bank(doc: dict) -> Figure | str:
    runs = doc["runs"]
    rows = bank_samples(runs)
    if not any(r["scenario"] == "bank" for r in runs):
        return "this file has no bank runs"
    if not rows:
        return "the bank runs in this file carry no per-trial figures"
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    backends = [b for b in backends_in(runs) if any(r["backend"] == b for r in rows)]
    counts = sorted({r["workers"] for r in rows})
    markers = dict(zip(counts, "os^Dv<>p*h"))
    rng = random.Random(0)  # deterministic jitter
    width = 0.8 / max(len(backends), 1)
    with matplotlib.rc_context(STYLE):
        fig = new_figure(8.2)
        ax_drift, ax_lost = fig.subplots(2, 1, sharex=True)
        for ax, field in ((ax_drift, "drift"), (ax_lost, "lost_updates")):
            for s_i, strategy in enumerate(strategies):
                for b_i, b in enumerate(backends):
                    center = s_i + (b_i - (len(backends) - 1) / 2) * width
                    for n in counts:
                        ys = [r[field] for r in rows if r["strategy"] == strategy and r["backend"] == b
                              and r["workers"] == n and r[field] is not None]
                        if not ys:
                            continue
                        xs = [center + rng.uniform(-0.3, 0.3) * width for _ in ys]
                        ax.scatter(xs, ys, color=color(b), marker=markers[n], s=28, alpha=0.8,
                                   edgecolors="white", linewidths=0.5, zorder=3)
            ax.axhline(0, color="black", lw=1, zorder=2)
            for s_i in range(1, len(strategies)):
                ax.axvline(s_i - 0.5, color="#dddddd", lw=1, zorder=1)
            ax.grid(axis="x", visible=False)
        ax_drift.set_ylabel("money per trial\n(+ created, − lost; currency units)")
        ax_drift.set_title("Drift per trial: final total − expected total (0 = the books balance)")
        ax_lost.set_ylabel("lost updates per trial (count)")
        ax_lost.set_title("Lost updates per trial: writes based on a stale read")
        ax_lost.set_xticks(range(len(strategies)), [f"strategy: {s}" for s in strategies])
        ax_lost.set_xlim(-0.6, len(strategies) - 0.4)
        ax_lost.set_xlabel("bank strategy (each dot is one trial of one repeat; colour = backend, shape = workers)")
        for ax in (ax_drift, ax_lost):
            lo, hi = ax.get_ylim()
            span = max(hi - lo, 1)
            ax.set_ylim(min(lo, -0.06 * span), max(hi, 0.06 * span))
        handles = [Line2D([], [], color=color(b), marker="o", lw=0, ms=7, label=b) for b in backends]
        handles += [Line2D([], [], color="#555555", marker=markers[n], lw=0, ms=7, label=f"n = {n}") for n in counts]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        fig.suptitle("Bank verdicts: safe strategies sit on zero, `none` does not", fontweight="bold",
                     fontsize=13)
    return fig


CHARTS = (
    ("speedup", "Speedup vs workers", plot_speedup),
    ("wall", "Wall time per scenario and backend", plot_wall),
    ("latency", "The latency split: queue wait, run, return", plot_latency),
    ("bank", "Bank verdicts per backend and strategy", plot_bank),
)


def write_charts(doc: dict, out_dir: str) -> list[Chart]:
    """Draw every chart of ``doc`` into ``out_dir`` (PNG + SVG); skipped ones say why."""
    os.makedirs(out_dir, exist_ok=True)
    charts = []
    for name, title, plot in CHARTS:
        fig = plot(doc)
        if isinstance(fig, str):
            charts.append(Chart(name, title, skipped=fig))
            continue
        charts.append(save(fig, out_dir, name, title))
    return charts
