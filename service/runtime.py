"""The live control loop's core, clock-free: per model, refit the forecaster and run a control tick
(snapshot -> plan -> apply -> record). `service/serve.py` calls these on APScheduler jobs with the wall
clock; tests and the demo call them with a fake clock value.

The same forecaster factory and planner run here as in the backtest's predictive policy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from actuator.base import ActuationResult, ColdStart, Outcome, ReplicaState, Target, reading
from actuator.errors import ActuatorError
from actuator.lead_time import LeadTimeEstimator
from actuator.safety import GuardedActuator, Rails
from compute.base import Compute, Pending, Task
from compute.local import LocalCompute
from forecaster.dropouts import DropoutWatch
from forecaster.models import ModelError
from forecaster.models.base import ForecastModel
from forecaster.selection import full_fit
from forecaster.shape import MIN_SHAPE_DAYS, SHAPE_DAYS, DailyShape, daily_shape
from forecaster.sources.base import SourceError
from forecaster.types import Forecast, TrafficSeries, quantile_key
from planner import PlannerSpec, PlannerState, Snapshot, plan
from planner.explain import Decision
from planner.fleet import VALUE_LEVELS, FleetAllocation, allocate, fleet_request, within_grant
from planner.slo import LEVELS as SLO_LEVELS
from service.budget import BudgetSource, FixedBudget
from service.leadership import Leadership, shard_of
from service.store import DecisionStore

log = logging.getLogger("prewarm.controller")

TRAILING_S = 14 * 86_400
STORE_FORECAST_EVERY_S = 3600.0  # the stored copy only serves a restart: hourly bounds the store
COVERAGE_WINDOW = 1440  # steps of live coverage the self-check looks at
COVERAGE_MIN_STEPS = 120
COVERAGE_DEMOTE_GAP = 0.2  # demote when live coverage of the alpha-quantile falls this far below alpha
COVERAGE_RESTORE_GAP = 0.1  # and restore once it is back within this
PAST_BAND_STEPS = 2 * 1440  # steps of "what was forecast for the steps that arrived" kept for charts
STARTS_KEPT = 256  # cold starts the simulated fleet reports per workload
# a daily full fit still running (or not yet started) this long after it fell due is overdue: /readyz says so
FULL_FIT_GRACE_S = 3600.0
FIT_RETRY_FIRST_S = 5.0  # a failed full fit is retried after 5 s, 10 s, 20 s, ... up to the refresh interval


# traffic that had fully arrived by now_s (a Prometheus refresh, or a replayed trace)
History = Callable[[float], TrafficSeries]


class Ring:
    """The newest `capacity` rows of `width` floats, in a buffer allocated once: memory a model holds for
    its charts is the same on day 3 as on day 1 (a deque of tuples grew by its Python objects)."""

    def __init__(self, capacity: int, width: int) -> None:
        self._rows = np.empty((capacity, width))
        self._next = 0
        self._size = 0

    def append(self, row: tuple[float, ...]) -> None:
        self._rows[self._next] = row
        self._next = (self._next + 1) % self._rows.shape[0]
        self._size = min(self._size + 1, self._rows.shape[0])

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[float, ...]]:
        cap = self._rows.shape[0]
        first = (self._next - self._size) % cap
        for i in range(self._size):
            yield tuple(self._rows[(first + i) % cap].tolist())


@dataclass
class JobStatus:
    last_ok_s: float | None = None
    last_error: str | None = None
    last_error_s: float | None = None
    last_duration_s: float | None = None
    failures: int = 0
    pending: str | None = None  # waiting on work under way (a first fit running): not a failure

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "last_ok_s": self.last_ok_s,
            "last_error": self.last_error,
            "last_error_s": self.last_error_s,
            "last_duration_s": self.last_duration_s,
            "failures": self.failures,
        }


@dataclass
class ActuationHealth:
    """How this model's writes have fared: failures by kind since start, and the current run of ticks whose
    write failed (a transient error once is routine; many ticks in a row is an outage to alert on)."""

    failures: Counter[str] = field(default_factory=Counter)  # "transient" | "permanent" -> count
    failing_ticks: int = 0
    last_error: str = ""

    def observe(self, result: ActuationResult) -> None:
        if result.outcome is Outcome.FAILED:
            self.failures["permanent" if result.permanent else "transient"] += 1
            self.failing_ticks += 1
            self.last_error = result.message
        elif result.outcome in (Outcome.APPLIED, Outcome.UNCHANGED):
            self.failing_ticks = 0


@dataclass
class ModelRuntime:
    name: str
    target: Target
    spec: PlannerSpec
    history: History
    forecaster: str = "auto-fast"
    lead_time: LeadTimeEstimator | None = None
    model: ForecastModel | None = None
    forecast: Forecast | None = None
    # the API's day ahead, kept as the forecast's arrays and rendered when read: as a JSON-ready document
    # of Python floats it was a quarter of a model's memory (30 bytes a value against 8)
    published: Forecast | None = None
    stored_forecast_s: float | None = None
    published_s: float | None = None  # when `published` was last predicted
    healthy: bool = True
    health_note: str = ""
    state: PlannerState = field(default_factory=PlannerState)
    last_decision: dict[str, Any] | None = None
    refit: JobStatus = field(default_factory=JobStatus)
    tick: JobStatus = field(default_factory=JobStatus)
    data_age_s: float | None = None
    stale: Callable[[], str] | None = None  # the source's staleness verdict ("" when fresh)
    coverage: deque[bool] = field(default_factory=lambda: deque(maxlen=COVERAGE_WINDOW))
    # (step start, p50, p90) the newest forecast before each step arrived said: the band over the past
    past_band: Ring = field(default_factory=lambda: Ring(PAST_BAND_STEPS, 3))
    backtest_note: str = ""  # set by the nightly backtest's self-check when predictive lost
    dropouts: DropoutWatch = field(default_factory=DropoutWatch)
    dropout_note: str = ""  # non-empty while the newest data reads as a telemetry dropout
    tune_window_s: float = 7 * 86_400.0  # history each tuning run replays (slo.tune_window_days)
    gpus_per_replica: float = 1.0  # against the fleet's GPU budget
    priority: float = 1.0  # weight of its late requests when the budget binds
    prior: str | None = None  # the model whose daily shape it borrows while young (None: the fleet's)
    tuning: dict[str, Any] | None = None  # the applied tuning run (backtest/tuning.py TuningResult.as_dict)
    tuning_error: str = ""  # the newest tuning run failed: the previous operating point is kept
    actuation: ActuationHealth = field(default_factory=ActuationHealth)
    observed_rps: float | None = None  # the newest tick's observed rate (None: no data this tick)
    ready_replicas: int | None = None  # the newest tick's ready replicas (None: workload unreadable)
    fitting: Pending | None = None  # the daily full fit running on the compute backend
    fit_started_s: float | None = None  # when it was submitted
    full_fit_s: float | None = None  # when the fit in use was submitted (its history ends then)
    fit_error: str = ""  # the newest full fit failed: the previous fit is kept, re-anchored
    fit_history_end_s: float | None = None  # the end of the history the running fit was given
    anchored_s: float | None = None  # the end of the history the model in use is anchored on
    fit_failures: int = 0  # full fits failed in a row (the retry backoff doubles with each)
    fit_retry_s: float = 0.0  # no full fit is submitted before this time after a failure

    def coverage_ratio(self) -> float | None:
        """Share of recent steps at or under the alpha-quantile forecast (None until enough steps)."""
        if len(self.coverage) < COVERAGE_MIN_STEPS:
            return None
        return sum(self.coverage) / len(self.coverage)

    def apply_tuning(self, doc: dict[str, Any]) -> None:
        """Run at the operating point a tuning run chose, from the next tick on."""
        from backtest.tuning import OperatingPoint

        point = OperatingPoint.from_dict(doc["chosen"])
        self.spec = point.spec(
            self.spec, slo_target=self.spec.slo_target, unreachable=bool(doc.get("slo_unreachable"))
        )
        self.tuning, self.tuning_error = doc, ""

    def fit_overdue(self, now_s: float) -> str:
        """Why this model's daily full fit is overdue, or "" (the tick goes on with the newest fit)."""
        if self.fitting is not None and self.fit_started_s is not None:
            running = now_s - self.fit_started_s
            if running > FULL_FIT_GRACE_S:
                return f"the daily full fit has been running for {running / 3600:.1f} h"
        if self.full_fit_s is not None:
            due = (math.floor(self.full_fit_s / 86_400) + 1) * 86_400.0
            if now_s - due > FULL_FIT_GRACE_S:
                why = f" ({self.fit_error})" if self.fit_error else ""
                return f"the newest full fit is from {(now_s - self.full_fit_s) / 3600:.1f} h ago{why}"
        return ""

    def t_load(self) -> tuple[float, str]:
        if self.lead_time is None:
            return self.spec.t_load_s, "configured"
        est = self.lead_time.estimate()
        return est.t_load_s, est.note


