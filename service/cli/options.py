"""The commands' options, declared once (a command's signature then reads one line per flag): those more than
one command takes, so that their flags, defaults and help agree, then `backtest`'s own (Bt...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from backtest.run import POLICIES
from service.cli.common import DEMO_HELP

TraceArg = Annotated[Path | None, typer.Argument(help="CSV or CSV.gz trace.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
DemoOpt = Annotated[bool, typer.Option("--demo", help=DEMO_HELP)]


def series_opt(what: str) -> Any:
    """--series/-s, for the series a command works on."""
    return typer.Option("--series", "-s", help=f"Series to {what} (repeat or comma-separate).")


CapacityOpt = Annotated[
    float | None,
    typer.Option(
        "--capacity-rps", help="Requests/s one replica serves. Default: the 99.9th-percentile rate / 15."
    ),
]
TLoadOpt = Annotated[
    str | None,
    typer.Option("--t-load", help="Cold start: asked -> ready, e.g. 5m. (default: 5m, or the config's)"),
]
TickOpt = Annotated[str, typer.Option(help="Control interval, e.g. 30s.")]
MinReplicasOpt = Annotated[
    int | None, typer.Option("--min-replicas", min=0, help="Fewest replicas (default: the config's, else 1).")
]
MaxReplicasOpt = Annotated[
    int | None,
    typer.Option("--max-replicas", min=1, help="Most replicas (default: the config's, else 10000)."),
]

# where the history comes from when it is not a trace
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

# where per-model work runs
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="Where per-model work runs: local (process pool) or ray (default: the config's, else local).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=1024,
        help="Local worker processes (default: 1 for backtest, the cores for serve).",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="Ray cluster to run on (host:port, ray://..., auto: RAY_ADDRESS); implies ray."
    ),
]

# backtest's own
BtTracesArg = Annotated[
    list[Path] | None,
    typer.Argument(help="CSV or CSV.gz trace (several with --fleet-budget).", show_default=False),
]
BtSigmaOpt = Annotated[
    float,
    typer.Option(
        "--t-load-sigma",
        min=0.0,
        max=3.0,
        help="Draw each cold start from a lognormal with median --t-load and this log sigma (0: fixed).",
    ),
]
BtSloWaitOpt = Annotated[
    str | None,
    typer.Option("--slo-wait", help="Longest acceptable wait, e.g. 2s (default: the config's, else 2s)."),
]
ALL_POLICIES = ",".join(POLICIES)
BtPoliciesOpt = Annotated[str, typer.Option(help=f"Comma-separated: {ALL_POLICIES}.")]
BtWarmPoolOpt = Annotated[
    int | None,
    typer.Option(
        "--warm-pool", min=0, help="Spare replicas of the static pool (needs static in --policies)."
    ),
]
BtSweepPoolOpt = Annotated[
    str | None,
    typer.Option(
        "--sweep-warm-pool",
        help="Static pool sizes to sweep, e.g. 0..8 or 0,2,4 (needs static in --policies).",
    ),
]
BtAlphaOpt = Annotated[
    float | None,
    typer.Option(
        "--alpha",
        help="Forecast quantile the predictive planner provisions for. (default: 0.9, from costs 9:1)",
    ),
]
BtSweepAlphaOpt = Annotated[
    str | None,
    typer.Option(
        "--sweep-alpha",
        help="Also run predictive at each of these alphas (predictive-alpha<A>), e.g. 0.8,0.9,0.95.",
    ),
]
BtWarmupOpt = Annotated[str, typer.Option(help="History used only to fit, scored for no policy (0: none).")]
BtTargetOpt = Annotated[
    str | None,
    typer.Option(
        "--slo-target",
        help="Also walk forward at these SLO targets (shares of requests within --slo-wait, e.g. 0.99 or "
        "0.95,0.99,0.999): every family tunes its one knob on the trailing --tune-window and is scored on "
        "the next day, day after day; the outcomes over the targets are each family's frontier, compared "
        "at equal realised violation rate.",
    ),
]
BtWindowOpt = Annotated[
    str, typer.Option("--tune-window", help="With --slo-target: days each day's choice is tuned on.")
]
BtStartOpt = Annotated[
    str | None, typer.Option(help="Replay from this time (ISO-8601); history before it is kept.")
]
BtEndOpt = Annotated[str | None, typer.Option(help="Replay until this time (ISO-8601).")]
BtModelOpt = Annotated[
    str, typer.Option(help="Forecaster of the predictive policy (auto, auto-fast, or an alias).")
]
BtSeedOpt = Annotated[int, typer.Option(help="Seed for spreading arrivals within trace intervals.")]
BtReportOpt = Annotated[Path | None, typer.Option(help="Write an HTML report here.")]
BtConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Backtest every model in this config file's models.")
]
BtBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--fleet-budget",
        help="Replay every series of the TRACEs together on this GPU budget (comma-separated GPU counts "
        "or shares of the fleet's p99.9 need, e.g. 50%,70%,90%): reactive, static and predictive first "
        "come first served, predictive-fleet through the fleet stage.",
    ),
]
BtLongTailOpt = Annotated[
    bool,
    typer.Option(
        "--long-tail",
        help="Replay only the long tail: series whose busiest interval needs at most 2 replicas at "
        "--capacity-rps, idle (under half a request) in a quarter of their intervals or more, with a request "
        "a day or more, and long enough to walk forward (see docs/backtest.md).",
    ),
]
BtAlignOpt = Annotated[
    bool,
    typer.Option(
        "--align-week", help="With --fleet-budget: shift each series by whole weeks into the earliest's week."
    ),
]

# tune's own
TuneTargetOpt = Annotated[
    float | None,
    typer.Option(
        "--slo-target",
        help="Share of requests that must start within --slo-wait, e.g. 0.99. (default: the config's "
        "slo.target)",
    ),
]
TuneSloWaitOpt = Annotated[
    str | None, typer.Option("--slo-wait", help="Longest acceptable queueing wait. (default: 2s)")
]
TuneWindowOpt = Annotated[
    str, typer.Option("--tune-window", help="Trailing window the candidates are replayed on.")
]
TuneModelOpt = Annotated[str, typer.Option(help="Forecaster (auto, auto-fast, or an alias).")]
TuneConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Tune every model in this config file's models.")
]
