"""`prewarm tune`: each model's operating point for its SLO target, chosen on its recent history."""

from __future__ import annotations

import json
from typing import Annotated

from rich.table import Table

from backtest.batch import ReplayOptions, tune_each
from backtest.tuning import TuningResult, check_target
from service.cli import options as opt
from service.cli.common import duration_s, guarded, iso, out, progress_bar, shows_progress, split_series
from service.cli.inputs import load_series


@guarded()
def tune(
    trace: opt.TraceArg = None,
    series: Annotated[list[str] | None, opt.series_opt("tune")] = None,
    slo_target: opt.TuneTargetOpt = None,
    slo_wait: opt.TuneSloWaitOpt = None,
    tune_window: opt.TuneWindowOpt = "7d",
    capacity_rps: opt.CapacityOpt = None,
    t_load: opt.TLoadOpt = None,
    tick: opt.TickOpt = "30s",
    min_replicas: opt.MinReplicasOpt = None,
    max_replicas: opt.MaxReplicasOpt = None,
    model: opt.TuneModelOpt = "auto-fast",
    as_json: opt.JsonOpt = False,
    demo: opt.DemoOpt = False,
    prometheus: opt.PrometheusOpt = None,
    query: opt.QueryOpt = None,
    config: opt.TuneConfigOpt = None,
    days: opt.DaysOpt = 14.0,
    step: opt.StepOpt = "1m",
    bearer_token: opt.BearerOpt = None,
) -> None:
    """Choose each model's operating point (its late-request budget, or a warm pool) for an SLO target.

    Every setting is replayed on the trailing --tune-window (one forecasting pass shared by all of them);
    the path is walked from the most protective setting and the last that met the target with a margin
    (one standard error of the daily rates) before the first that failed runs; a warm pool tuned the same
    way on the same history shows what it saves. The service's nightly job runs the same tuning.
    """
    opts = ReplayOptions(
        tune_window_s=duration_s(tune_window, "--tune-window"),
        slo_targets=() if slo_target is None else (check_target(slo_target, "--slo-target"),),
        slo_wait_s=None if slo_wait is None else duration_s(slo_wait, "--slo-wait"),
        capacity_rps=capacity_rps,
        t_load_s=None if t_load is None else duration_s(t_load, "--t-load"),
        tick_s=int(duration_s(tick, "--tick")),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        model=model,
    )
    names = split_series(series)
    chosen, label, settings = load_series(
        trace, demo, names, prometheus, query, config, None, None, days, step, bearer_token
    )
    bar = progress_bar("tuning", shows_progress(as_json))
    results = tune_each(chosen, opts, settings=settings, progress=bar)
    if as_json:
        print(json.dumps({"series": {r.series: r.as_dict() for r in results}}, indent=2))
        return
    for r in results:
        _print(r)
    out.print(f"source: {label}", highlight=False)


def _print(r: TuningResult) -> None:
    doc = r.as_dict()
    sel = r.selections["predictive"]
    table = Table(
        title=f"{r.series}: {r.target:g} of requests within {r.slo_wait_s:g}s, tuned on "
        f"{iso(r.start_s)} .. {iso(r.end_s)}"
    )
    for col in ("candidate", "violation rate", "+1 s.e.", "replica-h", "met", ""):
        table.add_column(col, justify="left" if col in ("candidate", "") else "right")
    for sc in sorted(sel.scores, key=lambda x: x.replica_hours):
        table.add_row(
            sc.candidate.setting,
            f"{sc.violation_rate:.5f}",
            f"{sc.upper:.5f}",
            f"{sc.replica_hours:,.1f}",
            "yes" if sc.met else "no",
            "<- chosen" if sc is sel.chosen else "",
        )
    out.print(table)
    out.print(f"  rule: {doc['rule']}", highlight=False)
    out.print(f"  chosen: {doc['chosen']['setting']}: {doc['why']}", highlight=False)
    pool = doc["warm_pool"]
    if pool["setting"] is not None:
        out.print(
            f"  warm pool tuned the same way: {pool['setting']} (met: {pool['met']}), "
            f"{pool['replica_hours_per_day']} replica-h/day against prewarm's "
            f"{doc['replica_hours_per_day']}: "
            f"ratio {doc['hours_ratio_vs_warm_pool']}, saving {doc['saving_vs_warm_pool']}",
            highlight=False,
        )
