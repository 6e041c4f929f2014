"""Shared plumbing for the models that fit on a coarser grid than the series (statsmodels, Prophet).

A 1-minute series has a 1,440-step daily season: far too long for Holt-Winters' seasonal states, MSTL's
LOESS or Prophet's per-point cost, and no more informative than 15-minute bins. These models therefore fit
on log1p(counts per coarse step) over an aligned coarse grid, and their forecasts are spread back onto the
series' own step (`to_fine_grid`), which the fit report states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from forecaster.models.base import (
    FitReport,
    ModelError,
    Resampled,
    ResidualTable,
    coarse_step,
    despike,
    fill_gaps,
    forecast_from_log,
    periods_per_day,
    resample,
    to_fine_grid,
)
from forecaster.types import SECONDS_PER_DAY, FloatArray, Forecast, TrafficSeries

MAX_HISTORY_S = 28 * SECONDS_PER_DAY
# what an update that carries a model's state prepares: only its new steps are read, and a week is enough
# for the despike judgement of them (the daily shape as a median of seven days); preparing the whole 28 days
# at every update was a fifth of `auto`'s cross-validation time
UPDATE_HISTORY_S = 7 * SECONDS_PER_DAY


@dataclass(frozen=True)
class CoarseData:
    z: FloatArray  # log1p(counts per coarse step), gaps filled
    start_s: float
    step_s: int  # the coarse step
    fine_step_s: int
    origin_s: float  # end of the fine series (where forecasts start)

    @property
    def end_s(self) -> float:
        return self.start_s + self.z.size * self.step_s

    def times_s(self) -> FloatArray:
        return self.start_s + self.step_s * np.arange(self.z.size, dtype=np.float64)


def prepare(
    series: TrafficSeries,
    max_periods_per_day: int,
    report: FitReport,
    *,
    what: str,
    history_s: float = MAX_HISTORY_S,
) -> CoarseData:
    """Resample (when the daily season would be too long), cut to the last `history_s` (28 days), fill
    gaps, log1p."""
    rs = _coarse_tail(series, max_periods_per_day, history_s)
    fit_step = rs.step_s
    report.fit_step_s = fit_step
    if fit_step != series.step_s:
        report.note(
            f"fitted at {fit_step} s steps (resampled from {series.step_s} s: a "
            f"{periods_per_day(series.step_s)}-step daily season is too long for {what})"
        )
    if rs.values.size < 2:
        raise ModelError(f"{what}: fewer than two {fit_step} s steps of history")
    clean, n_spikes = despike(np.log1p(rs.values), rs.start_s, fit_step)
    if n_spikes:
        report.note(f"{n_spikes} outlying steps (e.g. outage zeros) treated as gaps")
    z = fill_gaps(clean, periods_per_day(fit_step))
    return CoarseData(z, rs.start_s, fit_step, series.step_s, series.end_s)


def coarse_grid(series: TrafficSeries, max_periods_per_day: int, history_s: float) -> CoarseData:
    """The coarse grid of the last `history_s`, its values resampled but not cleaned: for a model that moves
    only its forecast origin on an update (Prophet), which reads the grid's end and never its values, so
    that an update does not pay for an outlier judgement nothing reads."""
    rs = _coarse_tail(series, max_periods_per_day, history_s)
    return CoarseData(np.log1p(rs.values), rs.start_s, rs.step_s, series.step_s, series.end_s)


def _coarse_tail(series: TrafficSeries, max_periods_per_day: int, history_s: float) -> Resampled:
    """The last `history_s` on the coarse grid: the one cut that a fit and an update share, so that their
    grids end at the same step."""
    fit_step = coarse_step(series.step_s, max_periods_per_day)
    return resample(series.tail(history_s + fit_step), fit_step)


def update_history_s(series: TrafficSeries, carried_end_s: float | None) -> float:
    """The history an update prepares: a week when a state carried to `carried_end_s` lies inside it (with
    a day to spare), else all of it (the state cannot be carried and the model re-runs)."""
    if carried_end_s is not None and series.end_s - carried_end_s < UPDATE_HISTORY_S - SECONDS_PER_DAY:
        return UPDATE_HISTORY_S
    return MAX_HISTORY_S


def coarse_horizon(data: CoarseData, h: int) -> int:
    """Coarse steps needed from the coarse grid's end to cover h fine steps from the series' end (+1 so
    that interpolation between bin centres has a right neighbour)."""
    need = data.origin_s + h * data.fine_step_s - data.end_s
    return max(1, int(np.ceil(need / data.step_s)) + 1)


def to_fine(data: CoarseData, coarse: Forecast, h: int, alias: str) -> Forecast:
    levels = list(coarse.quantiles)
    paths = np.stack([coarse.mean, *(coarse.quantiles[q] for q in levels)])
    # every path (mean and each level) through the same interpolation weights at once
    fine = np.maximum(to_fine_grid(data.end_s, data.step_s, paths, data.origin_s, data.fine_step_s, h), 0.0)
    quantiles = {q: fine[i + 1] for i, q in enumerate(levels)}
    # interpolation keeps quantiles ordered: each fine value is the same convex combination for every level
    return Forecast(data.origin_s, data.fine_step_s, fine[0], quantiles, alias, coarse.notes)


def predict_coarse(
    data: CoarseData | None,
    h: int,
    levels: Sequence[float],
    alias: str,
    residuals: ResidualTable,
    location: Callable[[int, FloatArray], FloatArray],
) -> Forecast:
    """The shared tail of every coarse model's predict: enough coarse steps to cover h fine ones, the
    model's log-scale `location(n_steps, step_times)`, its error table, and the spread back to the fine
    grid."""
    if data is None:
        raise ModelError(f"{alias}: predict() before fit()")
    hc = coarse_horizon(data, h)
    times = data.end_s + data.step_s * np.arange(hc, dtype=np.float64)
    coarse = forecast_from_log(
        alias=alias,
        origin_s=data.end_s,
        step_s=data.step_s,
        location=location(hc, times),
        residuals=residuals,
        levels=levels,
    )
    return to_fine(data, coarse, h, alias)
