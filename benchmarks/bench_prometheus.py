"""Loading history from a real, local Prometheus: 100 models x 14 days x 1-minute steps.

Backfills a temporary Prometheus (promtool, 24-hour blocks) with a seeded synthetic fleet, then times
`PrometheusSource.fetch` for every model (three chunked range queries each) against reading the same series
from a CSV.gz trace in the same run, and an incremental refresh of one hour. Needs Debian's `prometheus`
package (scripts/test.sh installs it).

    python -m benchmarks.bench_prometheus [--models 100] [--days 14]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_fit import make_fleet
from forecaster.sources.prometheus import ModelQuery, PrometheusSettings, PrometheusSource
from forecaster.sources.trace import read_trace, write_trace
from forecaster.types import TrafficSeries
from tests.prometheus_harness import PrometheusProcess, backfill, require_binaries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--days", type=float, default=14.0)
    args = ap.parse_args()
    require_binaries()
    step = 60
    fleet = [
        TrafficSeries(f"model-{i:03d}", s.start_s, s.step_s, s.values)
        for i, s in enumerate(make_fleet(args.models, days=args.days, step_s=step))
    ]
    end_s = fleet[0].end_s
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        backfill(fleet, root / "data")
        t_backfill = time.perf_counter() - t0
        server = PrometheusProcess(root / "data").start()
        try:
            models = [
                ModelQuery(
                    s.name,
                    f'sum(rate(prewarm_requests_total{{model="{s.name}"}}[1m]))',
                    step_s=step,
                    history_s=args.days * 86_400,
                )
                for s in fleet
            ]
            src = PrometheusSource(PrometheusSettings(server.url), models, clock=lambda: end_s)
            t0 = time.perf_counter()
            queries = 0
            worst = 0.0
            for s in fleet:
                loaded = src.fetch(s.name, end_s)
                queries += loaded.queries
                ok = np.isfinite(s.values)
                worst = max(worst, float(np.max(np.abs(loaded.series.values[ok] - s.values[ok]))))
            t_prom = time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in fleet:
                src.refresh(s.name, end_s + 3600)
            t_refresh = time.perf_counter() - t0
        finally:
            server.stop()
        write_trace(root / "fleet.csv.gz", fleet)
        t0 = time.perf_counter()
        trace = read_trace(root / "fleet.csv.gz")
        for s in fleet:
            trace.load(s.name)
        t_csv = time.perf_counter() - t0
    n = len(fleet)
    print(f"{n} models x {args.days:g} days x {step} s ({len(fleet[0]):,} points each)")
    print(f"  promtool backfill:               {t_backfill:7.2f} s")
    print(
        f"  load from Prometheus:            {t_prom:7.2f} s  ({t_prom / n * 1000:.0f} ms per model, "
        f"{queries} range queries; must be < 30 s)"
    )
    print(f"  read the same from a CSV.gz:     {t_csv:7.2f} s  (Prometheus / CSV = {t_prom / t_csv:.1f}x)")
    print(
        f"  incremental refresh of 1 hour:   {t_refresh:7.2f} s  ({t_refresh / n * 1000:.1f} ms per model, "
        f"{t_refresh / t_prom:.3f}x a full load)"
    )
    print(f"  largest difference from the generated counts: {worst:.2e} requests per step")


if __name__ == "__main__":
    main()
