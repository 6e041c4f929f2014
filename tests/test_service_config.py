"""The configured service end to end: traffic from a real (backfilled) Prometheus, decisions applied through
the official client to the REAL Kubernetes control plane (tests/kube_cluster.py: its HPA, Events and Leases,
in a namespace of the test's own), the nightly backtest and the API over it all. Nothing here needs a fault
a real server cannot produce, so no fake API server is used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import TrafficSeries
from service.compose import build_from_config
from service.config import parse_config
from service.nightly import nightly_backtest
from service.runtime import Controller
from service.serve import Jobs, Running
from service.view import ControllerView
from tests.fakes import Clock
from tests.kube_cluster import KubeCluster, wait_until
from tests.prometheus_harness import PrometheusProcess, backfill, require_binaries
from tests.test_kube_real import Kube, hpa

DAYS = 6
STEP = 60


@pytest.fixture(scope="module")
def traffic() -> TrafficSeries:
    return generate(DEMO_FLEET[0], days=DAYS, step_s=STEP, seed=5)


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, traffic: TrafficSeries
) -> Iterator[PrometheusProcess]:
    require_binaries()
    data = tmp_path_factory.mktemp("svc") / "data"
    stale = traffic.slice(0, len(traffic) - 120)  # stopped reporting two hours ago
    backfill(
        [
            TrafficSeries("llm", traffic.start_s, STEP, traffic.values),
            TrafficSeries("quiet", stale.start_s, STEP, stale.values),
        ],
        data,
    )
    server = PrometheusProcess(data).start()
    yield server
    server.stop()


@pytest.fixture
def kube(kube_cluster: KubeCluster, kube_ns: str) -> Kube:
    """The test's namespace: llm (2 replicas) under an HPA (floor 2), quiet (3 replicas) under none."""
    k = Kube(kube_cluster, kube_ns)
    k.deploy("llm", 2)
    k.deploy("quiet", 3)
    k.hpa.create_namespaced_horizontal_pod_autoscaler(kube_ns, hpa("llm", 2, 60))
    return k


def config(prom_url: str, store: Path, capacity: float, ns: str) -> dict[str, Any]:
    def model(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "query": f'sum(rate(prewarm_requests_total{{model="{name}"}}[1m]))',
            "step_s": STEP,
            "history_days": DAYS,
            "capacity_rps": capacity,
            "t_load_s": 300,
            "forecaster": "profile",
            "mode": "active",
            "target": {"kind": "Deployment", "namespace": ns, "name": name},
        }

    return {
        "prometheus": {"url": prom_url, "retries": 0},
        "models": [model("llm"), model("quiet")],
        "store": {"url": f"sqlite:///{store}"},
        "api": {"token": "t"},
        "kubernetes": {"in_cluster": False, "lease_namespace": ns},
    }


def test_a_configured_fleet_reads_prometheus_acts_on_kubernetes_and_explains_itself(
    kube_cluster: KubeCluster,
    prometheus: PrometheusProcess,
    kube: Kube,
    traffic: TrafficSeries,
    tmp_path: Path,
) -> None:
    capacity = float(np.quantile(traffic.values / STEP, 0.999)) / 15
    cfg = parse_config(config(prometheus.url, tmp_path / "store.db", capacity, kube.ns))
    clock = Clock(traffic.end_s)
    ctl = build_from_config(cfg, clock, kubernetes_api_client=kube_cluster.api())
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock)
    assert ctl.leader is not None
    for _ in range(3):
        ctl.leader.step()  # the service renews the Lease on its own schedule (LeaderLoop.start)
        jobs.tick_all()
        clock.t += 30

    # llm: fresh data, a forecast, and the HPA's floor set to the decision through the official client
    (last,) = ctl.store.decisions("llm", limit=1)
    assert last.record["reason"] in (
        "ForecastDemand",
        "ReactiveFloor",
        "ScaleDownStabilized",
        "DesiredWithinRange",
    )
    assert kube.hpa_floor("llm") == last.record["desired_replicas"]
    assert last.actuation is not None and last.actuation["outcome"] in ("applied", "unchanged")
    assert kube.prewarm_events("llm")  # the server's own Events on the Deployment
    lease = kube.coord.read_namespaced_lease("prewarm-leader", kube.ns)
    assert lease.spec.holder_identity == ctl.leader.elector.identity

    # quiet: its data stopped two hours ago, so it holds (never scales down) and says why
    (q,) = ctl.store.decisions("quiet", limit=1)
    assert q.record["reason"] == "ForecastStale" and "traffic data is stale" in q.record["explanation"]
    assert kube.replicas("quiet") == 3 and not kube.prewarm_events("quiet")

    # the nightly backtest runs the same code path and is served by the API; readiness names the stale model
    result = nightly_backtest(ctl, "llm", clock.t, 4)
    assert set(result["policies"]) >= {"reactive", "predictive", "oracle", "static-0"}
    with TestClient(create_app(view, api_token="t")) as c:
        bt = c.get("/v1/models/llm/backtests/latest").json()
        assert bt["comparison"] == result["comparison"]
        ready = c.get("/readyz").json()
    assert ready["models"]["llm"]["ready"] is True
    assert not ready["models"]["quiet"]["ready"]
    assert ready["ready"] is True and ready["degraded"] == ["quiet"]  # the process serves; quiet says why


def test_pause_shadow_and_the_kill_switch_give_the_hpa_its_own_floor_back(
    kube_cluster: KubeCluster,
    prometheus: PrometheusProcess,
    kube: Kube,
    traffic: TrafficSeries,
    tmp_path: Path,
) -> None:
    capacity = float(np.quantile(traffic.values / STEP, 0.999)) / 15
    doc = config(prometheus.url, tmp_path / "store.db", capacity, kube.ns)
    doc["models"] = [{**doc["models"][0], "min_replicas": 5}]  # prewarm's floor is above the HPA's own (2)
    clock = Clock(traffic.end_s)
    api = kube_cluster.api()

    def raised() -> tuple[Controller, ControllerView, Jobs]:
        ctl = build_from_config(parse_config(doc), clock, kubernetes_api_client=api)
        view = ControllerView(ctl, clock)
        jobs = Jobs(ctl, view, clock)
        assert ctl.leader is not None
        ctl.leader.step()
        jobs.tick_all()
        (d,) = ctl.store.decisions("llm", limit=1)
        assert floor() > 2, (d.record, d.actuation)
        return ctl, view, jobs

    def floor() -> int:
        return kube.hpa_floor("llm")

    ctl, view, jobs = raised()
    view.set_paused("llm", True)
    assert floor() == 2  # the HPA's own floor, at once
    view.set_paused("llm", False)
    jobs.tick_all()
    assert floor() > 2
    view.set_mode("llm", "shadow")
    assert floor() == 2

    # a restart with the kill switch on: once it leads, whatever it raised goes back, and it writes nothing
    assert ctl.leader is not None
    ctl.leader.stop()  # a clean stop releases the Lease for the next process
    ctl, _, _ = raised()
    assert ctl.leader is not None
    ctl.leader.stop()
    ctl = build_from_config(parse_config({**doc, "kill_switch": True}), clock, kubernetes_api_client=api)
    view = ControllerView(ctl, clock, kill_switch=True)
    running = Running(ctl, view, Jobs(ctl, view, clock), 30.0, ctl.compute, kill_switch=True)
    running.start(tick_now=False)
    try:  # the leader loop's thread acquires the Lease, then restores
        wait_until("the kill switch to give the HPA its floor back", lambda: floor() == 2, timeout_s=20)
    finally:
        running.stop()
