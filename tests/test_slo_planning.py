"""Planning for the SLO itself (planner/slo.py): the fewest replicas whose expected share of late requests
stays within a budget, monotone in the budget, added only for the steps a decision can still reach and kept
for the steps before them; and the decision says what it planned for."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.types import Forecast
from planner import PlannerSpec, PlannerState, Reason, Snapshot, plan
from planner.explain import text
from planner.slo import LateCurve, anchor_factor, late_share, replicas_within, step_distribution

STEP = 60
CAP = 10.0  # requests/s one replica serves


def forecast(median_rps: list[float] | np.ndarray, spread: float = 0.15) -> Forecast:
    """A forecast whose quantiles are lognormal around `median_rps` (counts per 60 s step)."""
    from scipy.stats import norm

    med = np.asarray(median_rps, dtype=float) * STEP
    levels = (0.05, 0.15, 0.25, 0.35, 0.45, 0.5, 0.55, 0.65, 0.75, 0.85, 0.9, 0.95, 0.975, 0.99)
    return Forecast(0.0, STEP, med, {q: med * float(np.exp(spread * norm.ppf(q))) for q in levels}, "test")


SPEC = PlannerSpec(
    capacity_rps_per_replica=CAP,
    t_load_s=300.0,
    tick_s=30.0,
    late_budget=0.01,
    min_replicas=0,
    max_replicas=10_000,
    scale_down_stabilization_s=0.0,
)


def test_the_count_is_the_fewest_whose_expected_late_share_is_within_the_budget() -> None:
    dist = step_distribution(forecast([100.0] * 10), 3)
    for budget in (0.1, 0.01, 0.001):
        n = replicas_within(dist, CAP, 2.0, budget)
        assert late_share(dist, n, CAP, 2.0) <= budget < late_share(dist, n - 1, CAP, 2.0)


def test_an_overloaded_step_is_all_late_and_an_idle_one_needs_nothing() -> None:
    assert late_share(((1.0, 50.0),), 4, CAP, 2.0) == 1.0  # 50 req/s on 40 req/s of capacity
    assert replicas_within(((1.0, 0.0),), CAP, 2.0, 0.01) == 0


@settings(max_examples=60, deadline=None)
@given(
    median=st.floats(1.0, 2000.0),
    spread=st.floats(0.01, 1.0),
    budgets=st.tuples(st.floats(1e-4, 0.5), st.floats(1e-4, 0.5)),
)
def test_a_smaller_budget_never_asks_for_fewer_replicas(
    median: float, spread: float, budgets: tuple[float, float]
) -> None:
    dist = step_distribution(forecast([median] * 3, spread), 1)
    lo, hi = sorted(budgets)
    assert replicas_within(dist, CAP, 2.0, lo) >= replicas_within(dist, CAP, 2.0, hi)


def test_a_quantile_path_reads_the_forecast_s_own_floats_at_8_bytes_a_value() -> None:
    fc = forecast(np.linspace(1.0, 900.0, 2400))
    for q in (0.05, 0.5, 0.975):
        tracemalloc.start()
        path = fc.quantile_values(q)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert list(path) == fc.quantile(q).tolist() and all(type(v) is float for v in path[:3])
        assert path is fc.quantile_values(q)  # once per forecast and level
        assert held < 10 * len(path)  # as a list of Python floats, 32 bytes a value


def test_the_step_distribution_is_a_distribution_with_a_rising_tail() -> None:
    dist = step_distribution(forecast([100.0] * 5, spread=0.3), 2)
    assert sum(w for w, _ in dist) == pytest.approx(1.0)
    rates = [r for _, r in dist]
    assert rates == sorted(rates) and rates[-1] > rates[-5]  # extrapolated past the highest level read


def tick(spec: PlannerSpec, fc: Forecast, now: float, current: int, observed: float | None = None) -> int:
    snap = Snapshot(
        current,
        forecast=fc,
        observed_rps=observed if observed is not None else 0.0,
        observed_at_s=now,
    )
    decision, _ = plan(snap, spec, PlannerState(), now)
    return decision.desired_replicas


def test_replicas_are_added_only_for_the_steps_a_decision_can_reach() -> None:
    """A spike that ends before a replica asked for now could be warm is no reason to add one."""
    rates = np.full(60, 50.0)
    rates[2:4] = 200.0  # minutes 2-4: within T_load of now (0)
    flat = tick(SPEC, forecast(np.full(60, 50.0)), 0.0, current=6)
    assert tick(SPEC, forecast(rates), 0.0, current=6) == flat < 20  # 20+ would be warm after the spike
    rising = np.full(60, 50.0)
    rising[5:12] = 200.0  # from minute 5 on: reachable
    assert tick(SPEC, forecast(rising), 0.0, current=6) >= 20


def test_replicas_held_for_the_steps_before_a_release_could_return_are_kept() -> None:
    rates = np.full(60, 50.0)
    rates[2:4] = 200.0
    # 25 held now, the spike at minute 2 needs them, and released now they could not be back in time
    assert tick(SPEC, forecast(rates), 0.0, current=25) >= 20


def test_the_decision_says_what_late_share_it_planned_for_and_expects() -> None:
    fc = forecast(np.full(60, 100.0))
    decision, _ = plan(
        Snapshot(12, forecast=fc, observed_rps=100.0, observed_at_s=0.0), SPEC, PlannerState(), 0.0
    )
    (demand,) = [s for s in decision.steps if s.stage == "demand"]
    assert demand.reason is Reason.FORECAST_DEMAND
    assert "planned for at most 1.000% late" in demand.message and "expected" in demand.message
    assert decision.inputs["late_budget"] == 0.01


def demand_after(spec: PlannerSpec, fc: Forecast, observed: float) -> int:
    snap = Snapshot(12, forecast=fc, observed_rps=observed, observed_at_s=0.0)
    decision, _ = plan(snap, spec, PlannerState(), 0.0)
    return next(s.after for s in decision.steps if s.stage == "demand")


def test_traffic_running_above_the_forecast_now_raises_the_plan_and_a_lull_never_lowers_it() -> None:
    """The forecast was anchored on the last whole step; the observed rate is a tick old."""
    fc = forecast(np.full(60, 100.0))
    as_forecast = demand_after(SPEC, fc, 100.0)
    assert demand_after(SPEC, fc, 150.0) > as_forecast
    assert demand_after(SPEC, fc, 20.0) == demand_after(SPEC, fc, 0.0) == as_forecast
    fixed = dataclasses.replace(SPEC, slo_anchor=False)
    assert demand_after(fixed, fc, 150.0) == demand_after(fixed, fc, 100.0) == as_forecast


def test_a_session_under_way_is_compared_with_the_sparse_forecast_s_count_given_any() -> None:
    """A sparse forecast's mean is diluted by its chance of none: a session running at its usual count is
    no rise above the forecast, and scaling the whole distribution by it asked a burst's replicas."""
    p = np.full(60, 0.2)
    given_any = 6.0  # requests per 1-minute step when any come
    quantiles = {q: np.where(q <= 1 - p, 0.0, given_any) for q in (0.5, 0.75, 0.8, 0.9, 0.95, 0.975)}
    fc = Forecast(0.0, 60, p * given_any, quantiles, "sparse", p_any=p)
    assert anchor_factor(fc, 0.0, given_any / 60, 60.0) == 1.0, "the usual session count"
    assert anchor_factor(fc, 0.0, 4 * given_any / 60, 60.0) > 2.0, "a session four times the usual"
    rate_fc = Forecast(0.0, 60, p * given_any, quantiles, "profile")
    assert anchor_factor(rate_fc, 0.0, given_any / 60, 60.0) > 2.0, "a rate forecast's mean, as before"


