"""`prewarm evaluate`: every candidate model and `auto`, scored on rolling origins of each series."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from forecaster.types import quantile_key
from service.cli.common import UsageError, duration_s, guarded, out, progress, shows_progress, split_series
from service.cli.inputs import open_source, pick_series
from service.cli.options import DemoOpt, series_opt

if TYPE_CHECKING:
    from forecaster.rolling_evaluation import SeriesEvaluation


@guarded()
def evaluate(
    trace: Annotated[Path | None, typer.Argument(help="CSV or CSV.gz trace.")] = None,
    series: Annotated[list[str] | None, series_opt("evaluate")] = None,
    horizon: Annotated[str, typer.Option(help="Forecast horizon of each window, e.g. 1h.")] = "1h",
    windows: Annotated[
        int, typer.Option(min=1, max=10_000, help="Number of evaluation windows (the most recent).")
    ] = 48,
    models: Annotated[
        str, typer.Option(help="Candidate models, comma-separated (auto chooses among them).")
    ] = "profile,holt_winters,mstl,prophet,seasonal_naive_daily,seasonal_naive_weekly",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    demo: DemoOpt = False,
) -> None:
    """Rolling-origin evaluation of every model and of `auto` (MASE, sMAPE, pinball loss, coverage, and for
    "any request in a step" the Brier score and the worst decile's calibration gap)."""
    from forecaster.models import MODELS
    from forecaster.rolling_evaluation import evaluate_series, evaluation_cost

    horizon_s = duration_s(horizon, "--horizon")
    cands = [c.strip() for c in models.split(",") if c.strip()]
    unknown = [c for c in cands if c not in MODELS]
    if unknown or not cands:
        raise UsageError(
            f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}"
        )
    names = split_series(series)
    source, label = open_source(trace, demo, set(names) if names else None)
    chosen = pick_series(source, names)
    total = sum(evaluation_cost(s, horizon_s=horizon_s, n_windows=windows, candidates=cands) for s in chosen)
    with progress("evaluating", total, shows_progress(as_json)) as tick:
        results = {
            s.name: evaluate_series(
                s, horizon_s=horizon_s, n_windows=windows, candidates=cands, progress=tick
            )
            for s in chosen
        }
    if as_json:
        print(json.dumps({"series": {k: v.as_dict() for k, v in results.items()}}, indent=2))
        return
    for name, ev in results.items():
        _print(name, ev)
    out.print(f"source: {label}", highlight=False)


def _print(name: str, ev: SeriesEvaluation) -> None:
    from forecaster.selection import SCORE_LEVELS

    table = Table(
        title=f"{name}: {ev.windows} windows of {ev.horizon} x {ev.step_s} s; auto chose {ev.chosen}"
    )
    cols = ("model", "MASE", "sMAPE", "pinball", *[f"cov {quantile_key(q)}" for q in SCORE_LEVELS])
    # "any request": per step, and anywhere within the horizon (at T_load, what scale to zero asks)
    for col in (*cols, "Brier (any)", "worst decile", "worst decile (horizon)"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for alias, sc in sorted(ev.models.items(), key=lambda kv: (kv[0] != "auto", kv[1].mase)):
        gap = sc.worst_decile_gap()
        table.add_row(
            alias,
            f"{sc.mase:.3f}",
            f"{sc.smape:.3f}",
            f"{sc.pinball:.4f}",
            *[f"{sc.coverage.get(q, float('nan')):.3f}" for q in SCORE_LEVELS],
            f"{sc.brier_any:.4f}",
            f"{gap:.3f}",
            f"{sc.worst_decile_gap(window=True):.3f}",
        )
    out.print(table)
    auto = ev.models.get("auto")
    if auto is not None and auto.coverage_by_horizon:
        cells = ", ".join(
            f"{span} {c.get(0.9, float('nan')):.2f}" for span, c in auto.coverage_by_horizon.items()
        )
        out.print(f"  auto's p90 coverage by horizon: {cells}", highlight=False)
    for note in ev.notes:
        out.print(f"  - {note}", highlight=False)
