"""A model of sparse traffic: per step ahead, the probability that at least one request arrives, and the
count given that one does.

Quantiles of a rate are the wrong object for a model that sees a few requests an hour: its counts are mostly
zero, a log-scale residual table turns its rare bursts into a heavy upper tail at every step, and a planner
reading that tail never lets the model reach zero. What a scale-to-zero decision needs is the chance of *any*
request before a replica could be warm again (planner/zero.py); this model forecasts exactly that.

- "Any request in step t" is a logistic regression on what explains it: the time of day (hourly), the day
  of the week (with two weeks of history), and the idle-time model: the time from the last active step seen
  to step t, through three exponential decays (a step, an hour, six hours) and its logarithm, so the chance
  falls as a session's silence grows, at whatever pace the model's own history shows; the lead from the
  origin to t through the same decays (a request may come in between, which the idle time alone cannot
  tell from a longer silence); and the share of active steps in the last day (a client that switched off
  for days). Trained on every origin of the history at a spread of horizons up to six hours, features from
  the data before each origin only, L2-regularised, fitted by Newton's method.
- Labels: a step's count when counts are whole numbers; when a source reports expected counts (fractional:
  rate x step), the Poisson chance of any, 1 - exp(-count), as a soft label.
- The count given any, per hour of day: the hour's requests over its chances of any (shrunk to the overall
  ratio); the mean is p times it, and quantiles are the mixture: 0 below 1 - p, above it the active steps'
  count distribution scaled to the hour.

`update` re-anchors (the idle time and the recent activity move with new data) without refitting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np

from forecaster.models.base import (
    MIN_WEEKLY_HISTORY_S,
    FitReport,
    ModelError,
    Timer,
    require_history,
)
from forecaster.types import SECONDS_PER_DAY, FloatArray, Forecast, TrafficSeries

ACTIVE = 0.5  # a step with at least this many (expected) requests is active, for the idle time
DECAYS_S = (None, 3600.0, 6 * 3600.0)  # None: one step
HORIZONS = (1, 2, 3, 5, 8, 12, 20, 35, 60, 100)
MAX_TRAIN_AHEAD_S = 6 * 3600.0
MAX_ROWS = 20_000  # training rows kept (a seeded sample of origins x horizons): a 1-minute fortnight is 200k
L2 = 1.0
SHRINK_STEPS = 5.0  # an hour's count level is shrunk to the overall one with this many steps' weight
GIVEN_GRID = np.linspace(0.0, 1.0, 201)  # the levels the count given any is kept at
NEVER_S = 30 * SECONDS_PER_DAY  # the idle time of a series with no active step yet
SPARSE_SHARE = 0.25  # a history at least this idle (steps under ACTIVE requests) is sparse


def is_sparse(series: TrafficSeries) -> bool:
    """Whether at least SPARSE_SHARE of the series' observed steps saw (about) no request: where `auto`
    also tries this model."""
    v = series.values[np.isfinite(series.values)]
    return bool(v.size) and float(np.mean(v < ACTIVE)) >= SPARSE_SHARE


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -35.0, 35.0))))


def fit_logistic(x: FloatArray, z: FloatArray, l2: float = L2, iterations: int = 30) -> FloatArray:
    """Coefficients of P(z) = sigmoid(x @ b), z in [0, 1] (soft labels allowed), by Newton's method with
    an L2 penalty on all but the first (intercept) column."""
    _n, k = x.shape
    b = np.zeros(k)
    pen = np.full(k, l2)
    pen[0] = 1e-6
    for _ in range(iterations):
        p = _sigmoid(x @ b)
        grad = x.T @ (p - z) + pen * b
        w = p * (1 - p)
        hess = (x * w[:, None]).T @ x + np.diag(pen)
        try:
            delta = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            delta = np.linalg.lstsq(hess, grad, rcond=None)[0]
        b -= delta
        if float(np.max(np.abs(delta))) < 1e-6:
            break
    return b


class SparseCounts:
    """P(any request) per step by logistic regression on seasonality and idle time; counts given any by
    hour of day (module docstring)."""

    alias = "sparse"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.report = FitReport(self.alias)
        self._coef: FloatArray | None = None
        self._weekly = False
        self._step = 60
        self._origin = 0.0
        self._idle_s: float = NEVER_S  # at the origin: seconds since the end of the last active step
        self._recent = 0.0  # share of active steps in the last day before the origin
        self._level = np.ones(24)  # count given any, per hour of day
        self._given: FloatArray = np.ones(GIVEN_GRID.size)  # quantiles of the count given any, mean 1
        self._whole = True

    # features -----------------------------------------------------------------------------------------
    def _features(
        self, start_s: FloatArray, idle_s: FloatArray, lead_s: FloatArray, recent: FloatArray
    ) -> FloatArray:
        """Rows for steps starting at `start_s`, `idle_s` after the last active step seen, `lead_s` after
        the origin (the end of the data: a request may come in between), with `recent` activity."""
        hours = ((start_s % SECONDS_PER_DAY) // 3600).astype(np.int64)
        cols = [np.ones_like(start_s)]
        hod = np.zeros((start_s.size, 24))
        hod[np.arange(start_s.size), hours] = 1.0
        cols.extend(hod[:, 1:].T)  # hour 0 is the intercept's
        if self._weekly:
            days = ((start_s // SECONDS_PER_DAY) % 7).astype(np.int64)
            dow = np.zeros((start_s.size, 7))
            dow[np.arange(start_s.size), days] = 1.0
            cols.extend(dow[:, 1:].T)
        for tau in DECAYS_S:
            cols.append(np.exp(-idle_s / (tau or self._step)))
        for tau in DECAYS_S:
            cols.append(np.exp(-lead_s / (tau or self._step)))
        cols.append(np.log1p(idle_s / 3600.0))  # past the decays: a day idle and a week idle differ too
        cols.append(recent)
        return np.column_stack(cols)

    def _state(self, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per step i: seconds from the end of the last active step before i to the start of i, and the
        share of active steps in the day before i."""
        active = np.isfinite(y) & (y >= ACTIVE)
        idx = np.arange(y.size)
        last = np.where(active, idx, -1)
        last = np.maximum.accumulate(last)
        prev = np.concatenate([[-1], last[:-1]])  # the last active step strictly before i
        idle = np.where(prev >= 0, (idx - prev - 1) * float(self._step), NEVER_S)
        day = max(1, round(SECONDS_PER_DAY / self._step))
        c = np.concatenate([[0.0], np.cumsum(active)])
        lo = np.maximum(0, idx - day)
        recent = (c[idx] - c[lo]) / np.maximum(1, idx - lo)
        return idle, recent

    # protocol -----------------------------------------------------------------------------------------
    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        require_history(series, self.alias)
        y = series.values.astype(np.float64)
        finite = np.isfinite(y)
        if not finite.any():
            raise ModelError(f"{self.alias}: series {series.name!r} has no finite value")
        self._step = series.step_s
        self._weekly = series.span_s >= MIN_WEEKLY_HISTORY_S
        yf = np.where(finite, y, 0.0)
        self._whole = bool(np.all(np.abs(yf - np.round(yf)) < 1e-9))
        z = (yf >= 1.0).astype(np.float64) if self._whole else -np.expm1(-yf)
        idle, recent = self._state(y)
        starts = series.start_s + np.arange(y.size) * float(self._step)

        # rows: (origin o, horizon h) -> target step o + h - 1, features from the data before o only
        max_h = max(1, int(MAX_TRAIN_AHEAD_S // self._step))
        hs = sorted({min(h, max_h) for h in HORIZONS})

        n = y.size
        o_all = np.concatenate([np.arange(1, n - h + 1) for h in hs])
        h_all = np.concatenate([np.full(max(0, n - h), h) for h in hs])
        t_all = o_all + h_all - 1
        keep = finite[t_all]
        o_all, h_all, t_all = o_all[keep], h_all[keep], t_all[keep]
        if o_all.size > MAX_ROWS:
            pick = np.sort(np.random.default_rng(self.seed).choice(o_all.size, MAX_ROWS, replace=False))
            o_all, h_all, t_all = o_all[pick], h_all[pick], t_all[pick]
        if o_all.size < 10:
            raise ModelError(f"{self.alias}: series {series.name!r} is too short to learn from")
        lead = (h_all - 1) * float(self._step)
        x = self._features(starts[t_all], idle[o_all] + lead, lead, recent[o_all])
        self._coef = fit_logistic(x, z[t_all])

        # the count given any, per hour of day: requests over the chance of any (a ratio estimator that
        # holds for whole counts and for expected ones alike), shrunk to the overall ratio
        act = finite & (yf >= ACTIVE)
        hours = ((starts % SECONDS_PER_DAY) // 3600).astype(np.int64)
        ys = np.bincount(hours[finite], weights=yf[finite], minlength=24)
        zs = np.bincount(hours[finite], weights=z[finite], minlength=24)
        overall = max(1.0, float(ys.sum()) / max(float(zs.sum()), 1e-12))
        self._level = np.maximum(1.0, (ys + SHRINK_STEPS * overall) / (zs + SHRINK_STEPS))
        # the shape of the count given any: active steps' counts over their hour's level, mean 1
        given = yf[act] / self._level[hours[act]]
        shape = np.sort(given / given.mean()) if given.size else np.ones(1)
        self._given = np.quantile(shape, GIVEN_GRID)  # its quantiles, interpolated at predict

        self._anchor(series)
        self.report = FitReport.of(
            self.alias,
            series,
            fit_step_s=self._step,
            seasons_s=(SECONDS_PER_DAY, 7 * SECONDS_PER_DAY) if self._weekly else (SECONDS_PER_DAY,),
            fit_seconds=timer.elapsed(),
        )
        self.report.note(
            f"any request per step: logistic on hour of day{', day of week' if self._weekly else ''} and "
            f"idle time, {o_all.size} rows; {int(act.sum())} active steps of {int(finite.sum())}"
        )
        return self

    def _anchor(self, series: TrafficSeries) -> None:
        y = series.values.astype(np.float64)
        idle, recent = self._state(np.concatenate([y, [np.nan]]))
        self._idle_s, self._recent = float(idle[-1]), float(recent[-1])
        self._origin = series.end_s

    def update(self, series: TrafficSeries) -> Self:
        if self._coef is None:
            return self.fit(series)
        if series.step_s != self._step or len(series) < 2:
            return self.fit(series)
        self._anchor(series)
        return self

    def p_any(self, h: int) -> FloatArray:
        """The chance of at least one request in each of the next h steps, never above the chance of one
        from the origin through that step (1 - p_none): the two are fitted as separate questions (the lead
        unknown, or seen to be quiet), and a planner asking both must not read a step as likelier than
        the span that holds it."""
        return self.chances(h)[0]

    def chances(self, h: int) -> tuple[FloatArray, FloatArray]:
        """(p_any, p_none) of the next h steps. p_none is the chance of no request from the origin through
        each step: the product of each step's chance given that none came since the origin (the idle time
        grown by the steps before it, nothing unseen in between). After a session, that chance falls with
        the idle time as the hazard of a new session, not as the steps' own chances, which still count the
        session possibly going on."""
        if self._coef is None:
            raise ModelError(f"{self.alias}: predict() before fit()")
        k = np.arange(h, dtype=np.float64)
        starts = self._origin + k * self._step
        gap = self._idle_s + k * self._step
        recent = np.full(h, self._recent)
        own = _sigmoid(self._features(starts, gap, k * self._step, recent) @ self._coef)
        hazard = _sigmoid(self._features(starts, gap, np.zeros(h), recent) @ self._coef)
        none = np.asarray(np.cumprod(1.0 - hazard))
        return np.minimum(own, 1.0 - none), none

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        p, none = self.chances(h)
        starts = self._origin + np.arange(h) * float(self._step)
        level = self._level[((starts % SECONDS_PER_DAY) // 3600).astype(np.int64)]
        quantiles: dict[float, FloatArray] = {}
        for q in levels:
            u = np.clip((q - (1.0 - p)) / np.maximum(p, 1e-12), 0.0, 1.0)  # the level within "given any"
            scaled = np.interp(u, GIVEN_GRID, self._given) * level
            quantiles[q] = np.where(q <= 1.0 - p, 0.0, scaled)
        for a, b in zip(sorted(quantiles), sorted(quantiles)[1:], strict=False):
            quantiles[b] = np.maximum(quantiles[b], quantiles[a])
        mean = p * level
        note = f"idle {self._idle_s / 60:.0f} min at the origin" if self._idle_s < NEVER_S else "never active"
        return Forecast(self._origin, self._step, mean, quantiles, self.alias, (note,), p_any=p, p_none=none)


def calibration_bins(
    predicted: FloatArray, observed: FloatArray, bins: int = 10, min_cases: int = 100
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed frequency, cases) per decile bin of the predicted probability, for bins with
    at least `min_cases` cases: how far a probability forecast is from what happened."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        if n >= min_cases:
            out.append((float(predicted[m].mean()), float(observed[m].mean()), n))
    return out


def brier(predicted: FloatArray, observed: FloatArray) -> float:
    return float(np.mean((predicted - observed) ** 2)) if predicted.size else math.nan
