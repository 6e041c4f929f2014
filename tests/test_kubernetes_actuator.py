"""The Kubernetes actuator through the official client, over HTTP, against a fake API server that speaks the
real protocol (resourceVersion conflicts, Status bodies, watches, Leases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from actuator.base import ColdStart, Outcome, Target
from actuator.kubernetes import ANNOTATION_DECISION, ANNOTATION_ORIGINAL_FLOOR, KubernetesActuator
from actuator.lead_time import LeadTimeEstimator
from actuator.leader import LeaseElector, process_identity
from actuator.safety import GuardedActuator, Mode, Rails
from planner.explain import Decision, Reason, Step
from service.leadership import LeaderLoop
from tests.fake_kube import FakeKube

NS = "serving"
LLM = Target("Deployment", NS, "llm")  # scaled by an HPA
SOLO = Target("Deployment", NS, "solo")  # no other autoscaler
EMBED = Target("Deployment", NS, "embed")  # scaled by KEDA
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "m", "image": "m:1"}]},
            },
        },
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }


def hpa(name: str, lo: int, hi: int) -> dict[str, Any]:
    """An autoscaling/v2 HPA scaling the Deployment `name` between lo and hi replicas."""
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": lo,
            "maxReplicas": hi,
        },
    }


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    for name, n in (("llm", 2), ("solo", 1), ("embed", 1)):
        fake.put_object("apps/v1", "deployments", deployment(name, n))
    fake.put_object("autoscaling/v2", "horizontalpodautoscalers", hpa("llm", 2, 20))
    fake.put_object(
        "keda.sh/v1alpha1",
        "scaledobjects",
        {
            "metadata": {"name": "embed", "namespace": NS},
            "spec": {"scaleTargetRef": {"name": "embed"}, "minReplicaCount": 1, "maxReplicaCount": 8},
        },
    )
    yield fake
    fake.close()


def api_for(fake: FakeKube) -> client.ApiClient:
    cfg = client.Configuration(host=fake.url)
    cfg.retries = 0
    return client.ApiClient(cfg)


def decision(desired: int, reason: Reason = Reason.FORECAST_DEMAND) -> Decision:
    return Decision(
        at_s=T0.timestamp(),
        valid=True,
        current_replicas=2,
        raw_replicas=desired,
        desired_replicas=desired,
        reason=reason,
        steps=(Step("demand", None, desired, reason, "forecast p90 of 150 req/s at 09:05"),),
    )


def hpa_floor(fake: FakeKube) -> int:
    return int(
        fake.get_object("autoscaling/v2", NS, "horizontalpodautoscalers", "llm")["spec"]["minReplicas"]
    )


def test_hpa_floor_raises_min_replicas_and_leaves_an_event_and_the_decision_id(kube: FakeKube) -> None:
    act = KubernetesActuator(api_for(kube), clock=lambda: T0)
    assert act.mode(LLM) == "hpa-floor"
    result = act.apply(LLM, decision(7), "d-42")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 2, 7)
    assert hpa_floor(kube) == 7
    hpa = kube.get_object("autoscaling/v2", NS, "horizontalpodautoscalers", "llm")
    assert hpa["metadata"]["annotations"][ANNOTATION_ORIGINAL_FLOOR] == "2"
    dep = kube.get_object("apps/v1", NS, "deployments", "llm")
    assert dep["metadata"]["annotations"][ANNOTATION_DECISION] == "d-42"
    assert dep["spec"]["replicas"] == 2  # the HPA, not prewarm, scales the Deployment
    (event,) = [o for (a, _, p, _), o in kube.objects.items() if p == "events"]
    assert event["reason"] == "ForecastDemand"
    # with the workload's uid, `kubectl describe deploy llm` lists the Event (it selects Events by uid)
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llm",
        "namespace": NS,
        "uid": dep["metadata"]["uid"],
    }
    assert "hpa-floor 2 -> 7: 7 replicas: forecast p90 of 150 req/s at 09:05" in event["message"]
    # the same decision again changes nothing and leaves no second event
    assert act.apply(LLM, decision(7), "d-43").outcome is Outcome.UNCHANGED
    assert len([k for k in kube.objects if k[2] == "events"]) == 1


def test_restore_gives_the_hpa_its_own_floor_back(kube: FakeKube) -> None:
    act = KubernetesActuator(api_for(kube))
    act.apply(LLM, decision(9), "d-1")
    act.apply(LLM, decision(4), "d-2")
    result = act.restore(LLM)
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 4, 2)
    hpa = kube.get_object("autoscaling/v2", NS, "horizontalpodautoscalers", "llm")
    assert hpa["spec"]["minReplicas"] == 2
    assert ANNOTATION_ORIGINAL_FLOOR not in (hpa["metadata"].get("annotations") or {})


def test_the_hpa_floor_is_capped_at_its_max_replicas(kube: FakeKube) -> None:
    result = KubernetesActuator(api_for(kube)).apply(LLM, decision(50), "d-1")
    assert result.after == 20
    assert "the HPA allows 20; asked 50" in result.message


def test_keda_floor_raises_min_replica_count(kube: FakeKube) -> None:
    act = KubernetesActuator(api_for(kube))
    assert act.mode(EMBED) == "keda-floor"
    result = act.apply(EMBED, decision(5), "d-1")
    assert (result.outcome, result.after) == (Outcome.APPLIED, 5)
    so = kube.get_object("keda.sh/v1alpha1", NS, "scaledobjects", "embed")
    assert so["spec"]["minReplicaCount"] == 5
    assert act.restore(EMBED).after == 1


def test_replicas_mode_sets_the_scale_subresource(kube: FakeKube) -> None:
    act = KubernetesActuator(api_for(kube), modes={SOLO: "replicas"})
    result = act.apply(SOLO, decision(3), "d-1")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 1, 3)
    assert kube.get_object("apps/v1", NS, "deployments", "solo")["spec"]["replicas"] == 3
    assert ("update", "deployments/scale") in kube.log
    assert act.current(SOLO).desired == 3


def test_replicas_mode_is_refused_where_an_hpa_also_writes(kube: FakeKube) -> None:
    act = KubernetesActuator(api_for(kube), modes={LLM: "replicas"})
    result = act.apply(LLM, decision(3), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True)
    assert "refusing mode 'replicas' because HorizontalPodAutoscaler llm also scales it" in result.message
    assert kube.get_object("apps/v1", NS, "deployments", "llm")["spec"]["replicas"] == 2


def test_a_conflicting_write_is_re_read_and_retried(kube: FakeKube) -> None:
    kube.conflict_next[("horizontalpodautoscalers", "llm")] = 2  # another writer gets in twice
    result = KubernetesActuator(api_for(kube)).apply(LLM, decision(6), "d-1")
    assert result.outcome is Outcome.APPLIED
    assert hpa_floor(kube) == 6
    assert kube.log.count(("update", "horizontalpodautoscalers")) == 3


def test_endless_conflicts_become_a_transient_failure(kube: FakeKube) -> None:
    kube.conflict_next[("deployments", "solo")] = 100
    result = KubernetesActuator(api_for(kube), modes={SOLO: "replicas"}, conflict_retries=2).apply(
        SOLO, decision(3), "d-1"
    )
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False)
    assert "still conflicting after 3 attempts" in result.message and result.retry_after_s


@pytest.mark.parametrize(
    ("setup", "status", "words"),
    [
        pytest.param(
            lambda k: k.deny.add(("update", "horizontalpodautoscalers")),
            403,
            "cannot update resource",
            id="rbac",
        ),
        pytest.param(
            lambda k: k.objects.pop(("apps/v1", NS, "deployments", "llm")), 404, "not found", id="gone"
        ),
    ],
)
def test_rbac_denial_and_a_missing_workload_are_permanent_and_stop_further_writes(
    kube: FakeKube, setup: Any, status: int, words: str
) -> None:
    setup(kube)
    guarded = GuardedActuator(KubernetesActuator(api_for(kube)), rails={LLM: Rails(mode=Mode.ACTIVE)})
    result = guarded.apply(LLM, decision(5), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True)
    assert f"HTTP {status}" in result.message and words in result.message
    assert hpa_floor(kube) == 2  # nothing moved
    writes = len(kube.log)
    again = guarded.apply(LLM, decision(6), "d-2")
    assert again.outcome is Outcome.SKIPPED and "after a permanent error" in again.message
    assert len(kube.log) == writes  # nothing sent


def test_a_server_error_is_transient(kube: FakeKube) -> None:
    kube.fail_next[("list", "horizontalpodautoscalers")] = [503]
    result = KubernetesActuator(api_for(kube)).apply(LLM, decision(5), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False)
    assert "HTTP 503" in result.message and result.retry_after_s == 10.0


def test_an_invalid_value_is_rejected_with_the_servers_422_message(kube: FakeKube) -> None:
    kube.objects[("apps/v1", NS, "deployments", "solo")]["spec"]["replicas"] = 1
    result = KubernetesActuator(api_for(kube), modes={SOLO: "replicas"}).apply(SOLO, decision(-1), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True)
    assert "HTTP 422" in result.message and "spec.replicas: Invalid value: -1" in result.message


@pytest.mark.parametrize(
    ("rails", "kill", "words"),
    [
        pytest.param(Rails(mode=Mode.SHADOW), False, "shadow mode: would set 5", id="shadow"),
        pytest.param(Rails(mode=Mode.ACTIVE, paused=True), False, "is paused", id="paused"),
        pytest.param(Rails(mode=Mode.ACTIVE), True, "kill switch on", id="kill-switch"),
    ],
)
def test_shadow_pause_and_the_kill_switch_apply_nothing_but_say_what_they_would_do(
    kube: FakeKube, rails: Rails, kill: bool, words: str
) -> None:
    guarded = GuardedActuator(KubernetesActuator(api_for(kube)), kill_switch=kill, rails={LLM: rails})
    result = guarded.apply(LLM, decision(5), "d-1")
    assert result.outcome is Outcome.SKIPPED and words in result.message
    assert hpa_floor(kube) == 2
    assert not [v for v, _ in kube.log if v in ("update", "patch", "create")]


def test_at_most_the_configured_replicas_are_added_per_tick(kube: FakeKube) -> None:
    guarded = GuardedActuator(
        KubernetesActuator(api_for(kube), modes={SOLO: "replicas"}),
        rails={SOLO: Rails(mode=Mode.ACTIVE, max_added_per_tick=2)},
    )
    result = guarded.apply(SOLO, decision(9), "d-1")
    assert result.after == 3 and "at most 2 added per tick; asked 9" in result.message


def test_only_the_lease_holder_acts_and_another_instance_takes_over_when_it_stops_renewing(
    kube: FakeKube,
) -> None:
    a = LeaseElector(api_for(kube), namespace=NS, name="prewarm", identity="pod-a", lease_duration_s=15)
    b = LeaseElector(api_for(kube), namespace=NS, name="prewarm", identity="pod-b", lease_duration_s=15)
    assert a.try_acquire(T0) and not b.try_acquire(T0)
    assert a.try_acquire(T0 + timedelta(seconds=10)) and not b.try_acquire(T0 + timedelta(seconds=20))
    guarded_b = GuardedActuator(
        KubernetesActuator(api_for(kube)),
        is_leader=lambda: b.try_acquire(T0 + timedelta(seconds=20)),
        rails={LLM: Rails(mode=Mode.ACTIVE)},
    )
    assert (
        "another prewarm instance holds the leader Lease" in guarded_b.apply(LLM, decision(5), "d-1").message
    )
    # a stops renewing (crashed): b takes over once it has seen the same record for a whole lease duration
    # of its own time (it saw a's renew at +20 s), never by comparing a's written renewTime with its clock
    assert not b.try_acquire(T0 + timedelta(seconds=34))
    later = T0 + timedelta(seconds=35)
    assert b.try_acquire(later) and not a.try_acquire(later)
    lease = kube.get_object("coordination.k8s.io/v1", NS, "leases", "prewarm")
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("pod-b", 1)


def test_two_instances_racing_for_an_expired_lease_cannot_both_win(kube: FakeKube) -> None:
    a = LeaseElector(api_for(kube), namespace=NS, name="prewarm", identity="pod-a")
    assert a.try_acquire(T0)
    kube.conflict_next[("leases", "prewarm")] = 1  # pod-c renews it between b's read and b's write
    b = LeaseElector(api_for(kube), namespace=NS, name="prewarm", identity="pod-b")
    assert not b.try_acquire(T0 + timedelta(seconds=60))


def pod(name: str, created: datetime, phases_s: list[float]) -> dict[str, Any]:
    """A Ready pod whose scheduling, init, container start and loading took phases_s seconds."""
    marks = [created]
    for s in phases_s:
        marks.append(marks[-1] + timedelta(seconds=s))
    iso = [m.strftime("%Y-%m-%dT%H:%M:%SZ") for m in marks]
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "llm"}, "creationTimestamp": iso[0]},
        "spec": {"containers": [{"name": "m", "image": "m:1"}]},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": iso[1]},
                {"type": "Initialized", "status": "True", "lastTransitionTime": iso[2]},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": iso[4]},
                {"type": "Ready", "status": "True", "lastTransitionTime": iso[4]},
            ],
            "containerStatuses": [
                {
                    "name": "m",
                    "image": "m:1",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": iso[3]}},
                }
            ],
        },
    }


def test_t_load_is_learned_from_pods_becoming_ready_with_its_phases(kube: FakeKube) -> None:
    act = KubernetesActuator(api_for(kube))
    rv = act.watch_cold_starts(LLM, timeout_s=5)
    # eight pods come up over the day: 2 s scheduling, 5 s init, 40..75 s image pull, 100..240 s loading
    for i in range(8):
        kube.put_object(
            "v1", "pods", pod(f"llm-{i}", T0 + timedelta(minutes=10 * i), [2, 5, 40 + 5 * i, 100 + 20 * i])
        )
    not_ready = pod("llm-late", T0, [1, 1, 1, 1])
    not_ready["status"]["conditions"][3]["status"] = "False"
    kube.put_object("v1", "pods", not_ready)
    act.watch_cold_starts(LLM, timeout_s=5, resource_version=rv)
    starts = act.cold_starts(LLM)
    assert [c.replica for c in starts] == [f"llm-{i}" for i in range(8)]
    assert starts[0].phases_s == {
        "scheduling": 2,
        "init": 5,
        "image_pull_and_start": 40,
        "loading_and_warmup": 100,
    }
    est = LeadTimeEstimator(300.0, window=50, min_samples=5, quantile=0.95)
    est.observe(starts[:3])
    assert est.estimate().source == "configured" and est.estimate().t_load_s == 300.0
    est.observe(starts)  # the first three again are not counted twice
    lead = est.estimate()
    assert (lead.source, lead.samples) == ("learned", 8)
    assert lead.t_load_s == 2 + 5 + 75 + 240  # nearest-rank p95 of 8 = the slowest
    assert "loading_and_warmup dominates" in lead.note


def test_a_learned_t_load_never_falls_below_its_floor_and_says_why() -> None:
    """Pods that report every condition in the same second read as 0 s cold starts."""
    instant = [ColdStart(f"llm-{i}", 1000.0 * i, 1000.0 * i, {"loading_and_warmup": 0.0}) for i in range(6)]
    est = LeadTimeEstimator(
        300.0, min_samples=5, floor_s=30.0, floor_why="the control tick (schedules.tick_s)"
    )
    est.observe(instant)
    lead = est.estimate()
    assert (lead.source, lead.t_load_s) == ("learned", 30.0)
    assert "0 s is below the control tick (schedules.tick_s) (30 s), which is used" in lead.note


def test_every_process_gets_its_own_lease_identity_even_with_one_pod_name() -> None:
    one, two = process_identity("prewarm-7d9f"), process_identity("prewarm-7d9f")
    assert one != two and one.startswith("prewarm-7d9f_") and two.startswith("prewarm-7d9f_")


class Frozen:
    """A process that can stop (SIGKILL: it never steps again) on a shared clock."""

    def __init__(self, loop: LeaderLoop) -> None:
        self.loop, self.dead = loop, False


def test_the_lease_is_renewed_on_its_own_schedule_and_at_no_instant_do_two_processes_lead(
    kube: FakeKube,
) -> None:
    """Ten minutes of 30 s ticks with the default timings (15 s lease, 10 s deadline, 2 s renew): the
    leader keeps the Lease between ticks whatever the ticks do (the Lease used to lapse when only writes
    renewed it), and when it dies its successor leads only after it has stopped."""
    now = [T0.timestamp()]
    procs = {
        name: Frozen(
            LeaderLoop(
                LeaseElector(
                    api_for(kube), namespace=NS, name="prewarm-leader", identity=process_identity(name)
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
        now[0] = T0.timestamp() + i * step_s
        for name, p in procs.items():
            # each renews every 2 s, a at even and b at odd seconds (a first: it holds); a dies at 5 minutes
            phase = 0.0 if name == "pod-a" else 1.0
            if not p.dead and (i * step_s - phase) % 2 == 0:
                p.loop.step()
        if i * step_s == 300:
            procs["pod-a"].dead = True
        leads = {name: p.loop.leading() and not p.dead for name, p in procs.items()}
        for name, lead in leads.items():
            if lead:
                leading_at[name].append(now[0] - T0.timestamp())
        if all(leads.values()):
            both_at.append(now[0])
    assert both_at == []
    a, b = leading_at["pod-a"], leading_at["pod-b"]
    assert a[0] == 0.0 and a[-1] == 299.5 and len(a) == 600  # a led every instant until it died
    assert b and b[0] - 300 <= 15 + 2 * 2  # a lease duration after the last renew it saw, on its schedule
    assert b[-1] == 599.5 and len(b) == (600 - b[0]) / step_s


def test_only_the_leader_gives_a_floor_back(kube: FakeKube) -> None:
    guarded = GuardedActuator(
        KubernetesActuator(api_for(kube)), is_leader=lambda: False, rails={LLM: Rails(mode=Mode.ACTIVE)}
    )
    KubernetesActuator(api_for(kube)).apply(LLM, decision(9), "d-1")
    result = guarded.restore(LLM)
    assert (
        result.outcome is Outcome.SKIPPED
        and "another prewarm instance holds the leader Lease" in result.message
    )
    assert hpa_floor(kube) == 9
    guarded.is_leader = lambda: True
    assert guarded.restore(LLM).outcome is Outcome.APPLIED and hpa_floor(kube) == 2
