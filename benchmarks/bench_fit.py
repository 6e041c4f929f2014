"""Fitting speed of every model on 14 days at 1-minute steps, and of the vectorised profile on 1,000 series.

    python -m benchmarks.bench_fit [--series 1000] [--sample 3] [--auto-series 3] [--auto-fast-series 20]

Prints seconds per series for each model (fitted on `--sample` series), the profile model's batch fit of
`--series` series, and `auto` / `auto-fast` per series with the implied time for 1,000 series. Ratios are
against the seasonal naive baseline measured in the same run on the same series. Series come from the
seeded synthetic generator with per-series random shapes, so the run is reproducible.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from forecaster.models import MODELS
from forecaster.models.profile import fit_batch
from forecaster.selection import FAST_CANDIDATES, AutoModel, cv_every_s
from forecaster.sources.synthetic import TrafficShape, generate
from forecaster.types import TrafficSeries

DAYS = 14
STEP_S = 60


def make_fleet(n: int, seed: int = 0, days: float = DAYS, step_s: int = STEP_S) -> list[TrafficSeries]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = TrafficShape(
            f"m{i}",
            mean_rps=float(rng.uniform(0.5, 200)),
            peak_to_trough=float(rng.uniform(1.2, 8)),
            peak_hour=float(rng.uniform(0, 24)),
            weekend_factor=float(rng.uniform(0.4, 1.0)),
            clients=int(rng.integers(0, 4)),
            bursts_per_day=float(rng.uniform(0, 1)),
            dispersion=float(rng.uniform(5, 50)),
        )
        out.append(generate(shape, days=days, step_s=step_s, seed=seed))
    return out


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=3)
    ap.add_argument("--auto-series", type=int, default=3)
    ap.add_argument("--auto-fast-series", type=int, default=20)
    args = ap.parse_args()

    t = time.perf_counter()
    fleet = make_fleet(args.series)
    print(
        f"generated {args.series} series x {DAYS} days at {STEP_S} s ({len(fleet[0])} steps each) "
        f"in {time.perf_counter() - t:.1f} s"
    )

    matrix = np.stack([s.values for s in fleet])
    naive_total = timed(lambda: [MODELS["seasonal_naive_daily"]().fit(s) for s in fleet])
    batch_total = timed(lambda: fit_batch(matrix, fleet[0].start_s, STEP_S))
    print("\n== vectorised profile model over the fleet")
    print(
        f"profile fit_batch, {args.series} series: {batch_total:.2f} s "
        f"({batch_total / args.series * 1000:.2f} ms/series); "
        f"must be < 10 s: {'MET' if batch_total < 10 else 'NOT MET'}"
    )
    print(
        f"seasonal naive (baseline), {args.series} fits in a loop: {naive_total:.2f} s; "
        f"profile batch / naive loop = {batch_total / naive_total:.2f}x"
    )

    print(f"\n== seconds per series, each model fitted on {args.sample} series (14 days, 1-minute steps)")
    sample = fleet[: args.sample]
    base = naive_total / args.series
    for alias, factory in MODELS.items():
        per = timed(lambda f=factory: [f().fit(s).predict(60, (0.5, 0.9, 0.99)) for s in sample]) / len(
            sample
        )
        fit_step = factory().fit(sample[0]).report.fit_step_s
        print(f"{alias:24s} {per:8.3f} s/series  fit step {fit_step:5d} s  ({per / base:8.1f}x naive)")

    print(
        f"\n== auto (rolling-origin CV over 7 days, windows every {cv_every_s(3600) / 60:g} min, "
        "horizon 1 h, then calibrated fit)"
    )
    for label, cands, n in (
        ("auto", None, args.auto_series),
        ("auto-fast", FAST_CANDIDATES, args.auto_fast_series),
    ):
        chosen: list[str] = []

        def run(cands: tuple[str, ...] | None = cands, n: int = n, chosen: list[str] = chosen) -> None:
            for s in fleet[:n]:
                m = (
                    AutoModel(horizon_s=3600)
                    if cands is None
                    else AutoModel(horizon_s=3600, candidates=cands)
                )
                chosen.append(m.fit(s).chosen)

        total = timed(run)
        per = total / n
        print(
            f"{label:10s} {per:7.2f} s/series over {n} series -> {per * 1000 / 60:6.1f} min for 1,000 series "
            f"(serial, one core); chosen: {dict(zip(*np.unique(chosen, return_counts=True), strict=True))}"
        )
        # the daily refit the service and the backtest make: yesterday's fit carries its CV windows over,
        # so only the newest day's windows are forecast (forecaster/rolling.py RollingCache)
        day = round(86_400 / STEP_S)
        before = [
            (AutoModel(horizon_s=3600) if cands is None else AutoModel(horizon_s=3600, candidates=cands)).fit(
                s.slice(0, len(s) - day)
            )
            for s in fleet[:n]
        ]

        def daily(
            cands: tuple[str, ...] | None = cands, n: int = n, before: list[AutoModel] = before
        ) -> None:
            for s, prev in zip(fleet[:n], before, strict=True):
                fresh = (
                    AutoModel(horizon_s=3600)
                    if cands is None
                    else AutoModel(horizon_s=3600, candidates=cands)
                )
                fresh.carry_from(prev).fit(s)

        per_daily = timed(daily) / n
        print(f"{label:10s} {per_daily:7.2f} s/series for the daily refit ({per / per_daily:.1f}x faster)")


if __name__ == "__main__":
    main()
