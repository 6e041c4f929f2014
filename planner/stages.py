"""One small pure function per planning stage; each returns its value and the Step that explains it.

plan.py runs them in this order (see its docstring for why): forecast check, demand, replicas, reactive
floor, scale-in guard, stabilisation, rate limits, bounds.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime

from forecaster.types import Forecast
from planner.explain import Message, Reason, Step, text
from planner.queueing import servers_for_marginal_wait, servers_for_wait
from planner.slo import anchor_factor, peak_need
from planner.snapshot import Snapshot
from planner.spec import PlannerSpec
from planner.state import PlannerState
from planner.zero import may_hold_none, zero_window

EPS = 1e-9


@functools.lru_cache(maxsize=256)
def fmt_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if m else f"{h}h"


@functools.lru_cache(maxsize=1024)  # forecast step times repeat from tick to tick
def fmt_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def replicas_for(rate_rps: float, rps_per_replica: float) -> int:
    return max(0, math.ceil(rate_rps / rps_per_replica - EPS))


def staffed_replicas(rate_rps: float, spec: PlannerSpec) -> int:
    """Replicas for a demand rate: the target-utilisation count, and at least the Erlang C count past which
    one more replica would keep fewer late requests per second than its idle cost is worth (the same cost
    ratio as alpha: planner/queueing.py): queueing needs proportionally more headroom at low load than at
    high load, which one utilisation target cannot give both. A set slo_wait_probability adds a hard cap
    on P(wait > slo_wait_s) on top."""
    n = replicas_for(rate_rps, spec.usable_rps_per_replica)
    if rate_rps <= 0:
        return n
    cap, wait = spec.capacity_rps_per_replica, spec.slo_wait_s
    n = max(n, servers_for_marginal_wait(rate_rps, cap, wait, spec.min_averted_rps))
    if spec.slo_wait_probability is not None:
        n = max(n, servers_for_wait(rate_rps, cap, wait, spec.slo_wait_probability))
    return n


def reserve_for(n: int, spec: PlannerSpec) -> int:
    """The burst reserve on top of n planned replicas: a fixed count plus a share of n."""
    return spec.burst_reserve_replicas + max(0, math.ceil(spec.burst_reserve_share * n - EPS))


def forecast_problem(snapshot: Snapshot, spec: PlannerSpec, now: float) -> tuple[Reason, str] | None:
    """Why the plan cannot go ahead on its inputs this tick, or None when it can. Stale or dropped-out
    traffic data always stops it; the forecast's own problems only where the operating point uses it."""
    fc = snapshot.forecast
    if snapshot.data_stale:
        return Reason.FORECAST_STALE, f"the traffic data is stale: {snapshot.data_stale}"
    if snapshot.data_dropout:
        return Reason.DATA_DROPOUT, snapshot.data_dropout
    if not spec.use_forecast:
        return None
    if fc is None:
        return Reason.FORECAST_MISSING, "no forecast is available"
    if not snapshot.forecast_healthy:
        note = f" ({snapshot.forecast_note})" if snapshot.forecast_note else ""
        return Reason.FORECAST_UNHEALTHY, f"the forecast is demoted by the self-check{note}"
    age = now - fc.origin_s
    if age > spec.max_forecast_age_s:
        return Reason.FORECAST_STALE, (
            f"the forecast is {fmt_duration(age)} old (limit {fmt_duration(spec.max_forecast_age_s)})"
        )
    end = fc.origin_s + fc.horizon * fc.step_s
    if end < now + spec.lookahead_s - EPS or fc.origin_s > now + fc.step_s:
        return Reason.FORECAST_STALE, (
            f"the forecast covers {fmt_time(fc.origin_s)} to {fmt_time(end)}, not the look-ahead "
            f"{fmt_time(now)} + {fmt_duration(spec.lookahead_s)}"
        )
    return None


def _peak(fc: Forecast, alpha: float, start: float, end: float) -> tuple[float, float]:
    """(max alpha-quantile rate in requests/s, time of that step) over steps overlapping [start, end)."""
    return fc.derived(("peak", alpha, start, end), lambda: _find_peak(fc, alpha, start, end))


