"""pytest plugin: ONE real Kubernetes control plane (scripts/control-plane) shared by the whole test run.

Why one: the control plane starts in seconds but builds in minutes, and a test needs only a namespace of its
own, so every test (on every pytest-xdist worker) shares one cluster and isolates itself by namespace.

Where it comes from, in order:
- `PREWARM_TEST_KUBECONFIG` set (scripts/test.sh starts a cluster before pytest and stops it after): that
  cluster; its state.json beside the kubeconfig names the kubectl that was built with it.
- otherwise the first test that asks builds (cached) and starts one in a temporary directory made by the
  pytest process that runs the session (the xdist controller, or the only process), under a file lock so the
  workers start ONE cluster between them; that process stops it when the run ends (pytest_sessionfinish),
  after every worker is done.
A control plane that cannot be built or started FAILS each test that needs it, with the reason; it is never
a silent skip (a CI without Kubernetes coverage must not look green).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "scripts" / "control_plane" / "cli.py"
ENV_KUBECONFIG = "PREWARM_TEST_KUBECONFIG"
ENV_RUN_DIR = "PREWARM_KUBE_RUN_DIR"  # set by the session's process, inherited by the xdist workers
START_TIMEOUT_S = 45 * 60  # a cold build on a shared 2-core machine, then the start
NS_LABEL = "prewarm.test/namespace"

T = TypeVar("T")


def wait_until(
    what: str, check: Callable[[], T | None], timeout_s: float = 60.0, interval_s: float = 0.25
) -> T:
    """Poll `check` until it returns something truthy and return that; fail the test with `what` and the last
    value seen at the deadline. Tests wait on state, never on fixed sleeps."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what} (last seen: {last!r})")
        time.sleep(interval_s)


