"""Leader election with a coordination.k8s.io/v1 Lease, so that several prewarm replicas never act twice.

The protocol is client-go's (k8s.io/client-go/tools/leaderelection), with time passed in:

- The holder renews the Lease every `retry_period_s` on its own schedule, whatever the control tick does
  (renewing only when a tick wrote let a healthy leader lose its Lease between ticks).
- It acts only while its last successful renew is younger than `renew_deadline_s`, counted from the moment
  the renew *started* (the server may have applied it at any instant of the request).
- Another instance takes the Lease over only when it has watched the same record (holder, renewTime,
  resourceVersion) unchanged for `lease_duration_s` of its *own* time. Expiry is never judged by comparing
  the holder's written renewTime with our clock, so clock skew between hosts cannot make two leaders.
- Because `renew_deadline_s < lease_duration_s`, the old holder stops acting at least
  `lease_duration_s - renew_deadline_s` before anyone else may start: at every instant at most one instance
  believes it leads.
- Every write is a replace carrying the resourceVersion read, so two instances racing for an expired Lease
  cannot both win (one gets 409).
- `release` (a clean shutdown) empties the holder, so a standby takes over at its next attempt instead of
  after a whole lease duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from actuator.errors import ActuatorError, PermanentError
from actuator.kubernetes import REQUEST_TIMEOUT_S, api_error

JITTER_FACTOR = 1.2  # client-go's: the renew deadline must leave room for a jittered retry


def check_timing(lease_duration_s: float, renew_deadline_s: float, retry_period_s: float) -> str:
    """Why these timings cannot keep one leader, or "" when they can (client-go's rules)."""
    if retry_period_s <= 0:
        return f"retry_period_s={retry_period_s:g} must be > 0"
    if renew_deadline_s <= JITTER_FACTOR * retry_period_s:
        return (
            f"renew_deadline_s={renew_deadline_s:g} must be > {JITTER_FACTOR:g} x retry_period_s "
            f"({JITTER_FACTOR * retry_period_s:g}): a leader must get more than one renew attempt in"
        )
    if lease_duration_s <= renew_deadline_s:
        return (
            f"lease_duration_s={lease_duration_s:g} must be > renew_deadline_s={renew_deadline_s:g}: "
            "a leader must stop acting before anyone else may take its Lease over"
        )
    return ""


def micro_time(t: datetime) -> datetime:
    """`t` as a Lease's MicroTime can carry it. The client writes a datetime with isoformat(), which drops
    the fraction at a whole second, and the API server parses a MicroTime only with its six digits (400:
    no Lease created or renewed at that instant); a dict body does not help, the client coerces it into
    its model first. One microsecond later is the same instant for a Lease."""
    return t if t.microsecond else t.replace(microsecond=1)


def process_identity(pod_name: str | None = None) -> str:
    """A holder identity unique to this process: the pod (or host) name, the pid and a random suffix. Two
    processes on one host, or a restarted container in the same pod, never share it."""
    base = pod_name or os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class _Observed:
    """The Lease record as last read, and when (our time) it was first seen in that form."""

    holder: str
    renew_time: datetime | None
    resource_version: str
    duration_s: float
    since: datetime

    @classmethod
    def of(cls, lease: client.V1Lease, now: datetime, old: _Observed | None, duration_s: float) -> _Observed:
        """The Lease as read at `now`; `old` (the record seen before, with the time it was first seen)
        when it is unchanged."""
        spec = lease.spec or client.V1LeaseSpec()
        seen = cls(
            holder=spec.holder_identity or "",
            renew_time=spec.renew_time,
            resource_version=(lease.metadata.resource_version if lease.metadata else None) or "",
            duration_s=float(spec.lease_duration_seconds or duration_s),
            since=now,
        )
        if old is not None and (old.holder, old.renew_time, old.resource_version) == (
            seen.holder,
            seen.renew_time,
            seen.resource_version,
        ):
            return old  # unchanged: keep the time we first saw it
        return seen


class LeaseElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 15,
        renew_deadline_s: float = 10,
        retry_period_s: float = 2,
        timeout_s: float | None = None,
    ) -> None:
        problem = check_timing(lease_duration_s, renew_deadline_s, retry_period_s)
        if problem:
            raise ValueError(problem)
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration_s, self.deadline_s, self.retry_period_s = (
            lease_duration_s,
            renew_deadline_s,
            retry_period_s,
        )
        self.last_error: str | None = None
        # set while the Lease cannot be had for a reason that will not pass by itself (403: the Role lacks a
        # verb; 404: no such namespace): every decision says so, rather than "another instance leads"
        self.permanent_error: str | None = None
        # a renew must end well inside the renew deadline: by default a third of it, at most 10 s
        t = timeout_s if timeout_s is not None else min(REQUEST_TIMEOUT_S, renew_deadline_s / 3)
        self._t: dict[str, Any] = {"_request_timeout": (t, t)}
        self._renewed_at: datetime | None = None  # start of our newest successful write
        self._observed: _Observed | None = None

    # -- asking --------------------------------------------------------------------------------------

    def is_leader(self, now: datetime) -> bool:
        """Whether this instance may act now: its newest renew started under `renew_deadline_s` ago."""
        return self._renewed_at is not None and now - self._renewed_at < timedelta(seconds=self.deadline_s)

    def holder(self) -> str | None:
        try:
            spec = self.api.read_namespaced_lease(self.name, self.namespace, **self._t).spec
            return spec.holder_identity if spec else None
        except ApiException:
            return None

    # -- one attempt ---------------------------------------------------------------------------------

    def _spec(
        self, now: datetime, transitions: int, acquired: datetime | None, holder: str | None = None
    ) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity if holder is None else holder,
            lease_duration_seconds=max(1, round(self.duration_s)) if holder is None else 1,
            acquire_time=micro_time(acquired or now),
            renew_time=micro_time(now),
            lease_transitions=transitions,
        )

    def _observe(self, lease: client.V1Lease, now: datetime) -> _Observed:
        self._observed = _Observed.of(lease, now, self._observed, self.duration_s)
        return self._observed

    def observe(self, lease: client.V1Lease, now: datetime) -> None:
        """Note the Lease as read elsewhere (one list for many Leases), so that the time it has been seen
        unchanged keeps running while this instance does not try to hold it."""
        self._observe(lease, now)

    def try_acquire(self, now: datetime) -> bool:
        """One attempt to acquire or renew, started at `now`. True when this instance holds the Lease after
        the call; a failed renew leaves `is_leader` to lapse at the renew deadline."""
        try:
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace, **self._t)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                    spec=self._spec(now, 0, None),
                )
                try:
                    self.api.create_namespaced_lease(self.namespace, body, **self._t)
                except ApiException as exc2:
                    if exc2.status == 409:  # another instance created it first
                        return False
                    raise
                self._won(now)
                return True
            seen = self._observe(lease, now)
            spec = lease.spec or client.V1LeaseSpec()
            if seen.holder == self.identity:
                lease.spec = self._spec(now, spec.lease_transitions or 0, spec.acquire_time)
            elif not seen.holder or now - seen.since >= timedelta(seconds=seen.duration_s):
                lease.spec = self._spec(now, (spec.lease_transitions or 0) + 1, None)
            else:
                self._renewed_at = None  # someone else holds it: we certainly do not
                self.last_error = self.permanent_error = None
                return False
            try:
                self.api.replace_namespaced_lease(self.name, self.namespace, lease, **self._t)
            except ApiException as exc:
                if exc.status == 409:  # someone renewed or took it over in between
                    return False
                raise
            self._won(now)
            return True
        except ActuatorError:
            raise
        except Exception as exc:
            err = api_error(exc, f"Lease {self.namespace}/{self.name}")
            self.last_error = str(err)
            self.permanent_error = str(err) if isinstance(err, PermanentError) else None
            return False

    def _won(self, now: datetime) -> None:
        self._renewed_at, self.last_error, self.permanent_error = now, None, None

    def release(self, now: datetime) -> bool:
        """Give the Lease up on a clean shutdown (only if we hold it): the holder is emptied, so a standby
        takes over at its next attempt. True when released."""
        if self._renewed_at is None:
            return False
        self._renewed_at = None  # stop acting first, then let go
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, **self._t)
            spec = lease.spec or client.V1LeaseSpec()
            if spec.holder_identity != self.identity:
                return False
            lease.spec = self._spec(now, spec.lease_transitions or 0, now, holder="")
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, **self._t)
            return True
        except Exception as exc:
            self.last_error = str(api_error(exc, f"release Lease {self.namespace}/{self.name}"))
            return False


