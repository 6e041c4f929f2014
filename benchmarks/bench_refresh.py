"""The traffic refresh of every control tick, from a real Prometheus: N models one query each, against one
query group for all of them, in the same run.

    python -m benchmarks.bench_refresh [--models 1000] [--days 1] [--ticks 30] [--json]

Backfills a temporary Prometheus (promtool) with N synthetic models at 1-minute steps (the counter
`prewarm_requests_total{model=...}`), loads every model's history, then steps the clock a minute at a time
and times each tick's refresh of all N models exactly as the service reads them (service/compose.py's
history function: a model whose cached series is current reads nothing, any other refreshes):
- ungrouped: each model's own query, `sum(rate(prewarm_requests_total{model="<name>"}[1m]))`;
- grouped: one query group, `sum by (model) (rate(prewarm_requests_total[1m]))`.
Both read the same numbers (checked). Needs Debian's `prometheus` package.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fit import make_fleet
from forecaster.sources.prometheus import ModelQuery, PrometheusSettings, PrometheusSource
from forecaster.types import TrafficSeries
from service.compose import _history
from tests.prometheus_harness import PrometheusProcess, backfill, require_binaries

STEP = 60
GROUPED = "sum by (model) (rate(prewarm_requests_total[1m]))"


def ticks(src: PrometheusSource, names: list[str], start_s: float, n: int) -> tuple[list[float], int]:
    """Each tick's refresh time of every model, and the range queries it took in all."""
    queries = 0
    original = src._query

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal queries
        queries += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    src._query = counted  # type: ignore[method-assign,assignment]
    reads = [_history(src, name) for name in names]
    times = []
    for k in range(1, n + 1):
        now = start_s + k * STEP
        t = time.perf_counter()
        for read in reads:
            read(now)
        times.append(time.perf_counter() - t)
    return times, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    require_binaries()
    fleet = [
        TrafficSeries(f"model-{i:04d}", s.start_s, s.step_s, s.values)
        for i, s in enumerate(make_fleet(args.models, days=args.days, step_s=STEP))
    ]
    end_s = fleet[0].end_s
    start_s = end_s - (args.ticks + 1) * STEP  # the ticks walk up to the end of the data
    history_s = args.days * 86_400 - (args.ticks + 2) * STEP
    out: dict[str, object] = {"models": args.models, "days": args.days, "ticks": args.ticks}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        backfill(fleet, Path(tmp) / "data")
        out["backfill_s"] = round(time.perf_counter() - t0, 1)
        server = PrometheusProcess(Path(tmp) / "data").start()
        try:
            settings = PrometheusSettings(server.url)
            own = PrometheusSource(
                settings,
                [
                    ModelQuery(
                        s.name,
                        f'sum(rate(prewarm_requests_total{{model="{s.name}"}}[1m]))',
                        step_s=STEP,
                        history_s=history_s,
                    )
                    for s in fleet
                ],
                clock=lambda: start_s,
            )
            group = PrometheusSource(
                settings,
                [
                    ModelQuery(
                        s.name,
                        GROUPED,
                        step_s=STEP,
                        history_s=history_s,
                        group="all",
                        label="model",
                        label_value=s.name,
                    )
                    for s in fleet
                ],
                clock=lambda: start_s,
            )
            names = [s.name for s in fleet]
            t0 = time.perf_counter()
            for name in names:
                own.fetch(name, start_s)
            out["first_load_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            group.fetch(names[0], start_s)
            out["first_load_grouped_s"] = round(time.perf_counter() - t0, 2)
            t_own, q_own = ticks(own, names, start_s, args.ticks)
            t_group, q_group = ticks(group, names, start_s, args.ticks)
        finally:
            server.stop()
    worst = max(
        float(np.nanmax(np.abs(own.cached(n).values - group.cached(n).values)))  # type: ignore[union-attr]
        for n in names
    )
    ms_own, ms_group = np.asarray(t_own) * 1000, np.asarray(t_group) * 1000
    out.update(
        tick_p50_ms=round(float(np.percentile(ms_own, 50)), 1),
        tick_p99_ms=round(float(np.percentile(ms_own, 99)), 1),
        queries_per_tick=q_own / args.ticks,
        grouped_tick_p50_ms=round(float(np.percentile(ms_group, 50)), 1),
        grouped_tick_p99_ms=round(float(np.percentile(ms_group, 99)), 1),
        grouped_queries_per_tick=q_group / args.ticks,
        speedup_p50=round(float(np.percentile(ms_own, 50) / np.percentile(ms_group, 50)), 1),
        largest_difference=worst,
    )
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:26s} {v}")


if __name__ == "__main__":
    main()
