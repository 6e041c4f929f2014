"""Recurring edges stay sharp, through forecast, dropout watch and planner: a nightly pause (zeros from 23:32
to midnight), a batch client switching on at 02:00, and a genuine outage at a random hour. The smooth daily
shape alone (5-minute bins, smoothed on the log scale) blurs such an edge over tens of minutes on both
sides; the profile model's per-step correction learns it where it recurs on most recent days."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.run import BacktestConfig, run_backtest
from forecaster.dropouts import DropoutWatch
from forecaster.models import MODELS
from forecaster.types import TrafficSeries

DAY = 86_400
PAUSE_FROM_S = 23 * 3600 + 32 * 60  # 23:32


def pause_series(days: int, seed: int = 3) -> TrafficSeries:
    """1-minute counts around 2,250/min with a daily swing, zero from 23:32 to midnight every day."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440) * 60.0
    hours = (t % DAY) / 3600
    rate = 2700 * (1 + 0.25 * np.sin(2 * np.pi * (hours - 9) / 24))
    values = rng.poisson(rate).astype(float)
    values[(t % DAY) >= PAUSE_FROM_S] = 0.0
    return TrafficSeries("pause", 0.0, 60, values)


def batch_series(days: int, seed: int = 5) -> TrafficSeries:
    """A steady 200/min plus a batch client adding 1,800/min from 02:00 to 05:00 every day."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440) * 60.0
    tod = t % DAY
    rate = 200 + 1800 * ((tod >= 2 * 3600) & (tod < 5 * 3600))
    return TrafficSeries("batch", 0.0, 60, rng.poisson(rate).astype(float))


def at_minute(fc_origin_s: float, when_s: float) -> int:
    return int((when_s - fc_origin_s) // 60)


def test_the_profile_keeps_a_nightly_pause_sharp_on_both_sides() -> None:
    s = pause_series(22)
    origin = 15 * DAY + 23 * 3600  # 23:00 of day 15
    fc = MODELS["profile"]().fit(s.before(origin)).predict(120, [0.5, 0.9])
    truth = s.values[int(origin // 60) : int(origin // 60) + 120]
    for hh, mm in ((23, 25), (23, 31), (0, 0), (0, 1), (0, 10)):  # traffic on both sides of the pause
        k = at_minute(origin, 15 * DAY + ((hh * 60 + mm) % 1440 + (1440 if hh == 0 else 0)) * 60)
        assert fc.quantiles[0.5][k] == pytest.approx(truth[k], rel=0.15), f"{hh:02d}:{mm:02d}"
    pause = slice(at_minute(origin, 15 * DAY + PAUSE_FROM_S), at_minute(origin, 16 * DAY))
    assert float(fc.quantiles[0.9][pause].max()) < 5, "the pause is forecast as a pause"


def test_the_pause_beats_the_weekly_seasonal_naive_and_the_dropout_watch_leaves_it_alone() -> None:
    s = pause_series(22)
    errors: dict[str, list[float]] = {"profile": [], "seasonal_naive_weekly": []}
    for day in range(15, 21):
        origin = day * DAY + 23 * 3600
        truth = s.values[int(origin // 60) : int(origin // 60) + 120]
        for name, err in errors.items():
            fc = MODELS[name]().fit(s.before(origin)).predict(120, [0.5])
            err.append(float(np.abs(fc.mean - truth).mean()))
    assert np.mean(errors["profile"]) < np.mean(errors["seasonal_naive_weekly"])
    # zeros the season expects are not a dropout ...
    hist = s.before(15 * DAY + PAUSE_FROM_S + 20 * 60)
    fc = MODELS["profile"]().fit(s.before(15 * DAY + 23 * 3600)).predict(120, [0.5])
    assert DropoutWatch().check(hist, fc) is None


def test_a_genuine_outage_is_still_a_dropout() -> None:
    s = pause_series(22)
    rng = np.random.default_rng(11)
    hour = int(rng.integers(2, 20))  # a random daytime hour of day 15
    origin = 15 * DAY + hour * 3600
    fc = MODELS["profile"]().fit(s.before(origin)).predict(120, [0.5])
    broken = s.values[: int(origin // 60) + 15].copy()
    broken[-15:] = 0.0  # the collector stopped counting for 15 minutes
    found = DropoutWatch().check(TrafficSeries("pause", 0.0, 60, broken), fc)
    assert found is not None and found.start_s == origin


def test_a_batch_client_switching_on_at_two_is_forecast_at_its_minute() -> None:
    s = batch_series(15)
    origin = 14 * DAY + 1 * 3600  # 01:00 of day 14
    fc = MODELS["profile"]().fit(s.before(origin)).predict(180, [0.5])
    before = at_minute(origin, 14 * DAY + 2 * 3600) - 2  # 01:58
    after = before + 3  # 02:01
    assert fc.quantiles[0.5][before] == pytest.approx(200, rel=0.2)
    assert fc.quantiles[0.5][after] == pytest.approx(2000, rel=0.1)


def test_the_predictive_policy_pre_warms_ahead_of_the_return_after_the_pause() -> None:
    s = pause_series(10)
    cap = float(np.quantile(s.values / 60, 0.999)) / 15  # the p99.9 rate needs 15 replicas
    bt = run_backtest(s, BacktestConfig(capacity_rps=cap, t_load_s=300, policies=("reactive", "predictive")))
    late = {p: r.violations_between(0, 15 * 60) for p, r in bt.results.items()}  # 00:00-00:15
    assert late["reactive"] > 1_000, late  # reactive warms the fleet T_load after the return
    assert late["predictive"] < 0.2 * late["reactive"], late
