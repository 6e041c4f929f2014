"""Rolling-origin forecasts: one model's forecasts from many origins of one series, as arrays.

This is the single piece of machinery behind model selection, conformal calibration and evaluation. It runs
a model the way the live loop does: a full fit on the trailing history once per `refit_every_s` (a day by
default), and a cheap `update` (re-anchor on newer data, parameters fixed) at every origin in between. The
history at an origin is everything strictly before it; a model never sees its own targets.

A `RollingCache` keeps each window's forecast once made, keyed by its origin's time, so that tomorrow's
selection (whose CV span overlaps today's by six days of seven) forecasts only the windows that are new: a
window's forecast is what the model said at that origin from the history it had then, which does not
change when the history grows. Forecasts are kept as float32 whether cached or not, so a cached window and
a fresh one read the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from forecaster.models.base import ForecastModel, ModelError, periods_per_day
from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries

# quantile levels every rolling forecast keeps (the calibrator interpolates between them)
CAL_LEVELS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995,
)  # fmt: skip

Progress = Callable[[int], None]
Row = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # one window's forecast, as RollingCache keeps it


@dataclass
class RollingCache:
    """Forecasts already made, per model alias and origin time: (quantiles (L, H), mean (H,), chance of
    any request per step (H,), chance of any within the window (1,)) or the error text of a failed window.
    Valid for one series at one horizon, step and set of levels; any other key clears it. Kept as float32
    (a thousand models' caches stay in memory between nightly fits)."""

    key: tuple[int, int, tuple[float, ...]] | None = None
    rows: dict[str, dict[float, Row | str]] = field(default_factory=dict)

    def for_run(self, alias: str, key: tuple[int, int, tuple[float, ...]]) -> dict[float, Row | str]:
        if key != self.key:
            self.key, self.rows = key, {}
        return self.rows.setdefault(alias, {})

    def prune(self, before_s: float) -> None:
        """Forget windows older than the oldest the next selection can use."""
        for rows in self.rows.values():
            for t in [t for t in rows if t < before_s]:
                del rows[t]

    @property
    def windows(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


@dataclass
class RollingForecasts:
    alias: str
    origin_idx: np.ndarray  # (W,) history of window w is values[:origin_idx[w]]
    horizon: int
    levels: tuple[float, ...]
    q: FloatArray  # (W, L, H) the model's own quantiles
    mean: FloatArray  # (W, H)
    actual: FloatArray  # (W, H), NaN past the end of the series or in gaps
    scale: FloatArray  # (W,) in-sample one-day seasonal naive MAE before each origin (MASE's denominator)
    failures: dict[int, str] = field(default_factory=dict)  # window -> error text
    # (W, H) the chance of at least one request per step: the model's own (a sparse model's p_any), else
    # read from its mean as Poisson arrivals, so every model is scored on "any request" alike
    p_any: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    # (W,) the chance of at least one request anywhere in the window: 1 - the model's p_none at its last
    # step where it gives one (requests in sessions), else the steps' chances as independent draws
    p_window: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_windows(self) -> int:
        return int(self.origin_idx.size)

    def ok(self) -> np.ndarray:
        """Windows with a forecast (the model did not fail there)."""
        return np.asarray(np.all(np.isfinite(self.mean), axis=1))


def naive_scale(values: FloatArray, step_s: int) -> FloatArray:
    """scale[i] = mean |y[t] - y[t - one day]| over t < i (the in-sample one-day seasonal naive error).
    Falls back to the one-step naive error where there is less than a day of history."""

    def running(lag: int) -> FloatArray:
        d = np.abs(values[lag:] - values[:-lag]) if values.size > lag else np.zeros(0)
        ok = np.isfinite(d)
        cs = np.concatenate([np.zeros(lag + 1), np.cumsum(np.where(ok, d, 0.0))])
        cn = np.concatenate([np.zeros(lag + 1), np.cumsum(ok)])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(cs / cn, dtype=np.float64)[: values.size + 1]

    p = periods_per_day(step_s)
    daily = running(p)
    one = running(1)
    out = np.where(np.isfinite(daily) & (np.arange(values.size + 1) > 2 * p), daily, one)
    return np.where(np.isfinite(out) & (out > 0), out, 1.0)


def origin_grid(
    series: TrafficSeries, *, first_s: float, last_s: float, every_s: float, horizon: int
) -> np.ndarray:
    """Origin indices every `every_s` going back from `last_s` to `first_s`, each with at least two steps of
    history; windows may run past the end (their missing actuals are NaN)."""
    last = min(series.index_at(last_s), len(series))
    every = max(1, round(every_s / series.step_s))
    first = max(2, series.index_at(first_s))
    idx = np.arange(last, first - 1, -every)[::-1]
    return idx.astype(np.int64)


def rolling_forecasts(
    factory: Callable[[], ForecastModel],
    series: TrafficSeries,
    origin_idx: np.ndarray,
    horizon: int,
    *,
    levels: Sequence[float] = CAL_LEVELS,
    refit_every_s: float = SECONDS_PER_DAY,
    progress: Progress | None = None,
    cache: RollingCache | None = None,
) -> RollingForecasts:
    levels = tuple(sorted(levels))
    w, n_l = origin_idx.size, len(levels)
    q = np.full((w, n_l, horizon), np.nan)
    mean = np.full((w, horizon), np.nan)
    p_any = np.full((w, horizon), np.nan)
    p_window = np.full(w, np.nan)
    actual = np.full((w, horizon), np.nan)
    scale_all = naive_scale(series.values, series.step_s)
    failures: dict[int, str] = {}
    model: ForecastModel | None = None
    fitted_at = -np.inf
    alias = factory().alias
    kept = cache.for_run(alias, (horizon, series.step_s, levels)) if cache is not None else None
    for k, idx in enumerate(origin_idx):
        idx = int(idx)
        hi = min(len(series), idx + horizon)
        actual[k, : hi - idx] = series.values[idx:hi]
        history = series.slice(0, idx)
        t = history.end_s
        done = kept.get(t) if kept is not None else None
        if done is None:
            try:
                if model is None or t - fitted_at >= refit_every_s:
                    model = factory().fit(history)
                    fitted_at = t
                else:
                    model = model.update(history)
                fc = model.predict(horizon, levels)
            except (ModelError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                done = f"{type(exc).__name__}: {exc}"
                model = None
            else:
                chance = fc.p_any if fc.p_any is not None else -np.expm1(-np.maximum(fc.mean, 0.0))
                window = 1.0 - (fc.p_none[-1] if fc.p_none is not None else np.prod(1.0 - chance))
                done = (
                    np.stack([fc.quantiles[lv] for lv in levels]).astype(np.float32),
                    fc.mean.astype(np.float32),
                    chance.astype(np.float32),
                    np.array([window], dtype=np.float32),
                )
            if kept is not None:
                kept[t] = done
        if isinstance(done, str):
            failures[k] = done
        else:
            q[k], mean[k], p_any[k], p_window[k] = done[0], done[1], done[2], done[3][0]
        if progress is not None:
            progress(1)
    return RollingForecasts(
        alias, origin_idx, horizon, levels, q, mean, actual, scale_all[origin_idx], failures, p_any, p_window
    )
