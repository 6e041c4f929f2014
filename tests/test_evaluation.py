"""Accuracy metrics, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.evaluation import coverage, mase, pinball, scaled_pinball, smape
from forecaster.rolling import naive_scale
from forecaster.rolling_evaluation import evaluate_series
from tests.conftest import periodic_series, working_hours

NAN = np.nan


def test_pinball_loss_weighs_under_and_over_forecasts_by_the_level() -> None:
    actual = np.array([10.0, 10.0])
    q = np.array([8.0, 12.0])
    np.testing.assert_allclose(pinball(actual, q, 0.9), [0.9 * 2, 0.1 * 2])


def test_mase_is_the_mean_window_mae_over_its_scale_ignoring_gaps() -> None:
    actual = np.array([[1.0, 2.0, NAN], [4.0, 4.0, 4.0]])
    point = np.array([[2.0, 2.0, 9.0], [1.0, 4.0, 4.0]])
    assert mase(actual, point, np.array([0.5, 2.0])) == pytest.approx(((0.5 / 0.5) + (1.0 / 2.0)) / 2)


def test_smape_counts_both_zero_as_perfect() -> None:
    assert smape(np.array([[0.0, 10.0]]), np.array([[0.0, 30.0]])) == pytest.approx((0 + 2 * 20 / 40) / 2)


def test_coverage_is_the_share_at_or_below_the_quantile() -> None:
    assert coverage(np.array([[1.0, 2.0, 3.0, NAN]]), np.array([[2.0, 2.0, 2.0, 0.0]])) == pytest.approx(
        2 / 3
    )


def test_scaled_pinball_averages_levels() -> None:
    a = np.array([[10.0]])
    got = scaled_pinball(a, {0.5: np.array([[8.0]]), 0.9: np.array([[12.0]])}, np.array([2.0]))
    assert got == pytest.approx(((0.5 * 2) / 2 + (0.1 * 2) / 2) / 2)


def test_naive_scale_is_the_in_sample_one_day_seasonal_naive_mae() -> None:
    y = np.tile([1.0, 3.0], 5 * 144 // 2)  # step 600: 144 per day, a 2-step wiggle repeating exactly daily
    y[-1] = 13.0
    scale = naive_scale(y, 600)
    assert scale[3 * 144] == 1.0  # no naive error at all: 1 rather than a division by zero
    assert scale[-1] == pytest.approx(10.0 / (y.size - 144))  # one error of 10 across the daily lags


def test_evaluation_scores_every_model_and_auto_out_of_sample() -> None:
    s = periodic_series(12, 600, noise=0.25, seed=2)
    ev = evaluate_series(
        s,
        horizon_s=3600,
        n_windows=12,
        candidates=("profile", "seasonal_naive_daily", "seasonal_naive_weekly"),
    )
    assert set(ev.models) == {"profile", "seasonal_naive_daily", "seasonal_naive_weekly", "auto"}
    assert ev.windows == 12 and sum(ev.choices.values()) == 12
    assert ev.models["profile"].mase < ev.models["seasonal_naive_daily"].mase
    assert ev.models["auto"].mase < ev.models["seasonal_naive_daily"].mase
    assert set(ev.as_dict()["models"]["auto"]["coverage"]) == {"0.5", "0.9", "0.95", "0.99"}  # type: ignore[index]
    # coverage per horizon bucket: six 10-minute steps make buckets of 1, 1, 2 and 2 steps
    by = ev.models["auto"].coverage_by_horizon
    assert list(by) == ["0m-10m", "10m-20m", "20m-40m", "40m-1h"]
    act = ev.models["auto"]
    weights = {"0m-10m": 1, "10m-20m": 1, "20m-40m": 2, "40m-1h": 2}
    pooled = sum(by[b][0.9] * w for b, w in weights.items()) / 6
    assert pooled == pytest.approx(act.coverage[0.9], abs=0.02)  # the buckets add up to the whole


def test_every_model_is_scored_on_any_request_and_the_sparse_model_beats_the_rates_there() -> None:
    from forecaster.models.sparse import SparseCounts
    from forecaster.rolling_evaluation import observed_any
    from forecaster.sources.synthetic import generate

    s = generate(working_hours(), days=12, step_s=300, seed=4)
    ev = evaluate_series(s, horizon_s=1800, n_windows=40, candidates=("profile", "sparse"))
    sparse, profile = ev.models["sparse"], ev.models["profile"]
    assert sparse.brier_any < profile.brier_any
    assert sum(n for _, _, n in sparse.calibration_any) == 40 * 6, "every step of every window, binned"
    doc = ev.as_dict()["models"]["sparse"]["any_request"]  # type: ignore[index]
    assert doc["brier"] == round(sparse.brier_any, 4) and len(doc["calibration"]) >= 2
    # and anywhere within the 30-minute horizon: one case per window observed whole
    assert sum(n for _, _, n in sparse.calibration_window) == 40
    assert doc["window"]["brier"] == round(sparse.brier_window, 4)
    assert sparse.brier_window < profile.brier_window, "sessions, not a fresh draw per step"
    assert SparseCounts.alias == "sparse"
    np.testing.assert_allclose(observed_any(np.array([0.0, 1.0, 3.0])), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(observed_any(np.array([0.0, 0.5])), [0.0, 1 - np.exp(-0.5)])
