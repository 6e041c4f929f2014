"""The `prewarm` command line.

Every failure a user can cause (a bad trace, an unknown series, a bad duration) ends in one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compute.base import Compute
from forecaster.durations import parse_duration_s
from forecaster.models import ModelError
from forecaster.sources.base import SourceError, TrafficSource
from forecaster.sources.synthetic import SyntheticSource
from forecaster.sources.trace import read_trace, write_trace
from forecaster.types import Forecast, TrafficSeries, quantile_key, to_datetime, validate_quantile_levels

app = typer.Typer(
    name="prewarm",
    help="Predictive pre-warming autoscaler for ML model serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

DEMO_HELP = "Use the built-in synthetic fleet (the default when no TRACE is given)."
MAX_SERIES_WITHOUT_FLAG = 10


CapacityOpt = Annotated[
    float | None,
    typer.Option(
        "--capacity-rps", help="Requests/s one replica serves. Default: the 99.9th-percentile rate / 15."
    ),
]
TLoadOpt = Annotated[
    str | None,
    typer.Option("--t-load", help="Cold start: asked -> ready, e.g. 5m. [default: 5m, or the config's]"),
]
PrometheusOpt = Annotated[
    str | None, typer.Option("--prometheus", help="Read history from this Prometheus URL instead of a trace.")
]
QueryOpt = Annotated[
    str | None, typer.Option("--query", help="PromQL request rate (req/s) of the one --series.")
]
DaysOpt = Annotated[
    float, typer.Option("--days", min=0.01, max=400.0, help="With --prometheus: days of history to load.")
]
StepOpt = Annotated[str, typer.Option("--step", help="With --prometheus --query: query step.")]
BearerOpt = Annotated[
    str | None,
    typer.Option("--bearer-token", envvar="PREWARM_PROMETHEUS_TOKEN", help="Prometheus bearer token."),
]

BackendOpt = Annotated[
    str | None,
    typer.Option("--backend", help="Where per-model work runs: local (process pool) or ray. [config/local]"),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", min=1, max=1024, help="Local worker processes. [backtest: 1; serve: cores]"),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="Ray cluster to run on (host:port, ray://..., auto: RAY_ADDRESS); implies ray."
    ),
]


class UsageError(Exception):
    pass


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _open_source(trace: Path | None, demo: bool, only: set[str] | None) -> tuple[TrafficSource, str]:
    if trace is None or demo:
        if trace is not None:
            raise UsageError("give either a TRACE or --demo, not both")
        return SyntheticSource(), "built-in synthetic fleet (seed 0)"
    return read_trace(trace, only=only), str(trace)


def _pick_series(source: TrafficSource, series: list[str] | None) -> list[TrafficSeries]:
    if series:
        return [source.load(s) for s in series]
    names = source.names()
    if len(names) > MAX_SERIES_WITHOUT_FLAG:
        raise UsageError(
            f"the trace has {len(names)} series; pick some with --series (e.g. --series {names[0]})"
        )
    return [source.load(n) for n in names]


def _split_series(series: list[str] | None) -> list[str] | None:
    if not series:
        return None
    return [s.strip() for item in series for s in item.split(",") if s.strip()]


def _parse_levels(text: str) -> tuple[float, ...]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(
            f"--quantiles {text!r}: expected comma-separated numbers such as 0.5,0.9,0.99"
        ) from None
    try:
        return validate_quantile_levels(values)
    except ValueError as exc:
        raise UsageError(f"--quantiles: {exc}") from None


def _parse_at(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r} is not an ISO-8601 time such as 2024-05-01T12:00:00Z") from None
    if dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _iso(epoch_s: float) -> str:
    return to_datetime(epoch_s).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _progress(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for work that takes more than a moment (hidden when not a terminal)."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _guard(fn: Callable[[], None]) -> None:
    try:
        fn()
    except (SourceError, ModelError, UsageError, ValueError) as exc:
        _fail(str(exc))


def report_notes(report: dict[str, Any]) -> list[str]:
    notes = report.get("notes", [])
    return [str(n) for n in notes] if isinstance(notes, list) else []


def _forecast_json(series: TrafficSeries, fc: Forecast, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "series": series.name,
        "model": fc.model,
        "step_s": fc.step_s,
        "origin": _iso(fc.origin_s),
        "points": [
            {
                "timestamp": _iso(float(t)),
                "mean": round(float(fc.mean[i]), 4),
                "quantiles": {quantile_key(q): round(float(fc.quantiles[q][i]), 4) for q in fc.levels},
            }
            for i, t in enumerate(fc.times_s())
        ],
        "report": report,
        "notes": list(fc.notes),
    }


@app.command()
def forecast(
    trace: Annotated[
        Path | None, typer.Argument(help="CSV or CSV.gz trace (timestamp,series,requests).")
    ] = None,
    series: Annotated[
        list[str] | None,
        typer.Option("--series", "-s", help="Series to forecast (repeat or comma-separate)."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="Forecast origin (ISO-8601); only data before it is used. Default: end of the trace."
        ),
    ] = None,
    horizon: Annotated[str, typer.Option(help="How far ahead, e.g. 30m, 2h.")] = "2h",
    quantiles: Annotated[str, typer.Option(help="Quantile levels, comma-separated.")] = "0.5,0.9,0.99",
    model: Annotated[
        str, typer.Option(help="auto, auto-fast, or a model alias (see `prewarm models`).")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
) -> None:
    """Forecast requests per step, with calibrated quantiles, from the end of a trace (or --at)."""

    def run() -> None:
        from forecaster.selection import make_forecaster

        horizon_s = parse_duration_s(horizon, what="--horizon")
        levels = _parse_levels(quantiles)
        names = _split_series(series)
        source, label = _open_source(trace, demo, set(names) if names else None)
        chosen = _pick_series(source, names)
        results = []
        for s in chosen:
            origin = _parse_at(at) if at else s.end_s
            if not s.start_s < origin <= s.end_s + s.step_s:
                raise UsageError(f"--at {at} is outside {s.name!r} ({_iso(s.start_s)} .. {_iso(s.end_s)})")
            history = s.before(origin)
            if len(history) < 2:
                raise UsageError(f"{s.name!r} has fewer than two steps before {_iso(origin)}")
            h = max(1, math.ceil(horizon_s / s.step_s))
            total = 0
            if model.startswith("auto"):
                from forecaster.selection import DEFAULT_CANDIDATES, FAST_CANDIDATES, AutoModel

                n_c = len(FAST_CANDIDATES if model == "auto-fast" else DEFAULT_CANDIDATES)
                total = n_c * AutoModel(horizon_s=horizon_s).cv_origins(history).size
            with _progress(f"fitting {s.name}", total, sys.stderr.isatty() and not as_json) as tick:
                m = make_forecaster(model, horizon_s, progress=tick)().fit(history)
            fc = m.predict(h, levels)
            rep = m.report.as_dict()
            sel = getattr(m, "selection", None)
            if sel is not None:
                rep["selection"] = sel.as_dict()
            results.append((s, fc, rep))
        if as_json:
            docs = [_forecast_json(s, fc, rep) for s, fc, rep in results]
            print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
            return
        for s, fc, rep in results:
            table = Table(
                title=f"{s.name}: {fc.model}, requests per {fc.step_s} s step from {_iso(fc.origin_s)}"
            )
            table.add_column("timestamp")
            table.add_column("mean", justify="right")
            for q in fc.levels:
                table.add_column(f"q{quantile_key(q)}", justify="right")
            stride = max(1, fc.horizon // 24)
            for i in range(0, fc.horizon, stride):
                t = float(fc.times_s()[i])
                table.add_row(_iso(t), f"{fc.mean[i]:.1f}", *[f"{fc.quantiles[q][i]:.1f}" for q in fc.levels])
            out.print(table)
            if stride > 1:
                out.print(f"(every {stride}th of {fc.horizon} steps shown; --json for all)")
            for note in report_notes(rep):
                out.print(f"  - {note}", highlight=False)
        out.print(f"source: {label}", highlight=False)

    _guard(run)


@app.command()
def evaluate(
    trace: Annotated[Path | None, typer.Argument(help="CSV or CSV.gz trace.")] = None,
    series: Annotated[
        list[str] | None,
        typer.Option("--series", "-s", help="Series to evaluate (repeat or comma-separate)."),
    ] = None,
    horizon: Annotated[str, typer.Option(help="Forecast horizon of each window, e.g. 1h.")] = "1h",
    windows: Annotated[
        int, typer.Option(min=1, max=10_000, help="Number of evaluation windows (the most recent).")
    ] = 48,
    models: Annotated[
        str, typer.Option(help="Candidate models, comma-separated (auto chooses among them).")
    ] = "profile,holt_winters,mstl,prophet,seasonal_naive_daily,seasonal_naive_weekly",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
) -> None:
    """Rolling-origin evaluation of every model and of `auto` (MASE, sMAPE, pinball loss, coverage)."""

    def run() -> None:
        from forecaster.models import MODELS
        from forecaster.rolling_evaluation import evaluate_series, evaluation_cost
        from forecaster.selection import SCORE_LEVELS

        horizon_s = parse_duration_s(horizon, what="--horizon")
        cands = [c.strip() for c in models.split(",") if c.strip()]
        unknown = [c for c in cands if c not in MODELS]
        if unknown or not cands:
            raise UsageError(
                f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}"
            )
        names = _split_series(series)
        source, label = _open_source(trace, demo, set(names) if names else None)
        chosen = _pick_series(source, names)
        total = sum(
            evaluation_cost(s, horizon_s=horizon_s, n_windows=windows, candidates=cands) for s in chosen
        )
        results = {}
        with _progress("evaluating", total, sys.stderr.isatty() and not as_json) as tick:
            for s in chosen:
                results[s.name] = evaluate_series(
                    s, horizon_s=horizon_s, n_windows=windows, candidates=cands, progress=tick
                )
        if as_json:
            print(json.dumps({"series": {k: v.as_dict() for k, v in results.items()}}, indent=2))
            return
        for name, ev in results.items():
            table = Table(
                title=f"{name}: {ev.windows} windows of {ev.horizon} x {ev.step_s} s; auto chose {ev.chosen}"
            )
            for col in (
                "model",
                "MASE",
                "sMAPE",
                "pinball",
                *[f"cov {quantile_key(q)}" for q in SCORE_LEVELS],
            ):
                table.add_column(col, justify="right" if col != "model" else "left")
            for alias, sc in sorted(ev.models.items(), key=lambda kv: (kv[0] != "auto", kv[1].mase)):
                table.add_row(
                    alias,
                    f"{sc.mase:.3f}",
                    f"{sc.smape:.3f}",
                    f"{sc.pinball:.4f}",
                    *[f"{sc.coverage.get(q, float('nan')):.3f}" for q in SCORE_LEVELS],
                )
            out.print(table)
            auto = ev.models.get("auto")
            if auto is not None and auto.coverage_by_horizon:
                cells = ", ".join(
                    f"{span} {c.get(0.9, float('nan')):.2f}" for span, c in auto.coverage_by_horizon.items()
                )
                out.print(f"  auto's p90 coverage by horizon: {cells}", highlight=False)
            for note in ev.notes:
                out.print(f"  - {note}", highlight=False)
        out.print(f"source: {label}", highlight=False)

    _guard(run)


@app.command()
def backtest(
    traces: Annotated[
        list[Path] | None,
        typer.Argument(help="CSV or CSV.gz trace (several with --fleet-budget).", show_default=False),
    ] = None,
    series: Annotated[
        list[str] | None, typer.Option("--series", "-s", help="Series to replay (repeat or comma-separate).")
    ] = None,
    capacity_rps: CapacityOpt = None,
    t_load: TLoadOpt = None,
    t_load_sigma: Annotated[
        float,
        typer.Option(
            "--t-load-sigma",
            min=0.0,
            max=3.0,
            help="Draw each cold start from a lognormal with median --t-load and this log sigma (0: fixed).",
        ),
    ] = 0.0,
    slo_wait: Annotated[
        str, typer.Option("--slo-wait", help="Longest acceptable queueing wait, e.g. 2s.")
    ] = "2s",
    tick: Annotated[str, typer.Option(help="Control interval, e.g. 30s.")] = "30s",
    min_replicas: Annotated[int, typer.Option("--min-replicas", min=0)] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas", min=1)] = 10_000,
    policies: Annotated[
        str, typer.Option(help="Comma-separated: reactive,static,scheduled,predictive,oracle.")
    ] = ("reactive,static,scheduled,predictive,oracle"),
    warm_pool: Annotated[
        int | None, typer.Option("--warm-pool", min=0, help="Spare replicas of the static pool.")
    ] = None,
    sweep_warm_pool: Annotated[
        str | None, typer.Option("--sweep-warm-pool", help="Static pool sizes to sweep, e.g. 0..8 or 0,2,4.")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            "--alpha",
            help="Forecast quantile the predictive planner provisions for. [default: 0.9, from costs 9:1]",
        ),
    ] = None,
    sweep_alpha: Annotated[
        str | None,
        typer.Option(
            "--sweep-alpha",
            help="Also run predictive at each of these alphas (predictive-alpha<A>), e.g. 0.8,0.9,0.95.",
        ),
    ] = None,
    warmup: Annotated[str, typer.Option(help="History used only to fit, scored for no policy.")] = "2d",
    slo_target: Annotated[
        float | None,
        typer.Option(
            "--slo-target",
            help="Also walk forward at this SLO target (share of requests within --slo-wait, e.g. 0.99): "
            "static, reactive and predictive each tune their knob on the trailing --tune-window and are "
            "scored on the next day, day after day.",
        ),
    ] = None,
    tune_window: Annotated[
        str, typer.Option("--tune-window", help="With --slo-target: days each day's choice is tuned on.")
    ] = "7d",
    start: Annotated[
        str | None, typer.Option(help="Replay from this time (ISO-8601); history before it is kept.")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Replay until this time (ISO-8601).")] = None,
    model: Annotated[
        str, typer.Option(help="Forecaster of the predictive policy (auto, auto-fast, or an alias).")
    ] = ("auto-fast"),
    seed: Annotated[int, typer.Option(help="Seed for spreading arrivals within trace intervals.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
    prometheus: PrometheusOpt = None,
    query: QueryOpt = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Backtest every model in this config file's models.")
    ] = None,
    days: DaysOpt = 14.0,
    step: StepOpt = "1m",
    bearer_token: BearerOpt = None,
    fleet_budget: Annotated[
        str | None,
        typer.Option(
            "--fleet-budget",
            help="Replay every series of the TRACEs together on this GPU budget (comma-separated GPU counts "
            "or shares of the fleet's p99.9 need, e.g. 50%,70%,90%): reactive, static and predictive first "
            "come first served, predictive-fleet through the fleet stage.",
        ),
    ] = None,
    align_week: Annotated[
        bool,
        typer.Option(
            "--align-week",
            help="With --fleet-budget: shift each series by whole weeks into the earliest's week.",
        ),
    ] = False,
    backend: BackendOpt = None,
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Replay traffic through every policy on simulated replicas with cold starts, and compare.

    With --prometheus, the history comes from Prometheus (--query for one model, or --config for all the
    models of a config file); --start/--end (or --days back from now) then say which range to load, and the
    first --warmup of it is used only to fit, exactly as with a trace.
    """

    def run() -> None:
        from backtest.report import alpha_comparisons, to_json, write_html
        from backtest.run import (
            BacktestConfig,
            capacity_for,
            compare,
            sweep_alphas,
            sweep_pools,
        )
        from backtest.simulator import lognormal_t_load
        from backtest.tasks import replay_series
        from backtest.tuning import TuningGrid, candidate_count, check_target
        from compute.base import Task

        window_s = parse_duration_s(tune_window, what="--tune-window")
        if slo_target is not None:
            check_target(slo_target, "--slo-target")

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
        names = _split_series(series)
        if fleet_budget is not None:
            _fleet_backtest(
                traces or [],
                names,
                fleet_budget,
                align_week,
                as_json,
                report,
                lambda s: BacktestConfig(
                    capacity_rps=capacity_rps or capacity_for(s),
                    t_load_s=parse_duration_s(t_load, what="--t-load") if t_load is not None else 300.0,
                    slo_wait_s=parse_duration_s(slo_wait, what="--slo-wait"),
                    tick_s=int(parse_duration_s(tick, what="--tick")),
                    min_replicas=min_replicas,
                    max_replicas=max_replicas,
                    warmup_s=parse_duration_s(warmup, what="--warmup"),
                    warm_pools=pools,
                    model=model,
                    alpha=alpha,
                    seed=seed,
                ),
            )
            return
        if align_week:
            raise UsageError("--align-week needs --fleet-budget")
        if traces and len(traces) > 1:
            raise UsageError("several TRACEs are replayed together only as a fleet: add --fleet-budget")
        trace = traces[0] if traces else None
        chosen, label, overrides = _load_series(
            trace, demo, names, prometheus, query, config, start, end, days, step, bearer_token
        )
        runs = []
        per_series = len(pol) + len(alphas) - ("static" in pol) + (len(pools) if "static" in pol else 0)
        per_series += candidate_count(TuningGrid()) if slo_target is not None else 0
        total = len(chosen) * per_series
        fan_out = (workers or 1) > 1 or backend == "ray" or ray_address is not None
        tasks: list[Task] = []
        with _progress("backtesting", total, sys.stderr.isatty() and not as_json and not fan_out) as tickbar:
            for s in chosen:
                fixed = overrides.get(s.name, {})
                if fixed:  # the range came from Prometheus: all of it is history + replay
                    warm_s = parse_duration_s(warmup, what="--warmup")
                elif start or end:
                    lo = s.index_at(_parse_at(start)) if start else 0
                    hi = s.index_at(_parse_at(end)) if end else len(s)
                    s = s.slice(0, hi)
                    warm_s = max(0.0, lo * s.step_s) if start else parse_duration_s(warmup, what="--warmup")
                else:
                    warm_s = parse_duration_s(warmup, what="--warmup")
                cap = capacity_rps or fixed.get("capacity_rps") or capacity_for(s)
                t_load_s = (
                    parse_duration_s(t_load, what="--t-load") if t_load is not None else fixed.get("t_load_s")
                ) or 300.0
                sampler = lognormal_t_load(t_load_s, t_load_sigma, seed) if t_load_sigma > 0 else None
                cfg = BacktestConfig(
                    capacity_rps=cap,
                    t_load_s=t_load_s,
                    t_load_sampler=sampler,
                    slo_wait_s=parse_duration_s(slo_wait, what="--slo-wait"),
                    tick_s=int(parse_duration_s(tick, what="--tick")),
                    min_replicas=min_replicas,
                    max_replicas=max_replicas,
                    warmup_s=warm_s,
                    warm_pools=pools,
                    policies=pol,
                    model=model,
                    alpha=alpha,
                    alpha_sweep=alphas,
                    seed=seed,
                )
                if fan_out:  # one task per series on the compute backend
                    tasks.append(Task(s.name, replay_series, (s, cfg, slo_target, window_s)))
                    continue
                runs.append(replay_series(s, cfg, slo_target, window_s, progress=tickbar))
        if tasks:
            compute = _compute(backend, workers, ray_address)
            try:
                for outcome in compute.map(tasks):
                    if not outcome.ok:
                        raise UsageError(f"backtest of {outcome.key} failed: {outcome.error}")
                    runs.append(outcome.value)
            finally:
                compute.close()
        if report is not None:
            write_html(runs, report)
        if as_json:
            print(json.dumps(to_json(runs), indent=2))
            return
        for r in runs:
            table = Table(title=f"{r.series}: capacity {r.config.capacity_rps:.3g} req/s per replica")
            for col in (
                "policy",
                "requests",
                "violation rate",
                "replica-h",
                "idle replica-h",
                "cold starts",
                "peak",
            ):
                table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=col == "policy")
            for name, res in r.results.items():
                d = res.as_dict()
                table.add_row(
                    name,
                    f"{d['requests']:,}",
                    f"{d['slo_violation_rate']:.5f}",
                    f"{d['replica_hours']:,.1f}",
                    f"{d['idle_replica_hours']:,.1f}",
                    str(d["cold_starts"]),
                    str(d["peak_replicas"]),
                )
            out.print(table)
            for k, v in compare(r.results).as_dict().items():
                out.print(f"  {k}: {v}", highlight=False)
            for name, cmp in alpha_comparisons(r).items():
                text = ", ".join(f"{k} {v}" for k, v in cmp.items() if k not in ("alpha", "static_note"))
                out.print(f"  {name}: {text}", highlight=False)
            if r.walk_forward is not None:
                _print_walk_forward(r.walk_forward)
        if report is not None:
            out.print(f"report: {report}", highlight=False)
        out.print(f"source: {label}", highlight=False)

    _guard(run)


