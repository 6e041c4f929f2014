"""The last-resort model and the one rule every seasonal model shares for short histories.

A seasonal model needs two full cycles of its season; with less history it forecasts with `RecentLevel`
instead, records the fallback in its fit report, and labels the forecast with its own alias plus a note, so
that callers always get a forecast and always know it was a fallback, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from forecaster.models.base import (
    MIN_DAILY_HISTORY_S,
    FitReport,
    ForecastModel,
    ResidualTable,
    Timer,
    fill_gaps,
    forecast_from_log,
    require_history,
)
from forecaster.models.borrowed import BorrowedShape
from forecaster.shape import DailyShape
from forecaster.types import Forecast, TrafficSeries


class RecentLevel:
    """Forecasts the mean of the last hour (or the last tenth of a short history), flat.

    The model of last resort: for histories too short for any season (the one-hour burst traces). Its
    quantiles come from how far single steps strayed from the mean of the window before them.
    """

    alias = "recent_level"

    def __init__(self, window_s: float = 3600.0) -> None:
        self.window_s = window_s
        self.report = FitReport(self.alias)
        self._level = 0.0
        self._resid = ResidualTable([1], [np.zeros(1)])
        self._origin = 0.0
        self._step = 1

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        y = fill_gaps(series.values)
        w = int(max(1, min(self.window_s / series.step_s, len(y) // 10 or 1)))
        self._level = float(np.mean(y[-w:]))
        # error of "next step = mean of the previous w" across the history
        c = np.concatenate([[0.0], np.cumsum(y)])
        prev_mean = (c[w:-1] - c[: -w - 1]) / w
        e = np.log1p(y[w:]) - np.log1p(prev_mean)
        self._resid = ResidualTable([1], [e[-20_000:]])
        self._origin, self._step = series.end_s, series.step_s
        self.report = FitReport.of(
            self.alias,
            series,
            fit_step_s=series.step_s,
            fit_seconds=timer.elapsed(),
        )
        self.report.note(f"flat level = mean of the last {w} steps")
        return self

    def update(self, series: TrafficSeries) -> Self:
        return self.fit(series)

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        loc = np.full(h, np.log1p(self._level))
        fc = forecast_from_log(
            alias=self.alias,
            origin_s=self._origin,
            step_s=self._step,
            location=loc,
            residuals=self._resid,
            levels=levels,
        )
        return Forecast(fc.origin_s, fc.step_s, np.full(h, self._level), fc.quantiles, fc.model, fc.notes)


def fall_back_if_short(
    series: TrafficSeries,
    report: FitReport,
    *,
    need_s: float = MIN_DAILY_HISTORY_S,
    what: str = "a daily season",
    priors: Sequence[DailyShape] = (),
) -> ForecastModel | None:
    """A fitted fallback (and a note in `report`) when `series` is shorter than `need_s`, else None: with
    daily shapes to borrow (`priors`, a fleet's) a BorrowedShape, else a RecentLevel."""
    if series.span_s >= need_s:
        return None
    return fall_back(
        series,
        report,
        f"{series.span_s / 86400:.2f} days of history is less than the {need_s / 86400:.0f} days "
        f"{what} needs",
        priors,
    )


def fall_back(
    series: TrafficSeries, report: FitReport, why: str, priors: Sequence[DailyShape] = ()
) -> ForecastModel:
    """A fitted fallback, recorded in `report` as the fallback with `why`."""
    fallback: ForecastModel = BorrowedShape(priors) if priors else RecentLevel()
    fallback.fit(series)
    report.notes.extend(n for n in fallback.report.notes if n not in report.notes)
    report.fallback = fallback.alias
    report.note(f"{why}; forecasting with {fallback.alias}")
    return fallback


def relabel(fc: Forecast, alias: str, fallback_alias: str) -> Forecast:
    """A fallback's forecast under the alias of the model that fell back."""
    return Forecast(
        fc.origin_s, fc.step_s, fc.mean, fc.quantiles, alias, notes=(f"fallback: {fallback_alias}",)
    )
