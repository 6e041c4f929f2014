"""Telemetry dropouts: zeros the forecast makes impossible are missing data, plausible zeros stay zeros."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.dropouts import DropoutWatch, trailing_dropout
from forecaster.types import Forecast, TrafficSeries

STEP = 600


def series(values: list[float]) -> TrafficSeries:
    return TrafficSeries("m", 0.0, STEP, np.asarray(values, dtype=float))


def flat_forecast(count: float, origin_s: float = 0.0, steps: int = 200) -> Forecast:
    mean = np.full(steps, count)
    return Forecast(origin_s, STEP, mean, {0.9: mean * 1.3}, "test")


@pytest.mark.parametrize(
    ("values", "expected_count", "found"),
    [
        pytest.param([900, 1000, 0, 0, 0], 1000.0, (2 * STEP, 5 * STEP), id="zeros-at-a-thousand-per-step"),
        pytest.param([900, 1000, 0, np.nan, 0], 1000.0, (2 * STEP, 5 * STEP), id="gaps-inside-the-run"),
        pytest.param([900, 0, 0, 5, 0], 1000.0, (4 * STEP, 5 * STEP), id="a-count-ends-the-older-run"),
        pytest.param([3, 1, 0, 0, 0], 2.0, None, id="sparse-traffic-zeros-are-plausible"),
        pytest.param([900, 1000, 0, 0, 7], 1000.0, None, id="traffic-is-back"),
        pytest.param([900, 1000, np.nan, np.nan], 1000.0, None, id="a-gap-is-not-a-dropout"),
        pytest.param([0, 0, 0, 0, 0], 19.0, None, id="below-the-implausibility-count"),
    ],
)
def test_a_trailing_run_of_zeros_is_a_dropout_only_where_the_forecast_makes_zero_implausible(
    values: list[float], expected_count: float, found: tuple[float, float] | None
) -> None:
    d = trailing_dropout(series(values), flat_forecast(expected_count), min_count=20.0, max_s=86_400.0)
    if found is None:
        assert d is None
    else:
        assert d is not None and (d.start_s, d.end_s) == found
        assert d.expected_count == pytest.approx(expected_count)
        assert "telemetry dropout" in d.describe(STEP) and "e^-1000" in d.describe(STEP)


def test_a_run_longer_than_max_s_is_believed() -> None:
    s = series([1000] + [0] * 12)  # two hours of zeros
    assert trailing_dropout(s, flat_forecast(1000), 20.0, max_s=3 * 3600) is not None
    assert trailing_dropout(s, flat_forecast(1000), 20.0, max_s=3600) is None


def test_a_forecast_that_expects_the_off_period_keeps_its_zeros() -> None:
    mean = np.where(np.arange(200) % 2 == 0, 500.0, 0.0)  # an on/off client the forecast knows
    fc = Forecast(0.0, STEP, mean, {0.9: mean}, "test")
    assert trailing_dropout(series([500, 0]), fc, 20.0, 86_400.0) is None
    # ... but a zero where it expects the client on is not: the dropout starts there, not at the off step
    d = trailing_dropout(series([500, 0, 0]), fc, 20.0, 86_400.0)
    assert d is not None and (d.start_s, d.expected_count) == (2 * STEP, 500.0)


def test_a_session_that_ended_is_no_dropout_where_the_forecast_gives_the_chance_of_any_request() -> None:
    # a client that sent a thousand requests a step: its mean stays high, but the chance of any request
    # says a zero is as plausible as a session's end; a chance next to certainty still makes a dropout
    steps = 200
    mean = np.full(steps, 1000.0)
    ended = Forecast(0.0, STEP, mean, {0.9: mean}, "sparse", p_any=np.full(steps, 0.9))
    assert trailing_dropout(series([1000, 1000, 0, 0]), ended, 20.0, 86_400.0) is None
    sure = Forecast(0.0, STEP, mean, {0.9: mean}, "sparse", p_any=np.full(steps, 1.0 - 1e-12))
    d = trailing_dropout(series([1000, 1000, 0, 0]), sure, 20.0, 86_400.0)
    assert d is not None and d.expected_count == pytest.approx(-np.log(1e-12), rel=1e-3)


def test_a_forecast_refit_during_the_run_still_judges_it() -> None:
    # the refit masked the run, so its forecast starts after the zeros: its first step stands for them
    d = trailing_dropout(series([1000, 0, 0, 0]), flat_forecast(800, origin_s=4 * STEP), 20.0, 86_400.0)
    assert d is not None and d.expected_count == 800


def test_the_watch_remembers_dropouts_and_the_refit_sees_them_as_gaps() -> None:
    watch = DropoutWatch()
    fc = flat_forecast(1000)
    assert watch.check(series([900, 1000, 0]), fc) is not None
    assert watch.check(series([900, 1000, 0, 0, 0]), fc) is not None  # the run grows: one span, not two
    assert watch.spans == [(2 * STEP, 5 * STEP)]
    later = series([900, 1000, 0, 0, 0, 1100, 0.0])
    assert watch.check(later, flat_forecast(5)) is None  # a plausible zero is not remembered
    cleaned = watch.clean(later)
    assert np.isnan(cleaned.values[2:5]).all()
    assert cleaned.values.tolist()[:2] == [900, 1000] and cleaned.values[5:].tolist() == [1100, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"min_count": 0.0}, "dropout_min_count=0.0 is out of range; allowed (0, inf)", id="n"),
        pytest.param({"max_s": -1.0}, "dropout_max_s=-1.0 is out of range; allowed [0, inf)", id="max"),
    ],
)
def test_bad_settings_name_the_key_the_value_and_the_range(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        DropoutWatch(**kwargs)


def _dropout_step_by_step(
    history: TrafficSeries, forecast: Forecast, min_count: float, max_s: float
) -> tuple[float, float, float] | None:
    """The rule read one step at a time (how it was first written): the array version must agree."""
    v = history.values
    i = len(v)
    while i > 0 and not (v[i - 1] > 0):
        i -= 1
    zero_idx = [k for k in range(i, len(v)) if v[k] == 0]
    if not zero_idx:
        return None
    expect = {}
    for k in zero_idx:
        j = round((history.start_s + k * history.step_s - forecast.origin_s) / forecast.step_s)
        j = min(max(j, 0), forecast.horizon - 1)
        p = forecast.p_any
        expect[k] = -math.log(max(1e-300, 1.0 - float(p[j]))) if p is not None else float(forecast.mean[j])
    if not expect[zero_idx[-1]] >= min_count:
        return None
    first = next(k for k in zero_idx if expect[k] >= min_count)
    start = history.start_s + (i if first == zero_idx[0] else first) * history.step_s
    if history.end_s - start > max_s:
        return None
    return start, history.end_s, min(expect[k] for k in zero_idx if k >= first)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, 0.0, 0.0, 3.0, 40.0, math.nan]), min_size=1, max_size=40),
    means=st.lists(st.floats(0.0, 60.0), min_size=1, max_size=50),
    sparse=st.booleans(),
    origin_steps=st.integers(-5, 45),
    max_steps=st.integers(0, 45),
)
def test_the_array_rule_agrees_with_the_rule_read_step_by_step(
    values: list[float], means: list[float], sparse: bool, origin_steps: int, max_steps: int
) -> None:
    mean = np.asarray(means)
    p_any = 1 - np.exp(-mean / 2) if sparse else None  # -log(1 - p_any) reaches past 20 too
    fc = Forecast(origin_steps * STEP, STEP, mean, {0.9: mean}, "test", p_any=p_any)
    s = series(values)
    got = trailing_dropout(s, fc, 20.0, max_steps * STEP)
    want = _dropout_step_by_step(s, fc, 20.0, max_steps * STEP)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert (got.start_s, got.end_s) == want[:2] and got.expected_count == pytest.approx(want[2])


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, 0.0, 3.0, 40.0, math.nan]), min_size=0, max_size=40),
    max_steps=st.integers(0, 45),
    lookahead_steps=st.integers(0, 10),
)
def test_the_tick_s_check_of_the_recent_steps_finds_what_the_check_of_their_tail_finds(
    values: list[float], max_steps: int, lookahead_steps: int
) -> None:
    """check_recent skips the slice when the newest count is positive: the same dropouts, and the same
    spans remembered, as checking the tail every time."""
    fc = flat_forecast(1000.0)
    fast, slow = DropoutWatch(max_s=max_steps * STEP), DropoutWatch(max_s=max_steps * STEP)
    for end in range(len(values) + 1):  # tick after tick, one more step each
        s = series(values[:end])
        got = fast.check_recent(s, fc, lookahead_steps * STEP)
        want = slow.check(s.tail(max_steps * STEP + lookahead_steps * STEP), fc)
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert (got.start_s, got.end_s, got.expected_count) == (
                want.start_s,
                want.end_s,
                want.expected_count,
            )
    assert fast.spans == slow.spans
