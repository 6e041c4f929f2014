"""The fleet backtest: many models replayed together on one clock and one GPU budget.

Every policy runs every model in lockstep, a tick at a time (`simulator.stepping`): each model's policy
says what it wants, the budget is divided, and only then does each simulation run its tick with what it
got. Policies:

- `reactive`: each model's reactive autoscaler; the budget first come, first served: a model keeps the
  replicas it holds (up to what it wants) and new asks are served in a fixed order (model name) while GPUs
  last, which is what Pending pods beyond a cluster's GPUs amount to;
- `static`: reactive plus K spares per model (K = the config's first warm pool), capped the same way;
- `predictive`: each model planned alone by prewarm, capped the same way;
- `predictive-fleet`: the same plans through the fleet stage (planner/fleet.py): each model's reactive
  floor guaranteed, then the replicas that close the most SLO deficit per GPU and priority, held replicas
  moved only for wants that outlast a tick.

Each model is judged against its own SLO target: its violation rate against reactive's at the same budget,
whether it meets its target, and the fleet's count of models that do and its worst model.

The predictive policies of a model share one forecast feed (forecast once, plan many). The replay covers
the span every series has in common, after each one's own warm-up; `align_week` first shifts each series by
whole weeks so that all start in the earliest one's week (time of day and day of week kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backtest.policies import ForecastFeed, Predictive, Reactive
from backtest.records import within_target
from backtest.run import BacktestConfig, Replay
from backtest.simulator import Observation, ReplayResult, stepping
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner.fleet import DEFAULT_SLO_TARGET, VALUE_LEVELS, FleetRequest, FleetState, allocate, fleet_request

FLEET_POLICIES = ("reactive", "static", "predictive", "predictive-fleet")
WEEK_S = 7 * SECONDS_PER_DAY
WORSE_TOLERANCE = 0.002  # a model counts as worse off than under reactive beyond 0.2 points of its requests


class FleetError(ValueError):
    """Series that cannot be replayed as one fleet (no common span); the message names them."""


@dataclass(frozen=True)
class FleetMember:
    series: TrafficSeries
    cfg: BacktestConfig  # its own capacity, T_load and SLO
    gpus_per_replica: float = 1.0
    priority: float = 1.0
    slo_target: float = DEFAULT_SLO_TARGET


def align_week(series: Sequence[TrafficSeries]) -> list[TrafficSeries]:
    """Each series shifted by a whole number of weeks so that it starts in the earliest one's week."""
    first = min(s.start_s for s in series)
    out = []
    for s in series:
        weeks = math.floor((s.start_s - first) / WEEK_S)
        out.append(s if weeks == 0 else TrafficSeries(s.name, s.start_s - weeks * WEEK_S, s.step_s, s.values))
    return out


def common_span(series: Sequence[TrafficSeries]) -> tuple[float, float]:
    """[start, end) every series covers; FleetError naming the series when there is none."""
    start, end = max(s.start_s for s in series), min(s.end_s for s in series)
    if end <= start:
        late = max(series, key=lambda s: s.start_s)
        early = min(series, key=lambda s: s.end_s)
        raise FleetError(
            f"{late.name!r} starts after {early.name!r} ends: the series do not overlap in time; "
            "pass --align-week to shift each by whole weeks into the earliest one's week"
        )
    return start, end


@dataclass
class FleetPolicyResult:
    policy: str
    models: dict[str, ReplayResult]
    gpus_per_tick: list[float] = field(default_factory=list)
    gpus_by_model: dict[str, list[float]] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)  # each model's SLO target

    @property
    def requests(self) -> float:
        return sum(r.requests for r in self.models.values())

    @property
    def violation_rate(self) -> float:
        req = self.requests
        return sum(r.slo_violations for r in self.models.values()) / req if req else 0.0

    def target(self, model: str) -> float:
        return self.targets.get(model, DEFAULT_SLO_TARGET)

    def met(self, model: str) -> bool:
        return within_target(self.models[model].slo_violation_rate, self.target(model))

    def deficit(self, model: str) -> float:
        """How far the model's violation rate is above its late budget, in units of that budget (0: met)."""
        budget = 1.0 - self.target(model)
        return max(0.0, self.models[model].slo_violation_rate - budget) / budget

    def as_dict(self) -> dict[str, Any]:
        worst = max(self.models, key=lambda m: self.models[m].slo_violation_rate)
        return {
            "violation_rate": round(self.violation_rate, 6),
            "replica_hours": round(sum(r.replica_seconds for r in self.models.values()) / 3600, 3),
            "peak_gpus": round(max(self.gpus_per_tick, default=0.0), 3),
            "models_meeting_target": sum(self.met(m) for m in self.models),
            "worst_model": worst,
            "worst_model_violation_rate": round(self.models[worst].slo_violation_rate, 6),
            "models": {
                m: {
                    "violation_rate": round(r.slo_violation_rate, 6),
                    "attainment": round(1.0 - r.slo_violation_rate, 6),
                    "target": self.target(m),
                    "met": self.met(m),
                    "deficit": round(self.deficit(m), 4),
                    "replica_hours": round(r.replica_seconds / 3600, 3),
                    "requests": round(r.requests),
                }
                for m, r in sorted(self.models.items())
            },
        }