def _find_peak(fc: Forecast, alpha: float, start: float, end: float) -> tuple[float, float]:
    path = fc.quantile_values(alpha)
    best, at = 0.0, start
    # only the steps near the window: a published forecast runs a day ahead, the window minutes
    lo = max(0, math.floor((start - fc.origin_s) / fc.step_s) - 1)
    hi = min(fc.horizon, math.ceil((end - fc.origin_s) / fc.step_s) + 1)
    for i in range(lo, hi):
        count = path[i]
        t = fc.origin_s + i * fc.step_s
        if t + fc.step_s <= start + EPS or t >= end - EPS:
            continue
        rate = count / fc.step_s
        if rate > best or (rate == best and at == start):
            best, at = rate, t
    return best, at


def demand(fc: Forecast, spec: PlannerSpec, now: float) -> tuple[float, float, Step]:
    """Stage 1: the alpha-quantile of demand over [now, now + T_load + tick]: a replica asked for now
    serves only from now + T_load, and one released now cannot come back sooner."""
    alpha = spec.quantile
    rate, at = _peak(fc, alpha, now, now + spec.lookahead_s)
    n = staffed_replicas(rate, spec)

    def msg() -> str:
        out = (
            f"forecast p{alpha * 100:g} of {rate:.3g} req/s at {fmt_time(at)} (the peak of the next "
            f"{fmt_duration(spec.lookahead_s)}: T_load {fmt_duration(spec.t_load_s)} + tick "
            f"{fmt_duration(spec.tick_s)}), at {spec.capacity_rps_per_replica:g} req/s per replica and "
            f"{spec.target_utilization:.0%} target utilisation"
        )
        by_utilisation = replicas_for(rate, spec.usable_rps_per_replica)
        if n > by_utilisation:
            out += (
                f"; queueing needs {n} rather than {by_utilisation}: fewer would let too many requests wait "
                f"past {fmt_duration(spec.slo_wait_s)} (a replica is kept while it saves "
                f"{spec.min_averted_rps:.3g} late req/s)"
            )
        return out

    return rate, at, Step("demand", None, n, Reason.FORECAST_DEMAND, msg)


def slo_demand(
    fc: Forecast,
    spec: PlannerSpec,
    now: float,
    current: int,
    observed_rps: float | None = None,
    warm: int | None = None,
) -> tuple[int, float, Step]:
    """Stage 1, planning for the SLO (planner/slo.py): for the steps this decision can still reach,
    [now + T_load, now + T_load + tick], the fewest replicas whose expected late share is within the
    budget; and of the replicas held, those the steps before them need (a replica released now is back
    only after T_load). `warm`: of the `current` replicas, those ready (None: all of them). Returns
    (replicas, the step they are for, the Step)."""
    budget = spec.late_budget
    assert budget is not None
    cap, wait = spec.capacity_rps_per_replica, spec.slo_wait_s
    f = anchor_factor(fc, now, observed_rps, spec.reactive_window_s) if spec.slo_anchor else 1.0
    up, up_at, up_share = peak_need(fc, now + spec.t_load_s, now + spec.lookahead_s, cap, wait, budget, f)
    # what the steps before T_load need counts only for replicas held above `up`: at or below it, nothing
    # held could be kept past it, so their peak (a new late curve per step and anchor, most of a first
    # night's tuning) is read only when it can change the count
    hold, hold_at, hold_share = (
        peak_need(fc, now, now + spec.t_load_s, cap, wait, budget, f) if current > up else (0, now, 0.0)
    )
    kept = min(current, hold)
    n, at = (kept, hold_at) if kept > up else (up, up_at)
    if spec.min_replicas == 0:
        zero = _zero_or_more(fc, spec, now, current if warm is None else warm, n, at)
        if zero is not None:
            return zero

    def msg() -> str:
        out = (
            f"planned for at most {budget:.3%} late (waits past {fmt_duration(wait)}) at every step of the "
            f"next {fmt_duration(spec.lookahead_s)}: {up} replica{'s' if up != 1 else ''} for the steps "
            f"from {fmt_time(now + spec.t_load_s)} (a replica asked for now is warm after T_load "
            f"{fmt_duration(spec.t_load_s)}), expected {up_share:.3%} late at {fmt_time(up_at)}"
        )
        if kept > up:
            out += (
                f"; keeping {kept} of the {current} held for {fmt_time(hold_at)}, before a released replica "
                f"could be back (expected {hold_share:.3%} late)"
            )
        return out

    return n, at, Step("demand", None, n, Reason.FORECAST_DEMAND, msg)


