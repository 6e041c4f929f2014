"""The leader Lease (or, with several replicas sharing a fleet, the shard Leases) kept on its own
schedule: a daemon thread renews (or tries to acquire) every `retry_period_s`, independent of the control
tick and of shadow mode, and logs every change of leadership. The actuator asks `holds()` before each
write; it answers from the newest renew, with no API call."""

from __future__ import annotations

import logging
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from actuator.leader import LeaseElector, Membership

log = logging.getLogger("prewarm.leader")


class Leadership(Protocol):
    """What the service asks of its Leases: the leader's (one shard) or the shards' (ShardLoop)."""

    on_change: Callable[[bool], None] | None

    @property
    def identity(self) -> str: ...

    @property
    def shards(self) -> int: ...

    def leading(self) -> bool: ...

    def holds(self, shard: int) -> bool: ...

    def held(self) -> list[int]: ...

    def problem(self) -> str | None: ...

    def step(self) -> object: ...

    def start(self) -> None: ...

    def stop(self, *, release: bool = True) -> None: ...


def _renewing(
    step: Callable[[], object], period_s: float, stop: threading.Event, name: str
) -> threading.Thread:
    """A daemon thread running `step` every `period_s` until `stop` is set."""

    def run() -> None:
        while not stop.is_set():
            try:
                step()
            except Exception:  # a broken attempt must not end the loop: the next one may work
                log.exception("lease renew attempt failed", extra={"loop": name})
            stop.wait(period_s)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


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

    @property
    def identity(self) -> str:
        return self.elector.identity

    @property
    def shards(self) -> int:
        return 1

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def leading(self) -> bool:
        return self.elector.is_leader(self._now())

    def holds(self, shard: int) -> bool:
        return self.leading()

    def held(self) -> list[int]:
        return [0] if self.leading() else []

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
        self._thread = _renewing(self.step, self.elector.retry_period_s, self._stop, "prewarm-leader")

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; with `release`, give the Lease up so a standby takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.elector.retry_period_s + 5)
        if release and self.elector.release(self._now()):
            log.info("leadership released", extra={"identity": self.elector.identity})
        self._was = False


def shard_of(model: str, shards: int) -> int:
    """The shard a model belongs to: a stable hash of its name (the same in every process and release,
    unlike Python's hash of a str), so that every replica agrees without talking."""
    return zlib.crc32(model.encode()) % shards


def assign(shards: int, members: Sequence[str], holders: Mapping[int, str] | None = None) -> dict[int, str]:
    """Which member each shard belongs to. Each member's quota is an even share (shards // members, one
    more for the first shards % members of them, those holding most first); a shard stays with the live
    member holding it while that member is within its quota, and the rest go, in shard order, to the member
    that ranks the shard highest by rendezvous hashing (a hash of shard and member) among those still under
    theirs. Every replica with the same view (the members, the Leases' holders) agrees without talking, and
    a member joining or leaving moves only the shards it must."""
    if not members:
        return {}
    holders = holders or {}
    base, extra = divmod(shards, len(members))
    held = Counter(h for h in holders.values() if h in members)
    order = sorted(members, key=lambda m: (-held[m], m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(order)}
    out: dict[int, str] = {}
    for k in range(shards):  # kept where they are
        h = holders.get(k)
        if h in quota and quota[h] > 0:
            out[k], quota[h] = h, quota[h] - 1
    for k in range(shards):  # the rest by rank
        if k not in out:
            ranked = sorted(members, key=lambda m: (zlib.crc32(f"{k}/{m}".encode()), m), reverse=True)
            m = next(m for m in ranked if quota[m] > 0)
            out[k], quota[m] = m, quota[m] - 1
    return out


def _holder(lease: Any) -> str:
    spec = lease.spec if lease is not None else None
    return str(spec.holder_identity or "") if spec is not None else ""


class ShardLoop:
    """Several prewarm replicas sharing one fleet: models hash to `shards` shards, each with a Lease of its
    own (`<lease_name>-<k>`), and each replica holds the shards `assign` gives it among the
    live members (service replicas renewing a membership Lease each: actuator/leader.py Membership).

    Every `retry_period_s` the loop renews its membership, reads every Lease of the namespace in one list,
    renews or acquires its own shards (`assign`), releases the ones now another member's (that member takes
    them at its next attempt), and keeps watching the rest, so that a dead member's shards are taken over
    one lease duration after its last renew, not two. A shard is acted on only while its Lease is held
    (LeaseElector's renew deadline), so no model is ever acted on by two replicas. When the Leases cannot be
    listed, the loop keeps renewing what it holds and takes nothing new."""

    def __init__(
        self,
        membership: Membership,
        electors: Sequence[LeaseElector],
        clock: Callable[[], float],
        *,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.membership = membership
        self.electors = list(electors)
        self.clock = clock
        self.on_change = on_change
        self.members: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: frozenset[int] = frozenset()

    @property
    def identity(self) -> str:
        return self.membership.own.identity

    @property
    def shards(self) -> int:
        return len(self.electors)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def holds(self, shard: int) -> bool:
        return self.electors[shard].is_leader(self._now())

    def held(self) -> list[int]:
        now = self._now()
        return [k for k, e in enumerate(self.electors) if e.is_leader(now)]

    def leading(self) -> bool:
        """Whether this replica holds any shard (it acts on some models)."""
        return bool(self.held())

    def problem(self) -> str | None:
        """Why this replica cannot hold Leases at all (403 or 404), or None."""
        return self.membership.own.permanent_error or next(
            (e.permanent_error for e in self.electors if e.permanent_error), None
        )

    def step(self) -> list[int]:
        """One round; logs each shard gained or lost. Returns the shards held after it."""
        now = self._now()
        seen = self.membership.step(now)
        by_name: dict[str, Any] = {}
        owners: dict[int, str] = {}
        if seen is not None:
            self.members, leases = seen
            by_name = {
                lease.metadata.name: lease for lease in leases if lease.metadata and lease.metadata.name
            }
            holders = {k: _holder(by_name.get(e.name)) for k, e in enumerate(self.electors)}
            owners = assign(self.shards, self.members, {k: h for k, h in holders.items() if h})
        for k, e in enumerate(self.electors):
            mine = owners.get(k) == self.identity
            if mine or (seen is None and e.is_leader(now)):
                e.try_acquire(now)
            elif e.is_leader(now):
                e.release(now)  # its owner takes it at its next attempt
            elif e.name in by_name:
                e.observe(by_name[e.name], now)
        held = frozenset(self.held())
        if held != self._held:
            gained, lost = sorted(held - self._held), sorted(self._held - held)
            extra = {"identity": self.identity, "held": sorted(held), "members": len(self.members)}
            if gained:
                log.info("shards gained", extra={**extra, "shards": gained})
            if lost:
                log.warning("shards lost", extra={**extra, "shards": lost})
            if self.on_change is not None and bool(held) != bool(self._held):
                self.on_change(bool(held))
            self._held = held
        return sorted(held)

    def start(self) -> None:
        self._thread = _renewing(self.step, self.membership.own.retry_period_s, self._stop, "prewarm-shards")

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; with `release`, give every Lease up so the other members take the shards at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.membership.own.retry_period_s + 5)
        if release:
            now = self._now()
            for e in self.electors:
                e.release(now)
            self.membership.release(now)
            log.info("shards released", extra={"identity": self.identity})
        self._held = frozenset()
