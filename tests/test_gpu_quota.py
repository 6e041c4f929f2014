"""The fleet's GPU budget read from a namespace ResourceQuota through the Kubernetes actuator (the official
client over HTTP, against the fake API server), kept when a read fails, and shown in /readyz and
/v1/fleet."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from actuator.errors import PermanentError, TransientError
from actuator.kubernetes import KubernetesActuator
from service.budget import QuotaBudget
from service.config import ConfigError, parse_config
from service.runtime import Controller
from service.serve import build_demo, demo_start_s
from service.view import ControllerView
from tests.fake_kube import FakeKube
from tests.fakes import Clock

NS = "serving"


def quota(hard: dict[str, str], used: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "gpu-quota", "namespace": NS},
        "spec": {"hard": hard},
        "status": {"hard": hard, "used": used or {k: "0" for k in hard}},
    }


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.put_object("v1", "resourcequotas", quota({"requests.nvidia.com/gpu": "16", "pods": "100"}))
    yield fake
    fake.close()


def actuator(fake: FakeKube) -> KubernetesActuator:
    cfg = client.Configuration(host=fake.url)
    cfg.retries = 0
    return KubernetesActuator(client.ApiClient(cfg))


def test_the_hard_gpu_limit_of_a_resource_quota_is_read_over_http(kube: FakeKube) -> None:
    k8s = actuator(kube)
    assert k8s.gpu_quota(NS, "gpu-quota") == 16.0
    assert ("get", "resourcequotas") in kube.log
    assert k8s.gpu_quota(NS, "gpu-quota", "pods") == 100.0


def test_a_quota_without_the_resource_a_missing_quota_and_rbac_are_permanent_and_say_why(
    kube: FakeKube,
) -> None:
    k8s = actuator(kube)
    with pytest.raises(PermanentError, match=r"sets no hard limit on requests.amd.com/gpu; it limits pods, "):
        k8s.gpu_quota(NS, "gpu-quota", "requests.amd.com/gpu")
    with pytest.raises(PermanentError, match=r"ResourceQuota serving/other: HTTP 404"):
        k8s.gpu_quota(NS, "other")
    kube.deny.add(("get", "resourcequotas"))
    with pytest.raises(PermanentError, match=r"cannot get resource \"resourcequotas\".*rbac.yaml"):
        k8s.gpu_quota(NS, "gpu-quota")


def test_the_budget_follows_the_quota_and_keeps_the_last_read_when_a_read_fails(kube: FakeKube) -> None:
    k8s = actuator(kube)
    kube.fail_next[("get", "resourcequotas")] = [503]
    budget = QuotaBudget(lambda: k8s.gpu_quota(NS, "gpu-quota"), "ResourceQuota serving/gpu-quota", 60.0)
    assert budget.read(0.0) is None and "HTTP 503" in budget.error  # none yet: each model plans alone
    assert budget.read(30.0) is None  # not re-read before refresh_s
    assert budget.read(60.0) == 16.0 and budget.error == ""
    kube.put_object("v1", "resourcequotas", quota({"requests.nvidia.com/gpu": "24"}))
    assert budget.read(90.0) == 16.0  # read once a minute
    assert budget.read(120.0) == 24.0  # raising the quota raises the budget, no restart
    kube.fail_next[("get", "resourcequotas")] = [503]
    assert budget.read(180.0) == 24.0
    assert "keeping 24 GPUs from the last read" in budget.error
    kube.fail_next[("get", "resourcequotas")] = [503]
    with pytest.raises(TransientError):  # the actuator's own error type for a 503
        k8s.gpu_quota(NS, "gpu-quota")


def test_the_service_plans_against_the_quota_and_says_where_the_budget_came_from(
    kube: FakeKube, tmp_path: Any
) -> None:
    clock = Clock(demo_start_s() + 8 * 3600)
    k8s = actuator(kube)
    budget = QuotaBudget(lambda: k8s.gpu_quota(NS, "gpu-quota"), "ResourceQuota serving/gpu-quota", 60.0)
    ctl: Controller = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", gpu_budget=budget)
    view = ControllerView(ctl, clock)
    kube.deny.add(("get", "resourcequotas"))
    ctl.tick_all(clock.t)
    _, ready = view.readiness()
    assert ready["fleet"]["budget_gpus"] is None
    assert "no GPU budget yet, each model plans alone" in ready["fleet"]["warnings"][0]
    assert "cannot get resource" in ready["fleet"]["warnings"][0]
    kube.deny.discard(("get", "resourcequotas"))
    for _ in range(3):
        clock.t += 60
        ctl.tick_all(clock.t)
    fleet = view.fleet()
    assert fleet["budget_gpus"] == 16.0 and fleet["source"] == "ResourceQuota serving/gpu-quota"
    assert ctl.allocation is not None and ctl.allocation.used_gpus <= 16.0
    _, ready = view.readiness()
    assert ready["fleet"]["warnings"] == []


def test_gpu_quota_config_is_checked() -> None:
    base: dict[str, Any] = {"models": []}
    ok = parse_config({**base, "fleet": {"gpu_quota": {"namespace": NS, "name": "gpu-quota"}}})
    assert ok.fleet.gpu_quota is not None and ok.fleet.gpu_quota.resource == "requests.nvidia.com/gpu"
    with pytest.raises(ConfigError, match="not both"):
        parse_config({**base, "fleet": {"gpu_budget": 8, "gpu_quota": {"namespace": NS, "name": "q"}}})
    with pytest.raises(ConfigError, match=r"fleet.gpu_quota.refresh_s=0"):
        parse_config({**base, "fleet": {"gpu_quota": {"namespace": NS, "name": "q", "refresh_s": 0}}})
