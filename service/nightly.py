"""The nightly jobs, recorded: the backtest of each model (replay its recent days through the same
forecaster + planner against the baselines, store the result, and demote a model whose forecast lost: the
self-check), and the tuning of each model that has an SLO target (the operating point applied from the
next tick; a failed run is recorded and the previous point kept).

The work itself is backtest/tasks.py's `night_model`, one task per model fanned out through the compute
port (compute/). Both jobs of a model read one ledger of whole days already replayed (the store's
replay_days, backtest/ledger.py), so a night replays only the day that is new. This module builds each
model's task from its live state and the ledger, and applies each outcome. One model's failure is
recorded for that model and never stops the others."""

from __future__ import annotations

from typing import Any

from backtest.ledger import fingerprint
from backtest.run import BacktestConfig
from backtest.tasks import NightSpec, night_model
from backtest.tuning import OperatingPoint, TuningGrid
from compute.base import Compute, Outcome, Task
from compute.local import LocalCompute
from forecaster.types import SECONDS_PER_DAY
from service.runtime import TRAILING_S, Controller, ModelRuntime

SERIAL = LocalCompute(workers=1)
JOBS = ("backtest", "tuning")


def _config(ctl: Controller, r: ModelRuntime) -> BacktestConfig:
    """The replay of a live model: its learned T_load, its SLO, rails, forecaster and refresh cadence."""
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
    )


def night_task(
    ctl: Controller,
    name: str,
    now_s: float,
    *,
    backtest_days: float | None,
    tune: bool = True,
    grid: TuningGrid | None = None,
) -> Task | None:
    """One model's night as a task: its backtest (unless `backtest_days` is None) and, with an SLO target
    and `tune`, its tuning run, with the ledger's known days (None: nothing to run)."""
    r = ctl.models[name]
    target = r.spec.slo_target if tune else None
    if backtest_days is None and target is None:
        return None
    spec = NightSpec(
        # the operating point in force, tuned or configured, is what the backtest judges
        point=OperatingPoint(
            r.spec.quantile if r.spec.use_forecast else None,
            r.spec.burst_reserve_replicas,
            r.spec.burst_reserve_share,
        ),
        backtest_days=backtest_days,
        target=target,
        tune_days=max(1, round(r.tune_window_s / SECONDS_PER_DAY)),
        grid=grid,
    )
    days = max(backtest_days or 0.0, spec.tune_days)
    hist = r.history(now_s).tail(days * SECONDS_PER_DAY + TRAILING_S)  # the days and the forecaster's history
    cfg = _config(ctl, r)
    known = ctl.store.replay_days(name, fingerprint(cfg, spec.levels()), now_s - (days + 1) * SECONDS_PER_DAY)
    return Task(name, night_model, (hist, cfg, spec, known))


def apply_night(
    ctl: Controller, name: str, now_s: float, outcome: Outcome, jobs: tuple[str, ...]
) -> dict[str, Outcome]:
    """Record one model's night: the ledger's new days, the backtest (and its self-check) and the tuning
    run (applied from the next tick). Returns each job's outcome; a failed job is recorded, never raised."""
    if not outcome.ok:
        failed = {job: Outcome(name, error=outcome.error, attempts=outcome.attempts) for job in jobs}
        if "tuning" in jobs:
            _record_tuning(ctl, name, now_s, None, outcome.error)
        return failed
    doc: dict[str, Any] = outcome.value
    done: dict[str, Outcome] = {}
    try:
        keep = now_s - 30 * SECONDS_PER_DAY
        ctl.store.put_replay_days(name, doc["fingerprint"], doc["replayed"], keep)
    except Exception as exc:  # the ledger is a cache: a night that cannot keep its days still counts
        if doc.get("backtest"):
            doc["backtest"]["notes"].append(f"the ledger could not be stored: {type(exc).__name__}: {exc}")
    for job in jobs:
        error = doc.get(f"{job}_error")
        try:
            if job == "tuning":  # a failed run is recorded too: the previous point is kept and says why
                _record_tuning(ctl, name, now_s, doc["tuning"], error)
            elif not error:
                _record_backtest(ctl, name, now_s, doc["backtest"])
            done[job] = Outcome(name, error=error) if error else Outcome(name, value=doc[job])
        except Exception as exc:  # recording failed (the store): this model's job failed, the rest go on
            done[job] = Outcome(name, error=f"recording: {type(exc).__name__}: {exc}")
    return done


