"""API latency under load: p50/p99 of the forecast and decisions endpoints for 1,000 configured models,
100 concurrent clients on loopback, against /healthz measured the same way in the same run (the server's
own floor).

    python -m benchmarks.bench_api [--models 1000] [--clients 100] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from actuator.base import Target
from actuator.safety import GuardedActuator, Mode, Rails
from api.app import create_app
from benchmarks.bench_fit import make_fleet
from planner import PlannerSpec
from service.runtime import Controller, ModelRuntime, SimulatedFleet
from service.store import DecisionStore
from service.view import ControllerView
from tests.prometheus_harness import free_port


def build(n: int, store: Path) -> tuple[ControllerView, list[str]]:
    fleet = make_fleet(n, days=15, step_s=300)
    now = fleet[0].start_s + 14 * 86_400
    clock = lambda: now  # noqa: E731
    sim = SimulatedFleet(clock, 300.0)
    runtimes, rails = [], {}
    for i, s in enumerate(fleet):
        name = f"model-{i:04d}"
        cap = float(np.quantile(s.values / 300, 0.999)) / 15
        t = Target("Simulated", "bench", name)
        spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=300.0, tick_s=30.0)
        runtimes.append(ModelRuntime(name, t, spec, lambda now_s, s=s: s.before(now_s), forecaster="profile"))
        rails[t] = Rails(mode=Mode.ACTIVE)
    ctl = Controller(runtimes, GuardedActuator(sim, rails=rails), DecisionStore(f"sqlite:///{store}"))
    for name in ctl.models:
        ctl.refit_model(name, now)
        for k in range(5):
            ctl.tick_model(name, now + 30 * k)
    return ControllerView(ctl, clock), list(ctl.models)


async def load(client: httpx.AsyncClient, paths: list[str], clients: int) -> list[float]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            p = queue.get_nowait()
            t = time.perf_counter()
            r = await client.get(p)
            latencies.append(time.perf_counter() - t)
            assert r.status_code == 200, (p, r.status_code, r.text[:200])

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


async def measure(url: str, runs: dict[str, list[str]], clients: int) -> dict[str, tuple[list[float], float]]:
    """One pool of `clients` keep-alive connections, warmed up first, then each endpoint in turn."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    out = {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await load(client, ["/healthz"] * clients * 5, clients)  # open and warm the connections
        for label, paths in runs.items():
            t = time.perf_counter()
            lat = await load(client, paths, clients)
            out[label] = (lat, time.perf_counter() - t)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.quantile(np.array(xs), q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        view, names = build(args.models, Path(tmp) / "store.db")
        print(f"{args.models} models fitted and ticked 5 times each in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        app = create_app(view, api_token=None)

        def run_server() -> None:  # a forked process: the server does not share a GIL with the clients
            view.ctl.store.engine.dispose(close=False)
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")

        # the forked server shares the parent's heap copy-on-write; without freeze() its first full
        # collections touch every object's header and copy the whole heap mid-run (seconds of p99 that a
        # server started normally never pays)
        gc.freeze()
        proc = multiprocessing.get_context("fork").Process(target=run_server, daemon=True)
        proc.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        rng = np.random.default_rng(0)
        picks = [names[i] for i in rng.integers(0, len(names), args.requests)]
        runs = {
            "healthz (baseline)": ["/healthz"] * args.requests,
            "forecast": [f"/v1/models/{m}/forecast?horizon=2h&quantiles=0.5,0.9" for m in picks],
            "decisions": [f"/v1/models/{m}/decisions?limit=20" for m in picks],
        }
        results = asyncio.run(measure(url, runs, args.clients))
        proc.terminate()
        proc.join(10)
    base = statistics.median(results["healthz (baseline)"][0])
    print(f"{args.clients} concurrent clients, {args.requests} requests per endpoint, loopback")
    for label, (lat, wall) in results.items():
        print(
            f"  {label:20s} p50 {pct(lat, 0.5):7.1f} ms  p99 {pct(lat, 0.99):7.1f} ms  "
            f"{len(lat) / wall:7.0f} req/s  (p50 / healthz p50 = {statistics.median(lat) / base:.1f}x)"
        )


if __name__ == "__main__":
    main()
