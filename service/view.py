"""The service's side of the API port: reads the controller and the store, flips the rails."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from actuator.errors import ActuatorError
from actuator.safety import Mode
from api.ports import TokenSource, UnknownModel
from planner.queueing import wait_probability
from service.runtime import Controller, ModelRuntime, forecast_doc


class ControllerView:
    def __init__(
        self,
        controller: Controller,
        clock: Callable[[], float],
        *,
        kill_switch: bool = False,
        api_auth: TokenSource | None = None,
    ) -> None:
        self.ctl = controller
        self.clock = clock
        self.kill_switch = kill_switch
        self.api_auth = api_auth  # where the POST endpoints' token comes from (None: a fixed one, or none)
        self.jobs: dict[str, Any] = {}  # scheduler job name -> JobStatus (the nightly backtest)

    def now_s(self) -> float:
        return self.clock()

    def _rt(self, name: str) -> ModelRuntime:
        try:
            return self.ctl.models[name]
        except KeyError:
            raise UnknownModel(name) from None

    def _describe(self, r: ModelRuntime) -> dict[str, Any]:
        rails = self.ctl.rails(r.name)
        t_load_s, source = r.t_load()
        current: int | None = None
        with contextlib.suppress(ActuatorError):  # unreachable workload: shown as unknown
            current = self.ctl.actuator.inner.current(r.target).desired
        last = r.last_decision or {}
        return {
            "name": r.name,
            "target": str(r.target),
            "mode": str(rails.mode),
            "paused": rails.paused,
            "forecast_model": r.forecast.model if r.forecast else None,
            "t_load_s": t_load_s,
            "t_load_source": source,
            "current_replicas": current,
            "desired_replicas": last.get("desired_replicas"),
            "healthy": r.healthy and rails.permanent_error is None,
            "health_note": rails.permanent_error or r.health_note,
            "data_age_s": r.data_age_s,
            "slo_target": r.spec.slo_target,
            "slo_wait_s": r.spec.slo_wait_s,
            # the fit in use: its forecaster, the history it had (days), its notes
            "fit": r.model.report.as_dict() if r.model is not None else None,
            "fit_error": r.fit_error or None,
            **_operating_point(r),
        }

    def models(self) -> list[dict[str, Any]]:
        return [self._describe(r) for r in self.ctl.models.values()]

    def model(self, name: str) -> dict[str, Any]:
        return self._describe(self._rt(name))

    def forecast(self, name: str) -> dict[str, Any] | None:
        r = self._rt(name)
        # the latest forecast is in memory once this process has refitted; the store has it after a restart
        return forecast_doc(r.published) if r.published is not None else self.ctl.store.latest_forecast(name)

    def history(self, name: str, since_s: float) -> dict[str, Any]:
        r = self._rt(name)
        hist = r.history(self.clock())
        part = hist.slice(hist.index_at(since_s), len(hist))
        vals = [None if not math.isfinite(v) else round(float(v), 4) for v in part.values]
        # the band over the past: what the newest forecast before each step said it would be
        p50: list[float | None] = [None] * len(vals)
        p90: list[float | None] = [None] * len(vals)
        for t, lo, hi in r.past_band:
            i = round((t - part.start_s) / part.step_s)
            if 0 <= i < len(vals):
                p50[i], p90[i] = round(lo, 4), round(hi, 4)
        return {
            "start_s": part.start_s,
            "step_s": part.step_s,
            "requests": vals,
            "forecast_p50": p50,
            "forecast_p90": p90,
        }

    def shards(self) -> dict[str, Any] | None:
        """The shards this replica holds, of how many, among which members (None: one Lease, or none)."""
        leader = self.ctl.leader
        if leader is None or leader.shards == 1:
            return None
        held = leader.held()
        return {
            "count": leader.shards,
            "held": held,
            "members": list(getattr(leader, "members", ())),
            "models": sum(1 for name in self.ctl.models if self.ctl.shard(name) in held),
            "budget_share": round(self.ctl.budget_share(), 6),
        }

    def fleet(self) -> dict[str, Any]:
        """The fleet stage's newest allocation: the budget, what the models asked and got, who was clipped;
        with shards, this replica's: its shards, and its share of the budget."""
        a = self.ctl.allocation
        source = self.ctl.budget.as_dict() if self.ctl.budget is not None else {}
        source = {**source, "shards": self.shards()}
        if self.ctl.gpu_budget is None or a is None:
            return {
                **source,
                "budget_gpus": self.ctl.gpu_budget,
                "asked_gpus": None,
                "used_gpus": None,
                "clipped": [],
                "models": {},
            }
        return {
            **source,
            "budget_gpus": a.budget_gpus,
            "asked_gpus": round(a.asked_gpus, 3),
            "used_gpus": round(a.used_gpus, 3),
            "clipped": a.clipped,
            "models": {
                m: {
                    "asked_replicas": g.asked,
                    "granted_replicas": g.granted,
                    "gpus": round(g.gpus, 3),
                    "clipped": g.clipped,
                    "floor_replicas": g.floor,
                    "late_budget": round(g.late_budget, 6),
                    "expected_late_share": None if g.late_share is None else round(g.late_share, 6),
                    "lost_late_share": None if g.lost_share is None else round(g.lost_share, 6),
                    "lost_to": list(g.lost_to),
                    "damped": g.damped,
                    "why": g.describe(a.budget_gpus, a.asked_gpus),
                }
                for m, g in sorted(a.grants.items())
            },
        }

    def decisions(self, name: str, since_s: float | None, limit: int) -> list[dict[str, Any]]:
        self._rt(name)
        return [self._flat(d) for d in self.ctl.store.decisions(name, since_s, limit)]

    def decision(self, decision_id: int) -> dict[str, Any] | None:
        d = self.ctl.store.decision(decision_id)
        return self._flat(d) if d else None

    @staticmethod
    def _flat(d: Any) -> dict[str, Any]:
        return {"id": d.id, "model": d.model, **d.record, "actuation": d.actuation}

    def latest_backtest(self, name: str) -> dict[str, Any] | None:
        self._rt(name)
        return self.ctl.store.latest_backtest(name)

    def tuning(self, name: str) -> dict[str, Any] | None:
        r = self._rt(name)
        if r.spec.slo_target is None:
            return None
        runs = self.ctl.store.tunings(name, limit=1)
        return {
            "model": name,
            "slo_target": r.spec.slo_target,
            "slo_wait_s": r.spec.slo_wait_s,
            "operating_point": {
                **_operating_point(r),
                "source": "tuned" if r.tuning else "configured (no tuning run applied yet)",
            },
            "status": _tuning_status(r),
            "applied": r.tuning,
            "latest_run": runs[0] if runs else None,
        }

    def set_mode(self, name: str, mode: str) -> dict[str, Any]:
        r = self._rt(name)
        rails = self.ctl.rails(name)
        was = rails.mode
        rails.mode = Mode(mode)
        if mode == "active":
            rails.permanent_error = None  # an operator's explicit re-activation retries a failed target
        elif was is Mode.ACTIVE:  # back to shadow: prewarm no longer acts, so its floor goes back
            self.ctl.restore(name, "mode set to shadow")
        return self._describe(r)

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        r = self._rt(name)
        rails = self.ctl.rails(name)
        was = rails.paused
        rails.paused = paused
        if paused and not was:  # a paused model's autoscaler gets its own floor back at once
            self.ctl.restore(name, "paused")
        return self._describe(r)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        out: dict[str, Any] = {}
        for r in self.ctl.models.values():
            if not self.ctl.acting(r.name):
                continue  # another replica's shard: its /readyz answers for it
            rails = self.ctl.rails(r.name)
            problems = []
            if r.refit.last_ok_s is None:
                why = r.refit.last_error or r.refit.pending or "pending"
                problems.append(f"no successful refit yet, running on its reactive floor ({why})")
            if r.tick.last_ok_s is None or now - r.tick.last_ok_s > 3 * r.spec.tick_s:
                problems.append(
                    f"no control tick in the last {3 * r.spec.tick_s:g} s ({r.tick.last_error or 'pending'})"
                )
            if r.data_age_s is not None and r.data_age_s > r.spec.max_observation_age_s:
                problems.append(f"traffic data is {r.data_age_s:.0f} s old")
            stale = r.stale() if r.stale is not None else ""
            if stale:
                problems.append(f"traffic data is stale: {stale}")
            if r.dropout_note:
                problems.append(r.dropout_note)
            if rails.permanent_error:
                problems.append(f"actuation stopped: {rails.permanent_error}")
            reachable = True
            try:
                self.ctl.actuator.inner.current(r.target)
            except ActuatorError as exc:
                reachable = False
                problems.append(f"actuator unreachable: {exc}")
            warnings = [r.tuning["why"]] if r.tuning and r.spec.slo_unreachable else []
            overdue = r.fit_overdue(now)
            if overdue:  # the tick goes on with the newest fit, re-anchored: a warning, not unready
                warnings.append(f"refit overdue: {overdue}")
            if r.tuning_error:
                warnings.append(
                    f"the last tuning run failed, the previous operating point is kept: {r.tuning_error}"
                )
            out[r.name] = {
                "ready": not problems,
                "problems": problems,
                "warnings": warnings,
                "tuning": _tuning_status(r),
                "refit": r.refit.as_dict(),
                "tick": r.tick.as_dict(),
                "data_age_s": r.data_age_s,
                "actuator_reachable": reachable,
            }
        # the process is ready when it ticks: a model without a forecast, or with stale data, runs on its
        # reactive floor and says why below, but never holds the API (and its explanations) out of service
        tick_s = max((r.spec.tick_s for r in self.ctl.models.values()), default=30.0)
        ticks = [r.tick.last_ok_s for r in self.ctl.models.values() if r.tick.last_ok_s is not None]
        last_tick = max(ticks, default=None)
        problems = []
        if last_tick is None:
            problems.append("no control tick has completed yet")
        elif now - last_tick > 3 * tick_s:
            problems.append(f"no control tick completed in the last {3 * tick_s:g} s")
        ok = not problems
        warnings = []
        if self.api_auth is not None and self.api_auth.token() is None:
            warnings.append(f"POST endpoints are refused: no api token ({self.api_auth.why_none()})")
        if self.kill_switch:
            warnings.append("kill switch on: decisions are recorded, nothing is applied")
        body: dict[str, Any] = {
            "problems": problems,
            "warnings": warnings,
            "degraded": [name for name, m in out.items() if m["problems"]],
            "leader": self.ctl.leader.leading() if self.ctl.leader is not None else None,
            "shards": self.shards(),
            "models": out,
            "jobs": {k: v.as_dict() for k, v in self.jobs.items()},
        }
        budget = self.ctl.budget
        if budget is not None:  # a budget that cannot be read is a warning: each model plans alone meanwhile
            fleet = budget.as_dict()
            fleet["warnings"] = (
                [f"no GPU budget yet, each model plans alone: {budget.error or 'not read yet'}"]
                if budget.gpus is None
                else ([budget.error] if budget.error else [])
            )
            body["fleet"] = fleet
        return ok, body

    def metrics(self) -> list[tuple[str, str, dict[str, str], float]]:
        s: list[tuple[str, str, dict[str, str], float]] = []
        now = self.clock()
        for r in self.ctl.models.values():
            lab = {"model": r.name}
            d = r.last_decision or {}
            if d:
                s.append(
                    (
                        "prewarm_desired_replicas_raw",
                        "Replicas the forecast asked for",
                        lab,
                        d["raw_replicas"],
                    )
                )
                s.append(
                    ("prewarm_desired_replicas", "Replicas after every stage", lab, d["desired_replicas"])
                )
                s.append(
                    ("prewarm_current_replicas", "Replicas the workload had", lab, d["current_replicas"])
                )
            t_load_s, source = r.t_load()
            s.append(
                (
                    "prewarm_t_load_seconds",
                    "T_load in use",
                    {**lab, "source": "learned" if source.startswith("learned") else "configured"},
                    t_load_s,
                )
            )
            if r.forecast is not None:
                at = now + t_load_s
                i = int(np.clip((at - r.forecast.origin_s) // r.forecast.step_s, 0, r.forecast.horizon - 1))
                for q in r.forecast.levels:
                    s.append(
                        (
                            "prewarm_forecast_requests_per_second",
                            "Forecast demand quantile at now + T_load",
                            {**lab, "quantile": f"{q:g}"},
                            float(r.forecast.quantiles[q][i]) / r.forecast.step_s,
                        )
                    )
            s.append(
                ("prewarm_model_healthy", "1 when the forecast is trusted", lab, 1.0 if r.healthy else 0.0)
            )
            s += _traffic_metrics(r, lab, now)
            s += self._rails_metrics(r, lab)
            s += _tuning_metrics(r, lab)
            for job, st in (("refit", r.refit), ("tick", r.tick)):
                jl = {**lab, "task": job}
                s.append(("prewarm_job_failures_total", "Failed job runs", jl, float(st.failures)))
                if st.last_duration_s is not None:
                    s.append(("prewarm_job_duration_seconds", "Last run's duration", jl, st.last_duration_s))
        leading = self.ctl.leader.leading() if self.ctl.leader is not None else self.ctl.actuator.leading
        if leading is not None:
            s.append(
                (
                    "prewarm_leader",
                    "1 when this instance may write (holds the leader Lease, or acts alone)",
                    {},
                    float(leading),
                )
            )
        shards = self.shards()
        if shards is not None:  # summed over the replicas, held < count says a shard has no holder
            s.append(("prewarm_shards", "Shards the fleet is divided into", {}, float(shards["count"])))
            s.append(("prewarm_shards_held", "Shards this replica holds", {}, float(len(shards["held"]))))
        s += _service_job_metrics(self.jobs)
        s += _fleet_metrics(self.ctl)
        for reason, model, n in self.ctl.reason_counts():
            s.append(
                (
                    "prewarm_decisions_total",
                    "Decisions by reason",
                    {"model": model, "reason": reason},
                    float(n),
                )
            )
        return s

    def _rails_metrics(self, r: ModelRuntime, lab: dict[str, str]) -> list[Sample]:
        """The model's mode and how its writes fare."""
        rails = self.ctl.rails(r.name)
        s: list[Sample] = [
            (
                "prewarm_model_mode",
                "1 for the mode the model is in",
                {**lab, "mode": str(m)},
                float(rails.mode is m),
            )
            for m in Mode
        ]
        s.append(("prewarm_model_paused", "1 while an operator paused the model", lab, float(rails.paused)))
        for kind in ("transient", "permanent"):
            s.append(
                (
                    "prewarm_actuation_failures_total",
                    "Writes to the workload that failed, by kind (permanent: retrying cannot fix it)",
                    {**lab, "kind": kind},
                    float(r.actuation.failures[kind]),
                )
            )
        s.append(
            (
                "prewarm_actuation_failing_ticks",
                "Consecutive ticks whose write to the workload failed (0 after one succeeds)",
                lab,
                float(r.actuation.failing_ticks),
            )
        )
        s.append(
            (
                "prewarm_actuation_blocked",
                "1 when a permanent error stopped acting on the model until its config changes",
                lab,
                float(rails.permanent_error is not None),
            )
        )
        return s


Sample = tuple[str, str, dict[str, str], float]


def _traffic_metrics(r: ModelRuntime, lab: dict[str, str], now: float) -> list[Sample]:
    """Demand against ready capacity, the forecast for the current step, its live coverage, and whether the
    traffic data can be trusted: the series a dashboard overlays to show whether pre-warming worked."""
    s: list[Sample] = []
    spec = r.spec
    s.append(
        (
            "prewarm_capacity_requests_per_second_per_replica",
            "Requests/s one warm replica serves at the SLO",
            lab,
            spec.capacity_rps_per_replica,
        )
    )
    if r.observed_rps is not None:
        s.append(("prewarm_observed_requests_per_second", "Observed request rate", lab, r.observed_rps))
    if r.ready_replicas is not None:
        s.append(("prewarm_ready_replicas", "Replicas warm and serving", lab, float(r.ready_replicas)))
    if r.observed_rps is not None and r.ready_replicas is not None:
        cap = spec.capacity_rps_per_replica
        late = wait_probability(r.ready_replicas, r.observed_rps / cap, cap, spec.slo_wait_s)
        s.append(
            (
                "prewarm_slo_late_requests_per_second_estimate",
                "Observed requests/s expected to wait longer than the SLO wait on the ready replicas (M/M/c)",
                lab,
                late * r.observed_rps,
            )
        )
    if r.forecast is not None:
        fc = r.forecast
        i = int(np.clip((now - fc.origin_s) // fc.step_s, 0, fc.horizon - 1))
        for q in fc.levels:
            s.append(
                (
                    "prewarm_forecast_current_requests_per_second",
                    "Forecast demand quantile for the current step (compare with observed)",
                    {**lab, "quantile": f"{q:g}"},
                    float(fc.quantiles[q][i]) / fc.step_s,
                )
            )
    cov = r.coverage_ratio()
    if cov is not None:
        s.append(
            (
                "prewarm_forecast_coverage_ratio",
                "Share of recent steps at or under the operating point's forecast quantile",
                lab,
                cov,
            )
        )
    if r.data_age_s is not None:
        s.append(("prewarm_data_age_seconds", "Age of the newest traffic sample", lab, r.data_age_s))
    stale = r.stale() if r.stale is not None else ""
    s.append(
        ("prewarm_traffic_stale", "1 when the traffic source is stale or erroring", lab, float(bool(stale)))
    )
    s.append(
        (
            "prewarm_traffic_dropout",
            "1 while the newest traffic reads as a telemetry dropout",
            lab,
            float(bool(r.dropout_note)),
        )
    )
    return s


def _fleet_metrics(ctl: Controller) -> list[Sample]:
    """The shared GPU budget, what the fleet asked and uses, and each model's grant."""
    a = ctl.allocation
    if ctl.gpu_budget is None or a is None:
        return []
    s: list[Sample] = [
        ("prewarm_fleet_gpu_budget", "GPUs prewarm may hold warm across its models", {}, a.budget_gpus),
        ("prewarm_fleet_gpus_asked", "GPUs the models' own plans asked for", {}, a.asked_gpus),
        ("prewarm_fleet_gpus_granted", "GPUs the fleet stage granted", {}, a.used_gpus),
    ]
    for m, g in sorted(a.grants.items()):
        lab = {"model": m}
        s.append(
            ("prewarm_fleet_granted_replicas", "Replicas the fleet stage granted", lab, float(g.granted))
        )
        s.append(
            (
                "prewarm_fleet_clipped",
                "1 when the budget granted fewer replicas than asked",
                lab,
                float(g.clipped),
            )
        )
    return s


def _service_job_metrics(jobs: dict[str, Any]) -> list[Sample]:
    """The service's scheduled jobs (nightly backtest and tuning, retention): failures, last success."""
    s: list[Sample] = []
    for job, st in sorted(jobs.items()):
        jl = {"task": job}
        s.append(
            ("prewarm_service_job_failures_total", "Failed runs of a service job", jl, float(st.failures))
        )
        if st.last_ok_s is not None:
            s.append(
                (
                    "prewarm_service_job_last_success_timestamp_seconds",
                    "When the job last succeeded",
                    jl,
                    st.last_ok_s,
                )
            )
        if st.last_error_s is not None:
            s.append(
                (
                    "prewarm_service_job_last_failure_timestamp_seconds",
                    "When the job last failed",
                    jl,
                    st.last_error_s,
                )
            )
    return s


def _operating_point(r: ModelRuntime) -> dict[str, Any]:
    """The operating point in force (tuned or configured), as the model view and the tuning view show it."""
    spec = r.spec
    return {
        "alpha": spec.quantile,
        "late_budget": spec.late_budget,
        # the budget as the operating point's one number for the model's target: lambda x (1 - target)
        "lambda": None
        if spec.late_budget is None or spec.slo_target is None
        else round(spec.late_budget / (1.0 - spec.slo_target), 6),
        "use_forecast": r.spec.use_forecast,
        "burst_reserve_replicas": r.spec.burst_reserve_replicas,
        "burst_reserve_share": r.spec.burst_reserve_share,
        "slo_unreachable": r.spec.slo_unreachable,
    }


def _tuning_status(r: ModelRuntime) -> str:
    if r.spec.slo_target is None:
        return "no SLO target"
    if r.tuning_error:
        return "last run failed (previous point kept)"
    if r.tuning is None:
        return "not tuned yet"
    return "SloUnreachable" if r.spec.slo_unreachable else "meets target on the trailing window"


def _tuning_metrics(r: ModelRuntime, lab: dict[str, str]) -> list[tuple[str, str, dict[str, str], float]]:
    """The SLO target, the operating point in force and what the applied tuning run measured."""
    spec = r.spec
    if spec.slo_target is None:
        return []
    s: list[tuple[str, str, dict[str, str], float]] = [
        ("prewarm_slo_target", "Share of requests that must start within the SLO wait", lab, spec.slo_target),
        ("prewarm_slo_wait_seconds", "The SLO's longest acceptable queueing wait", lab, spec.slo_wait_s),
        ("prewarm_operating_point_alpha", "Forecast quantile in force", lab, spec.quantile),
        (
            "prewarm_operating_point_late_budget",
            "Share of requests the plan lets be late at each step (planning for the SLO; 0: quantile stage)",
            lab,
            spec.late_budget or 0.0,
        ),
        (
            "prewarm_operating_point_uses_forecast",
            "1 when the operating point plans from the forecast (0: reactive floor + reserve)",
            lab,
            1.0 if spec.use_forecast else 0.0,
        ),
        (
            "prewarm_burst_reserve_replicas",
            "Spare replicas of the burst reserve",
            lab,
            spec.burst_reserve_replicas,
        ),
        (
            "prewarm_burst_reserve_share",
            "Burst reserve as a share of planned replicas",
            lab,
            spec.burst_reserve_share,
        ),
        (
            "prewarm_slo_unreachable",
            "1 when no tuned candidate met the target",
            lab,
            float(spec.slo_unreachable),
        ),
    ]
    doc = r.tuning
    if doc:
        chosen = doc["families"]["predictive"]["chosen"]
        s.append(
            (
                "prewarm_tuning_attainment",
                "Share of requests within the SLO wait in the tuning backtest, at the chosen point",
                lab,
                1.0 - float(chosen["violation_rate"]),
            )
        )
        if doc.get("hours_ratio_vs_warm_pool") is not None:
            s.append(
                (
                    "prewarm_tuning_hours_ratio_vs_warm_pool",
                    "Replica-hours of the chosen point / a warm pool tuned to the same target",
                    lab,
                    float(doc["hours_ratio_vs_warm_pool"]),
                )
            )
            s.append(
                (
                    "prewarm_tuning_saving_vs_warm_pool",
                    "1 - that ratio: the share of a warm pool's replica-hours saved",
                    lab,
                    float(doc["saving_vs_warm_pool"]),
                )
            )
        if "at_s" in doc:
            s.append(
                ("prewarm_tuning_last_run_timestamp_seconds", "When the applied run ran", lab, doc["at_s"])
            )
    return s
