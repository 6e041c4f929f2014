"""`prewarm serve`: one process running uvicorn (the API and dashboard) and APScheduler jobs (refit per
model, the control tick, the nightly backtest). Jobs coalesce and never overlap; a failing job is recorded
and shown in /readyz, never fatal. The composition root: the only place that reads the wall clock.

With no config it runs the embedded demo: the built-in synthetic fleet replayed in accelerated time (one
simulated hour per real minute by default) into a simulated fleet with cold starts, so the dashboard shows
forecasts, pre-warming ahead of the daily peak and explained decisions within a minute.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from actuator import base as actuation
from actuator.base import Target
from actuator.lead_time import LeadTimeEstimator
from actuator.safety import GuardedActuator, Mode, Rails
from api.app import create_app
from backtest.tuning import TuningGrid
from compute.base import Compute, Outcome
from forecaster.sources.synthetic import DEFAULT_START_S, DEMO_FLEET, SyntheticSource, TrafficShape
from forecaster.types import SECONDS_PER_DAY
from planner import PlannerSpec, untuned_late_budget
from service.budget import BudgetSource
from service.heap import Heap
from service.logs import configure as configure_logging
from service.nightly import SERIAL, run_night
from service.runtime import Controller, JobStatus, ModelRuntime, SimulatedFleet
from service.store import DecisionStore
from service.view import ControllerView

log = logging.getLogger("prewarm.service")

DEMO_HISTORY_DAYS = 14
RETRY_FIRST_S = 5.0  # a model without a forecast is refreshed again after 5 s, 10 s, 20 s, ... (collect job)
COLLECT_EVERY_S = 2.0  # finished fits are taken into use this soon
DEMO_T_LOAD_S = 600.0
DEMO_SLO_TARGET = 0.99
# replicas each demo model needs at its p99.9 rate: a busy model fifteen, a model of the long tail one (its
# floor is zero: it scales to zero between sessions, and its forecast is the sparse model's)
DEMO_PEAK_REPLICAS = 15
DEMO_SPARSE_PEAK_REPLICAS = 1


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
    """The demo fleet: four busy models with different shapes and two of the long tail (or `shapes`, e.g.
    synthetic_fleet(1000) for scale runs), 14 days of history before the demo starts and `days_after` to
    replay, each with an SLO target that the nightly tuning meets; full fits run on `compute` (in this
    process by default)."""
    source = SyntheticSource(shapes, days=DEMO_HISTORY_DAYS + days_after, step_s=60, start_s=DEFAULT_START_S)
    fleet = SimulatedFleet(clock, DEMO_T_LOAD_S)
    runtimes: list[ModelRuntime] = []
    rails: dict[Target, Rails] = {}
    for shape in shapes:
        series = source.load(shape.name)
        peak = DEMO_SPARSE_PEAK_REPLICAS if shape.sparse else DEMO_PEAK_REPLICAS
        floor = 0 if shape.sparse else 1
        cap = float(np.quantile(series.values[: DEMO_HISTORY_DAYS * 1440] / 60, 0.999)) / peak
        target = Target("Simulated", "demo", shape.name)
        spec = PlannerSpec(
            capacity_rps_per_replica=cap,
            t_load_s=DEMO_T_LOAD_S,
            tick_s=tick_s,
            min_replicas=floor,
            max_replicas=200,
            slo_target=slo_target,
            late_budget=untuned_late_budget(slo_target, floor),
        )

        def history(now_s: float, s: Any = series) -> Any:
            return s.before(now_s)

        runtimes.append(
            ModelRuntime(
                shape.name,
                target,
                spec,
                history,
                forecaster="sparse" if shape.sparse else forecaster,
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
        heap: Heap | None = None,
    ) -> None:
        self.ctl, self.view, self.clock = ctl, view, clock
        self.heap = heap  # the garbage collector kept out of the tick (service/heap.py); None: CPython's own
        self.last_refit: dict[str, float] = {}
        self.nightly_hour_utc, self.backtest_days, self.grid = nightly_hour_utc, backtest_days, grid
        self.compute = compute
        self._nightly_day: int | None = None
        self._lock = threading.Lock()  # the tick and the collector never run at once
        self._no_forecast: dict[str, int] = {}  # refreshes in a row that left the model without a forecast
        self._retry_at: dict[str, float] = {}

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

    def _refresh(self, name: str, now: float) -> None:
        r = self.ctl.models[name]
        t = time.perf_counter()
        self.ctl.refit_model(name, now)
        r.refit.last_duration_s = time.perf_counter() - t
        if r.forecast is None:  # no forecast yet: try again in seconds, not at the next interval
            failures = self._no_forecast.get(name, 0) + 1
            self._no_forecast[name] = failures
            self._retry_at[name] = now + min(self.ctl.refit_every_s, RETRY_FIRST_S * 2 ** (failures - 1))
        else:
            self._no_forecast.pop(name, None)
            self._retry_at.pop(name, None)

    def collect(self) -> list[str]:
        """Between ticks: take each finished full fit into use and refresh that model's forecast at once,
        retry the models that have no forecast yet when their backoff has passed, and refresh the forecasts
        that are due (every COLLECT_EVERY_S, a few models each time: the tick then plans on forecasts already
        refreshed, and spends its time on the decisions). Returns the refreshed models. Never runs beside a
        tick (it would change a model mid-plan): skipped while one runs."""
        if not self._lock.acquire(blocking=False):
            return []
        try:
            now = self.clock()
            # here, not in _collect: the tick collects too, and the garbage collections belong between
            # ticks (the last tick's leftovers first; service/heap.py)
            if self.heap is not None:
                self.heap.settle()
                if self.heap.full_pass_if_due(now):
                    log.info(
                        "full garbage collection between ticks",
                        extra={"seconds": round(self.heap.full_pass_s, 3)},
                    )
            done = self._collect(now)
            # the first refresh of a model stays with the tick (it also sets the model's phase)
            return done + self._refresh_due(now, set(done), first=False)
        finally:
            self._lock.release()

    def _collect(self, now: float) -> list[str]:
        done = []
        acting = set(self.ctl.acting_names())
        for name, r in self.ctl.models.items():
            if name not in self.last_refit or name not in acting:
                continue  # not refreshed even once yet (the next tick does it), or another replica's
            finished = self.ctl.fit_finished(name)
            waiting = r.fitting is not None and not finished
            if finished or (r.forecast is None and not waiting and now >= self._retry_at.get(name, 0.0)):
                self._refresh(name, now)
                done.append(name)
        return done

    def tick_all(self) -> None:
        """Refresh the models whose forecasts are due, then one control tick for every model (recorded in
        one transaction, applied, each actuation recorded: service/runtime.py)."""
        quiet = self.heap.quiet(self.clock()) if self.heap is not None else contextlib.nullcontext()
        with self._lock, quiet, self.compute.paused():
            self._tick_all()

    def _refresh_due(self, now: float, fresh: set[str], *, first: bool = True) -> list[str]:
        """Refresh each model this replica acts on whose refresh interval has passed (`fresh`: refreshed just
        now by the collector, due and done), and with `first` each never refreshed; returns the models
        refreshed."""
        n = len(self.ctl.models)
        acting = set(self.ctl.acting_names())
        done = []
        for i, name in enumerate(self.ctl.models):
            if name not in acting:  # another replica's shard: it refreshes it
                continue
            last = self.last_refit.get(name)
            if (last is None and first) or (last is not None and now - last >= self.ctl.refit_every_s):
                if name not in fresh:
                    self._refresh(name, now)
                    done.append(name)
                # each model's refreshes keep their own phase in the interval, so that a thousand models
                # refresh a few at a time rather than all at once: the first sets it, and each later one
                # keeps it (a refresh taken up late, behind a tick holding the lock, does not shift it)
                every = self.ctl.refit_every_s
                self.last_refit[name] = (
                    now - (i / n) * every if last is None else last + math.floor((now - last) / every) * every
                )
        return done

    def _tick_all(self) -> None:
        now = self.clock()
        n = len(self.ctl.models)
        # what the collector has not refreshed yet (all of it where nothing collects between ticks: tests
        # that drive the tick alone; in the service, the models that fell due since its last run)
        self._refresh_due(now, set(self._collect(now)))
        t = time.perf_counter()
        self.ctl.tick_all(now)
        each = (time.perf_counter() - t) / max(1, n)
        for r in self.ctl.models.values():
            r.tick.last_duration_s = each
        self.view.jobs.setdefault("tick", JobStatus()).last_ok_s = now


@dataclass
class Running:
    """The parts of a running service that start and stop together: the scheduler's jobs (the tick at
    start and every tick_s, the collector, the nightly jobs), the leader Lease's renew loop, the API.

    A clean stop (SIGTERM, Ctrl-C) waits for a running tick, gives each floor back to its own autoscaler
    when this process leads and `restore_on_stop` says so, releases the Lease (a standby takes over at its
    next attempt), and shuts the compute workers down: nothing is left running."""

    ctl: Controller
    view: ControllerView
    jobs: Jobs
    tick_s: float
    compute: Compute
    restore_on_stop: bool = False
    kill_switch: bool = False
    scheduler: Any = None

    def start(
        self,
        *,
        tick_now: bool = True,
        extra_jobs: tuple[tuple[Callable[[], object], str, dict[str, Any]], ...] = (),
    ) -> None:
        from datetime import UTC, datetime

        from apscheduler.schedulers.background import BackgroundScheduler

        leader = self.ctl.leader
        if leader is not None:
            if self.kill_switch:
                leader.on_change = lambda leading: self._kill_switch() if leading else None
            leader.start()  # renews on its own schedule from now on, whatever the ticks do
        elif self.kill_switch:
            self._kill_switch()
        scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        # the first tick right away (forecasts are submitted, decisions start on the reactive floor)
        first = {"next_run_time": datetime.now(UTC)} if tick_now else {}
        scheduler.add_job(self.jobs.tick_all, "interval", seconds=self.tick_s, id="tick", **first)
        scheduler.add_job(self.jobs.collect, "interval", seconds=COLLECT_EVERY_S, id="collect")
        for fn, trigger, kw in extra_jobs:
            scheduler.add_job(fn, trigger, **kw)
        scheduler.start()
        self.scheduler = scheduler

    def _kill_switch(self) -> None:
        """The kill switch is on: whatever prewarm raised goes back to its owner, and nothing is written."""
        for name, result in self.ctl.restore_all("kill switch").items():
            if result.outcome is actuation.Outcome.FAILED:
                detail = {"model": name, "detail": result.message}
                log.warning("kill switch: floor not restored", extra=detail)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)  # a tick in flight finishes and is recorded
            self.scheduler = None
        leader = self.ctl.leader
        leading = leader.leading() if leader is not None else True
        if self.restore_on_stop and leading:
            self.ctl.restore_all("shutdown")
        if leader is not None:
            leader.stop(release=True)
        self.compute.close()
        log.info("stopped")


class _Server:
    """uvicorn that logs where it listens once bound, and lets a SIGTERM end in our clean stop: uvicorn
    re-raises the signal it caught after its own shutdown, which with the default handler killed the
    process before any cleanup ran (floors not restored, worker processes orphaned)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:
                    log.info("listening", extra={"address": f"http://{host}:{port}/"})

        self.server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.terminated = False

    def run(self) -> None:
        def on_term(signum: int, _: Any) -> None:
            self.terminated = True
            self.server.should_exit = True

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            if not self.terminated:
                self.server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)


