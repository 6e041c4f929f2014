"""The nightly backtest: replay each model's recent history through the same forecaster + planner against
the baselines, store the result, and demote a model whose forecast lost (the self-check)."""

from __future__ import annotations

from typing import Any

from backtest.run import BacktestConfig, compare, run_backtest
from forecaster.types import SECONDS_PER_DAY
from service.runtime import Controller

POOLS = (0, 1, 2, 3, 4, 6, 8)


def nightly_backtest(ctl: Controller, name: str, now_s: float, days: float) -> dict[str, Any]:
    r = ctl.models[name]
    hist = r.history(now_s).tail(days * SECONDS_PER_DAY)
    t_load_s, _ = r.t_load()
    cfg = BacktestConfig(
        capacity_rps=r.spec.capacity_rps_per_replica,
        t_load_s=t_load_s,
        slo_wait_s=r.spec.slo_wait_s,
        tick_s=max(1, round(r.spec.tick_s)),
        min_replicas=r.spec.min_replicas,
        max_replicas=r.spec.max_replicas,
        warm_pools=POOLS,
        policies=("reactive", "static", "predictive", "oracle"),
        model=r.forecaster,
        alpha=r.spec.quantile,
        refresh_s=ctl.refit_every_s,
        dropout_min_count=r.dropouts.min_count,
        dropout_max_s=r.dropouts.max_s,
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
