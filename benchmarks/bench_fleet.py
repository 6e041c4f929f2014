"""Scale: the live loop holding N models, and the nightly job fanned out on a compute backend.

    python -m benchmarks.bench_fleet --models 1000 [--backend local|ray] [--workers 2] [--ray-address A]
                                     [--ray-nodes 3] [--nightly-models 4] [--ticks 20]
                                     [--forecaster auto-fast] [--shards 12] [--replicas 3]
                                     [--night-beside-tick] [--json]

The synthetic fleet (`synthetic_fleet(N)`: the demo's shapes, renamed and shifted), 14 days x 1 minute of
history per model, each with an SLO target so that the nightly job is the service's full night: every
model's backtest and its tuning run (30 predictive candidates + the baselines' knobs).

- nightly: `--nightly-models` of the N models (its cost per model is what scales), two consecutive nights
  (the service's run_night, recorded): the first replays every day of the backtest and tuning windows,
  the second finds the first's days in the ledger (backtest/ledger.py) and replays only the new day. Each
  pair runs once on one worker of the backend and once, on a fresh store, on `--workers`.
  `per_model_s` is one worker's time per model for a steady night (the second), `first_night_per_model_s`
  for the first (a new fleet, or a changed configuration); `speedup_vs_1_worker` the ratio of the first
  nights (the most work to divide); `identical_to_serial` whether both pairs' documents are equal; and
  `projected_nightly_s` the whole fleet's steady night on `--workers`. With `--ray-nodes N` the nights
  run on a Ray cluster started here, a head and N-1 worker nodes of one CPU each, each its own
  `ray start` (or pass a running one's `--ray-address`); the one-worker pair then runs serially in this
  process, the reference the cluster's documents must equal.
- tick: the live loop holding all N models (full fits on the backend first, as the service starts), then
  `--ticks` control ticks of 30 s of simulated time, each timed whole (every model planned, recorded and
  applied), with the service's collector run every COLLECT_EVERY_S between them: it refreshes the
  forecasts as they fall due (spread over the refresh interval as the service spreads them), and its runs
  between two ticks are timed together (`collector_per_tick_*`). Then as many ticks with nothing between
  them, each refreshing what fell due since the last (`tick_refreshing_*`: the tick as it ran before the
  collector took the refreshes), and the ratio of the two p99s.
- rss_mb: this process's peak resident memory (the live loop's; workers are separate processes).
- tick_beside_night (`--night-beside-tick`, local backend): the service runs the tick and the night in
  one process and its pool. A first night of `--workers` models runs on a pool of `--workers` workers in a
  thread while the live loop ticks, a tick's length apart (the service's ticks leave the night most of
  each period); with the workers at niceness 0, then at the default `compute.worker_nice` with the ticks
  taking turns between the pool running on and the pool stopped for the tick (`compute.pause_for_tick`,
  the default), so that those two share one night: each the tick's p50/p99 beside the night, the idle
  tick's measured the same way just before it, their ratios, and the night's seconds.
- shards: the same live loop as one of `--replicas` replicas sharing the fleet in `--shards` shards
  (service/leadership.py), holding its even share: the models it acts on and its tick.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from compute.base import Compute, Outcome
from compute.local import LocalCompute
from forecaster.sources.synthetic import synthetic_fleet
from service.config import ComputeConfig
from service.heap import Heap
from service.nightly import run_night
from service.runtime import Controller
from service.serve import COLLECT_EVERY_S, Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock, HeldShards

TICK_S = 30.0
DAY = 86_400.0


class Collector:
    """The service's collector between ticks: every COLLECT_EVERY_S of the clock (finished fits taken into
    use, the forecasts that fell due refreshed); each period's runs timed together (ms)."""

    def __init__(self) -> None:
        self.periods: list[float] = []

    def between(self, jobs: Jobs, clock: Clock) -> None:
        took = 0.0
        for _ in range(round(TICK_S / COLLECT_EVERY_S) - 1):
            clock.t += COLLECT_EVERY_S
            t = time.perf_counter()
            jobs.collect()
            took += time.perf_counter() - t
        clock.t += TICK_S - (round(TICK_S / COLLECT_EVERY_S) - 1) * COLLECT_EVERY_S
        self.periods.append(took * 1000)


