"""The fleet stage (planner/fleet.py): a model's reactive floor is never another model's headroom, the rest
goes by the SLO deficit each GPU closes, held warm replicas move only for a gain worth a cold start and never
for a one-tick spike, and every clipped model is told why."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.types import Forecast
from planner import Decision, PlannerSpec, Reason, Snapshot
from planner.fleet import (
    HOLD_FACTOR,
    FleetRequest,
    FleetState,
    allocate,
    expected_requests,
    fleet_request,
    marginal_values,
    quantile_weights,
)
from planner.queueing import wait_probability


def ask(
    model: str, late: list[float], *, floor: int, current: int = 0, target: float = 0.99, **kw: float
) -> FleetRequest:
    """A request from its late curve: late[k] = expected late requests over the value window with k
    replicas (late[0] = every request expected), so it asks for len(late) - 1 replicas."""
    prevented = tuple(a - b for a, b in pairwise(late))
    return FleetRequest(
        model,
        len(late) - 1,
        floor,
        current,
        values=prevented[floor:],
        floor_values=prevented[:floor],
        expected_requests=late[0],
        slo_target=target,
        **kw,  # type: ignore[arg-type]
    )


def granted(a: object) -> dict[str, int]:
    return {m: g.granted for m, g in a.grants.items()}  # type: ignore[attr-defined]


def steady(*requests: FleetRequest) -> FleetState:
    """The state a tick leaves when every model asked the same on it: their wants are not new."""
    return FleetState({r.model: r.desired for r in requests})


def test_under_the_budget_every_model_gets_what_it_asked() -> None:
    a = allocate(
        [ask("a", [100, 50, 20, 10, 5, 1], floor=2), ask("b", [10, 5, 2, 1], floor=3)], budget_gpus=10
    )
    assert granted(a) == {"a": 5, "b": 3}
    assert a.clipped == [] and a.used_gpus == 8
    assert a.grants["a"].late_share == pytest.approx(0.01) and a.grants["a"].floor == 2


def test_a_small_model_far_outside_its_target_outranks_a_big_one_within_it() -> None:
    # big: 100,000 requests over the window, 0.5% late at its floor of 3 (within its 1% budget); its next
    # replicas prevent 300, 150, 50 late requests, far more than the small model's, but no deficit is left
    big = ask("big", [100_000, 30_000, 5_000, 500, 200, 50, 0], floor=3)
    # small: 1,000 requests, 10% late at its floor of 2: its first two increments close its 9-point deficit
    small = ask("small", [1_000, 400, 100, 40, 10, 1], floor=2)
    a = allocate([big, small], budget_gpus=5 + 2)
    assert granted(a) == {"big": 3, "small": 4}  # the deficit closers, though big's prevent 5-10x more
    assert a.grants["small"].late_share == pytest.approx(0.01)
    # then by the late share each prevents, in units of its budget: small's 3rd (0.9) before big's (0.3)
    assert granted(allocate([big, small], budget_gpus=8)) == {"big": 3, "small": 5}
    assert granted(allocate([big, small], budget_gpus=9)) == {"big": 4, "small": 5}
    text = a.grants["big"].describe(7, 11)
    assert (
        "asked 6 replicas, granted 3" in text
        and "expected late share 0.50% against its late budget 1.00%" in text
    )
    assert "would have kept 0.30% of its requests from being late" in text and "small" in text


def test_priority_and_gpus_per_replica_scale_the_value() -> None:
    a = ask("a", [1_000, 400, 100, 40, 10], floor=1)
    b = ask("b", [1_000, 400, 100, 40, 10], floor=1)
    assert granted(allocate([a, b], budget_gpus=5)) == {"a": 3, "b": 2}  # a tie goes to the first asked
    assert granted(allocate([a, replace(b, priority=2.0)], budget_gpus=5)) == {"a": 2, "b": 3}
    assert granted(allocate([a, replace(b, gpus_per_replica=2.0)], budget_gpus=5)) == {"a": 3, "b": 1}


def test_when_even_the_floors_exceed_the_budget_they_go_by_priority() -> None:
    requests = [
        ask("low", [40, 30, 20, 10, 0], floor=4, priority=1),
        ask("high", [40, 30, 20, 10, 0], floor=4, priority=3),
        ask("mid", [40, 30, 20, 10, 0], floor=4, priority=2),
    ]
    a = allocate(requests, budget_gpus=6)
    assert granted(a) == {"high": 4, "mid": 2, "low": 0}
    assert "even the reactive floors exceed the budget" in a.grants["low"].describe(6, 12)


def test_floors_that_exceed_the_budget_are_shared_not_won_by_the_busiest_model() -> None:
    # at one priority, a busy model's floor (worth far more late requests per replica) does not starve a
    # quiet model's: each next floor replica goes to the model with the least share of its floor met
    busy = ask("busy", [8_000 - 900 * k for k in range(9)], floor=8)
    quiet = ask("quiet", [12 - 3 * k for k in range(5)], floor=4)
    assert granted(allocate([busy, quiet], budget_gpus=6)) == {"busy": 4, "quiet": 2}
    # a higher priority still goes first
    assert granted(allocate([busy, replace(quiet, priority=2.0)], budget_gpus=6)) == {"busy": 2, "quiet": 4}


def test_a_floor_takes_held_headroom_whatever_the_headroom_is_worth() -> None:
    # big holds 10: a floor of 6 and 4 replicas of forecast headroom, each worth a great deal; spiky's
    # observed traffic needs 4 and it holds 1: the guarantee moves 3 of big's headroom to it
    big = ask("big", [50_000, *(50_000 - 5_000 * k for k in range(1, 11))], floor=6, current=10)
    spiky = ask("spiky", [100, 80, 60, 40, 1], floor=4, current=1)
    a = allocate([big, spiky], budget_gpus=11, state=steady(big, spiky))
    assert granted(a) == {"big": 7, "spiky": 4}
    assert a.grants["big"].lost_to == ("spiky",)
    # never below its own floor, however many floors want GPUs
    crowd = [ask(f"s{i}", [100, 80, 60, 40, 1], floor=4, current=0) for i in range(5)]
    b = allocate([big, *crowd], budget_gpus=11, state=steady(big, *crowd))
    assert b.grants["big"].granted == 6


def test_a_one_tick_spike_moves_no_held_replica() -> None:
    big = ask("big", [50_000, *(50_000 - 5_000 * k for k in range(1, 11))], floor=6, current=10)
    calm = ask("spiky", [100, 1], floor=1, current=1)
    spike = ask("spiky", [100, 80, 60, 40, 1], floor=4, current=1)
    first = allocate([big, calm], budget_gpus=11, state=steady(big, calm))
    # the spike's first tick: only free GPUs serve it, and its grant says why it got no more
    a = allocate([big, spike], budget_gpus=11, state=first.state)
    assert granted(a) == {"big": 10, "spiky": 1}
    assert a.grants["spiky"].damped and "its reactive floor rose to 4 this tick" in a.grants[
        "spiky"
    ].describe(11, 14)
    # still there on the next tick: the guarantee moves big's headroom
    b = allocate([big, spike], budget_gpus=11, state=a.state)
    assert granted(b) == {"big": 7, "spiky": 4} and not b.grants["spiky"].damped
    # gone on the next tick: nothing moved
    c = allocate([big, calm], budget_gpus=11, state=a.state)
    assert granted(c) == {"big": 10, "spiky": 1}
    # a rise its forecast saw coming is no spike: it asked for 4 on the last tick, and its floor rising
    # into that ask moves big's headroom at once
    foreseen = replace(calm, desired=4)
    d = allocate([big, foreseen], budget_gpus=11, state=steady(big, foreseen))
    e = allocate([big, spike], budget_gpus=11, state=d.state)
    assert granted(e) == {"big": 7, "spiky": 4} and not e.grants["spiky"].damped


def test_a_held_warm_replica_moves_to_an_increment_only_for_a_gain_worth_a_cold_start() -> None:
    # held: within its target, two warm replicas above its floor each keep 0.2% of its requests on time
    held = ask("held", [10_000, 2_000, 40, 20, 0], floor=2, current=4)
    # new: within its target too, its increments keep 0.3% (not HOLD_FACTOR times more) ...
    small = ask("new", [10_000, 2_000, 60, 30, 0], floor=2, current=2)
    a = allocate([held, small], budget_gpus=6, state=steady(held, small))
    assert granted(a) == {"held": 4, "new": 2}
    # ... or 1% (at its floor it is just within its target: no deficit to close)
    big = ask("new", [10_000, 2_000, 100, 0], floor=2, current=2)
    b = allocate([held, big], budget_gpus=6, state=steady(held, big))
    assert HOLD_FACTOR < 1.0 / 0.2 and granted(b) == {"held": 3, "new": 3}
    # closing a deficit earns no exemption: the move costs the same cold start (1.6% late at its floor,
    # its next replica closes 0.3 of its budget, 1.5 times the held one's 0.2)
    short = ask("new", [10_000, 2_000, 160, 130, 0], floor=2, current=2)
    c = allocate([held, short], budget_gpus=6, state=steady(held, short))
    assert granted(c) == {"held": 4, "new": 2}
    # but free GPUs go to deficit closers first: with one more GPU, new gets it
    assert granted(allocate([held, short], budget_gpus=7, state=steady(held, short))) == {"held": 4, "new": 3}


def test_the_floor_is_held_through_the_reactive_stabilisation_window() -> None:
    # other's observed floor falls from 6 to 2, but the reactive autoscaler would hold 6 for 300 s:
    # so does the guarantee, and a new floor elsewhere cannot take those replicas until the window ends
    high = ask(
        "other", [10_000, *(10_000 - 1_500 * k for k in range(1, 7))], floor=6, current=6, floor_hold_s=300
    )
    low = replace(high, floor=2)
    want = ask("want", [100, 80, 60, 40, 1], floor=4, current=0)
    s = allocate([high, want], budget_gpus=6, state=steady(high, want), now=0).state
    s = allocate([high, want], budget_gpus=6, state=s, now=30).state
    a = allocate([low, want], budget_gpus=6, state=s, now=60)
    assert a.grants["other"].floor == 6 and granted(a) == {"other": 6, "want": 0}
    late = allocate([low, want], budget_gpus=6, state=a.state, now=331)
    assert late.grants["other"].floor == 2 and granted(late) == {"other": 2, "want": 4}


_late_curves = st.lists(st.floats(0, 1_000), min_size=1, max_size=6).map(
    lambda xs: [sum(xs) + 1.0, *(sum(xs[i:]) for i in range(1, len(xs))), 0.0]
)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(_late_curves, st.integers(0, 6), st.integers(0, 6), st.sampled_from([1.0, 2.0])),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 30),
    st.booleans(),
)
def test_no_model_is_left_below_its_floor_while_another_holds_headroom(
    asks: list[tuple[list[float], int, int, float]], budget: int, persisted: bool
) -> None:
    requests = [
        ask(f"m{i}", late, floor=min(floor, len(late) - 1), current=min(cur, len(late) - 1), priority=prio)
        for i, (late, floor, cur, prio) in enumerate(asks)
    ]
    a = allocate(requests, budget_gpus=budget, state=steady(*requests) if persisted else None)
    holds = sum(min(r.current, r.desired) for r in requests)
    assert a.used_gpus <= max(budget, 0) + 1e-9 or a.clipped == []
    if holds <= budget:  # nothing held is taken back for the budget
        for r in requests:
            g = a.grants[r.model]
            # a held replica is given up only above the floor, and only by a model that gains none
            assert g.granted >= min(r.current, r.desired, r.floor)
    below = [r.model for r in requests if a.grants[r.model].granted < r.floor]
    headroom = [r.model for r in requests if a.grants[r.model].granted > r.floor]
    if persisted and below and sum(r.floor for r in requests) <= budget:
        assert not headroom, (below, headroom)  # the guarantee: floors before anyone's headroom


def test_a_clipped_decision_carries_a_budget_limited_step_that_explains_the_clip() -> None:
    from planner import PlannerSpec, PlannerState, Reason, Snapshot, plan
    from planner.fleet import within_grant

    spec = PlannerSpec(capacity_rps_per_replica=5.0, t_load_s=300, tick_s=30, max_replicas=100)
    snap = Snapshot(current_replicas=2, ready_replicas=2, forecast=None, observed_rps=40.0, observed_at_s=0.0)
    decision, _ = plan(snap, spec, PlannerState(), 0.0)
    asked = decision.desired_replicas
    assert asked > 3
    alloc = allocate(
        [ask("llm", [1_000.0 - 5 * k for k in range(asked + 1)], floor=1, current=2)], budget_gpus=3
    )
    clipped = within_grant(decision, "llm", alloc)
    assert clipped.desired_replicas == 3 and clipped.reason is Reason.BUDGET_LIMITED
    step = clipped.steps[-1]
    assert (step.stage, step.before, step.after) == ("fleet_budget", asked, 3)
    assert f"asked {asked} replicas, granted 3" in clipped.explanation()
    assert within_grant(decision, "other", alloc) is decision  # no grant: the plan stands


def test_marginal_values_are_the_late_requests_one_more_replica_prevents() -> None:
    rate, cap, wait, step = 40.0, 5.0, 2.0, 60.0
    vals = marginal_values(
        [(1.0, [rate] * 10)], step_s=step, capacity_rps=cap, slo_wait_s=wait, start=8, count=4
    )

    def late(n: int) -> float:
        return rate * step * 10 * wait_probability(n, rate / cap, cap, wait)

    assert vals == pytest.approx(tuple(late(8 + k) - late(9 + k) for k in range(4)))
    assert list(vals) == sorted(vals, reverse=True) and vals[0] > 0
    # sampled steps stand for the whole window: 60 equal steps are worth 6 times 10
    long = marginal_values(
        [(1.0, [rate] * 60)], step_s=step, capacity_rps=cap, slo_wait_s=wait, start=8, count=4
    )
    assert long == pytest.approx(tuple(6 * v for v in vals))


def test_quantile_paths_stand_for_the_mass_between_their_neighbours() -> None:
    assert quantile_weights([0.5, 0.9]) == pytest.approx([0.7, 0.3])
    assert sum(quantile_weights([0.1, 0.5, 0.9, 0.99])) == pytest.approx(1.0)


def test_replicas_below_the_load_are_priced_as_the_block_they_complete() -> None:
    """40 req/s at 5 per replica: the first 8 replicas leave the queue unstable (every request late in
    M/M/c) and prevent nothing one by one; the hull spreads what the block prevents over its replicas, so
    the values are non-increasing and the first replica is worth something."""
    kw = {"step_s": 60.0, "capacity_rps": 5.0, "slo_wait_s": 2.0}
    vals = marginal_values([(1.0, [40.0] * 10)], start=0, count=12, **kw)  # type: ignore[arg-type]
    assert vals[0] > 0 and list(vals) == sorted(vals, reverse=True)
    total = 40.0 * 60 * 10  # every request is late with no replica
    late_at_12 = total - sum(vals)
    assert late_at_12 == pytest.approx(total * wait_probability(12, 8.0, 5.0, 2.0), rel=1e-6)


def _ask(
    name: str, *, cap: float, observed: float, paths: dict[float, float], desired: int, current: int
) -> tuple[FleetRequest, PlannerSpec]:
    """A model's fleet request from a flat forecast (requests/s per quantile) and an observed rate."""
    now, step = 1_000_000.0, 60
    spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=300.0, tick_s=30.0, slo_wait_s=2.0)
    fc = Forecast(
        now,
        step,
        np.full(60, paths[0.5] * step),
        {q: np.full(60, r * step) for q, r in paths.items()},
        "profile",
    )
    snap = Snapshot(current, ready_replicas=current, forecast=fc, observed_rps=observed, observed_at_s=now)
    decision = Decision(now, True, current, desired, desired, Reason.FORECAST_DEMAND, ())
    return fleet_request(name, decision, snap, spec, now), spec


