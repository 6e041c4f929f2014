"""The model of sparse traffic: the chance of any request per step, by time of day and idle time, and the
count given one; calibrated on days it did not see."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from forecaster.models import ModelError, make_model
from forecaster.models.sparse import SparseCounts, brier, calibration_bins
from forecaster.sources.synthetic import generate
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner.zero import chance_of_request
from tests.conftest import working_hours

LEVELS = (0.05, 0.5, 0.9, 0.975)
WORKING_HOURS = working_hours()
STEP = 300


def series(days: float = 21.0, seed: int = 1) -> TrafficSeries:
    return generate(WORKING_HOURS, days=days, step_s=STEP, seed=seed)


def test_the_chance_of_a_request_is_high_in_working_hours_and_low_at_night() -> None:
    s = series()
    day_start = np.floor(s.end_s / SECONDS_PER_DAY) * SECONDS_PER_DAY  # the series ends at a midnight
    m = SparseCounts().fit(s.before(day_start + 0.0))
    p = m.p_any(int(SECONDS_PER_DAY / STEP))
    hours = (np.arange(p.size) * STEP / 3600).astype(int)
    assert p[hours < 6].max() < 0.05
    if (day_start // SECONDS_PER_DAY) % 7 < 5:  # a weekday follows
        assert p[(hours >= 9) & (hours < 17)].mean() > 5 * p[hours < 6].mean()


def test_a_request_just_seen_makes_the_next_minutes_likelier_than_a_long_silence() -> None:
    s = series()
    v = s.values
    active = np.flatnonzero(v >= 1)
    # an origin right after a session's request, and one after two quiet hours, at the same hour of day
    m = SparseCounts().fit(s)
    after_request = [i + 1 for i in active if i + 1 < v.size and v[i + 1] == 0]
    quiet = [
        i
        for i in range(24, v.size)
        if v[i - 24 : i].sum() == 0 and 9 <= (s.start_s / 3600 + i * STEP / 3600) % 24 < 17
    ]
    assert after_request and quiet
    p_after = np.mean([m.update(s.slice(0, i)).p_any(1)[0] for i in after_request[-20:]])
    p_quiet = np.mean([m.update(s.slice(0, i)).p_any(1)[0] for i in quiet[-20:]])
    assert p_after > 1.5 * p_quiet


def test_after_a_session_no_request_since_the_origin_is_likelier_than_the_minutes_alone_say() -> None:
    s = series()
    v = s.values
    m = SparseCounts().fit(s)
    ends = [i + 1 for i in np.flatnonzero(v >= 1) if i + 1 < v.size and v[i + 1] == 0]
    assert ends
    for i in ends[-10:]:
        fc = m.update(s.slice(0, i)).predict(6, LEVELS)
        assert fc.p_none is not None and fc.p_any is not None
        assert fc.p_none[0] == pytest.approx(1 - fc.p_any[0]), "the first step is the same question"
        assert np.all(np.diff(fc.p_none) <= 1e-12), "never likelier to see none over a longer span"
        independent = np.cumprod(1 - fc.p_any)
        assert fc.p_none[-1] > independent[-1], "requests come in sessions, not as a fresh draw each step"


def test_held_out_days_are_calibrated_within_five_points_per_decile() -> None:
    s = series(days=28.0)
    n_day = int(SECONDS_PER_DAY / STEP)
    predicted, observed = [], []
    for day in range(14, 28):  # refit daily on the fortnight before, re-anchored every step, as live
        m = SparseCounts().fit(s.slice((day - 14) * n_day, day * n_day))
        for i in range(day * n_day, (day + 1) * n_day):
            predicted.append(float(m.update(s.slice(i - n_day, i)).p_any(1)[0]))
            observed.append(float(s.values[i] >= 1))
    p, o = np.asarray(predicted), np.asarray(observed)
    bins = calibration_bins(p, o, min_cases=100)
    assert bins, "no decile held 100 cases"
    for mean_p, freq, n in bins:
        assert abs(mean_p - freq) <= 0.05, f"predicted {mean_p:.3f}, observed {freq:.3f} over {n} cases"
    assert brier(p, o) < brier(np.full_like(o, o.mean()), o), "better than the base rate"


def test_quantiles_are_the_mixture_zero_below_the_chance_of_none() -> None:
    m = SparseCounts().fit(series())
    fc = m.predict(48, LEVELS)
    assert fc.p_any is not None and fc.model == "sparse"
    for q in LEVELS:
        assert np.all(fc.quantile(q)[q <= 1 - fc.p_any] == 0)
    for lo, hi in itertools.pairwise(LEVELS):
        assert np.all(fc.quantile(hi) >= fc.quantile(lo))
    assert np.all(fc.mean >= fc.p_any - 1e-12), "a step with a request has at least one"
    assert 0.0 <= chance_of_request(fc, fc.origin_s, fc.origin_s + 3600) <= 1.0


def test_expected_counts_are_read_as_the_poisson_chance_of_any() -> None:
    s = series()
    expected = TrafficSeries(s.name, s.start_s, s.step_s, s.values * 0.37)  # fractional: rate x step
    m = SparseCounts().fit(expected)
    assert "active steps" in m.report.notes[0]
    p = m.p_any(12)
    assert np.all((p >= 0) & (p <= 1))


@pytest.mark.parametrize(
    ("values", "says"),
    [
        pytest.param([np.nan] * 50, "no finite value", id="all missing"),
        pytest.param([0.0, 1.0], "too short", id="two steps"),
    ],
)
def test_bad_history_is_a_clear_model_error(values: list[float], says: str) -> None:
    with pytest.raises(ModelError, match=says):
        SparseCounts().fit(TrafficSeries("x", 0.0, 300, np.asarray(values)))


def test_the_model_is_registered_by_its_alias_and_refuses_to_predict_unfitted() -> None:
    m = make_model("sparse")
    with pytest.raises(ModelError, match="before fit"):
        m.predict(3, LEVELS)


def test_auto_gives_the_chance_of_any_request_on_a_sparse_history_whichever_model_it_chooses() -> None:
    from forecaster.selection import AutoModel
    from forecaster.sources.synthetic import DEMO_FLEET

    fc = AutoModel(horizon_s=1800, candidates=("profile",)).fit(series(days=10.0)).predict(6, LEVELS)
    assert fc.p_any is not None and fc.p_any.shape == (6,)
    dense = generate(DEMO_FLEET[0], days=3.0, step_s=STEP)
    assert AutoModel(horizon_s=1800, candidates=("profile",)).fit(dense).predict(6, LEVELS).p_any is None