def _fleet_backtest(
    traces: list[Path],
    names: list[str] | None,
    budget_text: str,
    align: bool,
    as_json: bool,
    report: Path | None,
    config_for: Callable[[TrafficSeries], Any],
) -> None:
    """`backtest --fleet-budget`: load every named series from the traces, replay them as one fleet."""
    from backtest.fleet import FleetMember, align_week, p999_needs, parse_budgets, run_fleet_backtest

    if not traces:
        raise UsageError("--fleet-budget needs one or more TRACE files")
    loaded: list[TrafficSeries] = []
    for path in traces:
        source = read_trace(path)  # every series: a name may live in any of the files
        wanted = [n for n in source.names() if names is None or n in names]
        if names is None and len(wanted) > MAX_SERIES_WITHOUT_FLAG:
            raise UsageError(f"{path} has {len(wanted)} series; pick some with --series")
        loaded += [source.load(n) for n in wanted]
    missing = sorted(set(names or ()) - {s.name for s in loaded})
    if missing:
        raise UsageError(f"--series not found in any TRACE: {', '.join(missing)}")
    if align:
        loaded = align_week(loaded)
    members = [FleetMember(s, config_for(s)) for s in loaded]
    need = p999_needs(members)
    budgets = parse_budgets(budget_text, need)
    runs = run_fleet_backtest(members, budgets)
    if report is not None:
        from backtest.report import write_fleet_html

        write_fleet_html(runs, report)
    if as_json:
        print(json.dumps({"p999_need_gpus": need, "fleet": [r.as_dict() for r in runs]}, indent=2))
        return
    for r in runs:
        table = Table(
            title=f"fleet of {len(members)} on {r.budget_gpus:g} GPUs ({r.budget_gpus / need:.0%} of the "
            f"p99.9 need, {need:g})"
        )
        for col in ("policy", "violation rate", "replica-h", "peak GPUs", "worst model", "its rate"):
            table.add_column(col, justify="left" if col in ("policy", "worst model") else "right")
        for name, res in r.policies.items():
            d = res.as_dict()
            table.add_row(
                name,
                f"{d['violation_rate']:.5f}",
                f"{d['replica_hours']:,.1f}",
                f"{d['peak_gpus']:g}",
                d["worst_model"],
                f"{d['worst_model_violation_rate']:.5f}",
            )
        out.print(table)
        for note in r.notes:
            out.print(f"  - {note}", highlight=False)


