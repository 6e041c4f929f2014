"""How `prewarm backtest` prints its results: the per-series tables, the walk-forward at each target, the
frontier over the targets, and the fleet on each budget (or the JSON of each)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from backtest.batch import FleetReplays
from backtest.records import Frontier, fleet_walks
from backtest.report import alpha_comparisons, to_json
from backtest.run import SeriesBacktest, compare
from backtest.walk_forward import TRANSIENTS_NOTE, WalkForward
from service.cli.common import out


def print_runs(runs: list[SeriesBacktest], as_json: bool, report: Path | None, label: str) -> None:
    if as_json:
        print(json.dumps(to_json(runs), indent=2))
        return
    for r in runs:
        table = Table(title=f"{r.series}: capacity {r.config.capacity_rps:.3g} req/s per replica")
        for col in (
            "policy",
            "requests",
            "violation rate",
            "replica-h",
            "idle replica-h",
            "cold starts",
            "peak",
        ):
            table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=col == "policy")
        for name, res in r.results.items():
            d = res.as_dict()
            table.add_row(
                name,
                f"{d['requests']:,}",
                f"{d['slo_violation_rate']:.5f}",
                f"{d['replica_hours']:,.1f}",
                f"{d['idle_replica_hours']:,.1f}",
                str(d["cold_starts"]),
                str(d["peak_replicas"]),
            )
        out.print(table)
        for k, v in compare(r.results).as_dict().items():
            out.print(f"  {k}: {v}", highlight=False)
        for name, cmp in alpha_comparisons(r).items():
            text = ", ".join(f"{k} {v}" for k, v in cmp.items() if k not in ("alpha", "static_note"))
            out.print(f"  {name}: {text}", highlight=False)
        for wf in r.walk_forwards:
            _print_walk_forward(wf)
        if r.frontier is not None and len(r.frontier.targets) > 1:
            _print_frontier(r.frontier)
    if sum(bool(r.walk_forwards) for r in runs) > 1:
        _print_fleet_walks(runs)
    if report is not None:
        out.print(f"report: {report}", highlight=False)
    out.print(f"source: {label}", highlight=False)


def _print_fleet_walks(runs: list[SeriesBacktest]) -> None:
    """The series as one fleet: each family's hours and late share summed over them, per target."""
    totals = fleet_walks({r.series: r.walk_forwards for r in runs})
    for target, families in totals.items():
        ratio = "vs one-warm" if "one-warm" in families else "vs static"
        table = Table(title=f"the {len(runs)} series as one fleet, walked forward at target {target:g}")
        for col in ("family", "series", "requests", "late share", "replica-h", ratio):
            table.add_column(col, justify="left" if col == "family" else "right")
        for family, t in families.items():
            r = t.get("hours_vs_one_warm", t.get("hours_vs_static"))
            table.add_row(
                family,
                str(t["series"]),
                f"{t['requests']:,}",
                f"{t['violation_rate']:.3%}",
                f"{t['replica_hours']:,.1f}",
                "-" if r is None else f"{r:.3f}",
            )
        out.print(table)


def _print_walk_forward(wf: WalkForward) -> None:
    table = Table(
        title=f"walk-forward at target {wf.target:g}: each day tuned on the {wf.tune_window_s / 86400:g} "
        "days before it"
    )
    for col in ("family", "violation rate", "met", "replica-h", "days on target", "last setting"):
        table.add_column(col, justify="left" if col in ("family", "last setting") else "right")
    for family, w in wf.policies.items():
        table.add_row(
            family,
            f"{w.violation_rate:.5f}",
            "yes" if w.met else "no",
            f"{w.replica_hours:,.1f}",
            f"{w.days_on_target}/{len(w.settings)}",
            w.settings[-1],
        )
    out.print(table)
    ratio = wf.hours_ratio()
    if ratio is not None:
        out.print(f"  predictive replica-hours / static's: {ratio:.3f}", highlight=False)
    out.print(f"  ({TRANSIENTS_NOTE})", highlight=False)


def _print_frontier(fr: Frontier) -> None:
    table = Table(title=f"frontier over targets {', '.join(f'{t:g}' for t in fr.targets)} (out of sample)")
    table.add_column("family", justify="left")
    for t in fr.targets:
        table.add_column(f"{t:g}: late / replica-h", justify="right")
    for family, points in fr.policies.items():
        table.add_row(family, *(f"{p.violation_rate:.3%} / {p.replica_hours:,.0f}" for p in points))
    out.print(table)
    ratio = fr.ratio()
    text = "no overlap" if ratio is None else f"{ratio:.3f}"
    out.print(f"  predictive replica-hours / static's at equal violation rate: {text}", highlight=False)


def print_fleet(fleet: FleetReplays, as_json: bool) -> None:
    if as_json:
        print(json.dumps(fleet.as_dict(), indent=2))
        return
    need = fleet.need_gpus
    for r in fleet.runs:
        table = Table(
            title=f"fleet of {fleet.members} on {r.budget_gpus:g} GPUs ({r.budget_gpus / need:.0%} of the "
            f"p99.9 need, {need:g})"
        )
        cols = ("policy", "violation rate", "replica-h", "peak GPUs", "met target", "worst model", "its rate")
        for col in (*cols, "worse than reactive"):
            table.add_column(
                col, justify="left" if col in ("policy", "worst model", "worse than reactive") else "right"
            )
        for name, res in r.policies.items():
            d = res.as_dict()
            worse = r.worse_than_reactive(name)
            table.add_row(
                name,
                f"{d['violation_rate']:.5f}",
                f"{d['replica_hours']:,.1f}",
                f"{d['peak_gpus']:g}",
                f"{d['models_meeting_target']} of {len(res.models)}",
                d["worst_model"],
                f"{d['worst_model_violation_rate']:.5f}",
                ", ".join(f"{m} ({a:.2%} vs {b:.2%})" for m, (a, b) in worse.items()) or "-",
            )
        out.print(table)
        for note in r.notes:
            out.print(f"  - {note}", highlight=False)
