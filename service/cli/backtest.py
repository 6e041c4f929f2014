"""`prewarm backtest`: every policy replayed on simulated replicas with cold starts, each series alone (and
walked forward at an SLO target) or all of them as one fleet on GPU budgets; backtest.batch runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from backtest.batch import BacktestFailed, ReplayOptions, replay_each, replay_fleet
from backtest.long_tail import long_tail
from backtest.run import DEFAULT_UTILIZATION, sweep_alphas, sweep_pools
from backtest.tuning import check_target
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from service.cli import options as opt
from service.cli.backtest_output import print_fleet, print_runs
from service.cli.common import (
    UsageError,
    compute_for,
    duration_s,
    guarded,
    parse_at,
    progress_bar,
    shows_progress,
    split_series,
)
from service.cli.inputs import fleet_series, load_series


@guarded(BacktestFailed)
def backtest(
    traces: opt.BtTracesArg = None,
    series: Annotated[list[str] | None, opt.series_opt("replay")] = None,
    capacity_rps: opt.CapacityOpt = None,
    t_load: opt.TLoadOpt = None,
    t_load_sigma: opt.BtSigmaOpt = 0.0,
    slo_wait: opt.BtSloWaitOpt = None,
    tick: opt.TickOpt = "30s",
    min_replicas: opt.MinReplicasOpt = None,
    max_replicas: opt.MaxReplicasOpt = None,
    policies: opt.BtPoliciesOpt = opt.ALL_POLICIES,
    warm_pool: opt.BtWarmPoolOpt = None,
    sweep_warm_pool: opt.BtSweepPoolOpt = None,
    alpha: opt.BtAlphaOpt = None,
    sweep_alpha: opt.BtSweepAlphaOpt = None,
    warmup: opt.BtWarmupOpt = "2d",
    slo_target: opt.BtTargetOpt = None,
    tune_window: opt.BtWindowOpt = "7d",
    start: opt.BtStartOpt = None,
    end: opt.BtEndOpt = None,
    model: opt.BtModelOpt = "auto-fast",
    seed: opt.BtSeedOpt = 0,
    as_json: opt.JsonOpt = False,
    report: opt.BtReportOpt = None,
    demo: opt.DemoOpt = False,
    prometheus: opt.PrometheusOpt = None,
    query: opt.QueryOpt = None,
    config: opt.BtConfigOpt = None,
    days: opt.DaysOpt = 14.0,
    step: opt.StepOpt = "1m",
    bearer_token: opt.BearerOpt = None,
    fleet_budget: opt.BtBudgetOpt = None,
    align_week: opt.BtAlignOpt = False,
    backend: opt.BackendOpt = None,
    workers: opt.WorkersOpt = None,
    ray_address: opt.RayAddressOpt = None,
    long_tail: opt.BtLongTailOpt = False,
) -> None:
    """Replay traffic through every policy on simulated replicas with cold starts, and compare.

    With --prometheus, the history comes from Prometheus (--query for one model, or --config for all the
    models of a config file); --start/--end (or --days back from now) then say which range to load, and the
    first --warmup of it is used only to fit, exactly as with a trace.
    """
    pol, pools, alphas = _sweeps(policies, warm_pool, sweep_warm_pool, alpha, sweep_alpha, fleet_budget)
    opts = ReplayOptions(
        capacity_rps=capacity_rps,
        t_load_s=None if t_load is None else duration_s(t_load, "--t-load"),
        t_load_sigma=t_load_sigma,
        slo_wait_s=None if slo_wait is None else duration_s(slo_wait, "--slo-wait"),
        tick_s=int(duration_s(tick, "--tick")),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        warmup_s=duration_s(warmup, "--warmup", zero=True),
        start_s=parse_at(start) if start else None,
        end_s=parse_at(end) if end else None,
        warm_pools=pools,
        policies=pol,
        model=model,
        alpha=alpha,
        alpha_sweep=alphas,
        seed=seed,
        slo_targets=_targets(slo_target),
        tune_window_s=duration_s(tune_window, "--tune-window"),
    )
    names = split_series(series)
    if fleet_budget is not None:
        loaded, renamed = fleet_series(traces or [], names)
        fleet = replay_fleet(loaded, opts, fleet_budget, align=align_week, report=report, notes=renamed)
        print_fleet(fleet, as_json)
        return
    trace = _one_trace(traces, align_week)
    chosen, label, settings = load_series(
        trace, demo, names, prometheus, query, config, start, end, days, step, bearer_token, long_tail
    )
    chosen, label = _long_tail(chosen, label, opts) if long_tail else (chosen, label)
    with compute_for(backend, workers, ray_address) as compute:
        bar = progress_bar("backtesting", shows_progress(as_json) and compute is None)
        runs = replay_each(chosen, opts, settings=settings, compute=compute, progress=bar, report=report)
    print_runs(runs, as_json, report, label)


def _long_tail(
    chosen: list[TrafficSeries], label: str, opts: ReplayOptions
) -> tuple[list[TrafficSeries], str]:
    """The series of the long tail (backtest/long_tail.py), judged on the range replayed."""
    if opts.capacity_rps is None:
        raise UsageError("--long-tail needs --capacity-rps: the rule counts replicas at that capacity")
    ranged = [
        s.slice(
            s.index_at(opts.start_s) if opts.start_s is not None else 0,
            s.index_at(opts.end_s) if opts.end_s is not None else len(s),
        )
        for s in chosen
    ]
    need_s = opts.warmup_s + (opts.tune_window_s + SECONDS_PER_DAY if opts.slo_targets else SECONDS_PER_DAY)
    tail, note = long_tail(ranged, opts.capacity_rps, DEFAULT_UTILIZATION, need_s)
    if not tail:
        raise UsageError(f"--long-tail: no series qualifies ({note})")
    keep = {s.name for s in tail}
    return [s for s in chosen if s.name in keep], f"{label}; {note}"


def _targets(text: str | None) -> tuple[float, ...]:
    """`0.95,0.99,0.999` -> the SLO targets of the walk-forward, each checked, in the order given."""
    if text is None:
        return ()
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--slo-target {text!r}: expected shares such as 0.99 or 0.95,0.99,0.999") from None
    if not values or len(values) > 12:
        raise UsageError(f"--slo-target {text!r}: expected 1 to 12 targets")
    return tuple(dict.fromkeys(check_target(v, "--slo-target") for v in values))


def _sweeps(
    policies: str,
    warm_pool: int | None,
    sweep_warm_pool: str | None,
    alpha: float | None,
    sweep_alpha: str | None,
    fleet_budget: str | None,
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[float, ...]]:
    """The policies, the static pool sizes and the alphas of the predictive sweep, each checked against the
    others: a flag that would change nothing is refused with the reason, never silently ignored."""
    pools: tuple[int, ...] = (2,)
    if sweep_warm_pool is not None:
        if warm_pool is not None:
            raise UsageError("give --warm-pool or --sweep-warm-pool, not both")
        pools = sweep_pools(sweep_warm_pool)
    elif warm_pool is not None:
        pools = (warm_pool,)
    pol = tuple(p.strip() for p in policies.split(",") if p.strip())
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha {alpha:g} is out of range; allowed (0, 1)")
    alphas = sweep_alphas(sweep_alpha) if sweep_alpha is not None else ()
    if alphas and "predictive" not in pol:
        raise UsageError("--sweep-alpha runs the predictive policy: add it to --policies")
    # the pools are the static policy's (a fleet's static lane runs whatever --policies says)
    if (
        fleet_budget is None
        and "static" not in pol
        and (warm_pool is not None or sweep_warm_pool is not None)
    ):
        flag = "--warm-pool" if warm_pool is not None else "--sweep-warm-pool"
        raise UsageError(f"{flag} sizes the static policy's warm pool: add static to --policies")
    return pol, pools, alphas


def _one_trace(traces: list[Path] | None, align: bool) -> Path | None:
    """The one trace a replay of each series on its own reads (several are replayed only as a fleet)."""
    if align:
        raise UsageError("--align-week needs --fleet-budget")
    if traces and len(traces) > 1:
        raise UsageError("several TRACEs are replayed together only as a fleet: add --fleet-budget")
    return traces[0] if traces else None