@dataclass
class FleetBacktest:
    budget_gpus: float
    start_s: float
    end_s: float
    tick_s: int
    policies: dict[str, FleetPolicyResult]
    notes: list[str] = field(default_factory=list)

    def worse_than_reactive(self, policy: str) -> dict[str, tuple[float, float]]:
        """The models whose violation rate under `policy` is above their rate under reactive at this budget
        by more than WORSE_TOLERANCE: model -> (rate under the policy, rate under reactive)."""
        base, res = self.policies.get("reactive"), self.policies.get(policy)
        if base is None or res is None:
            return {}
        out = {}
        for m, r in sorted(res.models.items()):
            mine, theirs = r.slo_violation_rate, base.models[m].slo_violation_rate
            if mine > theirs + WORSE_TOLERANCE:
                out[m] = (mine, theirs)
        return out

    def as_dict(self) -> dict[str, Any]:
        policies = {}
        for p, r in self.policies.items():
            policies[p] = r.as_dict()
            if p != "reactive" and "reactive" in self.policies:
                policies[p]["worse_than_reactive"] = {
                    m: {"violation_rate": round(a, 6), "reactive_violation_rate": round(b, 6)}
                    for m, (a, b) in self.worse_than_reactive(p).items()
                }
        return {
            "budget": self.budget_gpus,
            "start_s": self.start_s,
            "days": round((self.end_s - self.start_s) / SECONDS_PER_DAY, 3),
            "worse_tolerance": WORSE_TOLERANCE,
            "policies": policies,
            "notes": self.notes,
        }


