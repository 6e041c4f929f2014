"""The walk-forward comparison: every policy family tunes its own knob on the trailing window only and is
scored on the next day, day after day, against one SLO target.

Each candidate is simulated once over the whole replay and its outcome kept per day (backtest/tuning.py);
the day-d choice reads days [d - window, d) of those outcomes and the score is the chosen candidate's day d.
So a day is scored as if its candidate had run all along: the transient of switching from yesterday's
setting to today's (replicas released or still loading at midnight) is not simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

TRANSIENTS_NOTE = (
    "each candidate was simulated once over the whole replay and each day scored from its own outcome that "
    "day: switching transients between settings are not simulated"
)


@dataclass(frozen=True)
class FamilyWalk:
    family: str
    target: float
    requests: float
    violations: float
    replica_hours: float
    days_on_target: int
    settings: tuple[str, ...]  # the setting chosen for each scored day
    unreachable_days: int  # days whose choice was SloUnreachable (no candidate met the target before)
    daily_violation_rates: tuple[float, ...]
    daily_replica_hours: tuple[float, ...]

    @property
    def violation_rate(self) -> float:
        return self.violations / self.requests if self.requests else 0.0

    @property
    def met(self) -> bool:
        return self.violation_rate <= 1.0 - self.target + 1e-12

    def as_dict(self) -> dict[str, Any]:
        return {
            "violation_rate": round(self.violation_rate, 6),
            "met": self.met,
            "replica_hours": round(self.replica_hours, 3),
            "days": len(self.settings),
            "days_on_target": self.days_on_target,
            "unreachable_days": self.unreachable_days,
            "settings": list(self.settings),
            "daily_violation_rates": [round(v, 6) for v in self.daily_violation_rates],
            "daily_replica_hours": [round(h, 3) for h in self.daily_replica_hours],
        }


@dataclass(frozen=True)
class WalkForward:
    series: str
    target: float
    tune_window_s: float
    first_day_s: float  # epoch of the first scored day
    policies: dict[str, FamilyWalk]

    def hours_ratio(self, family: str = "predictive", against: str = "static") -> float | None:
        a, b = self.policies.get(family), self.policies.get(against)
        return a.replica_hours / b.replica_hours if a and b and b.replica_hours else None

    def as_dict(self) -> dict[str, Any]:
        ratio = self.hours_ratio()
        return {
            "target": self.target,
            "tune_window_s": self.tune_window_s,
            "first_day_s": self.first_day_s,
            "note": TRANSIENTS_NOTE,
            "predictive_hours_vs_static": None if ratio is None else round(ratio, 4),
            "policies": {f: w.as_dict() for f, w in self.policies.items()},
        }


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
