"""The fixed vocabulary of decisions: Reason codes, Steps and the Decision record.

Reason values are shared by the API, logs, metric labels and Kubernetes Events, so they are stable strings;
where a meaning matches the Kubernetes HPA's condition reasons, the HPA's word is used (ScaleDownStabilized,
ScaleUpLimit, ScaleDownLimit, TooFewReplicas, TooManyReplicas, DesiredWithinRange).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

InputValue = float | int | str | None


class Reason(StrEnum):
    FORECAST_DEMAND = "ForecastDemand"  # replicas for the alpha-quantile of forecast demand
    REACTIVE_FLOOR = "ReactiveFloor"  # the observed rate and queue need more than the forecast
    BURST_RESERVE = "BurstReserve"  # spare replicas of the tuned operating point, for unforecast bursts
    SLO_UNREACHABLE = "SloUnreachable"  # no tuned candidate met the SLO target: the most protective point
    SCALE_TO_ZERO = "ScaleToZero"  # min_replicas 0: no request likely before a replica could be warm again
    SCALE_IN_HELD = "ScaleInHeld"  # releasing would cost more than keeping (re-warm break-even)
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"  # a higher recommendation within the window
    SCALE_UP_STABILIZED = "ScaleUpStabilized"  # a lower recommendation within the up window
    SCALE_UP_LIMIT = "ScaleUpLimit"  # max replicas added per period reached
    SCALE_DOWN_LIMIT = "ScaleDownLimit"  # max replicas removed per period reached
    TOO_FEW_REPLICAS = "TooFewReplicas"  # raised to min_replicas
    TOO_MANY_REPLICAS = "TooManyReplicas"  # capped at max_replicas
    DESIRED_WITHIN_RANGE = "DesiredWithinRange"  # no stage had to change the forecast's answer
    FORECAST_MISSING = "ForecastMissing"  # no forecast: hold, keep the reactive floor
    FORECAST_STALE = "ForecastStale"  # too old, or does not cover the look-ahead window
    FORECAST_UNHEALTHY = "ForecastUnhealthy"  # demoted by the self-check
    DATA_DROPOUT = "DataDropout"  # traffic reads 0 where the forecast makes 0 impossible: held as missing
    OBSERVED_RATE_MISSING = "ObservedRateMissing"  # no fresh observed rate: no reactive floor this tick
    BUDGET_LIMITED = "BudgetLimited"  # the fleet's GPU budget granted fewer replicas than the plan asked
    INVALID_SNAPSHOT = "InvalidSnapshot"  # no decision possible (e.g. current replicas unknown)


# A step's sentence, or how to write it. Replays and tuning plan millions of ticks and read only the counts:
# formatting every sentence was a quarter of a plan, so a stage may hand over a zero-argument function and
# the sentence is written the first time anyone reads it (the API, the store, Events, a test).
Message = str | Callable[[], str]


def text(message: Message) -> str:
    return message if isinstance(message, str) else message()


class Step:
    """One stage of a decision: the replica count before and after it, and why. Immutable."""

    __slots__ = ("_message", "after", "before", "reason", "stage")
    _message: Message
    stage: str
    before: int | None
    after: int
    reason: Reason

    def __init__(self, stage: str, before: int | None, after: int, reason: Reason, message: Message) -> None:
        put = object.__setattr__  # past the immutability guard below, once
        put(self, "stage", stage)
        put(self, "before", before)
        put(self, "after", after)
        put(self, "reason", reason)
        put(self, "_message", message)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Step is immutable: cannot set {name}")

    @property
    def message(self) -> str:
        m = self._message
        if isinstance(m, str):
            return m
        written: str = m()
        object.__setattr__(self, "_message", written)  # written once
        return written

    @property
    def changed(self) -> bool:
        return self.before is not None and self.before != self.after

    def _key(self) -> tuple[str, int | None, int, Reason, str]:
        return (self.stage, self.before, self.after, self.reason, self.message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Step) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Step(stage={self.stage!r}, before={self.before!r}, after={self.after!r}, "
            f"reason={self.reason!r}, message={self.message!r})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "before": self.before,
            "after": self.after,
            "reason": str(self.reason),
            "message": self.message,
        }


@dataclass(frozen=True)
class Decision:
    """A planner decision. `valid=False` means no decision could be made (never a fake 0): `desired` is then
    the current count and `reason` says why."""

    at_s: float
    valid: bool
    current_replicas: int
    raw_replicas: int
    desired_replicas: int
    reason: Reason
    steps: tuple[Step, ...]
    inputs: Mapping[str, InputValue] = field(default_factory=dict)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(dict.fromkeys(s.reason for s in self.steps))

    def explanation(self) -> str:
        """Plain language: the count, what drove it, and every stage that changed it."""
        head = f"{self.desired_replicas} replica{'s' if self.desired_replicas != 1 else ''}"
        drivers = [s.message for s in self.steps if s.stage in ("demand", "fallback")]
        changes = [
            s.message
            for s in self.steps
            if (s.changed or s.reason is Reason.SLO_UNREACHABLE) and s.stage not in ("demand", "fallback")
        ]
        return "; ".join([f"{head}: {drivers[0]}" if drivers else head, *changes])

    def as_dict(self) -> dict[str, object]:
        return {
            "at_s": self.at_s,
            "valid": self.valid,
            "current_replicas": self.current_replicas,
            "raw_replicas": self.raw_replicas,
            "desired_replicas": self.desired_replicas,
            "reason": str(self.reason),
            "reasons": [str(r) for r in self.reasons],
            "steps": [s.as_dict() for s in self.steps],
            "inputs": dict(self.inputs),
            "explanation": self.explanation(),
        }
