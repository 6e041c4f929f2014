"""The one protocol every forecasting model implements, and the pieces they share.

Shaped like statsforecast: a model has a unique `alias`, `fit(series)` returns the fitted model, and
`predict(h, levels)` returns a `Forecast` of h steps from the end of the data it last saw. `update(series)`
re-anchors a fitted model on newer observations of the same series *without* re-estimating its parameters:
that is what the live loop does between refits, and what rolling-origin evaluation does between its daily
refits, so both pay the cost of a fit only once a day.

All models work on log1p(counts): traffic noise is multiplicative (it grows with the level), log1p keeps
zeros finite for sparse series, and back-transforming guarantees non-negative counts.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import bottleneck as bn
import numpy as np

from forecaster.types import (
    SECONDS_PER_DAY,
    SECONDS_PER_WEEK,
    FloatArray,
    Forecast,
    TrafficSeries,
    interp_weights,
)

# Levels at which every model keeps its predictive distribution; any other level is interpolated.
DENSE_LEVELS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
    0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 0.995,
)  # fmt: skip

MIN_DAILY_HISTORY_S = 2 * SECONDS_PER_DAY
MIN_WEEKLY_HISTORY_S = 2 * SECONDS_PER_WEEK


class ModelError(Exception):
    """A model could not fit or predict; the message says why."""


@dataclass
class FitReport:
    """What a fit did, for people: the step it ran at, the seasons it used, and anything it gave up."""

    model: str
    series: str = ""
    n_obs: int = 0
    history_s: float = 0.0
    step_s: int = 0
    fit_step_s: int = 0
    seasons_s: tuple[int, ...] = ()
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)
    fit_seconds: float = 0.0

    @classmethod
    def of(cls, model: str, series: TrafficSeries, **rest: Any) -> FitReport:
        """A report on `series` (its name, length, span and step filled in)."""
        return cls(model, series.name, len(series), series.span_s, series.step_s, **rest)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "series": self.series,
            "n_obs": self.n_obs,
            "history_s": self.history_s,
            "step_s": self.step_s,
            "fit_step_s": self.fit_step_s,
            "seasons_s": list(self.seasons_s),
            "fallback": self.fallback,
            "notes": list(self.notes),
            "fit_seconds": round(self.fit_seconds, 4),
        }


class ForecastModel(Protocol):
    alias: str
    report: FitReport

    def fit(self, series: TrafficSeries) -> Self: ...

    def update(self, series: TrafficSeries) -> Self: ...

    def predict(self, h: int, levels: Sequence[float]) -> Forecast: ...


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def require_history(series: TrafficSeries, alias: str) -> None:
    if len(series) < 2:
        raise ModelError(f"{alias}: series {series.name!r} has {len(series)} observations; need at least 2")


def fill_gaps(values: FloatArray, period: int | None = None) -> FloatArray:
    """Replace NaN gaps for models that cannot skip them: the value one season earlier when known, else
    linear interpolation between the neighbours. Gaps are never read as zeros."""
    y = values.astype(np.float64, copy=True)
    bad = ~np.isfinite(y)
    if not bad.any():
        return y
    if period and period < y.size:
        # each pass fills the gaps whose value a season earlier is known (possibly filled by the pass
        # before): the same as walking the gaps in time order, one array operation per chain link
        todo = np.flatnonzero(bad)
        todo = todo[todo >= period]
        while todo.size:
            src = y[todo - period]
            ok = np.isfinite(src)
            if not ok.any():
                break
            y[todo[ok]] = src[ok]
            todo = todo[~ok]
        bad = ~np.isfinite(y)
    if bad.all():
        raise ModelError("series has no finite observations")
    if bad.any():
        idx = np.arange(y.size)
        y[bad] = np.interp(idx[bad], idx[~bad], y[~bad])
    return y


def despike(z: FloatArray, start_s: float, step_s: int, sigmas: float = 5.0) -> tuple[FloatArray, int]:
    """NaN out steps far outside what the series' daily shape and local level explain (a zero in a series
    of thousands per step is a collector outage, not demand; a four-hour run of zeros is one too).

    The daily shape is the median across days of each time-of-day slot; the local level is a centred
    one-day rolling median of what is left; a step is masked when it sits more than `sigmas` robust standard
    deviations from both. A change that lasts more than about half a day moves the rolling median and is
    kept as real. Returns the cleaned copy and how many steps it masked."""
    per_day = periods_per_day(step_s)
    if z.size < 20:
        return z, 0
    if z.size >= 2 * per_day:
        first = int(np.round(start_s / step_s)) % per_day
        slot = (first + np.arange(z.size)) % per_day
        # one row per day (padded with NaN to whole days): each slot's median across days in one call
        days = -(-(first + z.size) // per_day)
        grid = np.full(days * per_day, np.nan)
        grid[first : first + z.size] = z
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            shape = bn.nanmedian(grid.reshape(days, per_day), axis=0)  # numpy's nanmedian, 80x faster
        x = z - np.where(np.isfinite(shape), shape, 0.0)[slot]
        window = per_day + 1
    else:
        # under two days there is no shape to learn: judge each step against its few hours around it
        x = z
        window = max(5, min(per_day // 8, z.size // 4)) | 1
    med = _centred_rolling_median(x, window, min_count=3)
    dev = x - med
    ok = np.isfinite(dev)
    if ok.sum() < 10:
        return z, 0
    centre = float(np.median(dev[ok]))
    scale = max(1.4826 * float(np.median(np.abs(dev[ok] - centre))), 0.05)
    bad = ok & (np.abs(dev - centre) > sigmas * scale)
    out = z.copy()
    out[bad] = np.nan
    return out, int(bad.sum())


def _centred_rolling_median(x: FloatArray, window: int, min_count: int) -> FloatArray:
    """Median of the non-NaN values in the odd `window` centred on each step (NaN where fewer than
    `min_count`): pandas' rolling(center=True).median(), from bottleneck's trailing window (9x faster)."""
    k = window // 2
    padded = np.concatenate([x, np.full(max(k, window - x.size), np.nan)])
    return np.asarray(bn.move_median(padded, window, min_count=min_count)[k : k + x.size], dtype=np.float64)


def periods_per_day(step_s: int) -> int:
    return max(1, round(SECONDS_PER_DAY / step_s))


def coarse_step(step_s: int, max_periods_per_day: int) -> int:
    """The finest multiple of `step_s` whose daily season has at most `max_periods_per_day` steps and that
    divides a day evenly (so the coarse grid keeps the same time-of-day phase every day)."""
    if SECONDS_PER_DAY / step_s <= max_periods_per_day:
        return step_s
    k = 1
    while True:
        cand = step_s * k
        if SECONDS_PER_DAY % cand == 0 and SECONDS_PER_DAY // cand <= max_periods_per_day:
            return cand
        if cand > SECONDS_PER_DAY:
            return SECONDS_PER_DAY // max_periods_per_day
        k += 1


@dataclass(frozen=True)
class Resampled:
    """A series aggregated to a coarser grid aligned to multiples of `step_s` in absolute time."""

    values: FloatArray  # counts per coarse step (NaN where any fine step was a gap)
    start_s: float
    step_s: int
    ratio: float  # coarse step / fine step


def resample(series: TrafficSeries, step_s: int) -> Resampled:
    if step_s == series.step_s:
        return Resampled(series.values, series.start_s, step_s, 1.0)
    first = math.ceil(series.start_s / step_s) * step_s
    last = math.floor(series.end_s / step_s) * step_s
    n = int((last - first) // step_s)
    if n <= 0:
        raise ModelError(f"series {series.name!r} is shorter than one {step_s} s step")
    ratio = step_s / series.step_s
    lead = (first - series.start_s) / series.step_s
    if ratio == int(ratio) and lead == int(lead):
        # whole fine steps per coarse one, from a fine boundary: one reshape instead of binning by time
        k, lo = int(ratio), int(lead)
        block = series.values[lo : lo + n * k].reshape(n, k)
        finite = np.isfinite(block)
        observed = finite.sum(axis=1).astype(np.float64)
        sums = np.where(finite, block, 0.0).sum(axis=1)
        out = np.where(observed > 0, sums * k / np.maximum(observed, 1), np.nan)
        return Resampled(out, float(first), step_s, ratio)
    times = series.times_s()
    sel = (times >= first) & (times < last)
    bins = ((times[sel] - first) // step_s).astype(np.int64)
    vals = series.values[sel]
    sums = np.bincount(bins, weights=np.where(np.isfinite(vals), vals, 0.0), minlength=n)
    counts = np.bincount(bins, minlength=n).astype(np.float64)
    gaps = np.bincount(bins, weights=(~np.isfinite(vals)).astype(np.float64), minlength=n)
    expected = step_s / series.step_s
    # a coarse bin with a gap is scaled up from its observed part; an all-gap bin stays a gap
    observed = counts - gaps
    out = np.where(observed > 0, sums * expected / np.maximum(observed, 1), np.nan)
    return Resampled(out, float(first), step_s, step_s / series.step_s)


def to_fine_grid(
    coarse_origin_s: float, coarse_step_s: int, coarse: FloatArray, origin_s: float, step_s: int, h: int
) -> FloatArray:
    """Spread counts per coarse step onto h fine steps from `origin_s`, interpolating the rate linearly
    between coarse bin centres (so daily ramps stay smooth instead of turning into stairs), held flat
    beyond the first and last centres. `coarse` is one path (n,) or several (k, n), each spread alike."""
    n = coarse.shape[-1]
    fine_centres = origin_s + step_s * (np.arange(h) + 0.5)
    pos = (fine_centres - (coarse_origin_s + 0.5 * coarse_step_s)) / coarse_step_s
    lo = np.clip(np.floor(pos), 0, n - 1).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    f = np.clip(pos - lo, 0.0, 1.0)
    out = coarse[..., lo] * (1 - f) + coarse[..., hi] * f
    return np.asarray(out * (step_s / coarse_step_s), dtype=np.float64)


class ResidualTable:
    """Empirical distribution of log-scale forecast errors at a few horizons.

    `errors[j]` holds errors observed `horizons[j]` steps ahead. Quantiles at any horizon are interpolated
    between the stored horizons (and held flat beyond the last), so a model fitted once can answer any h.
    """

    def __init__(self, horizons: Sequence[int], errors: Sequence[FloatArray]) -> None:
        hs: list[int] = []
        qs: list[FloatArray] = []
        mf: list[float] = []
        for hz, e in zip(horizons, errors, strict=True):
            e = e[np.isfinite(e)]
            if e.size < 5:
                continue
            hs.append(int(hz))
            qs.append(np.quantile(e, DENSE_LEVELS))
            # E[exp(e)]: turns a log-scale location into a mean count; winsorised so that one freak spike
            # in the history cannot blow the mean up.
            lo, hi = np.quantile(e, [0.01, 0.99])
            mf.append(float(np.mean(np.exp(np.clip(e, lo, hi)))))
        if not hs:
            hs, qs, mf = [1], [np.zeros(len(DENSE_LEVELS))], [1.0]
        self.horizons = np.asarray(hs, dtype=np.float64)
        self.table = np.stack(qs)  # (n_horizons, n_levels)
        self.mean_factor = np.asarray(mf)

    @classmethod
    def gaussian(cls, sigma: float, horizons: Sequence[int], growth: Sequence[float]) -> ResidualTable:
        """A table from a normal error model: sd sigma * growth[j] at horizons[j]."""
        from scipy.stats import norm

        z = norm.ppf(np.asarray(DENSE_LEVELS))
        self = cls.__new__(cls)
        self.horizons = np.asarray(horizons, dtype=np.float64)
        sd = sigma * np.asarray(growth, dtype=np.float64)
        self.table = sd[:, None] * z[None, :]
        self.mean_factor = np.exp(0.5 * sd**2)
        return self

    def at(self, h: int) -> tuple[FloatArray, FloatArray]:
        """(quantiles on DENSE_LEVELS, mean factor) for steps 1..h ahead; shapes (h, levels), (h,)."""
        steps = np.arange(1, h + 1, dtype=np.float64)
        # np.interp per level, done once for all levels: the weights of each step between stored horizons
        # (held flat outside them)
        hz = self.horizons
        hi = np.clip(np.searchsorted(hz, steps, side="right"), 1, max(1, hz.size - 1))
        lo = hi - 1 if hz.size > 1 else np.zeros_like(hi)
        hi = np.minimum(hi, hz.size - 1)
        width = hz[hi] - hz[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(width > 0, np.clip((steps - hz[lo]) / width, 0.0, 1.0), 0.0)
        q = self.table[lo] * (1 - f)[:, None] + self.table[hi] * f[:, None]
        mf = self.mean_factor[lo] * (1 - f) + self.mean_factor[hi] * f
        return np.asarray(q, dtype=np.float64), np.asarray(mf, dtype=np.float64)


def forecast_from_log(
    *,
    alias: str,
    origin_s: float,
    step_s: int,
    location: FloatArray,
    residuals: ResidualTable,
    levels: Sequence[float],
    scale: float = 1.0,
    notes: tuple[str, ...] = (),
) -> Forecast:
    """Turn a log1p-scale location path and its error table into a Forecast of counts.

    `scale` converts counts of the model's own step into counts of the output step (for models fitted on a
    coarser grid); quantiles of each level are non-decreasing in the level by construction.
    """
    h = location.shape[0]
    q_dense, mean_factor = residuals.at(h)
    logq = location[:, None] + q_dense  # (h, dense)
    counts = np.maximum(np.expm1(logq), 0.0) * scale
    counts = np.maximum.accumulate(counts, axis=1)
    mean = np.maximum(np.exp(location) * mean_factor - 1.0, 0.0) * scale
    lo, hi, f = _dense_weights(tuple(float(q) for q in levels))
    paths = np.ascontiguousarray((counts[:, lo] * (1 - f) + counts[:, hi] * f).T)  # (levels, h), at once
    quantiles = {float(q): paths[i] for i, q in enumerate(levels)}
    return Forecast(
        origin_s=origin_s, step_s=step_s, mean=mean, quantiles=quantiles, model=alias, notes=notes
    )


@functools.lru_cache(maxsize=256)
def _dense_weights(levels: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, FloatArray]:
    """Each level's interpolation between its DENSE_LEVELS neighbours, as arrays (levels repeat: the
    rolling evaluation asks for the same few sets at every origin)."""
    rows = [interp_weights(DENSE_LEVELS, q) for q in levels]
    lo, hi, f = (np.array(col) for col in zip(*rows, strict=True)) if rows else (np.zeros(0),) * 3
    return lo.astype(np.int64), hi.astype(np.int64), f.astype(np.float64)


def horizon_grid(max_steps: int) -> list[int]:
    """A handful of horizons (in steps) from 1 to max_steps, roughly log-spaced."""
    grid = sorted({round(x) for x in np.geomspace(1, max(1, max_steps), num=10)})
    return [g for g in grid if g >= 1]
