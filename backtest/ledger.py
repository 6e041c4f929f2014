"""The nightly replay ledger: each complete UTC day of a model's history is replayed once per policy
setting, and its outcome kept, so every later night replays only the day that is new.

The nightly backtest (the last ~12 days) and tuning (the last 7) used to replay their whole windows every
night: eleven of twelve days had been replayed, with the same settings, the night before. A day's outcome
under one setting depends only on the history up to its end and on the replay's configuration, so the
ledger keys it by (configuration fingerprint, setting, day) and the store keeps it (service/store.py
replay_days). A changed configuration (capacity, T_load, SLO wait, tick, bounds, forecaster, refresh, the
forecast levels) has another fingerprint: its days are replayed afresh.

Each day is its own replay: it starts warm at midnight (as every replay starts warm), forecasts from a fit
at midnight on the history before it (the daily refit of a continuous replay whose days start at midnight)
and is scored for that day alone. Every setting of one day shares one forecast feed and one arrival stream.

The pure part (this module) takes the known outcomes and returns the new ones; the service reads and writes
the store around it (service/nightly.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from backtest.policies import ForecastFeed, Predictive
from backtest.run import BacktestConfig, Make, Replay
from backtest.simulator import Policy, ReplayResult
from forecaster.types import SECONDS_PER_DAY, TrafficSeries

MIN_HISTORY_DAYS = 2.0  # days of history before the first day a ledger replays (the seasonal models' bar)

__all__ = ["DayOutcome", "Ledger", "Make", "complete_days", "fingerprint"]  # Make: defined with the replay


@dataclass(frozen=True)
class DayOutcome:
    """One setting's replay of one day."""

    requests: float
    violations: float
    replica_seconds: float
    idle_replica_seconds: float
    cold_starts: int
    peak_replicas: int
    reasons: dict[str, int] = field(default_factory=dict)  # the planner's decisions by reason (predictive)
    models: dict[str, int] = field(default_factory=dict)  # forecasts by model (predictive)

    @classmethod
    def of(cls, r: ReplayResult, policy: Policy, feed: ForecastFeed | None) -> DayOutcome:
        reasons = dict(policy.reasons) if isinstance(policy, Predictive) else {}
        return cls(
            float(r.requests),
            float(r.slo_violations),
            float(r.replica_seconds),
            float(r.idle_replica_seconds),
            int(r.cold_starts),
            int(r.peak_replicas),
            reasons,
            dict(feed.models) if feed is not None and reasons else {},
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DayOutcome:
        return cls(**doc)


def fingerprint(cfg: BacktestConfig, levels: Sequence[float]) -> str:
    """What a day's outcome depends on besides the data and the setting (16 hex digits)."""
    doc = {
        "capacity_rps": cfg.capacity_rps,
        "t_load_s": cfg.t_load_s,
        "slo_wait_s": cfg.slo_wait_s,
        "tick_s": cfg.tick_s,
        "min_replicas": cfg.min_replicas,
        "max_replicas": cfg.max_replicas,
        "target_utilization": cfg.target_utilization,
        "model": cfg.model,
        "seed": cfg.seed,
        "refresh_s": cfg.refresh_s,
        "dropout_min_count": cfg.dropout_min_count,
        "dropout_max_s": cfg.dropout_max_s,
        "levels": sorted(set(levels)),
        "version": 1,  # bump when the replay itself changes meaning
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def complete_days(series: TrafficSeries, last: int | None = None) -> list[float]:
    """Start epochs of the complete UTC days of `series` with MIN_HISTORY_DAYS of history before them
    (the newest `last` of them)."""
    first = math.ceil((series.start_s + MIN_HISTORY_DAYS * SECONDS_PER_DAY) / SECONDS_PER_DAY)
    end = math.floor(series.end_s / SECONDS_PER_DAY)
    days = [float(d * SECONDS_PER_DAY) for d in range(first, end)]
    return days if last is None else days[-last:] if last > 0 else []


class Ledger:
    """Day outcomes of one history: those already known, and those replayed here (`new`)."""

    def __init__(
        self,
        series: TrafficSeries,
        cfg: BacktestConfig,
        levels: Sequence[float],
        known: Mapping[tuple[str, float], DayOutcome] | None = None,
    ) -> None:
        self.series, self.cfg = series, cfg
        self.levels = tuple(sorted(set(levels)))
        self.known: dict[tuple[str, float], DayOutcome] = dict(known or {})
        self.new: dict[tuple[str, float], DayOutcome] = {}
        self._days: dict[float, tuple[Replay, ForecastFeed]] = {}

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cfg, self.levels)

    def _day(self, day_s: float) -> tuple[Replay, ForecastFeed]:
        if day_s not in self._days:
            s = self.series
            upto = s.slice(0, s.index_at(day_s + SECONDS_PER_DAY))
            # every day's own arrivals: seeded by the day, so a day replays the same tonight and a year on
            cfg = replace(self.cfg, warmup_s=day_s - s.start_s, seed=self.cfg.seed + int(day_s // 86_400))
            replay = Replay.of(upto, cfg)
            feed = replay.feed(self.levels)
            self._days[day_s] = (replay, feed)
        return self._days[day_s]

    def outcome(self, label: str, make: Make, day_s: float) -> DayOutcome:
        key = (label, day_s)
        if key in self.known:
            return self.known[key]
        if key not in self.new:
            replay, feed = self._day(day_s)
            policy = make(replay, feed)
            uses_feed = isinstance(policy, Predictive)
            self.new[key] = DayOutcome.of(replay.run(policy), policy, feed if uses_feed else None)
        return self.new[key]

    def result(self, label: str, make: Make, days: Sequence[float]) -> ReplayResult:
        """The setting's outcome over `days`, one entry per day in the daily arrays (as a continuous
        replay's), replaying only the days not known."""
        outs = [self.outcome(label, make, d) for d in days]
        return ReplayResult(
            label,
            requests=sum(o.requests for o in outs),
            slo_violations=sum(o.violations for o in outs),
            replica_seconds=sum(o.replica_seconds for o in outs),
            idle_replica_seconds=sum(o.idle_replica_seconds for o in outs),
            cold_starts=sum(o.cold_starts for o in outs),
            peak_replicas=max((o.peak_replicas for o in outs), default=0),
            daily_requests=np.array([o.requests for o in outs]),
            daily_violations=np.array([o.violations for o in outs]),
            daily_replica_seconds=np.array([o.replica_seconds for o in outs]),
        )

    def reasons(self, label: str, days: Sequence[float]) -> Counter[str]:
        """The planner's decisions by reason of one (predictive) setting over `days`."""
        out: Counter[str] = Counter()
        for d in days:
            o = self.known.get((label, d)) or self.new.get((label, d))
            if o is not None:
                out.update(o.reasons)
        return out

    def day_models(self, days: Sequence[float]) -> Counter[str]:
        """Forecasts by model over `days` (each day's feed, counted once)."""
        out: Counter[str] = Counter()
        for d in days:
            o = next(
                (o for (_, day), o in (*self.known.items(), *self.new.items()) if day == d and o.models),
                None,
            )
            if o is not None:
                out.update(o.models)
        return out

    def new_rows(self) -> list[tuple[str, float, dict[str, Any]]]:
        """(setting, day start, outcome) of every day replayed here, for the store."""
        return [(label, day, o.as_dict()) for (label, day), o in sorted(self.new.items())]