def _load_series(
    trace: Path | None,
    demo: bool,
    names: list[str] | None,
    prometheus: str | None,
    query: str | None,
    config: Path | None,
    start: str | None,
    end: str | None,
    days: float,
    step: str,
    bearer_token: str | None,
) -> tuple[list[TrafficSeries], str, dict[str, dict[str, float | None]]]:
    """The series to replay, from a trace, the demo or Prometheus, with what a config says about each."""
    if prometheus is not None or config is not None:
        if trace is not None or demo:
            raise UsageError("give a TRACE (or --demo) or --prometheus, not both")
        return _prometheus_series(prometheus, query, config, names, start, end, days, step, bearer_token)
    if query is not None:
        raise UsageError("--query needs --prometheus")
    source, label = _open_source(trace, demo, set(names) if names else None)
    return _pick_series(source, names), label, {}


def _print_walk_forward(wf: Any) -> None:
    from backtest.walk_forward import TRANSIENTS_NOTE

    table = Table(
        title=f"walk-forward at target {wf.target:g}: each day tuned on the {wf.tune_window_s / 86400:g} "
        "days before it"
    )
    for col in ("family", "violation rate", "met", "replica-h", "days on target", "last setting"):
        table.add_column(col, justify="left" if col in ("family", "last setting") else "right")
    for family, w in wf.policies.items():
        table.add_row(
            family,
            f"{w.violation_rate:.5f}",
            "yes" if w.met else "no",
            f"{w.replica_hours:,.1f}",
            f"{w.days_on_target}/{len(w.settings)}",
            w.settings[-1],
        )
    out.print(table)
    ratio = wf.hours_ratio()
    if ratio is not None:
        out.print(f"  predictive replica-hours / static's: {ratio:.3f}", highlight=False)
    out.print(f"  ({TRANSIENTS_NOTE})", highlight=False)


