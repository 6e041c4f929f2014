"""Simulator speed: 30 days of a 1-minute trace for one series, per policy.

    python -m benchmarks.bench_backtest [--days 30]

The synthetic demo model is generated for `--days` plus the 2-day warm-up; every policy replays the same
30 days (2.6 M simulated seconds). Ratios are against the reactive policy, measured in the same run (the
simulator's own cost with the cheapest controller).
"""

from __future__ import annotations

import argparse
import time

from backtest.run import BacktestConfig, capacity_for, run_backtest
from forecaster.sources.synthetic import DEMO_FLEET, generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=30.0)
    args = ap.parse_args()
    series = generate(DEMO_FLEET[0], days=args.days + 2, step_s=60, seed=0)
    cap = capacity_for(series)
    print(
        f"{series.name}: {args.days:g} days at 60 s after a 2-day warm-up, "
        f"capacity {cap:.2f} req/s per replica"
    )
    base = None
    for policy in ("reactive", "static", "scheduled", "oracle", "predictive"):
        cfg = BacktestConfig(capacity_rps=cap, policies=(policy,), warm_pools=(2,))
        t = time.perf_counter()
        bt = run_backtest(series, cfg)
        el = time.perf_counter() - t
        base = base or el
        ((name, res),) = bt.results.items()
        print(
            f"{name:10s} {el:6.2f} s  ({el / base:5.2f}x reactive)  "
            f"violation rate {res.slo_violation_rate:.5f}  replica-h {res.replica_seconds / 3600:8.1f}  "
            f"{'under 10 s' if el < 10 else 'OVER 10 s'}"
        )


if __name__ == "__main__":
    main()
