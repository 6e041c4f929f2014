"""The first try on a cluster, as a new user makes it: `prewarm serve --config` started as a real process,
reading a real (backfilled) Prometheus that holds two days where the config asks for fourteen, acting on the
real Kubernetes control plane (tests/kube_cluster.py) through the official client. It must be ready within a
minute, forecast within one tick of its fit finishing, run without the API token's Secret, give the HPA its
floor back on pause and on SIGTERM, release its Lease, and leave no process behind; two such processes on
one host never lead at once, and a SIGKILLed leader's successor takes over."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import TrafficSeries
from service.store import DecisionStore
from tests.prometheus_harness import PrometheusProcess, backfill, require_binaries
from tests.serve_process import ServeProcess, alive, cmdline, descendants
from tests.test_kube_real import deployment, hpa

STEP = 60
HISTORY_DAYS = 2.0
TOKEN = "s3cret-token"
MODEL = "llm"


@pytest.fixture(scope="module")
def traffic() -> TrafficSeries:
    """Two days of the demo's chat traffic, ending a minute ago on the wall clock (the service runs on it)."""
    end = (time.time() // STEP) * STEP - STEP
    shape = generate(DEMO_FLEET[0], days=HISTORY_DAYS, step_s=STEP, seed=11)
    return TrafficSeries(MODEL, end - len(shape) * STEP, STEP, shape.values)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, traffic: TrafficSeries) -> Iterator[str]:
    require_binaries()
    data = tmp_path_factory.mktemp("first-run") / "data"
    backfill([traffic], data)
    server = PrometheusProcess(data).start()
    yield server.url
    server.stop()


@pytest.fixture
def workload(kube_cluster: Any) -> tuple[client.ApiClient, str]:
    """A namespace of its own holding the model's Deployment and the HPA that scales it (floor 1)."""
    ns = kube_cluster.namespace("first-run")
    api = kube_cluster.api()
    client.AppsV1Api(api).create_namespaced_deployment(ns, deployment(MODEL, 1))
    client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(ns, hpa(MODEL, 1, 60))
    return api, ns


def config(
    prom: str, ns: str, kubeconfig: Path, store: Path, traffic: TrafficSeries, **kube: Any
) -> dict[str, Any]:
    capacity = float(np.quantile(traffic.values / STEP, 0.999)) / 15
    return {
        "prometheus": {"url": prom, "retries": 1},
        "models": [
            {
                "name": MODEL,
                "query": f'sum(rate(prewarm_requests_total{{model="{MODEL}"}}[1m]))',
                "step_s": STEP,
                # the default window: fourteen days, of which Prometheus holds two
                "max_staleness_s": 3600,
                "capacity_rps": capacity,
                "t_load_s": 300,
                "forecaster": "auto-fast",
                "mode": "active",
                "target": {
                    "kind": "Deployment",
                    "namespace": ns,
                    "name": MODEL,
                    "actuator_mode": "hpa-floor",
                },
            }
        ],
        "api": {"token_file": str(store.parent / "api-token")},  # the Secret not created yet
        "store": {"url": f"sqlite:///{store}"},
        "schedules": {"tick_s": 10},
        "compute": {"workers": 2},
        "kubernetes": {"in_cluster": False, "kubeconfig": str(kubeconfig), "lease_namespace": ns, **kube},
    }


def hpa_floor(api: client.ApiClient, ns: str) -> tuple[int, dict[str, str]]:
    h = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(MODEL, ns)
    return int(h.spec.min_replicas), dict(h.metadata.annotations or {})


def lease_holder(api: client.ApiClient, ns: str) -> str | None:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease("prewarm-leader", ns).spec.holder_identity
    except client.ApiException:
        return None


