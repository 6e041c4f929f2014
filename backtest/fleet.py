"""A discrete-time (1-second) simulation of a serving fleet with cold starts, driven by a trace.

- Arrivals: each trace interval's count is spread over its seconds with a fixed seed (multinomial), a
  fractional count rounded stochastically.
- Service: every ready replica serves `capacity_rps` requests per second from one FIFO queue; a request
  violates the SLO when it waits more than `slo_wait_s` seconds before its service starts.
- Replicas: one asked for becomes ready T_load later (fixed, or drawn per replica from `t_load_sampler`); one
  released stops at once (loading ones are cancelled first). Cost is replica-seconds, loading included.
- Control: the policy is called every `tick_s` with what a live controller would see at that moment (past
  arrivals, the queue, replicas asked for and ready), never the future (the oracle aside, by construction).
- The run starts warm: what the policy asks for at time 0 is ready at time 0.

The per-second loop is plain Python over a FIFO of (arrival second, count) blocks, with a fast path for the
common tick where the queue is empty, no replica becomes ready and no second exceeds capacity.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from forecaster.types import FloatArray, TrafficSeries


def spread_arrivals(series: TrafficSeries, seed: int = 0) -> FloatArray:
    """Requests arriving in each second of the series' span (integers, as floats)."""
    rng = np.random.default_rng(seed)
    counts = np.where(np.isfinite(series.values), series.values, 0.0)
    whole = np.floor(counts)
    n = (whole + (rng.random(counts.size) < counts - whole)).astype(np.int64)
    s = series.step_s
    if s == 1:
        return n.astype(np.float64)
    per_second = rng.multinomial(n, np.full(s, 1.0 / s))  # (intervals, s)
    return per_second.reshape(-1).astype(np.float64)


@dataclass(frozen=True)
class Observation:
    """What a controller sees at a tick. `now_s` is epoch seconds; rates are requests per second."""

    now_s: float
    elapsed_s: int  # seconds since the start of the simulation
    observed_rps: float  # mean arrival rate over the last tick
    queue_length: float
    asked: int  # replicas asked for (loading + ready)
    ready: int


class Policy(Protocol):
    name: str

    def decide(self, obs: Observation) -> int: ...


@dataclass
class FleetResult:
    policy: str
    requests: float = 0.0
    slo_violations: float = 0.0
    replica_seconds: float = 0.0
    idle_replica_seconds: float = 0.0
    cold_starts: int = 0
    peak_replicas: int = 0
    # per tick, for plots: ready replicas and the demand (requests per second) of that tick
    ready_per_tick: list[int] = field(default_factory=list)
    asked_per_tick: list[int] = field(default_factory=list)

    @property
    def slo_violation_rate(self) -> float:
        return self.slo_violations / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": round(self.requests),
            "slo_violations": round(self.slo_violations, 1),
            "slo_violation_rate": round(self.slo_violation_rate, 6),
            "replica_hours": round(self.replica_seconds / 3600, 3),
            "idle_replica_hours": round(self.idle_replica_seconds / 3600, 3),
            "cold_starts": self.cold_starts,
            "peak_replicas": self.peak_replicas,
        }


TLoadSampler = Callable[[int], list[float]]  # n -> n load times in seconds


def lognormal_t_load(median_s: float, sigma: float, seed: int = 0) -> TLoadSampler:
    """Cold starts drawn from a lognormal with the given median and log-scale sigma (seeded): real load
    times have a long right tail (a slow image pull, a busy node)."""
    rng = np.random.default_rng(seed)

    def sample(n: int) -> list[float]:
        return [float(x) for x in median_s * np.exp(sigma * rng.standard_normal(n))]

    return sample


def simulate(
    arrivals: FloatArray,
    policy: Policy,
    *,
    start_s: float,
    capacity_rps: float,
    t_load_s: float,
    slo_wait_s: float,
    tick_s: int = 30,
    score_from_s: int = 0,
    t_load_sampler: TLoadSampler | None = None,
) -> FleetResult:
    """Run `policy` against per-second `arrivals` starting at epoch `start_s`. Requests arriving before
    `score_from_s` (seconds from the start) are served but not scored, nor are their replica-seconds."""
    if capacity_rps <= 0 or tick_s <= 0 or t_load_s < 0 or slo_wait_s < 0:
        raise ValueError("capacity_rps and tick_s must be > 0, t_load_s and slo_wait_s >= 0")
    n_sec = int(arrivals.size)
    n_ticks = math.ceil(n_sec / tick_s)
    padded = np.zeros(n_ticks * tick_s)
    padded[:n_sec] = arrivals
    by_tick = padded.reshape(n_ticks, tick_s)
    tick_max = by_tick.max(axis=1).tolist()
    tick_sum = by_tick.sum(axis=1).tolist()
    arr = padded.tolist()

    res = FleetResult(policy.name)
    queue: deque[list[float]] = deque()  # [arrival second, count]
    queued = 0.0
    ready = 0
    loading: list[float] = []  # ready times (seconds from start), kept sorted
    sample = t_load_sampler or (lambda n: [t_load_s] * n)
    last_rps = tick_sum[0] / tick_s if n_ticks else 0.0
    slo = slo_wait_s
    for k in range(n_ticks):
        t0 = k * tick_s
        scored = t0 >= score_from_s
        obs = Observation(start_s + t0, t0, last_rps, queued, ready + len(loading), ready)
        want = max(0, int(policy.decide(obs)))
        asked = ready + len(loading)
        if k == 0:
            ready, loading = want, []  # warm start
        elif want > asked:
            new = sorted(t0 + max(0.0, x) for x in sample(want - asked))
            loading = sorted(loading + new)
            if scored:
                res.cold_starts += want - asked
        elif want < asked:
            drop = asked - want
            cancel = min(drop, len(loading))
            if cancel:
                loading = loading[: len(loading) - cancel]  # the latest to finish loading go first
            ready -= drop - cancel
        asked = ready + len(loading)
        res.peak_replicas = max(res.peak_replicas, asked) if scored else res.peak_replicas
        t1 = min(t0 + tick_s, n_sec)
        if scored:
            res.replica_seconds += asked * (t1 - t0)
            res.requests += tick_sum[k]
        # fast path: nothing queued, nothing becomes ready, no second beyond capacity
        cap = ready * capacity_rps
        if not queue and (not loading or loading[0] >= t1) and tick_max[k] <= cap:
            if scored:
                res.idle_replica_seconds += (cap * (t1 - t0) - tick_sum[k]) / capacity_rps
        else:
            for t in range(t0, t1):
                while loading and loading[0] <= t:
                    loading.pop(0)
                    ready += 1
                cap = ready * capacity_rps
                a = arr[t]
                if a:
                    queue.append([t, a])
                    queued += a
                budget = cap
                while budget > 1e-12 and queue:
                    block = queue[0]
                    served = block[1] if block[1] <= budget else budget
                    if t - block[0] > slo and block[0] >= score_from_s:
                        res.slo_violations += served
                    budget -= served
                    queued -= served
                    if served == block[1]:
                        queue.popleft()
                    else:
                        block[1] -= served
                if scored:
                    res.idle_replica_seconds += budget / capacity_rps
        res.ready_per_tick.append(ready)
        res.asked_per_tick.append(ready + len(loading))
        last_rps = tick_sum[k] / tick_s
    # whatever is still queued at the end and has already waited too long is a violation
    for t_arr, count in queue:
        if n_sec - t_arr > slo and t_arr >= score_from_s:
            res.slo_violations += count
    return res
