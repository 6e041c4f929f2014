"""Zero is an ordinary floor: a model with min_replicas 0 holds none when no request is likely before a
replica could be warm again, pre-warms one T_load ahead of the requests its forecast expects, says why, and
never scales down on missing data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.types import Forecast
from planner import PlannerSpec, PlannerState, Reason, Snapshot, plan
from planner.zero import chance_of_request

LEVELS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.9, 0.95, 0.975)
NOW = 1_800_000_000.0
STEP = 60


def sparse_forecast(p_any: list[float], count_if_any: float = 3.0, origin: float = NOW) -> Forecast:
    """A forecast of sparse traffic: per minute the chance of any request and the count given one."""
    p = np.asarray(p_any, dtype=np.float64)
    quantiles = {q: np.where(q <= 1 - p, 0.0, count_if_any) for q in LEVELS}
    return Forecast(origin, STEP, p * count_if_any, quantiles, "sparse", p_any=p)


def spec(**kw: float) -> PlannerSpec:
    base: dict[str, float] = {
        "capacity_rps_per_replica": 1.0,
        "t_load_s": 300.0,
        "late_budget": 0.05,
        "min_replicas": 0,
    }
    base.update(kw)
    return PlannerSpec(**base)  # type: ignore[arg-type]


def decide(fc: Forecast, current: int, sp: PlannerSpec, now: float = NOW, rps: float | None = 0.0):  # type: ignore[no-untyped-def]
    snap = Snapshot(current, forecast=fc, observed_rps=rps, observed_at_s=None if rps is None else now)
    return plan(snap, sp, PlannerState(), now)[0]


@pytest.mark.parametrize("current", [pytest.param(0, id="at zero"), pytest.param(1, id="holding one")])
def test_a_quiet_forecast_holds_no_replica_and_says_the_chance_and_the_budget(current: int) -> None:
    d = decide(sparse_forecast([0.001] * 30), current, spec())
    assert d.desired_replicas == 0
    assert d.reason == Reason.SCALE_TO_ZERO
    demand = d.steps[0]
    assert demand.reason == Reason.SCALE_TO_ZERO
    assert "chance of any request" in demand.message and "5.00% late budget" in demand.message


def test_a_replica_is_pre_warmed_t_load_ahead_of_the_requests_the_forecast_expects() -> None:
    # requests are likely from minute 20 on; the zero window is T_load 5m + a 30 s tick + 5m break-even
    p = [0.001] * 20 + [0.9] * 20
    sp = spec()
    first_warm = None
    for minute in range(0, 20):
        now = NOW + minute * 60
        fc = sparse_forecast(p[minute:], origin=now)
        if decide(fc, 0, sp, now).desired_replicas == 1:
            first_warm = minute
            break
    assert first_warm is not None
    ready_at = first_warm + sp.t_load_s / 60
    assert ready_at <= 20, "the replica is warm before the first likely request"
    assert first_warm >= 20 - sp.lookahead_s / 60, "and not asked for earlier than it must be"
    d = decide(sparse_forecast(p[first_warm:], origin=NOW + first_warm * 60), 0, sp, NOW + first_warm * 60)
    assert "pre-warming one replica" in d.steps[0].message


def test_a_burst_that_would_need_many_replicas_is_not_held_for_when_no_request_is_likely() -> None:
    # a client that sends 3,000 requests in a minute once a day: the SLO stage, which bounds the late share
    # of requests given they come, would hold the burst's replicas all day
    quiet = decide(sparse_forecast([0.0005] * 30, count_if_any=3000.0), 1, spec())
    assert quiet.desired_replicas == 0 and quiet.reason == Reason.SCALE_TO_ZERO
    likely = decide(sparse_forecast([0.9] * 30, count_if_any=3000.0), 1, spec())
    assert likely.desired_replicas > 1, "when it is likely, the SLO stage sizes the burst"


def test_a_sparse_forecast_is_not_read_past_its_highest_level() -> None:
    # the mixture's 0.95 and 0.975 quantiles straddle "any request": extrapolated as a tail, that step
    # asked for ten replicas for a burst one serves
    p = [0.5] * 30
    quantiles = {q: np.full(30, 0.0 if q <= 0.5 else 60.0 if q < 0.975 else 120.0) for q in LEVELS}
    fc = Forecast(NOW, STEP, np.asarray(p) * 60.0, quantiles, "sparse", p_any=np.asarray(p))
    d = decide(fc, 1, spec(late_budget=0.02))
    assert d.desired_replicas <= 3, d.steps[0].message


def test_a_floor_of_one_never_reaches_zero() -> None:
    d = decide(sparse_forecast([0.0] * 30), 1, spec(min_replicas=1))
    assert d.desired_replicas == 1


def test_without_a_late_budget_zero_is_not_planned_from_the_forecast() -> None:
    d = decide(sparse_forecast([0.0001] * 30), 1, spec(late_budget=None))  # type: ignore[arg-type]
    assert all(s.reason != Reason.SCALE_TO_ZERO for s in d.steps)


def test_a_request_seen_now_keeps_a_replica_whatever_the_forecast_says() -> None:
    d = decide(sparse_forecast([0.001] * 30), 0, spec(), rps=0.5)
    assert d.desired_replicas >= 1
    assert d.reason == Reason.REACTIVE_FLOOR


def test_missing_data_never_scales_a_zero_floor_model_down() -> None:
    snap = Snapshot(1, forecast=None, observed_rps=None, observed_at_s=None)
    d, _ = plan(snap, spec(), PlannerState(), NOW)
    assert d.desired_replicas == 1
    assert d.reason == Reason.FORECAST_MISSING


def test_a_forecast_too_short_for_the_zero_window_keeps_the_replica() -> None:
    d = decide(sparse_forecast([0.0] * 5), 1, spec())  # 5 minutes: the window is 10.5
    assert d.desired_replicas == 1


def test_the_chance_over_a_span_combines_steps_and_thins_a_part_of_one() -> None:
    fc = sparse_forecast([0.5, 0.5, 0.0, 0.0])
    assert chance_of_request(fc, NOW, NOW + 120) == pytest.approx(0.75)
    # half a step that sees 3 requests given any: each falls outside the half with 1/2
    assert chance_of_request(fc, NOW, NOW + 30) == pytest.approx(0.5 * (1 - 0.5**3))
    assert chance_of_request(fc, NOW + 120, NOW + 240) == 0.0
    assert chance_of_request(fc, NOW, NOW + 600) == 1.0, "past the forecast's end nothing says otherwise"


def test_holding_one_the_chance_is_given_that_none_came_since_the_forecast_s_origin() -> None:
    # a session just ended: each minute alone may still see it go on (0.3), but given none since the origin
    # the chance of a new request falls minute by minute (0.3, then 0.1, then 0.02 ...)
    hazard = np.array([0.3, 0.1, 0.02, 0.01] + [0.001] * 26)
    p_none = np.cumprod(1 - hazard)
    marginal = sparse_forecast([0.3] * 3 + [0.1] * 27)
    fc = Forecast(NOW, STEP, marginal.mean, marginal.quantiles, "sparse", p_any=marginal.p_any, p_none=p_none)
    assert chance_of_request(fc, NOW, NOW + 180, given_none=True) == pytest.approx(1 - p_none[2])
    # from minute 1 on, given none in minute 0; half a minute is half the minute's log-chance of none
    assert chance_of_request(fc, NOW + 60, NOW + 180, given_none=True) == pytest.approx(1 - 0.9 * 0.98)
    assert chance_of_request(fc, NOW + 60, NOW + 90, given_none=True) == pytest.approx(1 - 0.9**0.5)
    assert chance_of_request(fc, NOW, NOW + 180) > 0.6, "the steps' own chances, as at zero"
    sp = spec(late_budget=0.5)
    holding = decide(fc, 1, sp)
    window_steps = (sp.lookahead_s + sp.break_even_s) / STEP  # 10.5 minutes
    given_none = 1 - p_none[9] * (1 - hazard[10]) ** (window_steps - 10)
    assert holding.desired_replicas == 0
    assert f"a {given_none:.2%} chance of any request before" in holding.steps[0].message
    at_zero = decide(fc, 0, spec(late_budget=0.05))
    assert at_zero.desired_replicas == 1, "at zero, the window T_load ahead by the steps' own chances"


def test_without_p_any_the_chance_is_read_from_the_mean_as_poisson_arrivals() -> None:
    mean = np.array([0.1, 0.2, 0.3])
    fc = Forecast(NOW, STEP, mean, {0.5: mean}, "profile")
    assert chance_of_request(fc, NOW, NOW + 180) == pytest.approx(1 - math.exp(-0.6))


@settings(max_examples=60, deadline=None)
@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=15, max_size=15),
    budgets=st.tuples(st.sampled_from([0.001, 0.01, 0.05, 0.1]), st.sampled_from([0.2, 0.3, 0.5])),
    current=st.integers(0, 1),
)
def test_a_larger_late_budget_never_holds_more_replicas(
    p: list[float], budgets: tuple[float, float], current: int
) -> None:
    fc = sparse_forecast(p)
    tight, loose = (decide(fc, current, spec(late_budget=b)).desired_replicas for b in budgets)
    assert loose <= tight
