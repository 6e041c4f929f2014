"""The live loop's core on the demo fleet, with time passed by value: decisions are recorded with their
actuation, a restart resumes planner state, and a simulated day pre-warms ahead of the daily peak."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actuator.base import ActuationResult, ColdStart, Outcome, ReplicaState, Target
from actuator.lead_time import LeadTimeEstimator
from actuator.safety import GuardedActuator, Mode, Rails
from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import TrafficSeries
from planner import PlannerSpec
from planner.explain import Decision
from planner.queueing import wait_probability
from service.runtime import Controller, ModelRuntime, SimulatedFleet, forecast_doc
from service.store import DecisionStore
from service.view import ControllerView
from tests.fakes import Clock

STEP = 300
T_LOAD = 900.0  # 15 minutes, so pre-warming is visibly ahead of the observed rate
TICK = 300.0


def world(
    tmp_path: Path, days_before: int = 7
) -> tuple[Controller, Clock, TrafficSeries, SimulatedFleet, float]:
    series = generate(DEMO_FLEET[0], days=days_before + 2, step_s=STEP, seed=4)
    start = series.start_s + days_before * 86_400
    clock = Clock(start)
    cap = float(np.quantile(series.values / STEP, 0.999)) / 15
    fleet = SimulatedFleet(clock, T_LOAD)
    target = Target("Deployment", "demo", series.name)
    spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=T_LOAD, tick_s=TICK, max_replicas=100)
    rt = ModelRuntime(
        series.name,
        target,
        spec,
        lambda now: series.before(now),
        forecaster="profile",
        lead_time=LeadTimeEstimator(T_LOAD, min_samples=3),
    )
    act = GuardedActuator(fleet, rails={target: Rails(mode=Mode.ACTIVE)})
    ctl = Controller([rt], act, DecisionStore(f"sqlite:///{tmp_path / 'prewarm.db'}"))
    return ctl, clock, series, fleet, cap


def test_each_tick_records_a_decision_with_its_actuation(tmp_path: Path) -> None:
    ctl, clock, series, _, _ = world(tmp_path)
    ctl.refit_model(series.name, clock.t)
    first = ctl.tick_model(series.name, clock.t)
    assert first is not None
    stored = ctl.store.decision(first)
    assert stored is not None and stored.record["valid"] and stored.actuation is not None
    assert stored.actuation["outcome"] in ("applied", "unchanged")
    assert stored.record["inputs"]["t_load_source"].startswith("configured")
    assert ctl.store.latest_forecast(series.name) is not None


def test_without_a_forecast_the_tick_holds_and_says_why(tmp_path: Path) -> None:
    ctl, clock, series, _, _ = world(tmp_path)
    decision_id = ctl.tick_model(series.name, clock.t)
    assert decision_id is not None
    record = ctl.store.decision(decision_id).record  # type: ignore[union-attr]
    assert "ForecastMissing" in record["reasons"]


def _tick_sparse(tmp_path: Path, values: np.ndarray, capacity_rps: float) -> dict[str, Any]:
    """One tick of an active model on a 1-minute series; the recorded decision."""
    series = TrafficSeries("sparse", 1_700_000_000.0, 60, values)
    now = series.end_s
    target = Target("Deployment", "demo", "sparse")
    spec = PlannerSpec(capacity_rps_per_replica=capacity_rps, t_load_s=300.0, tick_s=30.0)
    rt = ModelRuntime("sparse", target, spec, lambda t: series.before(t), forecaster="profile")
    fleet = SimulatedFleet(Clock(now), 300.0)
    act = GuardedActuator(fleet, rails={target: Rails(mode=Mode.ACTIVE)})
    ctl = Controller([rt], act, DecisionStore(f"sqlite:///{tmp_path / 'prewarm.db'}"))
    decision_id = ctl.tick_model("sparse", now)
    return ctl.store.decision(decision_id).record  # type: ignore[arg-type,union-attr]


def test_the_reactive_floor_reads_the_rate_over_a_service_time_not_the_newest_step(tmp_path: Path) -> None:
    # 10 minutes per request, 1-minute steps: the replicas busy now are the arrivals of the last 10 steps
    values = np.zeros(120)
    values[-10:] = [1, 0, 0, 2, 0, 0, 0, 1, 0, 1]
    record = _tick_sparse(tmp_path, values, 1 / 600)
    assert record["inputs"]["observed_rps"] == pytest.approx(5 / 600)
    # 5 in service at 80%: 7 replicas, where the newest minute's 1 request extrapolated would ask for 13
    assert record["desired_replicas"] == 7


def test_a_service_time_between_steps_is_covered_by_whole_steps_not_rounded_down(tmp_path: Path) -> None:
    # 150 s per request over 1-minute steps: the window is the last 3 steps (180 s), not 2 (120 s, shorter
    # than a service time, which would miss the request still in service)
    values = np.zeros(120)
    values[-3:] = [3, 0, 0]
    record = _tick_sparse(tmp_path, values, 1 / 150)
    assert record["inputs"]["observed_rps"] == pytest.approx(3 / 180)


def test_a_restart_resumes_the_planner_state(tmp_path: Path) -> None:
    ctl, clock, series, _, _ = world(tmp_path)
    ctl.refit_model(series.name, clock.t)
    for _ in range(3):
        ctl.tick_model(series.name, clock.t)
        clock.t += TICK
    before = ctl.models[series.name].state
    again, *_ = world(tmp_path)
    assert again.models[series.name].state == before
    assert before.recommendations


def test_a_simulated_day_pre_warms_ahead_of_the_daily_peak(tmp_path: Path) -> None:
    ctl, clock, series, fleet, cap = world(tmp_path)
    name = series.name
    day0 = clock.t
    ready_at_peak: dict[float, int] = {}
    desired: dict[float, int] = {}
    while clock.t < day0 + 86_400:
        if (clock.t - day0) % 3600 == 0:
            ctl.refit_model(name, clock.t)
        ctl.tick_model(name, clock.t)
        desired[clock.t] = fleet.current(ctl.models[name].target).desired
        ready_at_peak[clock.t] = fleet.current(ctl.models[name].target).ready
        clock.t += TICK
    day = series.slice(series.index_at(day0), series.index_at(day0 + 86_400))
    peak_i = int(np.argmax(day.values))
    t_peak = day.start_s + peak_i * STEP
    need_at_peak = math.ceil(day.values[peak_i] / STEP / cap)
    # warm capacity was there when the peak came ...
    assert ready_at_peak[t_peak] >= need_at_peak
    # ... because it was asked for T_load earlier, when the observed rate alone needed less
    early = t_peak - T_LOAD
    observed_then = series.values[series.index_at(early) - 1] / STEP
    assert desired[early] > math.ceil(observed_then / (cap * ctl.models[name].spec.floor_utilization))
    assert len(ctl.store.decisions(name, limit=1000)) == 288
    lead = ctl.models[name].lead_time.estimate()  # type: ignore[union-attr]
    assert lead.source == "learned" and lead.t_load_s == pytest.approx(T_LOAD)


def test_a_forecast_that_stops_covering_live_traffic_is_demoted_to_the_reactive_floor(tmp_path: Path) -> None:
    # eight quiet days, then traffic five times higher: last week's pattern badly under-forecasts it
    base = generate(DEMO_FLEET[0], days=9, step_s=STEP, seed=6)
    jump = base.values.copy()
    jump[8 * 288 :] *= 5
    series = TrafficSeries(base.name, base.start_s, STEP, jump)
    clock = Clock(series.start_s + 8 * 86_400)
    cap = float(np.quantile(jump / STEP, 0.999)) / 15
    target = Target("Deployment", "demo", series.name)
    spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=T_LOAD, tick_s=TICK, max_replicas=100)
    rt = ModelRuntime(
        series.name, target, spec, lambda now: series.before(now), forecaster="seasonal_naive_daily"
    )
    ctl = Controller(
        [rt],
        GuardedActuator(SimulatedFleet(clock, T_LOAD), rails={target: Rails(mode=Mode.ACTIVE)}),
        DecisionStore(f"sqlite:///{tmp_path / 'store.db'}"),
    )
    reasons = []
    for _ in range(16 * 12):  # 16 hours, refit hourly
        if (clock.t - series.start_s) % 3600 == 0:
            ctl.refit_model(series.name, clock.t)
        decision_id = ctl.tick_model(series.name, clock.t)
        reasons.append(ctl.store.decision(decision_id).record["reason"])  # type: ignore[union-attr]
        clock.t += TICK
    assert not rt.healthy and "live coverage of the p90 forecast is" in rt.health_note
    assert reasons[0] != "ForecastUnhealthy" and reasons[-1] == "ForecastUnhealthy"


def test_a_telemetry_dropout_holds_the_fleet_says_why_and_is_not_learned(tmp_path: Path) -> None:
    base = generate(DEMO_FLEET[0], days=9, step_s=STEP, seed=4)
    day8 = 8 * 288
    busy = day8 + 12 * 12  # noon of day 8
    values = base.values.copy()
    values[busy : busy + 24] = 0.0  # the collector reads 0 for two hours; the traffic did not stop
    series = TrafficSeries(base.name, base.start_s, STEP, values)
    clock = Clock(series.start_s + busy * STEP)
    cap = float(np.quantile(values / STEP, 0.999)) / 15
    target = Target("Deployment", "demo", series.name)
    spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=T_LOAD, tick_s=TICK, max_replicas=100)
    rt = ModelRuntime(series.name, target, spec, lambda now: series.before(now), forecaster="profile")
    fleet = SimulatedFleet(clock, T_LOAD)
    ctl = Controller(
        [rt],
        GuardedActuator(fleet, rails={target: Rails(mode=Mode.ACTIVE)}),
        DecisionStore(f"sqlite:///{tmp_path / 'store.db'}"),
    )
    ctl.refit_model(series.name, clock.t)
    first = ctl.tick_model(series.name, clock.t)  # the first zero step has not arrived yet
    before = fleet.current(target).desired
    reasons = [ctl.store.decision(first).record["reason"]]  # type: ignore[union-attr]
    for _ in range(24):  # through the two hours of zeros, refitting hourly as the service does
        clock.t += TICK
        if (clock.t - series.start_s) % 3600 == 0:
            ctl.refit_model(series.name, clock.t)
        decision_id = ctl.tick_model(series.name, clock.t)
        reasons.append(ctl.store.decision(decision_id).record["reason"])  # type: ignore[union-attr]
        assert fleet.current(target).desired >= before  # never scaled down on the zeros
    assert reasons[0] != "DataDropout" and set(reasons[1:]) == {"DataDropout"}
    assert "telemetry dropout" in rt.dropout_note
    # the process stays ready (it ticks, holds and explains); the model is listed as degraded and says why
    ok, doc = ControllerView(ctl, clock).readiness()
    assert ok and doc["degraded"] == [series.name]
    assert any("telemetry dropout" in p for p in doc["models"][series.name]["problems"])
    # the refit saw the zeros as a gap: its forecast still expects the day's traffic, not silence
    assert rt.forecast is not None and float(rt.forecast.mean[0]) > 0.5 * float(values[busy - 1])
    assert rt.dropouts.spans and rt.dropouts.spans[0][0] == series.start_s + busy * STEP


def test_forecasts_refresh_every_five_minutes_publish_a_day_ahead_every_fifteen_at_their_phase_stored_hourly(
    tmp_path: Path,
) -> None:
    ctl, clock, series, _, _ = world(tmp_path)
    rt = ctl.models[series.name]
    spec = rt.spec
    origins, published, publishing = [], [], []
    for i in range(24):  # two hours of 5-minute refreshes
        ctl.refit_model(series.name, clock.t)
        fc, day_ahead = rt.forecast, rt.published
        assert fc is not None and day_ahead is not None
        doc = forecast_doc(day_ahead)
        origins.append(fc.origin_s)
        # what the planner reads: the look-ahead and the break-even after it, for as long as it may serve;
        # a day ahead only where the refresh publishes
        planned = spec.max_forecast_age_s + spec.lookahead_s + spec.break_even_s
        reach = fc.origin_s + fc.horizon * fc.step_s - clock.t
        assert planned <= reach
        if reach >= 86_400:
            publishing.append(i)
        published.append(doc["origin_s"])
        if i == 0:  # the document rendered when read is the one stored when it was published
            assert ctl.store.latest_forecast(series.name) == doc
        assert doc["origin_s"] + len(doc["mean"]) * doc["step_s"] >= doc["origin_s"] + 86_400
        clock.t += 300
    assert len(set(origins)) == 24  # each refresh re-anchored on the step that had just arrived
    # the API's day ahead: at the first forecast, then every 15 minutes at the model's own phase (the first
    # of those within 15 minutes of the first)
    first, *rest = publishing
    assert first == 0 and rest[0] in (1, 2, 3) and rest == list(range(rest[0], 24, 3))
    assert published == [origins[max(k for k in publishing if k <= i)] for i in range(24)]
    with sqlite3.connect(tmp_path / "prewarm.db") as conn:
        stored = conn.execute("SELECT origin_s FROM forecasts ORDER BY origin_s").fetchall()
    # stored hourly: the first publish an hour (12 refreshes) after the last stored
    assert [o for (o,) in stored] == [origins[0], origins[min(k for k in publishing if k >= 12)]]


def _samples(view: ControllerView, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(lab.items())): v for n, _, lab, v in view.metrics() if n == name}


@dataclass
class FailingWrites:
    """The actuator port over a fleet whose writes fail with `failure` while it is set (reads still work)."""

    fleet: SimulatedFleet
    failure: ActuationResult | None

    def current(self, target: Target) -> ReplicaState:
        return self.fleet.current(target)

    def cold_starts(self, target: Target) -> list[ColdStart]:
        return self.fleet.cold_starts(target)

    def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
        return self.failure or self.fleet.apply(target, decision, decision_id)


def _failing_ticks(
    tmp_path: Path, failure: ActuationResult, ticks: int
) -> tuple[Controller, Clock, ControllerView, FailingWrites, str]:
    ctl, clock, series, fleet, _ = world(tmp_path)
    writes = FailingWrites(fleet, failure)
    ctl.actuator.inner = writes
    view = ControllerView(ctl, clock)
    ctl.refit_model(series.name, clock.t)
    for _ in range(ticks):
        ctl.tick_model(series.name, clock.t)
        clock.t += TICK
    return ctl, clock, view, writes, series.name


def test_metrics_count_failing_writes_reset_on_success_and_say_who_leads(tmp_path: Path) -> None:
    transient = ActuationResult(Outcome.FAILED, "503 from the API server", retry_after_s=5.0)
    ctl, clock, view, writes, name = _failing_ticks(tmp_path, transient, 3)
    lab = (("model", name),)
    assert _samples(view, "prewarm_actuation_failing_ticks")[lab] == 3
    assert _samples(view, "prewarm_actuation_failures_total")[(("kind", "transient"), *lab)] == 3
    assert _samples(view, "prewarm_actuation_blocked")[lab] == 0
    assert _samples(view, "prewarm_leader")[()] == 1  # acting alone
    writes.failure = None
    ctl.tick_model(name, clock.t)
    assert _samples(view, "prewarm_actuation_failing_ticks")[lab] == 0  # the run ended; the total stays
    assert _samples(view, "prewarm_actuation_failures_total")[(("kind", "transient"), *lab)] == 3
    # demand against ready capacity and the late-request estimate come from the tick's own inputs
    ready, rps = (
        _samples(view, "prewarm_ready_replicas")[lab],
        _samples(view, "prewarm_observed_requests_per_second")[lab],
    )
    assert ready >= 1 and rps > 0
    spec = ctl.models[name].spec
    cap = spec.capacity_rps_per_replica
    late = wait_probability(int(ready), rps / cap, cap, spec.slo_wait_s) * rps  # M/M/c on the ready replicas
    assert _samples(view, "prewarm_slo_late_requests_per_second_estimate")[lab] == pytest.approx(late)
    ctl.actuator.is_leader = lambda: False
    clock.t += TICK
    ctl.tick_model(name, clock.t)
    assert _samples(view, "prewarm_leader")[()] == 0


def test_a_permanent_write_error_blocks_the_model_and_says_so_in_metrics(tmp_path: Path) -> None:
    forbidden = ActuationResult(Outcome.FAILED, "403: forbidden", permanent=True)
    _, _, view, _, name = _failing_ticks(tmp_path, forbidden, 2)
    lab = (("model", name),)
    assert _samples(view, "prewarm_actuation_blocked")[lab] == 1
    # the second tick was skipped by the rails (not retried), so one permanent failure was counted
    assert _samples(view, "prewarm_actuation_failures_total")[(("kind", "permanent"), *lab)] == 1


@dataclass
class ReadingFleet:
    """The simulated fleet with bulk reads (actuator/base.py, BulkReader): notes which calls came within
    a tick's reading() block, and of which targets."""

    fleet: SimulatedFleet
    blocks: list[list[Target]] = field(default_factory=list)
    inside: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    open: bool = False

    @contextmanager
    def reading(self, targets: Sequence[Target]) -> Iterator[None]:
        self.blocks.append(list(targets))
        self.open = True
        try:
            yield
        finally:
            self.open = False

    def _note(self, call: str) -> None:
        (self.inside if self.open else self.outside).append(call)

    def current(self, target: Target) -> ReplicaState:
        self._note("current")
        return self.fleet.current(target)

    def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
        self._note("apply")
        return self.fleet.apply(target, decision, decision_id)

    def cold_starts(self, target: Target) -> list[ColdStart]:
        self._note("cold_starts")
        return self.fleet.cold_starts(target)


def test_a_tick_reads_apply_and_learn_within_one_bulk_read_of_every_model(tmp_path: Path) -> None:
    ctl, clock, series, fleet, _ = world(tmp_path)
    reads = ReadingFleet(fleet)
    ctl.actuator.inner = reads
    ctl.refit_model(series.name, clock.t)
    ctl.tick_all(clock.t)
    assert reads.blocks == [[ctl.models[series.name].target]]
    assert reads.inside == ["current", "apply", "cold_starts"] and reads.outside == []
