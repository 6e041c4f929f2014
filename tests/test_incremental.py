"""Incremental forecasting: what the live loop and the backtest do every few minutes costs the new steps,
not the trailing window, and a daily refit forecasts only the CV windows that are new."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from forecaster.models.profile import SeasonalProfile
from forecaster.models.seasonal_naive import SeasonalNaive
from forecaster.rolling import RollingCache, rolling_forecasts
from forecaster.selection import AutoModel, refit
from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import SECONDS_PER_DAY, Forecast, TrafficSeries

SERIES = generate(DEMO_FLEET[0], days=16, step_s=60, seed=3)
DAY = 1440


def level_from_last_three_days(model: SeasonalProfile, series: TrafficSeries) -> float:
    """The current level as a full re-anchor computes it: the smoother run over the last three days."""
    b = model._batch
    assert b is not None
    keep = 3 * DAY
    r = np.log1p(series.values[-keep:]) - b.seasonal_part(series.times_s()[-keep:])[0] - b.mean_level[0]
    clip = float(b.clip[0]) if b.clip is not None else np.inf
    r = np.clip(np.where(np.isfinite(r), r, 0.0), -clip, clip)
    level, a = 0.0, float(b.alpha[0])
    for x in r:
        level += a * (x - level)
    return level


def test_the_profile_carries_its_level_over_only_the_new_steps_and_lands_where_a_full_reanchor_does() -> None:
    model = SeasonalProfile().fit(SERIES.slice(0, 14 * DAY))
    for end in range(14 * DAY + 5, 15 * DAY, 5):  # a re-anchor every 5 minutes through a day
        model.update(SERIES.slice(0, end))
    now = SERIES.slice(0, 15 * DAY - 5)
    assert model._batch is not None and model._batch.origin_s == now.end_s
    assert model._batch.deviation[0] == pytest.approx(level_from_last_three_days(model, now), abs=1e-6)
    assert model.predict(60, (0.9,)).origin_s == now.end_s


def test_a_profile_update_that_does_not_continue_its_origin_reanchors_from_the_last_three_days() -> None:
    model = SeasonalProfile().fit(SERIES.slice(0, 15 * DAY))
    earlier = SERIES.slice(0, 14 * DAY)  # the history went back (a restart read less): nothing to carry
    model.update(earlier)
    assert model._batch is not None and model._batch.origin_s == earlier.end_s
    assert model._batch.deviation[0] == pytest.approx(level_from_last_three_days(model, earlier), abs=1e-9)


def test_a_seasonal_naive_update_repeats_the_newest_season_with_the_fitted_error_table() -> None:
    model = SeasonalNaive("daily").fit(SERIES.slice(0, 14 * DAY))
    table = model._resid
    newer = SERIES.slice(0, 14 * DAY + 90)
    fc = model.update(newer).predict(DAY, (0.5,))
    assert model._resid is table
    np.testing.assert_array_equal(fc.mean, newer.values[-DAY:])
    assert fc.origin_s == newer.end_s


class Counting:
    """A seasonal naive that counts its forecasts (the work the CV cache saves)."""

    calls = 0
    alias = "counting"

    def __init__(self) -> None:
        self.inner = SeasonalNaive("daily")
        self.report = self.inner.report

    def fit(self, series: TrafficSeries) -> Counting:
        self.inner.fit(series)
        return self

    def update(self, series: TrafficSeries) -> Counting:
        self.inner.update(series)
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        Counting.calls += 1
        return self.inner.predict(h, levels)


def test_the_cv_cache_forecasts_only_the_windows_it_has_not_seen_and_returns_the_same_numbers() -> None:
    cache = RollingCache()
    today = np.arange(3 * DAY, 9 * DAY, 30)
    tomorrow = np.arange(4 * DAY, 10 * DAY, 30)
    Counting.calls = 0
    first = rolling_forecasts(Counting, SERIES, today, 6, cache=cache)
    assert Counting.calls == today.size
    second = rolling_forecasts(Counting, SERIES, tomorrow, 6, cache=cache)
    assert Counting.calls == today.size + DAY // 30  # only the newest day's windows
    overlap = np.isin(today, tomorrow)
    np.testing.assert_array_equal(first.q[overlap], second.q[: overlap.sum()])
    np.testing.assert_array_equal(second.actual[-1], SERIES.values[tomorrow[-1] : tomorrow[-1] + 6])
    cache.prune(SERIES.start_s + 5 * DAY * 60)
    assert min(cache.rows["counting"]) == SERIES.start_s + 5 * DAY * 60


def test_a_cache_for_another_horizon_starts_empty() -> None:
    cache = RollingCache()
    grid = np.arange(3 * DAY, 4 * DAY, 60)
    rolling_forecasts(Counting, SERIES, grid, 6, cache=cache)
    Counting.calls = 0
    rolling_forecasts(Counting, SERIES, grid, 12, cache=cache)
    assert Counting.calls == grid.size


@pytest.mark.parametrize("hour", [pytest.param(0.0, id="at-midnight"), pytest.param(7.3, id="at-07:18")])
def test_autos_daily_refit_reuses_yesterdays_windows_on_a_grid_fixed_in_time(hour: float) -> None:
    day_end = 14 * DAY + round(hour * 60)
    first = AutoModel(horizon_s=360, candidates=("profile", "seasonal_naive_daily"))
    first.fit(SERIES.slice(0, day_end))
    windows = first.cv_cache.windows
    origins = first.cv_origins(SERIES.slice(0, day_end)) * 60 + SERIES.start_s
    assert np.all(origins % first.every_s == 0)
    nxt = refit(first, lambda: AutoModel(horizon_s=360, candidates=("profile", "seasonal_naive_daily")))
    assert isinstance(nxt, AutoModel) and nxt.cv_cache is first.cv_cache
    nxt.fit(SERIES.slice(0, day_end + DAY))
    assert nxt.cv_cache.windows == windows  # one day's new windows in, one day's oldest pruned
    assert nxt.selection is not None and nxt.selection.chosen in ("profile", "seasonal_naive_daily")


def test_a_refit_with_other_candidates_does_not_take_over_the_cache() -> None:
    first = AutoModel(horizon_s=360, candidates=("profile",))
    nxt = refit(first, lambda: AutoModel(horizon_s=360, candidates=("profile", "seasonal_naive_daily")))
    assert isinstance(nxt, AutoModel) and nxt.cv_cache is not first.cv_cache
    assert SECONDS_PER_DAY % nxt.every_s == 0
