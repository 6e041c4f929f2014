"""Seasonal naive: the baseline every model must beat, and the fallback of the seasonal ones.

Seasonal naive repeats the last season: y[T + h] = y[T + h - P]. Its quantiles come from the empirical
distribution of the log1p seasonal differences over the last week of history. A season needs two full cycles
of history (two days for daily, two weeks for weekly); with less, the model falls back (weekly -> daily ->
recent level) and says so in its fit report, never returning a silent zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

import numpy as np

from forecaster.models.base import (
    MIN_DAILY_HISTORY_S,
    MIN_WEEKLY_HISTORY_S,
    FitReport,
    ForecastModel,
    ResidualTable,
    Timer,
    fill_gaps,
    forecast_from_log,
    require_history,
)
from forecaster.models.fallback import RecentLevel, relabel
from forecaster.types import SECONDS_PER_DAY, SECONDS_PER_WEEK, FloatArray, Forecast, TrafficSeries

Season = Literal["daily", "weekly"]
_SEASON_S = {"daily": SECONDS_PER_DAY, "weekly": SECONDS_PER_WEEK}
_MIN_HISTORY_S = {"daily": MIN_DAILY_HISTORY_S, "weekly": MIN_WEEKLY_HISTORY_S}
RESIDUAL_WINDOW_S = 7 * SECONDS_PER_DAY


class SeasonalNaive:
    def __init__(self, season: Season = "daily") -> None:
        self.season: Season = season
        self.alias = f"seasonal_naive_{season}"
        self.report = FitReport(self.alias)
        self._fallback: ForecastModel | None = None
        self._last: FloatArray = np.zeros(1)
        self._resid = ResidualTable([1], [np.zeros(1)])
        self._origin = 0.0
        self._step = 1

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        need = _MIN_HISTORY_S[self.season]
        self._fallback = None
        if series.span_s < need:
            fb: SeasonalNaive | RecentLevel = (
                SeasonalNaive("daily")
                if self.season == "weekly" and series.span_s >= MIN_DAILY_HISTORY_S
                else RecentLevel()
            )
            self._fallback = fb.fit(series)
            self.report = FitReport.of(
                self.alias,
                series,
                fit_step_s=series.step_s,
                fallback=fb.alias,
                fit_seconds=timer.elapsed(),
            )
            self.report.note(
                f"{series.span_s / 86400:.1f} days of history is less than the {need / 86400:.0f} days a "
                f"{self.season} season needs; forecasting with {fb.alias}"
            )
            return self
        period = max(1, round(_SEASON_S[self.season] / series.step_s))
        y = fill_gaps(series.values, period)
        self._last = y[-period:].copy()
        tail = y[-(period + int(RESIDUAL_WINDOW_S / series.step_s)) :]
        e = np.log1p(tail[period:]) - np.log1p(tail[:-period])
        self._resid = ResidualTable([1], [e])
        self._origin, self._step = series.end_s, series.step_s
        self.report = FitReport.of(
            self.alias,
            series,
            fit_step_s=series.step_s,
            seasons_s=(_SEASON_S[self.season],),
            fit_seconds=timer.elapsed(),
        )
        if series.gap_fraction:
            self.report.note(f"{series.gap_fraction:.1%} of steps were gaps, filled from the season before")
        return self

    def update(self, series: TrafficSeries) -> Self:
        """Re-anchor on newer data: the last season is the newest one, the error table stays as fitted
        (the cheap update every model makes between daily fits; the CV runs one per window)."""
        if self._fallback is not None:
            if series.span_s < _MIN_HISTORY_S[self.season]:  # still too short: the fallback moves on
                self._fallback = self._fallback.update(series)
                return self
            return self.fit(series)
        period = self._last.size
        if (
            series.step_s != self._step
            or len(series) < 2 * period
            or not np.isfinite(series.values[-2 * period :]).any()
        ):
            return self.fit(series)
        self._last = fill_gaps(series.values[-2 * period :], period)[-period:].copy()
        self._origin = series.end_s
        return self

    def point(self, h: int) -> FloatArray:
        reps = int(np.ceil(h / self._last.size))
        return np.tile(self._last, reps)[:h]

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        if self._fallback is not None:
            return relabel(self._fallback.predict(h, levels), self.alias, self._fallback.alias)
        p = self.point(h)
        fc = forecast_from_log(
            alias=self.alias,
            origin_s=self._origin,
            step_s=self._step,
            location=np.log1p(p),
            residuals=self._resid,
            levels=levels,
        )
        return _with_mean(fc, p)


def _with_mean(fc: Forecast, mean: FloatArray) -> Forecast:
    """The classic naive point forecast is the repeated value itself, not the back-transformed mean."""
    return Forecast(fc.origin_s, fc.step_s, mean, fc.quantiles, fc.model, fc.notes)
