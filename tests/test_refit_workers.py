"""The control tick never waits on a full fit: the daily fit runs on the compute backend, the tick goes on
with the newest fit it has (re-anchored on new data), a finished fit is taken into use at the next
refresh, and /readyz warns when a model's fit is overdue."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actuator.base import Target
from actuator.safety import GuardedActuator, Mode, Rails
from compute.base import Outcome, Pending, Task, run_with_retries
from compute.local import LocalCompute
from forecaster.sources.synthetic import DEMO_FLEET, generate
from planner import PlannerSpec
from service.runtime import FULL_FIT_GRACE_S, Controller, ModelRuntime, SimulatedFleet
from service.store import DecisionStore
from service.view import ControllerView
from tests.fakes import Clock

DAY = 86_400
SERIES = generate(DEMO_FLEET[0], days=10, step_s=300, seed=4)
NAME = SERIES.name


@dataclass
class Held:
    """A submitted task that finishes only when the test releases it (a slow fit in a worker)."""

    task: Task
    released: bool = False

    def done(self) -> bool:
        return self.released

    def outcome(self) -> Outcome:
        assert self.released, "the controller must not wait on a running fit"
        return run_with_retries(self.task, 0)


@dataclass
class HeldCompute:
    backend: str = "held"
    workers: int = 1
    submitted: list[Held] = field(default_factory=list)

    def submit(self, task: Task) -> Pending:
        self.submitted.append(Held(task))
        return self.submitted[-1]

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        return [run_with_retries(t, 0) for t in tasks]

    def paused(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


def controller(tmp_path: Path, compute: object) -> tuple[Controller, Clock]:
    clock = Clock(SERIES.start_s + 7 * DAY + 6 * 3600)
    cap = float(np.quantile(SERIES.values / 300, 0.999)) / 15
    target = Target("Deployment", "demo", NAME)
    spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=900.0, tick_s=300.0, max_replicas=100)
    rt = ModelRuntime(NAME, target, spec, lambda now: SERIES.before(now), forecaster="profile")
    act = GuardedActuator(SimulatedFleet(clock, 900.0), rails={target: Rails(mode=Mode.ACTIVE)})
    store = DecisionStore(f"sqlite:///{tmp_path / 'prewarm.db'}")
    return Controller([rt], act, store, compute=compute), clock  # type: ignore[arg-type]


def test_the_tick_goes_on_while_the_first_fit_runs_and_takes_the_fit_once_it_is_done(tmp_path: Path) -> None:
    compute = HeldCompute()
    ctl, clock = controller(tmp_path, compute)
    r = ctl.models[NAME]
    ctl.refit_model(NAME, clock.t)
    assert len(compute.submitted) == 1 and r.forecast is None
    assert r.refit.pending == "the first full fit is still running"  # waiting is not failing
    assert (r.refit.failures, r.refit.last_error) == (0, None)
    decision = ctl.store.decision(ctl.tick_model(NAME, clock.t) or -1)
    assert decision is not None and "ForecastMissing" in decision.record["reasons"]  # holds, never down

    clock.t += 300
    ctl.refit_model(NAME, clock.t)
    assert len(compute.submitted) == 1  # one fit at a time
    compute.submitted[0].released = True
    clock.t += 300
    ctl.refit_model(NAME, clock.t)
    assert r.forecast is not None and r.forecast.model == "profile" and r.refit.last_error is None
    assert r.full_fit_s == clock.t - 600  # the fit submitted then, on the history it had then


def test_the_next_days_fit_runs_aside_while_the_old_one_re_anchors_and_is_overdue_past_the_grace(
    tmp_path: Path,
) -> None:
    compute = HeldCompute()
    ctl, clock = controller(tmp_path, compute)
    view = ControllerView(ctl, clock)
    r = ctl.models[NAME]
    ctl.refit_model(NAME, clock.t)
    compute.submitted[0].released = True
    clock.t = (clock.t // DAY + 1) * DAY + 60  # just past midnight: tomorrow's fit falls due
    ctl.refit_model(NAME, clock.t)
    assert len(compute.submitted) == 2 and not compute.submitted[1].released
    assert r.forecast is not None and r.forecast.origin_s == SERIES.before(clock.t).end_s  # re-anchored
    assert not any("refit overdue" in w for w in view.readiness()[1]["models"][NAME]["warnings"])

    clock.t += FULL_FIT_GRACE_S + 600
    ctl.refit_model(NAME, clock.t)
    ctl.tick_model(NAME, clock.t)
    _, ready = view.readiness()
    warnings = ready["models"][NAME]["warnings"]
    assert any("refit overdue: the daily full fit has been running for 1.2 h" in w for w in warnings)
    assert ready["models"][NAME]["ready"]  # the tick still runs on the re-anchored fit
    compute.submitted[1].released = True
    ctl.refit_model(NAME, clock.t)
    assert not any("refit overdue" in w for w in view.readiness()[1]["models"][NAME]["warnings"])


def test_a_failed_fit_keeps_the_previous_one_and_is_retried(tmp_path: Path) -> None:
    compute = HeldCompute()
    ctl, clock = controller(tmp_path, compute)
    r = ctl.models[NAME]
    ctl.refit_model(NAME, clock.t)
    compute.submitted[0].released = True
    ctl.refit_model(NAME, clock.t + 300)
    fitted = r.model
    clock.t = (clock.t // DAY + 1) * DAY + 60
    r.forecaster = "no-such-model"  # the next fit fails in the worker
    ctl.refit_model(NAME, clock.t)
    compute.submitted[1].released = True
    clock.t += 300
    ctl.refit_model(NAME, clock.t)
    assert r.model is fitted and "the full fit failed: ModelError: unknown model" in r.fit_error
    assert r.refit.last_error is None and len(compute.submitted) == 2  # re-anchored; a retry waits 5 s
    clock.t += 5
    ctl.refit_model(NAME, clock.t)
    assert len(compute.submitted) == 3  # the fit resubmitted after its backoff


def test_a_failed_first_fit_is_retried_within_seconds_and_backs_off(tmp_path: Path) -> None:
    compute = HeldCompute()
    ctl, clock = controller(tmp_path, compute)
    r = ctl.models[NAME]
    r.forecaster = "no-such-model"
    submitted_at = []
    for _ in range(40):  # 40 seconds, refreshed every second as the collector would
        before = len(compute.submitted)
        ctl.refit_model(NAME, clock.t)
        if len(compute.submitted) > before:
            submitted_at.append(clock.t - SERIES.start_s - 7 * DAY - 6 * 3600)
            compute.submitted[-1].released = True  # it fails at once in the worker
        clock.t += 1
    assert submitted_at == [0, 6, 17, 38]  # each failure seen 1 s later, retried 5, 10, 20 s after it
    assert r.forecast is None and "unknown model" in r.fit_error


def test_with_a_process_pool_the_fit_comes_back_from_a_worker(tmp_path: Path) -> None:
    pool = LocalCompute(workers=2)
    try:
        ctl, clock = controller(tmp_path, pool)
        r = ctl.models[NAME]
        ctl.refit_model(NAME, clock.t)
        assert r.fitting is not None
        r.fitting.outcome()  # wait for the worker here (the controller itself never does)
        clock.t += 300
        ctl.refit_model(NAME, clock.t)
        assert r.forecast is not None and r.fitting is None and r.full_fit_s == clock.t - 300
    finally:
        pool.close()
