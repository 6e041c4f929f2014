"""Prophet (the `prophet` package): piecewise-linear trend + daily (+ weekly) Fourier seasonality.

Fitted on log1p counts at a step of at least an hour: a 14-day series at 1-minute steps takes 6-10 s per
fit, 28 days at 15 minutes 0.17-0.25 s, at an hour 0.05 s. Its daily season is four Fourier terms (a
6-hour wave at the finest), which hourly points resolve as well as 15-minute ones. Weekly seasonality only
from two weeks of history (Prophet's day-of-week terms come from the timestamps' weekday, which for
relative-time traces is just a position mod 7, the same grouping the other models use). No holidays:
request traffic calendars are tenant-specific and several traces have no real dates.

Quantiles are Prophet's own predictive samples (trend and observation noise). Prophet does not condition
on data newer than its fit: `update` keeps the fitted model and only moves the forecast origin, so its
freshness is the refit schedule's (hourly in the service, daily in rolling evaluation). Since a step's
samples do not depend on the origin, they are drawn once for a day of steps ahead and sliced at each
origin: drawing them at every origin was a quarter of `auto`'s cross-validation time.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from forecaster.models.base import (
    DENSE_LEVELS,
    MIN_WEEKLY_HISTORY_S,
    FitReport,
    ForecastModel,
    ModelError,
    ResidualTable,
    Timer,
    forecast_from_log,
    require_history,
)
from forecaster.models.coarse import CoarseData, coarse_grid, coarse_horizon, prepare, to_fine
from forecaster.models.fallback import fall_back_if_short, relabel
from forecaster.types import SECONDS_PER_DAY, SECONDS_PER_WEEK, FloatArray, Forecast, TrafficSeries

MAX_PERIODS_PER_DAY = 24
UNCERTAINTY_SAMPLES = 300
SAMPLE_SEED = 0
SAMPLE_SPAN_S = SECONDS_PER_DAY  # steps ahead whose samples are drawn at once (beyond the horizon asked)


def _quiet() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _ds(times_s: FloatArray) -> Any:
    import pandas as pd

    return pd.to_datetime(times_s, unit="s")


class ProphetModel:
    alias = "prophet"

    def __init__(self) -> None:
        self.report = FitReport(self.alias)
        self._fallback: ForecastModel | None = None
        self._model: Any = None
        self._data: CoarseData | None = None
        # the predictive samples drawn so far, summarised per coarse step: (time of the first step, median,
        # deviations at DENSE_LEVELS, mean factor)
        self._summary: tuple[float, FloatArray, FloatArray, FloatArray] | None = None

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        self.report = FitReport(self.alias, series.name, len(series), series.span_s, series.step_s)
        self._fallback = fall_back_if_short(series, self.report)
        if self._fallback is not None:
            return self
        _quiet()
        import pandas as pd
        from prophet import Prophet

        data = prepare(series, MAX_PERIODS_PER_DAY, self.report, what="Prophet")
        weekly = data.z.size * data.step_s >= MIN_WEEKLY_HISTORY_S
        if not weekly:
            self.report.note("less than 14 days of history: no weekly seasonality")
        model = Prophet(
            daily_seasonality=True,
            weekly_seasonality=weekly,
            yearly_seasonality=False,
            uncertainty_samples=UNCERTAINTY_SAMPLES,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # prophet's own pandas deprecation chatter
                model.fit(pd.DataFrame({"ds": _ds(data.times_s()), "y": data.z}))
        except Exception as exc:  # cmdstan failures surface as various types; keep the message
            raise ModelError(f"{self.alias}: Stan optimisation failed on {series.name!r}: {exc}") from exc
        self._model, self._data, self._summary = model, data, None
        self.report.seasons_s = (SECONDS_PER_DAY, SECONDS_PER_WEEK) if weekly else (SECONDS_PER_DAY,)
        self.report.fit_seconds = timer.elapsed()
        return self

    def update(self, series: TrafficSeries) -> Self:
        if self._model is None or self._data is None or self._fallback is not None:
            return self.fit(series)
        # keep the fitted model; only the origin (and the coarse grid the forecast is spread from) moves, for
        # which the last day is enough
        self._data = coarse_grid(series, MAX_PERIODS_PER_DAY, SECONDS_PER_DAY)
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        if self._fallback is not None:
            return relabel(self._fallback.predict(h, levels), self.alias, self._fallback.alias)
        if self._model is None or self._data is None:
            raise ModelError(f"{self.alias}: predict() before fit()")
        data = self._data
        hc = coarse_horizon(data, h)
        loc, quantiles, mean_factor = self._summary_from(data.end_s, hc, data.step_s)
        table = ResidualTable.__new__(ResidualTable)
        table.horizons = np.arange(1, hc + 1, dtype=np.float64)
        table.table = quantiles
        table.mean_factor = mean_factor
        coarse = forecast_from_log(
            alias=self.alias,
            origin_s=data.end_s,
            step_s=data.step_s,
            location=loc,
            residuals=table,
            levels=levels,
        )
        return to_fine(data, coarse, h, self.alias)

    def _summary_from(self, start_s: float, n: int, step_s: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per coarse step from start_s, n of them: the samples' median (the log-scale location), their
        deviations from it at DENSE_LEVELS (n, levels), and E[exp(deviation)]. Sliced from those of the
        samples already drawn when they cover the steps (a step's summary, like its samples, does not depend
        on the origin), else drawn for those steps and SAMPLE_SPAN_S beyond and summarised once."""
        if self._summary is not None:
            t0, loc, quantiles, mean_factor = self._summary
            offset = (start_s - t0) / step_s
            k = round(offset)
            if abs(offset - k) < 1e-6 and k >= 0 and k + n <= loc.size:
                return loc[k : k + n], quantiles[k : k + n], mean_factor[k : k + n]
        drawn = self._draw(start_s, n + int(SAMPLE_SPAN_S // step_s), step_s)  # (steps, S)
        loc = np.median(drawn, axis=1)
        dev = drawn - loc[:, None]
        quantiles = np.quantile(dev, DENSE_LEVELS, axis=1).T
        mean_factor = np.mean(np.exp(dev), axis=1)
        self._summary = (start_s, loc, quantiles, mean_factor)
        return loc[:n], quantiles[:n], mean_factor[:n]

    def _draw(self, start_s: float, n: int, step_s: int) -> FloatArray:
        """Prophet's predictive samples (log scale) of the n coarse steps from start_s: (n, S)."""
        import pandas as pd

        times = start_s + step_s * np.arange(n, dtype=np.float64)
        # Prophet samples from numpy's global generator: seed it for this draw and put it back, so that the
        # same fit forecasts the same quantiles (a rerun, a backtest, a worker) and no caller's stream moves
        saved = np.random.get_state()  # noqa: NPY002 (Prophet draws from the legacy global generator)
        np.random.seed(SAMPLE_SEED)  # noqa: NPY002
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(
                    self._model.predictive_samples(pd.DataFrame({"ds": _ds(times)}))["yhat"], dtype=np.float64
                )
        finally:
            np.random.set_state(saved)  # noqa: NPY002
