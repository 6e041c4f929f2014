"""`prewarm serve`: one process running uvicorn (the API and dashboard) and APScheduler jobs (refit per
model, the control tick, the nightly backtest). Jobs coalesce and never overlap; a failing job is recorded
and shown in /readyz, never fatal. The composition root: the only place that reads the wall clock.

With no config it runs the embedded demo: the built-in synthetic fleet replayed in accelerated time (one
simulated hour per real minute by default) into a simulated fleet with cold starts, so the dashboard shows
forecasts, pre-warming ahead of the daily peak and explained decisions within a minute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from actuator.base import Target
from actuator.lead_time import LeadTimeEstimator
from actuator.safety import GuardedActuator, Mode, Rails
from api.app import create_app
from backtest.tuning import TuningGrid
from compute.base import Compute, Outcome
from forecaster.sources.synthetic import DEFAULT_START_S, DEMO_FLEET, SyntheticSource, TrafficShape
from forecaster.types import SECONDS_PER_DAY
from planner import PlannerSpec
from service.budget import BudgetSource
from service.nightly import SERIAL, run_night
from service.runtime import Controller, JobStatus, ModelRuntime, SimulatedFleet
from service.store import DecisionStore
from service.view import ControllerView

DEMO_HISTORY_DAYS = 14
DEMO_T_LOAD_S = 600.0
DEMO_SLO_TARGET = 0.99


@dataclass
class AcceleratedClock:
    """Simulated time: `start_s` plus the wall time since creation times `speed`."""

    start_s: float
    speed: float
    _wall0: float = 0.0

    def __post_init__(self) -> None:
        self._wall0 = time.monotonic()

    def __call__(self) -> float:
        return self.start_s + (time.monotonic() - self._wall0) * self.speed


def build_demo(
    clock: Callable[[], float],
    store_url: str,
    *,
    tick_s: float = 60.0,
    forecaster: str = "profile",
    slo_target: float | None = DEMO_SLO_TARGET,
    tune_window_s: float = 7 * SECONDS_PER_DAY,
    gpu_budget: float | BudgetSource | None = None,
    shapes: tuple[TrafficShape, ...] = DEMO_FLEET,
    days_after: float = 30.0,
    compute: Compute | None = None,
) -> Controller:
    """The demo fleet: four models with different shapes (or `shapes`, e.g. synthetic_fleet(1000) for scale
    runs), 14 days of history before the demo starts and `days_after` to replay, each with an SLO target
    that the nightly tuning meets; full fits run on `compute` (in this process by default)."""
    source = SyntheticSource(shapes, days=DEMO_HISTORY_DAYS + days_after, step_s=60, start_s=DEFAULT_START_S)
    fleet = SimulatedFleet(clock, DEMO_T_LOAD_S)
    runtimes: list[ModelRuntime] = []
    rails: dict[Target, Rails] = {}
    for shape in shapes:
        series = source.load(shape.name)
        cap = float(np.quantile(series.values[: DEMO_HISTORY_DAYS * 1440] / 60, 0.999)) / 15
        target = Target("Simulated", "demo", shape.name)
        spec = PlannerSpec(
            capacity_rps_per_replica=cap,
            t_load_s=DEMO_T_LOAD_S,
            tick_s=tick_s,
            max_replicas=200,
            slo_target=slo_target,
        )

        def history(now_s: float, s: Any = series) -> Any:
            return s.before(now_s)

        runtimes.append(
            ModelRuntime(
                shape.name,
                target,
                spec,
                history,
                forecaster=forecaster,
                lead_time=LeadTimeEstimator(DEMO_T_LOAD_S, min_samples=5),
                tune_window_s=tune_window_s,
            )
        )
        rails[target] = Rails(mode=Mode.ACTIVE)  # the demo acts on its simulated fleet
    return Controller(
        runtimes,
        GuardedActuator(fleet, rails=rails),
        DecisionStore(store_url),
        refit_every_s=300.0,
        gpu_budget=gpu_budget,
        compute=compute,
    )


def demo_start_s() -> float:
    return DEFAULT_START_S + DEMO_HISTORY_DAYS * SECONDS_PER_DAY + 6 * 3600  # 06:00, before the morning rise


class Jobs:
    """The scheduled work, timed and guarded: the control tick (refits when due) and the nightly jobs,
    which fan out per model on `compute` (in this process by default)."""

    def __init__(
        self,
        ctl: Controller,
        view: ControllerView,
        clock: Callable[[], float],
        *,
        nightly_hour_utc: int = 3,
        backtest_days: float = 14.0,
        grid: TuningGrid | None = None,
        compute: Compute = SERIAL,
    ) -> None:
        self.ctl, self.view, self.clock = ctl, view, clock
        self.last_refit: dict[str, float] = {}
        self.nightly_hour_utc, self.backtest_days, self.grid = nightly_hour_utc, backtest_days, grid
        self.compute = compute
        self._nightly_day: int | None = None

    def _record(self, job: str, outcomes: dict[str, Outcome], seconds: float) -> None:
        status = self.view.jobs.setdefault(job, JobStatus())
        failed = [o for o in outcomes.values() if not o.ok]
        status.failures += len(failed)
        if failed:
            status.last_error = "; ".join(f"{o.key}: {o.error}" for o in failed)
            status.last_error_s = self.clock()
        elif outcomes:
            status.last_ok_s, status.last_error = self.clock(), None
        status.last_duration_s = seconds

    def night(self, *, tune: bool = True) -> dict[str, dict[str, Outcome]]:
        """Every model's backtest and tuning run, fanned out; each job's status records its failures."""
        t = time.perf_counter()
        try:
            done = run_night(
                self.ctl,
                self.compute,
                self.clock(),
                backtest_days=self.backtest_days,
                grid=self.grid,
                tune=tune,
            )
        except Exception as exc:  # never fatal: shown in /readyz
            status = self.view.jobs.setdefault("nightly_backtest", JobStatus())
            status.failures += 1
            status.last_error, status.last_error_s = f"{type(exc).__name__}: {exc}", self.clock()
            return {}
        seconds = time.perf_counter() - t
        self._record("nightly_backtest", done["backtest"], seconds)
        if done["tuning"]:
            self._record("nightly_tuning", done["tuning"], seconds)
        return done

    def nightly_if_due(self) -> bool:
        """Run the nightly jobs once per day at nightly_hour_utc of the service's clock (a simulated clock
        in the demo runs them at its simulated night). Returns whether they ran."""
        day = math.floor((self.clock() - self.nightly_hour_utc * 3600) / SECONDS_PER_DAY)
        if self._nightly_day is None:
            self._nightly_day = day  # started after tonight's hour: the first run is the next night
            return False
        if day <= self._nightly_day:
            return False
        self._nightly_day = day
        self.night()
        return True

    def tick_all(self) -> None:
        """Refresh the models whose forecasts are due, then one control tick for every model (recorded in
        one transaction, applied, each actuation recorded: service/runtime.py)."""
        now = self.clock()
        n = len(self.ctl.models)
        for i, (name, r) in enumerate(self.ctl.models.items()):
            if name not in self.last_refit or now - self.last_refit[name] >= self.ctl.refit_every_s:
                t = time.perf_counter()
                self.ctl.refit_model(name, now)
                r.refit.last_duration_s = time.perf_counter() - t
                # after the first, each model's refreshes keep their own phase in the interval, so that a
                # thousand models refresh a few at a time on every tick rather than all on one
                first = name not in self.last_refit
                self.last_refit[name] = now - (i / n) * self.ctl.refit_every_s if first else now
        t = time.perf_counter()
        self.ctl.tick_all(now)
        each = (time.perf_counter() - t) / max(1, n)
        for r in self.ctl.models.values():
            r.tick.last_duration_s = each


def serve_config(
    path: Any, *, host: str | None = None, port: int | None = None, compute: dict[str, Any] | None = None
) -> None:
    """Run the configured fleet on the wall clock until interrupted; `compute` overrides the config's
    compute section (the CLI's --backend, --workers, --ray-address)."""
    import os

    import uvicorn
    from apscheduler.schedulers.background import BackgroundScheduler

    from service.compose import build_from_config, compute_from_config
    from service.config import load_config, with_compute

    cfg = load_config(path, os.environ)
    if compute:
        cfg = with_compute(cfg, compute)
    clock = time.time
    backend = compute_from_config(cfg)  # refits, nightly backtests and tuning run there, not in the tick
    ctl = build_from_config(cfg, clock, compute=backend)
    view = ControllerView(ctl, clock)
    jobs = Jobs(
        ctl,
        view,
        clock,
        nightly_hour_utc=cfg.schedules.backtest_hour_utc,
        backtest_days=cfg.schedules.backtest_days,
        compute=backend,
    )
    view.jobs.setdefault("nightly_backtest", JobStatus())
    purge = view.jobs.setdefault("retention", JobStatus())

    def purge_old() -> None:
        try:
            ctl.store.purge(clock() - cfg.store.retention_days * SECONDS_PER_DAY)
            purge.last_ok_s = clock()
        except Exception as exc:
            purge.failures += 1
            purge.last_error, purge.last_error_s = str(exc), clock()

    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(jobs.tick_all, "interval", seconds=cfg.schedules.tick_s, id="tick")
    scheduler.add_job(jobs.nightly_if_due, "interval", seconds=60, id="nightly")
    scheduler.add_job(
        purge_old, "cron", hour=(cfg.schedules.backtest_hour_utc + 1) % 24, minute=0, id="retention"
    )
    scheduler.start()
    try:
        uvicorn.run(
            create_app(view, api_token=cfg.api.resolved_token()),
            host=host or cfg.api.host,
            port=port or cfg.api.port,
            log_level="warning",
        )
    finally:
        scheduler.shutdown(wait=False)
        backend.close()


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    speed: float = 60.0,
    store_url: str = "sqlite:///prewarm-demo.db",
    api_token: str | None = None,
) -> None:
    """Run the embedded demo until interrupted."""
    import uvicorn
    from apscheduler.schedulers.background import BackgroundScheduler

    clock = AcceleratedClock(demo_start_s(), speed)
    ctl = build_demo(clock, store_url)
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock)
    tick_s = next(iter(ctl.models.values())).spec.tick_s
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    jobs.tick_all()  # the first forecasts and decisions before the API answers
    scheduler.add_job(jobs.tick_all, "interval", seconds=max(0.5, tick_s / speed), id="tick")
    # the nightly backtest and tuning at the demo clock's 03:00 (every 24 real minutes at speed 60)
    scheduler.add_job(jobs.nightly_if_due, "interval", seconds=max(1.0, 60.0 / speed), id="nightly")
    jobs.nightly_if_due()
    scheduler.start()
    view.jobs["scheduler"] = JobStatus(last_ok_s=clock())
    try:
        uvicorn.run(create_app(view, api_token=api_token), host=host, port=port, log_level="warning")
    finally:
        scheduler.shutdown(wait=False)
