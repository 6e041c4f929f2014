"""The fast seasonal-profile model: time-of-day shape x day-of-week level x a mean-reverting current level.

On the log1p scale each step is modelled as

    z[t] = shape[time of day] + weekday[day position mod 7] + m + d[t] + noise

- `shape` is a robust, recency-weighted average over days of each day's deviation from its own level, on
  bins of at least 5 minutes (a 1-minute profile from 14 days is mostly noise), lightly smoothed around the
  clock and interpolated back to the series' step, plus a `fine` correction at the series' own step where
  the smooth shape misses something that recurs at the same time on most recent days: a nightly pause, a
  batch client switching on at 02:00, a step at 09:00. Averaging on bins and smoothing on the log scale
  blur such an edge over tens of minutes on both sides (one zero minute pulls a 5-minute bin's log mean
  down by orders of magnitude); the correction is the per-step median residual, kept only where it is
  consistent across days (most days on the same side, and large against its own standard error), so noise
  at 1-minute resolution is not learned. Zeros inside a recurring pause are therefore season, not outliers;
- `weekday` is the average deviation of each day's level from its centred 7-day mean, by the day's position
  in the week counted from the epoch (never from calendar names: several traces have relative time only);
  learnt only from at least two weeks and shrunk toward zero (James-Stein) by how large it is against the
  day-to-day noise;
- `m` is the long-run level and `d[t]` the current deviation from it: an exponentially weighted mean of the
  residuals, forecast to decay back to `m` by a factor phi per step. Both the smoothing and the decay are
  chosen per series from a small grid by in-sample multi-horizon error, so a drifting series tracks its level
  and a stable one averages its noise away.

Quantiles come from the empirical in-sample errors at a handful of horizons (log-scale), interpolated to
every step. Everything is array arithmetic over a (series x time) matrix, so `fit_batch` fits a thousand
series on a shared grid in a few seconds; `SeasonalProfile` is the one-series view of the same code.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Self

import numpy as np
from scipy.signal import lfilter

from forecaster.models.base import (
    DENSE_LEVELS,
    MIN_DAILY_HISTORY_S,
    MIN_WEEKLY_HISTORY_S,
    FitReport,
    ForecastModel,
    ModelError,
    ResidualTable,
    Timer,
    coarse_step,
    forecast_from_log,
    horizon_grid,
)
from forecaster.models.fallback import fall_back_if_short, relabel
from forecaster.shape import DailyShape
from forecaster.types import SECONDS_PER_DAY, FloatArray, Forecast, TrafficSeries

MAX_HISTORY_S = 28 * SECONDS_PER_DAY
SHAPE_HALF_LIFE_DAYS = 7.0
MIN_BIN_S = 300
SMOOTH_HALF_WIDTH_S = 900
SCORE_WINDOW_S = 7 * SECONDS_PER_DAY
MAX_SCORE_ORIGINS = 400
MAX_RESID_ORIGINS = 1500
OUTLIER_SIGMAS = 5.0
CHUNK_SERIES = 32
# candidate half-lives (seconds) of the level smoother and of the level's decay back to its mean
LEVEL_HALF_LIVES_S = (0.0, 900.0, 3600.0, 4 * 3600.0)  # 0: one step
REVERT_HALF_LIVES_S = (3600.0, 6 * 3600.0, 24 * 3600.0, np.inf)
RESIDUAL_HORIZON_S = SECONDS_PER_DAY


@dataclass
class ProfileBatch:
    """Fitted profile parameters for n series on one grid (arrays lead with the series axis)."""

    step_s: int
    origin_s: float
    bin_s: int
    shape: FloatArray  # (n, bins per day)
    weekday: FloatArray  # (n, 7)
    mean_level: FloatArray  # (n,)
    deviation: FloatArray  # (n,) current level deviation d[T]
    alpha: FloatArray  # (n,)
    phi: FloatArray  # (n,)
    resid_horizons: list[int]
    resid_table: FloatArray  # (n, horizons, DENSE_LEVELS)
    resid_mean_factor: FloatArray  # (n, horizons)
    weekly: bool
    clip: FloatArray | None = None  # (n,) bound on one step's pull on the level (log scale)
    fine: FloatArray | None = None  # (n, steps per day) recurring per-step correction of the shape (log)
    # the (n, week slots) table seasonal_part gathers from, kept once the fit is final (predict and
    # with_new_data fill it) so the live loop's re-anchor and forecast every few minutes do not rebuild it
    week: FloatArray | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.shape.shape[0])

    def seasonal_part(self, times_s: FloatArray) -> FloatArray:
        """shape + weekday at the centre of each step starting at times_s; (n, len(times_s)).

        Built as one gather from a (series x week-slot) table: the shape interpolated to the step's own
        slots of the day plus each weekday's offset. For 1,000 series at 1-minute steps this one gather is
        most of the cost of a fit, so it is done once per pass."""
        per_day = max(1, round(SECONDS_PER_DAY / self.step_s))
        week = self.week if self.week is not None else self.week_table()
        slot = np.floor((times_s % SECONDS_PER_DAY) / self.step_s + 1e-9).astype(np.int64) % per_day
        dow = (np.floor(times_s / SECONDS_PER_DAY) % 7).astype(np.int64)
        return np.asarray(week[:, dow * per_day + slot], dtype=np.float64)

    def week_table(self) -> FloatArray:
        """(n, 7 x steps per day): the shape at each step of the day plus each weekday's offset."""
        per_day = max(1, round(SECONDS_PER_DAY / self.step_s))
        b = self.shape.shape[1]
        slot_t = np.arange(per_day, dtype=np.float64) * self.step_s
        pos = ((slot_t + self.step_s / 2) % SECONDS_PER_DAY) / self.bin_s - 0.5
        i0 = np.floor(pos).astype(np.int64)
        f = pos - i0
        i0 %= b
        day_shape = self.shape[:, i0] * (1 - f) + self.shape[:, (i0 + 1) % b] * f  # (n, per_day)
        if self.fine is not None:
            day_shape = day_shape + self.fine
        return np.asarray(
            (day_shape[:, None, :] + self.weekday[:, :, None]).reshape(self.n, 7 * per_day),
            dtype=np.float64,
        )

    def final(self) -> ProfileBatch:
        """This fit with its week table built (the fit is done: nothing the table reads changes again)."""
        if self.week is None:
            self.week = self.week_table()
        return self

    def residual_table(self, i: int) -> ResidualTable:
        t = ResidualTable.__new__(ResidualTable)
        t.horizons = np.asarray(self.resid_horizons, dtype=np.float64)
        t.table = self.resid_table[i]
        t.mean_factor = self.resid_mean_factor[i]
        return t

    def location(self, h: int) -> FloatArray:
        times = self.origin_s + self.step_s * np.arange(h, dtype=np.float64)
        decay = self.phi[:, None] ** np.arange(1, h + 1, dtype=np.float64)[None, :]
        return np.asarray(
            self.seasonal_part(times) + self.mean_level[:, None] + self.deviation[:, None] * decay,
            dtype=np.float64,
        )

    def predict(self, h: int, levels: Sequence[float], alias: str = "profile") -> list[Forecast]:
        loc = self.final().location(h)
        return [
            forecast_from_log(
                alias=alias,
                origin_s=self.origin_s,
                step_s=self.step_s,
                location=loc[i],
                residuals=self.residual_table(i),
                levels=levels,
            )
            for i in range(self.n)
        ]

    def with_new_data(self, values: FloatArray, start_s: float) -> ProfileBatch:
        """Re-anchor on newer observations (n, T) with the fitted shape and parameters: only d[T] moves.

        The level is carried forward over only the steps after the current origin (the live loop re-anchors
        every few minutes on a 14-day history, so the cost is the new steps, not the window). When the new
        data does not continue this origin (it ends before it, starts after it, or the gap is longer than
        the window the level remembers), the level is recomputed from the last three days."""
        self.final()
        n_new = round((start_s + values.shape[1] * self.step_s - self.origin_s) / self.step_s)
        first = values.shape[1] - n_new
        keep = min(values.shape[1], int(3 * SECONDS_PER_DAY / self.step_s))
        if 0 <= n_new <= keep and first >= 0:
            dev = self.deviation.copy()
            new = values[:, first:]
        else:
            dev = np.zeros(self.n)
            new = values[:, -keep:]
        t0 = start_s + (values.shape[1] - new.shape[1]) * self.step_s
        if new.shape[1]:
            times = t0 + self.step_s * np.arange(new.shape[1], dtype=np.float64)
            r = np.log1p(new) - self.seasonal_part(times) - self.mean_level[:, None]
            if self.clip is not None:
                r = np.clip(r, -self.clip[:, None], self.clip[:, None])
            r = np.where(np.isfinite(r), r, 0.0)  # a gap pulls the level toward its mean, as in the fit
            for i in range(self.n):
                a = float(self.alpha[i])
                # d[t] = (1 - a) d[t-1] + a r[t], started from the carried level
                dev[i] = lfilter([a], [1.0, -(1.0 - a)], r[i], zi=[(1.0 - a) * dev[i]])[0][-1]
        origin = start_s + values.shape[1] * self.step_s
        return replace(self, origin_s=origin, deviation=dev)


