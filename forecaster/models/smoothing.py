"""The statsmodels exponential-smoothing pieces shared by Holt-Winters, MSTL's level and the local trend:
fit (or re-run with fixed parameters), carry a fitted state over newer steps (`SmootherState`), read the
estimated parameters, and turn one-step residuals into an error table widened with horizon as a smoothed
level's error accumulates (sqrt(1 + (h-1) alpha^2), the simple-exponential-smoothing variance growth;
conformal calibration corrects what this misses)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

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
        # no brute-force grid for the starting values: from statsmodels' default start, L-BFGS reaches the
        # same optimum (SSE within 0.1% on 44 fits of the shared traces and synthetic series, 11 seasonal
        # and 33 not) at a tenth of the cost of a seasonal fit and half of a non-seasonal one; the grid
        # was a sixth of `auto`'s fitting time
        res = model.fit(optimized=params is None, use_brute=False, **(params or {}))
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


@dataclass(frozen=True)
class SmootherState:
    """The end state of a damped-trend (+ additive season) smoother on a coarse grid, carried forward over
    newer steps with its parameters fixed: statsmodels' own recursions, run over only the steps that are
    new. Re-running statsmodels over the whole 28-day window at every update cost about 20 ms, and rolling
    cross-validation updates each model at every origin; carrying the state costs microseconds, and its
    level, trend and season equal a re-run's from the same start (tested against statsmodels)."""

    alpha: float
    beta: float
    gamma: float
    phi: float
    level: float
    trend: float
    season: tuple[float, ...]  # season[0] is the next step's; empty without a season
    end_s: float  # end of the last step it has absorbed
    step_s: int

    @classmethod
    def of(cls, res: Any, params: dict[str, float], end_s: float, step_s: int, period: int = 0) -> Self:
        """The state a statsmodels fit (or fixed-parameter run) ended in."""
        season = tuple(float(x) for x in np.asarray(res.season)[-period:]) if period else ()
        return cls(
            params["smoothing_level"],
            params["smoothing_trend"],
            params.get("smoothing_seasonal", 0.0),
            params["damping_trend"],
            float(np.asarray(res.level)[-1]),
            float(np.asarray(res.trend)[-1]),
            season,
            end_s,
            step_s,
        )

    def steps_after(self, start_s: float, size: int) -> int | None:
        """Index in a grid of `size` steps from `start_s` (at this step) where this state's end falls; None
        when the grids are not aligned or the end is outside it (the state cannot be carried there)."""
        k = (self.end_s - start_s) / self.step_s
        if abs(k - round(k)) > 1e-6 or not 0 <= round(k) <= size:
            return None
        return round(k)

    def advance(self, z: FloatArray) -> Self:
        """The state after absorbing the steps z (log scale), parameters fixed."""
        a, b, g, phi = self.alpha, self.beta, self.gamma, self.phi
        level, trend = self.level, self.trend
        season = list(self.season)
        for y in z.tolist():
            s0 = season.pop(0) if season else 0.0
            damped = level + phi * trend
            new = a * (y - s0) + (1 - a) * damped
            trend = b * (new - level) + (1 - b) * phi * trend
            if self.season:
                season.append(g * (y - damped) + (1 - g) * s0)
            level = new
        return replace(
            self,
            level=level,
            trend=trend,
            season=tuple(season),
            end_s=self.end_s + z.size * self.step_s,
        )

    def carried(self, z: FloatArray, start_s: float, step_s: int) -> Self | None:
        """This state carried over the steps of z (a grid from start_s) that it has not absorbed; None when
        it cannot be (another step, or its end outside the grid): the caller re-runs the smoother."""
        seen = self.steps_after(start_s, z.size) if step_s == self.step_s else None
        return None if seen is None else self.advance(z[seen:])

    def forecast(self, h: int) -> FloatArray:
        """Log-scale location of the next h steps: level + damped trend (+ the season, repeated)."""
        damping = np.cumsum(self.phi ** np.arange(1, h + 1))
        out = self.level + self.trend * damping
        if self.season:
            s = np.asarray(self.season)
            out = out + s[np.arange(h) % s.size]
        return np.asarray(out, dtype=np.float64)


def fitted_state(state: SmootherState | None, alias: str) -> SmootherState:
    if state is None:
        raise ModelError(f"{alias}: predict() before fit()")
    return state
