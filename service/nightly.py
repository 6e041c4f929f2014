"""The nightly jobs, recorded: the backtest of each model (replay its recent history through the same
forecaster + planner against the baselines, store the result, and demote a model whose forecast lost: the
self-check), and the tuning of each model that has an SLO target (the operating point applied from the
next tick; a failed run is recorded and the previous point kept).

The work itself is backtest/tasks.py's pure functions, fanned out per model through the compute port
(compute/): this module builds each model's task from its live state, and applies each outcome. One
model's failure is recorded for that model and never stops the others."""

from __future__ import annotations

from typing import Any

from backtest.run import BacktestConfig
from backtest.tasks import NIGHTLY_POLICIES, POOLS, backtest_model, tune_model
from backtest.tuning import TuningGrid
from compute.base import Compute, Outcome, Task
from compute.local import LocalCompute
from forecaster.types import SECONDS_PER_DAY
from service.runtime import TRAILING_S, Controller, ModelRuntime

SERIAL = LocalCompute(workers=1)


def _config(ctl: Controller, r: ModelRuntime, **extra: Any) -> BacktestConfig:
    """The backtest of a live model: its learned T_load, its SLO, rails, forecaster and refresh cadence."""
    t_load_s, _ = r.t_load()
    return BacktestConfig(
        capacity_rps=r.spec.capacity_rps_per_replica,
        t_load_s=t_load_s,
        slo_wait_s=r.spec.slo_wait_s,
        tick_s=max(1, round(r.spec.tick_s)),
        min_replicas=r.spec.min_replicas,
        max_replicas=r.spec.max_replicas,
        model=r.forecaster,
        refresh_s=ctl.refit_every_s,
        dropout_min_count=r.dropouts.min_count,
        dropout_max_s=r.dropouts.max_s,
        **extra,
    )


# -- tuning ----------------------------------------------------------------------------------------------


def tuning_task(ctl: Controller, name: str, now_s: float, grid: TuningGrid | None = None) -> Task | None:
    """One model's tuning run as a task (None: it has no SLO target)."""
    r = ctl.models[name]
    if r.spec.slo_target is None:
        return None
    hist = r.history(now_s).tail(r.tune_window_s + TRAILING_S)  # the window and the forecaster's history
    return Task(name, tune_model, (hist, _config(ctl, r), r.spec.slo_target, r.tune_window_s, grid))


def apply_tuning(ctl: Controller, name: str, now_s: float, outcome: Outcome) -> dict[str, Any] | None:
    """Record a tuning outcome and run at its point from the next tick; a failure keeps the previous
    point, says so, and returns None."""
    r = ctl.models[name]
    target = r.spec.slo_target
    if not outcome.ok:
        r.tuning_error = outcome.error
        kept = r.tuning["chosen"]["setting"] if r.tuning else "the configured operating point"
        ctl.store.put_tuning(name, now_s, False, {"target": target, "error": r.tuning_error, "kept": kept})
        return None
    doc: dict[str, Any] = outcome.value
    ctl.store.put_tuning(name, now_s, True, doc)
    r.apply_tuning({**doc, "at_s": now_s})
    return doc


def nightly_tune(
    ctl: Controller, name: str, now_s: float, grid: TuningGrid | None = None
) -> dict[str, Any] | None:
    """Tune one model in this process (None: no target set); on failure the run is recorded, the previous
    point kept, and it raises."""
    try:
        task = tuning_task(ctl, name, now_s, grid)
    except Exception as exc:  # the history could not be read: recorded as a failed run
        apply_tuning(ctl, name, now_s, Outcome(name, error=f"{type(exc).__name__}: {exc}"))
        raise
    if task is None:
        return None
    outcome = SERIAL.map([task])[0]
    doc = apply_tuning(ctl, name, now_s, outcome)
    if doc is None:
        raise RuntimeError(f"tuning {name} failed: {outcome.error}")
    return doc


# -- backtest --------------------------------------------------------------------------------------------


def backtest_task(ctl: Controller, name: str, now_s: float, days: float) -> Task:
    r = ctl.models[name]
    cfg = _config(
        ctl,
        r,
        warm_pools=POOLS,
        policies=NIGHTLY_POLICIES,
        alpha=r.spec.quantile,  # the operating point in force, tuned or configured
        burst_reserve_replicas=r.spec.burst_reserve_replicas,
        burst_reserve_share=r.spec.burst_reserve_share,
        use_forecast=r.spec.use_forecast,
    )
    return Task(name, backtest_model, (r.history(now_s).tail(days * SECONDS_PER_DAY), cfg))


def apply_backtest(ctl: Controller, name: str, now_s: float, outcome: Outcome) -> dict[str, Any]:
    """Store a backtest result and run the self-check on it (a model whose forecast lost is demoted to
    its reactive floor until a later night says otherwise). A failed run raises with its error."""
    if not outcome.ok:
        raise RuntimeError(f"backtest {name} failed after {outcome.attempts} attempt(s): {outcome.error}")
    r = ctl.models[name]
    result: dict[str, Any] = dict(outcome.value)
    reasons = result.pop("lost_because")
    r.backtest_note = ("nightly backtest: " + "; ".join(reasons)) if reasons else ""
    ctl.self_check(r)
    ctl.store.put_backtest(name, now_s, result)
    return result


def nightly_backtest(ctl: Controller, name: str, now_s: float, days: float) -> dict[str, Any]:
    """Backtest one model in this process and record it."""
    return apply_backtest(ctl, name, now_s, SERIAL.map([backtest_task(ctl, name, now_s, days)])[0])


# -- the night, fanned out -------------------------------------------------------------------------------


def run_night(
    ctl: Controller,
    compute: Compute,
    now_s: float,
    *,
    backtest_days: float,
    grid: TuningGrid | None = None,
    tune: bool = True,
) -> dict[str, dict[str, Outcome]]:
    """Every model's backtest and (with a target) tuning run, fanned out on `compute` as one batch, then
    recorded model by model. Returns the outcomes by job and model; failures are recorded, never raised."""
    tasks: list[tuple[str, Task]] = []
    for name in ctl.models:
        for job in ("backtest", "tuning") if tune else ("backtest",):
            try:
                task = (
                    backtest_task(ctl, name, now_s, backtest_days)
                    if job == "backtest"
                    else tuning_task(ctl, name, now_s, grid)
                )
            except Exception as exc:  # the history could not be read: that model's job fails alone
                task = Task(name, _raise, (f"{type(exc).__name__}: {exc}",))
            if task is not None:
                tasks.append((job, task))
    outcomes = compute.map([t for _, t in tasks])
    done: dict[str, dict[str, Outcome]] = {"backtest": {}, "tuning": {}}
    for (job, task), outcome in zip(tasks, outcomes, strict=True):
        done[job][task.key] = outcome
        try:
            if job == "tuning":
                apply_tuning(ctl, task.key, now_s, outcome)
            elif outcome.ok:
                apply_backtest(ctl, task.key, now_s, outcome)
        except Exception as exc:  # recording failed (the store): this model's job failed, the rest go on
            done[job][task.key] = Outcome(task.key, error=f"recording: {type(exc).__name__}: {exc}")
    return done


def _raise(message: str) -> None:
    raise RuntimeError(message)
