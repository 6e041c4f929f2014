"""Run every policy over one series and compare them.

The same `spread_arrivals` seed feeds every policy, so they face identical requests. The first `warmup_s`
of the trace is history only (the policies may read it) and is simulated for no one; the run starts warm
at the end of the warm-up.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtest.policies import ForecastFeed, Oracle, Predictive, Reactive, Scheduled
from backtest.records import Frontier, WalkForward
from backtest.simulator import Policy, ReplayResult, Ticks, TLoadSampler, by_tick, simulate, spread_arrivals
from forecaster.dropouts import DEFAULT_MAX_S, DEFAULT_MIN_COUNT, DropoutWatch
from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries
from planner import PlannerSpec

POLICIES = ("reactive", "static", "scheduled", "predictive", "oracle")
DEFAULT_UTILIZATION = 0.8  # the reactive autoscaler's (and the planner's) target utilisation


@dataclass(frozen=True)
class BacktestConfig:
    capacity_rps: float
    t_load_s: float = 300.0
    slo_wait_s: float = 2.0
    tick_s: int = 30
    min_replicas: int = 1
    max_replicas: int = 10_000
    target_utilization: float = DEFAULT_UTILIZATION
    warmup_s: float = 2 * SECONDS_PER_DAY
    warm_pools: tuple[int, ...] = (2,)
    policies: tuple[str, ...] = POLICIES
    model: str = "auto-fast"
    alpha: float | None = None  # None: the newsvendor fractile of the planner's default costs
    # extra predictive runs, one per alpha, named predictive-alpha<A>: the policy's own cost curve, to set
    # against the static sweep's (which alpha a team should run depends on its traffic)
    alpha_sweep: tuple[float, ...] = ()
    # the rest of the operating point the predictive policy runs at (the live model's, in the nightly job)
    burst_reserve_replicas: int = 0
    burst_reserve_share: float = 0.0
    use_forecast: bool = True
    seed: int = 0
    t_load_sampler: TLoadSampler | None = None
    refresh_s: float = 300.0  # forecast re-anchored on new data this often: the service's schedules.refit_s
    dropout_min_count: float = DEFAULT_MIN_COUNT  # as the model's config sets it
    dropout_max_s: float = DEFAULT_MAX_S

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
        if self.capacity_rps <= 0:
            raise ValueError(f"capacity_rps={self.capacity_rps} must be > 0")
        if self.slo_wait_s < 0 or self.t_load_s < 0 or self.tick_s <= 0:
            raise ValueError("slo_wait_s and t_load_s must be >= 0 and tick_s > 0")
        for a in (self.alpha, *self.alpha_sweep):
            if a is not None:  # PlannerSpec's own check, before a sweep has run for hours
                self.planner_spec(a)

    def reactive(
        self, *, spare: int = 0, target_utilization: float | None = None, name: str = ""
    ) -> Reactive:
        """The reactive autoscaler for this model; with `spare`, the warm pool static-<spare>."""
        return Reactive(
            self.capacity_rps,
            target_utilization=target_utilization or self.target_utilization,
            t_load_s=self.t_load_s,
            tick_s=float(self.tick_s),
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            spare=spare,
            name=name or None,
        )

    def planner_spec(self, alpha: float | None = None) -> PlannerSpec:
        """The live planner's spec for this model; `alpha` overrides the configured one."""
        return PlannerSpec(
            capacity_rps_per_replica=self.capacity_rps,
            t_load_s=self.t_load_s,
            tick_s=float(self.tick_s),
            target_utilization=self.target_utilization,
            slo_wait_s=self.slo_wait_s,
            alpha=self.alpha if alpha is None else alpha,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            burst_reserve_replicas=self.burst_reserve_replicas,
            burst_reserve_share=self.burst_reserve_share,
            use_forecast=self.use_forecast,
        )


@dataclass
class SeriesBacktest:
    series: str
    results: dict[str, ReplayResult]
    config: BacktestConfig
    start_s: float  # epoch of the first simulated second
    demand_per_tick: list[float] = field(default_factory=list)  # requests/s per tick, for plots
    notes: list[str] = field(default_factory=list)
    walk_forward: WalkForward | None = None  # with --slo-target: the walk at the first target
    walk_forwards: list[WalkForward] = field(default_factory=list)  # one per target
    frontier: Frontier | None = None  # each family's outcomes over the targets

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        return {name: r.as_dict() for name, r in self.results.items()}