def _nanquantile(x: FloatArray, levels: Sequence[float], axis: int) -> FloatArray:
    """np.nanquantile (linear) for many rows at once: one sort with NaN last, then a gather per level.
    numpy's own nanquantile loops over rows in Python, which dominates a 1,000-series fit. Returns the
    levels on a new leading axis; NaN where a row has no finite value."""
    xs = np.sort(np.moveaxis(x, axis, -1), axis=-1)
    n_ok = np.isfinite(xs).sum(axis=-1, keepdims=True)
    out = []
    for lv in levels:
        pos = lv * np.maximum(n_ok - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n_ok - 1, 0))
        f = pos - lo
        v = np.take_along_axis(xs, lo, -1) * (1 - f) + np.take_along_axis(xs, hi, -1) * f
        out.append(np.where(n_ok > 0, v, np.nan)[..., 0])
    return np.stack(out)


def _nanmedian(x: FloatArray, axis: int) -> FloatArray:
    return np.asarray(_nanquantile(x, (0.5,), axis)[0], dtype=np.float64)


def _nanmean(x: FloatArray, axis: int) -> FloatArray:
    """np.nanmean without its "Mean of empty slice" warning: a cell with nothing finite (a long gap in the
    history) is NaN, which every caller already treats as "no estimate"."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(ok, x, 0.0).sum(axis=axis) / ok.sum(axis=axis), dtype=np.float64)


def _nanmean_w(x: FloatArray, w: FloatArray, axis: int) -> FloatArray:
    """Weighted mean ignoring NaN; NaN where nothing is finite."""
    ok = np.isfinite(x)
    ww = np.where(ok, w, 0.0)
    num = np.where(ok, x, 0.0) * ww
    den = ww.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(num.sum(axis=axis) / den, dtype=np.float64)


def _circular_smooth(shape: FloatArray, half_width: int) -> FloatArray:
    if half_width <= 0:
        return shape
    k = np.concatenate([np.arange(1, half_width + 2), np.arange(half_width, 0, -1)]).astype(np.float64)
    k /= k.sum()
    b = shape.shape[1]
    padded = np.concatenate([shape[:, -half_width:], shape, shape[:, :half_width]], axis=1)
    out = np.empty_like(shape)
    for j in range(k.size):
        seg = padded[:, j : j + b]
        out = seg * k[j] if j == 0 else out + seg * k[j]
    return out


def fit_batch(values: FloatArray, start_s: float, step_s: int) -> ProfileBatch:
    """Fit the profile model to n series sharing one grid: `values` is (n, T) counts per step, NaN = gap.

    Works through the series in chunks: every stage is vectorised across a chunk, and chunks keep the
    (series x time) temporaries small enough to stay in cache instead of paging in gigabytes for a fleet.
    Each series' result does not depend on the chunking."""
    if values.ndim != 2:
        raise ModelError("fit_batch needs a (series x time) matrix")
    parts = [
        _fit_chunk(values[i : i + CHUNK_SERIES], start_s, step_s)
        for i in range(0, values.shape[0], CHUNK_SERIES)
    ]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def cat(name: str) -> FloatArray:
        return np.concatenate([getattr(p, name) for p in parts], axis=0)

    clip = np.concatenate([p.clip for p in parts if p.clip is not None]) if first.clip is not None else None
    return ProfileBatch(
        first.step_s,
        first.origin_s,
        first.bin_s,
        cat("shape"),
        cat("weekday"),
        cat("mean_level"),
        cat("deviation"),
        cat("alpha"),
        cat("phi"),
        first.resid_horizons,
        cat("resid_table"),
        cat("resid_mean_factor"),
        first.weekly,
        clip,
        _cat_fine(parts),
    )


