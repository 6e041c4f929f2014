"""The local backend: in this process (one worker: serial, deterministic, what tests with a fake clock
use), or a process pool sized to the cores. A pool worker that dies (killed, out of memory) breaks the
pool; the tasks it lost are resubmitted to a new pool, up to the retry limit, then recorded as failed."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import forkserver

from compute.base import DEFAULT_RETRIES, Done, Outcome, Pending, Task, describe, run_with_retries
from compute.forkserver_watch import WATCH_ENV


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _start_worker(nice: int) -> None:
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
        # exception(), not result(): a pool that breaks fails every task queued on it with one shared
        # exception, and each raise of it added frames to its traceback, so that describing each task's
        # loss walked the raises of all the tasks before it (a worker killed with a night of 10,000 fits
        # queued held the control tick for longer than the soak could wait)
        exc = self.future.exception()
        if isinstance(exc, BrokenProcessPool):
            out = Outcome(self.task.key, error=f"worker lost: {describe(exc)}")
        else:
            out = self.future.result()  # an outcome (a task's own error is one), or what the pool raised
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

    def __init__(
        self,
        workers: int | None = None,
        *,
        retries: int = DEFAULT_RETRIES,
        nice: int = 0,
        pause_for_tick: bool = False,
    ) -> None:
        self.workers = default_workers() if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"compute.workers={self.workers} must be >= 1")
        if not 0 <= nice <= 19:
            raise ValueError(f"compute.worker_nice={nice} must be within [0, 19]")
        self.retries = retries
        self.nice = nice  # the pool's workers only: a serial backend runs in the caller's own process
        self.pause_for_tick = pause_for_tick  # paused() stops the workers (else it does nothing)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers start from a clean process, not a fork of one running threads (the
            # scheduler, uvicorn), and import the task's module by name
            ctx = multiprocessing.get_context("forkserver")
            # the forkserver kills the workers when this process exits, however it exits (a worker stopped
            # by a tick would otherwise wait for ever): compute/forkserver_watch.py. Started here, so that
            # only the forkserver sees the variable (once per process: a running one is kept)
            ctx.set_forkserver_preload(["__main__", "compute.forkserver_watch"])
            os.environ[WATCH_ENV] = str(os.getpid())
            try:
                forkserver.ensure_running()
            finally:
                os.environ.pop(WATCH_ENV, None)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_start_worker, initargs=(self.nice,)
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

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """With pause_for_tick, the pool's workers are stopped (SIGSTOP) inside and continued (SIGCONT) on
        the way out, however it is left. Niceness gives the tick the CPU but not the caches and memory
        bandwidth a busy neighbour takes: beside a night on both cores the tick ran 1.1x its idle time at
        niceness 19. A task loses the time of the ticks (a 0.4 s tick every 30 s: 1.3%).

        Each worker is signalled through a pidfd opened while it is known to be alive (its sentinel not
        ready after the open), so a pid that a dead worker left to another process is never signalled."""
        pool = self._pool
        held: list[int] = []
        try:
            if self.pause_for_tick and pool is not None:
                for proc in _workers(pool):
                    fd = _pidfd_of_live(proc)
                    if fd is None:
                        continue
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGSTOP)
                    except ProcessLookupError:
                        os.close(fd)
                        continue
                    held.append(fd)
            yield
        finally:
            for fd in held:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGCONT)
                os.close(fd)

    def close(self) -> None:
        """Stop the workers, a running task included: an idle worker blocks on its task queue, whose
        writing end it holds itself, so it never sees the parent go and outlives it as an orphan."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = _workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=10)


def _workers(pool: ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    """The pool's worker processes now: the executor keeps no public handle on them, this is the only way
    to reach them."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _pidfd_of_live(proc: multiprocessing.process.BaseProcess) -> int | None:
    """A pidfd of a pool worker that is alive after the open (so the pid is still the worker's), or None:
    it has exited, or this system has no pidfds (Linux 5.3+), where the workers are never paused."""
    if proc.pid is None:
        return None
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        return None
    if not proc.is_alive():
        os.close(fd)
        return None
    return fd
