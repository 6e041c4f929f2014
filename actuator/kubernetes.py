"""Raise warm replicas through the Kubernetes API (the official `kubernetes` client).

Modes, per target (a Deployment or StatefulSet):
- `hpa-floor`: patch the HorizontalPodAutoscaler's `minReplicas`, so the HPA still reacts above prewarm's
  floor. The HPA's own floor is remembered in an annotation on the HPA the first time prewarm changes it
  (restart-safe) and put back by `restore` (pause, stop).
- `keda-floor`: the same on a KEDA ScaledObject's `minReplicaCount`.
- `replicas`: the scale subresource directly, for workloads no other autoscaler targets. Refused with a clear
  error when an HPA or ScaledObject targets the workload: two writers would fight.
- `auto` picks hpa-floor, keda-floor or replicas from what targets the workload.

Writes use optimistic concurrency: a replace carries the resourceVersion it read; a 409 re-reads and tries
again. 403 and 404 are permanent for that model (RBAC or a wrong name: stop and say why); 5xx, 429 and lost
connections are transient. Every applied decision leaves a Kubernetes Event on the workload (reason = the
decision's Reason, message = its explanation) and the decision id in an annotation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from actuator.base import ActuationResult, ColdStart, Outcome, ReplicaState, Target
from actuator.errors import ActuatorError, PermanentError, TransientError
from actuator.pods import cold_start_from_pod
from planner.explain import Decision

MODES = ("auto", "hpa-floor", "keda-floor", "replicas")
ANNOTATION_DECISION = "prewarm.io/decision-id"
ANNOTATION_DESIRED = "prewarm.io/desired-replicas"
ANNOTATION_ORIGINAL_FLOOR = "prewarm.io/original-floor"
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
GPU_QUOTA_RESOURCE = "requests.nvidia.com/gpu"
EVENT_MESSAGE_MAX = 1024
REQUEST_TIMEOUT_S = 10.0  # a request unanswered this long is a transient failure (retried next tick)
# a namespace whose workloads report no change has its pods listed again after this many ticks anyway (one
# pod gone and another Ready between two ticks leaves the counts as they were)
POD_RELIST_TICKS = 10
SEEN_PODS_KEPT = 1024  # Ready pods remembered per target (the estimator keeps its own, smaller window)


log = logging.getLogger(__name__)


@dataclass
class _Listed:
    """One namespace's objects as one LIST of each kind read them at the start of a tick, or the error
    that LIST met (raised again to each target that needs it, as its own read would have been)."""

    workloads: dict[tuple[str, str], Any] = field(default_factory=dict)  # (kind, name) -> object
    hpas: list[Any] | ActuatorError | None = None
    scaled_objects: list[dict[str, Any]] | ActuatorError | None = None
    pods: list[Any] | ActuatorError | None = None
    unlisted: set[str] = field(default_factory=set)  # kinds read per target (their LIST was refused)
    failed: dict[str, ActuatorError] = field(default_factory=dict)  # kinds whose LIST failed for now
    # the lists indexed once, so that finding a model's own objects does not scan every model's: by the
    # (kind, name) an HPA or ScaledObject scales, and pods by each of their labels
    hpas_of: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    scaled_objects_of: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    pods_by_label: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    pods_unchanged: bool = False  # pods not listed this tick: none came or went since the last list

    def index(self) -> None:
        if isinstance(self.hpas, list):
            for h in self.hpas:
                self.hpas_of.setdefault(_hpa_scales(h), []).append(h)
        if isinstance(self.scaled_objects, list):
            for so in self.scaled_objects:
                self.scaled_objects_of.setdefault(_scaled_object_scales(so), []).append(so)
        if isinstance(self.pods, list):
            for pod in self.pods:
                for label in (pod.metadata.labels or {}).items():
                    self.pods_by_label.setdefault(label, []).append(pod)


def api_error(exc: Exception, what: str) -> ActuatorError:
    """A typed error naming the call and carrying the API server's own message."""
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or message
        except ValueError:
            pass
        text = f"{what}: HTTP {exc.status}: {message}"
        if exc.status in (401, 403):
            return PermanentError(f"{text} (grant it in deploy/kubernetes/base/rbac.yaml)", exc.status)
        if exc.status in (404, 422, 400):
            return PermanentError(text, exc.status)
        if exc.status == 429 or (exc.status or 0) >= 500 or exc.status == 409:
            return TransientError(text, delay_s=10.0)
        return PermanentError(text, exc.status)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return TransientError(f"{what}: the API server is unreachable ({exc})", delay_s=10.0)
    if isinstance(exc, ValueError):  # a body that is not the JSON asked for (a proxy's error page, a cut)
        return TransientError(f"{what}: the API server's answer could not be read ({exc})", delay_s=10.0)
    raise exc


