"""PlannerSpec: everything the planner needs to know about one model, with units in the names.

Validated on construction; an error names the key, the value and the allowed range (SpecError is a
ValueError so that config loaders can report it as-is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


class SpecError(ValueError):
    pass


def _check(
    key: str,
    value: float | None,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    optional: bool = False,
) -> None:
    if value is None:
        if optional:
            return
        raise SpecError(f"{key} is required")
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        hi_txt = "inf" if math.isinf(hi) else f"{hi:g}"
        raise SpecError(f"{key}={value!r} is out of range; allowed {left}{lo:g}, {hi_txt}{right}")


@dataclass(frozen=True)
class PlannerSpec:
    """One model's planning parameters.

    alpha: the forecast quantile the planner provisions for. Set it directly, or leave it None to use the
    newsvendor fractile cost_miss / (cost_miss + cost_idle): with c_idle the cost of one idle replica for
    one tick and c_miss the cost of being one replica short, that fractile minimises expected cost.
    slo_wait_s: the queueing SLO. Besides demand / (capacity x target_utilization), the planner provisions
    the Erlang C count past which one more replica would keep fewer requests per second from waiting longer
    than slo_wait_s than `min_averted_rps` (its idle cost in late requests, from the same costs as alpha;
    planner/queueing.py): a utilisation target alone under-provisions at low load and long service times.
    slo_wait_probability: optionally, a hard cap on P(wait > slo_wait_s) at the provisioned demand as well
    (None: the cost rule alone).
    reactive_target_utilization: the utilisation the reactive floor scales the observed rate to (None: the
    same target_utilization, so the floor never asks for less than the reactive autoscaler it replaces).
    burst_reserve_replicas, burst_reserve_share: the burst reserve, spare replicas added after the forecast
    quantile and the reactive floor (before stabilisation and bounds): a fixed count plus a share of the
    replicas planned so far. Bursts no forecast sees are what most SLO violations are made of; a quantile of
    a smooth forecast buys no headroom for them, spare capacity does. Tuning (backtest/tuning.py) chooses
    (alpha, reserve) per model from its history.
    use_forecast: False plans from the reactive floor alone (plus the reserve): the operating point a warm
    pool is, which tuning picks where the forecast did not pay on the model's history.
    slo_target: the share of requests that must start within slo_wait_s (None: no target set); with
    slo_unreachable, the operating point is tuning's most protective fallback because no candidate met the
    target on the trailing window, and every decision says so.
    late_budget: plan for the SLO itself (planner/slo.py): per forecast step, the fewest replicas whose
    expected share of late requests (waits past slo_wait_s) is at most this share, from the forecast's
    distribution; the operating point lambda sets it to lambda x (1 - slo_target). None: the alpha-quantile
    stage (kept for comparison).
    cold_start_cost_replica_s: what a cold start costs, in idle-replica-seconds (by default T_load itself:
    the replica is paid for while it loads); a replica is kept rather than released when the forecast says
    it is needed again sooner than T_load + tick + this break-even time.
    """

    capacity_rps_per_replica: float
    t_load_s: float
    tick_s: float = 30.0
    target_utilization: float = 0.8
    slo_wait_s: float = 2.0
    slo_wait_probability: float | None = None
    alpha: float | None = None
    cost_miss: float = 9.0
    cost_idle: float = 1.0
    reactive_target_utilization: float | None = None
    burst_reserve_replicas: int = 0
    burst_reserve_share: float = 0.0
    use_forecast: bool = True
    slo_target: float | None = None
    slo_unreachable: bool = False
    late_budget: float | None = None
    slo_anchor: bool = True
    queue_drain_s: float = 30.0
    cold_start_cost_replica_s: float | None = None
    min_replicas: int = 1
    max_replicas: int = 1000
    scale_down_stabilization_s: float = 300.0
    scale_up_stabilization_s: float = 0.0
    scale_up_limit_replicas: int | None = None
    scale_up_period_s: float = 60.0
    scale_down_limit_replicas: int | None = None
    scale_down_period_s: float = 60.0
    max_forecast_age_s: float = 7200.0
    max_observation_age_s: float = 120.0

    def __post_init__(self) -> None:
        inf = math.inf
        _check("capacity_rps_per_replica", self.capacity_rps_per_replica, 0, inf, lo_open=True)
        _check("t_load_s", self.t_load_s, 0, 86400)
        _check("tick_s", self.tick_s, 0, 3600, lo_open=True)
        _check("target_utilization", self.target_utilization, 0, 1, lo_open=True)
        _check("slo_wait_s", self.slo_wait_s, 0, 3600)
        _check("slo_wait_probability", self.slo_wait_probability, 0, 1, lo_open=True, optional=True)
        _check("alpha", self.alpha, 0, 1, lo_open=True, hi_open=True, optional=True)
        _check("cost_miss", self.cost_miss, 0, inf, lo_open=True)
        _check("cost_idle", self.cost_idle, 0, inf, lo_open=True)
        _check(
            "reactive_target_utilization", self.reactive_target_utilization, 0, 1, lo_open=True, optional=True
        )
        _check("burst_reserve_replicas", self.burst_reserve_replicas, 0, 100_000)
        _check("burst_reserve_share", self.burst_reserve_share, 0, 10)
        _check("slo_target", self.slo_target, 0, 1, lo_open=True, hi_open=True, optional=True)
        _check("late_budget", self.late_budget, 0, 1, lo_open=True, hi_open=True, optional=True)
        _check("queue_drain_s", self.queue_drain_s, 0, inf, lo_open=True)
        _check("cold_start_cost_replica_s", self.cold_start_cost_replica_s, 0, inf, optional=True)
        _check("min_replicas", self.min_replicas, 0, 100_000)
        _check("max_replicas", self.max_replicas, max(1, self.min_replicas), 100_000)
        _check("scale_down_stabilization_s", self.scale_down_stabilization_s, 0, 86400)
        _check("scale_up_stabilization_s", self.scale_up_stabilization_s, 0, 86400)
        _check("scale_up_limit_replicas", self.scale_up_limit_replicas, 1, 100_000, optional=True)
        _check("scale_up_period_s", self.scale_up_period_s, 0, 86400, lo_open=True)
        _check("scale_down_limit_replicas", self.scale_down_limit_replicas, 1, 100_000, optional=True)
        _check("scale_down_period_s", self.scale_down_period_s, 0, 86400, lo_open=True)
        _check("max_forecast_age_s", self.max_forecast_age_s, 0, inf, lo_open=True)
        _check("max_observation_age_s", self.max_observation_age_s, 0, inf, lo_open=True)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_replicas") and value is not None and int(value) != value:
                raise SpecError(f"{f.name}={value!r} must be a whole number")

    @property
    def quantile(self) -> float:
        """The alpha the planner provisions for (set directly, or the newsvendor fractile)."""
        if self.alpha is not None:
            return self.alpha
        return self.cost_miss / (self.cost_miss + self.cost_idle)

    @property
    def min_averted_rps(self) -> float:
        """Late requests per second a replica must avert to be worth its idle cost: (1 - alpha) / alpha of
        its capacity. With alpha = c_miss / (c_miss + c_idle), a replica's capacity unserved costs c_miss and
        an idle replica c_idle, so one late request costs c_miss / capacity and a replica pays for itself
        when it saves c_idle / c_miss of its capacity."""
        q = self.quantile
        return self.capacity_rps_per_replica * (1.0 - q) / q

    @property
    def lookahead_s(self) -> float:
        """A replica asked for now serves from now + T_load; the next chance to ask is a tick later."""
        return self.t_load_s + self.tick_s

    @property
    def break_even_s(self) -> float:
        """Idle time after which releasing and re-warming a replica is cheaper than keeping it."""
        return self.t_load_s if self.cold_start_cost_replica_s is None else self.cold_start_cost_replica_s

    @property
    def reactive_window_s(self) -> float:
        """The span the reactive floor's observed rate should average: at least a tick, and at least one
        service time (1 / capacity). By Little's law the replicas busy now are the arrivals of the last
        service time; a rate over a shorter window, times the service time, extrapolates one tick's noise
        (one request in a 30-second tick at a 7-minute service time reads as 14 busy replicas)."""
        return max(self.tick_s, 1.0 / self.capacity_rps_per_replica)

    @property
    def floor_utilization(self) -> float:
        if self.reactive_target_utilization is None:
            return self.target_utilization
        return self.reactive_target_utilization

    @property
    def usable_rps_per_replica(self) -> float:
        return self.capacity_rps_per_replica * self.target_utilization


def untuned_late_budget(slo_target: float | None, min_replicas: int) -> float | None:
    """The late budget a model plans at before its first tuning run: its SLO's own (lambda = 1) where it may
    scale to zero, because only a late budget weighs the chance of a request against a cold start (the
    alpha-quantile stage plans zero only where the quantile is zero, which a model seeing a request an hour
    never has); None, the alpha-quantile stage, otherwise."""
    if min_replicas == 0 and slo_target is not None:
        return 1.0 - slo_target
    return None
