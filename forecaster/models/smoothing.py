"""The statsmodels exponential-smoothing pieces shared by Holt-Winters, MSTL's level and the local trend:
fit (or re-run with fixed parameters), read the estimated parameters, and turn one-step residuals into an
error table widened with horizon as a smoothed level's error accumulates (sqrt(1 + (h-1) alpha^2), the
simple-exponential-smoothing variance growth; conformal calibration corrects what this misses)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from forecaster.models.base import ModelError, ResidualTable
from forecaster.types import FloatArray


def fit_smoother(
    z: FloatArray, params: dict[str, float] | None, *, what: str, seasonal_period: int | None = None
) -> Any:
    """Damped additive trend (+ additive season of `seasonal_period` steps) on z; parameters estimated when
    `params` is None, else fixed (a re-run over newer data, milliseconds). A diverged fit is a ModelError."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if seasonal_period:
        init = "heuristic" if z.size >= 2 * seasonal_period + 10 else "estimated"
        model = ExponentialSmoothing(
            z,
            trend="add",
            damped_trend=True,
            seasonal="add",
            seasonal_periods=seasonal_period,
            initialization_method=init,
        )
    else:
        model = ExponentialSmoothing(z, trend="add", damped_trend=True, initialization_method="estimated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fit is checked below
        res = model.fit(optimized=params is None, **(params or {}))
    if not np.all(np.isfinite(res.fittedvalues)):
        raise ModelError(f"{what}: the smoother diverged")
    return res


def estimated_params(res: Any, *, seasonal: bool = False) -> dict[str, float]:
    keys = (
        "smoothing_level",
        "smoothing_trend",
        *(("smoothing_seasonal",) if seasonal else ()),
        "damping_trend",
    )
    return {k: float(res.params[k]) for k in keys}


def widened_errors(
    res: Any, alpha: float, horizons: Sequence[int], last_steps: int | None = None
) -> ResidualTable:
    resid = np.asarray(res.resid, dtype=np.float64)
    if last_steps is not None:
        resid = resid[-last_steps:]
    return ResidualTable(horizons, [resid * np.sqrt(1 + (h - 1) * alpha**2) for h in horizons])
