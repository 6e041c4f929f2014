"""Tuning: choose a model's operating point from its history to meet an SLO target at the least cost.

Every policy family has one knob, walked as a path from its most protective setting to its least:
- `static`: K spare replicas on the reactive autoscaler (a warm pool), K falling;
- `reactive`: the reactive autoscaler's target utilisation, rising;
- `predictive`: prewarm planning for the SLO itself (planner/slo.py) at a late-request budget b, rising;
  the operating point's lambda is b / (1 - target). Its family contains the warm pools (the points that do
  not use the forecast: the reactive floor + K spares): where the forecast buys nothing on the window, the
  pool runs, so prediction never costs a team more than the pool it replaces would on the same days;
- `quantile`: the planner's alpha-quantile stage at alpha, falling (the stage before planning for the SLO,
  kept for comparison);
- `oracle`: the clairvoyant plan at a headroom factor, falling (the room left, measured, not guessed);
- `keepalive` and `histogram` (backtest/idle_policies.py), for models whose floor is zero: a fixed
  keep-alive after the last request, falling; the hybrid histogram policy's (head, tail) percentiles of the
  idle times, narrowing; and `one-warm`, always one replica warm (no knob: the pool they replace). They
  run only where min_replicas is 0 (with a floor of one the first two are the reactive autoscaler).

Forecast once, plan many: the predictive candidates share one ForecastFeed (one fit and one re-anchoring
pass, every level predicted in the same call) and one arrival stream; each candidate adds one planner +
simulation pass. Each candidate is simulated once, with its outcome kept per day, and a selection reads any
window of days from those (tuning: the whole trailing window; the walk-forward: the days before each scored
day), so choosing at several targets costs no more simulation than choosing at one.

The selection rule (RULE): walk the path from the most protective setting; a setting passes when its
violation rate over the window, plus one standard error of its daily violation rates, is within
1 - target; stop at the first setting that fails, and run the last that passed. When the most protective
fails, it runs and the result says SloUnreachable. A path tested in a fixed order pays no winner's curse:
choosing the cheapest of many settings that passed a week by chance is more optimistic on the next day than
the first failure of a monotone walk.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backtest.idle_policies import HybridHistogram, KeepAlive
from backtest.policies import ForecastFeed, Oracle, Predictive, Reactive
from backtest.records import within_target
from backtest.run import BacktestConfig, Make, Replay
from backtest.simulator import Policy, ReplayResult
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner import PlannerSpec
from planner.slo import LEVELS as SLO_LEVELS

FAMILIES = ("static", "reactive", "predictive", "quantile", "oracle", "keepalive", "histogram", "one-warm")
# the policies of a zero floor, and the pool they replace (always one warm, the reactive autoscaler above)
ZERO_FAMILIES = ("keepalive", "histogram", "one-warm")
NONZERO_FAMILIES = tuple(f for f in FAMILIES if f not in ZERO_FAMILIES)
# every path from its most protective setting to its least
DEFAULT_BUDGETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
DEFAULT_ALPHAS = (0.995, 0.98, 0.95, 0.9, 0.8, 0.5)
DEFAULT_POOLS = (30, 25, 20, 15, 12, 10, 8, 6, 5, 4, 3, 2, 1, 0)
DEFAULT_UTILIZATIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_HEADROOMS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)
# 1 to 60 minutes, as the clouds' and Knative's settings run, and on to the 4 hours the hybrid histogram
# keeps at most: a sparse model's sessions are hours apart, and a frontier cut at 60 minutes would leave the
# keep-alive no point at the cold-start shares prewarm reaches
DEFAULT_KEEPALIVES_S = (
    14400.0, 10800.0, 7200.0, 5400.0, 3600.0, 2700.0, 1800.0, 1200.0, 900.0, 600.0, 300.0, 180.0, 120.0, 60.0
)  # fmt: skip
# at a zero floor the late budget runs further: whether to hold any replica is a chance of a request, and
# a model with a few requests an hour is at zero only at chances that no per-step late share would allow
ZERO_FLOOR_BUDGETS = (0.3, 0.5)
# (head, tail) percentiles of the idle times; the published setting is (5, 99)
DEFAULT_PERCENTILES = ((0.0, 100.0), (1.0, 99.9), (5.0, 99.0), (10.0, 95.0), (25.0, 90.0), (50.0, 75.0))
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
    """prewarm's operating point: the late-request budget it plans for (planner/slo.py), or the forecast
    quantile alpha (the quantile stage), or neither (the forecast is not used: the reactive floor plans
    alone); and the burst reserve (a count of spares plus a share of the planned replicas)."""

    alpha: float | None
    reserve_replicas: int = 0
    reserve_share: float = 0.0
    late_budget: float | None = None

    @property
    def uses_forecast(self) -> bool:
        return self.alpha is not None or self.late_budget is not None

    @property
    def label(self) -> str:
        if self.late_budget is not None:
            head = f"slo-{self.late_budget:g}"
        else:
            head = "floor" if self.alpha is None else f"a{self.alpha:g}"
        reserve = f"+{self.reserve_replicas}" if self.reserve_replicas or not self.uses_forecast else ""
        share = f"+{self.reserve_share:.0%}" if self.reserve_share else ""
        return f"{head}{reserve}{share}"

    def lam(self, target: float | None) -> float | None:
        """The budget as lambda x (1 - target): the operating point's one number for a target."""
        if self.late_budget is None or target is None:
            return None
        return self.late_budget / (1.0 - target)

    def spec(
        self, base: PlannerSpec, *, slo_target: float | None = None, unreachable: bool = False
    ) -> PlannerSpec:
        return replace(
            base,
            alpha=base.alpha if self.alpha is None else self.alpha,
            use_forecast=self.uses_forecast,
            late_budget=self.late_budget,
            burst_reserve_replicas=self.reserve_replicas,
            burst_reserve_share=self.reserve_share,
            slo_target=slo_target,
            slo_unreachable=unreachable,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "late_budget": self.late_budget,
            "use_forecast": self.uses_forecast,
            "burst_reserve_replicas": self.reserve_replicas,
            "burst_reserve_share": self.reserve_share,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> OperatingPoint:
        alpha, budget = doc.get("alpha"), doc.get("late_budget")
        uses = doc.get("use_forecast", True)
        return cls(
            None if alpha is None or not uses or budget is not None else float(alpha),
            int(doc.get("burst_reserve_replicas", 0)),
            float(doc.get("burst_reserve_share", 0.0)),
            None if budget is None or not uses else float(budget),
        )


@dataclass(frozen=True)
class TuningGrid:
    """Each family's settings (in any order: each is walked from its most protective setting)."""

    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    pools: tuple[int, ...] = DEFAULT_POOLS
    utilizations: tuple[float, ...] = DEFAULT_UTILIZATIONS
    headrooms: tuple[float, ...] = DEFAULT_HEADROOMS
    keepalives_s: tuple[float, ...] = DEFAULT_KEEPALIVES_S
    percentiles: tuple[tuple[float, float], ...] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        for b in self.budgets:
            if not 0.0 < b < 1.0:
                raise TuningError(f"late budget {b!r} is out of range; allowed (0, 1)")
        for a in self.alphas:
            if not 0.0 < a < 1.0:
                raise TuningError(f"alpha {a!r} is out of range; allowed (0, 1)")
        if any(k < 0 for k in self.pools):
            raise TuningError("pools are counts of replicas, >= 0")
        if any(not 0.0 < u <= 1.0 for u in self.utilizations):
            raise TuningError("target utilisations are in (0, 1]")
        if any(not 0.0 < h <= 2.0 for h in self.headrooms):
            raise TuningError("oracle headrooms are in (0, 2]")
        if any(not 0.0 < k <= 86_400.0 for k in self.keepalives_s):
            raise TuningError("keep-alives are in (0, 86400] seconds")
        for head, tail in self.percentiles:
            if not 0.0 <= head < tail <= 100.0:
                raise TuningError(f"histogram percentiles ({head}, {tail}): need 0 <= head < tail <= 100")
        ranked = sorted(self.percentiles)
        if any(b[1] > a[1] for a, b in itertools.pairwise(ranked)):
            raise TuningError("histogram percentiles must narrow as the head rises (one monotone knob)")
        if not (
            self.budgets
            and self.alphas
            and self.pools
            and self.utilizations
            and self.headrooms
            and self.keepalives_s
            and self.percentiles
        ):
            raise TuningError("every family needs at least one candidate")

    def path(self, family: str) -> list[Any]:
        """The family's settings, most protective first."""
        if family == "static":
            return sorted(set(self.pools), reverse=True)
        if family == "reactive":
            return sorted(set(self.utilizations))
        if family == "predictive":
            return sorted(set(self.budgets))
        if family == "quantile":
            return sorted(set(self.alphas), reverse=True)
        if family == "oracle":
            return sorted(set(self.headrooms), reverse=True)
        if family == "keepalive":
            return sorted(set(self.keepalives_s), reverse=True)
        if family == "histogram":
            return sorted(set(self.percentiles))  # heads rising, tails falling: narrowing
        if family == "one-warm":
            return [1]  # no knob: a floor of one
        raise TuningError(f"unknown policy family {family!r}; choose from {', '.join(FAMILIES)}")


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
    scores: tuple[WindowScore, ...]  # the settings walked, most protective first (predictive: then pools)
    days: int
    note: str = ""  # predictive: which of its two paths ran, and why

    @property
    def why(self) -> str:
        c = self.chosen
        budget = 1.0 - self.target
        if self.met:
            out = (
                f"{c.candidate.setting} is the last {self.family} setting that passed, walking from the most "
                f"protective: its violation rate over {self.days} day(s), {c.violation_rate:.3%}, plus one "
                f"standard error of its daily rates ({c.upper:.3%}) is within the {budget:.3%} the target "
                f"{self.target:g} allows"
            )
        else:
            out = (
                f"SloUnreachable: the most protective {self.family} setting, {c.candidate.setting}, did not "
                f"keep its violation rate plus one standard error within {budget:.3%} over {self.days} "
                f"day(s) ({c.violation_rate:.3%}), so it runs"
            )
        return f"{out}; {self.note}" if self.note else out

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
    "walk the knob from its most protective setting: a setting passes when its violation rate over the "
    "window plus one standard error of its daily rates is within 1 - target; stop at the first that fails "
    "and run the last that passed (none passed: the most protective, SloUnreachable). predictive runs the "
    "cheaper of its own walk and the warm pools' walk (floor + K) on the window"
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
    return WindowScore(c, total_r, total_v, hours, rate, upper, within_target(upper, target))


def select_path(family: str, path: Sequence[Candidate], target: float, days: range) -> Selection:
    """The rule (RULE) over one knob's candidates, most protective first (only as many as were simulated:
    a walk that stopped at its first failure simulated no further)."""
    if not path:
        raise TuningError(f"no {family} candidates to choose from")
    scores = tuple(score_window(c, days, target) for c in path)
    chosen = None
    for score in scores:
        if not score.met:
            break
        chosen = score
    if chosen is None:
        return Selection(family, target, scores[0], False, scores, len(days))
    return Selection(family, target, chosen, True, scores, len(days))


def as_floor_point(pool: Candidate) -> Candidate:
    """A warm pool as the predictive family's point that does not use the forecast (the same plan: the
    tests hold the two simulations equal, so the pool's outcome stands for it)."""
    point = OperatingPoint(None, int(pool.value["spare_replicas"]))
    return Candidate("predictive", point.label, point.as_dict(), pool.result)


def select(family: str, runs: CandidateRuns, target: float, days: range) -> Selection:
    """The family's selection on `days` (predictive: the cheaper of its own walk and the pools')."""
    own = select_path(family, runs.families[family], target, days)
    pools = runs.families.get("static")
    if family != "predictive" or not pools:
        return own
    floor = select_path(family, [as_floor_point(c) for c in pools], target, days)
    both = own.scores + floor.scores
    if own.met and floor.met:
        pick, other = (own, floor) if own.chosen.replica_hours <= floor.chosen.replica_hours else (floor, own)
        note = (
            f"{pick.chosen.candidate.setting} costs {pick.chosen.replica_hours:.1f} replica-hours on the "
            f"window against {other.chosen.candidate.setting}'s {other.chosen.replica_hours:.1f}"
        )
    elif own.met or floor.met:
        pick = own if own.met else floor
        note = f"the {'warm pools' if own.met else 'forecast'} walk had no setting that passed"
    else:
        pick = own if own.chosen.violation_rate <= floor.chosen.violation_rate else floor
        note = "neither walk passed: the more protective of their most protective settings runs"
    return replace(pick, scores=both, note=note)


@dataclass
class CandidateRuns:
    """Every family's candidates simulated once over one replay, with per-day outcomes."""

    series: str
    start_s: float  # the replay's first and last simulated second (epoch)
    end_s: float
    families: dict[str, list[Candidate]] = field(default_factory=dict)
    tick_s: float = 0.0  # the replay's tick, where its results keep per-tick states (0: they do not)
    models: dict[str, int] = field(default_factory=dict)  # forecasts by model, from the shared feed
    # settings not simulated because the walk stopped at a setting that failed the target before them
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def days(self) -> int:
        first = next(iter(self.families.values()))
        return int(first[0].result.daily_requests.size)


# runs one setting (its label, and its policy made for a replay and its forecast feed) to a result
Runner = Callable[[str, Make], ReplayResult]


def candidate_levels(grid: TuningGrid, families: Sequence[str] = FAMILIES) -> tuple[float, ...]:
    """The forecast quantiles the candidates of `families` plan at (the feed predicts them all at once)."""
    out: set[float] = set()
    if "predictive" in families:
        out.update(SLO_LEVELS)
    if "quantile" in families:
        out.update(grid.alphas)
    return tuple(sorted(out))


def default_families(cfg: BacktestConfig) -> tuple[str, ...]:
    """Every family that means something for the model: the scale-to-zero ones only at a zero floor."""
    return FAMILIES if cfg.min_replicas == 0 else NONZERO_FAMILIES


def simulate_candidates(
    series: TrafficSeries,
    cfg: BacktestConfig,
    grid: TuningGrid | None = None,
    *,
    families: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    stop_at: float | None = None,
    runner: tuple[Runner, float, float, Callable[[], dict[str, int]]] | None = None,
) -> CandidateRuns:
    """Simulate the candidates of `families` over the replay of `series` (after cfg's warm-up), each knob
    in its path order (most protective first).

    With `stop_at` (an SLO target, for one selection over the whole replay), each walk stops at its first
    setting that fails the target: the rule never runs a setting past it, so the rest need no simulation.
    The walk-forward, which selects on every day's window and at several targets, simulates them all.

    `runner` (run, start_s, end_s, models) replaces the one continuous replay with another way to run a
    setting: the nightly ledger's day-by-day replays (backtest/ledger.py)."""
    grid = grid or TuningGrid()
    if cfg.min_replicas == 0:
        grid = replace(grid, budgets=tuple(sorted({*grid.budgets, *ZERO_FLOOR_BUDGETS})))
    families = default_families(cfg) if families is None else families
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise TuningError(f"unknown policy family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
    if runner is None:
        run, start_s, end_s, models = _continuous(series, cfg, candidate_levels(grid, families))
    else:
        run, start_s, end_s, models = runner
    runs = CandidateRuns(series.name, start_s, end_s, tick_s=cfg.tick_s if runner is None else 0.0)
    base = cfg.planner_spec()
    makers: dict[str, Callable[[Any], tuple[str, dict[str, Any], Make]]] = {
        "static": lambda k: (f"static-{k}", {"spare_replicas": k}, pool_policy(cfg, k)),
        "reactive": lambda u: (f"util-{u:g}", {"target_utilization": u}, reactive_policy(cfg, u)),
        "predictive": lambda b: _point(OperatingPoint(None, late_budget=b), base),
        "quantile": lambda a: _point(OperatingPoint(a), base),
        "oracle": lambda h: (f"oracle-{h:g}", {"headroom": h}, oracle_policy(cfg, h)),
        "keepalive": lambda k: (
            f"keepalive-{k / 60:g}m",
            {"keep_alive_s": k},
            keepalive_policy(cfg, k),
        ),
        "one-warm": lambda n: ("one-warm", {"min_replicas": n}, one_warm_policy(cfg)),
        "histogram": lambda p: (
            f"histogram-{p[0]:g}-{p[1]:g}",
            {"head_pct": p[0], "tail_pct": p[1]},
            histogram_policy(cfg, p),
        ),
    }
    # the pools first: the predictive family's own walk is compared with theirs
    walks = ["static"] if "static" in families or "predictive" in families else []
    walks += [f for f in families if f != "static"]
    for family in walks:
        path = grid.path(family)
        cands: list[Candidate] = []
        for i, setting in enumerate(path):
            label, value, make = makers[family](setting)
            res = run(label, make)
            cands.append(Candidate(family, label, value, res))
            if progress is not None:
                progress(1)
            every_day = range(res.daily_requests.size)
            if stop_at is not None and not score_window(cands[-1], every_day, stop_at).met:
                rest = [makers[family](x)[0] for x in path[i + 1 :]]
                if rest:
                    runs.skipped.setdefault(family, []).extend(rest)
                break
        runs.families[family] = cands
    if "predictive" in families or "quantile" in families:
        runs.models = models()
    return runs


def _point(p: OperatingPoint, base: PlannerSpec) -> tuple[str, dict[str, Any], Make]:
    return p.label, p.as_dict(), point_policy(p, base)


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


def oracle_policy(cfg: BacktestConfig, headroom: float) -> Make:
    """The oracle at a headroom factor: the replicas the true arrivals need, times `headroom`."""

    def make(replay: Replay, feed: ForecastFeed) -> Policy:
        return Oracle(
            replay.arrivals,
            cfg.capacity_rps,
            t_load_s=cfg.t_load_s,
            tick_s=cfg.tick_s,
            slo_wait_s=cfg.slo_wait_s,
            min_replicas=cfg.min_replicas,
            max_replicas=cfg.max_replicas,
            headroom=headroom,
            name="oracle" if headroom == 1.0 else f"oracle-{headroom:g}",
        )

    return make


def _zero_floor_reactive(cfg: BacktestConfig) -> Reactive:
    return replace(cfg, min_replicas=0).reactive()


def one_warm_policy(cfg: BacktestConfig) -> Make:
    """Always one warm: the reactive autoscaler with a floor of one, the pool a zero floor replaces."""

    def make(replay: Replay, feed: ForecastFeed) -> Policy:
        return replace(cfg, min_replicas=1).reactive(name="one-warm")

    return make


def keepalive_policy(cfg: BacktestConfig, keep_alive_s: float) -> Make:
    """A fixed keep-alive of `keep_alive_s` after the last request (backtest/idle_policies.py)."""

    def make(replay: Replay, feed: ForecastFeed) -> Policy:
        return KeepAlive(_zero_floor_reactive(cfg), keep_alive_s)

    return make


def histogram_policy(cfg: BacktestConfig, percentiles: tuple[float, float]) -> Make:
    """The hybrid histogram policy at (head, tail) percentiles (backtest/idle_policies.py)."""

    def make(replay: Replay, feed: ForecastFeed) -> Policy:
        return HybridHistogram(_zero_floor_reactive(cfg), *percentiles, t_load_s=cfg.t_load_s)

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


def candidate_count(grid: TuningGrid, families: Sequence[str] = NONZERO_FAMILIES) -> int:
    """Simulations simulate_candidates runs at most (for progress bars)."""
    walks = set(families) | ({"static"} if "predictive" in families else set())
    return sum(len(grid.path(f)) for f in walks)


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
            | {
                "setting": self.selections["predictive"].chosen.candidate.setting,
                "lambda": self.point.lam(self.target),
            },
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
            # settings past a walk's first failure (the rule never runs them: not simulated)
            "not_simulated": self.skipped,
        }


def tune(
    series: TrafficSeries,
    cfg: BacktestConfig,
    target: float,
    *,
    window_s: float = DEFAULT_TUNE_WINDOW_S,
    grid: TuningGrid | None = None,
    families: Sequence[str] = ("static", "reactive", "predictive"),
    progress: Callable[[int], None] | None = None,
) -> TuningResult:
    """Tune on the trailing `window_s` of `series` (everything before it is history for the forecaster):
    each family's walk simulated over the window until its first failure, each family's selection by the
    rule."""
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
    selections = {f: select(f, runs, target, days) for f in runs.families}
    return TuningResult(
        series.name, target, cfg.slo_wait_s, runs.start_s, runs.end_s, selections, runs.models, runs.skipped
    )