@dataclass(frozen=True)
class _Planned:
    """A model's tick between planning and recording (the fleet stage may clip the decision in between)."""

    snapshot: Snapshot
    spec: PlannerSpec
    decision: Decision
    new_state: PlannerState
    have: ReplicaState | None
    read_error: str
    t_load_note: str


class Controller:
    """Runs every model's refit and control tick against one actuator and one store."""

    def __init__(
        self,
        runtimes: list[ModelRuntime],
        actuator: GuardedActuator,
        store: DecisionStore,
        *,
        refit_every_s: float = 300.0,
        forecast_horizon_s: float = 86_400.0,
        publish_every_s: float = 900.0,
        gpu_budget: float | BudgetSource | None = None,
        compute: Compute | None = None,
    ) -> None:
        self.models = {r.name: r for r in runtimes}
        # where the daily full fits run; in this process (serial) unless the composition root says otherwise
        self.compute: Compute = compute or LocalCompute(workers=1)
        # GPUs shared by every model: a number, or a ResourceQuota read now and then (None: each model
        # plans alone)
        self.budget: BudgetSource | None = (
            FixedBudget(float(gpu_budget)) if isinstance(gpu_budget, int | float) else gpu_budget
        )
        self.allocation: FleetAllocation | None = None  # the fleet stage's newest allocation
        self.forecast_horizon_s = forecast_horizon_s
        self.publish_every_s = publish_every_s
        self.actuator = actuator
        self.store = store
        self.refit_every_s = refit_every_s
        # the leader Lease, or the shard Leases, renewed on their own schedule (service/leadership.py); None:
        # this process acts alone
        self.leader: Leadership | None = None
        self._reasons: Counter[tuple[str, str]] = Counter()
        self._shapes: dict[str, DailyShape] = {}  # each model's own daily shape, read once a day
        self._shapes_day = -1
        for r in runtimes:
            saved = store.state(r.name)
            if saved is not None:  # a restart resumes its stabilisation windows and rate limits
                r.state = PlannerState.from_dict(saved)
            tuned = store.tunings(r.name, ok_only=True) if r.spec.slo_target is not None else []
            if tuned and tuned[0].get("target") == r.spec.slo_target:  # and its tuned operating point
                r.apply_tuning(tuned[0])
            actuator.rails_for(r.target)

    def shard(self, name: str) -> int:
        """The shard of the model (0 with one shard)."""
        return shard_of(name, self.leader.shards if self.leader is not None else 1)

    def acting(self, name: str) -> bool:
        """Whether this replica plans the model: always with one shard (a standby plans every model and
        skips the writes, ready to take over), else only while it holds the model's shard."""
        return self.leader is None or self.leader.shards == 1 or self.leader.holds(self.shard(name))

    def acting_names(self) -> list[str]:
        """The models this replica plans (as `acting`), the held shards read once for all of them."""
        if self.leader is None or self.leader.shards == 1:
            return list(self.models)
        held = set(self.leader.held())
        return [name for name in self.models if self.shard(name) in held]

    def budget_share(self) -> float:
        """This replica's part of the fleet's GPU budget: with shards, the held shards' models' share of the
        fleet's GPUs per replica (a split without borrowing: a shard whose models need more does not get
        another shard's unused part); 1 alone."""
        if self.leader is None or self.leader.shards == 1:
            return 1.0
        total = sum(r.gpus_per_replica for r in self.models.values())
        held = set(self.leader.held())
        mine = sum(r.gpus_per_replica for r in self.models.values() if self.shard(r.name) in held)
        return mine / total if total > 0 else 0.0

    def rails(self, name: str) -> Rails:
        return self.actuator.rails_for(self.models[name].target)

    def restore(self, name: str, why: str) -> ActuationResult:
        """Give the model's floor back to its own autoscaler (pause, shadow, kill switch, shutdown), and log
        what happened: prewarm's influence ends when it stops acting."""
        r = self.models[name]
        try:
            result = self.actuator.restore(r.target)
        except ActuatorError as exc:
            result = ActuationResult(Outcome.FAILED, str(exc))
        level = logging.WARNING if result.outcome is Outcome.FAILED else logging.INFO
        log.log(
            level,
            "floor restore",
            extra={"model": name, "why": why, "outcome": str(result.outcome), "detail": result.message},
        )
        return result

    def restore_all(self, why: str) -> dict[str, ActuationResult]:
        return {name: self.restore(name, why) for name in self.models}

    # -- refit: fit daily (on the compute backend), re-anchor and forecast every call --------------------

    def refit_model(self, name: str, now_s: float) -> None:
        """Re-anchor the model on the newest data and forecast. The daily full fit is submitted to the
        compute backend and installed once it has finished: until then the previous fit goes on re-anchoring,
        so a slow fit never holds up the tick (with the serial backend it finishes before this returns)."""
        r = self.models[name]
        try:
            # the window asks for up to TRAILING_S; a source that holds less answers with leading gaps, which
            # are history that does not exist, not an outage to fill: fit on what exists
            hist = r.history(now_s).tail(TRAILING_S).from_first_observation()
            r.dropouts.check(hist, r.forecast)  # judged by the forecast made before the zeros came
            hist = r.dropouts.clean(hist)
            if len(hist) < 2:
                raise ModelError(f"only {len(hist)} steps of history so far")
            self._install_fit(r, now_s)
            if r.fitting is None and self._fit_due(r, now_s) and now_s >= r.fit_retry_s:
                priors = self.priors_for(name, now_s) if hist.span_s < MIN_SHAPE_DAYS * 86_400 else ()
                task = Task(name, full_fit, (r.forecaster, r.spec.lookahead_s, hist, r.model, priors))
                r.fitting, r.fit_started_s, r.fit_history_end_s = self.compute.submit(task), now_s, hist.end_s
                self._install_fit(r, now_s)
            if r.model is None and not r.fit_error:  # waiting, not failing: counted as no failure
                r.refit.pending = "the first full fit is still running"
                return
            if r.model is None:
                raise ModelError(r.fit_error)
            if r.anchored_s != hist.end_s:  # a fit on this very history needs no re-anchoring
                r.model = r.model.update(hist)
                r.anchored_s = hist.end_s
            # the planner reads the look-ahead and the break-even after it for as long as the forecast may
            # age (a refresh that fails leaves it in use until max_forecast_age_s); the API and the
            # dashboard serve up to forecast_horizon_s, re-predicted every publish_every_s (a day ahead is
            # most of a refresh's cost, and it reads the same five minutes later)
            planning_s = r.spec.lookahead_s + r.spec.break_even_s + r.spec.max_forecast_age_s
            publish = r.published_s is None or _period(r.name, now_s, self.publish_every_s) > _period(
                r.name, r.published_s, self.publish_every_s
            )
            span = (now_s - hist.end_s) + max(planning_s, self.forecast_horizon_s if publish else 0.0)
            h = max(1, math.ceil(span / hist.step_s) + 1)
            # with a fleet budget, the fleet stage values replicas from the p99 path too (one more quantile
            # per forecast costs a thousand models' tick about a tenth, so only when it is read)
            value = VALUE_LEVELS if self.budget is not None else ()
            # planning for the SLO reads the step's whole distribution (planner/slo.py), not one quantile
            dist = SLO_LEVELS if r.spec.late_budget is not None else ()
            levels = tuple(sorted({0.5, 0.9, r.spec.quantile, *value, *dist}))
            self._score_coverage(r, hist)
            r.forecast = r.model.predict(h, levels)
            if publish:
                # served by the API: a copy without the planner's caches of the forecast it was read from
                r.published, r.published_s = replace(r.forecast), now_s
                if r.stored_forecast_s is None or now_s - r.stored_forecast_s >= STORE_FORECAST_EVERY_S:
                    self.store.put_forecast(name, r.forecast.origin_s, forecast_doc(r.forecast))
                    r.stored_forecast_s = now_s
            r.refit.last_ok_s, r.refit.last_error, r.refit.pending = now_s, None, None
        except (ModelError, SourceError, ValueError) as exc:
            r.refit.pending = None
            r.refit.failures += 1
            r.refit.last_error, r.refit.last_error_s = f"{type(exc).__name__}: {exc}", now_s

    def priors_for(self, name: str, now_s: float) -> tuple[DailyShape, ...]:
        """The daily shapes a model under two days old may borrow: its configured prior's, else every
        other model's that has a shape of its own (read once a UTC day: shapes move slowly)."""
        day = math.floor(now_s / 86_400)
        if day != self._shapes_day:
            self._shapes, self._shapes_day = {}, day
            for other, r in self.models.items():
                try:
                    shape = daily_shape(r.history(now_s).tail(SHAPE_DAYS * 86_400), f"{other}'s daily shape")
                except (SourceError, ValueError):
                    continue  # an unreadable history lends nothing today
                if shape is not None:
                    self._shapes[other] = shape
        prior = self.models[name].prior
        if prior is not None:
            return (self._shapes[prior],) if prior in self._shapes else ()
        return tuple(s for other, s in self._shapes.items() if other != name)

    @staticmethod
    def _fit_due(r: ModelRuntime, now_s: float) -> bool:
        return (
            r.model is None
            or r.full_fit_s is None
            or math.floor(now_s / 86_400) != math.floor(r.full_fit_s / 86_400)
        )

    def fit_finished(self, name: str) -> bool:
        """Whether the model's full fit has finished and waits to be taken into use."""
        r = self.models[name]
        return r.fitting is not None and r.fitting.done()

    def _install_fit(self, r: ModelRuntime, now_s: float) -> None:
        """Take a finished full fit into use (it is anchored on the history it was given). A failed fit is
        retried with backoff: seconds at first (a model without any forecast waits on it), then up to the
        refresh interval."""
        if r.fitting is None or not r.fitting.done():
            return
        outcome, r.fitting = r.fitting.outcome(), None
        if not outcome.ok:  # meanwhile the previous fit (if any) goes on, re-anchored
            r.fit_error = f"the full fit failed: {outcome.error}"
            r.fit_failures += 1
            r.fit_retry_s = now_s + min(self.refit_every_s, FIT_RETRY_FIRST_S * 2 ** (r.fit_failures - 1))
            log.warning("full fit failed", extra={"model": r.name, "error": outcome.error})
            return
        r.model, r.full_fit_s, r.fit_error = outcome.value, r.fit_started_s, ""
        r.published_s = None  # a new fit is published at its first forecast
        r.fit_failures, r.fit_retry_s = 0, 0.0
        r.anchored_s = r.fit_history_end_s
        report = r.model.report
        log.info(
            "full fit installed",
            extra={
                "model": r.name,
                "forecaster": r.model.alias,
                "history_days": round(report.history_s / 86_400, 2),
                "fit_seconds": round(report.fit_seconds, 3),
            },
        )

    def _score_coverage(self, r: ModelRuntime, hist: TrafficSeries) -> None:
        """Live calibration: did the steps that arrived since the last forecast stay under its alpha-quantile?
        Far fewer than alpha of them doing so demotes the model to its reactive floor (ForecastUnhealthy)."""
        fc = r.forecast
        if fc is None:
            return
        q = fc.quantile(r.spec.quantile)
        p50, p90 = fc.quantile(0.5), fc.quantile(0.9)
        lo = hist.index_at(fc.origin_s)
        for i in range(lo, len(hist)):
            t = hist.start_s + i * hist.step_s
            k = round((t - fc.origin_s) / fc.step_s)
            v = float(hist.values[i])
            if 0 <= k < q.size and fc.step_s == hist.step_s:
                r.past_band.append((t, float(p50[k]), float(p90[k])))
                if math.isfinite(v):
                    r.coverage.append(v <= float(q[k]))
        self.self_check(r)

    def self_check(self, r: ModelRuntime) -> None:
        alpha = r.spec.quantile
        notes = [r.backtest_note] if r.backtest_note else []
        cov = r.coverage_ratio()
        if cov is not None:
            was_bad = "live coverage" in r.health_note
            if cov < alpha - COVERAGE_DEMOTE_GAP or (was_bad and cov < alpha - COVERAGE_RESTORE_GAP):
                notes.append(
                    f"live coverage of the p{alpha * 100:g} forecast is {cov:.0%} over the last "
                    f"{len(r.coverage)} steps"
                )
        r.healthy = not notes
        r.health_note = "; ".join(notes)

    # -- control tick ------------------------------------------------------------------------------

    def tick_model(self, name: str, now_s: float) -> int | None:
        """One tick for one model, planned alone; returns the stored decision id (None when nothing could be
        recorded)."""
        return self._tick([name], now_s, budget=None).get(name)

    def tick_all(self, now_s: float) -> None:
        """One tick for every model this replica acts on (every model, or those of the shards it holds).
        With a fleet GPU budget, every model plans first, the fleet stage fits the asks into the budget
        (this replica's share of it: budget_share), and each clipped decision carries its BudgetLimited
        step; without one, each model's plan stands alone."""
        budget = self.budget.read(now_s) if self.budget is not None else None
        if budget is not None:
            budget *= self.budget_share()
        self._tick(self.acting_names(), now_s, budget=budget)

    @property
    def gpu_budget(self) -> float | None:
        """The budget in force (the newest read of a quota); None: each model plans alone."""
        return self.budget.gpus if self.budget is not None else None

    def _tick(self, names: list[str], now_s: float, *, budget: float | None) -> dict[str, int]:
        """Plan each model, then record every decision (with its planner state) in one transaction before
        any is applied, apply each, and record the actuations in one more: two commits per tick whatever
        the number of models, and a crash between them leaves committed decisions, never applied ones
        without a record. One model's failure is that model's alone."""
        with contextlib.ExitStack() as reads:
            try:  # the actuator's reads of every model at once, where it makes them (actuator/base.py)
                reads.enter_context(reading(self.actuator.inner, [self.models[n].target for n in names]))
            except Exception as exc:  # each model's own calls then read, and say what fails
                log.error("bulk read of the workloads failed", exc_info=exc)
            return self._tick_read(names, now_s, budget)

    def _tick_read(self, names: list[str], now_s: float, budget: float | None) -> dict[str, int]:
        planned: dict[str, _Planned] = {}
        for name in names:
            r = self.models[name]
            try:
                planned[name] = self._plan(r, now_s)
            except Exception as exc:  # a failing tick is logged and visible in /readyz, never fatal
                self._failed(r, exc, now_s)
        decisions = {name: p.decision for name, p in planned.items()}
        if budget is not None:
            requests = [
                fleet_request(
                    name,
                    p.decision,
                    p.snapshot,
                    p.spec,
                    now_s,
                    gpus_per_replica=self.models[name].gpus_per_replica,
                    priority=self.models[name].priority,
                )
                for name, p in planned.items()
            ]
            # the last allocation's state damps one-tick spikes and holds floors (a restart damps one tick)
            last = self.allocation.state if self.allocation is not None else None
            self.allocation = allocate(requests, budget, last, now_s)
            decisions = {name: within_grant(d, name, self.allocation) for name, d in decisions.items()}
        records: dict[str, dict[str, Any]] = {}
        for name, decision in decisions.items():
            p = planned[name]
            record: dict[str, Any] = decision.as_dict()  # a fresh dict, its inputs a fresh copy
            record["inputs"]["t_load_source"] = p.t_load_note
            record["ready_replicas"] = p.have.ready if p.have else None
            if p.read_error:
                record["read_error"] = p.read_error
            records[name] = record
        try:
            ids = self.store.record_many(
                [(name, records[name], planned[name].new_state.to_dict()) for name in records]
            )
        except Exception as exc:  # nothing recorded: nothing is applied (a decision is written first)
            for name in records:
                self._failed(self.models[name], exc, now_s)
            return {}
        done = dict(zip(records, ids, strict=True))
        results: list[tuple[int, dict[str, Any]]] = []
        for name, decision_id in done.items():
            r, p, decision, record = self.models[name], planned[name], decisions[name], records[name]
            try:
                r.state = p.new_state
                self._reasons[(str(decision.reason), r.name)] += 1
                result = self._apply(r, decision, decision_id, p.read_error)
                r.actuation.observe(result)
                _log_actuation(name, decision_id, decision, result)
                record["actuation"] = result.as_dict()
                results.append((decision_id, record["actuation"]))
                r.last_decision = {"id": decision_id, **record}
                self._learn(r)
                r.tick.last_ok_s, r.tick.last_error = now_s, None
            except Exception as exc:
                self._failed(r, exc, now_s)
        try:
            self.store.set_actuations(results)
        except Exception as exc:  # the decisions stand (recorded first); their outcomes could not be noted
            for name in done:
                self._failed(self.models[name], exc, now_s)
        return done

    def _plan(self, r: ModelRuntime, now_s: float) -> _Planned:
        have: ReplicaState | None = None
        read_error = ""
        try:
            have = self.actuator.inner.current(r.target)
        except ActuatorError as exc:
            read_error = str(exc)
        observed, observed_at = self._observed(r, now_s)
        r.observed_rps, r.ready_replicas = observed, have.ready if have else None
        t_load_s, t_load_note = r.t_load()
        spec = r.spec if t_load_s == r.spec.t_load_s else _with_t_load(r.spec, t_load_s)
        snap = Snapshot(
            current_replicas=have.desired if have else None,
            ready_replicas=have.ready if have else None,
            forecast=r.forecast,
            forecast_healthy=r.healthy,
            forecast_note=r.health_note,
            data_stale=r.stale() if r.stale is not None else "",
            data_dropout=r.dropout_note,
            observed_rps=observed,
            observed_at_s=observed_at,
        )
        decision, new_state = plan(snap, spec, r.state, now_s)
        return _Planned(snap, spec, decision, new_state, have, read_error, t_load_note)

    @staticmethod
    def _failed(r: ModelRuntime, exc: Exception, now_s: float) -> None:
        r.tick.failures += 1
        r.tick.last_error = f"{type(exc).__name__}: {exc}"
        r.tick.last_error_s = now_s
        log.error("control tick failed", extra={"model": r.name}, exc_info=exc)

    def reason_counts(self) -> list[tuple[str, str, int]]:
        """(reason, model, decisions) since the process started."""
        return [(reason, model, n) for (reason, model), n in sorted(self._reasons.items())]

    def _apply(
        self, r: ModelRuntime, decision: Decision, decision_id: int, read_error: str
    ) -> ActuationResult:
        if read_error:
            return ActuationResult(Outcome.FAILED, f"workload unreadable: {read_error}", retry_after_s=10.0)
        return self.actuator.apply(r.target, decision, str(decision_id))

    def _observed(self, r: ModelRuntime, now_s: float) -> tuple[float | None, float | None]:
        r.dropout_note = ""
        try:
            hist = r.history(now_s)
        except SourceError:
            r.data_age_s = None
            return None, None
        if len(hist) == 0:
            return None, None
        r.data_age_s = max(0.0, now_s - hist.end_s)
        dropout = r.dropouts.check_recent(hist, r.forecast, r.spec.lookahead_s)
        r.dropout_note = dropout.describe(hist.step_s) if dropout else ""
        # the rate over the whole steps that cover the planner's reactive window (at least one service
        # time: planner/spec.py)
        recent = hist.values[-max(1, math.ceil(r.spec.reactive_window_s / hist.step_s)) :]
        if not math.isfinite(float(recent[-1])):
            return None, None  # a gap: no reactive floor this tick, and the planner never scales down on it
        seen = recent[np.isfinite(recent)]
        return float(seen.sum()) / (seen.size * hist.step_s), hist.end_s

    def _learn(self, r: ModelRuntime) -> None:
        if r.lead_time is None:
            return
        with contextlib.suppress(ActuatorError):  # cold starts are learned on a later tick
            r.lead_time.observe(self.actuator.inner.cold_starts(r.target))


