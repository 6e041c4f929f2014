"""Tuning: choose a model's operating point from its history to meet an SLO target at the least cost.

Every policy family has one knob, and each setting of it is a candidate:
- `static`: K spare replicas on the reactive autoscaler (a warm pool);
- `reactive`: the reactive autoscaler's target utilisation;
- `predictive`: prewarm's operating point, (alpha, burst reserve); the points that do not use the forecast
  (reactive floor + K spares) are the static family's pools, so a warm pool is one point of prewarm's family
  and tuning on a history can only do as well as the best pool on it, or better.

Forecast once, plan many: the predictive candidates share one ForecastFeed (one fit and one re-anchoring
pass, every candidate alpha predicted in the same call) and one arrival stream; each candidate adds one
planner + simulation pass. Each candidate is simulated once, with its outcome kept per day, and a selection
reads any window of days from those (tuning: the whole trailing window; the walk-forward: the days before
each scored day).

The selection rule: a candidate meets the target on a window when its violation rate there, plus one
standard error of its daily violation rates (the day-to-day variation the next day may bring), is within
1 - target; the cheapest (replica-hours) candidate that meets it wins. When none does, the most protective
candidate (the lowest violation rate) runs, and the result says SloUnreachable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backtest.policies import ForecastFeed, Predictive
from backtest.run import BacktestConfig, Make, Replay
from backtest.simulator import Policy, ReplayResult
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner import PlannerSpec

FAMILIES = ("static", "reactive", "predictive")
DEFAULT_ALPHAS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.995)
DEFAULT_RESERVES = (0, 1, 2, 4, 8)
DEFAULT_POOLS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
DEFAULT_UTILIZATIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MARGIN_SE = 1.0  # standard errors of the daily violation rates added to a window's rate before comparing
DEFAULT_TUNE_WINDOW_S = 7 * SECONDS_PER_DAY


class TuningError(ValueError):
    pass


def check_target(value: float, key: str = "slo.target") -> float:
    """An SLO target is a share of requests in (0, 1); 99 is almost always 99% written as a percentage."""
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0.0 < value < 1.0:
        hint = f" (for {value:g}% write {value / 100:g})" if 1.0 < value < 100.0 else ""
        raise TuningError(f"{key}={value!r} is out of range; allowed (0, 1), a share of requests{hint}")
    return float(value)


@dataclass(frozen=True)
class OperatingPoint:
    """prewarm's operating point: the forecast quantile alpha (None: the forecast is not used, the reactive
    floor plans alone) and the burst reserve (a count of spares plus a share of the planned replicas)."""

    alpha: float | None
    reserve_replicas: int = 0
    reserve_share: float = 0.0

    @property
    def label(self) -> str:
        head = "floor" if self.alpha is None else f"a{self.alpha:g}"
        reserve = f"+{self.reserve_replicas}" if self.reserve_replicas or not self.reserve_share else ""
        share = f"+{self.reserve_share:.0%}" if self.reserve_share else ""
        return f"{head}{reserve}{share}"

    def spec(
        self, base: PlannerSpec, *, slo_target: float | None = None, unreachable: bool = False
    ) -> PlannerSpec:
        return replace(
            base,
            alpha=base.alpha if self.alpha is None else self.alpha,
            use_forecast=self.alpha is not None,
            burst_reserve_replicas=self.reserve_replicas,
            burst_reserve_share=self.reserve_share,
            slo_target=slo_target,
            slo_unreachable=unreachable,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "use_forecast": self.alpha is not None,
            "burst_reserve_replicas": self.reserve_replicas,
            "burst_reserve_share": self.reserve_share,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> OperatingPoint:
        alpha = doc.get("alpha")
        return cls(
            None if alpha is None or not doc.get("use_forecast", True) else float(alpha),
            int(doc.get("burst_reserve_replicas", 0)),
            float(doc.get("burst_reserve_share", 0.0)),
        )


@dataclass(frozen=True)
class TuningGrid:
    """The candidates of each family. `shares` adds predictive points whose reserve is a share of the
    planned replicas (alpha x share, with no fixed spares)."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    reserves: tuple[int, ...] = DEFAULT_RESERVES
    shares: tuple[float, ...] = ()
    pools: tuple[int, ...] = DEFAULT_POOLS
    utilizations: tuple[float, ...] = DEFAULT_UTILIZATIONS

    def __post_init__(self) -> None:
        for a in self.alphas:
            if not 0.0 < a < 1.0:
                raise TuningError(f"alpha {a!r} is out of range; allowed (0, 1)")
        if any(r < 0 for r in self.reserves) or any(k < 0 for k in self.pools):
            raise TuningError("reserves and pools are counts of replicas, >= 0")
        if any(not 0.0 < s <= 10.0 for s in self.shares):
            raise TuningError("reserve shares are in (0, 10]")
        if any(not 0.0 < u <= 1.0 for u in self.utilizations):
            raise TuningError("target utilisations are in (0, 1]")
        if not self.alphas or not self.reserves or not self.pools or not self.utilizations:
            raise TuningError("every family needs at least one candidate")

    def points(self) -> list[OperatingPoint]:
        """The predictive candidates that use the forecast (the forecast-free ones are the pools)."""
        pts = [OperatingPoint(a, r) for a in self.alphas for r in self.reserves]
        pts += [OperatingPoint(a, 0, s) for a in self.alphas for s in self.shares]
        return pts


