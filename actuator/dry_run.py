"""A recording actuator for forecast-only use and tests of the layers above: it holds replica counts in
memory and applies them at once (no cold start). The backtest's simulator models cold starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from actuator.base import ActuationResult, ColdStart, Outcome, ReplicaState, Target
from planner.explain import Decision


@dataclass
class RecordingActuator:
    replicas: dict[Target, int] = field(default_factory=dict)
    applied: list[tuple[Target, str, int]] = field(default_factory=list)

    def current(self, target: Target) -> ReplicaState:
        n = self.replicas.get(target, 1)
        return ReplicaState(desired=n, ready=n)

    def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
        before = self.replicas.get(target, 1)
        after = decision.desired_replicas
        self.replicas[target] = after
        self.applied.append((target, decision_id, after))
        outcome = Outcome.UNCHANGED if before == after else Outcome.APPLIED
        return ActuationResult(outcome, f"{target}: {before} -> {after}", before, after)

    def cold_starts(self, target: Target) -> list[ColdStart]:
        return []
