"""The policies serverless platforms use to scale an idle model to zero, as baselines for the long tail.

- keepalive-<K>: a fixed keep-alive: the reactive autoscaler (floor zero) above one replica, and one replica
  kept for K seconds after the last request, then none; the first request after that is a cold start.
  What the big clouds run for functions (10 to 20 minutes) and Knative's scale-to-zero grace period.
- histogram-<head>-<tail>: the hybrid histogram policy of Shahrad et al., "Serverless in the Wild"
  (USENIX ATC 2020), as published: per model, a histogram of idle times (between consecutive requests) in
  1-minute bins over a 4-hour range, learned online from the requests it has seen. After each request the
  model is unloaded, pre-warmed at the head percentile of its idle times (minus 10%) and kept until the
  tail percentile (plus 10%); published: the 5th and the 99th. When the histogram is not representative
  (fewer than MIN_IDLE_TIMES idle times, a bin-count coefficient of variation under 2, or most idle times
  past the range) it falls back to the fixed keep-alive of the whole range. One adaptation to GPU
  replicas: the published policy loads at the head (a function loads in a second); a replica takes
  T_load, so it is asked for T_load before the head, and kept from the request on when the head is sooner.

Both see what a live controller sees (Observation: past arrivals to the second, the queue), never the
future; each has one monotone knob for tuning (backtest/tuning.py): K falling, the percentiles narrowing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from backtest.policies import Reactive
from backtest.simulator import Observation

RANGE_S = 4 * 3600  # the histogram's range
BIN_S = 60
MARGIN = 0.1  # the published 10% margin: pre-warm 10% earlier, keep alive 10% longer
MIN_IDLE_TIMES = 10  # fewer idle times than this say nothing about a model's rhythm
MIN_CV = 2.0  # the published representativeness test: bin counts' coefficient of variation
MAX_OUT_OF_RANGE = 0.5  # a model mostly idle past the range is not described by the histogram


class _Arrivals:
    """The last arrival a controller has seen, to the second, and the idle times between arrivals (those
    within one tick after its first are under a tick, so 0 in minute bins)."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.last_s: float | None = None

    def see(self, obs: Observation) -> list[float]:
        """Record the last tick's arrivals; returns the idle times (seconds) they ended."""
        w = int(min(self.tick_s, obs.elapsed_s))
        n = obs.arrived(w) if w > 0 else 0.0
        if n <= 0:
            return []
        first = obs.now_s - _smallest(lambda s: obs.arrived(s) >= n, w)  # the tick's first arrival
        last = obs.now_s - _smallest(lambda s: obs.arrived(s) > 0, w) + 1  # and its last
        idle = [] if self.last_s is None else [max(0.0, first - self.last_s)]
        idle += [0.0] * (int(n) - 1)
        self.last_s = last
        return idle


def _smallest(ok: Callable[[int], bool], hi: int) -> int:
    """The smallest window s in [1, hi] with ok(s) (ok is monotone in s and true at hi): a bisection."""
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


class KeepAlive:
    """One replica kept `keep_alive_s` after the last request; the reactive autoscaler above it."""

    def __init__(self, reactive: Reactive, keep_alive_s: float, *, name: str | None = None) -> None:
        if reactive.spec.min_replicas != 0:
            raise ValueError(
                "a keep-alive policy scales to zero: its reactive autoscaler needs min_replicas 0"
            )
        self.reactive = reactive
        self.keep_alive_s = keep_alive_s
        self.name = name or f"keepalive-{keep_alive_s / 60:g}m"
        self.seen = _Arrivals(reactive.spec.tick_s)

    def decide(self, obs: Observation) -> int:
        n = self.reactive.decide(obs)
        self.seen.see(obs)
        last = self.seen.last_s
        if obs.queue_length > 0 or (last is not None and obs.now_s - last < self.keep_alive_s):
            return max(n, 1)
        return 0


class HybridHistogram:
    """The hybrid histogram policy (module docstring) at (head, tail) percentiles of the idle times."""

    def __init__(
        self,
        reactive: Reactive,
        head_pct: float,
        tail_pct: float,
        *,
        t_load_s: float,
        name: str | None = None,
    ) -> None:
        if reactive.spec.min_replicas != 0:
            raise ValueError(
                "a histogram policy scales to zero: its reactive autoscaler needs min_replicas 0"
            )
        if not 0 <= head_pct < tail_pct <= 100:
            raise ValueError(f"percentiles head={head_pct}, tail={tail_pct}: need 0 <= head < tail <= 100")
        self.reactive = reactive
        self.head_pct, self.tail_pct = head_pct, tail_pct
        self.t_load_s = t_load_s
        self.name = name or f"histogram-{head_pct:g}-{tail_pct:g}"
        self.seen = _Arrivals(reactive.spec.tick_s)
        self.bins = np.zeros(RANGE_S // BIN_S, dtype=np.int64)
        self.out_of_range = 0

    def windows(self) -> tuple[float, float] | None:
        """(pre-warm, keep-alive end) in seconds after a request, or None when not representative."""
        total = int(self.bins.sum())
        seen = total + self.out_of_range
        if total < MIN_IDLE_TIMES or self.out_of_range > MAX_OUT_OF_RANGE * seen:
            return None
        mean = self.bins.mean()
        if self.bins.std() < MIN_CV * mean:
            return None
        cum = np.cumsum(self.bins) / total
        head_bin = int(np.searchsorted(cum, self.head_pct / 100, side="left"))
        tail_bin = int(np.searchsorted(cum, self.tail_pct / 100 - 1e-12, side="left"))
        head = head_bin * BIN_S * (1 - MARGIN) if self.head_pct > 0 else 0.0  # the bin's lower edge
        tail = (tail_bin + 1) * BIN_S * (1 + MARGIN)  # the bin's upper edge
        return head, tail

    def decide(self, obs: Observation) -> int:
        n = self.reactive.decide(obs)
        for idle in self.seen.see(obs):
            if idle < RANGE_S:
                self.bins[int(idle // BIN_S)] += 1
            else:
                self.out_of_range += 1
        last = self.seen.last_s
        if obs.queue_length > 0:
            return max(n, 1)
        if last is None:
            return n  # no request seen yet: nothing to time a pre-warm from
        if obs.now_s - last <= self.reactive.spec.tick_s:
            return max(n, 1)  # a request in the last tick: it is being served
        w = self.windows()
        since = obs.now_s - last
        if w is None:
            warm = since < RANGE_S  # the fallback: the standard keep-alive of the whole range
        else:
            head, tail = w
            warm = head - self.t_load_s <= since < tail
        return max(n, 1) if warm else 0