def _zero_or_more(
    fc: Forecast, spec: PlannerSpec, now: float, current: int, n: int, at: float
) -> tuple[int, float, Step] | None:
    """Stage 1 for a model whose floor is zero (planner/zero.py): none when a request is at most the late
    budget likely in its zero window; else, where the SLO stage asks at most one, one (kept, or asked for
    T_load ahead of the requests expected); None where it asks more (its own step says why). `current`
    counts warm replicas only: a pre-warm still loading is judged as the ask it was, by the window it was
    asked for, so that the two windows' questions never alternate the ask from tick to tick."""
    budget = spec.late_budget
    assert budget is not None
    zero, p = may_hold_none(fc, spec, now, current)
    start, end = zero_window(spec, now, current)
    if current >= 1:
        span = (
            f"before {fmt_time(end)} (T_load {fmt_duration(spec.t_load_s)} + a tick + the "
            f"{fmt_duration(spec.break_even_s)} re-warm break-even)"
        )
    else:
        span = f"from {fmt_time(start)} to {fmt_time(end)} (what a replica asked for now would serve)"
    if zero:
        return (
            0,
            now,
            Step(
                "demand",
                None,
                0,
                Reason.SCALE_TO_ZERO,
                lambda: (
                    f"no replica: a {p:.2%} chance of any request {span}, within the {budget:.2%} late budget"
                ),
            ),
        )
    if n > 1:
        return None
    what = "keeping one replica" if current >= 1 else "pre-warming one replica"
    return (
        1,
        at,
        Step(
            "demand",
            None,
            1,
            Reason.FORECAST_DEMAND,
            lambda: f"{what}: a {p:.2%} chance of a request {span}, above the {budget:.2%} late budget",
        ),
    )


def _guard_need(fc: Forecast, spec: PlannerSpec, start: float, end: float) -> tuple[int, float]:
    """Replicas the forecast needs again in [start, end) and when: by the SLO budget where one is set,
    else the alpha-quantile's peak staffed as stage 1 would, plus the reserve."""
    if spec.late_budget is not None:
        n, at, _ = peak_need(fc, start, end, spec.capacity_rps_per_replica, spec.slo_wait_s, spec.late_budget)
        return n + reserve_for(n, spec), at
    rate, at = _peak(fc, spec.quantile, start, end)
    staffed = staffed_replicas(rate, spec)
    return staffed + reserve_for(staffed, spec), at


def no_forecast_demand(spec: PlannerSpec) -> Step:
    """Stage 1 at an operating point that does not use the forecast: the reactive floor and the reserve
    decide (a warm pool); tuning chose it because the forecast did not pay on the model's history."""
    return Step(
        "demand",
        None,
        0,
        Reason.REACTIVE_FLOOR,
        "the operating point plans from the observed rate alone (the forecast did not pay on this model's "
        "history)",
    )


def burst_reserve(value: int, spec: PlannerSpec) -> tuple[int, Step]:
    """Stage 3b: spare replicas for bursts no forecast sees, on top of the forecast quantile and the
    reactive floor; with slo_unreachable, the step says the point is tuning's most protective fallback."""
    extra = reserve_for(value, spec)
    parts = [f"{spec.burst_reserve_replicas} spare"] if spec.burst_reserve_replicas else []
    if spec.burst_reserve_share:
        parts.append(f"{spec.burst_reserve_share:.0%} of {value}")
    what = " + ".join(parts) or "none"
    if spec.slo_unreachable:
        target = f"{spec.slo_target:.4g}" if spec.slo_target is not None else "the target"
        return value + extra, Step(
            "burst_reserve",
            value,
            value + extra,
            Reason.SLO_UNREACHABLE,
            (
                f"SLO unreachable: no tuned operating point kept {target} of requests within "
                f"{fmt_duration(spec.slo_wait_s)} on the trailing window, so the most protective one runs "
                f"(burst reserve {what}: +{extra})"
            ),
        )
    if not extra:
        return value, Step("burst_reserve", value, value, Reason.FORECAST_DEMAND, "no burst reserve")
    return value + extra, Step(
        "burst_reserve",
        value,
        value + extra,
        Reason.BURST_RESERVE,
        f"burst reserve of {extra} spare replica{'s' if extra != 1 else ''} ({what})",
    )


