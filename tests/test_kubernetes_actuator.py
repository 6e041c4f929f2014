"""The Kubernetes actuator and the leader Lease when the API server misbehaves: the fake API server of
tests/fake_kube.py (the official client over HTTP), because a real server cannot be made to answer 5xx or
429, drop a connection or send a malformed body on purpose. Also the pure parts that need no server.

Every behaviour a real server can show is tested against the real control plane (tests/kube_cluster.py):
the modes, Events, conflicts, refusals, Leases and T_load learning in tests/test_kube_real.py, the shipped
manifests and a day of decisions as their ServiceAccounts in tests/test_kube_overlays.py and
tests/test_kube_helm.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from actuator.base import ColdStart, Outcome, Target
from actuator.errors import TransientError
from actuator.kubernetes import KubernetesActuator
from actuator.lead_time import LeadTimeEstimator
from actuator.leader import LeaseElector, process_identity
from actuator.safety import GuardedActuator, Mode, Rails
from planner.explain import Decision, Reason, Step
from tests.fake_kube import FakeKube

NS = "serving"
LLM = Target("Deployment", NS, "llm")  # scaled by an HPA
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    labels = {"app": "llm"}
    fake.put_object(
        "apps/v1",
        "deployments",
        {
            "metadata": {"name": "llm", "namespace": NS, "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "m", "image": "m:1"}]},
                },
            },
            "status": {"replicas": 2, "readyReplicas": 2},
        },
    )
    fake.put_object(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        {
            "metadata": {"name": "llm", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
                "minReplicas": 2,
                "maxReplicas": 20,
            },
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


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        pytest.param(
            lambda k: k.fail_next.update({("list", "horizontalpodautoscalers"): [503]}), "HTTP 503", id="503"
        ),
        pytest.param(
            lambda k: k.fail_next.update({("list", "horizontalpodautoscalers"): [429]}), "HTTP 429", id="429"
        ),
        pytest.param(
            lambda k: k.drop_next.update({("get", "deployments"): 1}),
            "the API server is unreachable",
            id="dropped-connection",
        ),
    ],
)
def test_a_server_error_a_429_and_a_dropped_connection_are_transient_and_move_nothing(
    kube: FakeKube, fault: Any, words: str
) -> None:
    fault(kube)
    guarded = GuardedActuator(KubernetesActuator(api_for(kube)), rails={LLM: Rails(mode=Mode.ACTIVE)})
    result = guarded.apply(LLM, decision(5), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False), result.message
    assert words in result.message and result.retry_after_s == 10.0
    assert hpa_floor(kube) == 2
    # transient: the rails do not stop acting, and the next tick lands
    assert guarded.rails_for(LLM).permanent_error is None
    again = guarded.apply(LLM, decision(5), "d-2")
    assert again.outcome is Outcome.APPLIED and hpa_floor(kube) == 5


def test_a_storm_of_server_errors_on_the_lease_stops_the_leader_at_its_deadline_and_it_leads_again_after(
    kube: FakeKube,
) -> None:
    """Renewals answered 503 for 20 s: the leader stops acting once its newest renew is older than the renew
    deadline (10 s), says why, and leads again at the first renew that lands."""
    a = LeaseElector(api_for(kube), namespace=NS, name="prewarm", identity="pod-a")
    assert a.try_acquire(T0)
    kube.fail_next[("update", "leases")] = [503] * 10
    for s in range(2, 22, 2):
        at = T0 + timedelta(seconds=s)
        assert not a.try_acquire(at)
        assert "HTTP 503" in (a.last_error or "")
        assert a.is_leader(at) == (s < 10), s  # acting on the renew at T0 until the deadline only
    assert a.try_acquire(T0 + timedelta(seconds=22)) and a.last_error is None
    assert a.is_leader(T0 + timedelta(seconds=22))


def test_a_malformed_body_is_a_transient_failure_naming_the_call(kube: FakeKube) -> None:
    """A body that is not JSON (a proxy cutting a reply off) used to escape apply as json.JSONDecodeError:
    the tick recorded the decision without its actuation, and the failure was never counted."""
    kube.garbage_next[("get", "deployments")] = 1
    result = KubernetesActuator(api_for(kube)).apply(LLM, decision(5), "d-1")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False), result.message
    assert f"read {LLM}" in result.message and result.retry_after_s


def test_a_server_that_stops_answering_is_a_transient_failure_within_the_timeout(kube: FakeKube) -> None:
    """The client's default is no timeout: an API server that accepts the connection and never answers
    would hold the control tick (and the Lease's renew) forever."""
    kube.hang_next[("get", "deployments")] = 1
    started = time.monotonic()
    result = KubernetesActuator(api_for(kube), timeout_s=0.5).apply(LLM, decision(5), "d-1")
    assert time.monotonic() - started < 5
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False), result.message
    assert f"read {LLM}" in result.message and result.retry_after_s
    kube.hang_next[("get", "leases")] = 1
    elector = LeaseElector(api_for(kube), namespace=NS, name="prewarm", identity="pod-a", timeout_s=0.5)
    started = time.monotonic()
    assert not elector.try_acquire(T0) and "unreachable" in (elector.last_error or "")
    assert time.monotonic() - started < 5 and elector.permanent_error is None


# -- no server at all ------------------------------------------------------------------------------------


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


def test_the_estimate_read_every_tick_changes_exactly_when_a_new_cold_start_is_observed() -> None:
    """The tick reads the estimate of every model; it is kept between cold starts, and a new one (not one
    seen before) is in the next read."""

    def start(i: int, t_load_s: float) -> ColdStart:
        return ColdStart(f"llm-{i}", 1000.0 * i, 1000.0 * i + t_load_s, {"loading_and_warmup": t_load_s})

    est = LeadTimeEstimator(300.0, min_samples=3, quantile=0.8)
    assert est.estimate().source == "configured"
    est.observe([start(i, 60.0) for i in range(3)])
    assert (est.estimate().source, est.estimate().t_load_s) == ("learned", 60.0)
    assert est.observe([start(0, 60.0)]) == 0 and est.estimate().t_load_s == 60.0  # seen before
    est.observe([start(3, 500.0), start(4, 500.0)])
    lead = est.estimate()
    assert (lead.t_load_s, lead.samples) == (500.0, 5) and "of the last 5 cold starts" in lead.note


def test_every_process_gets_its_own_lease_identity_even_with_one_pod_name() -> None:
    one, two = process_identity("prewarm-7d9f"), process_identity("prewarm-7d9f")
    assert one != two and one.startswith("prewarm-7d9f_") and two.startswith("prewarm-7d9f_")


@pytest.mark.parametrize(
    ("resource", "words"),
    [
        pytest.param("deployments", "list Deployments in serving: HTTP 503", id="workloads"),
        pytest.param(
            "horizontalpodautoscalers", "list HorizontalPodAutoscalers in serving: HTTP 503", id="hpas"
        ),
    ],
)
def test_a_tick_s_list_answered_503_fails_each_model_read_with_it_and_sends_no_read_per_model(
    kube: FakeKube, resource: str, words: str
) -> None:
    """A 5xx on the tick's LIST is every model's read failing, as each would have alone (the tick records
    "workload unreadable" and never scales down on it); it is not a read per model against a server in
    trouble. The next tick lists again."""
    kube.fail_next[("list", resource)] = [503]
    act = KubernetesActuator(api_for(kube))
    with act.reading([LLM]), pytest.raises(TransientError, match=words):
        act.current(LLM)
    assert [c for c in kube.log if c[0] == "get"] == []  # no model read alone
    with act.reading([LLM]):
        assert act.current(LLM).floor == 2
