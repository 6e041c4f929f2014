"""The compute port: run tasks (a module-level function and its arguments, keyed by the model they are
for) and get back one outcome per task, in order. A task that raises is retried; one that still fails, or
whose worker was lost every time, comes back as an outcome with its error, never as an exception out of
`map`: one model's failure never fails the night for the others.

Results do not depend on the backend: a task is a pure function of its arguments (seeds included), so the
serial, process-pool and Ray backends return equal values (tests/test_compute.py compares them).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_RETRIES = 2  # attempts after the first


@dataclass(frozen=True)
class Task:
    key: str  # what the outcome is recorded under (a model's name)
    fn: Callable[..., Any]  # module-level, so that a worker process can import it by name
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Outcome:
    key: str
    value: Any = None
    error: str = ""  # set when every attempt failed: the last error
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return not self.error


class Pending(Protocol):
    """A submitted task: poll `done()` without blocking; `outcome()` once done."""

    def done(self) -> bool: ...

    def outcome(self) -> Outcome: ...


class Compute(Protocol):
    backend: str
    workers: int

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Run every task (in parallel where the backend can) and return their outcomes in task order."""
        ...

    def submit(self, task: Task) -> Pending:
        """Start one task and return at once (the control tick submits refits this way)."""
        ...

    def paused(self) -> AbstractContextManager[None]:
        """While inside, the backend's workers on this machine run nothing (the control tick runs inside it,
        so that a night filling every core takes none of the tick's CPU, caches or memory bandwidth); their
        tasks go on after it, and a task submitted meanwhile starts then."""
        ...

    def close(self) -> None: ...


def describe(exc: BaseException) -> str:
    """An error as one line for a record: its type, message and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass
class Done:
    """A Pending that finished when it was submitted (the serial backend)."""

    result: Outcome

    def done(self) -> bool:
        return True

    def outcome(self) -> Outcome:
        return self.result


def run_with_retries(task: Task, retries: int) -> Outcome:
    """Run a task in this process, retrying when it raises; the serial backend and each pool worker's
    view of one attempt."""
    error = ""
    for attempt in range(1, retries + 2):
        try:
            return Outcome(task.key, task.fn(*task.args), attempts=attempt)
        except Exception as exc:  # recorded for this model; the others go on
            error = describe(exc)
    return Outcome(task.key, error=error, attempts=retries + 1)
