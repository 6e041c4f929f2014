"""The Ray backend: every task a Ray task on the cluster at `address` ("auto" reads RAY_ADDRESS; None
starts a local one). The only module that imports `ray`. Ray retries a task whose worker died
(max_retries) and, here, one that raised (retry_exceptions); after that the error is the outcome. Workers
must be able to import prewarm (the same image, or `pip install prewarm` in the cluster's runtime env)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import ray

from compute.base import DEFAULT_RETRIES, Outcome, Pending, Task, describe


def _run(task: Task) -> Any:
    return task.fn(*task.args)


@dataclass
class _RayPending:
    task: Task
    ref: Any  # ray.ObjectRef

    def done(self) -> bool:
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def outcome(self) -> Outcome:
        try:
            return Outcome(self.task.key, ray.get(self.ref))
        except Exception as exc:  # RayTaskError, WorkerCrashedError, ...: recorded for this model
            cause = getattr(exc, "cause", None)
            return Outcome(self.task.key, error=describe(cause if cause is not None else exc))


class RayCompute:
    backend = "ray"

    def __init__(
        self, address: str | None = None, *, retries: int = DEFAULT_RETRIES, num_cpus: int | None = None
    ) -> None:
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self.retries = retries
        self.workers = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        self._remote = ray.remote(max_retries=retries, retry_exceptions=True)(_run)

    def submit(self, task: Task) -> Pending:
        return _RayPending(task, self._remote.remote(task))

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        return [p.outcome() for p in [self.submit(t) for t in tasks]]

    def paused(self) -> AbstractContextManager[None]:
        """Nothing is paused: a cluster's workers run on its own nodes, not beside the tick (a local Ray
        started by this process shares its cores; its workers are Ray's to schedule)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        ray.shutdown()
