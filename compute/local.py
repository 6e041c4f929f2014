"""The local backend: in this process (one worker: serial, deterministic, what tests with a fake clock
use), or a process pool sized to the cores. A pool worker that dies (killed, out of memory) breaks the
pool; the tasks it lost are resubmitted to a new pool, up to the retry limit, then recorded as failed."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from compute.base import DEFAULT_RETRIES, Done, Outcome, Pending, Task, describe, run_with_retries


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _lower_priority(nice: int) -> None:
    """A pool worker's initializer: run below the process that owns the pool (the service's control tick)
    so that a night of backtests on every core leaves the tick its CPU; idle cores still go to the night."""
    if nice:
        os.nice(nice)


def _attempt(task: Task) -> Outcome:
    """One attempt in a worker: an exception comes back as an outcome (the parent decides on retries)."""
    return run_with_retries(task, 0)


@dataclass
class _Submitted:
    compute: LocalCompute
    task: Task
    future: Future[Outcome]
    attempts: int = 1

    def done(self) -> bool:
        if not self.future.done():
            return False
        return self._result() is not None  # None: retried, a new future is running

    def _result(self) -> Outcome | None:
        try:
            out = self.future.result()
        except BrokenProcessPool as exc:
            out = Outcome(self.task.key, error=f"worker lost: {describe(exc)}")
        if out.ok or self.attempts > self.compute.retries:
            return Outcome(out.key, out.value, out.error, self.attempts)
        self.attempts += 1
        self.future = self.compute._pool_submit(self.task)
        return None

    def outcome(self) -> Outcome:
        while True:
            self.future.exception()  # waits
            result = self._result()
            if result is not None:
                return result


class LocalCompute:
    backend = "local"

    def __init__(self, workers: int | None = None, *, retries: int = DEFAULT_RETRIES, nice: int = 0) -> None:
        self.workers = default_workers() if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"compute.workers={self.workers} must be >= 1")
        if not 0 <= nice <= 19:
            raise ValueError(f"compute.worker_nice={nice} must be within [0, 19]")
        self.retries = retries
        self.nice = nice  # the pool's workers only: a serial backend runs in the caller's own process
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers start from a clean process, not a fork of one running threads (the
            # scheduler, uvicorn), and import the task's module by name
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_lower_priority, initargs=(self.nice,)
            )
        return self._pool

    def _pool_submit(self, task: Task) -> Future[Outcome]:
        try:
            return self._executor().submit(_attempt, task)
        except (BrokenProcessPool, OSError):
            # a worker died: start a new pool for what is left. A submit that races the pool's own
            # discovery of the death fails while starting a replacement worker (OSError: handle is closed)
            broken, self._pool = self._pool, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            return self._executor().submit(_attempt, task)

    def submit(self, task: Task) -> Pending:
        if self.workers == 1:
            return Done(run_with_retries(task, self.retries))
        return _Submitted(self, task, self._pool_submit(task))

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        pending = [self.submit(t) for t in tasks]
        return [p.outcome() for p in pending]

    def close(self) -> None:
        """Stop the workers, a running task included: an idle worker blocks on its task queue, whose
        writing end it holds itself, so it never sees the parent go and outlives it as an orphan."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # the executor keeps no public handle on its processes; this is the only way to reach them
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=10)
