"""PlannerState: what one decision leaves for the next, frozen and serialisable (restart-safe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlannerState:
    """recommendations: (time, replicas after the scale-in guard) for the stabilisation windows.
    scale_events: (time, change in desired replicas) for the rate limits. Both are pruned to the longest
    window that reads them, so the state stays small."""

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[tuple[float, int], ...] = ()
    # (time, how far above the forecast traffic ran) of the latest burst planning for the SLO remembers
    # (spec.burst_memory_s): the regime after a burst, when another is likelier
    burst: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommendations": [list(r) for r in self.recommendations],
            "scale_events": [list(e) for e in self.scale_events],
            "burst": list(self.burst) if self.burst is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannerState:
        try:
            recs = tuple((float(t), int(n)) for t, n in data.get("recommendations", []))
            events = tuple((float(t), int(d)) for t, d in data.get("scale_events", []))
            raw = data.get("burst")
            burst = (float(raw[0]), float(raw[1])) if raw else None
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"planner state is malformed: {exc}") from exc
        return cls(recs, events, burst)
