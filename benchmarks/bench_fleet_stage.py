"""The fleet stage's cost per tick for N models sharing a GPU budget.

    python -m benchmarks.bench_fleet_stage [--models 1000] [--ticks 20]

Prints the time of `allocate` per tick (with the state of a fleet whose asks held on the last tick, so
that held replicas may move) (target: under 50 ms for 1,000 models) against the baseline every
autoscaler can do, first come first served within the budget, measured in the same run on the same asks;
and the per-model cost of `marginal_values` (each model's values are computed with its own plan: every
replica, floors and increments, from its p50/p90/p99 paths). Asks are seeded: per model the forecast paths
over a 10-minute window, a capacity, floors and desired counts such that the fleet asks about 1.4x the
budget.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time

from planner.fleet import (
    VALUE_LEVELS,
    FleetRequest,
    FleetState,
    allocate,
    expected_requests,
    marginal_values,
    quantile_weights,
)
from planner.queueing import servers_for_wait


def asks(n: int, seed: int = 0) -> tuple[list[FleetRequest], float, float]:
    rng = random.Random(seed)
    targets = random.Random(seed + 1)  # its own stream: the asks stay those of earlier runs
    out: list[FleetRequest] = []
    t = time.perf_counter()
    weights = quantile_weights(VALUE_LEVELS)
    for i in range(n):
        cap = rng.uniform(1.0, 20.0)
        level = rng.uniform(2.0, 300.0)
        p50 = [level * (1 + 0.2 * rng.random()) for _ in range(20)]
        p90 = [v * rng.uniform(1.2, 1.8) for v in p50]
        p99 = [v * rng.uniform(1.1, 1.4) for v in p90]
        floor = servers_for_wait(level, cap, 2.0, 0.01)
        desired = servers_for_wait(max(p90), cap, 2.0, 0.01) + rng.randint(0, 3)
        scenarios = list(zip(weights, (p50, p90, p99), strict=True))
        values = marginal_values(
            scenarios,
            step_s=30.0,
            capacity_rps=cap,
            slo_wait_s=2.0,
            start=0,
            count=desired,
        )
        out.append(
            FleetRequest(
                f"m{i}",
                desired,
                floor,
                current=rng.randint(floor, desired),
                gpus_per_replica=rng.choice((1, 1, 1, 2, 4)),
                priority=rng.choice((1.0, 1.0, 2.0)),
                values=values[floor:],
                floor_values=values[:floor],
                expected_requests=expected_requests(scenarios, step_s=30.0),
                slo_target=targets.choice((0.99, 0.99, 0.999)),
                floor_hold_s=300.0,
            )
        )
    values_s = (time.perf_counter() - t) / n
    asked = sum(r.desired * r.gpus_per_replica for r in out)
    return out, asked / 1.4, values_s


def first_come(requests: list[FleetRequest], budget: float) -> dict[str, int]:
    """The baseline: each model in arrival order gets what it asked while GPUs last."""
    left, out = budget, {}
    for r in requests:
        n = min(r.desired, int(left // r.gpus_per_replica))
        out[r.model] = n
        left -= n * r.gpus_per_replica
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=20)
    args = ap.parse_args()
    requests, budget, values_s = asks(args.models)
    # the asks are this process's long-lived objects: a full collection walking them is not the stage's
    # cost (the stage's own garbage still triggers the young collections it pays for)
    gc.collect()
    gc.freeze()
    stage, base = [], []
    # the state of a fleet whose asks held on the last tick, a tick ago: every want may move held replicas
    state = FleetState({r.model: r.desired for r in requests})
    for tick in range(args.ticks):
        t = time.perf_counter()
        alloc = allocate(requests, budget, state, now=30.0 * (tick + 1))
        stage.append(time.perf_counter() - t)
        t = time.perf_counter()
        first_come(requests, budget)
        base.append(time.perf_counter() - t)
    p50, b50 = statistics.median(stage), statistics.median(base)
    p95 = sorted(stage)[max(0, math.ceil(0.95 * len(stage)) - 1)]
    print(
        f"{args.models} models, budget {budget:.0f} GPUs, asked {alloc.asked_gpus:.0f}, "
        f"clipped {len(alloc.clipped)}"
    )
    print(
        f"allocate per tick: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {max(stage) * 1000:.1f} ms "
        f"(target < 50 ms at the max: {'MET' if max(stage) < 0.05 else 'NOT MET'}); first-come baseline p50 "
        f"{b50 * 1000:.2f} ms; ratio {p50 / b50:.1f}x"
    )
    print(
        f"marginal_values per model: {values_s * 1000:.2f} ms ({values_s * args.models:.2f} s for all models)"
    )


if __name__ == "__main__":
    main()
