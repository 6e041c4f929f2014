"""The walk-forward comparison: every policy family tunes its own knob on the trailing window only and is
scored on the next day, day after day, against one SLO target.

Each candidate is simulated once over the whole replay and its outcome kept per day (backtest/tuning.py);
the day-d choice reads days [d - window, d) of those outcomes and the score is the chosen candidate's day d.
So a day is scored as if its candidate had run all along: the transient of switching from yesterday's
setting to today's (replicas released or still loading at midnight) is not simulated.
"""

from __future__ import annotations

from collections.abc import Callable

from backtest.records import TRANSIENTS_NOTE, FamilyWalk, WalkForward
from backtest.run import BacktestConfig
from backtest.tuning import (
    FAMILIES,
    CandidateRuns,
    Selection,
    TuningError,
    TuningGrid,
    check_target,
    select,
    simulate_candidates,
)
from forecaster.types import SECONDS_PER_DAY, TrafficSeries

# the records are re-exported: they were defined here, and callers read them as the walk-forward's
__all__ = ["TRANSIENTS_NOTE", "FamilyWalk", "WalkForward", "run_walk_forward", "walk_forward"]


def walk_forward(runs: CandidateRuns, target: float, tune_window_s: float) -> WalkForward:
    """Score every family of `runs` day by day, each day's setting chosen on the days before it."""
    check_target(target, "--slo-target")
    window = round(tune_window_s / SECONDS_PER_DAY)
    if window < 1 or abs(window * SECONDS_PER_DAY - tune_window_s) > 1:
        raise TuningError(f"tune window {tune_window_s / SECONDS_PER_DAY:g} days: expected whole days, >= 1")
    n_days = runs.days
    if n_days <= window:
        raise TuningError(
            f"{runs.series!r}: {n_days} simulated day(s) leave none to score after a {window}-day tune "
            "window; use a longer trace or a shorter --tune-window"
        )
    policies = {}
    for family in (f for f in FAMILIES if f in runs.families):
        cands = runs.families[family]
        req = vio = hours = 0.0
        on_target = unreachable = 0
        settings, rates, day_hours = [], [], []
        for d in range(window, n_days):
            sel: Selection = select(family, cands, target, range(d - window, d))
            r = sel.chosen.candidate.result
            dr, dv = float(r.daily_requests[d]), float(r.daily_violations[d])
            dh = float(r.daily_replica_seconds[d]) / 3600
            req, vio, hours = req + dr, vio + dv, hours + dh
            rate = dv / dr if dr else 0.0
            on_target += rate <= 1.0 - target + 1e-12
            unreachable += not sel.met
            settings.append(sel.chosen.candidate.setting)
            rates.append(rate)
            day_hours.append(dh)
        policies[family] = FamilyWalk(
            family,
            target,
            req,
            vio,
            hours,
            on_target,
            tuple(settings),
            unreachable,
            tuple(rates),
            tuple(day_hours),
        )
    first = runs.start_s + window * SECONDS_PER_DAY
    return WalkForward(runs.series, target, float(window * SECONDS_PER_DAY), first, policies)


def run_walk_forward(
    series: TrafficSeries,
    cfg: BacktestConfig,
    target: float,
    tune_window_s: float,
    grid: TuningGrid | None = None,
    progress: Callable[[int], None] | None = None,
) -> WalkForward:
    """Simulate every family's candidates over the replay of `series` (after cfg's warm-up) and walk
    forward over them: what `prewarm backtest --slo-target` runs."""
    check_target(target, "--slo-target")
    return walk_forward(simulate_candidates(series, cfg, grid, progress=progress), target, tune_window_s)