def test_a_first_run_is_ready_forecasts_acts_pauses_and_stops_cleanly(
    prometheus: str,
    traffic: TrafficSeries,
    workload: tuple[client.ApiClient, str],
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    api, ns = workload
    svc = ServeProcess(config(prometheus, ns, kube_cluster.kubeconfig, tmp_path / "s.db", traffic), tmp_path)
    started = time.monotonic()
    svc.start()
    try:
        # ready within a minute: it ticks at start, and a model still without a forecast does not hold it
        ready = svc.wait_for("/readyz 200", lambda: (r := svc.get("/readyz"))[0] == 200 and r[1], 60)
        ready_after_s = time.monotonic() - started
        assert ready_after_s < 60
        assert any("POST endpoints are refused" in w and "does not exist" in w for w in ready["warnings"])
        code, body = svc.request("POST", f"/v1/models/{MODEL}/pause", token=TOKEN)
        assert code == 403 and "api-token" in body["detail"]

        # a forecast on the two days that exist, within one tick of the fit finishing
        model = svc.wait_for("a fit", lambda: (m := svc.get(f"/v1/models/{MODEL}")[1])["fit"] and m, 120)
        # from the first sample to the read (a trailing gap within max_staleness_s counts), not 14 days
        assert 1.9 * 86_400 < model["fit"]["history_s"] <= time.time() - traffic.start_s + STEP
        (installed,) = [e for e in svc.events() if e["event"] == "full fit installed"]
        svc.wait_for("a forecast", lambda: svc.get(f"/v1/models/{MODEL}/forecast?horizon=1h")[0] == 200, 10)

        # the leader raises the HPA's floor to its decision
        floor = svc.wait_for("a raised floor", lambda: (f := hpa_floor(api, ns))[0] > 1 and f, 60)
        assert floor[1]["prewarm.io/original-floor"] == "1"
        holder = lease_holder(api, ns)
        assert holder is not None and holder.count("_") >= 2  # host or pod name, pid, random suffix

        # the Secret appears: the token works without a restart, and pausing gives the floor back at once
        (tmp_path / "api-token").write_text(TOKEN + "\n")
        assert svc.request("POST", f"/v1/models/{MODEL}/pause", token=TOKEN)[0] == 200
        assert hpa_floor(api, ns) == (1, {})
        assert svc.request("POST", f"/v1/models/{MODEL}/resume", token=TOKEN)[0] == 200
        svc.wait_for("the floor raised again", lambda: hpa_floor(api, ns)[0] > 1, 30)

        # SIGTERM: the floor goes back, the Lease is released, and no worker is left behind
        children = descendants(svc.proc.pid)  # type: ignore[union-attr]
        assert children, "the compute pool's processes"
        svc.signal(signal.SIGTERM)
        assert svc.wait(30) == 0
        assert hpa_floor(api, ns) == (1, {})
        assert lease_holder(api, ns) == ""
        deadline = time.monotonic() + 10  # the pool's helpers see their parent go and exit
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [cmdline(p) for p in children if alive(p)] == []
    finally:
        svc.stop()
    names = [e["event"] for e in svc.events()]
    for expected in ("starting", "listening", "leadership gained", "full fit installed", "decision applied"):
        assert expected in names, expected
    assert names.count("floor restore") >= 2 and names[-1] == "stopped"
    assert "Mean of empty slice" not in svc.log_path.read_text()
    # for the note: how long the first run took to be ready and to forecast
    print(f"ready after {ready_after_s:.1f} s; fit installed at {installed['ts']}")


LEADER_SOAK_S = float(os.environ.get("PREWARM_LEADER_SOAK_S", "40"))


def test_two_processes_on_one_host_never_lead_at_once_and_a_killed_leader_is_replaced(
    prometheus: str,
    traffic: TrafficSeries,
    workload: tuple[client.ApiClient, str],
    kube_cluster: Any,
    tmp_path: Path,
) -> None:
    _, ns = workload
    lease = {"lease_duration_s": 4, "renew_deadline_s": 3, "retry_period_s": 1}
    procs = []
    for name in ("a", "b"):
        doc = config(prometheus, ns, kube_cluster.kubeconfig, tmp_path / f"{name}.db", traffic, **lease)
        doc["schedules"]["tick_s"] = 1
        doc["compute"]["workers"] = 1
        procs.append(ServeProcess(doc, tmp_path, name=name).start())
    a, b = procs
    try:
        for p in procs:
            p.wait_for("/readyz 200", lambda p=p: p.get("/readyz")[0] == 200, 60)
        samples: list[tuple[float, bool, bool]] = []
        end = time.monotonic() + LEADER_SOAK_S
        while time.monotonic() < end:
            both = [p.get("/readyz")[1]["leader"] for p in procs]
            samples.append((time.monotonic(), both[0], both[1]))
            time.sleep(0.1)
        assert not any(x and y for _, x, y in samples), "two leaders at once"
        assert sum(1 for _, x, y in samples if x or y) > 0.9 * len(samples)  # someone leads nearly always
        leader, standby = (a, b) if samples[-1][1] else (b, a)
        killed = time.monotonic()
        leader.signal(signal.SIGKILL)
        leader.wait(10)
        standby.wait_for("the standby to lead", lambda: standby.get("/readyz")[1]["leader"], 30)
        failover_s = time.monotonic() - killed

        def acted() -> bool:
            (last,) = standby.get(f"/v1/models/{MODEL}/decisions?limit=1")[1]
            return last["actuation"] is not None and last["actuation"]["outcome"] != "skipped"

        standby.wait_for("the new leader to act", acted, 10)
        # observation-based expiry: the standby waits a whole lease duration after the last renew it saw
        assert failover_s <= lease["lease_duration_s"] + 2 * lease["retry_period_s"] + 1
    finally:
        for p in procs:
            p.stop()
    # no decision applied by a process that did not hold the Lease: the ticks at which each process acted
    # (wrote or found nothing to write) form runs, one per leadership, never interleaved
    acts = sorted(
        (d.at_s, p.name)
        for p in procs
        for d in DecisionStore(p.doc["store"]["url"]).decisions(MODEL, limit=100_000)
        if d.actuation is not None and d.actuation["outcome"] in ("applied", "unchanged", "failed")
    )
    runs = 1 + sum(1 for (_, x), (_, y) in itertools.pairwise(acts) if x != y)
    transitions = sum(1 for s0, s1 in itertools.pairwise(samples) if s0[1:] != s1[1:] and any(s1[1:]))
    assert acts and acts[-1][1] == standby.name
    assert runs <= transitions + 2  # every change of writer is a change of leader (+ the failover)
    print(
        f"failover after SIGKILL: {failover_s:.1f} s (lease {lease['lease_duration_s']} s); {len(acts)} acts"
    )
