"""prewarm's pure decision core: plan(snapshot, spec, state, now) -> (Decision, PlannerState).

Imports only the standard library and forecaster.types: no clock, no I/O, no numerics library. Time is an
argument; state goes in and comes out.
"""

from planner.explain import Decision, Reason, Step
from planner.plan import plan
from planner.snapshot import Snapshot
from planner.spec import PlannerSpec, SpecError, untuned_late_budget
from planner.state import PlannerState

__all__ = [
    "Decision",
    "PlannerSpec",
    "PlannerState",
    "Reason",
    "Snapshot",
    "SpecError",
    "Step",
    "plan",
    "untuned_late_budget",
]