def test_a_spike_the_forecast_does_not_carry_ahead_takes_the_floor_it_needs_and_no_more() -> None:
    # big: its forecast's upper tail needs 10 replicas over the window a replica granted now would serve;
    # spiky: observed at 40 req/s right now, but its forecast (re-anchored) says 10-20 req/s by the time a
    # replica asked for now is ready. Its floor is what the reactive autoscaler would hold: that much moves
    # (on the spike's second tick), its forecast headroom does not
    big, _ = _ask("big", cap=10.0, observed=60.0, paths={0.5: 70, 0.9: 85, 0.99: 98}, desired=10, current=10)
    spiky, _ = _ask(
        "spiky", cap=10.0, observed=40.0, paths={0.5: 10, 0.9: 15, 0.99: 20}, desired=7, current=3
    )
    assert 3 < spiky.floor < spiky.desired and big.floor < 10
    assert big.expected_requests == pytest.approx(
        expected_requests(
            [(w, [r] * 5) for w, r in zip(quantile_weights([0.5, 0.9, 0.99]), (70, 85, 98), strict=True)],
            step_s=60,
        )
    )
    first = allocate([big, spiky], budget_gpus=13)
    assert granted(first) == {"big": 10, "spiky": 3}  # a first tick moves nothing
    a = allocate([big, spiky], budget_gpus=13, state=first.state)
    assert a.grants["spiky"].granted == spiky.floor and a.grants["big"].granted == 13 - spiky.floor
    assert a.grants["big"].granted >= big.floor