@dataclass
class Candidate:
    family: str
    setting: str  # a label: "static-4", "util-0.6", "a0.95+2", "floor+4"
    value: dict[str, Any]  # the knob, as JSON
    result: ReplayResult


@dataclass(frozen=True)
class WindowScore:
    candidate: Candidate
    requests: float
    violations: float
    replica_hours: float
    violation_rate: float
    upper: float  # the rate plus MARGIN_SE standard errors of the daily rates
    met: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": self.candidate.setting,
            **self.candidate.value,
            "violation_rate": round(self.violation_rate, 6),
            "violation_rate_upper": round(self.upper, 6),
            "replica_hours": round(self.replica_hours, 3),
            "met": self.met,
        }


@dataclass(frozen=True)
class Selection:
    family: str
    target: float
    chosen: WindowScore
    met: bool  # False: SloUnreachable, the most protective candidate
    scores: tuple[WindowScore, ...]
    days: int

    @property
    def why(self) -> str:
        c = self.chosen
        budget = 1.0 - self.target
        if self.met:
            return (
                f"{c.candidate.setting} is the cheapest of {len(self.scores)} {self.family} candidates "
                f"whose violation rate over {self.days} day(s), {c.violation_rate:.3%}, plus one standard "
                f"error of its daily rates ({c.upper:.3%}) is within the {budget:.3%} the target "
                f"{self.target:g} allows"
            )
        return (
            f"SloUnreachable: none of {len(self.scores)} {self.family} candidates kept its violation rate "
            f"plus one standard error within {budget:.3%} over {self.days} day(s); "
            f"{c.candidate.setting} is the most protective ({c.violation_rate:.3%})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "target": self.target,
            "days": self.days,
            "chosen": self.chosen.as_dict(),
            "met": self.met,
            "why": self.why,
            "rule": RULE,
            "candidates": [s.as_dict() for s in self.scores],
        }


RULE = (
    "cheapest candidate whose violation rate over the window, plus one standard error of its daily "
    "violation rates, is within 1 - target; none: the most protective (SloUnreachable)"
)


def score_window(c: Candidate, days: range, target: float) -> WindowScore:
    r = c.result
    req = r.daily_requests[days.start : days.stop]
    vio = r.daily_violations[days.start : days.stop]
    total_r, total_v = float(req.sum()), float(vio.sum())
    rate = total_v / total_r if total_r > 0 else 0.0
    busy = req > 0
    n = int(busy.sum())
    se = 0.0
    if n > 1:  # request-weighted spread of the daily rates around the window's rate
        daily = vio[busy] / req[busy]
        var = float(np.sum(req[busy] * (daily - rate) ** 2) / total_r)
        se = math.sqrt(var / n)
    upper = rate + MARGIN_SE * se
    hours = float(r.daily_replica_seconds[days.start : days.stop].sum()) / 3600
    return WindowScore(c, total_r, total_v, hours, rate, upper, upper <= 1.0 - target + 1e-12)


def select(family: str, candidates: Sequence[Candidate], target: float, days: range) -> Selection:
    """The selection rule (module docstring) over the days `days` of every candidate's outcome."""
    if not candidates:
        raise TuningError(f"no {family} candidates to choose from")
    scores = tuple(score_window(c, days, target) for c in candidates)
    met = [s for s in scores if s.met]
    if met:
        best = min(met, key=lambda s: (s.replica_hours, s.violation_rate))
    else:
        best = min(scores, key=lambda s: (s.violation_rate, s.replica_hours))
    return Selection(family, target, best, bool(met), scores, len(days))


@dataclass
class CandidateRuns:
    """Every family's candidates simulated once over one replay, with per-day outcomes."""

    series: str
    start_s: float  # the replay's first and last simulated second (epoch)
    end_s: float
    families: dict[str, list[Candidate]] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)  # forecasts by model, from the shared feed
    # settings not simulated because a cheaper setting of the same knob already met the target
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def days(self) -> int:
        first = next(iter(self.families.values()))
        return int(first[0].result.daily_requests.size)


