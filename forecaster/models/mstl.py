"""statsmodels MSTL: daily (and, with enough history, weekly) seasons by LOESS, the rest by damped Holt.

Fitted at a step of at least 30 minutes (48 steps a day, 336 a week): MSTL's cost grows with the season
length, and at 5-minute steps one fit takes 10-15 s. statsmodels silently drops a period that does not fit
twice in the data, so the weekly season is asked for only with more than two weeks of history, and the fit
report says when it was left out. Forecast = last cycle of each seasonal component, repeated in phase, plus a
damped-trend exponential smoothing of the deseasonalised series. `update` deseasonalises newer data with the
fitted components and carries the smoother's state over the new steps with its parameters fixed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Self

import numpy as np

from forecaster.models.base import (
    FitReport,
    ForecastModel,
    ResidualTable,
    Timer,
    horizon_grid,
    require_history,
)
from forecaster.models.coarse import CoarseData, predict_coarse, prepare, update_history_s
from forecaster.models.fallback import fall_back, fall_back_if_short, relabel
from forecaster.models.smoothing import (
    SmootherState,
    estimated_params,
    fit_smoother,
    fitted_state,
    widened_errors,
)
from forecaster.types import SECONDS_PER_DAY, SECONDS_PER_WEEK, FloatArray, Forecast, TrafficSeries

MAX_PERIODS_PER_DAY = 48
RESIDUAL_WINDOW_S = 7 * SECONDS_PER_DAY


class MSTLModel:
    alias = "mstl"

    def __init__(self) -> None:
        self.report = FitReport(self.alias)
        self._fallback: ForecastModel | None = None
        self._data: CoarseData | None = None
        self._cycles: list[tuple[int, FloatArray, float]] = []  # (period, one cycle, epoch of its start)
        self._level: SmootherState | None = None  # the smoother of the deseasonalised series
        self._params: dict[str, float] | None = None
        self._resid = ResidualTable([1], [np.zeros(1)])

    def _seasonal(self, times_s: FloatArray) -> FloatArray:
        out = np.zeros(times_s.size)
        for period, cycle, t0 in self._cycles:
            step = self._data.step_s if self._data else 1
            idx = np.round((times_s - t0) / step).astype(np.int64) % period
            out += cycle[idx]
        return out

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        self._params = None
        self.report = FitReport(self.alias, series.name, len(series), series.span_s, series.step_s)
        self._fallback = fall_back_if_short(series, self.report)
        if self._fallback is not None:
            return self
        from statsmodels.tsa.seasonal import MSTL

        data = prepare(series, MAX_PERIODS_PER_DAY, self.report, what="MSTL")
        p_day = SECONDS_PER_DAY // data.step_s
        if data.z.size <= 2 * p_day:
            # statsmodels drops a period unless the data holds more than two of it, and with none left it
            # fails with an internal error (UnboundLocalError), not a ValueError: fall back here instead
            self._fallback = fall_back(
                series,
                self.report,
                f"{data.z.size} steps of {data.step_s} s is not more than two days, which MSTL's daily "
                "season needs",
            )
            return self
        p_week = SECONDS_PER_WEEK // data.step_s
        periods = [p_day]
        if data.z.size > 2 * p_week:
            periods.append(p_week)
        else:
            self.report.note(
                f"weekly season left out: {data.z.size * data.step_s / 86400:.1f} days of history, "
                "MSTL needs more than 14"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = MSTL(data.z, periods=periods).fit()
        seasonal = np.asarray(res.seasonal).reshape(data.z.size, -1)
        times = data.times_s()
        self._cycles = []
        for k, period in enumerate(periods):
            start = data.z.size - period
            self._cycles.append((period, seasonal[start:, k].copy(), float(times[start])))
        self._data = data
        self._fit_level(data, params=None)
        self.report.seasons_s = tuple(p * data.step_s for p in periods)
        self.report.fit_seconds = timer.elapsed()
        return self

    def _fit_level(self, data: CoarseData, params: dict[str, float] | None) -> None:
        d = data.z - self._seasonal(data.times_s())
        state = self._level if params is not None else None
        moved = state.carried(d, data.start_s, data.step_s) if state is not None else None
        if moved is not None:  # only the steps it has not absorbed
            self._level = moved
            return
        res = fit_smoother(d, params, what=f"{self.alias} level")
        if params is None:
            params = self._params = estimated_params(res)
            hs = horizon_grid(int(SECONDS_PER_DAY // data.step_s))
            self._resid = widened_errors(
                res, self._params["smoothing_level"], hs, int(RESIDUAL_WINDOW_S // data.step_s)
            )
        self._level = SmootherState.of(res, params, data.end_s, data.step_s)

    def update(self, series: TrafficSeries) -> Self:
        if self._params is None or self._fallback is not None:
            return self.fit(series)
        report = FitReport(self.alias, series.name, len(series), series.span_s, series.step_s)
        history_s = update_history_s(series, self._level.end_s if self._level else None)
        data = prepare(series, MAX_PERIODS_PER_DAY, report, what="MSTL", history_s=history_s)
        self._data = data
        self._fit_level(data, params=self._params)
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        if self._fallback is not None:
            return relabel(self._fallback.predict(h, levels), self.alias, self._fallback.alias)
        return predict_coarse(
            self._data,
            h,
            levels,
            self.alias,
            self._resid,
            lambda hc, times: fitted_state(self._level, self.alias).forecast(hc) + self._seasonal(times),
        )
