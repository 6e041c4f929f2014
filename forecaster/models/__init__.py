"""Forecasting models behind one protocol (see base.ForecastModel), looked up by their unique alias."""

from __future__ import annotations

from collections.abc import Callable

from forecaster.models.base import FitReport, ForecastModel, ModelError
from forecaster.models.fallback import RecentLevel
from forecaster.models.holt_winters import HoltWinters
from forecaster.models.local_trend import LocalTrend
from forecaster.models.mstl import MSTLModel
from forecaster.models.profile import SeasonalProfile
from forecaster.models.prophet_model import ProphetModel
from forecaster.models.seasonal_naive import SeasonalNaive
from forecaster.models.sparse import SparseCounts

MODELS: dict[str, Callable[[], ForecastModel]] = {
    "seasonal_naive_daily": lambda: SeasonalNaive("daily"),
    "seasonal_naive_weekly": lambda: SeasonalNaive("weekly"),
    "profile": SeasonalProfile,
    "holt_winters": HoltWinters,
    "mstl": MSTLModel,
    "prophet": ProphetModel,
    "local_trend": LocalTrend,
    "recent_level": RecentLevel,
    "sparse": SparseCounts,
}
BASELINES = ("seasonal_naive_daily", "seasonal_naive_weekly")


def make_model(alias: str) -> ForecastModel:
    try:
        return MODELS[alias]()
    except KeyError:
        raise ModelError(f"unknown model {alias!r}; choose one of: auto, {', '.join(MODELS)}") from None


__all__ = ["BASELINES", "MODELS", "FitReport", "ForecastModel", "ModelError", "make_model"]
