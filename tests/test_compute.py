"""The compute port: the serial, process-pool and Ray backends run the same tasks to the same results;
a task that raises or loses its worker is retried, then recorded for its model, never failing the rest;
and the night's backtests and tuning runs are identical whichever backend runs them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from backtest.tuning import TuningGrid
from compute.base import Compute, Outcome, Task
from compute.local import LocalCompute, _Submitted
from service.nightly import SERIAL, night_task, run_night
from service.serve import build_demo, demo_start_s
from tests import compute_tasks as ct
from tests.fakes import Clock
from tests.ray_harness import ray_head

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400
GRID = TuningGrid(budgets=(0.01, 0.1), pools=(2, 0), utilizations=(0.8,))
# both Ray test modules start and `ray stop --force` a head on this machine: one xdist worker runs them
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalCompute]:
    compute = LocalCompute(workers=2, retries=1)
    yield compute
    compute.close()


@pytest.fixture(scope="module")
def ray_compute() -> Iterator[Compute]:
    """A real Ray cluster of three nodes on 127.0.0.1 (a head and two worker nodes, one CPU each, each its
    own `ray start`), reached by the head's address."""
    with ray_head(cpus=1, worker_nodes=2) as head:
        from compute.ray_backend import RayCompute

        compute = RayCompute(head.address, retries=1)
        try:
            yield compute
        finally:
            compute.close()


def squares() -> list[Task]:
    return [Task(f"m{i}", ct.square, (i,)) for i in range(6)]


def test_the_serial_backend_runs_tasks_in_order_and_records_a_failure_after_its_retries() -> None:
    out = LocalCompute(workers=1, retries=2).map([*squares(), Task("bad", ct.fail, ("no history",))])
    assert [o.value for o in out[:6]] == [0, 1, 4, 9, 16, 25]
    assert not out[6].ok and out[6].attempts == 3
    assert "ValueError: no history" in out[6].error and "compute_tasks.py" in out[6].error


def test_a_task_that_fails_once_succeeds_on_its_retry(tmp_path: Path, pool: LocalCompute) -> None:
    for compute, flag in ((LocalCompute(workers=1), "serial"), (pool, "pool")):
        (out,) = compute.map([Task("m", ct.fail_first, (str(tmp_path / flag), 7))])
        assert out.ok and out.value == 7 and out.attempts == 2


def test_the_pool_returns_what_serial_does(pool: LocalCompute) -> None:
    assert pool.map(squares()) == LocalCompute(workers=1).map(squares())


def test_pool_workers_run_below_the_process_that_owns_them_and_the_serial_backend_in_it() -> None:
    mine = os.nice(0)
    low = LocalCompute(workers=2, nice=10)
    try:
        assert {o.value for o in low.map([Task(f"m{i}", ct.niceness) for i in range(4)])} == {
            min(19, mine + 10)
        }
    finally:
        low.close()
    (serial,) = LocalCompute(workers=1, nice=10).map([Task("m", ct.niceness)])
    assert serial.value == mine  # one worker runs the tasks in the caller: the caller's priority is its own
    with pytest.raises(ValueError, match=r"compute.worker_nice=20 must be within \[0, 19\]"):
        LocalCompute(workers=2, nice=20)


def test_a_killed_pool_worker_is_replaced_and_its_task_retried(tmp_path: Path, pool: LocalCompute) -> None:
    out = pool.map([Task("lost", ct.die_first, (str(tmp_path / "flag"), 5)), *squares()])
    assert out[0].ok and out[0].value == 5 and out[0].attempts == 2
    assert [o.value for o in out[1:]] == [0, 1, 4, 9, 16, 25]  # the others were not lost with it


