"""The per-model work a compute worker runs (compute/), as pure functions of a history and settings: the
nightly backtest and tuning run the service records (service/nightly.py), and one series' replay for
`prewarm backtest`. No store, no clock, no live state: the same arguments give the same result on any
backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backtest.run import BacktestConfig, SeriesBacktest, compare, run_backtest
from backtest.tuning import TuningGrid, tune
from backtest.walk_forward import run_walk_forward
from forecaster.types import SECONDS_PER_DAY, TrafficSeries

NIGHTLY_POLICIES = ("reactive", "static", "predictive", "oracle")
POOLS = (0, 1, 2, 3, 4, 6, 8)


def backtest_model(history: TrafficSeries, cfg: BacktestConfig) -> dict[str, Any]:
    """Replay the history through every nightly policy and say whether prediction lost: violated the SLO
    more than reactive, or used more replica-hours than reactive + a warm pool at the same violation rate
    (`lost_because`, empty when it did not)."""
    bt = run_backtest(history, cfg)
    cmp = compare(bt.results)
    pred, react = bt.results["predictive"], bt.results["reactive"]
    reasons = []
    if pred.slo_violation_rate > react.slo_violation_rate:
        reasons.append(
            f"predictive violated the SLO for {pred.slo_violation_rate:.2%} of requests, reactive for "
            f"{react.slo_violation_rate:.2%}"
        )
    if cmp.hours_ratio_vs_static is not None and cmp.hours_ratio_vs_static > 1.0:
        reasons.append(
            f"predictive used {cmp.hours_ratio_vs_static:.2f}x the replica-hours of reactive + a warm pool "
            "at the same violation rate"
        )
    return {
        "days": round(history.span_s / SECONDS_PER_DAY, 3),
        "policies": bt.as_dict(),
        "comparison": cmp.as_dict(),
        "predictive_lost": bool(reasons),
        "lost_because": reasons,
        "notes": bt.notes,
    }


def tune_model(
    history: TrafficSeries,
    cfg: BacktestConfig,
    target: float,
    window_s: float,
    grid: TuningGrid | None = None,
) -> dict[str, Any]:
    """The tuning run's document (backtest/tuning.py TuningResult.as_dict)."""
    return tune(history, cfg, target, window_s=window_s, grid=grid).as_dict()


def replay_series(
    series: TrafficSeries,
    cfg: BacktestConfig,
    slo_target: float | None = None,
    window_s: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> SeriesBacktest:
    """One series through every policy (and, with an SLO target, the walk-forward at it)."""
    bt = run_backtest(series, cfg, progress=progress)
    if slo_target is not None:
        bt.walk_forward = run_walk_forward(series, cfg, slo_target, window_s, progress=progress)
    return bt