def serve_config(path: Any, *, overrides: dict[str, Any] | None = None) -> None:
    """Run the configured fleet on the wall clock until SIGTERM or Ctrl-C. `overrides`: command-line flags
    as dotted config paths (`api.port`, `store.url`, `compute.backend`, ...), above the environment
    (PREWARM_*), above the file, above the defaults."""
    import os

    from service.compose import build_from_config, compute_from_config
    from service.config import ApiToken, load_config

    configure_logging()
    cfg = load_config(path, os.environ, overrides)
    token = ApiToken(cfg.api)
    clock = time.time
    backend = compute_from_config(cfg)  # refits, nightly backtests and tuning run there, not in the tick
    ctl = build_from_config(cfg, clock, compute=backend)
    view = ControllerView(ctl, clock, kill_switch=cfg.kill_switch, api_auth=token)
    jobs = Jobs(
        ctl,
        view,
        clock,
        nightly_hour_utc=cfg.schedules.backtest_hour_utc,
        backtest_days=cfg.schedules.backtest_days,
        compute=backend,
        heap=Heap(),
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

    leader = ctl.leader
    log.info(
        "starting",
        extra={
            "config": str(path),
            "models": len(ctl.models),
            "compute": f"{backend.backend} x{backend.workers}",
            "store": cfg.store.url,
            "identity": leader.identity if leader is not None else None,
            "api_token": "configured" if token.token() else f"none: {token.why_none()}",
            "kill_switch": cfg.kill_switch,
        },
    )
    running = Running(
        ctl,
        view,
        jobs,
        cfg.schedules.tick_s,
        backend,
        restore_on_stop=cfg.kubernetes.restore_floor_on_stop,
        kill_switch=cfg.kill_switch,
    )
    running.start(
        extra_jobs=(
            (jobs.nightly_if_due, "interval", {"seconds": 60, "id": "nightly"}),
            (
                purge_old,
                "cron",
                {"hour": (cfg.schedules.backtest_hour_utc + 1) % 24, "minute": 0, "id": "retention"},
            ),
        )
    )
    try:
        _Server(create_app(view, api_token=token), cfg.api.host, cfg.api.port).run()
    finally:
        running.stop()


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    speed: float = 60.0,
    store_url: str = "sqlite:///prewarm-demo.db",
    api_token: str | None = None,
) -> None:
    """Run the embedded demo until interrupted."""
    from service.config import FixedToken

    configure_logging()
    clock = AcceleratedClock(demo_start_s(), speed)
    ctl = build_demo(clock, store_url)
    token = FixedToken(api_token)
    view = ControllerView(ctl, clock, api_auth=token)  # /readyz says when the POST endpoints are refused
    jobs = Jobs(ctl, view, clock, heap=Heap())
    tick_s = next(iter(ctl.models.values())).spec.tick_s
    jobs.tick_all()  # the first forecasts and decisions before the API answers
    jobs.nightly_if_due()
    running = Running(ctl, view, jobs, max(0.5, tick_s / speed), SERIAL)
    # the nightly backtest and tuning at the demo clock's 03:00 (every 24 real minutes at speed 60)
    running.start(
        tick_now=False,
        extra_jobs=((jobs.nightly_if_due, "interval", {"seconds": max(1.0, 60.0 / speed), "id": "nightly"}),),
    )
    view.jobs["scheduler"] = JobStatus(last_ok_s=clock())
    log.info("starting the demo", extra={"models": len(ctl.models), "speed": speed, "store": store_url})
    try:
        _Server(create_app(view, api_token=token), host, port).run()
    finally:
        running.stop()
