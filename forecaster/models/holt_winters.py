"""statsmodels Holt-Winters: damped additive trend + additive daily season, on log1p counts.

Fitted at a step of at least 15 minutes (a daily season of at most 96 states). Parameters are estimated at
fit; `update` carries the smoother's state over only the newer steps with those parameters fixed
(microseconds; `smoothing.SmootherState`), which is what the live loop does between refits. Quantiles: the
empirical one-step residuals of the last week, widened with horizon as the level's error accumulates
(sqrt(1 + (h-1) alpha^2), the simple-exponential-smoothing variance growth); split-conformal calibration in
`selection` corrects whatever this approximation misses.
"""

from __future__ import annotations

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
from forecaster.models.fallback import fall_back_if_short, relabel
from forecaster.models.smoothing import (
    SmootherState,
    estimated_params,
    fit_smoother,
    fitted_state,
    widened_errors,
)
from forecaster.types import SECONDS_PER_DAY, Forecast, TrafficSeries

MAX_PERIODS_PER_DAY = 96
RESIDUAL_WINDOW_S = 7 * SECONDS_PER_DAY


class HoltWinters:
    alias = "holt_winters"

    def __init__(self) -> None:
        self.report = FitReport(self.alias)
        self._fallback: ForecastModel | None = None
        self._state: SmootherState | None = None
        self._data: CoarseData | None = None
        self._params: dict[str, float] | None = None
        self._resid = ResidualTable([1], [np.zeros(1)])

    def fit(self, series: TrafficSeries) -> Self:
        return self._fit(series, params=None)

    def update(self, series: TrafficSeries) -> Self:
        if self._params is None:
            return self.fit(series)
        return self._fit(series, params=self._params)

    def _fit(self, series: TrafficSeries, params: dict[str, float] | None) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        self.report = FitReport(self.alias, series.name, len(series), series.span_s, series.step_s)
        self._fallback = fall_back_if_short(series, self.report)
        if self._fallback is not None:
            return self
        state = self._state if params is not None else None
        history_s = update_history_s(series, state.end_s if state else None)
        data = prepare(series, MAX_PERIODS_PER_DAY, self.report, what="Holt-Winters", history_s=history_s)
        period = SECONDS_PER_DAY // data.step_s
        self._data = data
        moved = state.carried(data.z, data.start_s, data.step_s) if state is not None else None
        if moved is not None:  # only the steps it has not absorbed
            self._state = moved
            self.report.fit_seconds = timer.elapsed()
            return self
        res = fit_smoother(data.z, params, what=f"{self.alias} on {series.name!r}", seasonal_period=period)
        if params is None:
            params = self._params = estimated_params(res, seasonal=True)
            hs = horizon_grid(int(SECONDS_PER_DAY // data.step_s))
            self._resid = widened_errors(
                res, self._params["smoothing_level"], hs, int(RESIDUAL_WINDOW_S // data.step_s)
            )
            self.report.seasons_s = (SECONDS_PER_DAY,)
            self.report.note(", ".join(f"{k}={v:.3f}" for k, v in self._params.items()))
        self._state = SmootherState.of(res, params, data.end_s, data.step_s, period)
        self.report.fit_seconds = timer.elapsed()
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
            lambda hc, _times: fitted_state(self._state, self.alias).forecast(hc),
        )
