"""The walk-forward's records: each policy family's outcome day after day, and the comparison they make.

They live below the replay (backtest/run.py) because a series' backtest carries its walk-forward when one
was asked for, while the walk-forward itself (backtest/walk_forward.py) is computed above the tuning that
chooses each day's setting: the records are shared, the computation is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
