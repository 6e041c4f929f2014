"""`prewarm forecast`: each series' forecast with calibrated quantiles, as JSON or a table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from forecaster.types import Forecast, TrafficSeries, quantile_key
from service.cli.common import (
    UsageError,
    duration_s,
    guarded,
    iso,
    notes_of,
    out,
    parse_at,
    parse_levels,
    progress,
    qcol,
    shows_progress,
    split_series,
)
from service.cli.inputs import open_source, pick_series
from service.cli.options import DemoOpt, series_opt

Fitted = tuple[TrafficSeries, Forecast, dict[str, Any]]


@guarded()
def forecast(
    trace: Annotated[
        Path | None, typer.Argument(help="CSV or CSV.gz trace (timestamp,series,requests).")
    ] = None,
    series: Annotated[list[str] | None, series_opt("forecast")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="Forecast origin (ISO-8601); only data before it is used. Default: end of the trace."
        ),
    ] = None,
    horizon: Annotated[str, typer.Option(help="How far ahead, e.g. 30m, 2h.")] = "2h",
    quantiles: Annotated[str, typer.Option(help="Quantile levels, comma-separated.")] = "0.5,0.9,0.99",
    model: Annotated[
        str, typer.Option(help="auto, auto-fast, or a model alias (see `prewarm models`).")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    demo: DemoOpt = False,
) -> None:
    """Forecast requests per step, with calibrated quantiles, from the end of a trace (or --at)."""
    horizon_s = duration_s(horizon, "--horizon")
    levels = parse_levels(quantiles)
    names = split_series(series)
    source, label = open_source(trace, demo, set(names) if names else None)
    results = [
        _fit(s, at, horizon_s, levels, model, shows_progress(as_json)) for s in pick_series(source, names)
    ]
    if as_json:
        docs = [_as_json(s, fc, rep) for s, fc, rep in results]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return
    for s, fc, rep in results:
        _print(s, fc, rep)
    out.print(f"source: {label}", highlight=False)


def _fit(
    s: TrafficSeries, at: str | None, horizon_s: float, levels: tuple[float, ...], model: str, bar: bool
) -> Fitted:
    """One series' model fitted on the history before the origin (--at, else the series' end), its
    forecast and its fit report."""
    from forecaster.selection import make_forecaster

    origin = parse_at(at) if at else s.end_s
    if not s.start_s < origin <= s.end_s + s.step_s:
        raise UsageError(f"--at {at} is outside {s.name!r} ({iso(s.start_s)} .. {iso(s.end_s)})")
    history = s.before(origin)
    if len(history) < 2:
        raise UsageError(f"{s.name!r} has fewer than two steps before {iso(origin)}")
    total = 0
    if model.startswith("auto"):
        from forecaster.selection import DEFAULT_CANDIDATES, FAST_CANDIDATES, AutoModel

        n_c = len(FAST_CANDIDATES if model == "auto-fast" else DEFAULT_CANDIDATES)
        total = n_c * AutoModel(horizon_s=horizon_s).cv_origins(history).size
    with progress(f"fitting {s.name}", total, bar) as tick:
        m = make_forecaster(model, horizon_s, progress=tick)().fit(history)
    fc = m.predict(max(1, math.ceil(horizon_s / s.step_s)), levels)
    rep = m.report.as_dict()
    sel = getattr(m, "selection", None)
    if sel is not None:
        rep["selection"] = sel.as_dict()
    return s, fc, rep


def _as_json(series: TrafficSeries, fc: Forecast, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "series": series.name,
        "model": fc.model,
        "step_s": fc.step_s,
        "origin": iso(fc.origin_s),
        "points": [
            {
                "timestamp": iso(float(t)),
                "mean": round(float(fc.mean[i]), 4),
                "quantiles": {quantile_key(q): round(float(fc.quantiles[q][i]), 4) for q in fc.levels},
            }
            for i, t in enumerate(fc.times_s())
        ],
        "report": report,
        "notes": list(fc.notes),
    }


def _print(s: TrafficSeries, fc: Forecast, rep: dict[str, Any]) -> None:
    table = Table(title=f"{s.name}: {fc.model}, requests per {fc.step_s} s step from {iso(fc.origin_s)}")
    table.add_column("timestamp")
    table.add_column("mean", justify="right")
    for q in fc.levels:
        table.add_column(qcol(q), justify="right")
    stride = max(1, fc.horizon // 24)
    for i in range(0, fc.horizon, stride):
        t = float(fc.times_s()[i])
        table.add_row(iso(t), f"{fc.mean[i]:.1f}", *[f"{fc.quantiles[q][i]:.1f}" for q in fc.levels])
    out.print(table)
    if stride > 1:
        out.print(f"(every {stride}th of {fc.horizon} steps shown; --json for all)")
    for note in notes_of(rep):
        out.print(f"  - {note}", highlight=False)
