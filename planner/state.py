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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the pairs are written as arrays by the encoder, not copied into lists here (the store
        writes every model's state every tick)."""
        return {"recommendations": self.recommendations, "scale_events": self.scale_events}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannerState:
        try:
            recs = tuple((float(t), int(n)) for t, n in data.get("recommendations", []))
            events = tuple((float(t), int(d)) for t, d in data.get("scale_events", []))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"planner state is malformed: {exc}") from exc
        return cls(recs, events)
