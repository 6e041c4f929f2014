"""The Kubernetes actuator's share of a control tick, against a real control plane (scripts/control-plane).

    python -m benchmarks.bench_kube_tick [--models 100 300] [--rounds 2] [--kubeconfig PATH] [--json]

In a namespace of its own, N models each a Deployment of 2 pods (kwok runs them) scaled by an HPA (2..20),
as tests/test_kube_real.py builds them. A tick asks the actuator, of each model: its replicas (current), to
hold the floor it already holds (apply: UNCHANGED, the steady tick) and its cold starts, in the order
service/runtime.py asks. Each round times that tick twice, in turns: read model by model (`one_by_one`,
the actuator without bulk reads) and within `reading(targets)` (`listed`: each namespace listed once per
kind, actuator/base.py BulkReader), each on an actuator of its own; and `listed_next`, the second listed
tick of one actuator (its pods are not listed again while no workload's status moves). Then one more
listed tick in which a tenth of the models ask one replica more (their HPAs are re-read and replaced, an
Event written each).

Per mode: the tick's seconds (the median of the rounds), requests and KiB read per model (at the client's
transport), and the ratio listed / one by one. Without --kubeconfig, a cluster of 10 kwok nodes is started
for the run and stopped after it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client

from actuator.base import Outcome, Target
from actuator.kubernetes import KubernetesActuator
from planner.explain import Decision, Reason, Step
from tests.kube_cluster import KubeCluster, wait_until
from tests.test_kube_real import deployment, hpa

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "scripts" / "control_plane" / "cli.py"


class Transport:
    """Requests and bytes one ApiClient receives, counted at its transport."""

    def __init__(self, api: client.ApiClient) -> None:
        self.requests = 0
        self.bytes = 0
        send = api.rest_client.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            response = send(method, url, *args, **kwargs)
            self.bytes += len(response.read() or b"")  # read once here; the client reads the same bytes
            return response

        api.rest_client.request = request  # type: ignore[method-assign]


def decision(desired: int) -> Decision:
    step = Step("demand", None, desired, Reason.FORECAST_DEMAND, "forecast p90 at the floor")
    return Decision(time.time(), True, desired, desired, desired, Reason.FORECAST_DEMAND, (step,))


def tick(act: KubernetesActuator, targets: list[Target], up: frozenset[Target]) -> collections.Counter[str]:
    """One tick's calls for every model; returns the outcomes."""
    outcomes: collections.Counter[str] = collections.Counter()
    for t in targets:
        have = act.current(t)
        held = have.floor if have.floor is not None else have.desired
        outcomes[str(act.apply(t, decision(held + (1 if t in up else 0)), "bench").outcome)] += 1
        act.cold_starts(t)
    return outcomes


def timed(
    cluster: KubeCluster,
    targets: list[Target],
    listed: bool,
    up: frozenset[Target] = frozenset(),
    ticks: int = 1,
) -> dict[str, Any]:
    """The last of `ticks` ticks on one actuator (the first lists the pods too; a later one, where no
    workload's status moved, does not)."""
    api = cluster.api()
    seen = Transport(api)
    act = KubernetesActuator(api)
    for _ in range(ticks - 1):
        with act.reading(targets) if listed else contextlib.nullcontext():
            tick(act, targets, up)
    seen.requests = seen.bytes = 0
    t0 = time.perf_counter()
    with act.reading(targets) if listed else contextlib.nullcontext():
        outcomes = tick(act, targets, up)
    seconds = time.perf_counter() - t0
    n = len(targets)
    return {
        "s": seconds,
        "requests_per_model": round(seen.requests / n, 2),
        "kib_per_model": round(seen.bytes / n / 1024, 1),
        "outcomes": dict(outcomes),
    }


def measure(cluster: KubeCluster, models: int, rounds: int) -> dict[str, Any]:
    ns = cluster.namespace(f"bench-{models}")
    admin = cluster.api()
    apps, hpas = client.AppsV1Api(admin), client.AutoscalingV2Api(admin)
    targets = []
    for i in range(models):
        name = f"model-{i:04d}"
        apps.create_namespaced_deployment(ns, deployment(name, 2))
        hpas.create_namespaced_horizontal_pod_autoscaler(ns, hpa(name, 2, 20))
        targets.append(Target("Deployment", ns, name))

    def all_ready() -> bool:
        items = apps.list_namespaced_deployment(ns).items
        return sum(1 for d in items if (d.status.ready_replicas or 0) >= 2) == models

    wait_until(f"{models} Deployments Ready", all_ready, timeout_s=900)
    runs: dict[str, list[dict[str, Any]]] = {"one_by_one": [], "listed": [], "listed_next": []}
    for _ in range(rounds):
        runs["one_by_one"].append(timed(cluster, targets, listed=False))
        runs["listed"].append(timed(cluster, targets, listed=True))
        runs["listed_next"].append(timed(cluster, targets, listed=True, ticks=2))
    change = timed(cluster, targets, listed=True, up=frozenset(targets[::10]))
    cluster.delete_namespace(ns)
    out: dict[str, Any] = {"models": models}
    for mode, rs in runs.items():
        steady = all(r["outcomes"] == {str(Outcome.UNCHANGED): models} for r in rs)
        out[mode] = {
            "tick_s": round(statistics.median(r["s"] for r in rs), 3),
            "ticks_s": [round(r["s"], 3) for r in rs],
            "requests_per_model": rs[-1]["requests_per_model"],
            "kib_per_model": rs[-1]["kib_per_model"],
            "all_unchanged": steady,
        }
    out["listed_vs_one_by_one"] = round(out["listed"]["tick_s"] / out["one_by_one"]["tick_s"], 4)
    out["listed_next_vs_one_by_one"] = round(out["listed_next"]["tick_s"] / out["one_by_one"]["tick_s"], 4)
    out["listed_tenth_up"] = {
        "tick_s": round(change["s"], 3),
        "requests_per_model": change["requests_per_model"],
        "outcomes": change["outcomes"],
    }
    return out


@contextlib.contextmanager
def cluster_for(kubeconfig: str | None) -> Iterator[KubeCluster]:
    if kubeconfig:
        yield KubeCluster.from_kubeconfig(Path(kubeconfig))
        return
    d = Path(tempfile.mkdtemp(prefix="bench-kube-"))
    subprocess.run([sys.executable, str(CLI), "start", "--dir", str(d), "--nodes", "10"], check=True)
    try:
        yield KubeCluster.from_kubeconfig(d / "kubeconfig")
    finally:
        subprocess.run([sys.executable, str(CLI), "stop", "--dir", str(d)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kubeconfig", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with cluster_for(args.kubeconfig) as cluster:
        results = [measure(cluster, n, args.rounds) for n in args.models]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
