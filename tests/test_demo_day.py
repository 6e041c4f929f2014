"""The embedded demo, end to end with a fake clock: a simulated day of the built-in fleet records decisions
that pre-warm ahead of each model's daily peak."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock


def test_a_simulated_day_of_the_demo_pre_warms_before_the_daily_peak(tmp_path: Path) -> None:
    start = demo_start_s() - 6 * 3600  # midnight: the whole day, morning rise included
    clock = Clock(start)
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 'demo.db'}")
    jobs = Jobs(ctl, ControllerView(ctl, clock), clock)
    name = "chat-large"
    rt = ctl.models[name]
    desired: dict[float, int] = {}
    ready: dict[float, int] = {}
    while clock.t < start + 86_400:
        jobs.tick_all()
        state = ctl.actuator.inner.current(rt.target)
        desired[clock.t], ready[clock.t] = state.desired, state.ready
        clock.t += rt.spec.tick_s
    day = rt.history(start + 86_400).tail(86_400)
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
    assert len(decisions) == 86_400 / tick
    assert all(d.record["explanation"] and d.actuation for d in decisions)
    assert rt.lead_time is not None and rt.lead_time.estimate().source == "learned"