def _log_actuation(name: str, decision_id: int, decision: Decision, result: ActuationResult) -> None:
    """One line per write that happened or failed; unchanged, shadow and skipped ticks stay in the store."""
    if result.outcome not in (Outcome.APPLIED, Outcome.FAILED):
        return
    log.log(
        logging.INFO if result.outcome is Outcome.APPLIED else logging.WARNING,
        "decision applied" if result.outcome is Outcome.APPLIED else "decision failed",
        extra={
            "model": name,
            "decision_id": decision_id,
            "reason": str(decision.reason),
            "desired_replicas": decision.desired_replicas,
            "before": result.before,
            "after": result.after,
            "detail": result.message,
        },
    )


def _period(name: str, t_s: float, every_s: float) -> int:
    """Which of a model's own periods of `every_s` the time falls in: the periods of each model start at a
    stable offset of its own (a hash of its name), so that a fleet whose forecasts were all first published
    at once (the first fits, the daily fits landing together) spreads its day-ahead forecasts over the
    refreshes of a period instead of predicting them all within one refresh interval (a tenth of a thousand
    models' ticks carried them all, at twice a tick's cost)."""
    offset = zlib.crc32(f"publish:{name}".encode()) / 2**32 * every_s
    return math.floor((t_s + offset) / every_s)