def observed_need(rps: float, queue_length: float, spec: PlannerSpec) -> int:
    """The reactive floor's count for a valid, fresh observed rate: what reactive_floor says without its
    sentence (the backtest's reactive autoscaler asks it at every tick of every setting it replays)."""
    # replicas asked for now serve only from now + T_load: spread the backlog over that wait plus the drain
    # time, or a queue built during one cold start would ask for a flood of replicas that arrive too late
    need = rps + max(0.0, queue_length) / (spec.t_load_s + spec.queue_drain_s)
    return replicas_for(need, spec.capacity_rps_per_replica * spec.floor_utilization)


def reactive_floor(snapshot: Snapshot, spec: PlannerSpec, now: float) -> tuple[int | None, Message]:
    """Stage 3 input: replicas the observed rate and queue need right now (None when there is no fresh
    observation), and a sentence saying so."""
    rps, at = snapshot.observed_rps, snapshot.observed_at_s
    if rps is None or at is None or not math.isfinite(rps) or rps < 0:
        return None, "no observed request rate"
    if now - at > spec.max_observation_age_s:
        return None, f"the observed rate is {fmt_duration(now - at)} old"
    queue = max(0.0, snapshot.queue_length)
    n = observed_need(rps, queue, spec)

    def msg() -> str:
        extra = (
            f" + {queue:.0f} queued over {fmt_duration(spec.t_load_s + spec.queue_drain_s)}" if queue else ""
        )
        return f"observed {rps:.3g} req/s{extra} needs {n} at {spec.floor_utilization:.0%} utilisation"

    return n, msg


def apply_floor(
    value: int, floor: int | None, floor_msg: Message, current: int | None = None
) -> tuple[int, Step]:
    """Stage 3: at least the reactive floor. Without a fresh observed rate there is no floor, and missing
    data never scales down: the plan may rise on the forecast but not fall below `current`."""
    if floor is None:
        held = value if current is None or value >= current else current
        return held, Step(
            "reactive_floor",
            value,
            held,
            Reason.OBSERVED_RATE_MISSING,
            lambda: (
                f"{text(floor_msg)}: no reactive floor this tick"
                + (f", and no scale-down without it (holding {held})" if held > value else "")
            ),
        )
    if floor > value:
        return floor, Step(
            "reactive_floor",
            value,
            floor,
            Reason.REACTIVE_FLOOR,
            lambda: f"raised to the reactive floor: {text(floor_msg)}",
        )
    return value, Step(
        "reactive_floor",
        value,
        value,
        Reason.FORECAST_DEMAND,
        lambda: f"above the reactive floor ({text(floor_msg)})",
    )


def scale_in_guard(fc: Forecast, spec: PlannerSpec, now: float, current: int, value: int) -> tuple[int, Step]:
    """Stage 4: release a replica only if the forecast says it would otherwise idle longer than the
    re-warm break-even time after the look-ahead window; a forecast too short to tell holds them all."""
    if value >= current:
        return value, Step("scale_in_guard", value, value, Reason.FORECAST_DEMAND, "no scale-in asked for")
    start = now + spec.lookahead_s
    end = start + spec.break_even_s
    fc_end = fc.origin_s + fc.horizon * fc.step_s
    if fc_end < end - EPS:
        return current, Step(
            "scale_in_guard",
            value,
            current,
            Reason.SCALE_IN_HELD,
            (
                f"scale-in held: the forecast ends at {fmt_time(fc_end)}, before the break-even horizon "
                f"{fmt_time(end)}, so it cannot show the replicas would idle long enough"
            ),
        )
    if end <= start + EPS:
        return value, Step(
            "scale_in_guard", value, value, Reason.FORECAST_DEMAND, "no break-even time: release allowed"
        )
    needed, at = _guard_need(fc, spec, start, end)
    if value == 0 and may_hold_none(fc, spec, now, current)[0]:
        needed = 0  # the zero window already covers the break-even after the look-ahead
    need = min(current, needed)
    if need > value:
        return need, Step(
            "scale_in_guard",
            value,
            need,
            Reason.SCALE_IN_HELD,
            (
                f"scale-in held at {need}: the forecast needs {need} again at {fmt_time(at)}, within the "
                f"{fmt_duration(spec.break_even_s)} re-warm break-even after the look-ahead"
            ),
        )
    return value, Step(
        "scale_in_guard",
        value,
        value,
        Reason.FORECAST_DEMAND,
        lambda: (
            f"releasing {current - value}: not needed within {fmt_duration(spec.break_even_s)} "
            "after the look-ahead"
        ),
    )


