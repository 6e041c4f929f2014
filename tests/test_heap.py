"""The garbage collector kept out of the control tick (service/heap.py): no collection inside a tick, the
tick's leftovers collected and the survivors frozen right after it, and cycles that became garbage among
frozen objects reclaimed by the full pass between ticks when it is due."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from service.heap import Heap


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


def test_no_collection_runs_inside_the_tick_and_its_garbage_goes_right_after() -> None:
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
            del node  # garbage now, but no collection may run until the block ends
            assert runs == [] and alive() is not None
        assert alive() is None  # collected right after the block
    finally:
        gc.callbacks.remove(seen)
    assert gc.isenabled()


def test_a_cycle_frozen_while_alive_is_reclaimed_by_the_full_pass_once_it_is_due() -> None:
    heap = Heap(full_every_s=3600.0)
    with heap.quiet(1000.0):
        node, alive = cycle()  # lives on past the tick: frozen after it
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
    with Heap().quiet(0.0):
        pass
    assert not gc.isenabled()


def test_a_full_pass_before_the_first_tick_is_never_due() -> None:
    assert not Heap().full_pass_if_due(10**9)
    with pytest.raises(ValueError, match="full_every_s=0"):
        Heap(full_every_s=0)