def next_floor(
    before: int, annotations: dict[str, str], want: int | None, lo: int, cap: int, owner: str
) -> tuple[int, dict[str, str], str]:
    """The floor to write and the owner's annotations after it. The owner's own floor is remembered in an
    annotation the first time prewarm changes it, and `want=None` (restore) puts it back and forgets it.
    The floor stays within [lo, cap]: the owner still scales up to its own maximum."""
    ann = dict(annotations)
    original = int(ann.get(ANNOTATION_ORIGINAL_FLOOR, before))
    if want is None:
        ann.pop(ANNOTATION_ORIGINAL_FLOOR, None)
        return original, ann, ""
    target = max(lo, min(want, cap))
    ann.setdefault(ANNOTATION_ORIGINAL_FLOOR, str(original))
    return target, ann, (f" (the {owner} allows {target}; asked {want})" if target != want else "")


class KubernetesActuator:
    """Applies decisions to Deployments/StatefulSets. `modes` maps a target to its mode (default `auto`);
    `instance` names this process in its Events; `clock` gives the time written into Events."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        modes: dict[Target, str] | None = None,
        conflict_retries: int = 5,
        component: str = "prewarm",
        instance: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        for t, m in (modes or {}).items():
            if m not in MODES:
                raise ValueError(f"mode for {t}={m!r} is not one of {', '.join(MODES)}")
        self.apps = client.AppsV1Api(api)
        self.hpa = client.AutoscalingV2Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.modes = modes or {}
        self.conflict_retries = conflict_retries
        self.component = component
        self.instance = instance  # this process (its Lease identity): which replica wrote each Event
        # every request: (connect, read) seconds. The client's default is none, and an API server that
        # accepts the connection and never answers would hold the control tick forever
        self._t: dict[str, Any] = {"_request_timeout": (timeout_s, timeout_s)}
        self.clock = clock
        # pods that became Ready, per target (each model learns its T_load from its own pods only)
        self._seen: dict[Target, dict[str, ColdStart]] = {}
        # within reading(): each namespace's objects, listed once for the tick (None: every call reads)
        self._listed: dict[str, _Listed] | None = None
        # per namespace: its workloads' status when its pods were last listed, and the ticks since
        self._pods_listed: dict[str, tuple[tuple[Any, ...], int]] = {}

    # -- bulk reads for one tick -----------------------------------------------------------------------

    @contextmanager
    def reading(self, targets: Sequence[Target]) -> Iterator[None]:
        """Within the block, each target's namespace is read once: one LIST of its Deployments (and
        StatefulSets where a target is one), HPAs, ScaledObjects and pods, which current(), cold_starts()
        and apply()'s "already there" then read. Read per target, a tick cost about eight requests a model,
        three of them LISTs of every HPA in the namespace: quadratic in the models of a namespace. A write
        still reads what it replaces afresh (its resourceVersion); a LIST that RBAC refuses (a Role from
        before `list` on workloads was granted) leaves that kind read per target, as before."""
        by_ns: dict[str, set[str]] = {}
        for t in targets:
            if t.kind in ("Deployment", "StatefulSet"):
                by_ns.setdefault(t.namespace, set()).add(t.kind)
        self._listed = {ns: self._list_namespace(ns, kinds) for ns, kinds in sorted(by_ns.items())}
        try:
            yield
        finally:
            self._listed = None

    def _list_namespace(self, ns: str, kinds: set[str]) -> _Listed:
        out = _Listed()
        lists: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.list_namespaced_deployment,
            "StatefulSet": self.apps.list_namespaced_stateful_set,
        }
        for kind in sorted(kinds):
            try:
                items = lists[kind](ns, **self._t).items
            except Exception as exc:
                err = api_error(exc, f"list {kind}s in {ns}")
                if isinstance(err, PermanentError):  # refused (RBAC), or no such namespace: one by one,
                    # each target then meets its own error, or reads what its Role grants
                    log.warning("reading workloads one by one", extra={"namespace": ns, "why": str(err)})
                    out.unlisted.add(kind)
                else:
                    out.failed[kind] = err  # transient: each target fails with it, as its own read would
                continue
            out.workloads.update({(kind, w.metadata.name): w for w in items})
        try:
            out.hpas = self.hpa.list_namespaced_horizontal_pod_autoscaler(ns, **self._t).items
        except Exception as exc:
            out.hpas = api_error(exc, f"list HorizontalPodAutoscalers in {ns}")
        try:
            out.scaled_objects = self._list_scaled_objects(ns)
        except ActuatorError as exc:
            out.scaled_objects = exc
        status = _workload_status(out)
        last = self._pods_listed.get(ns)
        if status is not None and last is not None and last[0] == status and last[1] < POD_RELIST_TICKS:
            # no pod of the namespace's workloads became Ready or went since the last list: its cold starts
            # are those remembered (a pod's cold start is read from its own conditions, so one listed a
            # few ticks late is learned the same)
            out.pods_unchanged = True
            self._pods_listed[ns] = (status, last[1] + 1)
        else:
            try:
                out.pods = self.core.list_namespaced_pod(ns, **self._t).items
                self._pods_listed[ns] = (status, 0) if status is not None else ((), POD_RELIST_TICKS)
            except Exception as exc:
                out.pods = api_error(exc, f"list pods in {ns}")
        out.index()
        return out

    def _listed_in(self, ns: str) -> _Listed | None:
        return self._listed.get(ns) if self._listed is not None else None

    # -- reading -------------------------------------------------------------------------------------

    def gpu_quota(self, namespace: str, name: str, resource: str = GPU_QUOTA_RESOURCE) -> float:
        """The hard limit a namespace ResourceQuota sets on `resource` (the fleet's GPU budget)."""
        what = f"read ResourceQuota {namespace}/{name}"
        try:
            quota = self.core.read_namespaced_resource_quota(name, namespace, **self._t)
        except Exception as exc:
            raise api_error(exc, what) from None
        hard = (quota.status.hard if quota.status is not None else None) or (
            quota.spec.hard if quota.spec is not None else None
        )
        if not hard or resource not in hard:
            raise PermanentError(
                f"{what}: it sets no hard limit on {resource}; it limits "
                f"{', '.join(sorted(hard or {})) or 'nothing'}"
            )
        try:
            return float(utils.parse_quantity(hard[resource]))  # type: ignore[no-untyped-call]
        except ValueError:
            raise PermanentError(f"{what}: {resource}={hard[resource]!r} is not a quantity") from None

    def _workload(self, t: Target) -> Any:
        listed = self._listed_in(t.namespace)
        if listed is not None and t.kind in listed.failed:
            raise listed.failed[t.kind]
        if listed is not None and t.kind not in listed.unlisted:
            w = listed.workloads.get((t.kind, t.name))
            if w is not None:
                return w  # not listed: read alone below, which says what is wrong with it
        try:
            if t.kind == "Deployment":
                return self.apps.read_namespaced_deployment(t.name, t.namespace, **self._t)
            if t.kind == "StatefulSet":
                return self.apps.read_namespaced_stateful_set(t.name, t.namespace, **self._t)
        except Exception as exc:
            raise api_error(exc, f"read {t}") from exc
        raise PermanentError(f"{t}: kind must be Deployment or StatefulSet")

    def _hpas(self, t: Target) -> list[Any]:
        listed = self._listed_in(t.namespace)
        if listed is not None and listed.hpas is not None:
            if isinstance(listed.hpas, ActuatorError):
                raise listed.hpas
            return list(listed.hpas_of.get((t.kind, t.name), ()))
        try:
            items = self.hpa.list_namespaced_horizontal_pod_autoscaler(t.namespace, **self._t).items
        except Exception as exc:
            raise api_error(exc, f"list HorizontalPodAutoscalers in {t.namespace}") from exc
        return [h for h in items if _hpa_scales(h) == (t.kind, t.name)]

    def _list_scaled_objects(self, ns: str) -> list[dict[str, Any]]:
        try:
            doc = self.custom.list_namespaced_custom_object(KEDA[0], KEDA[1], ns, KEDA[2], **self._t)
        except ApiException as exc:
            if exc.status == 404:  # KEDA not installed: nothing can target the workload through it
                return []
            raise api_error(exc, f"list ScaledObjects in {ns}") from exc
        except Exception as exc:
            raise api_error(exc, f"list ScaledObjects in {ns}") from exc
        return doc.get("items", []) if isinstance(doc, dict) else []

    def _scaled_objects(self, t: Target) -> list[dict[str, Any]]:
        listed = self._listed_in(t.namespace)
        if listed is not None and listed.scaled_objects is not None:
            if isinstance(listed.scaled_objects, ActuatorError):
                raise listed.scaled_objects
            return list(listed.scaled_objects_of.get((t.kind, t.name), ()))
        return [
            so
            for so in self._list_scaled_objects(t.namespace)
            if _scaled_object_scales(so) == (t.kind, t.name)
        ]

    def mode(self, t: Target) -> str:
        """The mode in force for a target; raises PermanentError when the configured one cannot work."""
        wanted = self.modes.get(t, "auto")
        hpas = self._hpas(t)
        sos = self._scaled_objects(t)
        writers = [f"HorizontalPodAutoscaler {h.metadata.name}" for h in hpas] + [
            f"ScaledObject {s['metadata']['name']}" for s in sos
        ]
        if wanted == "replicas" and writers:
            raise PermanentError(
                f"{t}: refusing mode 'replicas' because {', '.join(writers)} also scales it "
                "(two writers would "
                "fight); use mode hpa-floor or keda-floor"
            )
        if wanted == "auto":
            return "keda-floor" if sos else "hpa-floor" if hpas else "replicas"
        if wanted == "hpa-floor" and len(hpas) != 1:
            raise PermanentError(f"{t}: mode hpa-floor needs exactly one HPA targeting it, found {len(hpas)}")
        if wanted == "keda-floor" and len(sos) != 1:
            raise PermanentError(
                f"{t}: mode keda-floor needs exactly one ScaledObject targeting it, found {len(sos)}"
            )
        return wanted

    def current(self, t: Target) -> ReplicaState:
        w = self._workload(t)
        desired = int(w.spec.replicas if w.spec.replicas is not None else 1)
        ready = int((w.status.ready_replicas if w.status else 0) or 0)
        floor: int | None = None
        hpas = self._hpas(t)
        if hpas:
            floor = hpas[0].spec.min_replicas
        else:
            sos = self._scaled_objects(t)
            if sos:
                floor = sos[0].get("spec", {}).get("minReplicaCount")
        return ReplicaState(desired=desired, ready=ready, floor=floor)

    # -- writing -------------------------------------------------------------------------------------

    def apply(self, t: Target, decision: Decision, decision_id: str) -> ActuationResult:
        want = int(decision.desired_replicas)
        already = self._already(t, want)
        if already is not None:
            return already
        return self._write(t, decision, decision_id, want)

    def _already(self, t: Target, want: int) -> ActuationResult | None:
        """apply()'s answer from the tick's lists where the workload already holds what `want` asks (most
        models, most ticks: no request at all); None where a write may be needed or the lists cannot tell,
        and the write path reads afresh and says what is wrong."""
        if self._listed_in(t.namespace) is None:
            return None
        try:
            w = self._workload(t)
            mode = self.mode(t)
            if mode == "replicas":
                if w.spec.replicas is None or int(w.spec.replicas) != want:
                    return None
                before = after = want
                note = ""
            elif mode == "hpa-floor":
                hpas = self._hpas(t)
                if len(hpas) != 1:
                    return None
                before, after, ann, note = _hpa_floor(hpas[0], want)
                if after != before or ann != (hpas[0].metadata.annotations or {}):
                    return None
            else:
                sos = self._scaled_objects(t)
                if len(sos) != 1:
                    return None
                before, after, ann, note = _keda_floor(sos[0], want)
                if after != before or ann != (sos[0]["metadata"].get("annotations") or {}):
                    return None
        except ActuatorError:
            return None
        return ActuationResult(Outcome.UNCHANGED, f"{t} already at {after} ({mode}){note}", before, after)

    def _write(self, t: Target, decision: Decision, decision_id: str, want: int) -> ActuationResult:
        try:
            w = self._workload(t)  # a vanished or misnamed workload fails here, before any floor moves
            mode = self.mode(t)
            if mode == "replicas":
                before, after, note = self._set_scale(t, want)
            elif mode == "hpa-floor":
                before, after, note = self._set_hpa_floor(t, want)
            else:
                before, after, note = self._set_keda_floor(t, want)
            if before == after:
                return ActuationResult(
                    Outcome.UNCHANGED, f"{t} already at {after} ({mode}){note}", before, after
                )
            moved = f"{t}: {mode} {before} -> {after}{note}"
            try:
                self._annotate(t, decision_id, after)
                self._event(t, w.metadata.uid, decision, decision_id, mode, before, after)
            except ActuatorError as exc:
                # the floor has moved: the record must say so, and where it is, even though what marks
                # the write on the workload (its annotation, its Event) could not be written
                return ActuationResult(
                    Outcome.FAILED,
                    f"{moved}, but recording it on the workload failed: {exc}",
                    before,
                    after,
                    permanent=isinstance(exc, PermanentError),
                    retry_after_s=exc.delay_s if isinstance(exc, TransientError) else None,
                )
            return ActuationResult(Outcome.APPLIED, moved, before, after)
        except PermanentError as exc:
            return ActuationResult(Outcome.FAILED, str(exc), permanent=True)
        except TransientError as exc:
            return ActuationResult(Outcome.FAILED, str(exc), retry_after_s=exc.delay_s)

    def restore(self, t: Target) -> ActuationResult:
        """Give the floor back to the HPA / ScaledObject as it was before prewarm (pause or stop)."""
        try:
            mode = self.mode(t)
            if mode == "hpa-floor":
                before, after, _ = self._set_hpa_floor(t, None)
            elif mode == "keda-floor":
                before, after, _ = self._set_keda_floor(t, None)
            else:
                return ActuationResult(Outcome.UNCHANGED, f"{t}: mode replicas has no floor to restore")
            return ActuationResult(
                Outcome.APPLIED, f"{t}: {mode} restored {before} -> {after}", before, after
            )
        except PermanentError as exc:
            return ActuationResult(Outcome.FAILED, str(exc), permanent=True)
        except TransientError as exc:
            return ActuationResult(Outcome.FAILED, str(exc), retry_after_s=exc.delay_s)

    def _retrying(self, what: str, attempt: Callable[[], tuple[int, int, str]]) -> tuple[int, int, str]:
        """Run read-modify-replace until it lands; a 409 means someone wrote in between: read again."""
        for _ in range(self.conflict_retries + 1):
            try:
                return attempt()
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise api_error(exc, what) from exc
            except ActuatorError:
                raise
            except Exception as exc:
                raise api_error(exc, what) from exc
        raise TransientError(
            f"{what}: still conflicting after {self.conflict_retries + 1} attempts", delay_s=5.0
        )

    def _set_scale(self, t: Target, want: int) -> tuple[int, int, str]:
        read = self.apps.read_namespaced_deployment_scale
        replace = self.apps.replace_namespaced_deployment_scale
        if t.kind == "StatefulSet":
            read = self.apps.read_namespaced_stateful_set_scale
            replace = self.apps.replace_namespaced_stateful_set_scale

        def attempt() -> tuple[int, int, str]:
            scale = read(t.name, t.namespace, **self._t)
            spec = scale.spec or client.V1ScaleSpec()
            before = int(spec.replicas or 0)
            if before != want:
                spec.replicas = want
                scale.spec = spec
                replace(t.name, t.namespace, scale, **self._t)  # carries the resourceVersion it read
            return before, want, ""

        return self._retrying(f"scale {t}", attempt)

    def _set_hpa_floor(self, t: Target, want: int | None) -> tuple[int, int, str]:
        def attempt() -> tuple[int, int, str]:
            hpas = self._hpas(t)
            if len(hpas) != 1:
                raise PermanentError(
                    f"{t}: mode hpa-floor needs exactly one HPA targeting it, found {len(hpas)}"
                )
            h: Any = hpas[0]
            if self._listed_in(t.namespace) is not None:  # from the tick's list: this one afresh, by name
                h = self.hpa.read_namespaced_horizontal_pod_autoscaler(
                    h.metadata.name, t.namespace, **self._t
                )
                if _hpa_scales(h) != (t.kind, t.name):
                    raise TransientError(f"{t}: HPA {h.metadata.name} was retargeted since the tick read it")
            before, target, ann, note = _hpa_floor(h, want)
            if target == before and ann == (h.metadata.annotations or {}):
                return before, before, note
            h.spec.min_replicas = target
            h.metadata.annotations = ann
            self.hpa.replace_namespaced_horizontal_pod_autoscaler(h.metadata.name, t.namespace, h, **self._t)
            return before, target, note

        return self._retrying(f"set minReplicas of the HPA for {t}", attempt)

    def _set_keda_floor(self, t: Target, want: int | None) -> tuple[int, int, str]:
        def attempt() -> tuple[int, int, str]:
            sos = self._scaled_objects(t)
            if len(sos) != 1:
                raise PermanentError(
                    f"{t}: mode keda-floor needs exactly one ScaledObject targeting it, found {len(sos)}"
                )
            so = sos[0]
            if self._listed_in(t.namespace) is not None:  # from the tick's list: this one afresh, by name
                name = so["metadata"]["name"]
                got = self.custom.get_namespaced_custom_object(
                    KEDA[0], KEDA[1], t.namespace, KEDA[2], name, **self._t
                )
                if not isinstance(got, dict):
                    raise TransientError(f"{t}: ScaledObject {name} read back as no object")
                so = got
                if _scaled_object_scales(so) != (t.kind, t.name):
                    raise TransientError(f"{t}: ScaledObject {name} was retargeted since the tick read it")
            spec, meta = so.setdefault("spec", {}), so["metadata"]
            before, target, ann, note = _keda_floor(so, want)
            if target == before and ann == (meta.get("annotations") or {}):
                return before, before, note
            spec["minReplicaCount"] = target
            meta["annotations"] = ann
            self.custom.replace_namespaced_custom_object(
                KEDA[0], KEDA[1], t.namespace, KEDA[2], meta["name"], so, **self._t
            )
            return before, target, note

        return self._retrying(f"set minReplicaCount of the ScaledObject for {t}", attempt)

    def _annotate(self, t: Target, decision_id: str, replicas: int) -> None:
        body = {
            "metadata": {"annotations": {ANNOTATION_DECISION: decision_id, ANNOTATION_DESIRED: str(replicas)}}
        }
        try:
            if t.kind == "StatefulSet":
                self.apps.patch_namespaced_stateful_set(t.name, t.namespace, body, **self._t)
            else:
                self.apps.patch_namespaced_deployment(t.name, t.namespace, body, **self._t)
        except Exception as exc:
            raise api_error(exc, f"annotate {t}") from exc

    def _event(
        self,
        t: Target,
        uid: str | None,
        decision: Decision,
        decision_id: str,
        mode: str,
        before: int,
        after: int,
    ) -> None:
        now = self.clock()
        message = f"{mode} {before} -> {after}: {decision.explanation()}"[:EVENT_MESSAGE_MAX]
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{t.name}.prewarm-",
                namespace=t.namespace,
                annotations={ANNOTATION_DECISION: decision_id},
            ),
            # with the uid, `kubectl describe` lists the Event under the workload (it selects by uid)
            involved_object=client.V1ObjectReference(
                api_version="apps/v1", kind=t.kind, name=t.name, namespace=t.namespace, uid=uid
            ),
            reason=str(decision.reason),
            message=message,
            type="Normal",
            source=client.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=self.instance or self.component,
            action="Scale",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(t.namespace, event, **self._t)
        except Exception as exc:
            raise api_error(exc, f"record an Event on {t}") from exc

    # -- cold starts ---------------------------------------------------------------------------------

    def _match_labels(self, t: Target) -> dict[str, str]:
        w = self._workload(t)
        labels: dict[str, str] = (w.spec.selector.match_labels or {}) if w.spec.selector else {}
        if not labels:
            raise PermanentError(f"{t}: its selector has no matchLabels to find its pods by")
        return labels

    def _selector(self, t: Target) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self._match_labels(t).items()))

    def cold_starts(self, t: Target) -> list[ColdStart]:
        """Every pod of the target that has become Ready, as a cold start (pods listed once, kept by uid)."""
        listed = self._listed_in(t.namespace)
        if listed is not None and listed.pods_unchanged:
            self._match_labels(t)  # a target without a selector to find its pods by still says so
            return sorted(self._seen.get(t, {}).values(), key=lambda c: c.ready_s)
        if listed is not None and listed.pods is not None:
            if isinstance(listed.pods, ActuatorError):
                raise listed.pods
            labels = self._match_labels(t).items()
            some = min(labels)  # any one of the selector's labels narrows the pods to look at
            pods = [
                p for p in listed.pods_by_label.get(some, ()) if labels <= (p.metadata.labels or {}).items()
            ]
        else:
            selector = self._selector(t)
            try:
                pods = self.core.list_namespaced_pod(t.namespace, label_selector=selector, **self._t).items
            except Exception as exc:
                raise api_error(exc, f"list pods of {t}") from exc
        for p in pods:
            self._remember(t, p)
        return sorted(self._seen.get(t, {}).values(), key=lambda c: c.ready_s)

    def watch_cold_starts(self, t: Target, timeout_s: int = 60, resource_version: str | None = None) -> str:
        """Follow the target's pods until the API server ends the watch; returns the resourceVersion to resume
        from. Cold starts land in `cold_starts`."""
        from kubernetes import watch

        selector = self._selector(t)
        w = watch.Watch()  # type: ignore[no-untyped-call]
        last = resource_version or ""
        try:
            for ev in w.stream(  # type: ignore[no-untyped-call]
                self.core.list_namespaced_pod,
                t.namespace,
                label_selector=selector,
                resource_version=resource_version,
                timeout_seconds=timeout_s,
            ):
                pod = ev["object"]
                last = pod.metadata.resource_version or last
                if ev["type"] in ("ADDED", "MODIFIED"):
                    self._remember(t, pod)
        except Exception as exc:
            raise api_error(exc, f"watch pods of {t}") from exc
        finally:
            w.stop()  # type: ignore[no-untyped-call]
        return last

    def _remember(self, t: Target, pod: Any) -> None:
        seen = self._seen.setdefault(t, {})
        uid = pod.metadata.uid
        if uid in seen:
            return
        c = cold_start_from_pod(pod)
        if c is not None:
            seen[uid] = c
            if len(seen) > SEEN_PODS_KEPT:  # a workload's recent pods are what its T_load is learned from
                del seen[next(iter(seen))]


