"""The two values that flow through prewarm: a traffic series in, a forecast out.

Both are plain arrays on a regular time grid. Time is epoch seconds (UTC) so that the numerics never touch a
time zone; `datetime` conversion happens at the edges (CLI, API).

Units: `values`, `mean` and the quantile arrays are *requests per step* (the number of requests that arrived
in the interval starting at that grid point), exactly as in the trace format. `rate_rps` converts to requests
per second, which is what the planner reasons in.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

T = TypeVar("T")

FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY


def to_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def quantile_key(q: float) -> str:
    """The canonical text form of a quantile level, as used in JSON keys ("0.9", "0.95", "0.5")."""
    return f"{q:g}"


def validate_quantile_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated quantile levels, each strictly inside (0, 1)."""
    out: set[float] = set()
    for q in levels:
        if not (isinstance(q, int | float) and math.isfinite(q) and 0.0 < q < 1.0):
            raise ValueError(f"quantile level {q!r} is outside the open interval (0, 1)")
        out.add(float(q))
    if not out:
        raise ValueError("at least one quantile level is required")
    return tuple(sorted(out))


def interp_weights(levels: Sequence[float], q: float) -> tuple[int, int, float]:
    """Indices (lo, hi) into sorted `levels` and weight f so that value(q) = (1-f)*v[lo] + f*v[hi];
    clamped to the end levels outside their range."""
    lv = np.asarray(levels, dtype=np.float64)
    if q <= lv[0]:
        return 0, 0, 0.0
    if q >= lv[-1]:
        return lv.size - 1, lv.size - 1, 0.0
    hi = int(np.searchsorted(lv, q, side="right"))
    lo = hi - 1
    return lo, hi, float((q - lv[lo]) / (lv[hi] - lv[lo]))


@dataclass(frozen=True)
class TrafficSeries:
    """Requests per step on a regular grid: `values[i]` arrived in [start_s + i*step, start_s + (i+1)*step).

    NaN marks a gap (no data, e.g. a Prometheus scrape outage); a trace file's missing row is a true zero
    and arrives here as 0.0, never NaN.
    """

    name: str
    start_s: float
    step_s: int
    values: FloatArray

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ValueError(f"step_s must be positive, got {self.step_s}")
        if self.values.ndim != 1:
            raise ValueError("values must be one-dimensional")
        finite = self.values[np.isfinite(self.values)]
        if finite.size and float(finite.min()) < 0.0:
            raise ValueError(f"series {self.name!r} has a negative count")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def end_s(self) -> float:
        """Epoch seconds just after the last interval (the natural forecast origin)."""
        return self.start_s + len(self) * self.step_s

    @property
    def span_s(self) -> float:
        return float(len(self) * self.step_s)

    def times_s(self) -> FloatArray:
        return self.start_s + self.step_s * np.arange(len(self), dtype=np.float64)

    def index_at(self, epoch_s: float) -> int:
        """Number of whole intervals that end at or before `epoch_s` (clamped to the series)."""
        i = math.floor((epoch_s - self.start_s) / self.step_s + 1e-9)
        return max(0, min(len(self), i))

    def before(self, epoch_s: float) -> TrafficSeries:
        """Only the data that had fully arrived by `epoch_s`: what a forecaster at that time may use."""
        return self.slice(0, self.index_at(epoch_s))

    def slice(self, lo: int, hi: int) -> TrafficSeries:
        lo = max(0, lo)
        hi = min(len(self), hi)
        # a part of a checked series needs no second check: the backtest and the live loop slice a 14-day
        # history every tick, and re-scanning it for negatives was a tenth of a predictive backtest
        part = object.__new__(TrafficSeries)
        for name, value in (
            ("name", self.name),
            ("start_s", self.start_s + lo * self.step_s),
            ("step_s", self.step_s),
            ("values", self.values[lo:hi]),
        ):
            object.__setattr__(part, name, value)
        return part

    def tail(self, span_s: float) -> TrafficSeries:
        n = min(len(self), math.ceil(span_s / self.step_s))
        return self.slice(len(self) - n, len(self))

    def from_first_observation(self) -> TrafficSeries:
        """The series from its first finite value on (empty when it has none). A window that asks a source
        for more days than it holds begins with gaps: history that never existed, not an outage to fill."""
        finite = np.flatnonzero(np.isfinite(self.values))
        return self.slice(int(finite[0]) if finite.size else len(self), len(self))

    def rate_rps(self) -> FloatArray:
        return self.values / self.step_s

    @property
    def gap_fraction(self) -> float:
        return float(np.mean(~np.isfinite(self.values))) if len(self) else 0.0


