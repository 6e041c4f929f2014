"""Queueing staffing: the fewest replicas that keep the chance of waiting past the SLO under a target.

A utilisation target alone is wrong at both ends: at low offered load (a few replicas, long service times)
queueing needs proportionally far more headroom than 20%, and at high load (hundreds of replicas, short
service times) it needs far less. The Erlang C model (M/M/c: Poisson arrivals, exponential service, c
servers, FIFO) gives the probability that a request waits longer than t:

    P(W > t) = C(c, a) * exp(-(c - a) * mu * t)

with a = rate / mu the offered load in replicas and C(c, a) the Erlang C probability of waiting at all.
Exponential service is a conservative stand-in for the near-deterministic service of a model replica
(M/D/c waits are shorter), so the count it gives is an upper bound of what the SLO needs.
"""

from __future__ import annotations

import math

EPS = 1e-9


def wait_probability(servers: int, offered: float, rate_per_server: float, wait_s: float) -> float:
    """P(a request waits longer than wait_s) in an M/M/c queue; 1.0 when the queue is unstable."""
    if offered <= 0:
        return 0.0
    if servers <= offered:
        return 1.0
    # Erlang B by its stable recursion, then Erlang C from it
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    c = servers * b / (servers - offered * (1.0 - b))
    return min(1.0, c * math.exp(-(servers - offered) * rate_per_server * wait_s))


def servers_for_wait(rate_rps: float, rate_per_server: float, wait_s: float, max_probability: float) -> int:
    """The fewest servers with P(wait > wait_s) <= max_probability at `rate_rps` arrivals per second."""
    if rate_rps <= 0:
        return 0
    offered = rate_rps / rate_per_server
    n = max(1, math.floor(offered + EPS) + 1)
    # Erlang B once per candidate would be quadratic; carry it forward instead
    b = 1.0
    for k in range(1, n + 1):
        b = offered * b / (k + offered * b)
    while True:
        c = n * b / (n - offered * (1.0 - b))
        if c * math.exp(-(n - offered) * rate_per_server * wait_s) <= max_probability:
            return n
        n += 1
        b = offered * b / (n + offered * b)
