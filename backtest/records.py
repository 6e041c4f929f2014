"""The walk-forward's records: each policy family's outcome day after day, and the comparison they make.

They live below the replay (backtest/run.py) because a series' backtest carries its walk-forward when one
was asked for, while the walk-forward itself (backtest/walk_forward.py) is computed above the tuning that
chooses each day's setting: the records are shared, the computation is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def within_target(violation_rate: float, target: float) -> bool:
    """Whether a share of late requests meets an SLO target (0.99: at most 1% late), up to rounding."""
    return violation_rate <= 1.0 - target + 1e-12


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
    # what the tuner promised each day: its choice's violation rate plus one standard error on the window
    promised_rates: tuple[float, ...] = ()
    # ready replicas per tick over the scored days, each day's from that day's chosen setting: when the family
    # kept the model warm (the HTML report's timeline strips). Empty where the replay kept no per-tick states
    # (the nightly ledger's day-by-day replays)
    ready_per_tick: tuple[int, ...] = field(default=(), repr=False)

    @property
    def days_within_promise(self) -> int:
        """Scored days whose realised violation rate was within what the tuner promised on the window."""
        pairs = zip(self.daily_violation_rates, self.promised_rates, strict=True)
        return sum(r <= p + 1e-12 for r, p in pairs)

    @property
    def violation_rate(self) -> float:
        return self.violations / self.requests if self.requests else 0.0

    @property
    def met(self) -> bool:
        return within_target(self.violation_rate, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "violation_rate": round(self.violation_rate, 6),
            "met": self.met,
            "replica_hours": round(self.replica_hours, 3),
            "days": len(self.settings),
            "days_on_target": self.days_on_target,
            "days_within_promise": self.days_within_promise,
            "mean_promised_rate": round(sum(self.promised_rates) / len(self.promised_rates), 6)
            if self.promised_rates
            else None,
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


@dataclass(frozen=True)
class FrontierPoint:
    """One family's out-of-sample outcome at one target: every scored day at the setting its tuner chose."""

    target: float
    violation_rate: float
    replica_hours: float
    days: int
    days_on_target: int
    days_within_promise: int

    @property
    def met(self) -> bool:
        return within_target(self.violation_rate, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "violation_rate": round(self.violation_rate, 6),
            "replica_hours": round(self.replica_hours, 3),
            "days": self.days,
            "days_on_target": self.days_on_target,
            "days_within_promise": self.days_within_promise,
        }


def _log_rate(rate: float, floor: float) -> float:
    return math.log(max(rate, floor))


def hours_at_equal_violation(
    points: list[FrontierPoint], against: list[FrontierPoint], requests: float
) -> tuple[float | None, list[tuple[float, float]]]:
    """`points`' replica-hours over `against`'s at equal realised violation rate: `against`'s frontier
    (its lower envelope) interpolated in log violation rate at each of `points` inside its range. A rate of
    0 stands at half a request in all (a log axis has no 0). Returns (the geometric mean of the ratios, or
    None where the frontiers do not overlap; each (target, ratio))."""
    floor = 0.5 / requests if requests > 0 else 1e-9
    env = sorted((_log_rate(p.violation_rate, floor), p.replica_hours) for p in against)
    if len(env) < 1:
        return None, []
    # the lower envelope: at each rate, the fewest hours any point at that rate or lower needs
    xs: list[float] = []
    hs: list[float] = []
    for x, h in env:
        if xs and abs(x - xs[-1]) < 1e-12:
            hs[-1] = min(hs[-1], h)
            continue
        xs.append(x)
        hs.append(h)
    for i in range(1, len(hs)):  # a point reaching a lower rate for fewer hours serves the higher rates too
        hs[i] = min(hs[i], hs[i - 1])
    out = []
    for p in points:
        x = _log_rate(p.violation_rate, floor)
        if x < xs[0] - 1e-12 or x > xs[-1] + 1e-12:
            continue
        if len(xs) == 1:
            h = hs[0]
        else:
            j = max(1, min(len(xs) - 1, next((k for k, v in enumerate(xs) if v >= x), len(xs) - 1)))
            x0, x1, h0, h1 = xs[j - 1], xs[j], hs[j - 1], hs[j]
            h = h0 if x1 == x0 else h0 + (h1 - h0) * (x - x0) / (x1 - x0)
        if h > 0:
            out.append((p.target, p.replica_hours / h))
    if not out:
        return None, []
    return math.exp(sum(math.log(r) for _, r in out) / len(out)), out


