"""A real Ray head on 127.0.0.1 for the tests that need one (the Ray Serve actuator, the Ray compute
backend), and a cluster of several nodes on this machine (the head and worker nodes, each its own
`ray start` with its own raylet and object store): started with `ray start`, stopped with `ray stop --force`,
which stops every Ray process on the machine, so the modules that use it share one xdist group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.prometheus_harness import free_port

ROOT = Path(__file__).resolve().parent.parent


# each node's shared-memory object store in a cluster on one machine: the default (30% of memory per node)
# would ask /dev/shm for several times what the tests' small objects need
STORE = ("--object-store-memory=200000000",)


@dataclass(frozen=True)
class RayHead:
    address: str  # host:port of the GCS, for ray.init
    dashboard_url: str | None  # the REST API Ray Serve is driven through, when started with one


@contextmanager
def ray_head(
    *,
    dashboard: bool = False,
    extra_env: dict[str, str] | None = None,
    cpus: int = 2,
    worker_nodes: int = 0,
) -> Iterator[RayHead]:
    """A head with `cpus` CPUs, and `worker_nodes` more nodes of one CPU each joined to it."""
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": str(ROOT),  # workers and replicas import test modules
        # a 2-core machine running the whole suite (and a Kubernetes control plane) beside Ray can starve
        # a raylet for seconds; the default health check (5 misses of 10 s) then declares the node dead and
        # the head's dashboard goes with it. Tests wait on state, so a slow node is fine; a dead one is not
        "RAY_health_check_failure_threshold": "30",
        "RAY_health_check_timeout_ms": "30000",
        **(extra_env or {}),
    }
    gcs, dash = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    args = [
        ray,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        f"--num-cpus={cpus}",
        "--disable-usage-stats",
        f"--temp-dir={tmp}",
        *(STORE if worker_nodes else ()),
    ]
    if dashboard:
        args += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true"]
    else:
        args.append("--include-dashboard=false")
    subprocess.run(args, check=True, capture_output=True, env=env, cwd=ROOT)
    try:
        for _ in range(worker_nodes):  # a node of its own: a raylet and object store joined to the head
            join = [ray, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
            subprocess.run(
                [*join, "--disable-usage-stats", *STORE], check=True, capture_output=True, env=env, cwd=ROOT
            )
        yield RayHead(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}" if dashboard else None)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
        shutil.rmtree(tmp, ignore_errors=True)
