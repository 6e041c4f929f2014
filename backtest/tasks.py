"""The per-model work a compute worker runs (compute/), as pure functions of a history and settings: one
model's night (its backtest and tuning run on the day ledger, backtest/ledger.py) that the service records
(service/nightly.py), and one series' replay for `prewarm backtest`. No store, no clock, no live state:
the same arguments give the same result on any backend."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backtest.ledger import DayOutcome, Ledger, complete_days
from backtest.run import BacktestConfig, Comparison, Make, SeriesBacktest, compare, run_backtest
from backtest.simulator import ReplayResult
from backtest.tuning import (
    OperatingPoint,
    TuningError,
    TuningGrid,
    TuningResult,
    candidate_levels,
    check_target,
    oracle_policy,
    point_policy,
    pool_policy,
    reactive_policy,
    select,
    simulate_candidates,
)
from backtest.walk_forward import run_walk_forward
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner.slo import LEVELS as SLO_LEVELS

POOLS = (0, 1, 2, 3, 4, 6, 8)
NIGHT_FAMILIES = ("static", "reactive", "predictive")  # what a live model's tuning run chooses among


def _backtest_doc(
    days: float, results: dict[str, ReplayResult], cmp: Comparison, notes: list[str]
) -> dict[str, Any]:
    """The nightly backtest's document, and whether prediction lost: violated the SLO more than reactive,
    or used more replica-hours than reactive + a warm pool at the same violation rate (`lost_because`,
    empty when it did not)."""
    pred, react = results["predictive"], results["reactive"]
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
        "days": days,
        "policies": {name: r.as_dict() for name, r in results.items()},
        "comparison": cmp.as_dict(),
        "predictive_lost": bool(reasons),
        "lost_because": reasons,
        "notes": notes,
    }


def replay_series(
    series: TrafficSeries,
    cfg: BacktestConfig,
    slo_targets: Sequence[float] = (),
    window_s: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> SeriesBacktest:
    """One series through every policy (and, with SLO targets, the walk-forward at each and the frontier
    they make)."""
    bt = run_backtest(series, cfg, progress=progress)
    if slo_targets:
        walks, bt.frontier = run_walk_forward(series, cfg, slo_targets, window_s, progress=progress)
        bt.walk_forwards, bt.walk_forward = walks, walks[0]
    return bt


# -- one model's night on the ledger ---------------------------------------------------------------------


@dataclass(frozen=True)
class NightSpec:
    """What one model's night runs: the backtest of its last `backtest_days` whole days (at the operating
    point in force, against reactive, the warm pools and the oracle) and, with an SLO target, the tuning
    run over its last `tune_days`. Both read and extend one ledger of day outcomes (backtest/ledger.py)."""

    point: OperatingPoint  # the operating point in force: the backtest's predictive policy
    backtest_days: float | None = None  # None: no backtest tonight
    target: float | None = None  # None: no tuning run
    tune_days: int = 7
    grid: TuningGrid | None = None
    pools: tuple[int, ...] = POOLS

    def levels(self) -> tuple[float, ...]:
        """Every forecast quantile the night plans at (part of the ledger's fingerprint)."""
        grid = self.grid or TuningGrid()
        out = set(candidate_levels(grid, NIGHT_FAMILIES)) if self.target is not None else set()
        if self.point.late_budget is not None:
            out.update(SLO_LEVELS)
        if self.point.alpha is not None:
            out.add(self.point.alpha)
        return tuple(sorted(out)) or (0.5,)


def night_model(
    history: TrafficSeries,
    cfg: BacktestConfig,
    spec: NightSpec,
    known: dict[tuple[str, float], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One model's nightly backtest and tuning run from its history and the day outcomes already known;
    returns both documents (or each one's error) and the day outcomes replayed tonight, for the store."""
    ledger = Ledger(
        history, cfg, spec.levels(), {k: DayOutcome.from_dict(v) for k, v in (known or {}).items()}
    )
    out: dict[str, Any] = {"fingerprint": ledger.fingerprint, "backtest": None, "tuning": None}
    if spec.backtest_days is not None:
        try:
            out["backtest"] = _ledger_backtest(ledger, history, cfg, spec)
        except (ValueError, TuningError) as exc:
            out["backtest_error"] = f"{type(exc).__name__}: {exc}"
    if spec.target is not None:
        try:
            out["tuning"] = _ledger_tuning(ledger, history, cfg, spec)
        except (ValueError, TuningError) as exc:
            out["tuning_error"] = f"{type(exc).__name__}: {exc}"
    out["replayed"] = ledger.new_rows()
    out["known_used"] = len(ledger.known)
    return out


def _canonical(cfg: BacktestConfig, label: str) -> str:
    """One label per distinct policy: static-0 is the reactive autoscaler at its own utilisation."""
    return f"util-{cfg.target_utilization:g}" if label == "static-0" else label


def _ledger_backtest(
    ledger: Ledger, history: TrafficSeries, cfg: BacktestConfig, spec: NightSpec
) -> dict[str, Any]:
    assert spec.backtest_days is not None
    days = complete_days(history, math.ceil(spec.backtest_days))
    if not days:
        raise ValueError(f"{history.name!r}: no whole UTC day with 2 days of history before it to replay")
    base = cfg.planner_spec()
    p = spec.point
    forecast_free = p.alpha is None and not p.reserve_share
    settings: dict[str, tuple[str, Make]] = {
        "reactive": (f"util-{cfg.target_utilization:g}", reactive_policy(cfg, cfg.target_utilization)),
        **{f"static-{k}": (_canonical(cfg, f"static-{k}"), pool_policy(cfg, k)) for k in spec.pools},
        "predictive": (
            (_canonical(cfg, f"static-{p.reserve_replicas}"), pool_policy(cfg, p.reserve_replicas))
            if forecast_free
            else (p.label, point_policy(p, base))
        ),
        "oracle": ("oracle", oracle_policy(cfg, 1.0)),
    }
    results = {name: ledger.result(label, make, days) for name, (label, make) in settings.items()}
    for name, r in results.items():
        r.policy = name
    pred_label = settings["predictive"][0]
    top = ", ".join(f"{k} {v}" for k, v in ledger.reasons(pred_label, days).most_common(4))
    notes = [f"{len(days)} whole UTC days, each replayed once the night after it (the ledger)"]
    if top:
        notes.append(
            f"predictive decisions by reason: {top}; forecasts by model: {dict(ledger.day_models(days))}"
        )
    return _backtest_doc(float(len(days)), results, compare(results), notes)


def _ledger_tuning(
    ledger: Ledger, history: TrafficSeries, cfg: BacktestConfig, spec: NightSpec
) -> dict[str, Any]:
    assert spec.target is not None
    target = check_target(spec.target)
    if spec.tune_days < 1:
        raise TuningError(f"tune window {spec.tune_days} days is too short; allowed >= 1 day")
    days = complete_days(history, spec.tune_days)
    if not days:
        raise TuningError(
            f"{history.name!r} spans {history.span_s / SECONDS_PER_DAY:.2f} days: tuning needs a whole UTC "
            "day with 2 days of history before it"
        )

    def run(label: str, make: Make) -> ReplayResult:
        return ledger.result(_canonical(cfg, label), make, days)

    def models() -> dict[str, int]:
        return dict(ledger.day_models(days))

    grid = spec.grid or TuningGrid()
    runs = simulate_candidates(
        history,
        cfg,
        grid,
        families=NIGHT_FAMILIES,
        stop_at=target,
        runner=(run, days[0], days[-1] + SECONDS_PER_DAY, models),
    )
    window = range(0, len(days))
    selections = {f: select(f, runs, target, window) for f in runs.families}
    return TuningResult(
        history.name, target, cfg.slo_wait_s, runs.start_s, runs.end_s, selections, runs.models, runs.skipped
    ).as_dict()