def _prometheus_series(
    url: str | None,
    query: str | None,
    config: Path | None,
    names: list[str] | None,
    start: str | None,
    end: str | None,
    days: float,
    step: str,
    bearer_token: str | None,
) -> tuple[list[TrafficSeries], str, dict[str, dict[str, float | None]]]:
    """Each model's history from Prometheus, with what its config says about the fleet."""
    import time

    from forecaster.sources.prometheus import ModelQuery, PrometheusSettings, PrometheusSource
    from service.config import load_config

    overrides: dict[str, dict[str, float | None]] = {}
    if config is not None:
        if query is not None:
            raise UsageError("give --query (one model) or --config (all its models), not both")
        cfg = load_config(config)
        if cfg.prometheus is None and url is None:
            raise UsageError(f"{config} has no prometheus section; add one or pass --prometheus URL")
        models = [m for m in cfg.models if not names or m.name in names]
        missing = sorted(set(names or ()) - {m.name for m in cfg.models})
        if missing or not models:
            raise UsageError(f"{config}: no model named {', '.join(missing) or '(none configured)'}")
        queries = cfg.query_specs([m.name for m in models])
        overrides = {
            m.name: {
                "capacity_rps": m.capacity_rps,
                "t_load_s": m.t_load_s,
                "slo_target": m.slo.target,
                "slo_wait_s": m.slo.wait_s,
            }
            for m in models
        }
        settings = cfg.prometheus.settings() if cfg.prometheus is not None else PrometheusSettings(url or "")
        if url is not None:
            settings = PrometheusSettings(**{**settings.__dict__, "url": url})
    else:
        if url is None:
            raise UsageError("--config needs a prometheus section or --prometheus URL")
        if query is None or not names or len(names) != 1:
            raise UsageError("--prometheus needs --query PROMQL and one --series NAME (or --config FILE)")
        step_s = parse_duration_s(step, what="--step")
        if step_s != int(step_s) or not 1 <= step_s <= 3600:
            raise UsageError(f"--step {step!r}: expected whole seconds from 1s to 1h")
        queries = [ModelQuery(names[0], query, step_s=int(step_s), history_s=days * 86_400)]
        overrides = {names[0]: {"capacity_rps": None, "t_load_s": None}}
        settings = PrometheusSettings(url)
    if bearer_token:
        settings = PrometheusSettings(**{**settings.__dict__, "bearer_token": bearer_token})
    end_s = _parse_at(end) if end else time.time()
    start_s = _parse_at(start) if start else None
    src = PrometheusSource(settings, queries, clock=lambda: end_s)
    chosen = []
    for q in queries:
        first = start_s if start_s is not None else end_s - days * 86_400
        loaded = src.fetch(q.name, end_s, start_s=first)
        chosen.append(loaded.series)
    return chosen, f"Prometheus at {settings.url}", overrides