def test_the_tasks_a_broken_pool_fails_together_are_described_without_the_loss_growing_per_task() -> None:
    """A pool that breaks fails every queued task with one shared exception: reading each of them must not
    raise it again, or its traceback grows by every read and describing the 10,000th walks them all."""
    lost = BrokenProcessPool("A child process terminated abruptly")
    compute = LocalCompute(workers=2, retries=0)  # recorded at once, not resubmitted
    tasks = []
    for i in range(500):
        future: Future[Outcome] = Future()
        future.set_exception(lost)
        tasks.append(_Submitted(compute, Task(f"m{i}", ct.square, (i,)), future))
    assert all(t.done() for t in tasks)
    outcomes = [t.outcome() for t in tasks]
    said = "worker lost: BrokenProcessPool: A child process terminated abruptly"
    assert {o.error for o in outcomes} == {said}
    assert lost.__traceback__ is None  # never raised: nothing accumulated on it


def test_a_task_that_always_kills_its_worker_is_recorded_and_the_rest_complete(pool: LocalCompute) -> None:
    out = pool.map([*squares(), Task("doomed", ct.always_die)])
    assert not out[-1].ok and "worker lost" in out[-1].error and out[-1].attempts == 2
    assert pool.map(squares())[5].value == 25  # the pool is usable after


def test_the_ray_cluster_runs_tasks_on_each_of_its_three_nodes(tmp_path: Path, ray_compute: Compute) -> None:
    assert ray_compute.workers == 3
    out = ray_compute.map(
        [Task(f"m{i}", ct.node_once_all_run, (str(tmp_path), f"m{i}", 3)) for i in range(3)]
    )
    assert all(o.ok for o in out), [o.error for o in out]
    assert len({o.value for o in out}) == 3  # one CPU per node: three at once is one on each


def test_ray_runs_the_same_tasks_to_the_same_results(tmp_path: Path, ray_compute: Compute) -> None:
    assert ray_compute.map(squares()) == [
        o.__class__(o.key, o.value) for o in LocalCompute(workers=1).map(squares())
    ]
    failed, retried, lost = ray_compute.map(
        [
            Task("bad", ct.fail, ("no history",)),
            Task("flaky", ct.fail_first, (str(tmp_path / "ray-flag"), 3)),
            Task("lost", ct.die_first, (str(tmp_path / "ray-die"), 4)),
        ]
    )
    assert not failed.ok and "ValueError: no history" in failed.error
    assert retried.ok and retried.value == 3
    assert lost.ok and lost.value == 4


@pytest.fixture(scope="module")
def night_tasks(tmp_path_factory: pytest.TempPathFactory) -> list[Task]:
    """Two demo models' nights (backtest and tuning) on the morning of their first day."""
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path_factory.mktemp('night') / 's.db'}", tune_window_s=DAY)
    names = list(ctl.models)[:2]
    tasks = [night_task(ctl, n, clock(), backtest_days=3, grid=GRID) for n in names]
    return [t for t in tasks if t is not None]


def test_the_nights_documents_are_identical_on_every_backend(
    night_tasks: list[Task], pool: LocalCompute, ray_compute: Compute
) -> None:
    serial = [o.value for o in SERIAL.map(night_tasks)]
    assert len(serial) == 2 and all(v["backtest"] and v["tuning"] for v in serial)
    assert [o.value for o in pool.map(night_tasks)] == serial
    assert [o.value for o in ray_compute.map(night_tasks)] == serial


def test_a_night_on_the_pool_records_every_model_and_one_models_failure_spares_the_others(
    tmp_path: Path, pool: LocalCompute
) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", tune_window_s=DAY)
    for name in list(ctl.models)[2:]:
        del ctl.models[name]
    broken = next(iter(ctl.models.values()))

    def unreadable(now_s: float) -> object:
        raise OSError("prometheus unreachable")

    broken.history = unreadable  # type: ignore[assignment]
    done = run_night(ctl, pool, clock(), backtest_days=3, grid=GRID)
    failed = done["backtest"][broken.name]
    assert not failed.ok and "prometheus unreachable" in failed.error
    assert not ctl.store.tunings(broken.name, limit=1)[0]["ok"]
    other = list(ctl.models)[1]
    assert done["backtest"][other].ok and ctl.store.latest_backtest(other) is not None
    assert ctl.store.tunings(other, limit=1)[0]["ok"]