def _cat_fine(parts: list[ProfileBatch]) -> FloatArray | None:
    """The chunks' per-step corrections as one array (zeros for chunks that learned none)."""
    if all(p.fine is None for p in parts):
        return None
    per_day = max(1, round(SECONDS_PER_DAY / parts[0].step_s))
    return np.concatenate([p.fine if p.fine is not None else np.zeros((p.n, per_day)) for p in parts])


def _fit_chunk(values: FloatArray, start_s: float, step_s: int) -> ProfileBatch:
    n_all, t_all = values.shape
    if t_all * step_s < MIN_DAILY_HISTORY_S:
        raise ModelError(
            f"profile needs {MIN_DAILY_HISTORY_S / 86400:.0f} days of history, "
            f"got {t_all * step_s / 86400:.2f}"
        )
    keep = min(t_all, int(MAX_HISTORY_S // step_s))
    y = values[:, t_all - keep :]
    t0 = start_s + (t_all - keep) * step_s
    times = t0 + step_s * np.arange(keep, dtype=np.float64)
    z = np.log1p(y)  # NaN stays NaN
    origin = t0 + keep * step_s

    # Two passes: the second ignores steps the first found to be outliers (a zero in a series of thousands
    # per step is a collector outage, not demand), so one bad hour cannot bend the shape or the level.
    # Recurring per-step edges are learned in both passes, so a nightly pause is expected, not an outlier.
    batch, expected = _fit_shape(z, times, step_s, origin, n_all, keep, robust=True)
    expected = expected + _with_fine(batch, z - expected, times, robust=True)
    rd = z - expected
    centre = _nanmedian(rd, axis=1)[:, None]
    sigma = np.maximum(1.4826 * _nanmedian(np.abs(rd - centre), axis=1), 0.05)
    outlier = np.abs(rd - centre) > OUTLIER_SIGMAS * sigma[:, None]
    z_in = np.where(outlier, np.nan, z)
    batch, expected = _fit_shape(z_in, times, step_s, origin, n_all, keep, robust=False)
    expected = expected + _with_fine(batch, z_in - expected, times, robust=False)
    # errors are scored against every observation, outliers included: they are what the quantiles must cover
    rd_all = z - expected
    return _fit_level(batch, rd_all, step_s, keep, sigma)


FINE_DAYS = 14  # recent days the per-step correction looks at
FINE_MIN_DAYS = 5
FINE_AGREE = 0.75  # share of days whose residual at the step lies on the correction's side
FINE_T = 4.0  # |median| against its standard error


def _with_fine(batch: ProfileBatch, resid: FloatArray, times: FloatArray, robust: bool) -> FloatArray:
    """Learn `batch.fine` from residuals (n, T) against the smooth seasonal fit (seasonal + m); returns the
    change to the expected log value at `times` (n, T). A step gets a correction only where its residual,
    centred on the series' median residual, lies on the same side on at least FINE_AGREE of the recent
    days and the median is FINE_T standard errors from zero. The long-run level m is then re-estimated
    without the corrected steps (a nightly pause would otherwise pull the mean of the other steps down)."""
    step_s = batch.step_s
    per_day = max(1, round(SECONDS_PER_DAY / step_s))
    n = resid.shape[0]
    batch.fine = None
    none = np.zeros_like(resid)
    if per_day * step_s != SECONDS_PER_DAY:
        return none  # a step that does not tile the day has no fixed time-of-day slots
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = _nanmedian(resid, axis=1)
    centre = np.where(np.isfinite(centre), centre, 0.0)
    slot = np.floor((times % SECONDS_PER_DAY) / step_s + 1e-9).astype(np.int64) % per_day
    day_abs = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
    day = day_abs - day_abs[0]
    n_days = int(day[-1]) + 1
    grid = np.full((n, n_days, per_day), np.nan)
    grid[:, day, slot] = resid - centre[:, None]
    recent = grid[:, max(0, n_days - FINE_DAYS) :, :]  # (n, D, per_day)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = _nanmedian(recent, axis=1)  # (n, per_day)
        count = np.isfinite(recent).sum(axis=1)
        mad = 1.4826 * _nanmedian(np.abs(recent - med[:, None, :]), axis=1)
        same_side = np.sum(np.sign(recent) == np.sign(med)[:, None, :], axis=1)
    # the median's standard error (1.2533 x sigma / sqrt(n)); the floor keeps a near-noiseless series from
    # learning differences of a request or two
    se = 1.2533 * np.maximum(np.where(np.isfinite(mad), mad, 0.0), 0.05) / np.sqrt(np.maximum(count, 1))
    keep = (
        np.isfinite(med)
        & (count >= FINE_MIN_DAYS)
        & (same_side >= FINE_AGREE * count)
        & (np.abs(med) > FINE_T * se)
    )
    if not keep.any():
        return none
    fine = np.where(keep, med, 0.0)
    batch.fine = fine
    at = fine[:, slot]  # (n, T)
    score_from = max(0, resid.shape[1] - int(SCORE_WINDOW_S // step_s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rest = (resid - at)[:, score_from:]
        shift = (_nanmedian if robust else np.nanmean)(rest, axis=1)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    batch.mean_level = batch.mean_level + shift
    return np.asarray(at + shift[:, None], dtype=np.float64)


def _fit_shape(
    z: FloatArray, times: FloatArray, step_s: int, origin: float, n_all: int, keep: int, robust: bool
) -> tuple[ProfileBatch, FloatArray]:
    """Shape, weekday and long-run level; returns a batch without level parameters and the expected
    log value seasonal + m at every step. `robust` uses medians across days (the first pass, which must
    not be bent by the outliers it is meant to find), otherwise recency-weighted means."""
    # --- time-of-day shape on >= 5-minute bins: cell (day, bin) means via one reduceat over time
    bin_s = coarse_step(step_s, SECONDS_PER_DAY // MIN_BIN_S)
    n_bins = SECONDS_PER_DAY // bin_s
    day_abs = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
    day = day_abs - day_abs[0]
    n_days = int(day[-1]) + 1
    cell = day * n_bins + ((times % SECONDS_PER_DAY) // bin_s).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    finite = np.isfinite(z)
    sums = np.add.reduceat(np.where(finite, z, 0.0), starts, axis=1)
    cnt = np.add.reduceat(finite.astype(np.float64), starts, axis=1)
    grid = np.full((n_all, n_days * n_bins), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid[:, cell[starts]] = np.where(cnt > 0, sums / cnt, np.nan)
    cells = grid.reshape(n_all, n_days, n_bins)

    w_day = 0.5 ** ((n_days - 1 - np.arange(n_days)) / SHAPE_HALF_LIFE_DAYS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins are handled below
        s0 = _nanmedian(cells, axis=1) if robust else _nanmean_w(cells, w_day[None, :, None], axis=1)
        s0 = np.where(np.isfinite(s0), s0, np.nanmean(s0, axis=1, keepdims=True))
        day_level = (_nanmedian if robust else np.nanmean)(cells - s0[:, None, :], axis=2)  # (n, days)
        if robust:
            shape = _nanmedian(cells - day_level[:, :, None], axis=1)
        else:
            shape = _nanmean_w(cells - day_level[:, :, None], w_day[None, :, None], axis=1)
    shape = np.where(np.isfinite(shape), shape, 0.0)
    shape = _circular_smooth(shape, round(SMOOTH_HALF_WIDTH_S / bin_s))
    shape -= shape.mean(axis=1, keepdims=True)

    # --- weekday level, by position in the week, from >= 2 weeks only
    weekly = keep * step_s >= MIN_WEEKLY_HISTORY_S
    weekday = np.zeros((n_all, 7))
    if weekly:
        kernel = np.ones(7)
        lv = np.where(np.isfinite(day_level), day_level, 0.0)
        ok = np.isfinite(day_level).astype(np.float64)
        num = np.stack([np.convolve(r, kernel, mode="same") for r in lv])
        den = np.stack([np.convolve(r, kernel, mode="same") for r in ok])
        with np.errstate(invalid="ignore", divide="ignore"):
            dev_day = day_level - num / den
        dow = (day_abs[0] + np.arange(n_days)) % 7
        counts = np.zeros((n_all, 7))
        for k in range(7):
            sel = dow == k
            vals = dev_day[:, sel]
            counts[:, k] = np.isfinite(vals).sum(axis=1)
            mean_k = _nanmean_w(vals, w_day[None, sel], axis=1)
            weekday[:, k] = np.where(counts[:, k] > 0, mean_k, 0.0)
        # James-Stein shrinkage toward "no weekly effect": strong, consistent weekday effects are kept whole,
        # effects no larger than the day-to-day noise are shrunk away
        resid = dev_day - weekday[:, dow]
        dof = np.maximum(np.isfinite(resid).sum(axis=1) - 7, 1)
        noise_var = np.nansum(resid**2, axis=1) / dof
        signal = np.nansum((weekday - weekday.mean(axis=1, keepdims=True)) ** 2, axis=1)
        mean_n = np.maximum(counts.mean(axis=1), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = np.clip(1.0 - 4.0 * noise_var / mean_n / signal, 0.0, 1.0)
        weekday *= np.where(np.isfinite(factor), factor, 0.0)[:, None]
        weekday = np.where(np.isfinite(weekday), weekday, 0.0)
        weekday -= weekday.mean(axis=1, keepdims=True)

    batch = ProfileBatch(
        step_s,
        origin,
        bin_s,
        shape,
        weekday,
        np.zeros(n_all),
        np.zeros(n_all),
        np.zeros(n_all),
        np.ones(n_all),
        [1],
        np.zeros((n_all, 1, len(DENSE_LEVELS))),
        np.ones((n_all, 1)),
        weekly,
    )
    seasonal = batch.seasonal_part(times)
    r = z - seasonal
    score_from = max(0, keep - int(SCORE_WINDOW_S // step_s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = (_nanmedian if robust else np.nanmean)(r[:, score_from:], axis=1)
    batch.mean_level = np.where(np.isfinite(m), m, 0.0)
    return batch, seasonal + batch.mean_level[:, None]


def _fit_level(
    batch: ProfileBatch, rd: FloatArray, step_s: int, keep: int, sigma: FloatArray
) -> ProfileBatch:
    n_all = batch.n
    score_from = max(0, keep - int(SCORE_WINDOW_S // step_s))
    # the level follows clipped innovations: a lone outlier nudges it, a lasting shift moves it
    lim = OUTLIER_SIGMAS * sigma[:, None]
    rd_filled = np.clip(np.where(np.isfinite(rd), rd, 0.0), -lim, lim)

    # --- choose the level smoother and its decay per series by in-sample multi-horizon error
    score_h = sorted({max(1, round(s / step_s)) for s in (step_s, 900, 3600, 4 * 3600)})
    score_h = [h for h in score_h if h < keep // 4] or [1]
    rng = np.random.default_rng(0)
    max_h = max(score_h)
    span = np.arange(score_from, keep - max_h)
    if span.size == 0:
        span = np.arange(0, max(1, keep - max_h))
    origins = np.sort(rng.choice(span, size=min(MAX_SCORE_ORIGINS, span.size), replace=False))
    best = np.full(n_all, np.inf)
    alpha = np.full(n_all, 0.5)
    phi = np.ones(n_all)
    devs: dict[float, FloatArray] = {}
    for hl_a in LEVEL_HALF_LIVES_S:
        a = 1.0 - 0.5 ** (step_s / hl_a) if hl_a > 0 else 0.5
        d = lfilter([a], [1.0, -(1.0 - a)], rd_filled, axis=1)
        devs[a] = d
        for hl_p in REVERT_HALF_LIVES_S:
            p = 0.5 ** (step_s / hl_p) if np.isfinite(hl_p) else 1.0
            err = np.zeros(n_all)
            for h in score_h:
                e = rd[:, origins + h] - d[:, origins] * p**h
                err += _nanmean(np.abs(e), axis=1)
            better = err < best
            best = np.where(better, err, best)
            alpha = np.where(better, a, alpha)
            phi = np.where(better, p, phi)

    # --- empirical error table at a few horizons with the chosen parameters
    hs = horizon_grid(min(int(RESIDUAL_HORIZON_S // step_s), keep // 3))
    max_h = max(hs)
    span = np.arange(score_from, keep - max_h)
    if span.size < 10:
        span = np.arange(0, max(1, keep - max_h))
    origins = np.sort(rng.choice(span, size=min(MAX_RESID_ORIGINS, span.size), replace=False))
    d_chosen = np.empty((n_all, origins.size))
    for a, d in devs.items():
        sel = alpha == a
        if sel.any():
            d_chosen[sel] = d[np.ix_(sel, origins)]
    errs = np.stack(
        [rd[:, origins + h] - d_chosen * phi[:, None] ** h for h in hs], axis=1
    )  # (n, len(hs), origins)
    errs_f = np.where(np.isfinite(errs), errs, np.nan)
    qs = _nanquantile(errs_f, (*DENSE_LEVELS, 0.01, 0.99), axis=2)  # (levels + 2, n, hs)
    table = qs[: len(DENSE_LEVELS)].transpose(1, 2, 0)  # (n, hs, levels)
    lo, hi = qs[-2][..., None], qs[-1][..., None]
    mean_factor = _nanmean(np.exp(np.clip(errs_f, lo, hi)), axis=2)
    table = np.where(np.isfinite(table), table, 0.0)
    mean_factor = np.where(np.isfinite(mean_factor), mean_factor, 1.0)

    last_dev = np.empty(n_all)
    for a, d in devs.items():
        sel = alpha == a
        last_dev[sel] = d[sel, -1]
    batch.deviation, batch.alpha, batch.phi = last_dev, alpha, phi
    batch.resid_horizons, batch.resid_table, batch.resid_mean_factor = hs, table, mean_factor
    batch.clip = lim[:, 0]
    return batch


class SeasonalProfile:
    """The daily (and weekly) profile of one series; under two days of history it borrows a daily shape
    from `priors` (a fleet's, forecaster/shape.py) where given, else forecasts the recent level."""

    alias = "profile"

    def __init__(self, priors: Sequence[DailyShape] = ()) -> None:
        self.priors = tuple(priors)
        self.report = FitReport(self.alias)
        self._batch: ProfileBatch | None = None
        self._fallback: ForecastModel | None = None

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        self._batch = None
        self.report = FitReport(
            self.alias, series.name, len(series), series.span_s, series.step_s, series.step_s
        )
        self._fallback = fall_back_if_short(series, self.report, what="a daily profile", priors=self.priors)
        if self._fallback is None:
            self._batch = fit_batch(series.values[None, :], series.start_s, series.step_s)
            b = self._batch
            self.report.fit_step_s = series.step_s
            self.report.seasons_s = (SECONDS_PER_DAY, 7 * SECONDS_PER_DAY) if b.weekly else (SECONDS_PER_DAY,)
            self.report.note(f"time-of-day shape on {b.bin_s} s bins")
            if not b.weekly:
                self.report.note("less than 14 days of history: no day-of-week effect")
            hl = np.log(0.5) / np.log(max(1e-12, 1 - float(b.alpha[0]))) * series.step_s
            self.report.note(f"level smoother half-life {hl:.0f} s, decay per step {float(b.phi[0]):.5f}")
        self.report.fit_seconds = timer.elapsed()
        return self

    def update(self, series: TrafficSeries) -> Self:
        if self._batch is None:
            return self.fit(series)
        self._batch = self._batch.with_new_data(series.values[None, :], series.start_s)
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        if self._fallback is not None:
            return relabel(self._fallback.predict(h, levels), self.alias, self._fallback.alias)
        if self._batch is None:
            raise ModelError("profile: predict() before fit()")
        return self._batch.predict(h, levels, self.alias)[0]
