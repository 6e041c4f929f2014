"""Damped local trend (Holt's linear method with a damped trend, statsmodels) on log1p counts.

The model for histories too short for any season (under two days: a new model, the one-day traces): it
follows the current level and its direction and lets the slope die out, which beats a flat level when
traffic is ramping through its daily cycle. It fits on the last day at most, at a step of at least one
minute, since only the recent level and slope matter to it. Quantiles: the empirical one-step residuals
widened with horizon, as for Holt-Winters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from forecaster.models.base import (
    FitReport,
    ModelError,
    ResidualTable,
    Timer,
    horizon_grid,
    require_history,
)
from forecaster.models.coarse import CoarseData, predict_coarse, prepare
from forecaster.models.smoothing import (
    SmootherState,
    estimated_params,
    fit_smoother,
    fitted_state,
    widened_errors,
)
from forecaster.types import SECONDS_PER_DAY, Forecast, TrafficSeries

MAX_PERIODS_PER_DAY = 1440
HISTORY_S = SECONDS_PER_DAY
MIN_STEPS = 10


class LocalTrend:
    alias = "local_trend"

    def __init__(self) -> None:
        self.report = FitReport(self.alias)
        self._state: SmootherState | None = None
        self._data: CoarseData | None = None
        self._params: dict[str, float] | None = None
        self._resid = ResidualTable([1], [np.zeros(1)])

    def fit(self, series: TrafficSeries) -> Self:
        return self._fit(series, None)

    def update(self, series: TrafficSeries) -> Self:
        return self._fit(series, self._params) if self._params else self.fit(series)

    def _fit(self, series: TrafficSeries, params: dict[str, float] | None) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        self.report = FitReport(self.alias, series.name, len(series), series.span_s, series.step_s)
        data = prepare(series.tail(HISTORY_S), MAX_PERIODS_PER_DAY, self.report, what="a local trend")
        if data.z.size < MIN_STEPS:
            raise ModelError(f"{self.alias}: needs {MIN_STEPS} steps of history, got {data.z.size}")
        self._data = data
        state = self._state if params is not None else None
        moved = state.carried(data.z, data.start_s, data.step_s) if state is not None else None
        if moved is not None:  # only the steps it has not absorbed
            self._state = moved
            self.report.fit_seconds = timer.elapsed()
            return self
        res = fit_smoother(data.z, params, what=f"{self.alias} on {series.name!r}")
        if params is None:
            params = self._params = estimated_params(res)
            hs = horizon_grid(max(1, data.z.size // 4))
            self._resid = widened_errors(res, self._params["smoothing_level"], hs)
            self.report.note(", ".join(f"{k}={v:.3f}" for k, v in self._params.items()))
        self._state = SmootherState.of(res, params, data.end_s, data.step_s)
        self.report.fit_seconds = timer.elapsed()
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        return predict_coarse(
            self._data,
            h,
            levels,
            self.alias,
            self._resid,
            lambda hc, _times: fitted_state(self._state, self.alias).forecast(hc),
        )