@dataclass(frozen=True)
class Frontier:
    """Each family's out-of-sample frontier (realised violation rate against replica-hours) over the SLO
    targets, and predictive's cost against the warm pool's at equal realised violation rate."""

    series: str
    targets: tuple[float, ...]
    t_load_s: float
    requests: float  # over the scored days
    policies: dict[str, list[FrontierPoint]]

    def ratio(self, family: str = "predictive", against: str = "static") -> float | None:
        if family not in self.policies or against not in self.policies:
            return None
        return hours_at_equal_violation(self.policies[family], self.policies[against], self.requests)[0]

    def as_dict(self) -> dict[str, Any]:
        ratio, each = (
            hours_at_equal_violation(self.policies["predictive"], self.policies["static"], self.requests)
            if "predictive" in self.policies and "static" in self.policies
            else (None, [])
        )
        quantile = self.ratio("quantile")
        # at a zero floor: prewarm against the serverless baselines (backtest/idle_policies.py), the same way
        zero = {
            f"predictive_hours_vs_{f}_at_equal_violation": None if r is None else round(r, 4)
            for f in ("keepalive", "histogram")
            if f in self.policies
            for r in [self.ratio("predictive", f)]
        }
        return {
            "targets": list(self.targets),
            "t_load_s": self.t_load_s,
            "policies": {f: [p.as_dict() for p in pts] for f, pts in self.policies.items()},
            "predictive_hours_vs_static_at_equal_violation": None if ratio is None else round(ratio, 4),
            "predictive_vs_static_by_target": [{"target": t, "ratio": round(r, 4)} for t, r in each],
            "quantile_hours_vs_static_at_equal_violation": None if quantile is None else round(quantile, 4),
            **zero,
            "rule": "each family's setting chosen day by day on the trailing window at each target, scored "
            "on the day after; the pool's frontier interpolated in log violation rate at predictive's "
            "points inside its range (geometric mean of the ratios)",
        }


def fleet_walks(walks: dict[str, list[WalkForward]]) -> dict[float, dict[str, dict[str, Any]]]:
    """Many series' walk-forwards as one fleet: per target and family, the requests, late requests and
    replica-hours summed over every series that ran the family, the fleet's late share, and the hours against
    always-one-warm's (`one-warm`, at a zero floor) or the warm pool's on the same series. What a team with
    dozens of rarely used models pays in all, and how many of their requests meet a cold start."""
    out: dict[float, dict[str, dict[str, Any]]] = {}
    for series_walks in walks.values():
        for w in series_walks:
            for family, fw in w.policies.items():
                t = out.setdefault(w.target, {}).setdefault(
                    family, {"series": 0, "requests": 0.0, "violations": 0.0, "replica_hours": 0.0}
                )
                t["series"] += 1
                t["requests"] += fw.requests
                t["violations"] += fw.violations
                t["replica_hours"] += fw.replica_hours
    for families in out.values():
        base = families.get("one-warm") or families.get("static")
        base_hours = base["replica_hours"] if base else 0.0
        key = "hours_vs_one_warm" if "one-warm" in families else "hours_vs_static"
        for t in families.values():
            t["violation_rate"] = round(t["violations"] / t["requests"], 6) if t["requests"] else 0.0
            t[key] = round(t["replica_hours"] / base_hours, 4) if base_hours else None
            t["requests"] = round(t["requests"])
            t["violations"] = round(t["violations"], 1)
            t["replica_hours"] = round(t["replica_hours"], 2)
    return out
