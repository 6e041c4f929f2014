"""The nightly jobs: the backtest (replay each model's recent history through the same forecaster + planner
against the baselines, store the result, and demote a model whose forecast lost: the self-check), and the
tuning of each model that has an SLO target (backtest/tuning.py: the operating point applied from the next
tick; a failed run is recorded and the previous point kept)."""

from __future__ import annotations

from typing import Any

from backtest.run import BacktestConfig, compare, run_backtest
from backtest.tuning import TuningGrid, tune
from forecaster.types import SECONDS_PER_DAY
from service.runtime import TRAILING_S, Controller, ModelRuntime

POOLS = (0, 1, 2, 3, 4, 6, 8)


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


def nightly_tune(
    ctl: Controller, name: str, now_s: float, grid: TuningGrid | None = None
) -> dict[str, Any] | None:
    """Tune one model's operating point for its SLO target on its trailing window (None: no target set).
    Applied from the next tick; on failure the run is recorded, the previous point kept, and it raises."""
    r = ctl.models[name]
    target = r.spec.slo_target
    if target is None:
        return None
    try:
        hist = r.history(now_s).tail(r.tune_window_s + TRAILING_S)  # the window and the forecaster's history
        result = tune(hist, _config(ctl, r), target, window_s=r.tune_window_s, grid=grid)
    except Exception as exc:
        r.tuning_error = f"{type(exc).__name__}: {exc}"
        kept = r.tuning["chosen"]["setting"] if r.tuning else "the configured operating point"
        ctl.store.put_tuning(name, now_s, False, {"target": target, "error": r.tuning_error, "kept": kept})
        raise
    doc = result.as_dict()
    ctl.store.put_tuning(name, now_s, True, doc)
    r.apply_tuning({**doc, "at_s": now_s})
    return doc


def nightly_backtest(ctl: Controller, name: str, now_s: float, days: float) -> dict[str, Any]:
    r = ctl.models[name]
    hist = r.history(now_s).tail(days * SECONDS_PER_DAY)
    cfg = _config(
        ctl,
        r,
        warm_pools=POOLS,
        policies=("reactive", "static", "predictive", "oracle"),
        alpha=r.spec.quantile,  # the operating point in force, tuned or configured
        burst_reserve_replicas=r.spec.burst_reserve_replicas,
        burst_reserve_share=r.spec.burst_reserve_share,
        use_forecast=r.spec.use_forecast,
    )
    bt = run_backtest(hist, cfg)
    cmp = compare(bt.results)
    pred, react = bt.results["predictive"], bt.results["reactive"]
    reasons = []
    if pred.slo_violation_rate > react.slo_violation_rate:
        reasons.append(
            f"predictive violated the SLO for {pred.slo_violation_rate:.2%} of requests, reactive for "
            f"{react.slo_violation_rate:.2%}"
        )
    if cmp.hours_ratio_vs_static is not None and cmp.hours_ratio_vs_static > 1.0:
        reasons.append(
            f"predictive used {cmp.hours_ratio_vs_static:.2f}x the replica-hours of reactive + a warm pool "
            "at the same violation rate"
        )
    r.backtest_note = ("nightly backtest: " + "; ".join(reasons)) if reasons else ""
    ctl.self_check(r)
    result = {
        "days": round(hist.span_s / SECONDS_PER_DAY, 3),
        "policies": bt.as_dict(),
        "comparison": cmp.as_dict(),
        "predictive_lost": bool(reasons),
        "notes": bt.notes,
    }
    ctl.store.put_backtest(name, now_s, result)
    return result
