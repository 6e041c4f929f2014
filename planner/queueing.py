"""Queueing staffing: the fewest replicas that keep the chance of waiting past the SLO under a target.

A utilisation target alone is wrong at both ends: at low offered load (a few replicas, long service times)
queueing needs proportionally far more headroom than 20%, and at high load (hundreds of replicas, short
service times) it needs far less. The Erlang C model (M/M/c: Poisson arrivals, exponential service, c
servers, FIFO) gives the probability that a request waits longer than t:

    P(W > t) = C(c, a) * exp(-(c - a) * mu * t)

with a = rate / mu the offered load in replicas and C(c, a) the Erlang C probability of waiting at all.
Exponential service is a conservative stand-in for the near-deterministic service of a model replica
(M/D/c waits are shorter), so the count it gives is an upper bound of what the SLO needs.

How many servers is a cost question, not a fixed probability: a replica is worth its idle cost while it keeps
enough requests from waiting past the SLO. A fixed probability target (say 1%) spends the same per-request
care at 3 a.m. as at the peak, although at 3 a.m. each extra replica saves a few requests an hour: it
provisions low-traffic hours far past where their violations weigh in the overall rate.
`servers_for_marginal_wait` stops adding servers where the next one would keep fewer than a given number of
requests per second from waiting too long, which is what minimises idle cost plus late-request cost.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

EPS = 1e-9


def erlang_b(servers: int, offered: float) -> float:
    """Erlang B (the blocking probability) by its numerically stable recursion."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return b


def late_probability(
    servers: int, offered: float, erlang_b: float, rate_per_server: float, wait_s: float
) -> float:
    """P(wait > wait_s) from the Erlang B value at `servers` (Erlang C from B, times the tail); callers
    walking the counts carry B up by its recursion instead of computing it afresh."""
    c = servers * erlang_b / (servers - offered * (1.0 - erlang_b))
    return min(1.0, c * math.exp(-(servers - offered) * rate_per_server * wait_s))


def _stable_counts(rate_rps: float, rate_per_server: float, wait_s: float) -> Iterator[tuple[int, float]]:
    """(servers, P(wait > wait_s)) for every stable count upwards, Erlang B carried forward (computing it
    afresh per candidate would be quadratic)."""
    offered = rate_rps / rate_per_server
    n = max(1, math.floor(offered + EPS) + 1)
    b = erlang_b(n, offered)
    while True:
        yield n, late_probability(n, offered, b, rate_per_server, wait_s)
        n += 1
        b = offered * b / (n + offered * b)


def wait_probability(servers: int, offered: float, rate_per_server: float, wait_s: float) -> float:
    """P(a request waits longer than wait_s) in an M/M/c queue; 1.0 when the queue is unstable."""
    if offered <= 0:
        return 0.0
    if servers <= offered:
        return 1.0
    return late_probability(servers, offered, erlang_b(servers, offered), rate_per_server, wait_s)


@functools.lru_cache(maxsize=4096)  # the planner asks for the same forecast steps' rates tick after tick
def servers_for_wait(rate_rps: float, rate_per_server: float, wait_s: float, max_probability: float) -> int:
    """The fewest servers with P(wait > wait_s) <= max_probability at `rate_rps` arrivals per second."""
    if rate_rps <= 0:
        return 0
    return next(n for n, late in _stable_counts(rate_rps, rate_per_server, wait_s) if late <= max_probability)


@functools.lru_cache(maxsize=4096)
def servers_for_marginal_wait(
    rate_rps: float, rate_per_server: float, wait_s: float, min_averted_rps: float
) -> int:
    """The fewest (stable) servers at which one more would keep fewer than `min_averted_rps` requests per
    second from waiting longer than wait_s: rate x (P_n - P_n+1) < min_averted_rps.

    With c_idle the cost of a replica-second and c_miss that of a late request, stopping at
    min_averted_rps = c_idle / c_miss minimises replicas x c_idle + late requests x c_miss, since each added
    server saves less than the one before it (P(wait > t) falls ever more slowly as servers are added)."""
    if rate_rps <= 0:
        return 0
    counts = _stable_counts(rate_rps, rate_per_server, wait_s)
    n, late = next(counts)
    for _, late_next in counts:
        if rate_rps * (late - late_next) < min_averted_rps:
            return n
        n, late = n + 1, late_next
    raise AssertionError("unreachable: the counts never end")