def capacity_for(series: TrafficSeries, replicas: int = 15, quantile: float = 0.999) -> float:
    """Per-replica capacity at which the series' `quantile` rate needs `replicas` replicas."""
    rate = np.where(np.isfinite(series.values), series.values, 0.0) / series.step_s
    return float(np.quantile(rate, quantile)) / replicas


@dataclass(frozen=True)
class Replay:
    """One series made ready to replay: the simulated part after the warm-up, its arrivals second by second
    (one seed, so every policy faces identical requests), and the history a policy may read."""

    series: TrafficSeries
    sim: TrafficSeries
    arrivals: FloatArray
    cfg: BacktestConfig

    @classmethod
    def of(cls, series: TrafficSeries, cfg: BacktestConfig) -> Replay:
        warm = math.ceil(cfg.warmup_s / series.step_s)
        if warm >= len(series) - 1:
            raise ValueError(
                f"{series.name!r} spans {series.span_s / 86400:.2f} days, not more than the "
                f"{cfg.warmup_s / 86400:g}-day warm-up"
            )
        sim = series.slice(warm, len(series))
        return cls(series, sim, spread_arrivals(sim, cfg.seed), cfg)

    def history(self, now_s: float) -> TrafficSeries:
        return self.series.before(now_s)

    def feed(self, levels: Sequence[float]) -> ForecastFeed:
        """One forecast feed over this replay for every predictive policy planning at `levels` (forecast
        once, plan many), re-anchored as often as the service re-anchors."""
        cfg = self.cfg
        base = cfg.planner_spec()
        return ForecastFeed(
            self.history,
            levels=tuple(levels),
            lookahead_s=base.lookahead_s,
            break_even_s=base.break_even_s,
            model=cfg.model,
            refresh_s=max(cfg.refresh_s, float(self.series.step_s)),
            dropouts=DropoutWatch(cfg.dropout_min_count, cfg.dropout_max_s),
        )

    @functools.cached_property
    def ticks(self) -> Ticks:
        """The arrivals cut into the replay's ticks, once for every setting replayed on them."""
        return Ticks.of(self.arrivals, self.cfg.tick_s)

    def run(self, policy: Policy) -> ReplayResult:
        cfg = self.cfg
        return simulate(
            self.ticks,
            policy,
            start_s=self.sim.start_s,
            capacity_rps=cfg.capacity_rps,
            t_load_s=cfg.t_load_s,
            slo_wait_s=cfg.slo_wait_s,
            tick_s=cfg.tick_s,
            t_load_sampler=cfg.t_load_sampler,
        )


# a setting's policy made for one replay and its forecast feed: how tuning and the nightly ledger name the
# settings they run (here, with the replay, so that both sit above it)
Make = Callable[[Replay, ForecastFeed], Policy]


def run_backtest(
    series: TrafficSeries, cfg: BacktestConfig, progress: Callable[[int], None] | None = None
) -> SeriesBacktest:
    replay = Replay.of(series, cfg)
    sim, arrivals, history = replay.sim, replay.arrivals, replay.history

    def make(name: str) -> list[Policy]:
        common: dict[str, Any] = {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas}
        if name == "reactive":
            return [cfg.reactive()]
        if name == "static":
            return [cfg.reactive(spare=k, name=f"static-{k}") for k in cfg.warm_pools]
        if name == "scheduled":
            return [
                Scheduled(
                    cfg.capacity_rps,
                    history,
                    t_load_s=cfg.t_load_s,
                    target_utilization=cfg.target_utilization,
                    **common,
                )
            ]
        if name == "predictive":
            return [
                Predictive(
                    cfg.planner_spec(alpha),
                    history,
                    model=cfg.model,
                    refresh_s=max(cfg.refresh_s, float(series.step_s)),
                    dropouts=DropoutWatch(cfg.dropout_min_count, cfg.dropout_max_s),
                    name=label,
                )
                for label, alpha in (("predictive", None), *((alpha_policy(a), a) for a in cfg.alpha_sweep))
            ]
        return [
            Oracle(
                arrivals,
                cfg.capacity_rps,
                t_load_s=cfg.t_load_s,
                tick_s=cfg.tick_s,
                slo_wait_s=cfg.slo_wait_s,
                **common,
            )
        ]

    results: dict[str, ReplayResult] = {}
    notes: list[str] = []
    for name in cfg.policies:
        for policy in make(name):
            results[policy.name] = replay.run(policy)
            if isinstance(policy, Predictive):
                top = ", ".join(f"{k} {v}" for k, v in policy.reasons.most_common(4))
                notes.append(
                    f"{policy.name} decisions by reason: {top}; forecasts by model: {dict(policy.models)}"
                )
            if progress is not None:
                progress(1)
    return SeriesBacktest(series.name, results, cfg, sim.start_s, demand_rates(arrivals, cfg.tick_s), notes)


