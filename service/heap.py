"""CPython's cyclic garbage collector kept out of the control tick.

A tick of a large fleet leaves tens of thousands of containers that live on (decision records, forecasts
and what the planner derives from them). CPython runs a full collection whenever the objects promoted since
the last one pass a quarter of the long-lived ones, which such a tick does: a full collection, walking every
object the service holds, ran inside nearly every tick (at 1,000 models, about a third of the tick; see
docs/scale.md). Instead:

- during the tick the collector is off (reference counting still frees almost everything at once);
- right after it, one collection of what is not frozen (what the tick left), then `gc.freeze()` moves the
  survivors out of the way of every later collection;
- between ticks, once every `full_every_s` of the service's clock, a full pass (unfreeze, collect, freeze)
  reclaims the cycles that became garbage among frozen objects since, so that memory stays flat.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

FULL_EVERY_S = 3600.0


class Heap:
    def __init__(self, full_every_s: float = FULL_EVERY_S) -> None:
        if not full_every_s > 0:
            raise ValueError(f"full_every_s={full_every_s!r} must be > 0")
        self.full_every_s = full_every_s
        self.last_full_s: float | None = None  # the service clock's time of the last full pass
        self.full_pass_s = 0.0  # seconds the last full pass took

    @contextmanager
    def quiet(self, now_s: float) -> Iterator[None]:
        """No collection inside the block; after it, what the block left is collected and the rest frozen."""
        if self.last_full_s is None:
            self.last_full_s = now_s  # the first full pass one interval after the first tick
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()
            gc.collect()  # frozen objects are not visited: this walks what the block left
            gc.freeze()

    def full_pass_if_due(self, now_s: float) -> bool:
        """A full pass over every object, frozen ones included, when one is due; returns whether it ran."""
        if self.last_full_s is None or now_s - self.last_full_s < self.full_every_s:
            return False
        self.full_pass()
        self.last_full_s = now_s
        return True

    def full_pass(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.full_pass_s = time.perf_counter() - started
