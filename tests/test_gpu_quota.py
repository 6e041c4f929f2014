"""The fleet's GPU budget read from a namespace ResourceQuota through the Kubernetes actuator, kept when a
read fails, and shown in /readyz and /v1/fleet.

Which server: the REAL control plane (tests/kube_cluster.py) for what it can show: a ResourceQuota the quota
controller enforces, and a ServiceAccount whose Role first refuses, then grants, `get` on it (the RBAC
authorizer's own 403). The fake API server (tests/fake_kube.py) only for 503 answers, which a real server
cannot be made to send on purpose. Reading a quota raised, lowered and deleted while running, a quota without
the GPU resource, a missing one and a refused one: tests/test_kube_real.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from actuator.errors import TransientError
from actuator.kubernetes import KubernetesActuator
from service.budget import QuotaBudget
from service.config import ConfigError, parse_config
from service.runtime import Controller
from service.serve import build_demo, demo_start_s
from service.view import ControllerView
from tests.fake_kube import FakeKube
from tests.fakes import Clock
from tests.kube_cluster import KubeCluster, wait_until
from tests.test_kube_overlays import sa_can
from tests.test_kube_real import Kube, service_account_with, shipped_role_rules, without

NS = "serving"


def quota(hard: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "gpu-quota"}, "spec": {"hard": hard}}


# -- the real control plane -------------------------------------------------------------------------------


@pytest.fixture
def kube(kube_cluster: KubeCluster, kube_ns: str) -> Kube:
    k = Kube(kube_cluster, kube_ns)
    k.core.create_namespaced_resource_quota(kube_ns, quota({"requests.nvidia.com/gpu": "16", "pods": "100"}))
    return k


def test_the_service_plans_against_the_quota_and_says_where_the_budget_came_from(
    kube_cluster: KubeCluster, kube: Kube, tmp_path: Any
) -> None:
    """Its ServiceAccount may not read the quota at first (the server's 403 is the warning), then may: the
    budget follows at the next refresh, with no restart."""
    rules = shipped_role_rules()
    token = service_account_with(kube, without(rules, "resourcequotas", "get"))
    clock = Clock(demo_start_s() + 8 * 3600)
    k8s = KubernetesActuator(kube_cluster.api_as(token))
    where = f"ResourceQuota {kube.ns}/gpu-quota"
    budget = QuotaBudget(lambda: k8s.gpu_quota(kube.ns, "gpu-quota"), where, 60.0)
    ctl: Controller = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", gpu_budget=budget)
    view = ControllerView(ctl, clock)
    ctl.tick_all(clock.t)
    _, ready = view.readiness()
    assert ready["fleet"]["budget_gpus"] is None
    (warning,) = ready["fleet"]["warnings"]
    assert "no GPU budget yet, each model plans alone" in warning
    assert f'cannot get resource "resourcequotas" in API group "" in the namespace "{kube.ns}"' in warning
    kube.rbac.patch_namespaced_role("prewarm", kube.ns, {"rules": rules})
    wait_until(
        "get on resourcequotas to be granted",
        lambda: sa_can(kube_cluster, kube.ns, "prewarm", "get", "", "resourcequotas", kube.ns),
    )
    for _ in range(3):
        clock.t += 60
        ctl.tick_all(clock.t)
    fleet = view.fleet()
    assert fleet["budget_gpus"] == 16.0 and fleet["source"] == where
    assert ctl.allocation is not None and ctl.allocation.used_gpus <= 16.0
    _, ready = view.readiness()
    assert ready["fleet"]["warnings"] == []


# -- the fake API server: 503s ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    f = FakeKube()
    f.put_object(
        "v1",
        "resourcequotas",
        {**quota({"requests.nvidia.com/gpu": "16"}), "metadata": {"name": "gpu-quota", "namespace": NS}},
    )
    yield f
    f.close()


def actuator(fake: FakeKube) -> KubernetesActuator:
    cfg = client.Configuration(host=fake.url)
    cfg.retries = 0
    return KubernetesActuator(client.ApiClient(cfg))


def test_a_503_before_the_first_read_leaves_no_budget_and_one_after_keeps_the_last(fake: FakeKube) -> None:
    k8s = actuator(fake)
    fake.fail_next[("get", "resourcequotas")] = [503]
    budget = QuotaBudget(lambda: k8s.gpu_quota(NS, "gpu-quota"), "ResourceQuota serving/gpu-quota", 60.0)
    assert budget.read(0.0) is None and "HTTP 503" in budget.error  # none yet: each model plans alone
    assert budget.read(30.0) is None  # not re-read before refresh_s
    assert budget.read(60.0) == 16.0 and budget.error == ""
    fake.put_object(
        "v1",
        "resourcequotas",
        {
            "metadata": {"name": "gpu-quota", "namespace": NS},
            "spec": {"hard": {"requests.nvidia.com/gpu": "24"}},
        },
    )
    assert budget.read(120.0) == 24.0
    fake.fail_next[("get", "resourcequotas")] = [503]
    assert budget.read(180.0) == 24.0
    assert "HTTP 503" in budget.error and "keeping 24 GPUs from the last read" in budget.error
    fake.fail_next[("get", "resourcequotas")] = [503]
    with pytest.raises(TransientError):  # the actuator's own error type for a 503
        k8s.gpu_quota(NS, "gpu-quota")


# -- no server ----------------------------------------------------------------------------------------------


def test_gpu_quota_config_is_checked() -> None:
    base: dict[str, Any] = {"models": []}
    ok = parse_config({**base, "fleet": {"gpu_quota": {"namespace": NS, "name": "gpu-quota"}}})
    assert ok.fleet.gpu_quota is not None and ok.fleet.gpu_quota.resource == "requests.nvidia.com/gpu"
    with pytest.raises(ConfigError, match="not both"):
        parse_config({**base, "fleet": {"gpu_budget": 8, "gpu_quota": {"namespace": NS, "name": "q"}}})
    with pytest.raises(ConfigError, match=r"fleet.gpu_quota.refresh_s=0"):
        parse_config({**base, "fleet": {"gpu_quota": {"namespace": NS, "name": "q", "refresh_s": 0}}})
