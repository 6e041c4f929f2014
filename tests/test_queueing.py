"""The Erlang C staffing rule: textbook values, a seeded M/M/c simulation, and minimality."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from planner.queueing import servers_for_marginal_wait, servers_for_wait, wait_probability


def test_erlang_c_matches_the_textbook_value_for_three_servers_at_two_erlangs() -> None:
    # C(3, 2) = 4/9: the probability that an arrival finds all three servers busy
    assert wait_probability(3, 2.0, 1.0, 0.0) == pytest.approx(4 / 9, rel=1e-12)


def test_an_overloaded_queue_always_waits_and_no_load_never_does() -> None:
    assert wait_probability(4, 4.0, 1.0, 10.0) == 1.0
    assert wait_probability(4, 0.0, 1.0, 0.0) == 0.0
    assert servers_for_wait(0.0, 1.0, 2.0, 0.01) == 0


def simulated_wait_tail(servers: int, offered: float, wait_s: float, n: int = 200_000) -> float:
    """Fraction of requests waiting longer than wait_s in a seeded FIFO M/M/c simulation (mu = 1)."""
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(1.0 / offered, n))
    service = rng.exponential(1.0, n)
    free_at = [0.0] * servers
    late = 0
    for t, s in zip(arrivals.tolist(), service.tolist(), strict=True):
        start = max(t, heapq.heappop(free_at))
        late += start - t > wait_s
        heapq.heappush(free_at, start + s)
    return late / n


@pytest.mark.parametrize(
    ("servers", "offered", "wait_s"),
    [
        pytest.param(3, 2.0, 0.5, id="small-and-busy"),
        pytest.param(12, 9.0, 0.2, id="medium"),
    ],
)
def test_the_formula_agrees_with_a_simulated_queue(servers: int, offered: float, wait_s: float) -> None:
    expected = wait_probability(servers, offered, 1.0, wait_s)
    assert simulated_wait_tail(servers, offered, wait_s) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("rate", [0.01, 0.3, 1.0, 7.5, 40.0])
@pytest.mark.parametrize("target", [0.001, 0.05])
def test_the_staffing_count_is_the_fewest_servers_that_meet_the_target(rate: float, target: float) -> None:
    mu, wait_s = 0.2, 2.0
    n = servers_for_wait(rate, mu, wait_s, target)
    assert n > rate / mu
    assert wait_probability(n, rate / mu, mu, wait_s) <= target
    assert n - 1 <= rate / mu or wait_probability(n - 1, rate / mu, mu, wait_s) > target


def test_headroom_shrinks_relative_to_load_as_load_grows() -> None:
    mu = 0.05
    spare = [servers_for_wait(a * mu, mu, 2.0, 0.01) / a for a in (1, 10, 100, 1000)]
    assert spare == sorted(spare, reverse=True)
    assert math.isclose(spare[-1], 1.0, abs_tol=0.1)


@pytest.mark.parametrize("rate", [0.01, 0.3, 1.0, 7.5, 40.0])
@pytest.mark.parametrize("ratio", [0.01, 0.111, 1.0])
def test_the_marginal_count_minimises_idle_plus_late_cost(rate: float, ratio: float) -> None:
    # c_idle = ratio x c_miss x capacity per replica-second; brute force over every stable count
    mu, wait_s = 0.1, 2.0
    min_averted = ratio * mu
    offered = rate / mu

    def cost(n: int) -> float:
        return n * min_averted + rate * wait_probability(n, offered, mu, wait_s)

    stable = range(math.floor(offered) + 1, math.floor(offered) + 200)
    best = min(stable, key=cost)
    n = servers_for_marginal_wait(rate, mu, wait_s, min_averted)
    assert cost(n) == pytest.approx(cost(best), rel=1e-9)
    late = wait_probability(n, offered, mu, wait_s) - wait_probability(n + 1, offered, mu, wait_s)
    assert rate * late < min_averted  # the next one would not pay for itself


def test_the_marginal_count_is_zero_without_load_and_grows_with_the_price_of_a_late_request() -> None:
    assert servers_for_marginal_wait(0.0, 0.1, 2.0, 0.01) == 0
    counts = [servers_for_marginal_wait(1.0, 0.1, 2.0, m) for m in (1.0, 0.1, 0.01, 0.001)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
