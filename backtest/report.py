"""Backtest reports: JSON for machines, one self-contained HTML page (PNG charts inlined) for people."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from backtest.fleet import FleetBacktest
from backtest.records import Frontier, fleet_walks
from backtest.run import SeriesBacktest, alpha_policy, compare
from backtest.simulator import ReplayResult
from backtest.walk_forward import TRANSIENTS_NOTE, WalkForward

COLUMNS = (
    "requests",
    "slo_violations",
    "slo_violation_rate",
    "replica_hours",
    "idle_replica_hours",
    "cold_starts",
    "peak_replicas",
)


def _alpha_runs(run: SeriesBacktest) -> list[tuple[float, str, ReplayResult]]:
    """(alpha, result name, result) of each alpha-sweep run the backtest made."""
    named = [(a, alpha_policy(a)) for a in run.config.alpha_sweep]
    return [(a, name, run.results[name]) for a, name in named if name in run.results]


def alpha_comparisons(run: SeriesBacktest) -> dict[str, dict[str, Any]]:
    """Each alpha-sweep run against the baselines, keyed by its result name, its alpha included."""
    return {name: {"alpha": a, **compare(run.results, name).as_dict()} for a, name, _ in _alpha_runs(run)}


def to_json(runs: list[SeriesBacktest]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "series": {r.series: r.as_dict() for r in runs},
        "comparison": {r.series: compare(r.results).as_dict() for r in runs},
        "notes": {r.series: r.notes for r in runs},
    }
    if any(r.config.alpha_sweep for r in runs):
        doc["alpha_sweep"] = {r.series: alpha_comparisons(r) for r in runs}
    if any(r.walk_forward is not None for r in runs):
        doc["walk_forward"] = {r.series: r.walk_forward.as_dict() for r in runs if r.walk_forward is not None}
    if any(len(r.walk_forwards) > 1 for r in runs):  # the walk at every target, beside the first's
        doc["walk_forwards"] = {
            r.series: {f"{w.target:g}": w.as_dict() for w in r.walk_forwards} for r in runs if r.walk_forwards
        }
    if any(r.frontier is not None for r in runs):
        doc["frontier"] = {r.series: r.frontier.as_dict() for r in runs if r.frontier is not None}
    if sum(bool(r.walk_forwards) for r in runs) > 1:  # many models: the fleet's totals per family
        totals = fleet_walks({r.series: r.walk_forwards for r in runs})
        doc["fleet_walk_forward"] = {f"{t:g}": fams for t, fams in totals.items()}
    return doc


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _charts(run: SeriesBacktest) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    timeline, plane = figures(run)
    out = _png(timeline), _png(plane)
    plt.close(timeline)
    plt.close(plane)
    return out


def _sweep_curve(ax: Any, points: list[tuple[str, ReplayResult]], style: str, color: str, label: str) -> None:
    """One sweep (pool sizes or alphas) as a labelled curve on the cost plane."""
    hours = [r.replica_seconds / 3600 for _, r in points]
    rates = [r.slo_violation_rate for _, r in points]
    ax.plot(hours, rates, style, color=color, label=label)
    for (text, _), h, v in zip(points, hours, rates, strict=True):
        ax.annotate(text, (h, v), fontsize=7)


def figures(run: SeriesBacktest) -> tuple[Any, Any]:
    """Two matplotlib figures: demand against ready capacity over time for each policy, and the
    violation-rate vs replica-hours plane with the static sweep as a curve and every policy as a point."""
    import matplotlib.pyplot as plt

    cfg = run.config
    n = len(run.demand_per_tick)
    stride = max(1, n // 3000)
    t_days = np.arange(0, n, stride) * cfg.tick_s / 86400
    fig, ax = plt.subplots(figsize=(12, 4.2))
    demand = np.asarray(run.demand_per_tick)[::stride] / cfg.capacity_rps
    ax.fill_between(t_days, 0, demand, color="0.8", label="demand (replicas of capacity)")
    shown: list[str] = [p for p in ("reactive", "scheduled", "predictive", "oracle") if p in run.results]
    statics = sorted(k for k in run.results if k.startswith("static-"))
    if statics:
        shown.append(statics[len(statics) // 2])
    for name in shown:
        ax.plot(t_days, np.asarray(run.results[name].ready_per_tick)[::stride], lw=0.8, label=f"{name} ready")
    ax.set_xlabel("days from the end of the warm-up")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.set_title(f"{run.series}: demand against ready capacity")
    timeline = fig

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if statics:
        pts = sorted((int(k.split("-")[1]), run.results[k]) for k in statics)
        _sweep_curve(ax, [(str(k), r) for k, r in pts], "o-", "0.5", "static warm pool sweep")
    sweep = [(f"{a:g}", r) for a, _, r in _alpha_runs(run)]
    if sweep:
        _sweep_curve(ax, sweep, "^--", "tab:red", "predictive alpha sweep")
    for name in ("reactive", "scheduled", "predictive", "oracle"):
        if name in run.results:
            r = run.results[name]
            ax.plot(r.replica_seconds / 3600, r.slo_violation_rate, "s", ms=8, label=name)
    ax.set_xlabel("replica-hours")
    ax.set_ylabel("SLO violation rate")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend(fontsize=8)
    ax.set_title("cost against violations (lower left is better)")
    return timeline, fig


FAMILY_COLORS = {
    "static": "0.45",
    "reactive": "tab:orange",
    "predictive": "tab:red",
    "quantile": "tab:purple",
    "oracle": "tab:green",
    "keepalive": "tab:blue",
    "histogram": "tab:cyan",
    "one-warm": "tab:brown",
}


def frontier_figure(fr: Frontier, ax: Any = None) -> Any:
    """Each family's out-of-sample frontier: realised violation rate (log) against replica-hours, one point
    per SLO target, the targets as vertical lines."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = 0.5 / fr.requests if fr.requests else 1e-7
    for family, points in fr.policies.items():
        xs = [max(p.violation_rate, floor) for p in points]
        ax.plot(
            xs, [p.replica_hours for p in points], "o-", color=FAMILY_COLORS.get(family, "k"), label=family
        )
    for t in fr.targets:
        ax.axvline(1.0 - t, color="k", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("share of requests late (out of sample; none: at half a request)")
    ax.set_ylabel("replica-hours")
    ratio = fr.ratio()
    ax.set_title(
        f"{fr.series}, T_load {fr.t_load_s / 60:g} min: predictive / pool at equal lateness "
        + ("n/a" if ratio is None else f"{ratio:.2f}"),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return fig


def walk_forward_figure(wf: WalkForward) -> Any:
    """Per scored day, each family's violation rate against the target (log scale), and each family's
    replica-hours per day."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for family, walk in wf.policies.items():
        days = np.arange(1, len(walk.settings) + 1)
        color = FAMILY_COLORS.get(family, "k")
        rates = np.maximum(np.asarray(walk.daily_violation_rates), 1e-6)  # a day with none sits on the axis
        top.plot(days, rates, "o-", color=color, label=f"{family} ({walk.violation_rate:.3%} overall)")
        bottom.plot(
            days, walk.daily_replica_hours, "o-", color=color, label=f"{family} {walk.replica_hours:,.0f} h"
        )
    top.axhline(1.0 - wf.target, color="k", ls="--", lw=1, label=f"target: {1 - wf.target:.2%} late")
    top.set_yscale("log")
    top.set_ylabel("share of requests late\n(a day with none: at 1e-6)")
    top.legend(fontsize=8)
    top.set_title(
        f"{wf.series}: walk-forward, each day tuned on the {wf.tune_window_s / 86400:g} days before"
    )
    bottom.set_ylabel("replica-hours per day")
    bottom.set_xlabel("scored day (each tuned on the days before it)")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.legend(fontsize=8)
    return fig


def _walk_forward_html(wf: WalkForward) -> list[str]:
    import matplotlib.pyplot as plt

    ratio = wf.hours_ratio()
    parts = [
        f"<h3>walk-forward at SLO target {wf.target:g}</h3>",
        f"<p><small>{html.escape(TRANSIENTS_NOTE)}</small></p>",
        "<table><tr><th>family</th><th>violation rate</th><th>met</th><th>replica-hours</th>"
        "<th>days on target</th><th>days unreachable</th><th>last setting</th></tr>",
    ]
    for family, w in wf.policies.items():
        parts.append(
            f"<tr><td style='text-align:left'>{family}</td><td>{w.violation_rate:.4%}</td><td>{w.met}</td>"
            f"<td>{w.replica_hours:,.1f}</td><td>{w.days_on_target}/{len(w.settings)}</td>"
            f"<td>{w.unreachable_days}</td><td>{html.escape(w.settings[-1])}</td></tr>"
        )
    parts.append("</table>")
    if ratio is not None:
        parts.append(f"<p>predictive replica-hours / static's: {ratio:.3f}</p>")
    fig = walk_forward_figure(wf)
    parts.append(f"<img alt='walk-forward per day' src='data:image/png;base64,{_png(fig)}'>")
    plt.close(fig)
    return parts


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first index, length) of each run of True in `mask`."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def strip_target(runs: list[SeriesBacktest]) -> float:
    """The target the timeline strips show: the strictest every walked series ran."""
    return min(max(w.target for w in r.walk_forwards) for r in runs if r.walk_forwards)


def tail_strips_figure(runs: list[SeriesBacktest], target: float) -> Any:
    """One timeline strip per walked series, busiest first: when its requests came (the top row, black) and,
    per family, when the walk-forward at `target` kept it warm (one shade per ready replica, up to three),
    with each family's replica-hours over the scored days."""
    import matplotlib.pyplot as plt

    walked = [(r, w) for r in runs for w in r.walk_forwards if w.target == target]
    walked.sort(key=lambda rw: -next(iter(rw[1].policies.values())).requests)
    rows_each = 1 + max(len(w.policies) for _, w in walked)
    fig, axes = plt.subplots(
        len(walked), 1, figsize=(11, 0.35 + 0.32 * rows_each * len(walked)), sharex=True, squeeze=False
    )
    for ax, (run, wf) in zip(axes[:, 0], walked, strict=True):
        per_day = round(86_400 / run.config.tick_s)
        days = len(next(iter(wf.policies.values())).settings)
        first = round((wf.first_day_s - run.start_s) / run.config.tick_s)
        demand = np.asarray(run.demand_per_tick[first : first + days * per_day])
        rows = [(f, w) for f, w in wf.policies.items() if w.ready_per_tick]
        top = len(rows)
        ax.broken_barh([(a / per_day, n / per_day) for a, n in _spans(demand > 0)], (top, 0.8), color="k")
        labels = [f"requests ({round(next(iter(wf.policies.values())).requests):,})"]
        for row, (family, w) in enumerate(rows):
            ready = np.asarray(w.ready_per_tick)
            y = top - 1 - row
            for level in (1, 2, 3):
                spans = [(a / per_day, n / per_day) for a, n in _spans(ready >= level)]
                ax.broken_barh(spans, (y, 0.8), color=FAMILY_COLORS.get(family, "k"), alpha=0.4)
            labels.append(f"{family}: {w.replica_hours:,.0f} h, {w.violation_rate:.2%} late")
        ax.set_yticks([top - i + 0.4 for i in range(top + 1)], labels, fontsize=7)
        ax.set_ylim(-0.1, top + 0.9)
        ax.set_xlim(0, days)
        ax.set_title(run.series, fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("scored day (each day's setting tuned on the days before it)")
    fig.tight_layout()
    return fig


def _tail_html(runs: list[SeriesBacktest]) -> list[str]:
    """Many walked series as one fleet: each family's totals per target and the timeline strips."""
    import matplotlib.pyplot as plt

    parts = ["<h2>the series as one fleet</h2>"]
    for target, families in fleet_walks({r.series: r.walk_forwards for r in runs}).items():
        parts.append(
            f"<h3>walked forward at target {target:g}</h3><table><tr><th>family</th><th>series</th>"
            "<th>requests</th><th>late share</th><th>replica-hours</th><th>vs baseline</th></tr>"
        )
        for family, t in families.items():
            ratio = t.get("hours_vs_one_warm", t.get("hours_vs_static"))
            parts.append(
                f"<tr><td style='text-align:left'>{family}</td><td>{t['series']}</td>"
                f"<td>{t['requests']:,}</td>"
                f"<td>{t['violation_rate']:.3%}</td><td>{t['replica_hours']:,.1f}</td>"
                f"<td>{'-' if ratio is None else f'{ratio:.3f}'}</td></tr>"
            )
        parts.append("</table>")
    if any(w.ready_per_tick for r in runs for wf in r.walk_forwards for w in wf.policies.values()):
        target = strip_target(runs)
        fig = tail_strips_figure(runs, target)
        parts.append(
            f"<h3>when each family kept each model warm, at target {target:g}, busiest first</h3>"
            "<p><small>black: ticks with requests; shaded: warm replicas (darker: more, up to three)"
            "</small></p>"
            f"<img alt='timeline strips' src='data:image/png;base64,{_png(fig)}'>"
        )
        plt.close(fig)
    return parts


def write_html(runs: list[SeriesBacktest], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    parts = [
        "<!doctype html><meta charset='utf-8'><title>prewarm backtest</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}</style>",
        "<h1>prewarm backtest</h1>",
    ]
    for run in runs:
        cfg = run.config
        parts.append(f"<h2>{html.escape(run.series)}</h2>")
        parts.append(
            f"<p>capacity {cfg.capacity_rps:.3g} req/s per replica, T_load {cfg.t_load_s:g} s, SLO wait "
            f"{cfg.slo_wait_s:g} s, tick {cfg.tick_s} s, warm-up {cfg.warmup_s / 86400:g} days, forecaster "
            f"{html.escape(cfg.model)}</p>"
        )
        parts.append("<table><tr><th>policy</th>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>")
        for name, res in run.results.items():
            d = res.as_dict()
            parts.append(
                f"<tr><td style='text-align:left'>{html.escape(name)}</td>"
                + "".join(f"<td>{d[c]}</td>" for c in COLUMNS)
                + "</tr>"
            )
        parts.append("</table>")
        rows = {"predictive": compare(run.results).as_dict(), **alpha_comparisons(run)}
        for name, cmp in rows.items():
            parts.append(
                f"<p>{html.escape(name)}: "
                + "; ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in cmp.items())
                + "</p>"
            )
        for note in run.notes:
            parts.append(f"<p><small>{html.escape(note)}</small></p>")
        timeline, plane = _charts(run)
        parts.append(f"<img alt='timeline' src='data:image/png;base64,{timeline}'>")
        parts.append(f"<img alt='violations vs replica-hours' src='data:image/png;base64,{plane}'>")
        for wf in run.walk_forwards:
            parts += _walk_forward_html(wf)
        if run.frontier is not None:
            import matplotlib.pyplot as plt

            fig = frontier_figure(run.frontier)
            parts.append("<h3>frontier over the SLO targets (out of sample)</h3>")
            parts.append(f"<img alt='frontier' src='data:image/png;base64,{_png(fig)}'>")
            plt.close(fig)
    if sum(bool(r.walk_forwards) for r in runs) > 1:
        parts += _tail_html(runs)
    Path(path).write_text("\n".join(parts))


def fleet_figure(run: FleetBacktest, policy: str) -> Any:
    """GPUs in use per model over time, stacked, against the budget, for one policy of a fleet replay."""
    import matplotlib.pyplot as plt

    res = run.policies[policy]
    n = len(res.gpus_per_tick)
    stride = max(1, n // 2000)
    t_days = np.arange(0, n, stride) * run.tick_s / 86400
    names = sorted(res.gpus_by_model)
    stacks = [np.asarray(res.gpus_by_model[m])[::stride] for m in names]
    fig, ax = plt.subplots(figsize=(12, 3.6))
    ax.stackplot(t_days, *stacks, labels=names, linewidth=0)
    ax.axhline(run.budget_gpus, color="k", lw=1.2, ls="--", label=f"budget {run.budget_gpus:g} GPUs")
    ax.set_xlabel("days from the shared start")
    ax.set_ylabel("GPUs held")
    ax.set_title(f"{policy}: GPUs per model against the budget")
    ax.legend(loc="upper left", fontsize=7, ncol=4, bbox_to_anchor=(1.0, 1.0))
    return fig


def _fleet_models_table(run: FleetBacktest) -> str:
    """Every model's violation rate under each policy against its own target, ranked by its SLO deficit
    under the fleet stage (else the worst over the policies), worst first. Shaded: target missed; bold:
    worse off than under reactive."""
    ranker = run.policies.get("predictive-fleet")
    pols = list(run.policies)
    models = list(next(iter(run.policies.values())).models)
    models.sort(
        key=lambda m: -(ranker.deficit(m) if ranker else max(r.deficit(m) for r in run.policies.values()))
    )
    worse = {p: run.worse_than_reactive(p) for p in pols}
    head = ["model (by deficit)", "target", *pols]
    rows = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for m in models:
        cells = [f"<td class='l'>{html.escape(m)}</td>", f"<td>{run.policies[pols[0]].target(m):g}</td>"]
        for p in pols:
            res = run.policies[p]
            cls = "worse" if m in worse[p] else ("" if res.met(m) else "miss")
            cells.append(f"<td class='{cls}'>{res.models[m].slo_violation_rate:.3%}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def write_fleet_html(runs: list[FleetBacktest], path: str | Path) -> None:
    """The fleet replay's report: per budget, each policy's fleet figures (violation rate, replica-hours,
    models meeting their targets, the worst model), then every model's violation rate under each policy
    against its own target, ranked by its SLO deficit (worst first), and the GPUs each model held over
    time, stacked against the budget."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    parts = [
        "<!doctype html><meta charset='utf-8'><title>prewarm fleet backtest</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        "td.miss{background:#fde0dc}td.worse{background:#f4b6ae;font-weight:bold}td.l{text-align:left}</style>",
        "<h1>prewarm fleet backtest</h1>",
    ]
    for run in runs:
        parts.append(f"<h2>budget {run.budget_gpus:g} GPUs</h2>")
        docs = {p: r.as_dict() for p, r in run.policies.items()}
        n_models = len(next(iter(run.policies.values())).models)
        head = ["policy", "violation rate", "replica-h", "peak GPUs", "models meeting target", "worst model"]
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
        for p, d in docs.items():
            cells = [
                f"{d['violation_rate']:.3%}",
                f"{d['replica_hours']:,.1f}",
                f"{d['peak_gpus']:g}",
                f"{d['models_meeting_target']} of {n_models}",
                f"{html.escape(d['worst_model'])} ({d['worst_model_violation_rate']:.3%})",
            ]
            parts.append(
                f"<tr><td class='l'>{html.escape(p)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
            )
        parts.append("</table>")
        parts.append(_fleet_models_table(run))
        for note in run.notes:
            parts.append(f"<p><small>{html.escape(note)}</small></p>")
        for p in run.policies:
            fig = fleet_figure(run, p)
            parts.append(
                f"<img alt='GPUs per model, {html.escape(p)}' src='data:image/png;base64,{_png(fig)}'>"
            )
            plt.close(fig)
    Path(path).write_text("\n".join(parts))
