"""A discrete-time (1-second) simulation of one model's replicas with cold starts, driven by a trace.

- Arrivals: each trace interval's count is spread over its seconds with a fixed seed (multinomial), a
  fractional count rounded stochastically.
- Service: every ready replica serves `capacity_rps` requests per second from one FIFO queue; a request
  violates the SLO when it waits more than `slo_wait_s` seconds before its service starts. At a capacity of
  1 request/s or more a per-second fluid queue is exact enough; below it each replica is a server busy
  1/capacity seconds per request (`_ServerQueue`), since the fluid would smear one request over minutes.
- Replicas: one asked for becomes ready T_load later (fixed, or drawn per replica from `t_load_sampler`); one
  released stops at once (loading ones are cancelled first). Cost is replica-seconds, loading included.
- Control: the policy is called every `tick_s` with what a live controller would see at that moment (past
  arrivals, the queue, replicas asked for and ready), never the future (the oracle aside, by construction).
- The run starts warm: what the policy asks for at time 0 is ready at time 0.

The per-second loop is plain Python over a FIFO of (arrival second, count) blocks, with a fast path for the
common tick where the queue is empty, no replica becomes ready and no second exceeds capacity, and within a
busier tick for each second whose arrivals find no queue and are served within it (a test holds both to the
plain queue, float for float).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries


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


class Observation(NamedTuple):
    """What a controller sees at a tick. `now_s` is epoch seconds; rates are requests per second. A named
    tuple, not a dataclass: a night makes one for each of its settings' 2,880 ticks a day, and a frozen
    dataclass's construction cost more than most policies' decisions."""

    now_s: float
    elapsed_s: int  # seconds since the start of the simulation
    observed_rps: float  # mean arrival rate over the last tick
    queue_length: float
    asked: int  # replicas asked for (loading + ready)
    ready: int
    # requests that arrived in the last `window_s` seconds (at most since the start): a live controller
    # can ask its metrics for a rate over any trailing window. Required: a default of 0 would read as idle
    arrived: Callable[[float], float]


TOD_BIN_S = 300  # bins of ReplayResult.tod_violations


class Policy(Protocol):
    name: str

    def decide(self, obs: Observation) -> int: ...


@dataclass
class ReplayResult:
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
    # per simulated day (day k = seconds [k x 86,400, (k + 1) x 86,400) from the start), scored part only:
    # the walk-forward comparison and tuning select on these; violations count on their arrival's day
    daily_requests: FloatArray = field(default_factory=lambda: np.zeros(0))
    daily_violations: FloatArray = field(default_factory=lambda: np.zeros(0))
    daily_replica_seconds: FloatArray = field(default_factory=lambda: np.zeros(0))
    # violations by the UTC time of day they arrived at, in TOD_BIN_S bins: where in the day a policy is late
    # (the return after a nightly pause, the morning rise); `start_tod_s` is the replay's start time of day
    tod_violations: FloatArray = field(default_factory=lambda: np.zeros(SECONDS_PER_DAY // TOD_BIN_S))
    start_tod_s: float = 0.0

    def violate(self, count: float, arrived_s: float) -> None:
        self.slo_violations += count
        self.daily_violations[int(arrived_s // SECONDS_PER_DAY)] += count
        self.tod_violations[int(((arrived_s + self.start_tod_s) % SECONDS_PER_DAY) // TOD_BIN_S)] += count

    def violations_between(self, from_tod_s: float, to_tod_s: float) -> float:
        """Violations that arrived in [from, to) of the day (UTC seconds; to < from wraps midnight)."""
        b = np.arange(self.tod_violations.size) * TOD_BIN_S
        after, before = b >= from_tod_s, b < to_tod_s
        inside = after & before if from_tod_s <= to_tod_s else after | before
        return float(self.tod_violations[inside].sum())

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


def by_tick(per_second: FloatArray, tick_s: int) -> FloatArray:
    """(ticks x tick_s) view of a per-second array, zero-padded to whole ticks."""
    n_ticks = math.ceil(per_second.size / tick_s)
    padded = np.zeros(n_ticks * tick_s)
    padded[: per_second.size] = per_second
    return padded.reshape(n_ticks, tick_s)


class _Replicas:
    """Replicas asked for: `ready` serve now, `loading` hold the seconds at which they will."""

    def __init__(self, sample: TLoadSampler) -> None:
        self.ready = 0
        self.loading: list[float] = []  # sorted
        self.sample = sample

    @property
    def asked(self) -> int:
        return self.ready + len(self.loading)

    def apply(self, want: int, t0: int, first: bool) -> tuple[int, int]:
        """Move to `want` replicas at t0; returns (cold starts begun, ready replicas stopped)."""
        asked = self.asked
        if first:
            self.ready, self.loading = want, []  # the run starts warm
            return 0, 0
        if want > asked:
            self.loading = sorted(self.loading + [t0 + max(0.0, x) for x in self.sample(want - asked)])
            return want - asked, 0
        drop = asked - want
        cancel = min(drop, len(self.loading))
        if cancel:
            self.loading = self.loading[: len(self.loading) - cancel]  # the latest to finish loading go first
        self.ready -= drop - cancel
        return 0, drop - cancel

    def promote_until(self, t: float) -> list[float]:
        """Loading replicas ready by second t become ready; returns their ready times."""
        done = []
        while self.loading and self.loading[0] <= t:
            done.append(self.loading.pop(0))
            self.ready += 1
        return done


class _FluidQueue:
    """Capacity of at least 1 request/s per replica: each second the ready replicas serve up to
    ready x capacity requests from the FIFO; a request served t seconds after it arrived waited t seconds."""

    def __init__(self, capacity_rps: float, slo_wait_s: float, score_from_s: int, res: ReplayResult) -> None:
        self.cap, self.slo, self.score_from, self.res = capacity_rps, slo_wait_s, score_from_s, res
        self.queue: deque[list[float]] = deque()  # [arrival second, count]
        self.queued = 0.0

    def waiting(self, t: int) -> float:
        return self.queued

    def removed(self, n: int, t: int) -> None:
        return None

    def run_tick(
        self,
        reps: _Replicas,
        t0: int,
        t1: int,
        arr: Sequence[float],
        t_max: float,
        t_sum: float,
        scored: bool,
    ) -> None:
        res = self.res
        cap = reps.ready * self.cap
        if not self.queue and (not reps.loading or reps.loading[0] >= t1) and t_max <= cap:
            if scored:  # fast path: nothing queued, nothing becomes ready, no second beyond capacity
                res.idle_replica_seconds += (cap * (t1 - t0) - t_sum) / self.cap
            return
        queue, slo, score_from, per_replica = self.queue, self.slo, self.score_from, self.cap
        loading, queued = reps.loading, self.queued  # promote_until pops from this list in place
        for t in range(t0, t1):
            if loading and loading[0] <= t:
                reps.promote_until(t)
            a = arr[t]
            budget = reps.ready * per_replica
            if not queue and (not a or (budget > 1e-12 and a <= budget)):
                # nothing waiting, and this second's arrivals (if any) served within it: the queue's own
                # steps below, without the block they would append and pop (the same floats)
                if a:
                    queued += a
                    budget -= a
                    queued -= a
            else:
                if a:
                    queue.append([t, a])
                    queued += a
                while budget > 1e-12 and queue:
                    block = queue[0]
                    served = block[1] if block[1] <= budget else budget
                    if t - block[0] > slo and block[0] >= score_from:
                        res.violate(served, block[0])
                    budget -= served
                    queued -= served
                    if served == block[1]:
                        queue.popleft()
                    else:
                        block[1] -= served
            if scored:
                res.idle_replica_seconds += budget / per_replica
        self.queued = queued

    def finish(self, n_sec: int) -> None:
        for t_arr, count in self.queue:  # still waiting at the end, and already too long
            if n_sec - t_arr > self.slo and t_arr >= self.score_from:
                self.res.violate(count, t_arr)


class _ServerQueue:
    """Capacity under 1 request/s per replica: each replica is a server busy 1/capacity seconds per request
    (a sparse series whose busiest second needs 15 replicas has service times of seconds to minutes, which a
    per-second fluid would smear). FIFO: a request starts on the server that frees first; requests already
    started on a released replica are let finish (the replica drains)."""

    def __init__(self, capacity_rps: float, slo_wait_s: float, score_from_s: int, res: ReplayResult) -> None:
        self.service_s = 1.0 / capacity_rps
        self.slo, self.score_from, self.res = slo_wait_s, score_from_s, res
        self.free: list[float] = []  # heap of the times at which each ready server is next free
        self.pending: deque[int] = deque()  # arrivals waiting while no server is ready at all
        self.starts: deque[float] = deque()  # start times of assigned requests (non-decreasing)

    def waiting(self, t: int) -> float:
        while self.starts and self.starts[0] <= t:
            self.starts.popleft()
        return float(len(self.starts) + len(self.pending))

    def removed(self, n: int, t: int) -> None:
        for _ in range(min(n, len(self.free))):
            heapq.heappop(self.free)  # the idle (or soonest free) servers leave first

    def _assign(self, t_arr: int) -> None:
        free = heapq.heappop(self.free)
        start = free if free > t_arr else float(t_arr)
        heapq.heappush(self.free, start + self.service_s)
        self.starts.append(start)
        if t_arr >= self.score_from:
            if start - t_arr > self.slo:
                self.res.violate(1, t_arr)
            self.res.idle_replica_seconds -= self.service_s  # busy time, netted against ready time below

    def run_tick(
        self,
        reps: _Replicas,
        t0: int,
        t1: int,
        arr: Sequence[float],
        t_max: float,
        t_sum: float,
        scored: bool,
    ) -> None:
        for ready_at in reps.promote_until(t1 - 1):
            heapq.heappush(self.free, max(ready_at, float(t0)))
        while self.pending and self.free:
            self._assign(self.pending.popleft())
        if scored:
            self.res.idle_replica_seconds += reps.ready * (t1 - t0)
        if not t_sum:
            return
        for t in range(t0, t1):
            for _ in range(int(arr[t])):
                if self.free:
                    self._assign(t)
                else:
                    self.pending.append(t)

    def finish(self, n_sec: int) -> None:
        for t_arr in self.pending:
            if n_sec - t_arr > self.slo and t_arr >= self.score_from:
                self.res.violate(1, t_arr)


@dataclass(frozen=True)
class Ticks:
    """A replay's arrivals as the step loop reads them, per tick and per second in Python floats: prepared
    once per arrivals and tick and shared by every setting replayed on them (a night replays each day for
    dozens of settings, and numpy's scalar reads in the loop cost more than the arithmetic they fed)."""

    n_sec: int
    tick_s: int
    tick_max: list[float]  # the busiest second of each tick
    tick_sum: list[float]  # requests in each tick
    # per second, as C doubles (8 bytes a value, not a list's 32: a night keeps every day's replay until it
    # ends), read as Python floats
    per_second: Sequence[float]  # requests in each second, zero-padded to whole ticks
    before_second: Sequence[float]  # [t]: requests arrived before second t

    @classmethod
    def of(cls, arrivals: FloatArray, tick_s: int) -> Ticks:
        if tick_s <= 0:
            raise ValueError("tick_s must be > 0")
        ticks = by_tick(arrivals, tick_s)
        return cls(
            int(arrivals.size),
            tick_s,
            ticks.max(axis=1).tolist(),
            ticks.sum(axis=1).tolist(),
            array("d", ticks.reshape(-1).tobytes()),
            array("d", np.concatenate([[0.0], np.cumsum(arrivals)]).tobytes()),
        )


def _arrived_before(before_second: Sequence[float], t0: int) -> Callable[[float], float]:
    def arrived(window_s: float) -> float:
        return before_second[t0] - before_second[max(0, t0 - int(window_s))]

    return arrived


def simulate(
    arrivals: FloatArray | Ticks,
    policy: Policy,
    *,
    start_s: float,
    capacity_rps: float,
    t_load_s: float,
    slo_wait_s: float,
    tick_s: int = 30,
    score_from_s: int = 0,
    t_load_sampler: TLoadSampler | None = None,
) -> ReplayResult:
    """Run `policy` against per-second `arrivals` starting at epoch `start_s`. Requests arriving before
    `score_from_s` (seconds from the start) are served but not scored, nor are their replica-seconds."""
    steps = stepping(
        arrivals,
        policy.name,
        start_s=start_s,
        capacity_rps=capacity_rps,
        t_load_s=t_load_s,
        slo_wait_s=slo_wait_s,
        tick_s=tick_s,
        score_from_s=score_from_s,
        t_load_sampler=t_load_sampler,
    )
    try:
        obs = next(steps)
        while True:
            obs = steps.send(int(policy.decide(obs)))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def stepping(
    arrivals: FloatArray | Ticks,
    name: str,
    *,
    start_s: float,
    capacity_rps: float,
    t_load_s: float,
    slo_wait_s: float,
    tick_s: int = 30,
    score_from_s: int = 0,
    t_load_sampler: TLoadSampler | None = None,
) -> Generator[Observation, int, ReplayResult]:
    """The simulation one tick at a time: yields each tick's Observation, takes the replica count to run
    with (send), and returns the ReplayResult. `simulate` drives it with one policy; the fleet backtest
    drives many in lockstep, so a shared budget can be divided before any of them applies its count.
    `arrivals`: per second, or already cut into ticks of `tick_s` (Ticks.of, shared by many settings)."""
    if capacity_rps <= 0 or tick_s <= 0 or t_load_s < 0 or slo_wait_s < 0:
        raise ValueError("capacity_rps and tick_s must be > 0, t_load_s and slo_wait_s >= 0")
    cut = arrivals if isinstance(arrivals, Ticks) else Ticks.of(arrivals, tick_s)
    if cut.tick_s != tick_s:
        raise ValueError(f"arrivals cut into ticks of {cut.tick_s} s, replayed at a tick of {tick_s} s")
    n_sec, tick_max, tick_sum, arr = cut.n_sec, cut.tick_max, cut.tick_sum, cut.per_second
    before_second = cut.before_second
    n_ticks = len(tick_sum)

    n_days = max(1, math.ceil(n_sec / SECONDS_PER_DAY))
    res = ReplayResult(
        name,
        daily_requests=np.zeros(n_days),
        daily_violations=np.zeros(n_days),
        daily_replica_seconds=np.zeros(n_days),
        start_tod_s=float(start_s % SECONDS_PER_DAY),
    )
    reps = _Replicas(t_load_sampler or (lambda n: [t_load_s] * n))
    service: _FluidQueue | _ServerQueue = (
        _FluidQueue(capacity_rps, slo_wait_s, score_from_s, res)
        if capacity_rps >= 1.0
        else _ServerQueue(capacity_rps, slo_wait_s, score_from_s, res)
    )
    server = isinstance(service, _ServerQueue)
    # the scored totals, summed here in the order the result's fields were (the same floats) and written to
    # it once at the end: attribute and numpy scalar updates were most of a quiet tick's cost
    cold_starts, peak, replica_seconds, requests = 0, 0, 0.0, 0.0
    daily_replica_seconds, daily_requests = [0.0] * n_days, [0.0] * n_days
    ready_per_tick, asked_per_tick = res.ready_per_tick, res.asked_per_tick
    last_rps = tick_sum[0] / tick_s if n_ticks else 0.0
    for k in range(n_ticks):
        t0 = k * tick_s
        t1 = min(t0 + tick_s, n_sec)
        scored = t0 >= score_from_s
        before = reps.ready
        asked = yield Observation(
            start_s + t0,
            t0,
            last_rps,
            service.waiting(t0),
            reps.asked,
            before,
            _arrived_before(before_second, t0),
        )
        started, stopped = reps.apply(max(0, int(asked)), t0, first=k == 0)
        if k == 0 and server:
            for _ in range(reps.ready - before):
                heapq.heappush(service.free, 0.0)  # type: ignore[union-attr]
        if stopped:
            service.removed(stopped, t0)
        now_asked = reps.asked  # promotions within the tick move replicas from loading to ready, not this
        if scored:
            cold_starts += started
            if now_asked > peak:
                peak = now_asked
            replica_seconds += now_asked * (t1 - t0)
            requests += tick_sum[k]
            day = int(t0 // SECONDS_PER_DAY)  # a tick that straddles midnight counts on its first day
            daily_replica_seconds[day] += now_asked * (t1 - t0)
            daily_requests[day] += tick_sum[k]
        service.run_tick(reps, t0, t1, arr, tick_max[k], tick_sum[k], scored)
        ready_per_tick.append(reps.ready)
        asked_per_tick.append(now_asked)
        last_rps = tick_sum[k] / tick_s
    service.finish(n_sec)
    res.cold_starts, res.peak_replicas = cold_starts, peak
    res.replica_seconds, res.requests = replica_seconds, requests
    res.daily_replica_seconds[:] = daily_replica_seconds
    res.daily_requests[:] = daily_requests
    return res