def timed_ticks(jobs: Jobs, clock: Clock, ticks: int, collector: Collector | None = None) -> np.ndarray:
    """Each of `ticks` control ticks, TICK_S apart, timed whole (ms); with a collector, it runs between
    them (as in the service: the ticks then leave the due refreshes to it), else each tick refreshes them."""
    times: list[float] = []
    for _ in range(ticks):
        if collector is None:
            clock.t += TICK_S
        else:
            collector.between(jobs, clock)
        t = time.perf_counter()
        jobs.tick_all()
        times.append(time.perf_counter() - t)
    return np.asarray(times) * 1000


def pct(a: np.ndarray | list[float], q: float) -> float:
    """The q-th percentile of timings in ms, to 0.1 ms."""
    return round(float(np.percentile(a, q)), 1)


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
        days_after=2.0,  # the second night's day
        compute=compute,
    )


def night(ctl: Controller, compute: Compute, now_s: float) -> tuple[float, list[Outcome]]:
    """The service's night (run_night: every model's backtest and tuning, recorded), timed."""
    t = time.perf_counter()
    done = run_night(ctl, compute, now_s, backtest_days=14.0)
    seconds = time.perf_counter() - t
    return seconds, [done[job][name] for job in ("backtest", "tuning") for name in sorted(done[job])]


def two_nights(
    models: int, forecaster: str, store: Path, compute: Compute, start: float
) -> tuple[float, float, list[Outcome]]:
    """A first night and the next (the ledger warm) on a fresh sample: (first s, second s, outcomes)."""
    sample = fleet(models, forecaster, store, Clock(start), None)
    t1, first = night(sample, compute, start)
    t2, second = night(sample, compute, start + DAY)
    return t1, t2, first + second


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--backend", choices=("local", "ray"), default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--ray-nodes", type=int, default=0, help="start a Ray cluster of this many nodes here")
    ap.add_argument("--night-beside-tick", action="store_true")
    ap.add_argument("--nightly-models", type=int, default=4)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--forecaster", default="auto-fast")
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        if args.ray_nodes:
            from tests.ray_harness import ray_head

            head = stack.enter_context(ray_head(cpus=1, worker_nodes=args.ray_nodes - 1))
            args.backend, args.ray_address, args.workers = "ray", head.address, args.ray_nodes
        out = run(args)
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:24s} {v}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    start = demo_start_s()
    out: dict[str, Any] = {"models": args.models, "backend": args.backend, "workers": args.workers}

    # -- two nights of a sample of the fleet, on one worker and on --workers (on a cluster: serially here)
    one = LocalCompute(1) if args.ray_address else backend(args.backend, 1, None)
    a1, a2, serial = two_nights(args.nightly_models, args.forecaster, tmp / "night1.db", one, start)
    if args.backend == "ray" and args.ray_address is None:
        one.close()  # a fresh local Ray with --workers CPUs next
    many = backend(args.backend, args.workers, args.ray_address) if args.workers > 1 else one
    b1, b2, parallel = two_nights(args.nightly_models, args.forecaster, tmp / "nightw.db", many, start)
    failed = [o for o in serial + parallel if not o.ok]
    k = args.nightly_models
    out.update(
        nightly_models=k,
        nightly_s=round(b2, 2),
        nightly_1_worker_s=round(a2, 2),
        per_model_s=round(a2 / k, 2),
        first_night_per_model_s=round(a1 / k, 2),
        first_night_s=round(b1, 2),
        speedup_vs_1_worker=round(a1 / b1, 3),
        steady_speedup_vs_1_worker=round(a2 / b2, 3),
        projected_nightly_s=round(b2 / k * args.models, 0),
        identical_to_serial=[o.value for o in serial] == [o.value for o in parallel] and not failed,
        nightly_failures=[f"{o.key}: {o.error}" for o in failed],
    )

    # -- the live loop holding every model
    clock = Clock(start)
    ctl = fleet(args.models, args.forecaster, tmp / "live.db", clock, many)
    heap = Heap()  # as the service runs the tick: the garbage collector after it, not inside it
    jobs = Jobs(ctl, ControllerView(ctl, clock), clock, compute=many, heap=heap)
    t = time.perf_counter()
    jobs.tick_all()  # submits every model's first full fit
    for r in ctl.models.values():
        if r.fitting is not None:
            r.fitting.outcome()  # the bench waits for the fits; the service's tick never does
    out["first_fits_s"] = round(time.perf_counter() - t, 2)
    clock.t += TICK_S
    jobs.tick_all()  # takes the fits into use
    collector = Collector()
    ms = timed_ticks(jobs, clock, args.ticks, collector)
    # the same loop with nothing between the ticks: each tick refreshes what fell due (the tick before the
    # collector took the refreshes), in the same run
    alone = timed_ticks(jobs, clock, args.ticks)
    missing = sum(1 for r in ctl.models.values() if r.forecast is None)
    out.update(
        tick_p50_ms=pct(ms, 50),
        tick_p99_ms=pct(ms, 99),
        tick_max_ms=round(float(ms.max()), 1),
        collector_per_tick_p50_ms=pct(collector.periods, 50),  # the collector's runs between two ticks
        collector_per_tick_p99_ms=pct(collector.periods, 99),
        tick_refreshing_p50_ms=pct(alone, 50),
        tick_refreshing_p99_ms=pct(alone, 99),
        tick_p99_vs_refreshing=round(pct(ms, 99) / pct(alone, 99), 3),
        ticks=args.ticks,
        models_without_forecast=missing,
        rss_mb=round(peak_rss_mb(), 1),
    )
    if args.night_beside_tick and args.backend == "local":
        low = ComputeConfig().worker_nice
        out["tick_beside_night"] = {
            **tick_beside_night(jobs, clock, args, 0, {"nice_0": False}, tmp / "beside-0.db"),
            **tick_beside_night(
                jobs,
                clock,
                args,
                low,
                {f"nice_{low}": False, f"nice_{low}_paused": True},
                tmp / "beside-low.db",
            ),
        }
    if args.shards > 1:  # the same fleet, one of --replicas replicas holding its even share of the shards
        held = HeldShards(args.shards, set(range(0, args.shards, args.replicas)), members=())
        ctl.leader = held
        mine = len(ctl.acting_names())
        ms = timed_ticks(jobs, clock, args.ticks, Collector())
        out["shards"] = {
            "count": args.shards,
            "replicas": args.replicas,
            "held": len(held.mine),
            "models": mine,
            "tick_p50_ms": pct(ms, 50),
            "tick_p99_ms": pct(ms, 99),
        }
    many.close()
    return out


