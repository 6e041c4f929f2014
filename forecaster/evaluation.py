"""Accuracy metrics: MASE, sMAPE, pinball loss and interval coverage, on (windows x horizon) arrays.

All functions ignore NaN actuals (gaps, or windows that run past the data). MASE and the pinball loss are
scaled per window by the in-sample one-day seasonal naive MAE of the history before that window, so that
windows at different traffic levels (and different series) weigh alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from forecaster.types import FloatArray


def _rowmean(x: FloatArray) -> FloatArray:
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    s = np.where(ok, x, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(n > 0, s / np.maximum(n, 1), np.nan), dtype=np.float64)


def mase(actual: FloatArray, point: FloatArray, scale: FloatArray) -> float:
    """Mean over windows of MAE / scale (actual, point: (W, H); scale: (W,))."""
    per_window = _rowmean(np.abs(actual - point)) / scale
    return float(np.nanmean(per_window)) if np.isfinite(per_window).any() else float("nan")


def smape(actual: FloatArray, point: FloatArray) -> float:
    """Symmetric MAPE in [0, 2]; a step where both are zero counts as a perfect forecast."""
    den = np.abs(actual) + np.abs(point)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(den > 0, 2 * np.abs(actual - point) / den, 0.0)
    e = np.where(np.isfinite(actual), e, np.nan)
    return float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")


def pinball(actual: FloatArray, quantile: FloatArray, level: float) -> FloatArray:
    """Pinball (quantile) loss per point: level * (y - q) if y >= q else (1 - level) * (q - y)."""
    d = actual - quantile
    return np.asarray(np.where(d >= 0, level * d, (level - 1) * d), dtype=np.float64)


def scaled_pinball(actual: FloatArray, quantiles: Mapping[float, FloatArray], scale: FloatArray) -> float:
    """Mean over levels and windows of the window's mean pinball loss / scale."""
    per_level = []
    for lv, qarr in quantiles.items():
        per_window = _rowmean(pinball(actual, qarr, lv)) / scale
        per_level.append(np.nanmean(per_window))
    return float(np.mean(per_level)) if per_level else float("nan")


def coverage(actual: FloatArray, quantile: FloatArray) -> float:
    """Fraction of observed points at or below the quantile forecast (the empirical level of a quantile)."""
    ok = np.isfinite(actual) & np.isfinite(quantile)
    return float(np.mean(actual[ok] <= quantile[ok])) if ok.any() else float("nan")
