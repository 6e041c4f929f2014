"""Model choice by rolling-origin CV, and conformal calibration that makes quantiles mean what they say."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.evaluation import coverage
from forecaster.models.base import FitReport, ModelError
from forecaster.models.profile import SeasonalProfile
from forecaster.rolling import CAL_LEVELS, RollingForecasts, origin_grid, rolling_forecasts
from forecaster.selection import AutoModel, Calibrator, _conformal_shift, chosen_run, point_run, select
from forecaster.types import Forecast, TrafficSeries
from tests.conftest import periodic_series


class Overconfident:
    """The profile model with its intervals squeezed 5x toward the median: a badly calibrated model."""

    alias = "overconfident"

    def __init__(self) -> None:
        self.inner = SeasonalProfile()
        self.report = FitReport(self.alias)

    def fit(self, series: TrafficSeries) -> Self:
        self.inner.fit(series)
        return self

    def update(self, series: TrafficSeries) -> Self:
        self.inner.update(series)
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        fc = self.inner.predict(h, sorted(set(levels) | {0.5}))
        med = fc.quantiles[0.5]
        q = {lv: med + (fc.quantiles[lv] - med) / 5 for lv in levels}
        return Forecast(fc.origin_s, fc.step_s, fc.mean, q, self.alias)


@pytest.fixture(scope="module")
def noisy() -> TrafficSeries:
    return periodic_series(16, 600, noise=0.3, seed=5)


def test_conformal_calibration_restores_coverage_of_an_overconfident_model(noisy: TrafficSeries) -> None:
    origins = origin_grid(noisy, first_s=3 * 86400, last_s=noisy.end_s - 6 * 600, every_s=3600, horizon=6)
    rf = rolling_forecasts(Overconfident, noisy, origins, 6)
    first, second = np.arange(origins.size) < origins.size // 2, np.arange(origins.size) >= origins.size // 2
    cal = Calibrator.fit(rf, np.flatnonzero(first), noisy.step_s)
    held_out = np.flatnonzero(second)
    raw = Calibrator.identity(rf.levels).apply_rolling(rf, held_out, (0.9,))[0.9]
    fixed = cal.apply_rolling(rf, held_out, (0.9,))[0.9]
    act = rf.actual[held_out]
    assert coverage(act, raw) < 0.75
    assert 0.85 <= coverage(act, fixed) <= 0.95


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=5, max_size=200),
    st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]),
)
def test_the_conformal_shift_covers_at_least_its_level_of_the_scores(
    scores: list[float], level: float
) -> None:
    s = np.asarray(scores)
    shift = _conformal_shift(s, np.ones(s.size), level)
    assert np.mean(s <= shift) >= level - 1e-12 or shift == s.max()


def test_selection_prefers_the_model_that_knows_the_season_and_explains_why(noisy: TrafficSeries) -> None:
    from forecaster.models import MODELS

    origins = origin_grid(noisy, first_s=3 * 86400, last_s=noisy.end_s - 6 * 600, every_s=7200, horizon=6)
    runs = [rolling_forecasts(MODELS[a], noisy, origins, 6) for a in ("recent_level", "profile")]
    sel = select(runs, np.arange(origins.size), noisy.step_s)
    assert sel.chosen == "profile" and sel.members == ("profile",)
    # the combination of the two was tried too, and lost to the model that knows the season
    assert {s.alias for s in sel.scores} == {"recent_level", "profile", "profile+recent_level"}
    by = {s.alias: s for s in sel.scores}
    assert by["profile"].pinball < by["profile+recent_level"].pinball < by["recent_level"].pinball
    assert (
        "profile has the best balance of calibrated pinball loss" in sel.reason
        and "runner-up profile+recent_level" in sel.reason
    )


def test_auto_forecasts_only_the_levels_asked_for_ordered_and_calibrated(noisy: TrafficSeries) -> None:
    m = AutoModel(horizon_s=3600, candidates=("profile", "seasonal_naive_daily")).fit(noisy)
    assert m.selection is not None and m.chosen in ("profile", "seasonal_naive_daily")
    assert m.report.notes[0].startswith(f"chose {m.chosen}")
    fc = m.predict(6, (0.5, 0.9, 0.99))
    assert set(fc.quantiles) == {0.5, 0.9, 0.99}
    assert np.all(fc.quantiles[0.5] <= fc.quantiles[0.9]) and np.all(fc.quantiles[0.9] <= fc.quantiles[0.99])
    assert "calibrated" in fc.notes[-1]


def test_auto_with_too_little_history_uses_the_profile_model_and_says_so() -> None:
    m = AutoModel(horizon_s=3600).fit(periodic_series(2.1, 600, noise=0.1))
    assert m.selection is None and m.chosen == "profile"
    assert "cross-validation windows" in m.report.notes[0]
    assert m.predict(3, (0.9,)).quantiles[0.9].min() > 0


def test_calibrated_quantiles_stay_ordered_even_when_shifts_cross() -> None:
    cal = Calibrator((0.5, 0.9), np.array([0, 3]), np.array([[0.5, -0.5]]), np.array([100]))
    fc = Forecast(0.0, 60, np.ones(3), {0.5: np.full(3, 10.0), 0.9: np.full(3, 11.0)}, "m")
    out = cal.apply(fc, (0.5, 0.9))
    assert np.all(out.quantiles[0.9] >= out.quantiles[0.5])


def test_rolling_forecasts_never_see_their_targets(noisy: TrafficSeries) -> None:
    seen: list[int] = []

    class Spy(SeasonalProfile):
        alias = "spy"

        def fit(self, series: TrafficSeries) -> Self:
            seen.append(len(series))
            return super().fit(series)

        def update(self, series: TrafficSeries) -> Self:
            seen.append(len(series))
            return super().update(series)

    origins = origin_grid(
        noisy, first_s=3 * 86400, last_s=noisy.end_s - 600 * 6, every_s=86400 / 2, horizon=6
    )
    rf = rolling_forecasts(Spy, noisy, origins, 6, levels=CAL_LEVELS)
    assert seen == [int(o) for o in origins]
    np.testing.assert_array_equal(rf.actual[0], noisy.values[origins[0] : origins[0] + 6])


def test_auto_combines_two_noisy_naives_when_their_average_beats_either_and_says_so(
    noisy: TrafficSeries,
) -> None:
    """Yesterday and last week carry independent noise: their average halves its variance, so the
    combination wins the cross-validation and `auto` forecasts with it."""
    auto = AutoModel(horizon_s=3600, candidates=("seasonal_naive_daily", "seasonal_naive_weekly")).fit(noisy)
    sel = auto.selection
    assert sel is not None and set(sel.members) == {"seasonal_naive_daily", "seasonal_naive_weekly"}
    by = {s.alias: s for s in sel.scores}
    for single in (
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
    ):  # better points and quantiles than either
        assert by[sel.chosen].pinball < by[single].pinball and by[sel.chosen].mase < by[single].mase
    assert sel.reason.startswith("the equal-weight combination of seasonal_naive_")
    assert (
        "has the best balance of calibrated pinball loss" in sel.reason and "2 = best on both" in sel.reason
    )
    fc = auto.predict(6, [0.5, 0.9])
    assert fc.model == sel.chosen and np.all(fc.quantiles[0.9] >= fc.quantiles[0.5])
    assert any(sel.chosen in n for n in auto.report.notes)


def test_calibration_widens_within_a_day_of_a_shock(noisy: TrafficSeries) -> None:
    """A storm triples the noise for the last day: the two-day half-life alone would need days to catch up;
    the shock rule takes the upper levels' shifts from the newest day."""
    rng = np.random.default_rng(9)
    values = noisy.values.copy()
    last_day = slice(len(values) - 144, len(values))
    values[last_day] *= np.exp(rng.normal(0, 0.9, 144))
    stormy = TrafficSeries("stormy", noisy.start_s, noisy.step_s, values)
    origins = origin_grid(stormy, first_s=3 * 86400, last_s=stormy.end_s - 6 * 600, every_s=1800, horizon=6)
    rf = rolling_forecasts(SeasonalProfile, stormy, origins, 6)
    windows = np.flatnonzero(rf.ok())
    newest = windows[origins[windows] * 600 >= stormy.end_s - 86400 + 6 * 600]
    calib = Calibrator.fit(rf, windows, 600)
    act = rf.actual[newest]
    q90 = calib.apply_rolling(rf, newest, [0.9])[0.9]
    assert coverage(act, q90) >= 0.8, "the newest day is covered near its level"
    # the same calibration without the shock rule
    slow = Calibrator.fit(rf, windows, 600, shock_sigmas=np.inf).apply_rolling(rf, newest, [0.9])[0.9]
    assert coverage(act, slow) < coverage(act, q90) - 0.1


