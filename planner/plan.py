"""plan(snapshot, spec, state, now) -> (Decision, PlannerState): one pure call per model and tick.

Stages, in order (each leaves a Step):
0. forecast check: a missing, stale (too old, or not covering the look-ahead) or unhealthy forecast, or
   traffic data that is stale or a telemetry dropout, switches to the fallback: hold the current count and
   keep the reactive floor; never scale down.
1. demand: the alpha-quantile of forecast demand over [now, now + T_load + tick];
2. replicas: ceil(demand / (capacity x target utilisation)) - recorded as the decision's raw replicas;
3. reactive floor from the observed rate and queue (the surprises the forecast missed), then the burst
   reserve of the tuned operating point (spare replicas for bursts no forecast sees);
4. scale-in guard: release only replicas the forecast says would idle past the re-warm break-even;
5. stabilisation windows (HPA semantics), then max scale-up / scale-down per period;
6. min/max bounds.
Steps 3-4 come before 5 so that stabilisation remembers the guarded recommendation (what the replicas
should be), not the raw forecast; bounds come last so that no stage can leave them.
"""

from __future__ import annotations

from planner.explain import Decision, InputValue, Reason, Step, text
from planner.snapshot import Snapshot
from planner.spec import PlannerSpec
from planner.stages import (
    apply_floor,
    bounds,
    burst_reserve,
    demand,
    forecast_problem,
    no_forecast_demand,
    rate_limit,
    reactive_floor,
    scale_in_guard,
    slo_demand,
    stabilize,
)
from planner.state import PlannerState


def _next_state(
    state: PlannerState, spec: PlannerSpec, now: float, recommendation: int, change: int
) -> PlannerState:
    keep_recs = max(spec.scale_down_stabilization_s, spec.scale_up_stabilization_s)
    keep_events = max(spec.scale_up_period_s, spec.scale_down_period_s)
    since_recs, since_events = now - keep_recs, now - keep_events
    recs = (*[r for r in state.recommendations if r[0] > since_recs], (now, recommendation))
    events = tuple([e for e in state.scale_events if e[0] > since_events])
    if change:
        events += ((now, change),)
    return PlannerState(recs, events)


def plan(
    snapshot: Snapshot, spec: PlannerSpec, state: PlannerState, now: float
) -> tuple[Decision, PlannerState]:
    alpha = spec.quantile
    inputs: dict[str, InputValue] = {
        "alpha": alpha,
        "t_load_s": spec.t_load_s,
        "tick_s": spec.tick_s,
        "capacity_rps_per_replica": spec.capacity_rps_per_replica,
        "target_utilization": spec.target_utilization,
        "break_even_s": spec.break_even_s,
        "burst_reserve_replicas": spec.burst_reserve_replicas,
        "burst_reserve_share": spec.burst_reserve_share,
        "late_budget": spec.late_budget,
        "use_forecast": int(spec.use_forecast),
        "slo_target": spec.slo_target,
        "slo_unreachable": int(spec.slo_unreachable),
        "observed_rps": snapshot.observed_rps,
        "queue_length": snapshot.queue_length,
    }
    current = snapshot.current_replicas
    if current is None or current < 0:
        step = Step(
            "snapshot", None, 0, Reason.INVALID_SNAPSHOT, f"current replica count is {current!r}: no decision"
        )
        return Decision(
            now,
            False,
            max(0, current or 0),
            0,
            max(0, current or 0),
            Reason.INVALID_SNAPSHOT,
            (step,),
            inputs,
        ), state

    steps: list[Step] = []
    floor, floor_msg = reactive_floor(snapshot, spec, now)
    problem = forecast_problem(snapshot, spec, now)
    if problem is None and not spec.use_forecast and floor is None:
        problem = (
            Reason.OBSERVED_RATE_MISSING,
            f"{text(floor_msg)}, and this operating point plans from it alone",
        )
    fc = snapshot.forecast
    if problem is not None or (fc is None and spec.use_forecast):
        reason, why = problem or (Reason.FORECAST_MISSING, "no forecast is available")
        steps.append(
            Step("fallback", None, current, reason, f"holding {current}: {why}; never scaling down on it")
        )
        value, step = apply_floor(current, floor, floor_msg)
        steps.append(step)
        raw = value
        recommendation = value
        primary = reason
    else:
        forecast = fc if spec.use_forecast else None  # a forecast-free point plans from the floor alone
        if forecast is None:
            step = no_forecast_demand(spec)
            primary = Reason.REACTIVE_FLOOR
        else:
            if spec.late_budget is not None:
                fresh = floor is not None  # an observed rate the reactive floor could use: fresh and valid
                observed = snapshot.observed_rps if fresh else None
                warm = current if snapshot.ready_replicas is None else min(current, snapshot.ready_replicas)
                _, at, step = slo_demand(forecast, spec, now, current, observed, warm)
            else:
                rate, at, step = demand(forecast, spec, now)
                inputs["demand_rps"] = round(rate, 6)
            inputs.update(
                {
                    "demand_at_s": at,
                    "window_start_s": now,
                    "window_end_s": now + spec.lookahead_s,
                    "forecast_model": forecast.model,
                    "forecast_origin_s": forecast.origin_s,
                }
            )
            # at zero the demand step's own reason says why (ScaleToZero), whatever later stages leave alone
            primary = step.reason if step.reason == Reason.SCALE_TO_ZERO else Reason.FORECAST_DEMAND
        steps.append(step)
        raw = step.after
        value, step = apply_floor(raw, floor, floor_msg, current)
        steps.append(step)
        value, step = burst_reserve(value, spec)
        steps.append(step)
        if forecast is not None:
            value, step = scale_in_guard(forecast, spec, now, current, value)
            steps.append(step)
        recommendation = value
        value, step = stabilize(value, current, state, spec, now)
        steps.append(step)
    value, step = rate_limit(value, current, state, spec, now)
    steps.append(step)
    value, step = bounds(value, spec)
    steps.append(step)
    if problem is None:
        changed = [s for s in steps if s.changed]
        if changed:
            primary = changed[-1].reason
    decision = Decision(now, True, current, raw, value, primary, tuple(steps), inputs)
    return decision, _next_state(state, spec, now, recommendation, value - current)
