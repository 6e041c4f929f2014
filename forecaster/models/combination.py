"""An equal-weight combination of forecast models: the mean of their means and, level by level, the mean
of their quantiles (averaging quantile functions keeps them ordered). `auto` uses it when combining its best
candidates beat the best single one in cross-validation: one pick from a noisy CV is fragile, an average of
two or three good, differently-built models rarely loses much to either and often beats both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Self

import numpy as np

from forecaster.models.base import FitReport, ForecastModel, ModelError, Timer
from forecaster.types import Forecast, TrafficSeries


def combo_alias(members: Sequence[str]) -> str:
    return "+".join(members)


class Combination:
    """`quantiles` and `point`: which models (indices into `factories`) make the quantiles and the mean;
    both default to all of them. `auto` chooses the two on different losses (forecaster/selection.py), and
    fits a model both use once."""

    def __init__(
        self,
        factories: Sequence[Callable[[], ForecastModel]],
        *,
        quantiles: Sequence[int] | None = None,
        point: Sequence[int] | None = None,
    ) -> None:
        if len(factories) < 2:
            raise ModelError("a combination needs at least two models")
        self._factories = tuple(factories)
        everyone = tuple(range(len(factories)))
        self._q = tuple(quantiles) if quantiles is not None else everyone
        self._p = tuple(point) if point is not None else everyone
        if not self._q or not self._p or not set(self._q) | set(self._p) <= set(everyone):
            raise ModelError("a combination's quantile and point members must be some of its models")
        aliases = [f().alias for f in factories]
        self.alias = combo_alias([aliases[i] for i in self._q])
        if self._p != self._q:
            self.alias += f" (mean: {combo_alias([aliases[i] for i in self._p])})"
        self.report = FitReport(self.alias)
        self._models: list[ForecastModel] = []

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        self._models = [f().fit(series) for f in self._factories]
        first = self._models[0].report
        self.report = FitReport.of(
            self.alias,
            series,
            fit_step_s=first.fit_step_s,
            seasons_s=tuple(sorted({s for m in self._models for s in m.report.seasons_s})),
            notes=[f"{m.alias}: {n}" for m in self._models for n in m.report.notes],
            fit_seconds=timer.elapsed(),
        )
        return self

    def update(self, series: TrafficSeries) -> Self:
        if not self._models:
            return self.fit(series)
        self._models = [m.update(series) for m in self._models]
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        if not self._models:
            raise ModelError(f"{self.alias}: predict() before fit()")
        fcs = [m.predict(h, levels) for m in self._models]
        mean = np.mean([fcs[i].mean for i in self._p], axis=0)
        qs = {lv: np.mean([fcs[i].quantile(lv) for i in self._q], axis=0) for lv in levels}
        notes = tuple(n for f in fcs for n in f.notes)
        return Forecast(fcs[0].origin_s, fcs[0].step_s, mean, qs, self.alias, notes)
