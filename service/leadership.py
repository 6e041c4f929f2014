"""The leader Lease kept on its own schedule: a daemon thread renews (or tries to acquire) every
`retry_period_s`, independent of the control tick and of shadow mode, and logs every change of leadership.
The actuator asks `leading()` before each write; it answers from the newest renew, with no API call."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from actuator.leader import LeaseElector

log = logging.getLogger("prewarm.leader")


class LeaderLoop:
    def __init__(
        self,
        elector: LeaseElector,
        clock: Callable[[], float],
        *,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.elector = elector
        self.clock = clock
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was: bool = False

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def leading(self) -> bool:
        return self.elector.is_leader(self._now())

    def problem(self) -> str | None:
        """Why this process cannot lead at all (the Lease refused with 403 or 404), or None."""
        return self.elector.permanent_error

    def step(self) -> bool:
        """One attempt; logs a change of leadership. Returns whether this process leads after it."""
        self.elector.try_acquire(self._now())
        now_leading = self.leading()
        if now_leading != self._was:
            e = self.elector
            where = f"Lease {e.namespace}/{e.name}"
            if now_leading:
                log.info("leadership gained", extra={"lease": where, "identity": e.identity})
            else:
                log.warning(
                    "leadership lost",
                    extra={"lease": where, "identity": e.identity, "error": e.last_error or ""},
                )
            self._was = now_leading
            if self.on_change is not None:
                self.on_change(now_leading)
        return now_leading

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:  # a broken attempt must not end the loop: the next one may work
                    log.exception("leader election attempt failed")
                self._stop.wait(self.elector.retry_period_s)

        self._thread = threading.Thread(target=run, name="prewarm-leader", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; with `release`, give the Lease up so a standby takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.elector.retry_period_s + 5)
        if release and self.elector.release(self._now()):
            log.info("leadership released", extra={"identity": self.elector.identity})
        self._was = False
