"""Module-level tasks for tests/test_compute.py (a worker process imports a task's function by name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def fail_first(flag: str, value: int) -> int:
    """Raises on the first attempt (no flag file yet), returns on the next."""
    path = Path(flag)
    if not path.exists():
        path.write_text("tried")
        raise RuntimeError("first attempt fails")
    return value


def die_first(flag: str, value: int) -> int:
    """Kills its own worker process on the first attempt (a lost worker: OOM-killed, node gone)."""
    path = Path(flag)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def always_die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def niceness() -> int:
    """The niceness of the process that runs the task."""
    return os.nice(0)


def node_once_all_run(folder: str, key: str, count: int) -> str:
    """The Ray node that runs this task, returned once `count` such tasks run at the same time (each leaves
    a file in `folder`): on nodes of one CPU each, that many at once are on that many nodes."""
    import time

    import ray

    Path(folder, key).write_text("running")
    deadline = time.monotonic() + 120
    while len(list(Path(folder).iterdir())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(Path(folder).iterdir()))} of {count} tasks ever ran at once")
        time.sleep(0.05)
    return str(ray.get_runtime_context().get_node_id())


def spin_until(folder: str, key: str) -> int:
    """Busy on a core until the file `stop` appears in `folder`, having left its pid in `folder`/`key`;
    returns its pid (a night's task, as far as the scheduler can tell)."""
    Path(folder, key).write_text(str(os.getpid()))
    stop = Path(folder, "stop")
    n = 0
    while not stop.exists():
        for _ in range(10_000):
            n += 1
    return os.getpid()