def _record_tuning(
    ctl: Controller, name: str, now_s: float, doc: dict[str, Any] | None, error: str | None
) -> None:
    """Record a tuning run and run at its point from the next tick; a failure keeps the previous point."""
    r = ctl.models[name]
    if doc is None:
        r.tuning_error = error or "the tuning run failed"
        kept = r.tuning["chosen"]["setting"] if r.tuning else "the configured operating point"
        ctl.store.put_tuning(
            name, now_s, False, {"target": r.spec.slo_target, "error": r.tuning_error, "kept": kept}
        )
        return
    ctl.store.put_tuning(name, now_s, True, doc)
    r.apply_tuning({**doc, "at_s": now_s})


def _record_backtest(ctl: Controller, name: str, now_s: float, doc: dict[str, Any]) -> None:
    """Store a backtest result and run the self-check on it (a model whose forecast lost is demoted to
    its reactive floor until a later night says otherwise)."""
    r = ctl.models[name]
    result = dict(doc)
    reasons = result.pop("lost_because")
    r.backtest_note = ("nightly backtest: " + "; ".join(reasons)) if reasons else ""
    ctl.self_check(r)
    ctl.store.put_backtest(name, now_s, result)


# -- the night, fanned out -------------------------------------------------------------------------------


def run_night(
    ctl: Controller,
    compute: Compute,
    now_s: float,
    *,
    backtest_days: float | None,
    grid: TuningGrid | None = None,
    tune: bool = True,
) -> dict[str, dict[str, Outcome]]:
    """Every model's night (backtest, and tuning where it has a target) fanned out on `compute` as one
    batch, then recorded model by model. Returns the outcomes by job and model; failures are recorded,
    never raised."""
    tasks: list[tuple[tuple[str, ...], Task]] = []
    done: dict[str, dict[str, Outcome]] = {job: {} for job in JOBS}
    for name in ctl.acting_names():  # another replica's shards' nights run there
        jobs = tuple(
            j
            for j, on in (
                ("backtest", backtest_days is not None),
                ("tuning", tune and ctl.models[name].spec.slo_target is not None),
            )
            if on
        )
        if not jobs:
            continue
        try:
            task = night_task(ctl, name, now_s, backtest_days=backtest_days, tune=tune, grid=grid)
        except Exception as exc:  # the history could not be read: that model's jobs fail alone
            task = Task(name, _raise, (f"{type(exc).__name__}: {exc}",))
        if task is not None:
            tasks.append((jobs, task))
    outcomes = compute.map([t for _, t in tasks])
    for (jobs, task), outcome in zip(tasks, outcomes, strict=True):
        for job, o in apply_night(ctl, task.key, now_s, outcome, jobs).items():
            done[job][task.key] = o
    return done


def nightly_backtest(ctl: Controller, name: str, now_s: float, days: float) -> dict[str, Any]:
    """Backtest one model in this process and record it; a failure raises with its error."""
    outcome = _one(ctl, name, now_s, "backtest", backtest_days=days)
    return dict(outcome.value)


def nightly_tune(
    ctl: Controller, name: str, now_s: float, grid: TuningGrid | None = None
) -> dict[str, Any] | None:
    """Tune one model in this process (None: no target set); on failure the run is recorded, the previous
    point kept, and it raises."""
    if ctl.models[name].spec.slo_target is None:
        return None
    return dict(_one(ctl, name, now_s, "tuning", backtest_days=None, grid=grid).value)


def _one(
    ctl: Controller,
    name: str,
    now_s: float,
    job: str,
    *,
    backtest_days: float | None,
    grid: TuningGrid | None = None,
) -> Outcome:
    try:
        task = night_task(ctl, name, now_s, backtest_days=backtest_days, tune=job == "tuning", grid=grid)
    except Exception as exc:  # the history could not be read: recorded as a failed run, and raised
        apply_night(ctl, name, now_s, Outcome(name, error=f"{type(exc).__name__}: {exc}"), (job,))
        raise
    assert task is not None
    outcome = apply_night(ctl, name, now_s, SERIAL.map([task])[0], (job,))[job]
    if not outcome.ok:
        raise RuntimeError(f"{job} {name} failed after {outcome.attempts} attempt(s): {outcome.error}")
    return outcome


def _raise(message: str) -> None:
    raise RuntimeError(message)