def member_lease_name(prefix: str, identity: str) -> str:
    """A replica's membership Lease: a valid object name whatever the identity holds (`_` is not one)."""
    return f"{prefix}-member-{hashlib.sha1(identity.encode()).hexdigest()[:12]}"


class Membership:
    """Which prewarm replicas are alive: each renews a Lease of its own (`<prefix>-member-<hash>`) and reads
    the others'. A member is alive while its Lease's record changed within its lease duration of *our* time
    (as LeaseElector judges expiry: never by comparing its renewTime with our clock); one first seen counts
    as alive until a duration has passed without a change. A member Lease unchanged for `GC_DURATIONS`
    durations (a replica gone for good) is deleted."""

    GC_DURATIONS = 20

    def __init__(self, elector: LeaseElector, prefix: str) -> None:
        self.own = elector
        self.prefix = f"{prefix}-member-"
        self._seen: dict[str, _Observed] = {}
        self.last_error: str | None = None

    def step(self, now: datetime) -> tuple[tuple[str, ...], list[client.V1Lease]] | None:
        """Renew our Lease and read every Lease of the namespace (one list): the live members' identities,
        sorted, and the Leases read (the shard Leases' observers use them); None when they cannot be read."""
        e = self.own
        e.try_acquire(now)
        try:
            leases = e.api.list_namespaced_lease(e.namespace, **e._t).items or []
        except Exception as exc:
            self.last_error = str(api_error(exc, f"list Leases in {e.namespace}"))
            return None
        self.last_error = None
        alive = {e.identity} if e.is_leader(now) else set()
        names = set()
        for lease in leases:
            name = (lease.metadata.name if lease.metadata else None) or ""
            if not name.startswith(self.prefix) or name == e.name:
                continue
            names.add(name)
            seen = self._seen[name] = _Observed.of(lease, now, self._seen.get(name), e.duration_s)
            quiet = now - seen.since
            if seen.holder and quiet < timedelta(seconds=seen.duration_s):
                alive.add(seen.holder)
            elif quiet >= timedelta(seconds=self.GC_DURATIONS * seen.duration_s):
                with contextlib.suppress(Exception):  # another replica may have deleted it first
                    e.api.delete_namespaced_lease(name, e.namespace, **e._t)
        self._seen = {k: v for k, v in self._seen.items() if k in names}
        return tuple(sorted(alive)), leases

    def release(self, now: datetime) -> bool:
        return self.own.release(now)
