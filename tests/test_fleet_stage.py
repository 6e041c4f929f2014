"""The fleet stage (planner/fleet.py): floors first, then increments by marginal value per GPU and priority,
held warm replicas released only for a gain worth a cold start, and every clipped model told why."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.types import Forecast
from planner import Decision, PlannerSpec, Reason, Snapshot
from planner.fleet import (
    HOLD_FACTOR,
    FleetRequest,
    allocate,
    fleet_request,
    marginal_values,
    quantile_weights,
)
from planner.queueing import wait_probability


def req(model: str, desired: int, floor: int, values: tuple[float, ...], **kw: float) -> FleetRequest:
    return FleetRequest(model, desired, floor, int(kw.pop("current", 0)), values=values, **kw)  # type: ignore[arg-type]


def test_under_the_budget_every_model_gets_what_it_asked() -> None:
    a = allocate([req("a", 5, 2, (9, 8, 7)), req("b", 3, 3, ())], budget_gpus=10)
    assert {m: g.granted for m, g in a.grants.items()} == {"a": 5, "b": 3}
    assert a.clipped == [] and a.used_gpus == 8


def test_floors_first_then_the_increments_worth_most_per_gpu_and_priority() -> None:
    requests = [
        req("chat", 6, 2, (50, 40, 30, 20)),  # 4 increments above its floor of 2
        req("vision", 5, 1, (45, 35, 5, 1), gpus_per_replica=1),
        req("embed", 4, 1, (100, 90, 80), gpus_per_replica=2, priority=0.5),  # 25, 22.5, 20 per GPU x prio
    ]
    a = allocate(requests, budget_gpus=10)
    g = {m: x.granted for m, x in a.grants.items()}
    # floors: 2 + 1 + 2 GPUs = 5; then 5 GPUs for 50, 45, 40, 35, 30 (chat, vision, chat, vision, chat)
    assert g == {"chat": 5, "vision": 3, "embed": 1}
    assert a.used_gpus == pytest.approx(10)
    assert a.clipped == ["chat", "embed", "vision"]
    emb = a.grants["embed"]
    assert emb.lost_value == 100 and set(emb.lost_to) <= {"chat", "vision"} and emb.lost_to
    text = emb.describe(a.budget_gpus, a.asked_gpus)
    assert "fleet budget 10 GPUs" in text and "asked 4 replicas, granted 1" in text
    assert "would have prevented 100.0 expected late requests" in text


def test_when_even_the_floors_exceed_the_budget_they_go_by_priority() -> None:
    requests = [
        req("low", 4, 4, (), priority=1),
        req("high", 4, 4, (), priority=3),
        req("mid", 4, 4, (), priority=2),
    ]
    a = allocate(requests, budget_gpus=6)
    assert {m: g.granted for m, g in a.grants.items()} == {"high": 4, "mid": 2, "low": 0}
    assert "even the reactive floors exceed the budget" in a.grants["low"].describe(6, 12)


def test_a_held_warm_replica_is_released_only_for_a_gain_worth_a_cold_start() -> None:
    held = req("held", 3, 1, (10, 10), current=3)  # two warm replicas above its floor, worth 10 each
    small = req("new", 3, 1, (15, 15))  # more valuable, but not HOLD_FACTOR times more
    a = allocate([held, small], budget_gpus=4)
    assert a.grants["held"].granted == 3 and a.grants["new"].granted == 1
    big = req("new", 3, 1, (10 * HOLD_FACTOR + 1, 10 * HOLD_FACTOR + 1))
    b = allocate([held, big], budget_gpus=4)
    assert b.grants["held"].granted == 1 and b.grants["new"].granted == 3


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


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.lists(st.floats(0, 100), max_size=5), st.integers(0, 6)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 30),
)
def test_one_gpu_replicas_get_the_floors_then_the_most_valuable_increments(
    asks: list[tuple[int, list[float], int]], budget: int
) -> None:
    requests = [
        FleetRequest(f"m{i}", floor + len(vals), floor, current=0, values=tuple(sorted(vals, reverse=True)))
        for i, (floor, vals, _) in enumerate(asks)
    ]
    a = allocate(requests, budget_gpus=budget)
    assert a.used_gpus <= budget + 1e-9 or a.clipped == []
    floors = sum(r.floor for r in requests)
    if a.clipped and floors <= budget:
        assert all(a.grants[r.model].granted >= r.floor for r in requests)
        left = budget - floors
        best = sorted((v for r in requests for v in r.values), reverse=True)[:left]
        got = sum(sum(r.values[: a.grants[r.model].granted - r.floor]) for r in requests)
        assert got == pytest.approx(sum(best))


def test_a_clipped_decision_carries_a_budget_limited_step_that_explains_the_clip() -> None:
    from planner import PlannerSpec, PlannerState, Reason, Snapshot, plan
    from planner.fleet import within_grant

    spec = PlannerSpec(capacity_rps_per_replica=5.0, t_load_s=300, tick_s=30, max_replicas=100)
    snap = Snapshot(current_replicas=2, ready_replicas=2, forecast=None, observed_rps=40.0, observed_at_s=0.0)
    decision, _ = plan(snap, spec, PlannerState(), 0.0)
    asked = decision.desired_replicas
    assert asked > 3
    alloc = allocate([FleetRequest("llm", asked, 1, 2, values=(5.0,) * (asked - 1))], budget_gpus=3)
    clipped = within_grant(decision, "llm", alloc)
    assert clipped.desired_replicas == 3 and clipped.reason is Reason.BUDGET_LIMITED
    step = clipped.steps[-1]
    assert (step.stage, step.before, step.after) == ("fleet_budget", asked, 3)
    assert f"asked {asked} replicas, granted 3" in clipped.explanation()
    assert within_grant(decision, "other", alloc) is decision  # no grant: the plan stands


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


def test_a_spike_the_forecast_does_not_carry_ahead_cannot_take_a_big_models_headroom() -> None:
    # big: its forecast's upper tail needs 10 replicas over the window a replica granted now would serve;
    # spiky: observed at 90 req/s right now, but its forecast (re-anchored) says 10-20 req/s by the time a
    # replica asked for now is ready
    big, _ = _ask("big", cap=10.0, observed=60.0, paths={0.5: 70, 0.9: 85, 0.99: 98}, desired=10, current=10)
    spiky, spec = _ask(
        "spiky", cap=10.0, observed=90.0, paths={0.5: 10, 0.9: 15, 0.99: 20}, desired=12, current=3
    )
    assert spiky.floor > 3  # the observed spike puts its floor above what it holds
    a = allocate([big, spiky], budget_gpus=13)
    assert a.grants["big"].granted == 10 and a.grants["spiky"].granted == 3
    # valued at the observed rate alone, the spike's floor would have been worth more than twice the big
    # model's last held replica and taken it
    at_observed = marginal_values(
        [(1.0, [90.0] * 6)],
        step_s=(spec.lookahead_s + spec.break_even_s - spec.t_load_s) / 6,
        capacity_rps=20.0,
        slo_wait_s=2.0,
        start=0,
        count=spiky.floor,
    )
    assert at_observed[3] > HOLD_FACTOR * big.values[-1]


def test_floors_that_exceed_the_budget_are_shared_not_won_by_the_busiest_model() -> None:
    # at one priority, a busy model's floor (worth far more late requests per replica) does not starve a
    # quiet model's: each next floor replica goes to the model with the least share of its floor met
    busy = req("busy", 8, 8, (), floor_values=(900.0,) * 8)
    quiet = req("quiet", 4, 4, (), floor_values=(3.0,) * 4)
    a = allocate([busy, quiet], budget_gpus=6)
    assert {m: g.granted for m, g in a.grants.items()} == {"busy": 4, "quiet": 2}
    # a higher priority still goes first
    a = allocate([busy, replace(quiet, priority=2.0)], budget_gpus=6)
    assert {m: g.granted for m, g in a.grants.items()} == {"busy": 2, "quiet": 4}
