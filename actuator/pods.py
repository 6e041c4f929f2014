"""A pod's cold start, decomposed: created -> scheduled -> initialised -> containers started -> Ready.

Phases (seconds): scheduling (created -> PodScheduled), init (PodScheduled -> Initialized: init containers
and volume set-up), image_pull_and_start (Initialized -> the last container's running.startedAt: image pulls
and container start), loading_and_warmup (startedAt -> Ready: weights onto the device, kernels warmed, the
readiness probe passing). The total is what the planner calls T_load.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from actuator.base import ColdStart


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def cold_start_from_pod(pod: Any) -> ColdStart | None:
    """The pod's cold start, or None while it is not Ready (or reports no times)."""
    created = _ts(pod.metadata.creation_timestamp)
    conditions = {c.type: c for c in (pod.status.conditions or [])} if pod.status else {}
    ready = conditions.get("Ready")
    if created is None or ready is None or ready.status != "True":
        return None
    ready_s = _ts(ready.last_transition_time)
    if ready_s is None or ready_s < created:
        return None
    marks: list[tuple[str, float | None]] = [
        ("scheduling", _ts(getattr(conditions.get("PodScheduled"), "last_transition_time", None))),
        ("init", _ts(getattr(conditions.get("Initialized"), "last_transition_time", None))),
    ]
    started = [
        _ts(cs.state.running.started_at)
        for cs in (pod.status.container_statuses or [])
        if cs.state is not None and cs.state.running is not None and cs.state.running.started_at is not None
    ]
    marks.append(("image_pull_and_start", max((s for s in started if s is not None), default=None)))
    marks.append(("loading_and_warmup", ready_s))
    phases: dict[str, float] = {}
    prev = created
    for name, at in marks:
        if at is None or at < prev or at > ready_s:
            continue  # a phase the pod did not report (or a restart reordered): folded into the next one
        phases[name] = at - prev
        prev = at
    return ColdStart(replica=str(pod.metadata.name), created_s=created, ready_s=ready_s, phases_s=phases)