@app.command()
def tune(
    trace: Annotated[Path | None, typer.Argument(help="CSV or CSV.gz trace.")] = None,
    series: Annotated[
        list[str] | None, typer.Option("--series", "-s", help="Series to tune (repeat or comma-separate).")
    ] = None,
    slo_target: Annotated[
        float | None,
        typer.Option(
            "--slo-target",
            help="Share of requests that must start within --slo-wait, e.g. 0.99. [default: the config's "
            "slo.target]",
        ),
    ] = None,
    slo_wait: Annotated[
        str | None, typer.Option("--slo-wait", help="Longest acceptable queueing wait. [default: 2s]")
    ] = None,
    tune_window: Annotated[
        str, typer.Option("--tune-window", help="Trailing window the candidates are replayed on.")
    ] = "7d",
    capacity_rps: CapacityOpt = None,
    t_load: TLoadOpt = None,
    tick: Annotated[str, typer.Option(help="Control interval, e.g. 30s.")] = "30s",
    min_replicas: Annotated[int, typer.Option("--min-replicas", min=0)] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas", min=1)] = 10_000,
    model: Annotated[str, typer.Option(help="Forecaster (auto, auto-fast, or an alias).")] = "auto-fast",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
    prometheus: PrometheusOpt = None,
    query: QueryOpt = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Tune every model in this config file's models.")
    ] = None,
    days: DaysOpt = 14.0,
    step: StepOpt = "1m",
    bearer_token: BearerOpt = None,
) -> None:
    """Choose each model's operating point (forecast quantile alpha x burst reserve) for an SLO target.

    Every candidate is replayed on the trailing --tune-window (one forecasting pass shared by all of them);
    the cheapest that met the target with a margin wins, and a warm pool tuned the same way on the same
    history shows what it saves. The service's nightly job runs the same tuning.
    """

    def run() -> None:
        from backtest.run import BacktestConfig, capacity_for
        from backtest.tuning import TuningGrid, candidate_count, check_target, tune

        window_s = parse_duration_s(tune_window, what="--tune-window")
        if slo_target is not None:
            check_target(slo_target, "--slo-target")
        names = _split_series(series)
        chosen, label, overrides = _load_series(
            trace, demo, names, prometheus, query, config, None, None, days, step, bearer_token
        )
        results = []
        total = len(chosen) * candidate_count(TuningGrid())
        with _progress("tuning", total, sys.stderr.isatty() and not as_json) as tickbar:
            for s in chosen:
                fixed = overrides.get(s.name, {})
                target = slo_target if slo_target is not None else fixed.get("slo_target")
                if target is None:
                    raise UsageError(f"{s.name}: give --slo-target (or slo.target in the model's config)")
                wait_s = (
                    parse_duration_s(slo_wait, what="--slo-wait")
                    if slo_wait is not None
                    else fixed.get("slo_wait_s") or 2.0
                )
                t_load_s = (
                    parse_duration_s(t_load, what="--t-load") if t_load is not None else fixed.get("t_load_s")
                ) or 300.0
                cfg = BacktestConfig(
                    capacity_rps=capacity_rps or fixed.get("capacity_rps") or capacity_for(s),
                    t_load_s=t_load_s,
                    slo_wait_s=wait_s,
                    tick_s=int(parse_duration_s(tick, what="--tick")),
                    min_replicas=min_replicas,
                    max_replicas=max_replicas,
                    model=model,
                )
                results.append(tune(s, cfg, target, window_s=window_s, progress=tickbar))
        if as_json:
            print(json.dumps({"series": {r.series: r.as_dict() for r in results}}, indent=2))
            return
        for r in results:
            _print_tuning(r)
        out.print(f"source: {label}", highlight=False)

    _guard(run)


