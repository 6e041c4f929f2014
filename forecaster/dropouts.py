"""Telemetry dropouts: traffic that reads zero where the forecast makes a zero impossible.

A collector or exporter that stops counting does not always leave a gap: a rate() over a counter that stops
moving reads 0, and a recording rule over an empty selector can write 0. Taken at face value, such a run tells
the autoscaler that a model serving thousands of requests a second went idle, so it releases the fleet, and
when the data (and, usually, the traffic that never stopped) comes back the fleet is a full cold start short.
Real traffic at an expected count of `min_count` requests per step reads zero with probability e^-min_count
(Poisson; 2e-9 at the default 20), so a run of zero counts where the forecast's mean is at least that is
treated as missing data: the planner holds (never scaling down on it) and the refit does not learn it.

Genuinely sparse or on/off traffic is not affected: where the forecast expects few requests, or expects the
off periods, a zero is plausible and stays a zero; where a model of sparse traffic gives the chance of any
request, a zero is as plausible as that chance says (a session's end after a burst is not a dropout). A
real shutdown is held for at most `max_s`, after which the zeros are believed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from forecaster.types import Forecast, TrafficSeries

DEFAULT_MIN_COUNT = 20.0  # e^-20 = 2e-9: the chance that real traffic at this expected count reads 0
DEFAULT_MAX_S = 86_400.0


@dataclass(frozen=True)
class Dropout:
    """A trailing run of implausible zeros: from start_s to end_s (the end of the newest zero step)."""

    start_s: float
    end_s: float
    expected_count: float  # the forecast's smallest mean count per step over the run

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def describe(self, step_s: float) -> str:
        return (
            f"traffic reads 0 for {self.duration_s / 60:.0f} min while the forecast expects at least "
            f"{self.expected_count:.0f} requests per {step_s:g} s step (real traffic reads 0 there with "
            f"probability e^-{self.expected_count:.0f}): a telemetry dropout, treated as missing data"
        )


@dataclass
class DropoutWatch:
    """Per-model memory of the dropouts seen live, so that the refit treats them as gaps too.

    min_count: the forecast mean count per step above which a zero is implausible (e^-min_count).
    max_s: how long a run of zeros is held as a dropout before it is believed (a model really switched off).
    """

    min_count: float = DEFAULT_MIN_COUNT
    max_s: float = DEFAULT_MAX_S
    spans: list[tuple[float, float]] = field(default_factory=list)
    _keep_s: float = 30 * 86_400.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_count) and self.min_count > 0):
            raise ValueError(f"dropout_min_count={self.min_count!r} is out of range; allowed (0, inf)")
        if not (math.isfinite(self.max_s) and self.max_s >= 0):
            raise ValueError(f"dropout_max_s={self.max_s!r} is out of range; allowed [0, inf)")

    def check(self, history: TrafficSeries, forecast: Forecast | None) -> Dropout | None:
        """The trailing dropout of `history` (its newest steps), judged against `forecast`; remembered."""
        found = trailing_dropout(history, forecast, self.min_count, self.max_s)
        if found is not None:
            self._remember(found.start_s, found.end_s)
        return found

    def check_recent(
        self, history: TrafficSeries, forecast: Forecast | None, lookahead_s: float
    ) -> Dropout | None:
        """check() of the newest max_s + lookahead_s of `history`. At most ticks its newest count is
        positive: no run of zeros reaches the present, known without slicing it (every model, every tick)."""
        v = history.values
        if v.size and v[-1] > 0:
            return None
        return self.check(history.tail(self.max_s + lookahead_s), forecast)

    def clean(self, history: TrafficSeries) -> TrafficSeries:
        """`history` with the remembered dropouts as gaps (NaN)."""
        if not self.spans or len(history) == 0:
            return history
        t = history.times_s()
        bad = np.zeros(len(history), dtype=bool)
        for lo, hi in self.spans:
            bad |= (t >= lo) & (t < hi)
        if not bad.any():
            return history
        return replace(history, values=np.where(bad, np.nan, history.values))

    def _remember(self, lo: float, hi: float) -> None:
        """Add [lo, hi), merged with the spans it overlaps (a run that grew replaces its shorter self);
        spans that ended more than _keep_s before it are forgotten."""
        overlap = [s for s in self.spans if s[1] >= lo and s[0] <= hi]
        merged = (min([lo, *(s[0] for s in overlap)]), hi)
        kept = [s for s in self.spans if s not in overlap and s[1] >= hi - self._keep_s]
        self.spans = sorted([*kept, merged])


def trailing_dropout(
    history: TrafficSeries, forecast: Forecast | None, min_count: float, max_s: float
) -> Dropout | None:
    """The run of zero counts at the end of `history` (gaps inside it allowed) when the forecast's mean at its
    newest zero is at least `min_count`, from the first zero where it was, if that is not longer than `max_s`
    ago; else None."""
    if forecast is None or len(history) == 0 or forecast.step_s != history.step_s:
        return None
    # over arrays: a model of the long tail holds hours of trailing zeros, and this runs for every model at
    # every tick (element by element it was two fifths of a 1,000-model tick)
    v = history.values
    if v[-1] > 0:
        return None  # the newest count is positive: no run of zeros reaches the present (most ticks)
    if v[-1] == 0 and not _expected(history, forecast, np.array([v.size - 1]))[0] >= min_count:
        # the newest step is the newest zero, and plausible: the whole answer, without the run (a model
        # of the long tail reads zero at most ticks, and its run of zeros is hours long)
        return None
    positive = np.flatnonzero(v > 0)  # zeros and NaN gaps continue the run; any positive count ends it
    i = int(positive[-1]) + 1 if positive.size else 0
    zero_idx = i + np.flatnonzero(v[i:] == 0)
    if zero_idx.size == 0:
        return None
    expect = _expected(history, forecast, zero_idx)
    if not expect[-1] >= min_count:
        return None  # the newest zero is plausible (sparse traffic, or an off period the forecast expects)
    # the dropout began at the first zero the forecast makes implausible (zeros before it were real)
    first = int(np.flatnonzero(expect >= min_count)[0])
    start = history.start_s + (i if first == 0 else int(zero_idx[first])) * history.step_s
    end = history.end_s
    if end - start > max_s:
        return None
    return Dropout(start, end, float(expect[first:].min()))


def _expected(history: TrafficSeries, forecast: Forecast, idx: np.ndarray) -> np.ndarray:
    """How implausible a zero at each of the steps `idx` of `history` is, as the Poisson mean that reads 0
    as rarely: the forecast's mean itself, or where a model of sparse traffic gives the chance of any
    request, -log(1 - p_any) (a burst that just ended makes its mean high, but a session's end is a zero
    that model expects). A forecast refit during a run of zeros (on history with the run masked) starts
    after it: its nearest step then stands for the zeros' time, which is fair as the run reaches the
    present."""
    at = (history.start_s + idx * float(history.step_s) - forecast.origin_s) / forecast.step_s
    j = np.clip(np.rint(at), 0, forecast.horizon - 1).astype(np.int64)
    if forecast.p_any is not None:
        return -np.log(np.maximum(1e-300, 1.0 - forecast.p_any[j].astype(np.float64)))
    return forecast.mean[j].astype(np.float64)
