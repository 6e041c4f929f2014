"""A forecast from day one: a borrowed daily shape scaled by the model's own level.

With under two days of history no seasonal model can learn a day, and the recent-level fallback forecasts a
flat line: it misses the morning rise that a model a few hours old is about to meet. Models of one fleet
mostly serve the same users, so this model borrows a shape (forecaster/shape.py: the fleet's median, or a
named model's) and scales it by the model's own traffic:

- which shape: of a fleet's shapes, the median of the few that best forecast the model's own hours so far
  (a fleet serving different users has several typical days); how strongly: the power of the shape (0 is
  the flat recent level) that best forecast those hours;
- level: the requests over the trailing `level_window_s` divided by what the shape expects over the same
  minutes (a ratio estimator);
- own data: once the history covers the time of day being forecast (more than a day of it), the model's
  own deviation from the borrowed shape at that time yesterday is added on the log scale with weight
  days/2, so its own day takes over as days accumulate; at two days the seasonal models take over;
- quantiles: the log errors of this same rule (level from the window before, shape ahead) over the history,
  at a few horizons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from forecaster.models.base import (
    MIN_DAILY_HISTORY_S,
    FitReport,
    ResidualTable,
    Timer,
    fill_gaps,
    forecast_from_log,
    horizon_grid,
    require_history,
)
from forecaster.shape import DailyShape, median_shape
from forecaster.types import SECONDS_PER_DAY, FloatArray, Forecast, TrafficSeries

LEVEL_WINDOW_S = 3600.0  # the recent level's own window: with a flat shape the two forecasts agree
OWN_SMOOTH_S = 3600.0  # yesterday's deviation is read as its mean over an hour around the same time
# how strongly the borrowed shape is followed (shape ** strength): chosen per fit from these by forecasting
# the model's own history TRUST_HORIZON_S ahead (0: a flat level, the fallback's forecast)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
TRUST_HORIZON_S = 3 * 3600.0
NEAREST = 3  # fleet shapes whose median is borrowed


class BorrowedShape:
    alias = "borrowed_shape"

    def __init__(
        self,
        priors: Sequence[DailyShape],
        level_window_s: float = LEVEL_WINDOW_S,
        strengths: Sequence[float] = STRENGTHS,
    ) -> None:
        if not priors:
            raise ValueError("a borrowed shape needs at least one shape to borrow")
        self.priors = tuple(priors)
        self.prior = self.priors[0]
        self.level_window_s = level_window_s
        if not strengths or any(not 0.0 <= b <= 1.0 for b in strengths):
            raise ValueError(f"borrowed shape strengths must be in [0, 1], got {list(strengths)}")
        self.strengths = tuple(
            sorted(strengths)
        )  # one strength: fixed (a benchmark scores each in hindsight)
        self.report = FitReport(self.alias)
        self._level = 0.0  # requests per step per unit of the shape
        self._origin, self._step = 0.0, 1
        self._start = 0.0
        self._dev: FloatArray = np.zeros(0)  # log deviation from the borrowed fit, smoothed, per step
        self._own_weight = 0.0
        self._resid = ResidualTable([1], [np.zeros(1)])
        self._beta = 1.0

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        y = fill_gaps(series.values)
        n, step = y.size, series.step_s
        w = int(max(1, min(round(self.level_window_s / step), n)))
        horizon = max(1, round(TRUST_HORIZON_S / step))
        self.prior = _nearest(self.priors, y, series.start_s, step, w, horizon)
        prior = self.prior.over(series.start_s, step, n)
        self._beta = _trust(y, prior, w, horizon, self.strengths)
        shape = prior**self._beta
        # its own day, measured against the borrowed shape at the history's overall level
        k = max(1, round(OWN_SMOOTH_S / step))
        self._dev = _centred_mean(np.log1p(y) - np.log1p(_ratio(y, shape) * shape), k)
        self._own_weight = float(min(1.0, series.span_s / MIN_DAILY_HISTORY_S))
        self._origin, self._step, self._start = series.end_s, step, series.start_s
        own = shape * np.exp(self._own_weight * self._own(series.start_s, n))
        self._level = _ratio(y[-w:], own[-w:])
        self._resid = _errors(y, shape, max(1, min(w, n // 4)))
        self.report = FitReport.of(self.alias, series, fit_step_s=step, seasons_s=(SECONDS_PER_DAY,))
        self.report.note(
            f"{series.span_s / 3600:.1f} h of history: borrowed {self.prior.source} at strength "
            f"{self._beta:g} (the strength that forecast this model's own last hours best), scaled by its "
            f"level over the last {w * step / 3600:.1f} h"
        )
        if series.span_s > SECONDS_PER_DAY:
            self.report.note(
                f"its own day weighs {self._own_weight:.2f} against the borrowed shape where it has seen "
                "that time of day"
            )
        self.report.fit_seconds = timer.elapsed()
        return self

    def _own(self, start_s: float, n: int) -> FloatArray:
        """The smoothed own deviation one day before each of n steps from start_s (0 where unseen)."""
        back = np.round((start_s + np.arange(n) * self._step - SECONDS_PER_DAY - self._start) / self._step)
        idx = back.astype(np.int64)
        seen = (idx >= 0) & (idx < self._dev.size)
        out = np.zeros(n)
        out[seen] = self._dev[idx[seen]]
        return out

    def update(self, series: TrafficSeries) -> Self:
        return self.fit(series)  # one pass over under two days: a refit is as cheap as an update

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        step = self._step
        shape = self.prior.over(self._origin, step, h) ** self._beta
        loc = np.log1p(self._level * shape * np.exp(self._own_weight * self._own(self._origin, h)))
        fc = forecast_from_log(
            alias=self.alias,
            origin_s=self._origin,
            step_s=step,
            location=loc,
            residuals=self._resid,
            levels=levels,
        )
        # the mean is the level times the shape itself (as the recent level's is its mean): a history with
        # an outage in it has log errors whose exponential mean would be meaningless
        mean = np.maximum(np.expm1(loc), 0.0)
        return Forecast(
            fc.origin_s, step, mean, fc.quantiles, self.alias, (f"borrowed: {self.prior.source}",)
        )


def _ratio(y: FloatArray, shape: FloatArray) -> float:
    den = float(shape.sum())
    return float(y.sum()) / den if den > 0 else 0.0


def _centred_mean(x: FloatArray, k: int) -> FloatArray:
    """Mean of x over [i - k/2, i + k/2] clipped to the array."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(x.size)
    lo = np.maximum(0, i - k // 2)
    hi = np.minimum(x.size, i + k // 2 + 1)
    return np.asarray((c[hi] - c[lo]) / (hi - lo), dtype=np.float64)


def _errors(y: FloatArray, shape: FloatArray, w: int) -> ResidualTable:
    """Log errors of forecasting y[o + h - 1] as (level over y[o - w:o]) x shape, at a few horizons h."""
    n = y.size
    origins = np.arange(w, n)
    if origins.size == 0:
        return ResidualTable([1], [np.zeros(1)])
    level = _levels(y, shape, w, origins)
    horizons = horizon_grid(max(1, n - w))
    errors = []
    for hz in horizons:
        o = origins[origins + hz - 1 < n]
        at = o + hz - 1
        errors.append(np.log1p(y[at]) - np.log1p(level[o - w] * shape[at]))
    return ResidualTable(horizons, errors)


def _nearest(
    priors: tuple[DailyShape, ...], y: FloatArray, start_s: float, step: int, w: int, h: int
) -> DailyShape:
    """Of several shapes (a fleet's), the median of the NEAREST that best forecast this model's own
    history (the same rule as _trust at full strength): a fleet whose models serve different users has
    several typical days, and the median of all of them fits none."""
    if len(priors) == 1:
        return priors[0]
    errs = [_error(y, p.over(start_s, step, y.size), w, h) for p in priors]
    order = np.argsort(errs, kind="stable")[:NEAREST]
    best = [priors[i] for i in order]
    names = f"{len(best)} of {len(priors)} fleet shapes nearest its own hours"
    return median_shape(best, f"the median of the {names}") or priors[0]


def _error(y: FloatArray, m: FloatArray, w: int, h: int) -> float:
    """Mean absolute error of (level over the w steps before each origin) x m's relative change, 1..h
    steps ahead, over the history (inf when the history is too short to check)."""
    n = y.size
    origins = np.arange(w, n - h + 1) if n - h + 1 > w else np.zeros(0, dtype=np.int64)
    if origins.size == 0:
        return float("inf")
    ahead = origins[:, None] + np.arange(h)[None, :]
    level = _levels(y, m, w, origins)
    return float(np.mean(np.abs(y[ahead] - level[:, None] * m[ahead])))


def _levels(y: FloatArray, m: FloatArray, w: int, origins: np.ndarray) -> FloatArray:
    """The level (requests per step per unit of m) over the w steps before each origin: a ratio estimator,
    as the fit's own level."""
    cy = np.concatenate([[0.0], np.cumsum(y)])
    cm = np.concatenate([[0.0], np.cumsum(m)])
    den = cm[origins] - cm[origins - w]
    return np.asarray(np.where(den > 0, (cy[origins] - cy[origins - w]) / np.maximum(den, 1e-12), 0.0))


def _trust(y: FloatArray, prior: FloatArray, w: int, h: int, strengths: Sequence[float] = STRENGTHS) -> float:
    """The strength of the borrowed shape whose forecasts (level over the w steps before each origin,
    times the shape's relative change, 1..h steps ahead) erred least over the history; ties go to the
    weaker shape."""
    best, best_err = strengths[-1], np.inf
    for beta in strengths:
        err = _error(y, prior**beta, w, h)
        if err < best_err * (1 - 1e-9):
            best, best_err = beta, err
    return best
