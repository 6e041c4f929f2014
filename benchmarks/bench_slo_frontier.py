"""Does prediction buy a team anything over a warm pool at the SLO it states? The out-of-sample frontiers.

    python -m benchmarks.bench_slo_frontier [--t-load 5m,15m] [--targets 0.95,0.98,0.99,0.995,0.999]
        [--series servegen,tweets,demo] [--workers 2] [--json out.json]

Every multi-day series of ../shared/traces (servegen's m-large, m-mid, m-small; the ten tweet series) and the
demo fleet, each at capacity so its p99.9 rate needs 15 replicas, SLO wait 2 s, tick 30 s, tune window 7 d:
`prewarm backtest --slo-target <targets>` per series and cold start. Each family (warm pool, reactive,
prewarm planning for the SLO, the quantile stage, the oracle) tunes its one knob day by day on the week
before and is scored on the day after, at every target; its outcomes over the targets are its frontier.
Printed per series: predictive's (and the quantile stage's) replica-hours over the pool's at equal realised
violation rate, the days each family met the target at 0.99 and 0.999, and the days the tuner's promise
held; then the median over the series, per cold start. Ratios, not seconds: the figures are the run's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from backtest.batch import ReplayOptions, replay_each
from backtest.run import SeriesBacktest
from compute.local import LocalCompute
from forecaster.durations import parse_duration_s
from forecaster.sources.synthetic import SyntheticSource
from forecaster.sources.trace import read_trace
from forecaster.types import TrafficSeries

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
SETS = {
    "servegen": (TRACES / "servegen-bailian-2025" / "trace.csv.gz", ("m-large", "m-mid", "m-small")),
    "tweets": (
        TRACES / "nab-tweets-2015" / "trace.csv.gz",
        tuple(f"tweets/{t}" for t in ("AAPL", "AMZN", "CRM", "CVS", "FB", "GOOG", "IBM", "KO", "PFE", "UPS")),
    ),
}


def load(sets: list[str]) -> list[TrafficSeries]:
    out: list[TrafficSeries] = []
    for name in sets:
        if name == "demo":
            src = SyntheticSource()
            out += [src.load(n) for n in src.names()]
            continue
        path, names = SETS[name]
        trace = read_trace(path, only=set(names))
        out += [trace.load(n) for n in names]
    return out


def summarise(run: SeriesBacktest) -> dict[str, Any]:
    fr = run.frontier
    assert fr is not None
    doc = fr.as_dict()
    row: dict[str, Any] = {
        "series": run.series,
        "predictive_vs_static": doc["predictive_hours_vs_static_at_equal_violation"],
        "quantile_vs_static": doc["quantile_hours_vs_static_at_equal_violation"],
    }
    for target in (0.99, 0.999):
        for family, points in fr.policies.items():
            p = next((p for p in points if p.target == target), None)
            if p is not None:
                row[f"{family}_met_{target:g}"] = p.met
                row[f"{family}_days_on_target_{target:g}"] = p.days_on_target
                row[f"{family}_days_within_promise_{target:g}"] = p.days_within_promise
                row["days"] = p.days
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--t-load", default="5m,15m")
    ap.add_argument("--targets", default="0.95,0.98,0.99,0.995,0.999")
    ap.add_argument("--series", default="servegen,tweets,demo")
    ap.add_argument("--only", default="", help="comma-separated series names to keep")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    targets = tuple(float(t) for t in args.targets.split(","))
    series = load(args.series.split(","))
    if args.only:
        keep = set(args.only.split(","))
        series = [s for s in series if s.name in keep]
    report: dict[str, Any] = {"targets": list(targets), "runs": {}}
    compute = LocalCompute(args.workers) if args.workers > 1 else None
    try:
        for text in args.t_load.split(","):
            t_load_s = parse_duration_s(text, what="--t-load")
            opts = ReplayOptions(t_load_s=t_load_s, slo_targets=targets, policies=("reactive",))
            started = time.perf_counter()
            runs = replay_each(series, opts, compute=compute)
            rows = [summarise(r) for r in runs]
            ratios = [r["predictive_vs_static"] for r in rows if r["predictive_vs_static"] is not None]
            quant = [r["quantile_vs_static"] for r in rows if r["quantile_vs_static"] is not None]
            print(f"\nT_load {t_load_s / 60:g} min ({time.perf_counter() - started:.0f} s)")
            head = "met@0.99 p/s  met@0.999 p/s  promise@0.99 p/s"
            print(f"{'series':<16} {'pred/pool':>9} {'quant/pool':>10}  {head}")
            for r in rows:
                print(
                    f"{r['series']:<16} {r['predictive_vs_static'] or float('nan'):>9.3f} "
                    f"{r['quantile_vs_static'] or float('nan'):>10.3f}  "
                    f"{int(r.get('predictive_met_0.99', 0))}/{int(r.get('static_met_0.99', 0)):<10} "
                    f"{int(r.get('predictive_met_0.999', 0))}/{int(r.get('static_met_0.999', 0)):<12} "
                    f"{r.get('predictive_days_within_promise_0.99')}/{r.get('static_days_within_promise_0.99')}"
                    f" of {r.get('days')}"
                )
            med = statistics.median(ratios) if ratios else None
            print(
                f"median predictive/pool {med if med is None else round(med, 3)} over {len(ratios)} series; "
                f"worst {max(ratios) if ratios else None}; quantile stage median "
                f"{round(statistics.median(quant), 3) if quant else None}"
            )
            for target in (0.99, 0.999):
                met = {
                    f: sum(bool(r.get(f"{f}_met_{target:g}")) for r in rows) for f in ("predictive", "static")
                }
                held = {
                    f: sum(int(r.get(f"{f}_days_within_promise_{target:g}") or 0) for r in rows)
                    for f in ("predictive", "static")
                }
                print(f"at {target:g}: series meeting it {met}; scored days within the promise {held}")
            report["runs"][f"{t_load_s:g}"] = {
                "rows": rows,
                "median_predictive_vs_static": med,
                "frontiers": {r.series: r.frontier.as_dict() for r in runs if r.frontier is not None},
            }
    finally:
        if compute is not None:
            compute.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
