"""Leader election with a coordination.k8s.io/v1 Lease, so that several prewarm replicas never act twice.

The usual client-go protocol: the holder renews `renewTime` every tick; another instance takes the Lease
over only when `renewTime + leaseDurationSeconds` has passed. Every write is a replace carrying the
resourceVersion that was read, so two instances racing for an expired Lease cannot both win (one gets 409).
Time is passed in, so failover is tested by stepping a clock value, not by waiting.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from actuator.errors import ActuatorError
from actuator.kubernetes import api_error


class LeaseElector:
    def __init__(
        self, api: client.ApiClient, *, namespace: str, name: str, identity: str, lease_duration_s: int = 15
    ) -> None:
        if lease_duration_s < 1:
            raise ValueError(f"lease_duration_s={lease_duration_s} must be >= 1")
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration_s = lease_duration_s
        self.last_error: str | None = None

    def _spec(self, now: datetime, transitions: int, acquired: datetime | None) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.duration_s,
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def try_acquire(self, now: datetime) -> bool:
        """True when this instance holds the Lease after the call (acquired, renewed or taken over)."""
        try:
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                    spec=self._spec(now, 0, None),
                )
                try:
                    self.api.create_namespaced_lease(self.namespace, body)
                except ApiException as exc2:
                    if exc2.status == 409:  # another instance created it first
                        return False
                    raise
                self.last_error = None
                return True
            spec = lease.spec or client.V1LeaseSpec()
            holder = spec.holder_identity
            renewed = spec.renew_time or spec.acquire_time
            expired = (
                renewed is None
                or renewed + timedelta(seconds=spec.lease_duration_seconds or self.duration_s) < now
            )
            if holder == self.identity:
                lease.spec = self._spec(now, spec.lease_transitions or 0, spec.acquire_time)
            elif expired or not holder:
                lease.spec = self._spec(now, (spec.lease_transitions or 0) + 1, None)
            else:
                return False
            try:
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            except ApiException as exc:
                if exc.status == 409:  # someone renewed or took it over in between
                    return False
                raise
            self.last_error = None
            return True
        except ActuatorError:
            raise
        except Exception as exc:
            err = api_error(exc, f"Lease {self.namespace}/{self.name}")
            self.last_error = str(err)
            return False

    def holder(self) -> str | None:
        try:
            spec = self.api.read_namespaced_lease(self.name, self.namespace).spec
            return spec.holder_identity if spec else None
        except ApiException:
            return None