@dataclass(frozen=True)
class Forecast:
    """A probabilistic forecast of requests per step for `len(mean)` steps from `origin_s`.

    `quantiles[q][i]` is the q-quantile of the count in step i; arrays are non-negative and, for each step,
    non-decreasing in q. `mean` is the expected count. `p_any[i]`, from a model of sparse traffic
    (forecaster/models/sparse.py), is the probability that at least one request arrives in step i (None:
    the model does not say; a planner then reads it from the mean, as Poisson arrivals). `p_none[i]`, from
    the same model, is the probability that no request arrives from the origin through step i, each step's
    chance given none since the origin: requests come in sessions, so it is well above the product of the
    steps' own chances once a session has ended (None: not given).
    """

    origin_s: float
    step_s: int
    mean: FloatArray
    quantiles: Mapping[float, FloatArray]
    model: str
    notes: tuple[str, ...] = field(default=())
    p_any: FloatArray | None = None
    p_none: FloatArray | None = None

    def __post_init__(self) -> None:
        n = self.mean.shape[0]
        for q, arr in self.quantiles.items():
            if arr.shape != (n,):
                raise ValueError(f"quantile {q} has shape {arr.shape}, expected ({n},)")
        if self.p_any is not None and self.p_any.shape != (n,):
            raise ValueError(f"p_any has shape {self.p_any.shape}, expected ({n},)")
        if self.p_none is not None and self.p_none.shape != (n,):
            raise ValueError(f"p_none has shape {self.p_none.shape}, expected ({n},)")
        object.__setattr__(self, "_derived", {})  # derived()'s cache; not a field, so not compared

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value derived from this forecast alone, computed once per key: a forecast serves several ticks
        and, in tuning, dozens of candidates, which ask the same questions of it (the peak over the same
        window at the same level)."""
        memo: dict[Hashable, Any] = self._derived  # type: ignore[attr-defined]
        if key not in memo:
            memo[key] = compute()
        return cast(T, memo[key])

    def quantile_values(self, q: float) -> Sequence[float]:
        """The q-quantile path, computed once per forecast and level, indexed as Python floats: the planner
        reads a few steps of it every tick, and indexing a NumPy array element by element costs more than
        the plan. Held as C doubles (8 bytes a value): as a list of Python floats (32 bytes a value) the
        paths of a model's forecasts were a sixth of its memory, for the same values."""
        return self.derived(
            ("path", q),
            lambda: array("d", np.ascontiguousarray(self.quantile(q), dtype=np.float64).tobytes()),
        )

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[0])

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(self.quantiles))

    def times_s(self) -> FloatArray:
        return self.origin_s + self.step_s * np.arange(self.horizon, dtype=np.float64)

    def quantile(self, q: float) -> FloatArray:
        """The q-quantile path; an exact level if present, else linear interpolation between levels."""
        if q in self.quantiles:
            return self.quantiles[q]
        levels = self.levels
        if not levels:
            raise KeyError(f"forecast has no quantiles (asked for {q})")
        lo, hi, f = interp_weights(levels, q)
        return np.asarray(self.quantiles[levels[lo]] * (1 - f) + self.quantiles[levels[hi]] * f)

    def head(self, n: int) -> Forecast:
        return Forecast(
            origin_s=self.origin_s,
            step_s=self.step_s,
            mean=self.mean[:n],
            quantiles={q: a[:n] for q, a in self.quantiles.items()},
            model=self.model,
            notes=self.notes,
            p_any=None if self.p_any is None else self.p_any[:n],
            p_none=None if self.p_none is None else self.p_none[:n],
        )
