"""The embedded demo, end to end with a fake clock: a simulated day of the built-in fleet records decisions
that pre-warm ahead of each model's daily peak, and the two models of the long tail sit at zero until one
replica is pre-warmed T_load ahead of their first request."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from planner import Reason
from service.runtime import Controller
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock

DAY = 86_400


@dataclass
class DemoDay:
    ctl: Controller
    start: float
    desired: dict[str, dict[float, int]]
    ready: dict[str, dict[float, int]]


@pytest.fixture(scope="module")
def demo_day(tmp_path_factory: pytest.TempPathFactory) -> DemoDay:
    """Every model's asked and ready replicas at every tick of the demo's first day, from midnight."""
    start = demo_start_s() - 6 * 3600  # midnight: the whole day, morning rise included
    clock = Clock(start)
    ctl = build_demo(clock, f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}")
    jobs = Jobs(ctl, ControllerView(ctl, clock), clock)
    day = DemoDay(ctl, start, {n: {} for n in ctl.models}, {n: {} for n in ctl.models})
    tick = next(iter(ctl.models.values())).spec.tick_s
    while clock.t < start + DAY:
        jobs.tick_all()
        for name, rt in ctl.models.items():
            state = ctl.actuator.inner.current(rt.target)
            day.desired[name][clock.t], day.ready[name][clock.t] = state.desired, state.ready
        clock.t += tick
    return day


def test_a_simulated_day_of_the_demo_pre_warms_before_the_daily_peak(demo_day: DemoDay) -> None:
    ctl, start = demo_day.ctl, demo_day.start
    name = "chat-large"
    rt = ctl.models[name]
    desired, ready = demo_day.desired[name], demo_day.ready[name]
    day = rt.history(start + DAY).tail(DAY)
    cap = rt.spec.capacity_rps_per_replica
    rates = day.values / day.step_s
    peak_i = int(np.argmax(rates))
    t_peak = day.start_s + peak_i * day.step_s
    tick = rt.spec.tick_s
    at_peak = math.floor((t_peak - start) / tick) * tick + start
    assert ready[at_peak] * cap >= rates[peak_i] * 0.9  # warm capacity was there for the peak
    # ... because it was asked for a full T_load earlier, beyond what the rate then needed
    early = at_peak - rt.spec.t_load_s
    rate_then = rates[day.index_at(early) - 1]
    assert desired[early] > math.ceil(rate_then / (cap * 0.9))
    # every tick of every model is on record, with its explanation and what the fleet did
    decisions = ctl.store.decisions(name, limit=5000)
    assert len(decisions) == DAY / tick
    assert all(d.record["explanation"] and d.actuation for d in decisions)
    assert rt.lead_time is not None and rt.lead_time.estimate().source == "learned"


@pytest.mark.parametrize("name", ["nightly-batch", "docs-assistant"])
def test_a_model_of_the_long_tail_sits_at_zero_and_is_warm_before_its_first_request(
    demo_day: DemoDay, name: str
) -> None:
    ctl, start = demo_day.ctl, demo_day.start
    rt = ctl.models[name]
    assert rt.spec.min_replicas == 0
    desired, ready = demo_day.desired[name], demo_day.ready[name]
    day = rt.history(start + DAY).tail(DAY)
    first = day.start_s + int(np.flatnonzero(day.values > 0)[0]) * day.step_s
    ticks = sorted(desired)
    before = [t for t in ticks if t < first]
    assert sum(desired[t] == 0 for t in ticks) > 0.5 * len(ticks), "at zero most of the day"
    assert desired[ticks[0]] == 0, "at zero from the start of the day"
    # one replica (or more) was asked for at least T_load before the first request, and was warm for it
    asked = next(t for t in before if desired[t] > 0)
    assert asked <= first - rt.spec.t_load_s
    assert all(desired[t] > 0 for t in before if t >= asked), "the pre-warm was held until the request"
    assert ready[max(t for t in ticks if t <= first)] >= 1
    assert desired[ticks[-1]] == 0, "back at zero after the day's last session"
    # the decisions say why: the chance of a request against the late budget
    records = [d.record for d in ctl.store.decisions(name, limit=5000)]
    to_zero = [r for r in records if r["reason"] == Reason.SCALE_TO_ZERO.value]
    assert to_zero and "chance of any request" in to_zero[0]["explanation"]
    assert any("pre-warming one replica" in r["explanation"] for r in records)