def _first_come(
    asks: dict[str, int], held: dict[str, int], gpus: dict[str, float], budget: float
) -> dict[str, int]:
    """Each model keeps what it holds up to what it asks; then increases in name order while GPUs last."""
    grant = {m: min(asks[m], held[m]) for m in asks}
    left = budget - sum(grant[m] * gpus[m] for m in asks)
    for m in sorted(asks):
        if asks[m] > grant[m] and left > 0:
            n = min(asks[m] - grant[m], int(left // gpus[m] + 1e-9))
            grant[m] += n
            left -= n * gpus[m]
    return grant


def run_fleet_backtest(
    members: Sequence[FleetMember],
    budget_gpus: Sequence[float],
    *,
    policies: Sequence[str] = FLEET_POLICIES,
    progress: Callable[[int], None] | None = None,
) -> list[FleetBacktest]:
    """Replay the members together at each budget; one FleetBacktest per budget. Every (budget, policy)
    simulation advances in lockstep, so each model's forecasts are computed once for all of them."""
    unknown = [p for p in policies if p not in FLEET_POLICIES]
    if unknown:
        raise FleetError(f"unknown fleet policies {unknown}; choose from {', '.join(FLEET_POLICIES)}")
    names = [m.series.name for m in members]
    if len(set(names)) != len(names):
        raise FleetError(
            f"series names repeat across the fleet: {sorted({n for n in names if names.count(n) > 1})}"
        )
    start, end = common_span([m.series for m in members])
    tick_s = members[0].cfg.tick_s
    replays: dict[str, Replay] = {}
    for m in members:
        part = m.series.slice(0, m.series.index_at(end))
        warm = m.series.index_at(start)  # history before the common start is each model's warm-up
        cfg = replace(m.cfg, tick_s=tick_s, warmup_s=max(m.cfg.warmup_s, (warm * m.series.step_s)))
        replays[m.series.name] = Replay.of(part, cfg)
    sim_start = max(r.sim.start_s for r in replays.values())
    # every model's arrivals from the shared start, cut to the same length: one clock, one end
    offsets = {n: round(sim_start - r.sim.start_s) for n, r in replays.items()}
    n_ticks = min((len(r.arrivals) - offsets[n]) // tick_s for n, r in replays.items())
    if n_ticks <= 0:
        raise FleetError("the series share no time after their warm-ups")
    arrivals = {n: r.arrivals[offsets[n] : offsets[n] + n_ticks * tick_s] for n, r in replays.items()}
    by_name = {m.series.name: m for m in members}
    specs = {n: r.cfg.planner_spec() for n, r in replays.items()}
    feeds = {
        n: ForecastFeed(
            r.history,
            levels=tuple(sorted({*VALUE_LEVELS, specs[n].quantile})),  # the paths the fleet stage values
            lookahead_s=specs[n].lookahead_s,
            break_even_s=specs[n].break_even_s,
            model=r.cfg.model,
            refresh_s=r.cfg.refresh_s,
        )
        for n, r in replays.items()
    }
    gpus = {n: by_name[n].gpus_per_replica for n in replays}
    targets = {n: by_name[n].slo_target for n in replays}
    lanes = [_Lane(b, p, replays, feeds, arrivals, sim_start, targets) for b in budget_gpus for p in policies]
    for _ in range(n_ticks):
        for lane in lanes:
            lane.tick(by_name, gpus)
        if progress is not None:
            progress(1)
    days = n_ticks * tick_s / SECONDS_PER_DAY
    notes = [
        f"{len(members)} models replayed together for {days:.1f} days (the span they share, after each "
        "one's warm-up)",
        "reactive, static and predictive share the budget first come, first served (held replicas kept, new "
        "asks in model-name order); predictive-fleet through the fleet stage",
        f"a model is worse off than under reactive when its violation rate is over reactive's at the same "
        f"budget by more than {WORSE_TOLERANCE:.1%} of its requests",
    ]
    out = [
        FleetBacktest(
            budget,
            sim_start,
            sim_start + n_ticks * tick_s,
            tick_s,
            {lane.result.policy: lane.result for lane in lanes if lane.budget == budget},
            list(notes),
        )
        for budget in budget_gpus
    ]
    return out


class _Lane:
    """One (budget, policy) fleet simulation: every model's policy and its tick-by-tick simulation."""

    def __init__(
        self,
        budget: float,
        policy: str,
        replays: dict[str, Replay],
        feeds: dict[str, ForecastFeed],
        arrivals: dict[str, Any],
        start_s: float,
        targets: dict[str, float],
    ) -> None:
        self.budget, self.policy = budget, policy
        self.fleet_state = FleetState()
        self.deciders: dict[str, Reactive | Predictive] = {}
        self.gens: dict[str, Generator[Observation, int, ReplayResult]] = {}
        for n, r in replays.items():
            if policy in ("reactive", "static"):
                spare = r.cfg.warm_pools[0] if policy == "static" else 0
                self.deciders[n] = r.cfg.reactive(spare=spare, name=policy)
            else:
                spec = replace(r.cfg.planner_spec(), slo_target=targets[n])
                self.deciders[n] = Predictive(spec, r.history, feed=feeds[n], name=policy)
            self.gens[n] = stepping(
                arrivals[n],
                n,
                start_s=start_s,
                capacity_rps=r.cfg.capacity_rps,
                t_load_s=r.cfg.t_load_s,
                slo_wait_s=r.cfg.slo_wait_s,
                tick_s=r.cfg.tick_s,
                t_load_sampler=r.cfg.t_load_sampler,
            )
        self.seen = {n: next(g) for n, g in self.gens.items()}
        self.result = FleetPolicyResult(policy, {}, [], {n: [] for n in replays}, dict(targets))

    def tick(self, members: dict[str, FleetMember], gpus: dict[str, float]) -> None:
        asks = {n: max(0, int(d.decide(self.seen[n]))) for n, d in self.deciders.items()}
        if self.policy == "predictive-fleet":
            requests = [_request(n, self.deciders[n], self.seen[n], members[n]) for n in asks]  # type: ignore[arg-type]
            now = next(iter(self.seen.values())).now_s
            alloc = allocate(requests, self.budget, self.fleet_state, now)
            self.fleet_state = alloc.state
            grant = {n: min(asks[n], alloc.grants[n].granted) for n in asks}
        else:
            grant = _first_come(asks, {n: o.asked for n, o in self.seen.items()}, gpus, self.budget)
        res = self.result
        res.gpus_per_tick.append(sum(grant[n] * gpus[n] for n in grant))
        for n, g in self.gens.items():
            res.gpus_by_model[n].append(grant[n] * gpus[n])
            try:
                self.seen[n] = g.send(grant[n])
            except StopIteration as done:
                res.models[n] = done.value


def _request(name: str, policy: Predictive, obs: Observation, member: FleetMember) -> FleetRequest:
    assert policy.last is not None
    decision, snap = policy.last
    return fleet_request(
        name,
        decision,
        snap,
        policy.spec,
        obs.now_s,
        gpus_per_replica=member.gpus_per_replica,
        priority=member.priority,
    )


def parse_budgets(text: str, need_gpus: float) -> list[float]:
    """`--fleet-budget`: comma-separated GPU counts, or percentages of the fleet's p99.9 need ("70%")."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part[:-1]) / 100 * need_gpus if part.endswith("%") else float(part)
        except ValueError:
            raise FleetError(
                f"--fleet-budget {part!r}: expected a GPU count (e.g. 120) or a share of the fleet's "
                "p99.9 need (e.g. 70%)"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise FleetError(f"--fleet-budget {part!r} gives {value:g} GPUs; allowed: more than 0")
        out.append(round(value, 3))
    if not out:
        raise FleetError("--fleet-budget is empty; give a GPU count or a percentage such as 70%")
    return out


def p999_needs(members: Sequence[FleetMember]) -> float:
    """GPUs the fleet needs at every model's p99.9 rate (replicas at its capacity x GPUs per replica)."""
    total = 0.0
    for m in members:
        rate = np.where(np.isfinite(m.series.values), m.series.values, 0.0) / m.series.step_s
        total += math.ceil(float(np.quantile(rate, 0.999)) / m.cfg.capacity_rps - 1e-9) * m.gpus_per_replica
    return total


__all__ = [
    "FLEET_POLICIES",
    "FleetBacktest",
    "FleetError",
    "FleetMember",
    "align_week",
    "common_span",
    "p999_needs",
    "parse_budgets",
    "run_fleet_backtest",
]
