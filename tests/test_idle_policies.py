"""The serverless baselines for the long tail: a fixed keep-alive and the hybrid histogram policy (Shahrad
et al., ATC 2020), replayed on the same simulator as every other policy."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.idle_policies import BIN_S, HybridHistogram, KeepAlive
from backtest.policies import Reactive
from backtest.simulator import simulate

T_LOAD = 300.0
START = 1_800_000_000.0


def reactive(min_replicas: int = 0) -> Reactive:
    return Reactive(1.0, t_load_s=T_LOAD, min_replicas=min_replicas)


def arrivals(hours: float, at_minutes: list[float]) -> np.ndarray:
    a = np.zeros(int(hours * 3600))
    for m in at_minutes:
        a[int(m * 60)] += 1
    return a


def run(policy: KeepAlive | HybridHistogram, a: np.ndarray):  # type: ignore[no-untyped-def]
    return simulate(a, policy, start_s=START, capacity_rps=1.0, t_load_s=T_LOAD, slo_wait_s=2.0)


def test_keepalive_holds_one_replica_for_its_window_after_the_last_request_then_none() -> None:
    a = arrivals(2, [10])
    res = run(KeepAlive(reactive(), 20 * 60), a)
    asked = np.array(res.asked_per_tick)
    minute = np.arange(asked.size) * 30 / 60
    assert asked[(minute > 11) & (minute < 30)].min() == 1, "kept warm within 20 minutes of the request"
    assert asked[minute > 31].max() == 0, "and released after"


def test_a_request_at_zero_is_a_cold_start_that_counts_late() -> None:
    a = arrivals(2, [10, 60])
    res = run(KeepAlive(reactive(), 20 * 60), a)
    assert res.requests == 2
    assert res.slo_violations == 2, "both found no replica: each waited a whole cold start"
    assert res.cold_starts == 2


def test_a_longer_keepalive_serves_the_next_request_warm_for_more_replica_hours() -> None:
    a = arrivals(3, [10, 50, 90, 130])
    short, long = (run(KeepAlive(reactive(), k * 60), a) for k in (20, 45))
    assert long.slo_violations < short.slo_violations
    assert long.replica_seconds > short.replica_seconds


def test_the_idle_policies_need_a_zero_floor() -> None:
    with pytest.raises(ValueError, match="min_replicas 0"):
        KeepAlive(reactive(min_replicas=1), 600)
    with pytest.raises(ValueError, match="min_replicas 0"):
        HybridHistogram(reactive(min_replicas=1), 5, 99, t_load_s=T_LOAD)


def test_the_histogram_learns_a_regular_rhythm_unloads_and_pre_warms_before_the_next_request() -> None:
    every = 40  # minutes between requests, like a client polling on a schedule
    a = arrivals(30, [m for m in range(10, 30 * 60, every)])
    hist = HybridHistogram(reactive(), 5, 99, t_load_s=T_LOAD)
    res = run(hist, a)
    head, tail = hist.windows() or (None, None)
    assert head is not None and tail is not None, "forty idle times in one bin are representative"
    assert head == pytest.approx((every - 1) * BIN_S * 0.9, abs=BIN_S)
    keep = run(KeepAlive(reactive(), every * 60 + 60), a)
    late_ka, late_h = keep.slo_violations, res.slo_violations
    # after the first hours (learning), each request finds the pre-warmed replica
    assert late_h <= 11, f"{late_h} late: the histogram did not pre-warm"
    assert res.replica_seconds < 0.5 * keep.replica_seconds, "and it unloads between the requests"
    assert late_ka <= late_h + 1


def test_an_unrepresentative_histogram_falls_back_to_keeping_the_whole_range() -> None:
    a = arrivals(6, [10, 12])  # one idle time: says nothing about the model
    hist = HybridHistogram(reactive(), 5, 99, t_load_s=T_LOAD)
    res = run(hist, a)
    assert hist.windows() is None
    asked = np.array(res.asked_per_tick)
    assert asked[(13 * 2) : (4 * 60 * 2)].min() == 1, "kept for the histogram's 4-hour range"
    assert asked[int(4.3 * 60 * 2) :].max() == 0


def test_histogram_percentiles_must_narrow() -> None:
    with pytest.raises(ValueError, match="head"):
        HybridHistogram(reactive(), 50, 40, t_load_s=T_LOAD)
