"""The walk-forward comparison: every policy family tunes its own knob on the trailing window only and is
scored on the next day, day after day, at each SLO target; each family's outcomes over the targets are its
out-of-sample frontier (realised violation rate against replica-hours), and the families are compared on
those frontiers at equal realised violation rate, not by counting who "met" a target (near the boundary
that is a coin flip).

Each candidate is simulated once over the whole replay and its outcome kept per day (backtest/tuning.py);
the day-d choice reads days [d - window, d) of those outcomes and the score is the chosen candidate's day d.
So a day is scored as if its candidate had run all along: the transient of switching from yesterday's
setting to today's (replicas released or still loading at midnight) is not simulated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backtest.records import TRANSIENTS_NOTE, FamilyWalk, Frontier, FrontierPoint, WalkForward, within_target
from backtest.run import BacktestConfig
from backtest.tuning import (
    FAMILIES,
    CandidateRuns,
    TuningError,
    TuningGrid,
    check_target,
    select,
    simulate_candidates,
)
from forecaster.types import SECONDS_PER_DAY, TrafficSeries

# the records are re-exported: they were defined here, and callers read them as the walk-forward's
__all__ = ["TRANSIENTS_NOTE", "FamilyWalk", "WalkForward", "frontier", "run_walk_forward", "walk_forward"]


def _window_days(runs: CandidateRuns, tune_window_s: float) -> int:
    window = round(tune_window_s / SECONDS_PER_DAY)
    if window < 1 or abs(window * SECONDS_PER_DAY - tune_window_s) > 1:
        raise TuningError(f"tune window {tune_window_s / SECONDS_PER_DAY:g} days: expected whole days, >= 1")
    if runs.days <= window:
        raise TuningError(
            f"{runs.series!r}: {runs.days} simulated day(s) leave none to score after a {window}-day tune "
            "window; use a longer trace or a shorter --tune-window"
        )
    return window


def walk_forward(runs: CandidateRuns, target: float, tune_window_s: float) -> WalkForward:
    """Score every family of `runs` day by day, each day's setting chosen on the days before it."""
    check_target(target, "--slo-target")
    window = _window_days(runs, tune_window_s)
    per_day = round(SECONDS_PER_DAY / runs.tick_s) if runs.tick_s else 0  # ticks a day, where they are kept
    policies = {}
    for family in (f for f in FAMILIES if f in runs.families):
        req = vio = hours = 0.0
        on_target = unreachable = 0
        settings, rates, day_hours, promised = [], [], [], []
        ready: list[int] = []
        for d in range(window, runs.days):
            sel = select(family, runs, target, range(d - window, d))
            r = sel.chosen.candidate.result
            dr, dv = float(r.daily_requests[d]), float(r.daily_violations[d])
            dh = float(r.daily_replica_seconds[d]) / 3600
            req, vio, hours = req + dr, vio + dv, hours + dh
            rate = dv / dr if dr else 0.0
            on_target += within_target(rate, target)
            unreachable += not sel.met
            settings.append(sel.chosen.candidate.setting)
            rates.append(rate)
            day_hours.append(dh)
            promised.append(sel.chosen.upper)
            ready += r.ready_per_tick[d * per_day : (d + 1) * per_day]
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
            tuple(promised),
            tuple(ready),
        )
    first = runs.start_s + window * SECONDS_PER_DAY
    return WalkForward(runs.series, target, float(window * SECONDS_PER_DAY), first, policies)


def frontier(walks: Sequence[WalkForward], t_load_s: float) -> Frontier:
    """Each family's frontier from its walk-forwards at several targets (one per target)."""
    if not walks:
        raise TuningError("a frontier needs at least one target")
    families = [f for f in FAMILIES if all(f in w.policies for w in walks)]
    policies = {
        f: [
            FrontierPoint(
                w.target,
                w.policies[f].violation_rate,
                w.policies[f].replica_hours,
                len(w.policies[f].settings),
                w.policies[f].days_on_target,
                w.policies[f].days_within_promise,
            )
            for w in walks
        ]
        for f in families
    }
    requests = walks[0].policies[families[0]].requests if families else 0.0
    return Frontier(walks[0].series, tuple(w.target for w in walks), t_load_s, requests, policies)


def run_walk_forward(
    series: TrafficSeries,
    cfg: BacktestConfig,
    targets: Sequence[float],
    tune_window_s: float,
    grid: TuningGrid | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[WalkForward], Frontier]:
    """Simulate every family's candidates over the replay of `series` (after cfg's warm-up) once, and walk
    forward over them at each target: what `prewarm backtest --slo-target a,b,c` runs."""
    for t in targets:
        check_target(t, "--slo-target")
    runs = simulate_candidates(series, cfg, grid, progress=progress)
    walks = [walk_forward(runs, t, tune_window_s) for t in targets]
    return walks, frontier(walks, cfg.t_load_s)
