"""Daily shapes: what a model's traffic looks like over a UTC day, as multipliers of the day's mean rate.

A model with under two days of history has no daily season of its own yet. Most models of one fleet serve
the same users, so their days rise and fall together: a new model borrows a shape (the fleet's median
shape, or one named model's) and scales it by its own level (forecaster/models/borrowed.py).

A shape is kept per minute of the day (1,440 values, mean 1), whatever the series' step, so that shapes of
series at different steps can be compared and combined; `over` averages it back onto any step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries

MINUTES_PER_DAY = 1440
SHAPE_DAYS = 14  # the trailing days a model's own shape is read from
MIN_SHAPE_DAYS = 2.0  # days of history before a model has a shape of its own (the seasonal models' bar)
SMOOTH_MIN = 31  # minutes of the circular moving average over the median day: damps 1-minute noise
FLOOR = 0.02  # no minute of a shape below 2% of the mean: a borrowed zero would forecast a certain zero


@dataclass(frozen=True)
class DailyShape:
    """Multipliers of the daily mean rate for each minute of the UTC day (mean 1), and where they came
    from (for fit reports)."""

    values: FloatArray
    source: str

    def __post_init__(self) -> None:
        if self.values.shape != (MINUTES_PER_DAY,) or not np.all(np.isfinite(self.values)):
            raise ValueError(f"a daily shape needs {MINUTES_PER_DAY} finite values")

    def over(self, start_s: float, step_s: int, n: int) -> FloatArray:
        """The shape's mean multiplier over each of `n` steps of `step_s` from `start_s`."""
        width = max(1, round(step_s / 60))
        wrapped = np.concatenate([self.values, self.values[: width + 1]])
        csum = np.concatenate([[0.0], np.cumsum(wrapped)])
        first = ((start_s + np.arange(n) * step_s) % SECONDS_PER_DAY // 60).astype(np.int64)
        return np.asarray((csum[first + width] - csum[first]) / width, dtype=np.float64)


def daily_shape(series: TrafficSeries, source: str | None = None) -> DailyShape | None:
    """The series' own shape from its trailing SHAPE_DAYS: each day's rate divided by that day's mean (so
    level drift does not bend the shape), the median day per minute, smoothed; None with under
    MIN_SHAPE_DAYS of history or no traffic."""
    if series.span_s < MIN_SHAPE_DAYS * SECONDS_PER_DAY:
        return None
    s = series.tail(SHAPE_DAYS * SECONDS_PER_DAY)
    per_minute = _per_minute(s)
    if per_minute is None:
        return None
    minute, rate = per_minute
    day = minute // MINUTES_PER_DAY
    day -= day.min()
    grid = np.full((int(day.max()) + 1, MINUTES_PER_DAY), np.nan)
    grid[day, minute % MINUTES_PER_DAY] = rate
    # a day with under half its minutes observed says little about the shape of a whole day
    seen = np.isfinite(grid).sum(axis=1)
    grid = grid[seen >= MINUTES_PER_DAY // 2]
    if grid.shape[0] == 0:
        return None
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN minutes: filled below
        means = np.nanmean(grid, axis=1, keepdims=True)
        grid = np.where(means > 0, grid / means, np.nan)
        median = np.nanmedian(grid, axis=0)
    return _finish(median, source or f"the daily shape of {series.name or 'the series'}")


def median_shape(shapes: Sequence[DailyShape], source: str) -> DailyShape | None:
    """The median of several shapes, minute by minute (None when there are none)."""
    if not shapes:
        return None
    return _finish(np.median(np.stack([s.values for s in shapes]), axis=0), source)


def _per_minute(s: TrafficSeries) -> tuple[np.ndarray, FloatArray] | None:
    """(global minute index, requests/s) for every minute the series covers, from any step."""
    rate = s.values / s.step_s
    t = s.times_s()
    ok = np.isfinite(rate)
    if not ok.any() or not np.nansum(rate) > 0:
        return None
    if s.step_s >= 60:
        width = round(s.step_s / 60)
        first = (t[ok] // 60).astype(np.int64)
        minute = (first[:, None] + np.arange(width)[None, :]).reshape(-1)
        return minute, np.repeat(rate[ok], width)
    minute_all = (t[ok] // 60).astype(np.int64)
    base = int(minute_all.min())
    sums = np.bincount(minute_all - base, weights=rate[ok])
    counts = np.bincount(minute_all - base)
    keep = counts > 0
    return np.flatnonzero(keep) + base, sums[keep] / counts[keep]


def _finish(values: FloatArray, source: str) -> DailyShape | None:
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.all():
        return None
    if bad.any():  # minutes no day saw: interpolated around the circle from their neighbours
        idx = np.arange(MINUTES_PER_DAY)
        v[bad] = np.interp(idx[bad], idx[~bad], v[~bad], period=MINUTES_PER_DAY)
    k = SMOOTH_MIN // 2
    ring = np.concatenate([v[-k:], v, v[:k]])
    v = np.convolve(ring, np.ones(SMOOTH_MIN) / SMOOTH_MIN, mode="valid")
    mean = float(v.mean())
    if not mean > 0:
        return None
    v = np.maximum(v / mean, FLOOR)
    return DailyShape(v / v.mean(), source)
