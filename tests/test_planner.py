"""The planner: timelines with time passed by value, the fallback rules, and properties under Hypothesis."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.types import Forecast
from planner import Decision, PlannerSpec, PlannerState, Reason, Snapshot, SpecError, plan

STEP = 60


def forecast(rates_rps: list[float] | np.ndarray, origin_s: float = 0.0, spread: float = 1.2) -> Forecast:
    """A forecast whose median is `rates_rps` and whose p90 is `spread` times it (counts per 60 s step)."""
    med = np.asarray(rates_rps, dtype=float) * STEP
    return Forecast(origin_s, STEP, med, {0.5: med, 0.9: med * spread, 0.99: med * spread * 1.3}, "test")


def spike(base: float, peak: float, start_min: int, end_min: int, minutes: int = 180) -> np.ndarray:
    r = np.full(minutes, base)
    r[start_min:end_min] = peak
    return r


SPEC = PlannerSpec(
    capacity_rps_per_replica=30.0,
    t_load_s=300.0,
    tick_s=30.0,
    target_utilization=1.0,
    alpha=0.5,
    min_replicas=1,
    max_replicas=50,
    reactive_target_utilization=0.9,  # the tests below do the utilisation arithmetic by hand
)


def run(
    spec: PlannerSpec,
    fc: Forecast,
    ticks: int,
    current: int = 2,
    observed: float | None = 0.0,
    state: PlannerState | None = None,
) -> list[Decision]:
    """Tick the planner, feeding each decision back as the current count (a perfect actuator); the
    observed rate is fresh at every tick (0 by default: the forecast alone decides; None: no observation,
    so no scale-down)."""
    state = state or PlannerState()
    out = []
    for k in range(ticks):
        now = k * spec.tick_s
        snap = Snapshot(
            current_replicas=current,
            forecast=fc,
            observed_rps=observed,
            observed_at_s=now if observed is not None else None,
        )
        d, state = plan(snap, spec, state, now)
        out.append(d)
        current = d.desired_replicas
    return out


def test_replicas_rise_t_load_ahead_of_a_forecast_spike_and_not_earlier() -> None:
    fc = forecast(spike(40, 200, 20, 40))  # 40 req/s, 200 req/s from minute 20 to 40
    ds = run(SPEC, fc, ticks=60)
    first_up = next(d.at_s for d in ds if d.desired_replicas >= 7)
    # the window [now, now + 5m30s] first reaches minute 20 at now = 14m30s
    assert 870 <= first_up <= 900
    assert all(d.desired_replicas == 2 for d in ds if d.at_s < 870)
    assert ds[-1].desired_replicas == 7  # ceil(200 / 30) held through the spike
    up = next(d for d in ds if d.at_s == first_up)
    assert up.reason == Reason.FORECAST_DEMAND
    assert "forecast p50 of 200 req/s" in up.explanation() and "T_load 5m" in up.explanation()


def test_after_a_spike_replicas_are_released_only_once_they_would_idle_past_break_even() -> None:
    fc = forecast(spike(40, 200, 0, 30))
    ds = run(SPEC, fc, ticks=120, current=7)
    down = next(d for d in ds if d.desired_replicas < 7)
    # demand ends at minute 30; the window empties at 30m; the guard holds until 30m - 5m30s - 5m = 19m30s
    # no earlier, and the 5-minute down-stabilisation adds 5 more minutes
    assert down.at_s >= 30 * 60 - 330 and down.at_s <= 30 * 60 + 300
    assert ds[-1].desired_replicas == 2
    held = [d for d in ds if Reason.SCALE_IN_HELD in d.reasons or Reason.SCALE_DOWN_STABILIZED in d.reasons]
    assert held, "the release must have been held by the guard or the stabilisation window first"


def test_a_dip_shorter_than_t_load_plus_break_even_does_not_release_replicas() -> None:
    rates = np.full(180, 200.0)
    rates[20:28] = 40.0  # 8 minutes: longer than the 5m30s look-ahead, shorter than it + the 5m break-even
    spec = PlannerSpec(**{**SPEC.__dict__, "scale_down_stabilization_s": 0.0})
    ds = run(spec, forecast(rates), ticks=60, current=7)
    assert any(d.raw_replicas == 2 for d in ds), "the look-ahead alone would have released them"
    assert all(d.desired_replicas == 7 for d in ds)
    assert any(d.reason == Reason.SCALE_IN_HELD for d in ds)


def test_scale_in_holds_when_the_forecast_is_too_short_to_prove_idleness() -> None:
    fc = forecast(np.full(7, 40.0))  # covers the look-ahead but not the break-even after it
    d, _ = plan(
        Snapshot(current_replicas=5, forecast=fc, observed_rps=0.0, observed_at_s=0.0),
        SPEC,
        PlannerState(),
        0.0,
    )
    assert d.desired_replicas == 5
    assert d.reason == Reason.SCALE_IN_HELD


@pytest.mark.parametrize(
    ("snapshot", "reason"),
    [
        pytest.param(Snapshot(current_replicas=6), Reason.FORECAST_MISSING, id="missing"),
        pytest.param(
            Snapshot(current_replicas=6, forecast=forecast(np.full(600, 40.0), origin_s=-10_000)),
            Reason.FORECAST_STALE,
            id="too-old",
        ),
        pytest.param(
            Snapshot(current_replicas=6, forecast=forecast(np.full(3, 40.0))),
            Reason.FORECAST_STALE,
            id="does-not-cover-look-ahead",
        ),
        pytest.param(
            Snapshot(
                current_replicas=6,
                forecast=forecast(np.full(600, 40.0)),
                forecast_healthy=False,
                forecast_note="backtest worse than reactive",
            ),
            Reason.FORECAST_UNHEALTHY,
            id="unhealthy",
        ),
        pytest.param(
            Snapshot(
                current_replicas=6,
                forecast=forecast(np.full(600, 40.0)),
                data_stale="the newest sample is 900 s old (limit 300 s)",
            ),
            Reason.FORECAST_STALE,
            id="stale-traffic-data",
        ),
        pytest.param(
            Snapshot(
                current_replicas=6,
                forecast=forecast(np.full(600, 40.0)),
                observed_rps=0.0,
                observed_at_s=0.0,
                data_dropout="traffic reads 0 for 20 min while the forecast expects at least 2400 requests",
            ),
            Reason.DATA_DROPOUT,
            id="telemetry-dropout",
        ),
    ],
)
def test_without_a_usable_forecast_the_planner_holds_and_never_scales_down(
    snapshot: Snapshot, reason: Reason
) -> None:
    d, _ = plan(snapshot, SPEC, PlannerState(), 0.0)
    assert d.valid
    assert d.reason == reason
    assert d.desired_replicas == 6
    assert "never scaling down" in d.explanation()


def test_fallback_still_follows_the_reactive_floor_up() -> None:
    d, _ = plan(
        Snapshot(current_replicas=2, observed_rps=250.0, observed_at_s=0.0), SPEC, PlannerState(), 0.0
    )
    assert d.desired_replicas == 10  # ceil(250 / (30 x 0.9))
    assert d.reason == Reason.FORECAST_MISSING
    assert Reason.REACTIVE_FLOOR in d.reasons


def test_reactive_floor_covers_the_queue_and_surprises_the_forecast_missed() -> None:
    fc = forecast(np.full(600, 10.0))
    d, _ = plan(
        Snapshot(current_replicas=1, forecast=fc, observed_rps=100.0, observed_at_s=0.0, queue_length=8910.0),
        SPEC,
        PlannerState(),
        0.0,
    )
    assert d.raw_replicas == 1
    assert d.desired_replicas == 5  # (100 + 8910 / (300 + 30)) / (30 x 0.9) = 4.7: the backlog is spread
    # over T_load + drain, since replicas asked for now only serve after T_load
    assert d.reason == Reason.REACTIVE_FLOOR


def test_a_stale_observation_gives_no_floor_and_says_so() -> None:
    fc = forecast(np.full(600, 10.0))
    d, _ = plan(
        Snapshot(current_replicas=1, forecast=fc, observed_rps=900.0, observed_at_s=-600.0),
        SPEC,
        PlannerState(),
        0.0,
    )
    assert d.desired_replicas == 1
    assert Reason.OBSERVED_RATE_MISSING in d.reasons


def test_without_an_observed_rate_the_forecast_may_raise_the_count_but_never_lower_it() -> None:
    low, high = forecast(np.full(600, 10.0)), forecast(np.full(600, 3000.0))
    down, _ = plan(Snapshot(current_replicas=8, forecast=low), SPEC, PlannerState(), 0.0)
    assert down.desired_replicas == 8 and down.reason == Reason.OBSERVED_RATE_MISSING
    assert "no scale-down without it (holding 8)" in down.explanation()
    up, _ = plan(Snapshot(current_replicas=8, forecast=high), SPEC, PlannerState(), 0.0)
    assert up.desired_replicas > 8


def test_scale_up_is_rate_limited_per_period() -> None:
    spec = PlannerSpec(**{**SPEC.__dict__, "scale_up_limit_replicas": 2, "scale_up_period_s": 60.0})
    ds = run(spec, forecast(np.full(600, 300.0)), ticks=6, current=2)
    assert [d.desired_replicas for d in ds] == [4, 4, 6, 6, 8, 8]
    assert ds[1].reason == Reason.SCALE_UP_LIMIT


def test_bounds_are_applied_last() -> None:
    d, _ = plan(
        Snapshot(current_replicas=3, forecast=forecast(np.full(600, 5000.0))), SPEC, PlannerState(), 0.0
    )
    assert (d.desired_replicas, d.reason) == (50, Reason.TOO_MANY_REPLICAS)
    d, _ = plan(
        Snapshot(current_replicas=3, forecast=forecast(np.zeros(600)), observed_rps=0.0, observed_at_s=0.0),
        PlannerSpec(**{**SPEC.__dict__, "min_replicas": 2, "scale_down_stabilization_s": 0.0}),
        PlannerState(),
        0.0,
    )
    assert (d.desired_replicas, d.reason) == (2, Reason.TOO_FEW_REPLICAS)


def test_unknown_current_replicas_is_no_decision_not_a_zero() -> None:
    d, state = plan(
        Snapshot(current_replicas=None, forecast=forecast(np.full(600, 40.0))), SPEC, PlannerState(), 0.0
    )
    assert not d.valid
    assert d.reason == Reason.INVALID_SNAPSHOT
    assert state == PlannerState()


def test_state_survives_a_restart_through_json() -> None:
    fc = forecast(spike(200, 40, 0, 600, minutes=700))  # demand drops right away
    _d1, state = plan(
        Snapshot(current_replicas=7, forecast=forecast(np.full(700, 200.0))), SPEC, PlannerState(), 0.0
    )
    restored = PlannerState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    idle = {"observed_rps": 0.0, "observed_at_s": 30.0}
    d2, _ = plan(Snapshot(current_replicas=7, forecast=fc, **idle), SPEC, restored, 30.0)  # type: ignore[arg-type]
    d3, _ = plan(Snapshot(current_replicas=7, forecast=fc, **idle), SPEC, PlannerState(), 30.0)  # type: ignore[arg-type]
    assert d2.desired_replicas == 7  # the remembered recommendation of 7 keeps the down-stabilisation
    assert d3.desired_replicas < 7  # a planner that forgot would scale in at once
    with pytest.raises(ValueError, match="malformed"):
        PlannerState.from_dict({"recommendations": [["x", 1]]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"capacity_rps_per_replica": 0.0},
            "capacity_rps_per_replica=0.0 is out of range; allowed (0, inf]",
            id="capacity",
        ),
        pytest.param(
            {"target_utilization": 1.5}, "target_utilization=1.5 is out of range; allowed (0, 1]", id="util"
        ),
        pytest.param({"alpha": 1.0}, "alpha=1.0 is out of range; allowed (0, 1)", id="alpha"),
        pytest.param(
            {"min_replicas": 5, "max_replicas": 3},
            "max_replicas=3 is out of range; allowed [5, 100000]",
            id="max-below-min",
        ),
        pytest.param({"min_replicas": 1.5}, "min_replicas=1.5 must be a whole number", id="fractional"),
        pytest.param({"t_load_s": -1.0}, "t_load_s=-1.0 is out of range", id="negative-t-load"),
    ],
)
def test_bad_spec_names_key_value_and_allowed_range(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SpecError) as info:
        PlannerSpec(**{"capacity_rps_per_replica": 30.0, "t_load_s": 300.0, **kwargs})  # type: ignore[arg-type]
    assert message in str(info.value)


def test_alpha_is_the_newsvendor_fractile_unless_set() -> None:
    assert PlannerSpec(capacity_rps_per_replica=1, t_load_s=1, cost_miss=19, cost_idle=1).quantile == 0.95
    assert PlannerSpec(capacity_rps_per_replica=1, t_load_s=1, alpha=0.7).quantile == 0.7


# ---- properties --------------------------------------------------------------------------------------------

rates = st.lists(st.floats(0, 2000, allow_nan=False), min_size=30, max_size=30)
specs = st.builds(
    PlannerSpec,
    capacity_rps_per_replica=st.floats(1, 100),
    t_load_s=st.sampled_from([0.0, 30.0, 120.0, 300.0]),
    tick_s=st.sampled_from([15.0, 30.0, 60.0]),
    alpha=st.sampled_from([None, 0.5, 0.9, 0.99]),
    min_replicas=st.integers(0, 3),
    max_replicas=st.integers(3, 40),
    scale_up_limit_replicas=st.one_of(st.none(), st.integers(1, 5)),
    scale_down_limit_replicas=st.one_of(st.none(), st.integers(1, 5)),
    scale_down_stabilization_s=st.sampled_from([0.0, 120.0, 300.0]),
)


def long_forecast(r: list[float]) -> Forecast:
    return forecast(np.repeat(np.asarray(r), 40))  # 30 levels x 40 min: covers look-ahead + break-even


@settings(max_examples=150, deadline=None)
@given(specs, rates, st.integers(0, 60), st.one_of(st.none(), st.floats(0, 3000)))
def test_result_is_always_within_bounds(
    spec: PlannerSpec, r: list[float], current: int, obs: float | None
) -> None:
    snap = Snapshot(current_replicas=current, forecast=long_forecast(r), observed_rps=obs, observed_at_s=0.0)
    d, _ = plan(snap, spec, PlannerState(), 0.0)
    assert spec.min_replicas <= d.desired_replicas <= spec.max_replicas


@settings(max_examples=150, deadline=None)
@given(specs, rates, st.floats(1.0, 5.0), st.integers(0, 60))
def test_more_forecast_demand_never_means_fewer_replicas(
    spec: PlannerSpec, r: list[float], k: float, current: int
) -> None:
    lo, _ = plan(Snapshot(current_replicas=current, forecast=long_forecast(r)), spec, PlannerState(), 0.0)
    hi, _ = plan(
        Snapshot(current_replicas=current, forecast=long_forecast([x * k for x in r])),
        spec,
        PlannerState(),
        0.0,
    )
    assert hi.desired_replicas >= lo.desired_replicas


@settings(max_examples=100, deadline=None)
@given(specs, rates, st.integers(0, 40))
def test_step_limits_hold_over_a_timeline(spec: PlannerSpec, r: list[float], current: int) -> None:
    current = min(max(current, spec.min_replicas), spec.max_replicas)
    fc = long_forecast(r)
    state = PlannerState()
    history: list[tuple[float, int]] = []
    for k in range(20):
        now = k * spec.tick_s
        d, state = plan(Snapshot(current_replicas=current, forecast=fc), spec, state, now)
        history.append((now, d.desired_replicas - current))
        current = d.desired_replicas
        window_up = sum(c for t, c in history if c > 0 and t > now - spec.scale_up_period_s)
        window_down = -sum(c for t, c in history if c < 0 and t > now - spec.scale_down_period_s)
        if spec.scale_up_limit_replicas is not None:
            assert window_up <= spec.scale_up_limit_replicas
        if spec.scale_down_limit_replicas is not None:
            assert window_down <= spec.scale_down_limit_replicas


@settings(max_examples=100, deadline=None)
@given(specs, st.floats(0, 2000), st.integers(0, 40), st.one_of(st.none(), st.floats(0, 2000)))
def test_constant_demand_never_oscillates(
    spec: PlannerSpec, rate: float, current: int, obs: float | None
) -> None:
    fc = long_forecast([rate] * 30)
    state = PlannerState()
    seen: list[int] = []
    for k in range(60):
        now = k * spec.tick_s
        snap = Snapshot(current_replicas=current, forecast=fc, observed_rps=obs, observed_at_s=now)
        d, state = plan(snap, spec, state, now)
        seen.append(d.desired_replicas)
        current = d.desired_replicas
    changes = [b - a for a, b in itertools.pairwise(seen) if b != a]
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes), f"direction changed: {seen}"


def raw_for(spec: PlannerSpec, rate: float) -> int:
    """Raw replicas for a forecast certain of `rate` (every quantile equal to it)."""
    med = np.full(600, rate * STEP)
    fc = Forecast(0.0, STEP, med, {q: med for q in (0.5, 0.9, 0.99)}, "test")
    d, _ = plan(Snapshot(current_replicas=1, forecast=fc), spec, PlannerState(), 0.0)
    return d.raw_replicas


@pytest.mark.parametrize(
    ("capacity", "rate", "expected"),
    [
        # 20 s per request, 2 s SLO wait, at most 1% waiting longer: Erlang C counts
        pytest.param(0.05, 0.05, 5, id="one-replica-of-slow-load-gets-four-more"),
        pytest.param(0.05, 0.5, 18, id="ten-replicas-of-slow-load-get-eight-more"),
        pytest.param(0.05, 5.0, 125, id="a-hundred-replicas-of-load-need-less-than-the-utilisation-target"),
        pytest.param(30.0, 30.0, 2, id="fast-replicas-rarely-queue-past-the-slo"),
    ],
)
def test_a_hard_wait_probability_cap_adds_proportionally_more_headroom_at_low_load(
    capacity: float, rate: float, expected: int
) -> None:
    spec = PlannerSpec(
        capacity_rps_per_replica=capacity,
        t_load_s=300.0,
        alpha=0.5,
        max_replicas=1000,
        slo_wait_probability=0.01,
    )
    assert spec.slo_wait_s == 2.0
    assert raw_for(spec, rate) == expected


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # 20 s per request, 10 replicas of load, 2 s SLO wait: a replica is kept while it saves (1 - alpha) /
        # alpha of its capacity in late requests
        pytest.param(0.5, 13, id="even-costs-need-only-the-utilisation-target"),
        pytest.param(0.9, 17, id="default-costs"),
        pytest.param(0.99, 20, id="a-late-request-dear"),
    ],
)
def test_queueing_headroom_follows_the_cost_of_a_late_request(alpha: float, expected: int) -> None:
    spec = PlannerSpec(capacity_rps_per_replica=0.05, t_load_s=300.0, alpha=alpha, max_replicas=1000)
    assert spec.slo_wait_probability is None  # the cost rule alone by default
    assert spec.min_averted_rps == pytest.approx(0.05 * (1 - alpha) / alpha)
    assert raw_for(spec, 0.5) == expected


def test_the_cost_rule_spends_less_headroom_on_quiet_hours_than_a_fixed_probability() -> None:
    cost_rule = PlannerSpec(capacity_rps_per_replica=0.05, t_load_s=300.0, alpha=0.9, max_replicas=1000)
    capped = PlannerSpec(
        capacity_rps_per_replica=0.05, t_load_s=300.0, alpha=0.9, max_replicas=1000, slo_wait_probability=0.01
    )
    # one replica of load (180 requests an hour): a fixed 1% asks for 5, but a 4th replica would save 11 late
    # requests an hour and a 5th 2, where one is worth its idle cost from 20 (a ninth of 180)
    assert (raw_for(cost_rule, 0.05), raw_for(capped, 0.05)) == (3, 5)
    # a hundred replicas of load: the cost rule asks for more, each late-request share is worth more there
    assert raw_for(cost_rule, 5.0) >= raw_for(capped, 5.0)


# -- the burst reserve and the operating point (SLO tuning) ----------------------------------------


def with_(spec: PlannerSpec, **changes: object) -> PlannerSpec:
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spares", "share", "extra"),
    [
        pytest.param(0, 0.0, lambda n: 0, id="no reserve"),
        pytest.param(3, 0.0, lambda n: 3, id="three spares on top"),
        pytest.param(0, 0.25, lambda n: math.ceil(n / 4), id="a quarter of the plan, rounded up"),
        pytest.param(2, 0.5, lambda n: 2 + math.ceil(n / 2), id="both: 2 spares and half the plan"),
    ],
)
def test_the_burst_reserve_adds_spares_after_the_forecast_and_says_how_many(
    spares: int, share: float, extra: Callable[[int], int]
) -> None:
    fc = forecast(np.full(60, 150.0))
    base = run(SPEC, fc, ticks=1, current=6)[0].desired_replicas  # the forecast's count, queueing included
    spec = with_(SPEC, burst_reserve_replicas=spares, burst_reserve_share=share)
    want = base + extra(base)
    d = run(spec, fc, ticks=1, current=want)[0]
    assert d.desired_replicas == want
    reserve = next(s for s in d.steps if s.stage == "burst_reserve")
    assert (reserve.before, reserve.after) == (base, want)
    if want > base:
        assert reserve.reason == Reason.BURST_RESERVE
        assert f"burst reserve of {want - base} spare" in d.explanation()
    else:
        assert reserve.reason == Reason.FORECAST_DEMAND and not reserve.changed


def test_the_reserve_sits_on_the_reactive_floor_when_traffic_outruns_the_forecast() -> None:
    spec = with_(SPEC, burst_reserve_replicas=2)
    # forecast 60 req/s (2 replicas) but 270 req/s observed: floor ceil(270 / (30 x 0.9)) = 10, plus 2
    d = run(spec, forecast(np.full(60, 60.0)), ticks=1, current=12, observed=270.0)[0]
    assert d.desired_replicas == 12
    assert [s.stage for s in d.steps if s.changed] == ["reactive_floor", "burst_reserve"]


def test_the_scale_in_guard_keeps_the_reserve_it_would_need_again() -> None:
    spec = with_(SPEC, burst_reserve_replicas=2, scale_down_stabilization_s=0.0)
    at_peak = run(spec, forecast(np.full(60, 150.0)), ticks=1, current=8)[0].desired_replicas
    # a dip to 30 req/s over the look-ahead, and 150 again at minute 7: within the re-warm break-even
    fc = forecast(np.concatenate([np.full(7, 30.0), np.full(60, 150.0)]))
    d = run(spec, fc, ticks=1, current=at_peak)[0]
    assert d.desired_replicas == at_peak  # the return needs its replicas and their reserve
    guard = next(s for s in d.steps if s.stage == "scale_in_guard")
    assert guard.reason == Reason.SCALE_IN_HELD and guard.before is not None and guard.before < at_peak


def test_an_operating_point_without_the_forecast_is_the_reactive_floor_plus_its_reserve() -> None:
    spec = with_(SPEC, use_forecast=False, burst_reserve_replicas=3)
    # the forecast says a spike is coming; this operating point does not read it
    d = run(spec, forecast(spike(40, 400, 1, 60)), ticks=1, current=6, observed=60.0)[0]
    assert d.desired_replicas == 3 + 3  # ceil(60 / 27) + 3
    assert d.steps[0].stage == "demand" and d.steps[0].after == 0
    assert "observed rate alone" in d.explanation()
    assert d.inputs["use_forecast"] == 0 and d.inputs["burst_reserve_replicas"] == 3


def test_an_operating_point_without_the_forecast_still_holds_on_missing_data() -> None:
    spec = with_(SPEC, use_forecast=False)
    d = run(spec, forecast(np.full(60, 40.0)), ticks=1, current=9, observed=None)[0]
    assert d.desired_replicas == 9  # no observed rate: it plans from nothing else, so it holds
    assert d.reason == Reason.OBSERVED_RATE_MISSING


def test_an_unreachable_slo_is_said_in_every_decision() -> None:
    spec = SPEC.__class__(
        **{**SPEC.__dict__, "burst_reserve_replicas": 4, "slo_target": 0.999, "slo_unreachable": True}
    )
    d = run(spec, forecast(np.full(60, 150.0)), ticks=1, current=9)[0]
    assert Reason.SLO_UNREACHABLE in d.reasons
    assert "SLO unreachable: no tuned operating point kept 0.999 of requests within 2s" in d.explanation()
    assert d.inputs["slo_unreachable"] == 1 and d.inputs["slo_target"] == 0.999


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        pytest.param("burst_reserve_replicas", -1, "[0, 100000]", id="negative spares"),
        pytest.param("burst_reserve_share", 11.0, "[0, 10]", id="share above 10x"),
        pytest.param("slo_target", 99.0, "(0, 1)", id="a percentage as the target"),
        pytest.param("slo_target", 1.0, "(0, 1)", id="a target of all requests"),
    ],
)
def test_bad_operating_point_values_name_key_value_and_range(key: str, value: float, allowed: str) -> None:
    with pytest.raises(SpecError, match=rf"{key}={value!r} is out of range; allowed {re.escape(allowed)}"):
        with_(SPEC, **{key: value})