@dataclass(frozen=True)
class Comparison:
    """How predictive compares: violation-rate ratio to reactive, replica-hours against the static sweep
    at the same violation rate (interpolated), and replica-hours against the oracle."""

    violation_ratio_vs_reactive: float | None
    hours_ratio_vs_static: float | None
    hours_ratio_vs_oracle: float | None
    static_note: str

    def as_dict(self) -> dict[str, float | str | None]:
        def r(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, 4)

        return {
            "violation_ratio_vs_reactive": r(self.violation_ratio_vs_reactive),
            "hours_ratio_vs_static_at_same_violations": r(self.hours_ratio_vs_static),
            "hours_ratio_vs_oracle": r(self.hours_ratio_vs_oracle),
            "static_note": self.static_note,
        }


def static_hours_at(results: dict[str, ReplayResult], violation_rate: float) -> tuple[float | None, str]:
    """Replica-hours the static sweep needs for `violation_rate`, interpolated between pool sizes (violation
    rate falls and hours rise with K). None when the rate is below every pool the sweep tried."""
    pts = sorted(
        (int(k.split("-")[1]), r.slo_violation_rate, r.replica_seconds / 3600)
        for k, r in results.items()
        if k.startswith("static-")
    )
    if not pts:
        return None, "no static sweep"
    for (k0, v0, h0), (k1, v1, h1) in itertools.pairwise(pts):
        if v1 <= violation_rate <= v0:
            f = 0.0 if v0 == v1 else (v0 - violation_rate) / (v0 - v1)
            return h0 + f * (h1 - h0), f"between static-{k0} and static-{k1}"
    if violation_rate >= pts[0][1]:
        return pts[0][2], f"at or above static-{pts[0][0]}'s violation rate"
    return None, f"lower violation rate than the largest pool tried (static-{pts[-1][0]})"


def alpha_policy(alpha: float) -> str:
    """The result name of the predictive run at `alpha` in an alpha sweep."""
    return f"predictive-alpha{alpha:g}"


def compare(results: dict[str, ReplayResult], policy: str = "predictive") -> Comparison:
    """How `policy` (predictive, or one run of an alpha sweep) compares with the baselines."""
    pred = results.get(policy)
    if pred is None:
        return Comparison(None, None, None, f"no {policy} run")
    react = results.get("reactive")
    oracle = results.get("oracle")
    v_ratio = (
        pred.slo_violation_rate / react.slo_violation_rate if react and react.slo_violation_rate > 0 else None
    )
    static_h, note = static_hours_at(results, pred.slo_violation_rate)
    h = pred.replica_seconds / 3600
    return Comparison(
        v_ratio,
        h / static_h if static_h else None,
        h / (oracle.replica_seconds / 3600) if oracle and oracle.replica_seconds else None,
        note,
    )


def sweep_pools(text: str) -> tuple[int, ...]:
    """`0..8` or `0,2,4` -> pool sizes."""
    text = text.strip()
    if ".." in text:
        lo, hi = text.split("..", 1)
        a, b = int(lo), int(hi)
        if a < 0 or b < a or b - a > 200:
            raise ValueError(
                f"--sweep-warm-pool {text!r}: expected A..B with 0 <= A <= B and at most 200 sizes"
            )
        return tuple(range(a, b + 1))
    pools = tuple(int(x) for x in text.split(",") if x.strip())
    if not pools or min(pools) < 0:
        raise ValueError(f"--sweep-warm-pool {text!r}: expected non-negative pool sizes")
    return pools


def sweep_alphas(text: str) -> tuple[float, ...]:
    """`0.8,0.9,0.95` -> the alphas of extra predictive runs."""
    try:
        alphas = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"--sweep-alpha {text!r}: expected comma-separated numbers, e.g. 0.8,0.9,0.95"
        ) from None
    bad = [a for a in alphas if not 0.0 < a < 1.0]
    if not alphas or bad or len(alphas) > 20:
        raise ValueError(
            f"--sweep-alpha {text!r}: expected 1 to 20 alphas, each in (0, 1)"
            + (f"; {bad[0]!r} is not" if bad else "")
        )
    return tuple(sorted(set(alphas)))


def demand_rates(arrivals: FloatArray, tick_s: int) -> list[float]:
    return [float(x) for x in by_tick(arrivals, tick_s).mean(axis=1)]