def stabilize(
    value: int, current: int, state: PlannerState, spec: PlannerSpec, now: float
) -> tuple[int, Step]:
    """Stage 5a (HPA semantics): scale down only to the highest recommendation of the down window, scale
    up only to the lowest of the up window, so that one noisy tick never moves the replicas."""

    def window(span: float) -> list[int]:
        return [n for t, n in state.recommendations if t > now - span - EPS] + [value]

    if value < current:
        high = max(window(spec.scale_down_stabilization_s))
        out = min(current, max(value, high))
        if out > value:
            return out, Step(
                "stabilize",
                value,
                out,
                Reason.SCALE_DOWN_STABILIZED,
                (
                    f"scale-down stabilised at {out}: the highest recommendation of the last "
                    f"{fmt_duration(spec.scale_down_stabilization_s)}"
                ),
            )
    elif value > current and spec.scale_up_stabilization_s > 0:
        low = min(window(spec.scale_up_stabilization_s))
        out = max(current, min(value, low))
        if out < value:
            return out, Step(
                "stabilize",
                value,
                out,
                Reason.SCALE_UP_STABILIZED,
                (
                    f"scale-up stabilised at {out}: the lowest recommendation of the last "
                    f"{fmt_duration(spec.scale_up_stabilization_s)}"
                ),
            )
    return value, Step("stabilize", value, value, Reason.FORECAST_DEMAND, "stable")


def rate_limit(
    value: int, current: int, state: PlannerState, spec: PlannerSpec, now: float
) -> tuple[int, Step]:
    """Stage 5b: at most scale_up_limit_replicas added per scale_up_period_s, and likewise down."""
    if value > current and spec.scale_up_limit_replicas is not None:
        added = sum(d for t, d in state.scale_events if d > 0 and t > now - spec.scale_up_period_s + EPS)
        allowed = max(0, spec.scale_up_limit_replicas - added)
        if value - current > allowed:
            out = current + allowed
            return out, Step(
                "rate_limit",
                value,
                out,
                Reason.SCALE_UP_LIMIT,
                (
                    f"scale-up limited to +{allowed}: at most {spec.scale_up_limit_replicas} added per "
                    f"{fmt_duration(spec.scale_up_period_s)}"
                ),
            )
    if value < current and spec.scale_down_limit_replicas is not None:
        removed = -sum(d for t, d in state.scale_events if d < 0 and t > now - spec.scale_down_period_s + EPS)
        allowed = max(0, spec.scale_down_limit_replicas - removed)
        if current - value > allowed:
            out = current - allowed
            return out, Step(
                "rate_limit",
                value,
                out,
                Reason.SCALE_DOWN_LIMIT,
                (
                    f"scale-down limited to -{allowed}: at most {spec.scale_down_limit_replicas} removed per "
                    f"{fmt_duration(spec.scale_down_period_s)}"
                ),
            )
    return value, Step("rate_limit", value, value, Reason.FORECAST_DEMAND, "within rate limits")


def bounds(value: int, spec: PlannerSpec) -> tuple[int, Step]:
    """Stage 6: min/max replicas."""
    if value < spec.min_replicas:
        return spec.min_replicas, Step(
            "bounds",
            value,
            spec.min_replicas,
            Reason.TOO_FEW_REPLICAS,
            f"raised to min_replicas {spec.min_replicas}",
        )
    if value > spec.max_replicas:
        return spec.max_replicas, Step(
            "bounds",
            value,
            spec.max_replicas,
            Reason.TOO_MANY_REPLICAS,
            f"capped at max_replicas {spec.max_replicas}",
        )
    return value, Step(
        "bounds",
        value,
        value,
        Reason.DESIRED_WITHIN_RANGE,
        lambda: f"within [{spec.min_replicas}, {spec.max_replicas}]",
    )