@pytest.mark.parametrize(
    ("horizon_s", "every_s"),
    [pytest.param(600, 1800, id="10-min-horizon"), pytest.param(3600, 3600, id="1-h-horizon")],
)
def test_cv_windows_tile_the_span_no_closer_than_the_horizon(
    noisy: TrafficSeries, horizon_s: int, every_s: int
) -> None:
    origins = AutoModel(horizon_s=horizon_s).cv_origins(noisy)
    gaps = np.diff(origins) * noisy.step_s
    assert np.all(gaps == every_s)
    # seven days of windows, each step of the span scored (at a 1-hour horizon) once
    assert origins.size == pytest.approx(7 * 86400 / every_s, abs=1)


def test_evaluations_auto_cross_validates_on_the_live_spacing() -> None:
    from forecaster.rolling_evaluation import _cv_windows

    grid = np.arange(0, 2000, 3)  # windows every 3 steps (30 min at 10-minute steps)
    t = grid * 600.0
    e = grid.size - 1
    every_other = _cv_windows(grid, e, 6, t, 7 * 86400.0, 2)
    assert np.all(np.diff(every_other) == 2) and (e - every_other[-1]) % 2 == 0
    # only windows fully observed by the origin, within the CV span
    assert np.all(grid[every_other] + 6 <= grid[e])
    assert t[e] - t[every_other[0]] <= 7 * 86400.0
    assert every_other.size == pytest.approx(_cv_windows(grid, e, 6, t, 7 * 86400.0, 1).size / 2, abs=1)


