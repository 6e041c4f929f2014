"""The actuator port: read a workload's replicas, apply a decision, report cold starts.

Every call returns a record, never nothing: an ActuationResult says applied, skipped (and why) or failed
(and why), so the decision log always knows what happened to each decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from planner.explain import Decision


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # the workload already had what the decision asked for
    SKIPPED = "skipped"  # on purpose: shadow mode, paused, kill switch, not the leader
    FAILED = "failed"


@dataclass(frozen=True)
class Target:
    """A workload prewarm scales: kind is Deployment or StatefulSet (Kubernetes) or a Ray Serve
    `application/deployment`."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ReplicaState:
    """What the workload has now: replicas asked for, replicas ready, and the floor prewarm last set."""

    desired: int
    ready: int
    floor: int | None = None


@dataclass(frozen=True)
class ActuationResult:
    outcome: Outcome
    message: str
    before: int | None = None
    after: int | None = None
    permanent: bool = False  # a failure that retrying cannot fix
    retry_after_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "outcome": str(self.outcome),
            "message": self.message,
            "before": self.before,
            "after": self.after,
            "permanent": self.permanent,
            "retry_after_s": self.retry_after_s,
        }


@dataclass(frozen=True)
class ColdStart:
    """One observed cold start: asked (created) -> ready, with its phases where the platform reports them.
    `phases_s` maps a phase (scheduling, image_pull_and_init, container_start, loading_and_warmup, ...) to
    seconds, so users see which part dominates."""

    replica: str
    created_s: float
    ready_s: float
    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def t_load_s(self) -> float:
        return self.ready_s - self.created_s


class ReplicaActuator(Protocol):
    def current(self, target: Target) -> ReplicaState:
        """The workload's replicas now. Raises TransientError or PermanentError."""
        ...

    def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
        """Make the fleet hold decision.desired_replicas warm; never raises for a failure it can describe."""
        ...

    def cold_starts(self, target: Target) -> list[ColdStart]:
        """Cold starts observed so far (oldest first)."""
        ...


@runtime_checkable
class FloorRestorer(Protocol):
    """An actuator that raises another autoscaler's floor (an HPA's minReplicas, a ScaledObject's
    minReplicaCount) and can give that autoscaler its own floor back: on pause, on the kill switch and on a
    clean shutdown, so prewarm's influence ends when it stops acting."""

    def restore(self, target: Target) -> ActuationResult:
        """Put the owner's own floor back (UNCHANGED where prewarm holds no floor)."""
        ...


@runtime_checkable
class BulkReader(Protocol):
    """An actuator that can read many targets' state at once: within `reading(targets)` (one control tick)
    it answers current(), cold_starts() and apply()'s "already there" from reads made once for all of them
    (one LIST per kind and namespace), where each call alone would read the API again; writes still read
    what they replace afresh."""

    def reading(self, targets: Sequence[Target]) -> AbstractContextManager[None]: ...


def reading(actuator: object, targets: Sequence[Target]) -> AbstractContextManager[None]:
    """`actuator`'s bulk reads of `targets` for one tick where it makes them; otherwise nothing changes."""
    return actuator.reading(targets) if isinstance(actuator, BulkReader) else nullcontext()
