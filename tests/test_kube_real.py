"""The Kubernetes actuator against a REAL control plane: kube-apiserver, kube-controller-manager (with the
real HPA, ReplicaSet, ResourceQuota and ServiceAccount controllers), kube-scheduler, etcd, and kwok playing
the kubelets (tests/kube_cluster.py, scripts/control-plane).

Why a real one: a fake answers the way its author understood the protocol. Here the answers are the API
server's own: its validation, its 409s on a stale resourceVersion, its RBAC denials word for word, the status
subresources, the real HPA controller writing replicas back, KEDA's published ScaledObject schema, and pods
whose conditions a scheduler and a (simulated) kubelet set over time. Every behaviour a real server can show
is tested here (and in tests/test_kube_overlays.py, tests/test_kube_helm.py, tests/test_gpu_quota.py and
tests/test_service_config.py); tests/test_kubernetes_actuator.py keeps the fake API server only for what a
real one cannot be made to do on purpose (5xx and 429 answers, dropped connections, malformed bodies). What
prewarm sent is read at its client's transport (RequestLog), never from a fake's log. Each test takes a
namespace of its own, so the tests share one cluster across the pytest-xdist workers.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from actuator.base import ColdStart, Outcome, ReplicaState, Target
from actuator.errors import PermanentError
from actuator.kubernetes import (
    ANNOTATION_DECISION,
    ANNOTATION_DESIRED,
    ANNOTATION_ORIGINAL_FLOOR,
    KEDA,
    POD_RELIST_TICKS,
    KubernetesActuator,
)
from actuator.lead_time import LeadTimeEstimator
from actuator.leader import LeaseElector, process_identity
from actuator.safety import GuardedActuator, Mode, Rails
from planner.explain import Decision, Reason, Step
from service.budget import QuotaBudget
from service.leadership import LeaderLoop
from tests.kube_cluster import KubeCluster, wait_until

ROOT = Path(__file__).resolve().parent.parent
RBAC_YAML = ROOT / "deploy" / "kubernetes" / "base" / "rbac.yaml"
HPA_DEADLINE_S = 90.0  # the HPA controller syncs every 5 s here; generous for a loaded 2-core CI machine


# -- objects ------------------------------------------------------------------------------------------------


def deployment(
    name: str, replicas: int, pod_annotations: dict[str, str] | None = None
) -> client.V1Deployment:
    """A Deployment kwok will run: one container (never pulled: no kubelet), stage delays from annotations."""
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations=pod_annotations),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="model", image="registry.invalid/model-server:1")],
                    termination_grace_period_seconds=0,
                ),
            ),
        ),
    )


def hpa(name: str, lo: int, hi: int) -> client.V2HorizontalPodAutoscaler:
    """An autoscaling/v2 HPA on the Deployment `name` (CPU target: no metrics server here, so the controller
    only enforces the bounds, which is what prewarm's floor relies on)."""
    return client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name=name
            ),
            min_replicas=lo,
            max_replicas=hi,
            metrics=[
                client.V2MetricSpec(
                    type="Resource",
                    resource=client.V2ResourceMetricSource(
                        name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=70)
                    ),
                )
            ],
        ),
    )


def scaled_object(name: str, lo: int, hi: int) -> dict[str, Any]:
    """A KEDA ScaledObject on the Deployment `name` (a CPU trigger: no KEDA operator runs here, so only its
    bounds matter, which is what prewarm's floor writes)."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": lo,
            "maxReplicaCount": hi,
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}],
        },
    }


def decision(desired: int, reason: Reason = Reason.FORECAST_DEMAND) -> Decision:
    return Decision(
        at_s=time.time(),
        valid=True,
        current_replicas=2,
        raw_replicas=desired,
        desired_replicas=desired,
        reason=reason,
        steps=(Step("demand", None, desired, reason, "forecast p90 of 150 req/s at 09:05"),),
    )


class Kube:
    """Admin views of one test's namespace."""

    def __init__(self, cluster: KubeCluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        api = cluster.api()
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.hpa = client.AutoscalingV2Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.coord = client.CoordinationV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)

    def deploy(self, name: str, replicas: int, pod_annotations: dict[str, str] | None = None) -> Target:
        self.apps.create_namespaced_deployment(self.ns, deployment(name, replicas, pod_annotations))
        return Target("Deployment", self.ns, name)

    def replicas(self, name: str) -> int:
        return int(self.apps.read_namespaced_deployment(name, self.ns).spec.replicas)

    def ready(self, name: str) -> int:
        return int(self.apps.read_namespaced_deployment_status(name, self.ns).status.ready_replicas or 0)

    def hpa_floor(self, name: str) -> int:
        return int(self.hpa.read_namespaced_horizontal_pod_autoscaler(name, self.ns).spec.min_replicas)

    def prewarm_events(self, name: str) -> list[client.CoreV1Event]:
        """Events on the Deployment `name` that prewarm wrote (the Deployment controller writes its own)."""
        sel = f"involvedObject.kind=Deployment,involvedObject.name={name}"
        items = self.core.list_namespaced_event(self.ns, field_selector=sel).items
        return [e for e in items if e.source and e.source.component == "prewarm"]


@pytest.fixture
def kube(kube_cluster: KubeCluster, kube_ns: str) -> Kube:
    return Kube(kube_cluster, kube_ns)


WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class RequestLog:
    """Every request one ApiClient sends, with the status the server answered (0: no answer), recorded at
    the client's transport: what really reached the server, whatever the code above it reports."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)

    @classmethod
    def attach(cls, api: client.ApiClient) -> RequestLog:
        log = cls()
        send = api.rest_client.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            path = urlsplit(url).path
            try:
                response = send(method, url, *args, **kwargs)
            except ApiException as exc:
                log.calls.append((method, path, exc.status or 0))
                raise
            except Exception:
                log.calls.append((method, path, 0))
                raise
            log.calls.append((method, path, int(response.status)))
            return response

        api.rest_client.request = request  # type: ignore[method-assign]
        return log

    def writes(self) -> list[tuple[str, str, int]]:
        return [c for c in self.calls if c[0] in WRITES]

    def written(self) -> set[tuple[str, str]]:
        """(method, resource) of every write: `events`, `deployments/scale`, ..."""
        return {(m, resource_of(p)) for m, p, _ in self.writes()}

    def answered(self, *statuses: int) -> list[tuple[str, str, int]]:
        return [c for c in self.calls if c[2] in statuses]


def resource_of(path: str) -> str:
    """The resource a namespaced API path names: .../namespaces/NS/PLURAL[/NAME[/SUBRESOURCE]]."""
    parts = path.strip("/").split("/")
    i = parts.index("namespaces") + 2
    return "/".join([parts[i], *parts[i + 2 : i + 3]])


# -- replicas mode: the scale subresource ----------------------------------------------------------------


def test_replicas_mode_sets_the_scale_subresource_and_leaves_an_event_on_the_deployment(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    solo = kube.deploy("solo", 1)
    act = KubernetesActuator(kube_cluster.api(), modes={solo: "replicas"})
    result = act.apply(solo, decision(3), "d-1")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 1, 3), result.message
    dep = kube.apps.read_namespaced_deployment("solo", kube.ns)
    assert dep.spec.replicas == 3
    assert dep.metadata.annotations[ANNOTATION_DECISION] == "d-1"
    assert dep.metadata.annotations[ANNOTATION_DESIRED] == "3"
    (event,) = kube.prewarm_events("solo")
    assert event.reason == "ForecastDemand" and event.type == "Normal"
    ref = event.involved_object
    assert (ref.api_version, ref.kind, ref.name, ref.namespace) == ("apps/v1", "Deployment", "solo", kube.ns)
    assert event.message.startswith("replicas 1 -> 3: 3 replicas: forecast p90 of 150 req/s")
    assert event.metadata.annotations[ANNOTATION_DECISION] == "d-1"
    # the real ReplicaSet controller, scheduler and kwok bring the three replicas up
    wait_until("3 ready replicas of solo", lambda: kube.ready("solo") == 3)
    assert act.current(solo) == ReplicaState(desired=3, ready=3, floor=None)
    # the same decision again changes nothing and leaves no second Event
    again = act.apply(solo, decision(3), "d-2")
    assert again.outcome is Outcome.UNCHANGED, again.message
    assert len(kube.prewarm_events("solo")) == 1


def test_a_statefulset_is_scaled_through_its_own_scale_subresource(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    labels = {"app": "kv"}
    kube.apps.create_namespaced_stateful_set(
        kube.ns,
        client.V1StatefulSet(
            metadata=client.V1ObjectMeta(name="kv"),
            spec=client.V1StatefulSetSpec(
                replicas=1,
                service_name="kv",
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="kv", image="registry.invalid/kv:1")]
                    ),
                ),
            ),
        ),
    )
    kv = Target("StatefulSet", kube.ns, "kv")
    act = KubernetesActuator(kube_cluster.api())
    result = act.apply(kv, decision(3), "d-7")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 1, 3), result.message
    sts = kube.apps.read_namespaced_stateful_set("kv", kube.ns)
    assert sts.spec.replicas == 3 and sts.metadata.annotations[ANNOTATION_DECISION] == "d-7"
    sel = "involvedObject.kind=StatefulSet,involvedObject.name=kv"
    events = [
        e
        for e in kube.core.list_namespaced_event(kube.ns, field_selector=sel).items
        if e.source.component == "prewarm"
    ]
    assert [e.involved_object.api_version for e in events] == ["apps/v1"]
    # the StatefulSet controller starts its pods one at a time, each only once the one before is Ready
    wait_until(
        "kv-0..kv-2 Ready",
        lambda: (
            (kube.apps.read_namespaced_stateful_set_status("kv", kube.ns).status.ready_replicas or 0) == 3
        ),
    )


def test_replicas_mode_is_refused_where_a_real_hpa_also_scales_the_deployment(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    result = KubernetesActuator(kube_cluster.api(), modes={llm: "replicas"}).apply(llm, decision(3), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True)
    assert "refusing mode 'replicas' because HorizontalPodAutoscaler llm also scales it" in result.message
    assert kube.replicas("llm") == 2


def test_an_invalid_replica_count_gets_the_servers_own_422(kube_cluster: KubeCluster, kube: Kube) -> None:
    solo = kube.deploy("solo", 1)
    result = KubernetesActuator(kube_cluster.api(), modes={solo: "replicas"}).apply(solo, decision(-1), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True), result.message
    assert "HTTP 422" in result.message and "spec.replicas" in result.message
    assert kube.replicas("solo") == 1


# -- hpa-floor: a real HPA, and the real HPA controller ---------------------------------------------------


def test_hpa_floor_raises_min_replicas_and_the_real_hpa_controller_holds_the_deployment_there(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    api = kube_cluster.api()
    sent = RequestLog.attach(api)
    act = KubernetesActuator(api)
    assert act.mode(llm) == "hpa-floor"
    result = act.apply(llm, decision(7), "d-42")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 2, 7), result.message
    h = kube.hpa.read_namespaced_horizontal_pod_autoscaler("llm", kube.ns)
    assert h.spec.min_replicas == 7 and h.metadata.annotations[ANNOTATION_ORIGINAL_FLOOR] == "2"
    dep = kube.apps.read_namespaced_deployment("llm", kube.ns)
    assert dep.metadata.annotations[ANNOTATION_DECISION] == "d-42"
    (event,) = kube.prewarm_events("llm")
    assert event.reason == "ForecastDemand"
    assert event.message == "hpa-floor 2 -> 7: 7 replicas: forecast p90 of 150 req/s at 09:05"
    # with the workload's uid, `kubectl describe deploy llm` lists the Event (it selects Events by uid)
    ref = event.involved_object
    assert (ref.kind, ref.name, ref.uid) == ("Deployment", "llm", dep.metadata.uid)
    # the same decision again changes nothing and leaves no second Event
    assert act.apply(llm, decision(7), "d-43").outcome is Outcome.UNCHANGED
    assert len(kube.prewarm_events("llm")) == 1
    # what prewarm wrote: the HPA, the Deployment's annotations and the Event; never replicas
    assert sent.written() == {
        ("PUT", "horizontalpodautoscalers"),
        ("PATCH", "deployments"),
        ("POST", "events"),
    }, sent.writes()
    # prewarm never writes replicas in this mode: the HPA controller does, up to the new floor ...
    wait_until(
        "the HPA controller to scale llm to its floor 7", lambda: kube.replicas("llm") == 7, HPA_DEADLINE_S
    )
    wait_until("7 ready replicas of llm", lambda: kube.ready("llm") == 7)
    assert act.current(llm) == ReplicaState(desired=7, ready=7, floor=7)
    # ... and holds it there: someone scaling the Deployment below the floor is undone by the controller
    kube.apps.patch_namespaced_deployment_scale("llm", kube.ns, {"spec": {"replicas": 3}})
    wait_until("the HPA controller to restore 7 replicas", lambda: kube.replicas("llm") == 7, HPA_DEADLINE_S)
    # restore gives the HPA its own floor back and forgets the remembered one
    back = act.restore(llm)
    assert (back.outcome, back.before, back.after) == (Outcome.APPLIED, 7, 2), back.message
    h = kube.hpa.read_namespaced_horizontal_pod_autoscaler("llm", kube.ns)
    assert h.spec.min_replicas == 2
    assert ANNOTATION_ORIGINAL_FLOOR not in (h.metadata.annotations or {})
    # the replicas were the HPA controller's writes, through the scale subresource
    scale_writers = {
        m.manager
        for m in kube.apps.read_namespaced_deployment("llm", kube.ns).metadata.managed_fields
        if m.subresource == "scale"
    }
    assert scale_writers <= {"kube-controller-manager"}, scale_writers


def test_restore_after_several_floors_gives_back_the_hpas_own_floor(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """The floor the HPA had before prewarm first moved it is remembered on the HPA (restart-safe), not the
    floor before the newest decision."""
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    act = KubernetesActuator(kube_cluster.api())
    assert act.apply(llm, decision(9), "d-1").outcome is Outcome.APPLIED
    assert act.apply(llm, decision(4), "d-2").after == 4
    # a restarted prewarm (a new actuator, nothing in memory) gives back the HPA's own floor
    result = KubernetesActuator(kube_cluster.api()).restore(llm)
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 4, 2), result.message
    h = kube.hpa.read_namespaced_horizontal_pod_autoscaler("llm", kube.ns)
    assert h.spec.min_replicas == 2
    assert ANNOTATION_ORIGINAL_FLOOR not in (h.metadata.annotations or {})


# -- the rails: nothing reaches the server that they hold back --------------------------------------------


@pytest.mark.parametrize(
    ("rails", "kill", "words"),
    [
        pytest.param(Rails(mode=Mode.SHADOW), False, "shadow mode: would set 5", id="shadow"),
        pytest.param(Rails(mode=Mode.ACTIVE, paused=True), False, "is paused", id="paused"),
        pytest.param(Rails(mode=Mode.ACTIVE), True, "kill switch on", id="kill-switch"),
    ],
)
def test_shadow_pause_and_the_kill_switch_send_no_write_but_say_what_they_would_do(
    kube_cluster: KubeCluster, kube: Kube, rails: Rails, kill: bool, words: str
) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    api = kube_cluster.api()
    sent = RequestLog.attach(api)
    guarded = GuardedActuator(KubernetesActuator(api), kill_switch=kill, rails={llm: rails})
    result = guarded.apply(llm, decision(5), "d-1")
    assert result.outcome is Outcome.SKIPPED and words in result.message
    assert sent.writes() == []
    assert kube.hpa_floor("llm") == 2 and not kube.prewarm_events("llm")


def test_at_most_the_configured_replicas_are_added_per_tick(kube_cluster: KubeCluster, kube: Kube) -> None:
    solo = kube.deploy("solo", 1)
    guarded = GuardedActuator(
        KubernetesActuator(kube_cluster.api(), modes={solo: "replicas"}),
        rails={solo: Rails(mode=Mode.ACTIVE, max_added_per_tick=2)},
    )
    result = guarded.apply(solo, decision(9), "d-1")
    assert (result.outcome, result.after) == (Outcome.APPLIED, 3), result.message
    assert "at most 2 added per tick; asked 9" in result.message
    assert kube.replicas("solo") == 3


def test_the_hpa_floor_is_capped_at_the_real_hpas_max_replicas(kube_cluster: KubeCluster, kube: Kube) -> None:
    llm = kube.deploy("llm", 1)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 1, 4))
    result = KubernetesActuator(kube_cluster.api()).apply(llm, decision(50), "d-1")
    assert (result.outcome, result.after) == (Outcome.APPLIED, 4), result.message
    assert "the HPA allows 4; asked 50" in result.message
    assert kube.hpa_floor("llm") == 4


def test_a_zero_from_the_planner_is_held_as_a_floor_of_one_by_an_hpa_and_says_why(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 4))
    result = KubernetesActuator(kube_cluster.api()).apply(llm, decision(0), "d-1")
    assert (result.outcome, result.after) == (Outcome.APPLIED, 1), result.message
    assert "HPAScaleToZero" in result.message
    assert kube.hpa_floor("llm") == 1


def test_replicas_mode_scales_a_deployment_to_zero_and_back(kube_cluster: KubeCluster, kube: Kube) -> None:
    tail = kube.deploy("tail", 1)
    act = KubernetesActuator(kube_cluster.api(), modes={tail: "replicas"})
    down = act.apply(tail, decision(0), "d-1")
    assert (down.outcome, down.before, down.after) == (Outcome.APPLIED, 1, 0), down.message
    assert kube.apps.read_namespaced_deployment("tail", kube.ns).spec.replicas == 0
    wait_until("no ready replica of tail", lambda: kube.ready("tail") == 0)
    up = act.apply(tail, decision(1), "d-2")
    assert (up.outcome, up.after) == (Outcome.APPLIED, 1), up.message
    wait_until("tail pre-warmed again", lambda: kube.ready("tail") == 1)


# -- keda-floor: KEDA's real ScaledObject CRD ---------------------------------------------------------------


def test_keda_floor_raises_min_replica_count_on_a_scaled_object_of_the_real_crd(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    kube_cluster.install_keda_crds()
    embed = kube.deploy("embed", 1)
    so = scaled_object("embed", 1, 8)
    kube.custom.create_namespaced_custom_object(KEDA[0], KEDA[1], kube.ns, KEDA[2], so)
    act = KubernetesActuator(kube_cluster.api())
    assert act.mode(embed) == "keda-floor"
    assert act.current(embed).floor == 1
    result = act.apply(embed, decision(5), "d-1")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 1, 5), result.message
    got = kube.custom.get_namespaced_custom_object(KEDA[0], KEDA[1], kube.ns, KEDA[2], "embed")
    assert got["spec"]["minReplicaCount"] == 5
    assert got["spec"]["triggers"] == so["spec"]["triggers"]  # the rest of the object survives the replace
    assert got["metadata"]["annotations"][ANNOTATION_ORIGINAL_FLOOR] == "1"
    zero = act.apply(embed, decision(0), "d-zero")  # KEDA holds a zero floor: minReplicaCount 0
    assert (zero.outcome, zero.after) == (Outcome.APPLIED, 0), zero.message
    got = kube.custom.get_namespaced_custom_object(KEDA[0], KEDA[1], kube.ns, KEDA[2], "embed")
    assert got["spec"]["minReplicaCount"] == 0
    capped = act.apply(embed, decision(30), "d-2")
    assert capped.after == 8 and "the ScaledObject allows 8; asked 30" in capped.message
    back = act.restore(embed)
    assert (back.outcome, back.after) == (Outcome.APPLIED, 1), back.message
    got = kube.custom.get_namespaced_custom_object(KEDA[0], KEDA[1], kube.ns, KEDA[2], "embed")
    assert got["spec"]["minReplicaCount"] == 1
    assert ANNOTATION_ORIGINAL_FLOOR not in got["metadata"].get("annotations", {})


# -- conflicts and refusals, as the real server sends them ------------------------------------------------


class ConcurrentWriter:
    """Wraps one of the actuator's replace calls: before the first `times` calls reach the server, another
    client (admin) writes the same object, so the actuator's copy is stale and the REAL server answers 409.
    Counts the 409s the server really sent."""

    def __init__(self, replace: Callable[..., Any], interfere: Callable[[int], None], times: int) -> None:
        self.replace, self.interfere, self.times = replace, interfere, times
        self.calls = 0
        self.conflicts = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            self.interfere(self.calls)
        try:
            return self.replace(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                self.conflicts += 1
            raise


@pytest.mark.parametrize(
    "listed", [pytest.param(False, id="alone"), pytest.param(True, id="in-a-tick-s-reads")]
)
def test_a_stale_resource_version_on_the_hpa_is_re_read_and_retried(
    kube_cluster: KubeCluster, kube: Kube, listed: bool
) -> None:
    """Also within a tick's reads (the HPA taken from the namespace's list, changed since): the write
    reads it afresh, and again after each 409."""
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    act = KubernetesActuator(kube_cluster.api())

    def other_writer(n: int) -> None:  # e.g. a GitOps controller labelling the HPA
        kube.hpa.patch_namespaced_horizontal_pod_autoscaler(
            "llm", kube.ns, {"metadata": {"labels": {"seen": str(n)}}}
        )

    writer = ConcurrentWriter(act.hpa.replace_namespaced_horizontal_pod_autoscaler, other_writer, times=2)
    act.hpa.replace_namespaced_horizontal_pod_autoscaler = writer  # type: ignore[method-assign]
    with act.reading([llm]) if listed else contextlib.nullcontext():
        if listed:
            other_writer(0)  # after the tick's list
        result = act.apply(llm, decision(6), "d-1")
    assert result.outcome is Outcome.APPLIED, result.message
    # two real 409s from the other writer (the HPA controller's own status writes may add more), each
    # followed by a re-read, then the re-read copy landed
    assert writer.conflicts >= 2 and writer.calls == writer.conflicts + 1
    h = kube.hpa.read_namespaced_horizontal_pod_autoscaler("llm", kube.ns)
    assert h.spec.min_replicas == 6
    assert h.metadata.labels == {"seen": "2"}  # the other writer's change was re-read, not overwritten


def test_a_stale_resource_version_on_the_scale_subresource_is_re_read_and_retried(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    solo = kube.deploy("solo", 1)
    act = KubernetesActuator(kube_cluster.api(), modes={solo: "replicas"})

    def someone_scales(n: int) -> None:
        kube.apps.patch_namespaced_deployment_scale("solo", kube.ns, {"spec": {"replicas": 1 + n}})

    writer = ConcurrentWriter(act.apps.replace_namespaced_deployment_scale, someone_scales, times=1)
    act.apps.replace_namespaced_deployment_scale = writer  # type: ignore[method-assign]
    result = act.apply(solo, decision(5), "d-1")
    assert result.outcome is Outcome.APPLIED, result.message
    # the Deployment controller's status writes share the scale's resourceVersion and may add 409s
    assert writer.conflicts >= 1 and writer.calls == writer.conflicts + 1
    assert (result.before, result.after) == (2, 5)  # `before` is what the re-read saw, the other writer's 2
    assert kube.replicas("solo") == 5


def test_conflicts_on_every_attempt_become_a_transient_failure(kube_cluster: KubeCluster, kube: Kube) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    act = KubernetesActuator(kube_cluster.api(), conflict_retries=2)

    def other_writer(n: int) -> None:
        kube.hpa.patch_namespaced_horizontal_pod_autoscaler(
            "llm", kube.ns, {"metadata": {"labels": {"seen": str(n)}}}
        )

    writer = ConcurrentWriter(act.hpa.replace_namespaced_horizontal_pod_autoscaler, other_writer, times=100)
    act.hpa.replace_namespaced_horizontal_pod_autoscaler = writer  # type: ignore[method-assign]
    result = act.apply(llm, decision(6), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False)
    assert "still conflicting after 3 attempts" in result.message and result.retry_after_s
    assert writer.conflicts == 3
    assert kube.hpa_floor("llm") == 2


def test_a_deleted_deployment_is_a_permanent_error_and_no_floor_moves(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    kube.apps.delete_namespaced_deployment("llm", kube.ns)
    wait_until("llm to be gone", lambda: not kube.apps.list_namespaced_deployment(kube.ns).items)
    api = kube_cluster.api()
    sent = RequestLog.attach(api)
    guarded = GuardedActuator(KubernetesActuator(api), rails={llm: Rails(mode=Mode.ACTIVE)})
    result = guarded.apply(llm, decision(5), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True), result.message
    assert "HTTP 404" in result.message and 'deployments.apps "llm" not found' in result.message
    assert kube.hpa_floor("llm") == 2 and sent.writes() == []
    again = guarded.apply(llm, decision(6), "d-2")
    assert again.outcome is Outcome.SKIPPED and "after a permanent error" in again.message
    assert len(sent.calls) == 1  # the one read that found it gone; nothing since


def shipped_role_rules() -> list[dict[str, Any]]:
    """The rules of the Role prewarm ships for the namespaces it scales (deploy/kubernetes/base/rbac.yaml)."""
    docs = [d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "prewarm-actuator"]
    return list(role["rules"])


def service_account_with(kube: Kube, rules: list[dict[str, Any]], name: str = "prewarm") -> str:
    """A ServiceAccount bound to a Role with exactly `rules` in the test's namespace; returns its token."""
    kube.core.create_namespaced_service_account(
        kube.ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    kube.rbac.create_namespaced_role(kube.ns, {"metadata": {"name": name}, "rules": rules})
    kube.rbac.create_namespaced_role_binding(
        kube.ns,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": kube.ns}],
        },
    )
    return kube.cluster.token_for(kube.ns, name)