def _with_t_load(spec: PlannerSpec, t_load_s: float) -> PlannerSpec:
    return replace(spec, t_load_s=t_load_s)


def forecast_doc(fc: Forecast) -> dict[str, Any]:
    return {
        "origin_s": fc.origin_s,
        "step_s": fc.step_s,
        "model": fc.model,
        "mean": np.round(fc.mean, 4).tolist(),
        "quantiles": {quantile_key(q): np.round(fc.quantiles[q], 4).tolist() for q in fc.levels},
    }


@dataclass
class SimulatedFleet:
    """The demo's actuator: replicas asked for become ready T_load later on the demo clock."""

    clock: Callable[[], float]
    t_load_s: float
    replicas: dict[Target, list[tuple[float, int]]] = field(default_factory=dict)  # (ready at, replica id)
    starts: dict[Target, list[ColdStart]] = field(default_factory=dict)  # the newest STARTS_KEPT
    promoted: dict[Target, set[int]] = field(default_factory=dict)  # live replicas already counted ready
    _next_id: int = 0

    def _fleet(self, target: Target) -> list[tuple[float, int]]:
        if target not in self.replicas:  # one warm replica to begin with
            self.replicas[target] = [(self.clock() - self.t_load_s, 0)]  # id 0: there before we looked
        return self.replicas[target]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def current(self, target: Target) -> ReplicaState:
        now = self.clock()
        fleet = self._fleet(target)
        self._promote(target, now)
        return ReplicaState(desired=len(fleet), ready=sum(1 for t, _ in fleet if t <= now))

    def _promote(self, target: Target, now: float) -> None:
        fleet = self._fleet(target)
        seen = self.promoted.setdefault(target, set())
        starts = self.starts.setdefault(target, [])
        for ready_at, rid in fleet:
            if rid > 0 and ready_at <= now and rid not in seen:
                seen.add(rid)
                starts.append(
                    ColdStart(
                        f"{target.name}-{rid}",
                        ready_at - self.t_load_s,
                        ready_at,
                        {"loading_and_warmup": self.t_load_s},
                    )
                )
        if len(starts) > STARTS_KEPT:
            del starts[: len(starts) - STARTS_KEPT]  # an API reports recent pods, not every one since start
        if len(seen) > len(fleet):  # ids are never reused: a released replica's can be forgotten
            seen.intersection_update(rid for _, rid in fleet)

    def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
        now = self.clock()
        fleet = self._fleet(target)
        before, want = len(fleet), decision.desired_replicas
        if want > before:
            fleet.extend((now + self.t_load_s, self._new_id()) for _ in range(want - before))
        elif want < before:
            fleet.sort()
            del fleet[want:]  # the newest (possibly still loading) go first
        outcome = Outcome.UNCHANGED if want == before else Outcome.APPLIED
        return ActuationResult(outcome, f"simulated fleet {before} -> {want}", before, want)

    def cold_starts(self, target: Target) -> list[ColdStart]:
        self._promote(target, self.clock())
        return list(self.starts.get(target, []))