def _hpa_scales(h: Any) -> tuple[str, str]:
    """(kind, name) of the workload an HPA scales."""
    return h.spec.scale_target_ref.kind, h.spec.scale_target_ref.name


def _scaled_object_scales(so: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload a ScaledObject scales (a Deployment where its ref names no kind)."""
    ref = so.get("spec", {}).get("scaleTargetRef", {})
    return ref.get("kind", "Deployment"), ref.get("name")


def _workload_status(listed: _Listed) -> tuple[Any, ...] | None:
    """What the namespace's workload controllers report of their pods (replicas, ready, updated, available,
    the generation observed), for every workload listed; None where a kind could not be listed."""
    if listed.unlisted or listed.failed:
        return None
    return tuple(
        sorted(
            (
                kind,
                name,
                getattr(w.status, "replicas", None),
                getattr(w.status, "ready_replicas", None),
                getattr(w.status, "updated_replicas", None),
                getattr(w.status, "available_replicas", None),
                getattr(w.status, "observed_generation", None),
            )
            for (kind, name), w in listed.workloads.items()
        )
    )


def _hpa_floor(h: Any, want: int | None) -> tuple[int, int, dict[str, str], str]:
    """(floor now, floor to write, the HPA's annotations after it, a note) for `want` on HPA `h`."""
    before = int(h.spec.min_replicas or 1)
    # an HPA's floor is 1..maxReplicas
    target, ann, note = next_floor(
        before, h.metadata.annotations or {}, want, 1, int(h.spec.max_replicas), "HPA"
    )
    if want == 0:  # the planner's zero (min_replicas 0) meets what an HPA can hold
        note = (
            " (an HPA cannot hold 0 replicas without its alpha HPAScaleToZero feature gate: floor 1; "
            "asked 0. Scale to zero through mode replicas or a KEDA ScaledObject)"
        )
    return before, target, ann, note


def _keda_floor(so: dict[str, Any], want: int | None) -> tuple[int, int, dict[str, str], str]:
    """The same for a KEDA ScaledObject's minReplicaCount (0..maxReplicaCount)."""
    spec, meta = so.get("spec", {}), so["metadata"]
    before = int(spec.get("minReplicaCount", 0))
    cap = int(spec.get("maxReplicaCount", 100))  # KEDA's default maximum
    target, ann, note = next_floor(before, meta.get("annotations") or {}, want, 0, cap, "ScaledObject")
    return before, target, ann, note