# runs one setting (its label, and its policy made for a replay and its forecast feed) to a result
Runner = Callable[[str, Make], ReplayResult]


def candidate_levels(grid: TuningGrid) -> tuple[float, ...]:
    """The forecast quantiles the predictive candidates plan at."""
    return tuple(sorted({p.alpha for p in grid.points() if p.alpha is not None}))


def simulate_candidates(
    series: TrafficSeries,
    cfg: BacktestConfig,
    grid: TuningGrid | None = None,
    *,
    families: Sequence[str] = FAMILIES,
    progress: Callable[[int], None] | None = None,
    stop_at: float | None = None,
    runner: tuple[Runner, float, float, Callable[[], dict[str, int]]] | None = None,
) -> CandidateRuns:
    """Simulate every candidate of `families` over the replay of `series` (after cfg's warm-up).

    With `stop_at` (an SLO target, for one selection over the whole replay), each knob is walked from its
    cheapest setting up (fewer spares, higher utilisation, a smaller reserve at each alpha) and stops at the
    first setting that meets the target: a dearer setting of the same knob keeps at least as many replicas
    on every tick, so it cannot be the cheapest that meets it. The walk-forward, which selects on every
    day's window, simulates them all.

    `runner` (run, start_s, end_s, models) replaces the one continuous replay with another way to run a
    setting: the nightly ledger's day-by-day replays (backtest/ledger.py)."""
    grid = grid or TuningGrid()

    def met(result: ReplayResult) -> bool:
        if stop_at is None:
            return False
        c = Candidate("", "", {}, result)
        return score_window(c, range(0, int(result.daily_requests.size)), stop_at).met

    def skip(family: str, settings: list[str]) -> None:
        if settings:
            runs.skipped.setdefault(family, []).extend(settings)

    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise TuningError(f"unknown policy family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
    if runner is None:
        run, start_s, end_s, models = _continuous(series, cfg, candidate_levels(grid))
    else:
        run, start_s, end_s, models = runner
    runs = CandidateRuns(series.name, start_s, end_s)

    def done() -> None:
        if progress is not None:
            progress(1)

    pools: list[Candidate] = []
    if "static" in families or "predictive" in families:
        ks = sorted(grid.pools)
        for i, k in enumerate(ks):
            res = run(f"static-{k}", pool_policy(cfg, k))
            pools.append(Candidate("static", f"static-{k}", {"spare_replicas": k}, res))
            done()
            if met(res):
                skip("static", [f"static-{x}" for x in ks[i + 1 :]])
                break
    if "static" in families:
        runs.families["static"] = pools
    if "reactive" in families:
        runs.families["reactive"] = []
        us = sorted(grid.utilizations, reverse=True)  # the cheapest first
        for i, u in enumerate(us):
            res = run(f"util-{u:g}", reactive_policy(cfg, u))
            runs.families["reactive"].append(
                Candidate("reactive", f"util-{u:g}", {"target_utilization": u}, res)
            )
            done()
            if met(res):
                skip("reactive", [f"util-{x:g}" for x in us[i + 1 :]])
                break
    if "predictive" in families:
        base = cfg.planner_spec()  # each point sets its own alpha and reserve on it
        cands = []
        enough: set[tuple[float | None, float]] = set()  # (alpha, share) whose reserve already met it
        for p in sorted(grid.points(), key=lambda p: (p.alpha or 0.0, p.reserve_share, p.reserve_replicas)):
            knob = (p.alpha, p.reserve_share)
            if knob in enough:
                skip("predictive", [p.label])
                continue
            res = run(p.label, point_policy(p, base))
            cands.append(Candidate("predictive", p.label, p.as_dict(), res))
            done()
            if met(res) and p.reserve_share == 0:
                enough.add(knob)
        # the forecast-free points are the pools: the same plan, simulated once (tests hold them equal)
        for c in pools:
            fp = OperatingPoint(None, c.value["spare_replicas"])
            cands.append(Candidate("predictive", fp.label, fp.as_dict(), c.result))
        runs.families["predictive"] = cands
        runs.models = models()
    return runs


def pool_policy(cfg: BacktestConfig, spare: int) -> Make:
    """The warm pool static-<spare>: the reactive autoscaler with `spare` replicas on top."""

    def make(replay: Replay, feed: ForecastFeed) -> Policy:
        return cfg.reactive(spare=spare, name=f"static-{spare}")

    return make


def reactive_policy(cfg: BacktestConfig, utilization: float) -> Make:
    """The reactive autoscaler at a target utilisation."""

    def make(replay: Replay, feed: ForecastFeed) -> Policy:
        return cfg.reactive(target_utilization=utilization, name=f"reactive-u{utilization:g}")

    return make


def point_policy(p: OperatingPoint, base: PlannerSpec) -> Make:
    """The planner at operating point `p`, on a day's (or the whole replay's) shared forecast feed."""
    return lambda rp, fd: Predictive(p.spec(base), rp.history, name=p.label, feed=fd)


def _continuous(
    series: TrafficSeries, cfg: BacktestConfig, levels: Sequence[float]
) -> tuple[Runner, float, float, Callable[[], dict[str, int]]]:
    """One replay of the whole series after cfg's warm-up, with one forecast feed for every candidate."""
    replay = Replay.of(series, cfg)
    feed = replay.feed(tuple(levels) or (cfg.planner_spec().quantile,))
    return (
        lambda label, make: replay.run(make(replay, feed)),
        replay.sim.start_s,
        replay.sim.end_s,
        lambda: dict(feed.models),
    )


def candidate_count(grid: TuningGrid, families: Sequence[str] = FAMILIES) -> int:
    """Simulations simulate_candidates runs (for progress bars)."""
    n = len(grid.pools) if ("static" in families or "predictive" in families) else 0
    n += len(grid.utilizations) if "reactive" in families else 0
    n += len(grid.points()) if "predictive" in families else 0
    return n


@dataclass(frozen=True)
class TuningResult:
    """One tuning run: each family's selection over the whole trailing window, and the saving of prewarm's
    chosen point against the warm pool tuned the same way on the same history."""

    series: str
    target: float
    slo_wait_s: float
    start_s: float
    end_s: float
    selections: dict[str, Selection]
    models: dict[str, int]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def point(self) -> OperatingPoint:
        return OperatingPoint.from_dict(self.selections["predictive"].chosen.candidate.value)

    @property
    def unreachable(self) -> bool:
        return not self.selections["predictive"].met

    def per_day_hours(self, family: str) -> float | None:
        sel = self.selections.get(family)
        return sel.chosen.replica_hours / max(1, sel.days) if sel else None

    def as_dict(self) -> dict[str, Any]:
        pred, pool = self.per_day_hours("predictive"), self.per_day_hours("static")
        return {
            "series": self.series,
            "target": self.target,
            "slo_wait_s": self.slo_wait_s,
            "window_start_s": self.start_s,
            "window_end_s": self.end_s,
            "rule": RULE,
            "chosen": self.point.as_dict()
            | {"setting": self.selections["predictive"].chosen.candidate.setting},
            "slo_unreachable": self.unreachable,
            "why": self.selections["predictive"].why,
            "warm_pool": {
                "setting": self.selections["static"].chosen.candidate.setting
                if "static" in self.selections
                else None,
                "met": self.selections["static"].met if "static" in self.selections else None,
                "replica_hours_per_day": None if pool is None else round(pool, 3),
            },
            "replica_hours_per_day": None if pred is None else round(pred, 3),
            "saving_vs_warm_pool": None if not pred or not pool else round(1.0 - pred / pool, 4),
            "hours_ratio_vs_warm_pool": None if not pred or not pool else round(pred / pool, 4),
            "forecasts_by_model": self.models,
            "families": {f: s.as_dict() for f, s in self.selections.items()},
            # dearer settings of a knob whose cheaper setting already met the target (not simulated)
            "not_simulated": self.skipped,
        }


def tune(
    series: TrafficSeries,
    cfg: BacktestConfig,
    target: float,
    *,
    window_s: float = DEFAULT_TUNE_WINDOW_S,
    grid: TuningGrid | None = None,
    families: Sequence[str] = FAMILIES,
    progress: Callable[[int], None] | None = None,
) -> TuningResult:
    """Tune on the trailing `window_s` of `series` (everything before it is history for the forecaster):
    every family's candidates simulated over the window, each family's selection by the rule."""
    check_target(target)
    if "predictive" not in families:
        raise TuningError("tuning chooses prewarm's operating point: the predictive family is required")
    if window_s < SECONDS_PER_DAY:
        raise TuningError(f"tune window {window_s / SECONDS_PER_DAY:g} days is too short; allowed >= 1 day")
    warmup = series.span_s - window_s
    if warmup < SECONDS_PER_DAY:
        raise TuningError(
            f"{series.name!r} spans {series.span_s / SECONDS_PER_DAY:.2f} days: tuning on a "
            f"{window_s / SECONDS_PER_DAY:g}-day window needs at least a day of history before it"
        )
    runs = simulate_candidates(
        series, replace(cfg, warmup_s=warmup), grid, families=families, progress=progress, stop_at=target
    )
    days = range(0, runs.days)
    selections = {f: select(f, cands, target, days) for f, cands in runs.families.items()}
    return TuningResult(
        series.name, target, cfg.slo_wait_s, runs.start_s, runs.end_s, selections, runs.models, runs.skipped
    )
