"""Forecasts from day one: a model with hours of history, forecast with a borrowed daily shape against
the recent-level fallback.

    python -m benchmarks.bench_day_one TRACE [TRACE ...] [--series S ...] [--hours 6,12,24]
                                       [--horizon-h 1] [--cuts 56] [--json]

Every series of the files with at least 3 days is cut to H hours of history at `--cuts` points spread
over its last 7 days (every 3 hours: every time of day), and forecast `--horizon-h` ahead twice: with the
recent level (what a model under two days gets without a prior) and with the borrowed shape, the fleet's
median daily shape of the *other* series (leave-one-out: a new model never lends itself its own shape).
MASE is scaled per series by its one-day seasonal naive MAE over the whole series, the same for both
methods; `ratio` = borrowed / recent level (below 1: borrowing wins).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from forecaster.models.borrowed import STRENGTHS, BorrowedShape
from forecaster.models.fallback import RecentLevel
from forecaster.shape import DailyShape, daily_shape
from forecaster.sources.trace import read_trace
from forecaster.types import SECONDS_PER_DAY, TrafficSeries

LEVEL = 0.9


def naive_scale(s: TrafficSeries) -> float:
    lag = round(SECONDS_PER_DAY / s.step_s)
    y = s.values
    d = np.abs(y[lag:] - y[:-lag])
    return float(np.nanmean(d)) or 1.0


def score(
    s: TrafficSeries,
    priors: list[DailyShape],
    hours: float,
    horizon_s: float,
    cuts: int,
    strengths: tuple[float, ...] = STRENGTHS,
) -> dict[str, float]:
    h = max(1, round(horizon_s / s.step_s))
    need = round(hours * 3600 / s.step_s)
    scale = naive_scale(s)
    end = len(s) - h
    every = round(3 * 3600 / s.step_s)
    points = [end - k * every for k in range(cuts) if end - k * every - need >= 0]
    err: dict[str, list[float]] = {"recent_level": [], "borrowed_shape": []}
    cover: dict[str, list[float]] = {"recent_level": [], "borrowed_shape": []}
    for cut in points:
        hist = s.slice(cut - need, cut)
        actual = s.values[cut : cut + h]
        ok = np.isfinite(actual)
        for name, model in (
            ("recent_level", RecentLevel()),
            ("borrowed_shape", BorrowedShape(priors, strengths=strengths)),
        ):
            fc = model.fit(hist).predict(h, (LEVEL,))
            err[name].append(float(np.mean(np.abs(actual[ok] - fc.mean[ok])) / scale))
            cover[name].append(float(np.mean(actual[ok] <= fc.quantiles[LEVEL][ok])))
    out = {f"mase_{k}": float(np.mean(v)) for k, v in err.items()}
    out |= {f"p90_cov_{k}": float(np.mean(v)) for k, v in cover.items()}
    # a series silent over every cut scores 0 for both: a tie, not a win
    rl, bs = out["mase_recent_level"], out["mase_borrowed_shape"]
    out["ratio"] = bs / rl if rl > 0 else (1.0 if bs == 0 else float("inf"))
    out["cuts"] = len(points)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--series", nargs="*")
    ap.add_argument("--hours", default="6,12,24")
    ap.add_argument("--horizon-h", type=float, default=1.0)
    ap.add_argument("--cuts", type=int, default=56)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--in-hindsight",
        action="store_true",
        help="also score each strength fixed, and count the series on which the one that scored best on "
        "these very cuts beats the recent level: a bound on what choosing the strength could reach",
    )
    args = ap.parse_args()
    series: dict[str, TrafficSeries] = {}
    for path in args.traces:
        for name, s in read_trace(path).series.items():
            if (not args.series or name in args.series) and s.span_s >= 3 * SECONDS_PER_DAY:
                series[name] = s
    shapes = {name: daily_shape(s) for name, s in series.items()}
    hours = [float(x) for x in args.hours.split(",")]
    table: dict[str, dict[str, Any]] = {}
    for name, s in series.items():
        others = [sh for other, sh in shapes.items() if other != name and sh is not None]
        if not others:
            continue
        table[name] = {f"{hr:g}h": score(s, others, hr, args.horizon_h * 3600, args.cuts) for hr in hours}
    wins = {f"{hr:g}h": sum(1 for r in table.values() if r[f"{hr:g}h"]["ratio"] < 1.0) for hr in hours}
    hindsight: dict[str, int] = {}
    if args.in_hindsight:
        for hr in hours:
            k = f"{hr:g}h"
            for name, s in series.items():
                if name not in table:
                    continue
                others = [sh for other, sh in shapes.items() if other != name and sh is not None]
                fixed = {
                    b: score(s, others, hr, args.horizon_h * 3600, args.cuts, (b,))["ratio"]
                    for b in STRENGTHS
                    if b > 0
                }
                best = min(fixed, key=lambda b: fixed[b])
                table[name][k]["hindsight_strength"] = best
                table[name][k]["hindsight_ratio"] = fixed[best]
            hindsight[k] = sum(1 for r in table.values() if r[k]["hindsight_ratio"] < 1.0)
    if args.json:
        out = {"series": table, "wins": wins, "of": len(table)}
        print(json.dumps(out | ({"wins_in_hindsight": hindsight} if hindsight else {}), indent=2))
        return
    print(f"{'series':<16}" + "".join(f"{f'{hr:g}h rl / bs (ratio)':>32}" for hr in hours))
    for name, r in table.items():
        cells = ""
        for k in (f"{hr:g}h" for hr in hours):
            c = r[k]
            cells += (
                f"{c['mase_recent_level']:>10.3f} {c['mase_borrowed_shape']:>8.3f} ({c['ratio']:.2f})    "
            )
        print(f"{name:<16}{cells}")
    print(
        "borrowed beats recent level on: " + ", ".join(f"{k}: {v} of {len(table)}" for k, v in wins.items())
    )
    if hindsight:
        print(
            "with the strength that scored best on these cuts (hindsight): "
            + ", ".join(f"{k}: {v} of {len(table)}" for k, v in hindsight.items())
        )


if __name__ == "__main__":
    main()