def _run(alias: str, mean: np.ndarray, q: np.ndarray, actual: np.ndarray) -> RollingForecasts:
    w, h = actual.shape
    return RollingForecasts(alias, np.arange(w) * h + 1000, h, CAL_LEVELS, q, mean, actual, np.ones(w), {})


def test_the_point_forecast_is_chosen_on_point_error_and_the_quantiles_on_both() -> None:
    # the level swings tenfold between windows; "sharp" knows the level (its quantiles are exact) but its
    # mean runs 60% high, "blunt" has the exact mean but quantiles that ignore the level
    rng = np.random.default_rng(3)
    w, h, sigma = 240, 6, 0.3
    level = np.exp(rng.uniform(np.log(10), np.log(100), size=(w, 1))) * np.ones((1, h))
    actual = level * np.exp(sigma * rng.standard_normal((w, h)))
    from scipy.stats import norm

    z = norm.ppf(np.asarray(CAL_LEVELS))
    exact_q = level[:, None, :] * np.exp(sigma * z[None, :, None])
    flat_q = np.broadcast_to(np.quantile(actual, CAL_LEVELS)[None, :, None], exact_q.shape).copy()
    true_mean = level * np.exp(sigma**2 / 2)
    runs = [_run("sharp", 1.6 * true_mean, exact_q, actual), _run("blunt", true_mean, flat_q, actual)]
    sel = select(runs, np.arange(w), 600.0)
    # the quantiles need the sharp model (alone or averaged); the point is the blunt model's mean alone (an
    # average with the sharp one runs 30% high)
    assert "sharp" in (sel.members or (sel.chosen,))
    assert sel.point == ("blunt",)
    assert "its mean (the point forecast) is blunt's" in sel.reason
    assert sel.as_dict()["point_members"] == ["blunt"]
    assert sel.label == f"{sel.chosen} (mean: blunt)"
    by_alias = {rf.alias: rf for rf in runs}
    assert point_run(sel, by_alias) is by_alias["blunt"]
    assert chosen_run(sel, by_alias).alias == sel.chosen


def test_a_combination_forecasts_its_point_and_quantiles_from_its_chosen_members(
    noisy: TrafficSeries,
) -> None:
    from forecaster.models import MODELS
    from forecaster.models.combination import Combination

    pair = [MODELS["profile"], MODELS["seasonal_naive_daily"]]
    both = Combination(pair, quantiles=[0], point=[1]).fit(noisy)
    fc = both.predict(12, (0.5, 0.9))
    alone_q = MODELS["profile"]().fit(noisy).predict(12, (0.5, 0.9))
    alone_p = MODELS["seasonal_naive_daily"]().fit(noisy).predict(12, (0.5, 0.9))
    assert np.allclose(fc.mean, alone_p.mean) and np.allclose(fc.quantiles[0.9], alone_q.quantiles[0.9])
    assert both.alias == "profile (mean: seasonal_naive_daily)"
    with pytest.raises(ModelError, match="quantile and point members"):
        Combination(pair, quantiles=[2])


def test_a_light_lead_time_bucket_borrows_its_neighbours_for_the_upper_levels() -> None:
    # 60 windows: the first lead time alone holds 60 residuals, too few to place a 0.99 shift anywhere but
    # on its largest residual (one freak miss); with the later lead times it lies below that
    rng = np.random.default_rng(11)
    w, h = 60, 4
    actual = np.exp(rng.normal(4.0, 0.2, size=(w, h)))
    actual[7, 0] *= 50.0  # one freak miss at the first lead time
    q = np.broadcast_to(np.exp(4.0) * np.ones((1, len(CAL_LEVELS), 1)), (w, len(CAL_LEVELS), h)).copy()
    rf = _run("flat", np.exp(4.0) * np.ones((w, h)), q, actual)
    calib = Calibrator.fit(rf, np.arange(w), 600.0, half_life_s=1e12)
    j = CAL_LEVELS.index(0.99)
    freak = float(np.log1p(actual[7, 0]) - np.log1p(np.exp(4.0)))
    assert calib.offsets[0, j] < 0.5 * freak
    # the median needs no neighbours: the first bucket's own residuals
    own = np.log1p(actual[:, 0]) - np.log1p(np.exp(4.0))
    m = CAL_LEVELS.index(0.5)
    assert calib.offsets[0, m] == pytest.approx(np.quantile(own, 0.5), abs=0.05)