def _print_tuning(r: Any) -> None:
    doc = r.as_dict()
    sel = r.selections["predictive"]
    table = Table(
        title=f"{r.series}: {r.target:g} of requests within {r.slo_wait_s:g}s, tuned on "
        f"{_iso(r.start_s)} .. {_iso(r.end_s)}"
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


@app.command("export-openmetrics")
def export_openmetrics(
    trace: Annotated[Path, typer.Argument(help="CSV or CSV.gz trace.")],
    series: Annotated[
        list[str] | None, typer.Option("--series", "-s", help="Series to export (default: all).")
    ] = None,
) -> None:
    """Write a trace as the OpenMetrics counter prewarm_requests_total{model=...} on stdout, for
    `promtool tsdb create-blocks-from openmetrics`."""

    def run() -> None:
        from forecaster.sources.openmetrics import write_openmetrics

        names = _split_series(series)
        source = read_trace(trace, only=set(names) if names else None)
        chosen = [source.load(n) for n in (names or source.names())]
        write_openmetrics(chosen, sys.stdout)

    _guard(run)


@app.command("models")
def list_models() -> None:
    """List the forecasting models and what each is for."""
    from forecaster.models import MODELS

    for alias, factory in MODELS.items():
        doc = (sys.modules[type(factory()).__module__].__doc__ or "").strip().splitlines()[0]
        out.print(f"{alias:24s} {doc}", highlight=False)
    out.print(f"{'auto':24s} per-series choice by rolling-origin CV, split-conformal calibrated quantiles")
    out.print(f"{'auto-fast':24s} auto among the vectorised models only (profile and the seasonal naives)")


@app.command("demo-trace")
def demo_trace(
    path: Annotated[Path, typer.Argument(help="Where to write the trace (.csv or .csv.gz).")],
    days: Annotated[float, typer.Option(min=0.01, max=365.0, help="Days of traffic.")] = 21.0,
    step: Annotated[str, typer.Option(help="Step, e.g. 1m.")] = "1m",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the built-in synthetic fleet as a trace file."""

    def run() -> None:
        step_s = parse_duration_s(step, what="--step")
        if step_s != int(step_s) or not 1 <= step_s <= 3600:
            raise UsageError(f"--step {step!r}: expected whole seconds from 1s to 1h")
        src = SyntheticSource(days=days, step_s=int(step_s), seed=seed)
        write_trace(path, [src.load(n) for n in src.names()])
        out.print(f"wrote {len(src.names())} series x {days:g} days to {path}", highlight=False)

    _guard(run)


@app.command("serve")
def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML config (config.example.yaml); none: the embedded demo."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: 127.0.0.1 / config].")
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port [default: 8080 / config].")] = None,
    speed: Annotated[
        float,
        typer.Option(min=1.0, max=3600.0, help="Demo: simulated s per real s (60: 1 h/min)."),
    ] = 60.0,
    store: Annotated[
        str, typer.Option(help="SQLAlchemy URL of the decision store.")
    ] = "sqlite:///prewarm-demo.db",
    api_token: Annotated[
        str | None,
        typer.Option("--api-token", envvar="PREWARM_API_TOKEN", help="Bearer token for POSTs."),
    ] = None,
    backend: BackendOpt = None,
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Run the service (API, dashboard, scheduler) for a config, or the embedded demo in accelerated time."""
    from service.serve import serve, serve_config

    if config is not None:
        compute: dict[str, Any] = {"backend": backend, "workers": workers, "ray_address": ray_address}
        if ray_address is not None and backend is None:
            compute["backend"] = "ray"
        _guard(
            lambda: serve_config(
                config, host=host, port=port, compute={k: v for k, v in compute.items() if v is not None}
            )
        )
        return
    if backend or workers or ray_address:
        _fail("--backend, --workers and --ray-address apply to a --config service (the demo runs in-process)")
    h, p = host or "127.0.0.1", port or 8080
    out.print(f"prewarm demo on http://{h}:{p}/ ({speed:g}x time)", highlight=False)
    serve(host=h, port=p, speed=speed, store_url=store, api_token=api_token)


def _compute(backend: str | None, workers: int | None, ray_address: str | None) -> Compute:
    from service.compose import build_compute

    if ray_address is not None and backend not in (None, "ray"):
        raise UsageError(f"--ray-address needs --backend ray, not {backend!r}")
    kind = "ray" if ray_address is not None else backend or "local"
    if kind not in ("local", "ray"):
        raise UsageError(f"--backend {backend!r}: expected local or ray")
    return build_compute(kind, workers=workers, ray_address=ray_address)


def main() -> None:
    app()
