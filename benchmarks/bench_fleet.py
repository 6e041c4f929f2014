"""Scale: the live loop holding N models, and the nightly job fanned out on a compute backend.

    python -m benchmarks.bench_fleet --models 1000 [--backend local|ray] [--workers 2] [--ray-address A]
                                     [--nightly-models 4] [--ticks 20] [--forecaster auto-fast] [--json]

The synthetic fleet (`synthetic_fleet(N)`: the demo's shapes, renamed and shifted), 14 days x 1 minute of
history per model, each with an SLO target so that the nightly job is the service's full night: every
model's backtest and its tuning run (30 predictive candidates + the baselines' knobs).

- nightly: `--nightly-models` of the N models (a full night of 1,000 takes hours; its cost per model is
  what scales), run once on one worker of the backend and once on `--workers`; `per_model_s` is the
  one-worker time per model, `speedup_vs_1_worker` the ratio of the two runs, `identical_to_serial` whether
  the two runs' documents are equal, and `projected_nightly_s` the whole fleet's night at that speed.
- tick: the live loop holding all N models (full fits on the backend first, as the service starts), then
  `--ticks` control ticks of 30 s of simulated time, each timed whole (every model planned, recorded and
  applied; refreshes of the forecasts spread over the ticks as the service spreads them).
- rss_mb: this process's peak resident memory (the live loop's; workers are separate processes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from compute.base import Compute, Outcome
from forecaster.sources.synthetic import synthetic_fleet
from service.nightly import backtest_task, tuning_task
from service.runtime import Controller
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock

TICK_S = 30.0


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def backend(kind: str, workers: int, address: str | None) -> Compute:
    from service.compose import build_compute

    if kind == "ray" and address is None:
        from compute.ray_backend import RayCompute

        return RayCompute(None, num_cpus=workers)  # a local Ray with this many CPUs
    return build_compute(kind, workers=workers, ray_address=address)


def fleet(models: int, forecaster: str, store: Path, clock: Clock, compute: Compute | None) -> Controller:
    return build_demo(
        clock,
        f"sqlite:///{store}",
        tick_s=TICK_S,
        forecaster=forecaster,
        shapes=synthetic_fleet(models),
        days_after=1.0,
        compute=compute,
    )


def night(ctl: Controller, compute: Compute, now_s: float) -> tuple[float, list[Outcome]]:
    tasks = [backtest_task(ctl, name, now_s, 14.0) for name in ctl.models]
    tasks += [t for name in ctl.models if (t := tuning_task(ctl, name, now_s)) is not None]
    t = time.perf_counter()
    outcomes = compute.map(tasks)
    return time.perf_counter() - t, outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--backend", choices=("local", "ray"), default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--nightly-models", type=int, default=4)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--forecaster", default="auto-fast")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    start = demo_start_s()
    out: dict[str, Any] = {"models": args.models, "backend": args.backend, "workers": args.workers}

    # -- the nightly job on a sample of the fleet, on one worker and on --workers
    clock = Clock(start)
    sample = fleet(args.nightly_models, args.forecaster, tmp / "night.db", clock, None)
    one = backend(args.backend, 1, args.ray_address)
    t1, serial = night(sample, one, start)
    if args.backend == "ray" and args.ray_address is None:
        one.close()  # a fresh local Ray with --workers CPUs next
    many = backend(args.backend, args.workers, args.ray_address) if args.workers > 1 else one
    tw, parallel = night(sample, many, start)
    failed = [o for o in serial + parallel if not o.ok]
    out.update(
        nightly_models=args.nightly_models,
        nightly_s=round(tw, 2),
        nightly_1_worker_s=round(t1, 2),
        per_model_s=round(t1 / args.nightly_models, 2),
        speedup_vs_1_worker=round(t1 / tw, 3),
        projected_nightly_s=round(t1 / args.nightly_models * args.models / (t1 / tw), 0),
        identical_to_serial=[o.value for o in serial] == [o.value for o in parallel] and not failed,
        nightly_failures=[f"{o.key}: {o.error}" for o in failed],
    )

    # -- the live loop holding every model
    clock = Clock(start)
    ctl = fleet(args.models, args.forecaster, tmp / "live.db", clock, many)
    jobs = Jobs(ctl, ControllerView(ctl, clock), clock, compute=many)
    t = time.perf_counter()
    jobs.tick_all()  # submits every model's first full fit
    for r in ctl.models.values():
        if r.fitting is not None:
            r.fitting.outcome()  # the bench waits for the fits; the service's tick never does
    out["first_fits_s"] = round(time.perf_counter() - t, 2)
    clock.t += TICK_S
    jobs.tick_all()  # takes the fits into use
    times = []
    for _ in range(args.ticks):
        clock.t += TICK_S
        t = time.perf_counter()
        jobs.tick_all()
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    missing = sum(1 for r in ctl.models.values() if r.forecast is None)
    out.update(
        tick_p50_ms=round(float(np.percentile(ms, 50)), 1),
        tick_p99_ms=round(float(np.percentile(ms, 99)), 1),
        tick_max_ms=round(float(ms.max()), 1),
        ticks=args.ticks,
        models_without_forecast=missing,
        rss_mb=round(peak_rss_mb(), 1),
    )
    many.close()
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:24s} {v}")


if __name__ == "__main__":
    main()
