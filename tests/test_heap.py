"""The garbage collector kept out of the control tick (service/heap.py): no collection inside a tick, the
tick's leftovers collected and the survivors frozen after it (by the service's collector between ticks, or
first thing in the next tick), and cycles that became garbage among frozen objects reclaimed by the full
pass between ticks when it is due."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forecaster.sources.synthetic import synthetic_fleet
from service.heap import Heap, malloc_trim
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock


class Node:
    def __init__(self) -> None:
        self.other: Any = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a  # only the cyclic collector frees it
    return a, weakref.ref(a)


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Every object back in the collector's care after each test: the rest of the suite runs unfrozen."""
    yield
    gc.unfreeze()
    gc.enable()


def test_no_collection_runs_inside_the_tick_and_its_garbage_goes_when_it_is_settled() -> None:
    heap = Heap()
    runs: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        with heap.quiet(0.0):
            for _ in range(50_000):  # far past the young generation's threshold of 700 allocations
                cycle()
            node, alive = cycle()
            del node  # garbage now, but no collection may run until the block is settled
            assert runs == [] and alive() is not None
        for _ in range(50_000):  # after the block, before the collector's next run: still none
            cycle()
        assert runs == [] and alive() is not None and not gc.isenabled()
        assert heap.settle()
        assert alive() is None and runs == [2]  # one collection (of all that is not frozen)
        assert not heap.settle()  # nothing left to settle
    finally:
        gc.callbacks.remove(seen)
    assert gc.isenabled()


def test_a_tick_settles_the_last_one_first_where_nothing_settled_it_between() -> None:
    heap = Heap()
    with heap.quiet(0.0):
        node, alive = cycle()
        del node
    with heap.quiet(30.0):
        assert alive() is None  # collected as the second tick began, before its own work
        assert not gc.isenabled()
    assert heap.settle() and gc.isenabled()


def test_a_cycle_frozen_while_alive_is_reclaimed_by_the_full_pass_once_it_is_due() -> None:
    heap = Heap(full_every_s=3600.0)
    with heap.quiet(1000.0):
        node, alive = cycle()  # lives on past the tick: frozen after it
    heap.settle()
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert alive() is not None  # frozen objects are outside every collection
    assert not heap.full_pass_if_due(1000.0 + 3599.0)  # not due yet
    assert alive() is not None
    assert heap.full_pass_if_due(1000.0 + 3600.0)
    assert alive() is None and heap.last_full_s == 4600.0
    assert not heap.full_pass_if_due(4601.0)


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    gc.disable()
    heap = Heap()
    with heap.quiet(0.0):
        pass
    assert heap.settle() and not gc.isenabled()


def test_a_full_pass_before_the_first_tick_is_never_due() -> None:
    assert not Heap().full_pass_if_due(10**9)
    with pytest.raises(ValueError, match="full_every_s=0"):
        Heap(full_every_s=0)


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fragment() -> list[bytearray]:
    """200 MB in 1 KB blocks, of which one in 64 lives on: the rest freed between blocks that stay, as a
    tick frees its derived tables among the records it keeps."""
    blocks = [bytearray(1000) for _ in range(200_000)]
    return blocks[::64]


@pytest.mark.skipif(malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_the_pages_a_tick_emptied_go_back_to_the_system_after_it() -> None:
    trim = malloc_trim()
    assert trim is not None
    trim(0)  # what earlier tests left free is not counted as the tick's
    before = resident_mb()
    heap = Heap(trim=lambda _: 0)
    with heap.quiet(0.0):
        kept = fragment()
    heap.settle()
    kept_back = resident_mb() - before  # the allocator keeps what it cannot return from the top of its heap
    del kept
    trim(0)
    before = resident_mb()
    heap = Heap()
    with heap.quiet(0.0):
        kept = fragment()
        during = resident_mb() - before
    heap.settle()
    after = resident_mb() - before
    assert kept_back > 150 and during > 150  # the blocks took ~200 MB, and without trimming it stayed
    assert after < during / 3, (during, after)  # with it, the pages of the freed blocks are given back
    assert len(kept) == 3125


def test_trimming_runs_once_after_the_tick_s_collection_and_after_a_full_pass() -> None:
    calls: list[bool] = []
    box: dict[str, weakref.ref[Node]] = {}

    def trim(pad: int) -> int:
        calls.append(box["alive"]() is None)  # the tick's garbage already collected when it runs
        return 1

    heap = Heap(full_every_s=60.0, trim=trim)
    with heap.quiet(0.0):
        node, box["alive"] = cycle()
        del node
        assert calls == []
    assert calls == []
    heap.settle()
    assert calls == [True]
    assert heap.full_pass_if_due(61.0) and calls == [True, True]


def test_the_service_s_collector_settles_the_tick_between_ticks(tmp_path: Path) -> None:
    """The tick returns once its decisions are applied; its garbage goes on the collector's next run."""
    clock = Clock(demo_start_s())
    ctl = build_demo(
        clock, f"sqlite:///{tmp_path / 'p.db'}", tick_s=30.0, shapes=synthetic_fleet(3), days_after=1.0
    )
    heap = Heap()
    jobs = Jobs(ctl, ControllerView(ctl, clock), clock, heap=heap)
    left: list[weakref.ref[Node]] = []
    real_tick = ctl.tick_all

    def tick_leaving_a_cycle(now_s: float) -> None:
        real_tick(now_s)
        _, alive = cycle()
        left.append(alive)

    ctl.tick_all = tick_leaving_a_cycle  # type: ignore[method-assign]
    jobs.tick_all()
    assert left[0]() is not None and not gc.isenabled()  # the tick did not wait for the collection
    clock.t += 2.0
    jobs.collect()
    assert left[0]() is None and gc.isenabled() and gc.get_freeze_count() > 0