@dataclass
class KubeCluster:
    """A reachable cluster and the ways a test talks to it (admin or as a ServiceAccount)."""

    kubeconfig: Path
    host: str
    admin_token: str
    ca_file: str
    kubectl_path: str
    share: Path | None = None  # CRDs fetched by `build` (KEDA's ScaledObject)
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeCluster:
        """Read server, token and CA from an admin kubeconfig (token auth, CA inline or as a file)."""
        cfg = yaml.safe_load(path.read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(
            (c["context"] for c in cfg["contexts"] if c["name"] == ctx_name), cfg["contexts"][0]["context"]
        )
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        if "token" not in user:
            raise RuntimeError(f"{path}: the tests need a token user (admin, system:masters)")
        state_path = path.parent / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        ca_file = cluster.get("certificate-authority") or state.get("ca")
        if not ca_file or not Path(ca_file).exists():  # the client library wants a file: one per CA
            pem = base64.b64decode(cluster["certificate-authority-data"])
            ca = Path(tempfile.gettempdir()) / f"prewarm-kube-ca-{hashlib.sha256(pem).hexdigest()[:16]}.crt"
            if not ca.exists():
                ca.write_bytes(pem)
            ca_file = str(ca)
        kubectl = str(Path(state["bin"]) / "kubectl") if state.get("bin") else shutil.which("kubectl")
        if not kubectl:
            raise RuntimeError(f"no kubectl: neither {state_path} names a built one nor is one on the PATH")
        return cls(
            kubeconfig=path,
            host=cluster["server"],
            admin_token=user["token"],
            ca_file=ca_file,
            kubectl_path=kubectl,
            share=Path(state["share"]) if state.get("share") else None,
            versions=state.get("versions", {}),
        )

    # -- clients --------------------------------------------------------------------------------------

    def api_as(self, token: str) -> client.ApiClient:
        """An ApiClient that authenticates with `token` (a ServiceAccount token from token_for, or admin's).
        No client-side retries: a test sees each status the server sends."""
        cfg = client.Configuration(host=self.host)
        cfg.ssl_ca_cert = self.ca_file
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        cfg.retries = 0
        return client.ApiClient(cfg)

    def api(self) -> client.ApiClient:
        return self.api_as(self.admin_token)

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bound token for the ServiceAccount, from the TokenRequest API (as a pod's projected token)."""
        core = client.CoreV1Api(self.api())
        req = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        out = core.create_namespaced_service_account_token(service_account, namespace, req)
        return str(out.status.token)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane, as admin; a failure fails the test, with output."""
        r = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and r.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    # -- isolation --------------------------------------------------------------------------------------

    def namespace(self, prefix: str) -> str:
        """A fresh namespace `<prefix>-<random>` (so tests on both workers never meet), returned once its
        default ServiceAccount exists (pods cannot be admitted before)."""
        base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "t"
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        core = client.CoreV1Api(self.api())
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={NS_LABEL: base}))
        )

        def has_default_sa() -> bool:
            try:
                core.read_namespaced_service_account("default", name)
                return True
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return False

        wait_until(f"the default ServiceAccount in namespace {name}", has_default_sa, timeout_s=60)
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete without waiting (kwok removes its pods, the namespace controller the rest)."""
        with contextlib.suppress(ApiException):
            client.CoreV1Api(self.api()).delete_namespace(name)

    def install_keda_crds(self) -> None:
        """Install KEDA's ScaledObject CRD (the real one, fetched by `build`) and wait until it is served.
        Idempotent across workers: server-side apply."""
        crd = self.share / "keda.sh_scaledobjects.yaml" if self.share else None
        if crd is None or not crd.exists():
            state = self.kubeconfig.parent / "state.json"
            pytest.fail(
                f"KEDA's ScaledObject CRD is missing: `scripts/control-plane build` fetches it ({state})"
            )
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/scaledobjects.keda.sh")
        # Established is not yet listable: until its watch cache is filled the server answers a list with
        # 429 "storage is (re)initializing" (which prewarm rightly takes as transient)
        custom = client.CustomObjectsApi(self.api())

        def listable() -> bool:
            try:
                custom.list_cluster_custom_object("keda.sh", "v1alpha1", "scaledobjects", limit=1)
                return True
            except ApiException as exc:
                if exc.status != 429:
                    raise
                return False

        wait_until("ScaledObjects to be listable", listable, timeout_s=60)


# -- the session's cluster -------------------------------------------------------------------------------


def run_dir() -> Path:
    d = os.environ.get(ENV_RUN_DIR)
    if not d:
        raise RuntimeError(
            f"{ENV_RUN_DIR} is unset: tests/kube_cluster.py was not loaded as a plugin (conftest.py)"
        )
    return Path(d)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock across the run's processes (the xdist workers), held for the block."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _start_shared() -> KubeCluster:
    """Start the run's cluster unless another worker already has; one failure is remembered so the other
    worker reports it instead of building again."""
    run = run_dir()
    cluster_dir, error = run / "cluster", run / "error.txt"
    with locked(run / "lock"):
        if error.exists():
            raise RuntimeError(error.read_text())
        if not (cluster_dir / "state.json").exists():
            t0 = time.monotonic()
            try:
                r = subprocess.run(
                    [sys.executable, str(CLI), "start", "--dir", str(cluster_dir)],
                    capture_output=True,
                    text=True,
                    timeout=START_TIMEOUT_S,
                )
                failed = r.returncode != 0
                output = r.stdout + r.stderr
            except subprocess.TimeoutExpired as exc:
                failed, output = True, f"timed out after {START_TIMEOUT_S} s: {exc.stderr or ''}"
            if failed:
                error.write_text(f"scripts/control-plane start --dir {cluster_dir} failed:\n{output[-6000:]}")
                raise RuntimeError(error.read_text())
            (run / "started_by").write_text(f"pid {os.getpid()} in {time.monotonic() - t0:.1f} s\n{r.stderr}")
    return KubeCluster.from_kubeconfig(cluster_dir / "kubeconfig")


@pytest.fixture(scope="session")
def kube_cluster() -> KubeCluster:
    """The run's real cluster (see the module docstring for where it comes from)."""
    try:
        if os.environ.get(ENV_KUBECONFIG):
            cluster = KubeCluster.from_kubeconfig(Path(os.environ[ENV_KUBECONFIG]))
        else:
            cluster = _start_shared()
        status = client.VersionApi(cluster.api()).get_code()
        # KEDA's CRD once, before any test: installing it mid-run re-initialises the API server's storage
        # for a moment, and a test on the other worker reading ScaledObjects then gets 429
        cluster.install_keda_crds()
    except Exception as exc:  # any reason at all: the tests that need the cluster FAIL with it
        pytest.fail(f"no Kubernetes control plane for the tests: {exc}", pytrace=False)
    cluster.versions.setdefault("kubernetes", status.git_version)
    return cluster


@pytest.fixture
def kube_ns(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, named after it, deleted (without waiting) afterwards."""
    name = kube_cluster.namespace(request.node.originalname.removeprefix("test_")[:30])
    yield name
    kube_cluster.delete_namespace(name)


# -- hooks: the process that runs the session owns the cluster's lifetime ---------------------------------


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


_OWNED_RUN_DIR: Path | None = None  # the run directory this process made (and so cleans up)


def pytest_configure(config: pytest.Config) -> None:
    global _OWNED_RUN_DIR
    if _is_worker(config) or os.environ.get(ENV_KUBECONFIG) or os.environ.get(ENV_RUN_DIR):
        return
    _OWNED_RUN_DIR = Path(tempfile.mkdtemp(prefix="prewarm-kube-"))
    os.environ[ENV_RUN_DIR] = str(_OWNED_RUN_DIR)  # the workers inherit it


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every worker is done: stop the cluster this run started, if any; keep its logs when the run
    failed, and remove everything else."""
    global _OWNED_RUN_DIR
    run = _OWNED_RUN_DIR
    if _is_worker(session.config) or run is None:
        return
    _OWNED_RUN_DIR = None
    os.environ.pop(ENV_RUN_DIR, None)
    cluster = run / "cluster"
    if (cluster / "state.json").exists():
        subprocess.run([sys.executable, str(CLI), "stop", "--dir", str(cluster)], timeout=120, check=False)
    if exitstatus == 0 or not cluster.exists():
        shutil.rmtree(run, ignore_errors=True)
    else:
        shutil.rmtree(cluster / "etcd-data", ignore_errors=True)
        sys.stderr.write(f"\nkube_cluster: the control plane's logs are kept in {cluster}\n")
