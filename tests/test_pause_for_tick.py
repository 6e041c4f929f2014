"""The tick's pause of the local pool (compute.pause_for_tick): inside `paused()` every worker is stopped,
after it every worker runs on and its task finishes with its result; the workers die with a service killed
while they are stopped. States are read from /proc, and every wait is on a state, with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from compute.base import Task
from compute.forkserver_watch import stat_fields
from compute.local import LocalCompute
from tests import compute_tasks as ct

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0


def wait_for(what: str, ok: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S:g} s"
        time.sleep(0.01)


def state(pid: int) -> str:
    """The process's state letter (R running, S sleeping, T stopped, Z zombie; '' once it is gone)."""
    fields = stat_fields(pid)
    return fields[0] if fields else ""


def pids(folder: Path, keys: list[str]) -> list[int]:
    def running() -> bool:
        return all((folder / k).exists() and (folder / k).read_text() for k in keys)

    wait_for("every task running", running)
    return [int((folder / k).read_text()) for k in keys]


def test_paused_stops_every_pool_worker_and_each_goes_on_after_it_with_its_result(tmp_path: Path) -> None:
    pool = LocalCompute(workers=2, pause_for_tick=True)
    try:
        keys = ["a", "b"]
        running = [pool.submit(Task(k, ct.spin_until, (str(tmp_path), k))) for k in keys]
        workers = pids(tmp_path, keys)
        assert len(set(workers)) == 2 and os.getpid() not in workers
        with pool.paused():
            wait_for("both workers stopped", lambda: all(state(p) == "T" for p in workers))
        wait_for("both workers continued", lambda: all(state(p) in ("R", "S") for p in workers))
        (tmp_path / "stop").write_text("")
        assert [r.outcome().value for r in running] == workers  # each task finished where it ran
        # a failure inside the block continues them too
        (tmp_path / "stop").unlink()
        again = [pool.submit(Task(k, ct.spin_until, (str(tmp_path), k))) for k in ("c", "d")]
        workers = pids(tmp_path, ["c", "d"])
        try:
            with pool.paused():
                wait_for("both workers stopped", lambda: all(state(p) == "T" for p in workers))
                raise RuntimeError("the tick failed")
        except RuntimeError:
            pass
        wait_for("both workers continued", lambda: all(state(p) in ("R", "S") for p in workers))
        (tmp_path / "stop").write_text("")
        assert sorted(r.outcome().value for r in again) == sorted(workers)
    finally:
        pool.close()


def test_without_pause_for_tick_and_on_the_serial_backend_nothing_is_stopped(tmp_path: Path) -> None:
    pool = LocalCompute(workers=2)
    try:
        running = [pool.submit(Task(k, ct.spin_until, (str(tmp_path), k))) for k in ("a", "b")]
        workers = pids(tmp_path, ["a", "b"])
        with pool.paused():
            assert all(state(p) in ("R", "S") for p in workers)  # no signal was sent: none can be stopping
        (tmp_path / "stop").write_text("")
        assert sorted(r.outcome().value for r in running) == sorted(workers)
    finally:
        pool.close()
    serial = LocalCompute(workers=1, pause_for_tick=True)
    with serial.paused():  # no pool: the tasks run in the caller, which is not stopped
        (out,) = serial.map([Task("m", ct.square, (3,))])
    assert out.value == 9


def test_workers_stopped_by_a_tick_die_with_a_service_killed_in_it(tmp_path: Path) -> None:
    """A service SIGKILLed mid-tick never continues its stopped workers: they die with it, not linger."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from compute.base import Task
        from compute.local import LocalCompute
        from tests import compute_tasks as ct

        if __name__ == "__main__":
            folder = {str(tmp_path)!r}
            pool = LocalCompute(workers=2, pause_for_tick=True)
            for k in ("a", "b"):
                pool.submit(Task(k, ct.spin_until, (folder, k)))
            while not all(os.path.exists(os.path.join(folder, k)) for k in ("a", "b")):
                time.sleep(0.01)
            with pool.paused():
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    (tmp_path / "service.py").write_text(script)
    proc = subprocess.run([sys.executable, str(tmp_path / "service.py")], timeout=DEADLINE_S, check=False)
    assert proc.returncode == -9
    workers = pids(tmp_path, ["a", "b"])
    wait_for("the stopped workers gone", lambda: all(state(p) in ("", "Z") for p in workers))
