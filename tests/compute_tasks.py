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