def without(rules: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    """`rules` less one verb on one resource (a rule left with no verb is dropped: RBAC requires one)."""
    out = []
    for r in rules:
        verbs = [v for v in r["verbs"] if not (resource in r["resources"] and v == verb)]
        if verbs:
            out.append({**r, "verbs": verbs})
    assert out != rules, f"the shipped Role grants no {verb} on {resource}: nothing to take away"
    return out


def test_the_shipped_role_is_enough_for_every_mode_and_for_t_load_learning(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """The least-privilege Role of deploy/kubernetes/base/rbac.yaml, bound to a real ServiceAccount token:
    the actuator's reads and writes all pass the real RBAC authorizer."""
    kube_cluster.install_keda_crds()
    token = service_account_with(kube, shipped_role_rules())
    llm, solo = kube.deploy("llm", 1), kube.deploy("solo", 1)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 1, 10))
    kube.core.create_namespaced_resource_quota(
        kube.ns, {"metadata": {"name": "gpu-quota"}, "spec": {"hard": {"requests.nvidia.com/gpu": "16"}}}
    )
    act = KubernetesActuator(kube_cluster.api_as(token), modes={solo: "replicas"})
    for target, want in ((llm, 3), (solo, 2)):
        result = act.apply(target, decision(want), "d-1")
        assert result.outcome is Outcome.APPLIED, result.message
    assert act.restore(llm).outcome is Outcome.APPLIED
    assert act.gpu_quota(kube.ns, "gpu-quota") == 16.0
    wait_until("solo's 2 pods Ready", lambda: kube.ready("solo") == 2)
    act.watch_cold_starts(solo, timeout_s=2)
    assert len(act.cold_starts(solo)) == 2


