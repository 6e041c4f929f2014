"""Safety rails around any actuator: shadow mode, pause, a global kill switch, leadership, and a cap on
replicas added per tick. Whatever happens, the caller gets an ActuationResult for the decision record."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from actuator.base import ActuationResult, FloorRestorer, Outcome, ReplicaActuator, Target
from actuator.errors import ActuatorError
from planner.explain import Decision


class Mode(StrEnum):
    ACTIVE = "active"
    SHADOW = "shadow"  # compute and record everything, apply nothing


@dataclass
class Rails:
    """Per-model switches. New models start in shadow until their first successful forecast."""

    mode: Mode = Mode.SHADOW
    paused: bool = False
    max_added_per_tick: int | None = None
    permanent_error: str | None = None  # set by a permanent failure: stop acting until the config changes


@dataclass
class GuardedActuator:
    """Wraps an actuator with the rails. `is_leader` is asked before every write, `restore` included (True
    when alone)."""

    inner: ReplicaActuator
    kill_switch: bool = False
    is_leader: Callable[[], bool] = lambda: True
    rails: dict[Target, Rails] = field(default_factory=dict)
    # why this process cannot lead at all (its Lease refused for good), or None: such a refusal stops acting
    # with the server's words, rather than reading as "another instance leads"
    leader_problem: Callable[[], str | None] = lambda: None
    leading: bool | None = None  # the last leadership answer (None until a write asked): for /metrics
    # with several replicas sharing the fleet: whether this one holds the shard of the target's model
    holds: Callable[[Target], bool] | None = None

    def rails_for(self, t: Target) -> Rails:
        return self.rails.setdefault(t, Rails())

    def apply(self, t: Target, decision: Decision, decision_id: str) -> ActuationResult:
        r = self.rails_for(t)
        want = decision.desired_replicas
        if self.kill_switch:
            return ActuationResult(Outcome.SKIPPED, f"kill switch on: would set {want}, applied nothing")
        if r.permanent_error:
            return ActuationResult(
                Outcome.SKIPPED,
                f"not acting on {t} after a permanent error: {r.permanent_error}",
                permanent=True,
            )
        if r.paused:
            return ActuationResult(Outcome.SKIPPED, f"{t} is paused: would set {want}")
        if r.mode is Mode.SHADOW:
            return ActuationResult(Outcome.SKIPPED, f"shadow mode: would set {want}, applied nothing")
        if not decision.valid:
            return ActuationResult(Outcome.SKIPPED, f"invalid decision ({decision.reason}): nothing to apply")
        self.leading = self.is_leader()
        if not self.leading:
            problem = self.leader_problem()
            if problem:
                r.permanent_error = f"cannot hold the leader Lease: {problem}"
                return ActuationResult(Outcome.FAILED, r.permanent_error, permanent=True)
            return ActuationResult(Outcome.SKIPPED, "another prewarm instance holds the leader Lease")
        if self.holds is not None and not self.holds(t):
            return ActuationResult(Outcome.SKIPPED, f"another prewarm replica holds the shard Lease of {t}")
        note = ""
        if r.max_added_per_tick is not None:
            try:
                have = self.inner.current(t).desired
            except ActuatorError as exc:
                return ActuationResult(
                    Outcome.FAILED, f"cannot read {t} to cap the step: {exc}", retry_after_s=10.0
                )
            cap = have + r.max_added_per_tick
            if want > cap:
                note = f" (capped at {cap}: at most {r.max_added_per_tick} added per tick; asked {want})"
                decision = dataclasses.replace(decision, desired_replicas=cap)
        result = self.inner.apply(t, decision, decision_id)
        if result.permanent:
            r.permanent_error = result.message
        return dataclasses.replace(result, message=result.message + note) if note else result

    def restore(self, t: Target) -> ActuationResult:
        """Give the target's floor back to its own autoscaler (pause, kill switch, shutdown). Only the
        leader writes: a standby restoring would undo the leader's floor."""
        if not isinstance(self.inner, FloorRestorer):
            return ActuationResult(Outcome.UNCHANGED, f"{t}: no floor held, nothing to give back")
        self.leading = self.is_leader()
        if not self.leading:
            return ActuationResult(Outcome.SKIPPED, "another prewarm instance holds the leader Lease")
        if self.holds is not None and not self.holds(t):
            return ActuationResult(Outcome.SKIPPED, f"another prewarm replica holds the shard Lease of {t}")
        return self.inner.restore(t)