def spaced_ticks(jobs: Jobs, clock: Clock, gap_s: float) -> float:
    """One control tick (ms), then `gap_s` of real time: the service ticks every tick_s, a tick taking a few
    percent of it, and a night runs in between; back-to-back ticks would leave it none."""
    (ms,) = timed_ticks(jobs, clock, 1, Collector())
    time.sleep(gap_s)
    return float(ms)


def tick_beside_night(
    jobs: Jobs, clock: Clock, args: argparse.Namespace, nice: int, settings: dict[str, bool], store: Path
) -> dict[str, Any]:
    """The live loop's ticks while a first night of --workers models fills a pool of --workers workers at
    niceness `nice` (in a thread of this process, on the pool the tick pauses, as the service runs them).
    The ticks take turns over `settings` (name: whether the pool is paused during that tick), so that the
    settings share one night and one stretch of the machine's time; each is compared with idle ticks
    measured just before the night, spaced the same way (a tick's length apart)."""
    gap_s = float(np.percentile(timed_ticks(jobs, clock, 3, Collector()), 50)) / 1000
    idle = np.asarray([spaced_ticks(jobs, clock, gap_s) for _ in range(args.ticks)])
    pool = LocalCompute(args.workers, nice=nice)
    own, jobs.compute = jobs.compute, pool
    sample = fleet(args.workers, args.forecaster, store, Clock(clock.t), None)
    took: list[float] = []

    def night_now() -> None:
        took.append(night(sample, pool, clock.t)[0])

    thread = threading.Thread(target=night_now)
    thread.start()
    times: dict[str, list[float]] = {name: [] for name in settings}
    while thread.is_alive() and min(len(t) for t in times.values()) < args.ticks:
        for name, pause in settings.items():
            pool.pause_for_tick = pause
            times[name].append(spaced_ticks(jobs, clock, gap_s))
    thread.join()
    pool.close()
    jobs.compute = own
    return {
        name: {
            "ticks": len(ms),
            "tick_p50_ms": pct(ms, 50),
            "tick_p99_ms": pct(ms, 99),
            "idle_p50_ms": pct(idle, 50),
            "idle_p99_ms": pct(idle, 99),
            "tick_p50_vs_idle": round(pct(ms, 50) / pct(idle, 50), 3),
            "tick_p99_vs_idle": round(pct(ms, 99) / pct(idle, 99), 3),
            "night_s": round(took[0], 1),  # the night the settings shared
        }
        for name, ms in times.items()
    }


if __name__ == "__main__":
    main()