@pytest.mark.parametrize(
    ("resource", "verb", "refused"),
    [
        pytest.param(
            "horizontalpodautoscalers",
            "update",
            'cannot update resource "horizontalpodautoscalers" in API group "autoscaling"',
            id="no-update-on-hpa",
        ),
        pytest.param(
            "deployments", "patch", 'cannot patch resource "deployments" in API group "apps"', id="no-patch"
        ),
    ],
)
def test_a_role_without_a_write_verb_is_a_permanent_rbac_error_naming_what_was_refused(
    kube_cluster: KubeCluster, kube: Kube, resource: str, verb: str, refused: str
) -> None:
    token = service_account_with(kube, without(shipped_role_rules(), resource, verb))
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    api = kube_cluster.api_as(token)
    sent = RequestLog.attach(api)
    guarded = GuardedActuator(KubernetesActuator(api), rails={llm: Rails(mode=Mode.ACTIVE)})
    result = guarded.apply(llm, decision(5), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True), result.message
    assert "HTTP 403" in result.message and refused in result.message
    assert f'User "system:serviceaccount:{kube.ns}:prewarm"' in result.message
    assert "rbac.yaml" in result.message  # says where to grant it
    assert guarded.rails_for(llm).permanent_error == result.message
    asked = len(sent.calls)
    again = guarded.apply(llm, decision(6), "d-2")
    assert again.outcome is Outcome.SKIPPED and "after a permanent error" in again.message
    assert len(sent.calls) == asked  # nothing more was sent