def walk_alone(dist: list[tuple[float, float]], capacity_rps: float, wait_s: float, budget: float) -> int:
    """The fewest replicas within the budget, by a walk of its own from the mean rate's count (the
    reference a shared late curve must match)."""
    total = sum(w * r for w, r in dist)
    if total <= 0:
        return 0
    n = max(1, math.ceil(total / capacity_rps - 1e-12))
    while late_share(dist, n, capacity_rps, wait_s) * total > budget * total + 1e-12:
        n += 1
    return n


@given(
    rates=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=6),
    capacity=st.floats(0.2, 10.0),
    wait=st.floats(0.1, 5.0),
    budgets=st.lists(st.floats(1e-4, 0.5), min_size=1, max_size=8),
)
@settings(max_examples=200)
def test_the_budgets_of_one_step_share_its_late_curve_and_get_what_a_walk_of_their_own_gets(
    rates: list[float], capacity: float, wait: float, budgets: list[float]
) -> None:
    dist = [(1.0 / len(rates), r) for r in sorted(rates)]
    curve = LateCurve(dist, capacity, wait)
    for budget in budgets:  # in any order: a smaller budget extends the curve, a larger one reads it
        assert curve.replicas(budget) == replicas_within(dist, capacity, wait, budget)
        assert abs(curve.replicas(budget) - walk_alone(dist, capacity, wait, budget)) <= 1


@given(
    rates=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=6),
    capacity=st.floats(0.2, 10.0),
    wait=st.floats(0.1, 5.0),
    extra=st.integers(0, 5),
)
def test_a_late_curve_gives_the_late_share_exactly_as_it_is_computed_alone(
    rates: list[float], capacity: float, wait: float, extra: int
) -> None:
    dist = [(1.0 / len(rates), r) for r in sorted(rates)]
    curve = LateCurve(dist, capacity, wait)
    for n in range(max(1, curve.n0), max(1, curve.n0) + extra + 1):
        assert curve.share(n) == late_share(dist, n, capacity, wait)  # equal, not close


@settings(max_examples=80, deadline=None)
@given(
    medians=st.lists(st.floats(0.0, 800.0), min_size=20, max_size=20),
    current=st.integers(0, 120),
    now=st.floats(0.0, 600.0),
    observed=st.one_of(st.none(), st.floats(0.0, 1500.0)),
)
def test_the_count_held_for_the_steps_before_t_load_is_what_reading_them_always_gave(
    medians: list[float], current: int, now: float, observed: float | None
) -> None:
    """slo_demand reads the steps before T_load only when the replicas held exceed what the reachable steps
    need; the count, its step and its sentence are those of reading both windows every time."""
    from planner.slo import peak_need
    from planner.stages import slo_demand

    fc = forecast(medians)
    spec = dataclasses.replace(SPEC, min_replicas=1)
    f = anchor_factor(fc, now, observed, spec.reactive_window_s)
    cap, wait, budget = spec.capacity_rps_per_replica, spec.slo_wait_s, spec.late_budget
    assert budget is not None
    up, up_at, _ = peak_need(fc, now + spec.t_load_s, now + spec.lookahead_s, cap, wait, budget, f)
    hold, hold_at, _ = peak_need(forecast(medians), now, now + spec.t_load_s, cap, wait, budget, f)
    kept = min(current, hold)
    n, at, step = slo_demand(fc, spec, now, current, observed)
    assert (n, at) == ((kept, hold_at) if kept > up else (up, up_at))
    assert ("keeping" in text(step.message)) == (kept > up)
