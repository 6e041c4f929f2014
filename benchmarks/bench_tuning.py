"""Tuning speed: forecast once, plan many.

    python -m benchmarks.bench_tuning [--days 14] [--window 7]

A synthetic demo model, `--days` at 1 minute; tuning replays the trailing `--window` days, walking each
family's knob from its most protective setting until its first failure (the default grid: 10 late-request
budgets for prewarm, 14 warm pools, 7 reactive utilisations: at most 31 simulations). Measured in the same
run against the baseline it must be judged by: one predictive backtest of the same window (one forecasting
pass plus one planner + simulation pass), and one reactive backtest (the simulator alone).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from backtest.run import BacktestConfig, capacity_for, run_backtest
from backtest.tuning import TuningGrid, candidate_count, tune
from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import SECONDS_PER_DAY

FAMILIES = ("static", "reactive", "predictive")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--window", type=float, default=7.0)
    args = ap.parse_args()
    series = generate(DEMO_FLEET[0], days=args.days, step_s=60, seed=0)
    cfg = BacktestConfig(capacity_rps=capacity_for(series))
    window_s = args.window * SECONDS_PER_DAY
    on_window = replace(cfg, warmup_s=series.span_s - window_s)
    grid = TuningGrid()
    print(
        f"{series.name}: {args.days:g} days at 60 s, tuned on the trailing {args.window:g} days; "
        f"{len(grid.budgets)} predictive budgets (+ {len(grid.pools)} pools, which are predictive points "
        f"too), at most {candidate_count(grid, FAMILIES)} simulations"
    )
    timings = {}
    for policy in ("reactive", "predictive"):
        t = time.perf_counter()
        run_backtest(series, replace(on_window, policies=(policy,)))
        timings[policy] = time.perf_counter() - t
    t = time.perf_counter()
    result = tune(series, cfg, 0.99, window_s=window_s, grid=grid)
    tuning = time.perf_counter() - t
    doc = result.as_dict()
    print(f"one reactive backtest   {timings['reactive']:7.2f} s")
    print(f"one predictive backtest {timings['predictive']:7.2f} s")
    print(
        f"tuning                  {tuning:7.2f} s  ({tuning / timings['predictive']:.1f}x one predictive "
        f"the walks; {'under' if tuning < 60 else 'OVER'} 60 s)"
    )
    print(
        f"chosen {doc['chosen']['setting']} at target 0.99: {doc['replica_hours_per_day']} replica-h/day, "
        f"warm pool {doc['warm_pool']['setting']} {doc['warm_pool']['replica_hours_per_day']} "
        f"(ratio {doc['hours_ratio_vs_warm_pool']})"
    )


if __name__ == "__main__":
    main()