def test_a_refused_annotation_does_not_leave_a_moved_floor_unreported(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """apply() moves the HPA's floor before it annotates the Deployment: when RBAC refuses the annotation
    the floor has moved, and the result must say so (found against this server: it used to report a bare
    FAILED with no before/after, so the decision log said nothing had moved)."""
    token = service_account_with(kube, without(shipped_role_rules(), "deployments", "patch"))
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    result = KubernetesActuator(kube_cluster.api_as(token)).apply(llm, decision(5), "d-1")
    assert result.outcome is Outcome.FAILED and "cannot patch resource" in result.message
    floor = kube.hpa_floor("llm")
    # either nothing moved, or the result says where the floor now is
    assert floor == 2 or (result.after == floor and f"-> {floor}" in result.message), (floor, result)


def test_without_update_on_the_hpa_no_floor_moves(kube_cluster: KubeCluster, kube: Kube) -> None:
    token = service_account_with(kube, without(shipped_role_rules(), "horizontalpodautoscalers", "update"))
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    KubernetesActuator(kube_cluster.api_as(token)).apply(llm, decision(5), "d-1")
    assert kube.hpa_floor("llm") == 2
    assert not kube.prewarm_events("llm")


# -- T_load learned from real pod conditions -----------------------------------------------------------------


def stage_delays(creating_s: tuple[float, float], warming_s: tuple[float, float]) -> dict[str, str]:
    """Pod annotations for tests/stages (scripts/control_plane/stages.yaml): hold the pod in ContainerCreating
    for a time drawn from [creating_s[0], creating_s[1]), then Running-not-Ready for [warming_s...)."""
    return {
        "pod-start.stage.kwok.x-k8s.io/delay": f"{creating_s[0]}s",
        "pod-start.stage.kwok.x-k8s.io/jitter-delay": f"{creating_s[1]}s",
        "pod-ready.stage.kwok.x-k8s.io/delay": f"{warming_s[0]}s",
        "pod-ready.stage.kwok.x-k8s.io/jitter-delay": f"{warming_s[1]}s",
    }


def test_t_load_is_learned_from_pods_held_not_ready_by_the_simulated_kubelet(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """Two models whose pods take ~20 s and ~40 s from creation to Ready (image pull, then warm-up, each with
    jitter): the learned T_load (p95 of the cold starts) lands within 10% of what was configured, and the
    decomposition puts each phase where the pods spent it."""
    models = {  # name: (ContainerCreating range, not-Ready range), seconds
        "chat": ((4.0, 5.0), (15.0, 16.0)),  # T_load in [19, 21)
        "embed": ((8.0, 9.0), (32.0, 34.0)),  # T_load in [40, 43)
    }
    targets = {n: kube.deploy(n, 5, stage_delays(c, w)) for n, (c, w) in models.items()}
    # one actuator per model, so this test measures T_load alone (sharing one is tested below)
    acts = {n: KubernetesActuator(kube_cluster.api()) for n in models}
    starts: dict[str, list[ColdStart]] = {n: [] for n in models}
    versions: dict[str, str | None] = dict.fromkeys(models)

    def all_ready() -> bool:
        for n, t in targets.items():  # the actuator's own watch: pods becoming Ready are cold starts
            versions[n] = acts[n].watch_cold_starts(t, timeout_s=3, resource_version=versions[n]) or None
            starts[n] = acts[n].cold_starts(t)
        return all(len(s) == 5 for s in starts.values())

    wait_until("5 cold starts of each model", all_ready, timeout_s=150, interval_s=0)
    for n, (creating, warming) in models.items():
        lo, hi = creating[0] + warming[0], creating[1] + warming[1]
        est = LeadTimeEstimator(300.0, window=50, min_samples=5, quantile=0.95)
        assert est.observe(starts[n]) == 5
        lead = est.estimate()
        assert lead.source == "learned" and lead.samples == 5
        assert lo * 0.9 <= lead.t_load_s <= hi * 1.1, (n, lead, [c.t_load_s for c in starts[n]])
        assert "loading_and_warmup dominates" in lead.note
        # the phases, as pods.py reads them from the conditions the scheduler and kwok set (whole seconds)
        pull = statistics.median(c.phases_s["image_pull_and_start"] for c in starts[n])
        warm = statistics.median(c.phases_s["loading_and_warmup"] for c in starts[n])
        assert creating[0] - 1 <= pull <= creating[1] + 1, (n, [c.phases_s for c in starts[n]])
        assert warming[0] - 1 <= warm <= warming[1] + 1, (n, [c.phases_s for c in starts[n]])
        assert all(c.phases_s.get("scheduling", 0) <= 2 for c in starts[n])


def unscheduled_pod(name: str, owner: client.V1ConfigMap) -> client.V1Pod:
    """A pod of the Deployment `llm` (its labels) that no scheduler or kubelet touches (a scheduler name
    nobody runs), owned by `owner` so that the Deployment's ReplicaSet never adopts it."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={"app": "llm"},
            owner_references=[
                client.V1OwnerReference(
                    api_version="v1", kind="ConfigMap", name=owner.metadata.name, uid=owner.metadata.uid
                )
            ],
        ),
        spec=client.V1PodSpec(
            scheduler_name="nobody",
            containers=[client.V1Container(name="model", image="registry.invalid/model-server:1")],
        ),
    )


def came_up(created: datetime, phases_s: list[float], ready: bool = True) -> dict[str, Any]:
    """The status a kubelet writes over a pod's life: scheduled, initialised, its container started, Ready,
    each phases_s[i] seconds after the one before, from the pod's (server-set) creation time."""
    marks = [created]
    for s in phases_s:
        marks.append(marks[-1] + timedelta(seconds=s))
    iso = [m.strftime("%Y-%m-%dT%H:%M:%SZ") for m in marks]
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": iso[1]},
            {"type": "Initialized", "status": "True", "lastTransitionTime": iso[2]},
            {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": iso[4]},
            {"type": "Ready", "status": str(ready), "lastTransitionTime": iso[4]},
        ],
        "containerStatuses": [
            {
                "name": "model",
                "image": "registry.invalid/model-server:1",
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "state": {"running": {"startedAt": iso[3]}},
            }
        ],
    }


def test_t_load_is_learned_exactly_from_the_pod_conditions_the_server_stores(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """Pods whose status says, to the second, how long each phase of their cold start took (written through
    the status subresource, as a kubelet writes it): the actuator's watch sees each pod become Ready once,
    phases exactly as recorded, a pod that is not Ready is no cold start, and the learned T_load is the
    nearest-rank p95 of what the server returned."""
    llm = kube.deploy("llm", 0)
    owner = kube.core.create_namespaced_config_map(kube.ns, {"metadata": {"name": "pod-owner"}})
    act = KubernetesActuator(kube_cluster.api())
    rv = act.watch_cold_starts(llm, timeout_s=1)
    # eight pods: 2 s scheduling, 5 s init, 40..75 s image pull, 100..240 s loading; and one never Ready
    pods = {f"llm-{i}": ([2, 5, 40 + 5 * i, 100 + 20 * i], True) for i in range(8)}
    pods["llm-late"] = ([1, 1, 1, 1], False)
    for name, (phases_s, ready) in pods.items():
        created = kube.core.create_namespaced_pod(kube.ns, unscheduled_pod(name, owner))
        status = came_up(created.metadata.creation_timestamp, phases_s, ready)
        kube.core.patch_namespaced_pod_status(name, kube.ns, {"status": status})
    starts: list[ColdStart] = []

    def seen_all() -> bool:
        nonlocal rv, starts
        rv = act.watch_cold_starts(llm, timeout_s=1, resource_version=rv) or rv
        starts = act.cold_starts(llm)
        return len(starts) == 8

    wait_until("the watch to see eight pods become Ready", seen_all, timeout_s=30, interval_s=0)
    assert sorted(c.replica for c in starts) == [f"llm-{i}" for i in range(8)]
    by_name = {c.replica: c for c in starts}
    assert by_name["llm-0"].phases_s == {
        "scheduling": 2,
        "init": 5,
        "image_pull_and_start": 40,
        "loading_and_warmup": 100,
    }
    assert by_name["llm-7"].t_load_s == 2 + 5 + 75 + 240
    est = LeadTimeEstimator(300.0, window=50, min_samples=5, quantile=0.95)
    est.observe(starts[:3])
    assert est.estimate().source == "configured" and est.estimate().t_load_s == 300.0
    est.observe(starts)  # the first three again are not counted twice
    lead = est.estimate()
    assert (lead.source, lead.samples) == ("learned", 8)
    assert lead.t_load_s == 2 + 5 + 75 + 240  # nearest-rank p95 of 8 = the slowest
    assert "loading_and_warmup dominates" in lead.note


def test_cold_starts_are_reported_for_the_target_asked_about_only(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    chat, embed = kube.deploy("chat", 2), kube.deploy("embed", 2)
    wait_until("chat and embed Ready", lambda: kube.ready("chat") == 2 and kube.ready("embed") == 2)
    act = KubernetesActuator(kube_cluster.api())  # one actuator for the fleet, as the service builds it
    assert {c.replica.split("-")[0] for c in act.cold_starts(chat)} == {"chat"}
    embed_starts = act.cold_starts(embed)
    assert {c.replica.split("-")[0] for c in embed_starts} == {"embed"}, [c.replica for c in embed_starts]


# -- one tick's reads: each namespace listed once --------------------------------------------------------


def steady_tick(act: KubernetesActuator, targets: list[Target]) -> list[Any]:
    """What a tick asks of the actuator of each model: its replicas, the same floor again, its cold starts."""
    out: list[Any] = []
    for t in targets:
        have = act.current(t)
        result = act.apply(t, decision(have.floor or have.desired), "d-steady")
        starts = act.cold_starts(t)
        out.append((have, result.outcome, result.message, result.before, result.after, starts))
    return out


def test_a_tick_lists_each_namespace_once_and_a_model_already_at_its_floor_costs_no_request(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """Read model by model, a tick cost about eight requests a model, three of them LISTs of every HPA of
    the namespace. Within reading(), the namespace is listed once per kind and the answers are the same;
    a model whose floor moves still reads its HPA afresh (its resourceVersion) before replacing it."""
    names = ("chat", "code", "embed", "solo", "batch")  # three with an HPA, one alone, one KEDA-scaled
    targets = [kube.deploy(n, 2) for n in names]
    for n in names[:3]:
        kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa(n, 2, 10))
    so = scaled_object("batch", 1, 8)
    kube.custom.create_namespaced_custom_object(KEDA[0], KEDA[1], kube.ns, KEDA[2], so)
    wait_until("every model's 2 pods Ready", lambda: all(kube.ready(n) == 2 for n in names))
    api = kube_cluster.api()
    sent = RequestLog.attach(api)
    one_by_one = steady_tick(KubernetesActuator(api), targets)
    assert len(sent.calls) >= 7 * len(names), sent.calls
    assert all(len(starts) == 2 for *_, starts in one_by_one)
    sent.calls.clear()
    act = KubernetesActuator(api)  # another, that has seen no pod yet
    with act.reading(targets):
        listed = steady_tick(act, targets)
    assert listed == one_by_one
    assert all(outcome is Outcome.UNCHANGED for _, outcome, *_ in listed)
    assert sorted((m, resource_of(p)) for m, p, _ in sent.calls) == [
        ("GET", "deployments"),
        ("GET", "horizontalpodautoscalers"),
        ("GET", "pods"),
        ("GET", "scaledobjects"),
    ], sent.calls
    sent.calls.clear()
    with act.reading(targets):
        result = act.apply(targets[1], decision(5), "d-up")
        assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 2, 5), result.message
        assert act.apply(targets[0], decision(2), "d-same").outcome is Outcome.UNCHANGED
    assert kube.hpa_floor("code") == 5 and kube.hpa_floor("chat") == 2
    # the lists (the pods not again: no workload's status changed since they were listed), then the one
    # model whose floor moves: its HPA read afresh by name (the resourceVersion its replace carries),
    # replaced, the Deployment annotated, an Event; nothing for chat
    hpas = f"/apis/autoscaling/v2/namespaces/{kube.ns}/horizontalpodautoscalers"
    assert [(m, resource_of(p)) for m, p, _ in sent.calls[:3]] == [
        ("GET", "deployments"),
        ("GET", "horizontalpodautoscalers"),
        ("GET", "scaledobjects"),
    ]
    assert [(m, p) for m, p, _ in sent.calls[3:]] == [
        ("GET", f"{hpas}/code"),
        ("PUT", f"{hpas}/code"),
        ("PATCH", f"/apis/apps/v1/namespaces/{kube.ns}/deployments/code"),
        ("POST", f"/api/v1/namespaces/{kube.ns}/events"),
    ], sent.calls


def test_pods_are_listed_again_when_a_workload_reports_a_change_and_every_few_ticks_anyway(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """A tick lists the namespace's pods only when a workload's status moved since they were last listed
    (a pod came, went or became Ready), or after POD_RELIST_TICKS ticks: the pods of a steady fleet are
    every model's, the largest list of a tick, and a cold start is read from the pod's own conditions."""
    chat = kube.deploy("chat", 1)

    def settled(n: int) -> bool:  # every count the Deployment controller reports, at n, and caught up
        d = kube.apps.read_namespaced_deployment_status("chat", kube.ns)
        counts = (
            d.status.replicas,
            d.status.ready_replicas,
            d.status.updated_replicas,
            d.status.available_replicas,
        )
        return counts == (n,) * 4 and d.status.observed_generation == d.metadata.generation

    wait_until("chat settled at 1", lambda: settled(1))
    api = kube_cluster.api()
    sent = RequestLog.attach(api)
    act = KubernetesActuator(api)

    def tick() -> tuple[bool, int]:
        sent.calls.clear()
        with act.reading([chat]):
            starts = act.cold_starts(chat)
        return any(resource_of(p) == "pods" for _, p, _ in sent.calls), len(starts)

    assert tick() == (True, 1)  # the first: listed
    assert tick() == (False, 1)  # nothing moved: the one remembered
    kube.apps.patch_namespaced_deployment_scale("chat", kube.ns, {"spec": {"replicas": 2}})
    wait_until("chat settled at 2", lambda: settled(2))
    assert tick() == (True, 2)  # the Deployment's status moved: listed, the new cold start learned
    quiet = [tick() for _ in range(POD_RELIST_TICKS + 1)]
    assert quiet == [(False, 2)] * POD_RELIST_TICKS + [(True, 2)]


def test_a_role_from_before_list_on_workloads_reads_them_one_by_one_with_the_same_answers(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    token = service_account_with(kube, without(shipped_role_rules(), "deployments", "list"))
    chat = kube.deploy("chat", 1)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("chat", 1, 10))
    wait_until("chat Ready", lambda: kube.ready("chat") == 1)
    one_by_one = steady_tick(KubernetesActuator(kube_cluster.api_as(token)), [chat])
    act = KubernetesActuator(kube_cluster.api_as(token))
    with act.reading([chat]):
        assert steady_tick(act, [chat]) == one_by_one
        result = act.apply(chat, decision(3), "d-up")
    assert (result.outcome, result.after) == (Outcome.APPLIED, 3), result.message


# -- the fleet budget from a real ResourceQuota ----------------------------------------------------------


def test_the_gpu_budget_follows_a_real_resource_quota_raised_and_lowered(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    kube.core.create_namespaced_resource_quota(
        kube.ns,
        {
            "metadata": {"name": "gpu-quota"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "16", "pods": "100"}},
        },
    )
    act = KubernetesActuator(kube_cluster.api())
    budget = QuotaBudget(
        lambda: act.gpu_quota(kube.ns, "gpu-quota"), f"ResourceQuota {kube.ns}/gpu-quota", 60.0
    )
    assert budget.read(0.0) == 16.0 and budget.error == ""
    assert act.gpu_quota(kube.ns, "gpu-quota", "pods") == 100.0

    def set_hard(gpus: str) -> None:
        kube.core.patch_namespaced_resource_quota(
            "gpu-quota", kube.ns, {"spec": {"hard": {"requests.nvidia.com/gpu": gpus}}}
        )
        # the quota controller copies spec.hard into status.hard, which is what it enforces
        wait_until(
            f"status.hard to show {gpus} GPUs",
            lambda: (
                (kube.core.read_namespaced_resource_quota("gpu-quota", kube.ns).status.hard or {}).get(
                    "requests.nvidia.com/gpu"
                )
                == gpus
            ),
        )

    set_hard("24")
    assert budget.read(30.0) == 16.0  # not re-read before refresh_s
    assert budget.read(60.0) == 24.0  # raised while running: no restart
    set_hard("8")
    assert budget.read(120.0) == 8.0  # and lowered
    kube.core.delete_namespaced_resource_quota("gpu-quota", kube.ns)
    wait_until("the quota to be gone", lambda: not kube.core.list_namespaced_resource_quota(kube.ns).items)
    assert budget.read(180.0) == 8.0  # a failed read keeps the last budget and says why
    assert "HTTP 404" in budget.error and "keeping 8 GPUs from the last read" in budget.error


def test_a_quota_without_the_gpu_resource_a_missing_one_and_rbac_without_get_are_permanent(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    kube.core.create_namespaced_resource_quota(
        kube.ns, {"metadata": {"name": "gpu-quota"}, "spec": {"hard": {"pods": "100"}}}
    )
    act = KubernetesActuator(kube_cluster.api())
    with pytest.raises(
        PermanentError, match=r"sets no hard limit on requests.nvidia.com/gpu; it limits pods"
    ):
        act.gpu_quota(kube.ns, "gpu-quota")
    with pytest.raises(
        PermanentError, match=rf'ResourceQuota {kube.ns}/other: HTTP 404: .*"other" not found'
    ):
        act.gpu_quota(kube.ns, "other")
    token = service_account_with(kube, without(shipped_role_rules(), "resourcequotas", "get"))
    with pytest.raises(PermanentError, match=r'HTTP 403: .*cannot get resource "resourcequotas".*rbac.yaml'):
        KubernetesActuator(kube_cluster.api_as(token)).gpu_quota(kube.ns, "gpu-quota")


# -- the leader Lease -------------------------------------------------------------------------------------


def test_one_lease_two_electors_one_holds_the_other_takes_over_after_expiry(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    t0 = datetime.now(UTC)
    a = LeaseElector(
        kube_cluster.api(), namespace=kube.ns, name="prewarm", identity="pod-a", lease_duration_s=15
    )
    b = LeaseElector(
        kube_cluster.api(), namespace=kube.ns, name="prewarm", identity="pod-b", lease_duration_s=15
    )
    assert a.try_acquire(t0), a.last_error
    assert not b.try_acquire(t0)
    assert a.holder() == b.holder() == "pod-a"
    assert a.try_acquire(t0 + timedelta(seconds=10)), a.last_error  # renewed
    assert not b.try_acquire(t0 + timedelta(seconds=20))  # a renewed 10 s ago: still a's
    # a stops renewing (crashed); well past a lease duration after its last renewal, b takes over
    later = t0 + timedelta(seconds=36)
    assert b.try_acquire(later), b.last_error
    assert not a.try_acquire(later)
    lease = kube.coord.read_namespaced_lease("prewarm", kube.ns)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("pod-b", 1)
    assert a.holder() == "pod-b"


def test_a_stale_lease_write_gets_the_servers_409_and_does_not_win(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    t0 = datetime.now(UTC)
    a = LeaseElector(
        kube_cluster.api(), namespace=kube.ns, name="prewarm", identity="pod-a", lease_duration_s=15
    )
    assert a.try_acquire(t0), a.last_error
    stale = kube.coord.read_namespaced_lease("prewarm", kube.ns)
    assert a.try_acquire(t0 + timedelta(seconds=5)), a.last_error  # a renews: the copy above is now stale
    # the real server refuses a write carrying the old resourceVersion
    stale.spec.holder_identity = "pod-c"
    with pytest.raises(ApiException) as info:
        kube.coord.replace_namespaced_lease("prewarm", kube.ns, stale)
    assert info.value.status == 409
    # an elector that read before a's renewal and writes after it loses the race the same way
    c = LeaseElector(
        kube_cluster.api(), namespace=kube.ns, name="prewarm", identity="pod-c", lease_duration_s=15
    )
    snapshot = kube.coord.read_namespaced_lease("prewarm", kube.ns)
    snapshot.spec.renew_time = t0 - timedelta(minutes=10)  # what c would see of a lease left long ago ...
    c.api.read_namespaced_lease = lambda *_a, **_k: snapshot  # type: ignore[method-assign]
    for s in (0, 20, 40):  # ... for as long as it looks, so any expiry rule lets it try
        assert a.try_acquire(t0 + timedelta(seconds=7 + s)), a.last_error  # a renews: c's copy goes stale
        assert not c.try_acquire(t0 + timedelta(seconds=6 + s)), "a stale Lease copy won the election"
    assert a.holder() == "pod-a"


def test_a_lease_time_on_a_whole_second_is_accepted_by_the_server(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """A Lease's acquireTime/renewTime are MicroTime, which the server parses with exactly six fractional
    digits. Found here: the client's datetime.isoformat() writes none at an instant with microsecond == 0
    and the server answered 400: no Lease was taken or renewed at such an instant (the fake accepted it)."""
    t = datetime.now(UTC).replace(microsecond=0)  # e.g. a clock that ticks in whole seconds
    a = LeaseElector(
        kube_cluster.api(), namespace=kube.ns, name="prewarm", identity="pod-a", lease_duration_s=15
    )
    assert a.try_acquire(t), a.last_error
    assert a.try_acquire(t + timedelta(seconds=2)), a.last_error


def test_only_the_lease_holder_acts_and_a_standby_takes_over_a_lease_duration_after_the_last_renew_it_saw(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """Time is passed in, so the boundary is exact whatever the server's clock: b takes over once it has seen
    the same Lease record for a whole lease duration of its own time (it saw a's renew at +20 s), never by
    comparing a's written renewTime with its clock."""
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    a, b = (
        LeaseElector(kube_cluster.api(), namespace=kube.ns, name="prewarm", identity=who, lease_duration_s=15)
        for who in ("pod-a", "pod-b")
    )
    assert a.try_acquire(t0) and not b.try_acquire(t0)
    assert a.try_acquire(t0 + timedelta(seconds=10)) and not b.try_acquire(t0 + timedelta(seconds=20))
    guarded_b = GuardedActuator(
        KubernetesActuator(kube_cluster.api()),
        is_leader=lambda: b.is_leader(t0 + timedelta(seconds=20)),
        rails={llm: Rails(mode=Mode.ACTIVE)},
    )
    result = guarded_b.apply(llm, decision(5), "d-1")
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "another prewarm instance holds the leader Lease"
    assert kube.hpa_floor("llm") == 2
    # a stops renewing (crashed)
    assert not b.try_acquire(t0 + timedelta(seconds=34))
    later = t0 + timedelta(seconds=35)
    assert b.try_acquire(later) and not a.try_acquire(later)
    lease = kube.coord.read_namespaced_lease("prewarm", kube.ns)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("pod-b", 1)
    guarded_b.is_leader = lambda: b.is_leader(later)
    assert guarded_b.apply(llm, decision(5), "d-2").outcome is Outcome.APPLIED
    assert kube.hpa_floor("llm") == 5


def test_only_the_leader_gives_a_floor_back(kube_cluster: KubeCluster, kube: Kube) -> None:
    llm = kube.deploy("llm", 2)
    kube.hpa.create_namespaced_horizontal_pod_autoscaler(kube.ns, hpa("llm", 2, 20))
    assert KubernetesActuator(kube_cluster.api()).apply(llm, decision(9), "d-1").outcome is Outcome.APPLIED
    api = kube_cluster.api()
    sent = RequestLog.attach(api)
    guarded = GuardedActuator(
        KubernetesActuator(api), is_leader=lambda: False, rails={llm: Rails(mode=Mode.ACTIVE)}
    )
    result = guarded.restore(llm)
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "another prewarm instance holds the leader Lease"
    assert kube.hpa_floor("llm") == 9 and sent.calls == []
    guarded.is_leader = lambda: True
    assert guarded.restore(llm).outcome is Outcome.APPLIED and kube.hpa_floor("llm") == 2


class Process:
    """A prewarm process on a shared clock that can die (SIGKILL: it never steps again)."""

    def __init__(self, loop: LeaderLoop) -> None:
        self.loop, self.dead = loop, False


def test_the_lease_is_renewed_on_its_own_schedule_and_at_no_instant_do_two_processes_lead(
    kube_cluster: KubeCluster, kube: Kube
) -> None:
    """Ten minutes of the default timings (15 s lease, 10 s deadline, 2 s renew), stepped by value against
    the real server (about 900 Lease reads and writes): the leader keeps the Lease between control ticks
    whatever they do (the Lease used to lapse when only writes renewed it), and when it dies its successor
    leads only after it has stopped."""
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()
    now = [t0]
    procs = {
        name: Process(
            LeaderLoop(
                LeaseElector(
                    kube_cluster.api(),
                    namespace=kube.ns,
                    name="prewarm-leader",
                    identity=process_identity(name),
                ),
                lambda: now[0],
            )
        )
        for name in ("pod-a", "pod-b")
    }
    both_at: list[float] = []
    leading_at: dict[str, list[float]] = {"pod-a": [], "pod-b": []}
    step_s = 0.5
    for i in range(int(600 / step_s)):
        now[0] = t0 + i * step_s
        for name, p in procs.items():
            # each renews every 2 s, a at even and b at odd seconds (a first: it holds); a dies at 5 minutes
            phase = 0.0 if name == "pod-a" else 1.0
            if not p.dead and (i * step_s - phase) % 2 == 0:
                p.loop.step()
                assert p.loop.elector.last_error is None, p.loop.elector.last_error
        if i * step_s == 300:
            procs["pod-a"].dead = True
        leads = {name: p.loop.leading() and not p.dead for name, p in procs.items()}
        for name, lead in leads.items():
            if lead:
                leading_at[name].append(now[0] - t0)
        if all(leads.values()):
            both_at.append(now[0])
    assert both_at == []
    a, b = leading_at["pod-a"], leading_at["pod-b"]
    assert a[0] == 0.0 and a[-1] == 299.5 and len(a) == 600  # a led every instant until it died
    assert b and b[0] - 300 <= 15 + 2 * 2  # a lease duration after the last renew it saw, on its schedule
    assert b[-1] == 599.5 and len(b) == (600 - b[0]) / step_s
    lease = kube.coord.read_namespaced_lease("prewarm-leader", kube.ns)
    assert lease.spec.holder_identity == procs["pod-b"].loop.elector.identity
