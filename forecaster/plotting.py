"""Matplotlib views of forecasts, for notebooks and reports (matplotlib is imported only when used)."""

from __future__ import annotations

from typing import Any

import numpy as np

from forecaster.types import Forecast, TrafficSeries


def plot_forecast(
    ax: Any,
    history: TrafficSeries,
    forecast: Forecast,
    actual: TrafficSeries | None = None,
    *,
    bands: tuple[tuple[float, float], ...] = ((0.05, 0.95), (0.25, 0.75)),
    history_s: float = 2 * 86400,
) -> None:
    """History, the forecast mean and quantile bands, and (if given) what really happened, in requests/s."""
    import matplotlib.dates as mdates

    def days(t: np.ndarray) -> np.ndarray:
        return np.asarray(t / 86400.0)  # matplotlib date numbers are days since the epoch

    tail = history.tail(history_s)
    ax.plot(days(tail.times_s()), tail.rate_rps(), color="0.45", lw=0.8, label="history")
    t = days(forecast.times_s())
    for alpha, (lo, hi) in zip((0.18, 0.32), bands, strict=False):
        ax.fill_between(
            t,
            forecast.quantile(lo) / forecast.step_s,
            forecast.quantile(hi) / forecast.step_s,
            color="tab:blue",
            alpha=alpha,
            lw=0,
            label=f"q{lo:g}-q{hi:g}",
        )
    ax.plot(
        t, forecast.mean / forecast.step_s, color="tab:blue", lw=1.4, label=f"forecast ({forecast.model})"
    )
    if actual is not None:
        ax.plot(days(actual.times_s()), actual.rate_rps(), color="tab:orange", lw=0.9, label="actual")
    ax.set_ylabel("requests / s")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    ax.legend(loc="upper left", fontsize=8)
