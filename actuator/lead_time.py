"""T_load learned per model from observed cold starts: a rolling window, its p95 once it holds enough."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from actuator.base import ColdStart


@dataclass(frozen=True)
class LeadTime:
    t_load_s: float
    source: str  # "learned" or "configured"
    samples: int
    note: str
    phases_p50_s: dict[str, float]


SEEN_KEPT = 4096  # cold starts remembered as counted


class LeadTimeEstimator:
    """Keeps the last `window` cold starts; T_load is their `quantile` (nearest-rank) once there are at least
    `min_samples`, the configured value before that. Nearest rank, not interpolation: the answer is a cold
    start that really happened."""

    def __init__(
        self,
        configured_s: float,
        *,
        window: int = 50,
        min_samples: int = 5,
        quantile: float = 0.95,
        floor_s: float = 0.0,
        floor_why: str = "the configured floor",
    ) -> None:
        if not (0 < quantile < 1) or window < 1 or not (1 <= min_samples <= window) or configured_s < 0:
            raise ValueError(
                f"lead time: need 0 < quantile < 1 (got {quantile}), window >= 1 (got {window}), "
                f"1 <= min_samples <= window (got {min_samples}), configured_s >= 0 (got {configured_s})"
            )
        self.configured_s = configured_s
        # a learned value is never below this: pods that report every condition in the same second read as a
        # 0 s cold start, and planning for none would raise replicas only once demand is already there
        self.floor_s, self.floor_why = max(0.0, floor_s), floor_why
        self.quantile = quantile
        self.min_samples = min_samples
        self._window: deque[ColdStart] = deque(maxlen=window)
        # starts already counted; bounded (a long-running service sees thousands of cold starts, and an
        # actuator reports only its recent ones, so a key this old cannot come back)
        self._seen: dict[tuple[str, float], None] = {}  # insertion-ordered: the oldest go first
        self._estimate: LeadTime | None = None  # until a new cold start is observed (read every tick)

    def observe(self, starts: Iterable[ColdStart]) -> int:
        """Add cold starts not seen before; returns how many were new."""
        new = 0
        for c in starts:
            key = (c.replica, c.created_s)
            if key in self._seen or c.t_load_s < 0:
                continue
            self._seen[key] = None
            if len(self._seen) > SEEN_KEPT:
                del self._seen[next(iter(self._seen))]
            self._window.append(c)
            new += 1
        if new:
            self._estimate = None
        return new

    @property
    def observations(self) -> list[ColdStart]:
        return list(self._window)

    def estimate(self) -> LeadTime:
        if self._estimate is None:
            self._estimate = self._compute()
        return self._estimate

    def _compute(self) -> LeadTime:
        n = len(self._window)
        phases = self._phase_medians()
        if n < self.min_samples:
            return LeadTime(
                self.configured_s,
                "configured",
                n,
                f"configured {self.configured_s:g} s until {self.min_samples} cold starts are seen "
                f"({n} so far)",
                phases,
            )
        values = sorted(c.t_load_s for c in self._window)
        rank = max(1, math.ceil(self.quantile * n))
        value = values[rank - 1]
        slowest = max(phases, key=lambda k: phases[k]) if phases else None
        dominant = f"; {slowest} dominates (median {phases[slowest]:.0f} s)" if slowest else ""
        note = f"learned: p{self.quantile * 100:g} of the last {n} cold starts{dominant}"
        if value < self.floor_s:
            note += f"; {value:g} s is below {self.floor_why} ({self.floor_s:g} s), which is used"
            value = self.floor_s
        return LeadTime(value, "learned", n, note, phases)

    def _phase_medians(self) -> dict[str, float]:
        names = {k for c in self._window for k in c.phases_s}
        out = {}
        for k in sorted(names):
            vals = sorted(c.phases_s[k] for c in self._window if k in c.phases_s)
            out[k] = vals[len(vals) // 2]
        return out
