"""CPython's cyclic garbage collector kept out of the control tick.

A tick of a large fleet leaves tens of thousands of containers that live on (decision records, forecasts
and what the planner derives from them). CPython runs a full collection whenever the objects promoted since
the last one pass a quarter of the long-lived ones, which such a tick does: a full collection, walking every
object the service holds, ran inside nearly every tick (at 1,000 models, about a third of the tick; see
docs/scale.md). Instead:

- during the tick the collector is off (reference counting still frees almost everything at once);
- after it, one collection of what is not frozen (what the tick left), then `gc.freeze()` moves the
  survivors out of the way of every later collection. The service's collector does it on its next run
  (within 2 s), so that the tick's decisions are applied without waiting for it; with nothing collecting
  between ticks, the next tick does it first. Until then the collector stays off;
- between ticks, once every `full_every_s` of the service's clock, a full pass (unfreeze, collect, freeze)
  reclaims the cycles that became garbage among frozen objects since, so that memory stays flat.

And what the tick freed goes back to the system. The tick frees most of what it allocates (the refreshed
forecasts' derived tables, late curves, superseded records) in small blocks spread over the heap, among
blocks that live on; the C allocator returns memory to the system only from the top of its heap, so the
pages the tick emptied stayed resident, each tick leaving a slightly different pattern. After the
collection, glibc's `malloc_trim(0)` gives back every whole free page: at 2,000 models after 20 ticks the
process grew by 1,053 MB without it and by 976 MB with it, for about a millisecond per tick. On a C
library without it (musl, macOS) nothing is trimmed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FULL_EVERY_S = 3600.0

# returns the allocator's free pages to the system (its argument: bytes kept free at the top of the heap)
Trim = Callable[[int], int]


def malloc_trim() -> Trim | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


class Heap:
    def __init__(self, full_every_s: float = FULL_EVERY_S, trim: Trim | None = None) -> None:
        """`trim`: what gives free memory back after each tick (None: glibc's malloc_trim where there is
        one); pass `lambda _: 0` to keep it."""
        if not full_every_s > 0:
            raise ValueError(f"full_every_s={full_every_s!r} must be > 0")
        self.trim = trim if trim is not None else malloc_trim()
        self.full_every_s = full_every_s
        self.last_full_s: float | None = None  # the service clock's time of the last full pass
        self.full_pass_s = 0.0  # seconds the last full pass took
        self._unsettled = False  # a block ended and what it left is not collected yet
        self._was_enabled = True  # whether the collector ran before that block

    @contextmanager
    def quiet(self, now_s: float) -> Iterator[None]:
        """No collection inside the block; what it left is collected and the rest frozen by `settle()`
        after it (the last block's leftovers are settled first here, where nothing settled them)."""
        if self.last_full_s is None:
            self.last_full_s = now_s  # the first full pass one interval after the first tick
        self.settle()
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._unsettled = True
        yield

    def settle(self) -> bool:
        """Collect what the last block left and freeze the survivors, the collector on again as it was
        before the block; returns whether there was a block to settle."""
        if not self._unsettled:
            return False
        self._unsettled = False
        if self._was_enabled:
            gc.enable()
        gc.collect()  # frozen objects are not visited: this walks what the block left
        gc.freeze()
        if self.trim is not None:
            self.trim(0)  # after the collection: the pages it emptied go back too
        return True

    def full_pass_if_due(self, now_s: float) -> bool:
        """A full pass over every object, frozen ones included, when one is due; returns whether it ran."""
        if self.last_full_s is None or now_s - self.last_full_s < self.full_every_s:
            return False
        self.full_pass()
        self.last_full_s = now_s
        return True

    def full_pass(self) -> None:
        self.settle()
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        if self.trim is not None:
            self.trim(0)
        self.full_pass_s = time.perf_counter() - started
