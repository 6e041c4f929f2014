#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback for the tests: `build`, `start`, `stop`, `env`, `status`.

Why: prewarm's Kubernetes actuator must hold against what a real API server does (resourceVersion
conflicts, RBAC denials, status subresources, the HPA controller writing replicas back), not only against
the hand-written fake in tests/fake_kube.py. So this builds kube-apiserver, kube-controller-manager,
kube-scheduler and kubectl from upstream source (the module pinned in kubernetes/go.mod, through the Go
module proxy) and kwok (kwok/go.mod), which plays the kubelets: fake nodes with GPUs, and pods walked to
Ready by the Stages in stages.yaml, with delays a test chooses per pod. helm (helm/go.mod) is built
beside them, for the chart in deploy/helm (`helm lint`, `helm template`, applied to this control plane);
scripts/test.sh puts the built kubectl and helm first on the PATH for the whole test run. etcd is built
from the same module graph, at the version Kubernetes itself requires (Debian's etcd-server 3.4 is too old
for v1.36's clients: it lacks RequestWatchProgress, so every client-go v0.36 informer's watch-list fails
and falls back slowly; kwok then moved pods 15 s late).

Nothing built lives in the repository: binaries go to
${PREWARM_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/prewarm/control-plane}/<hash of the pins>/bin,
so a second `build` is a no-op and a changed pin builds anew (the Go build cache makes that incremental).
`start --dir DIR` runs every component as its own process group on 127.0.0.1 with free ports, certificates
and tokens made for that start, logs in DIR/*.log, and writes DIR/kubeconfig (admin) and DIR/state.json; it
returns once the API server is ready, the controllers have made the default ServiceAccount and kwok's nodes
are Ready. `stop --dir DIR` ends those process groups by the PIDs in state.json (checking each is still the
process that was started) and nothing else.

Every wait polls a state with a deadline; a component that exits or never gets ready fails the command with
its name and the tail of its log.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# each Go module pinned here and the binaries it builds (the `tool` lines of its go.mod)
MODULES = {
    "kubernetes": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd"),
    "kwok": ("kwok",),
    "helm": ("helm",),
}
RENAMED = {"server": "etcd"}  # go names a binary after its path less the major version: .../etcd/server/v3
# the real ScaledObject CRD, from KEDA's own repository as the Go module proxy serves it (a Go module's zip
# holds the repository's files); the h1 hash is the one the Go checksum database records for that version
KEDA = ("github.com/kedacore/keda/v2", "v2.20.2", "h1:SR60v8uIcelbveS8n/1jcl8tLdBBIbHMxmdOHw8tKqA=")
KEDA_CRDS = ("config/crd/bases/keda.sh_scaledobjects.yaml",)
# Go 1.26 builds every pin; where the machine's Go is older, the go command fetches this approved toolchain
# from the module proxy (the only Go download this network allows)
FALLBACK_TOOLCHAIN = "go1.27.3"
RECIPE = "4"  # bump when the way binaries are built changes, so caches built the old way are not reused
SERVICE_CIDR = "10.96.0.0/16"  # addresses the API server allocates to Services; nothing is ever sent there
ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT_S = 180.0  # per component; they are ready in seconds, but CI machines are shared and slow


class ControlPlaneError(RuntimeError):
    """A step that failed, said so a person can act on it (which component, and the tail of its log)."""


# -- pins and the build cache ------------------------------------------------------------------------------


def module_version(module_dir: Path, path: str) -> str:
    """The version go.mod requires of `path` (the pin people read in reports)."""
    m = re.search(
        rf"^\s*(?:require\s+)?{re.escape(path)}\s+(v\S+)", (module_dir / "go.mod").read_text(), re.M
    )
    if not m:
        raise ControlPlaneError(f"{module_dir / 'go.mod'} does not require {path}")
    return m.group(1)


def versions() -> dict[str, str]:
    return {
        "kubernetes": module_version(HERE / "kubernetes", "k8s.io/kubernetes"),
        "etcd": module_version(HERE / "kubernetes", "go.etcd.io/etcd/server/v3"),
        "kwok": module_version(HERE / "kwok", "sigs.k8s.io/kwok"),
        "helm": module_version(HERE / "helm", "helm.sh/helm/v4"),
        "keda-crds": KEDA[1],
    }


def go_env() -> dict[str, str]:
    """The environment for the go command: the machine's Go when it is new enough for the pins (1.26),
    else the approved newer toolchain from the module proxy."""
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    if "GOTOOLCHAIN" not in os.environ:
        go = shutil.which("go")
        if go is None:
            raise ControlPlaneError(
                "no `go` on the PATH: the control plane is built from source with Go >= 1.26"
            )
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
        m = re.match(r"go(\d+)\.(\d+)", out.strip())
        if not m or (int(m.group(1)), int(m.group(2))) < (1, 26):
            env["GOTOOLCHAIN"] = FALLBACK_TOOLCHAIN
    return env


def go_version(env: dict[str, str]) -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, env=env, cwd=HERE / "kwok"
    ).stdout.strip()


def ldflags(module: str) -> str:
    """Link flags: no symbol tables (smaller, faster links) and, for Kubernetes and helm, the version they
    report (a module build has no git tree to read it from; /version would say v0.0.0-master, and
    `helm version` its minor only)."""
    flags = ["-s", "-w"]
    if module == "helm":
        flags += [
            f"-X helm.sh/helm/v4/internal/version.version={versions()['helm']}",
            "-X helm.sh/helm/v4/internal/version.gitTreeState=clean",
        ]
    if module == "kubernetes":
        v = versions()["kubernetes"]
        major, minor = v.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={v}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
            ]
    return " ".join(flags)


def cache_root() -> Path:
    if os.environ.get("PREWARM_CONTROL_PLANE_CACHE"):
        return Path(os.environ["PREWARM_CONTROL_PLANE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "prewarm" / "control-plane"


def pins_key(goversion: str) -> str:
    """A hash of everything that decides what `build` produces: the pinned modules, the link flags, the
    KEDA pin, the Go version and the recipe."""
    h = hashlib.sha256(f"{RECIPE}\n{goversion}\n{KEDA}\n{platform.machine()}\n".encode())
    for module in MODULES:
        for name in ("go.mod", "go.sum"):
            h.update((HERE / module / name).read_bytes())
        h.update(ldflags(module).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held for the block: two builds (two test workers, two shells) never race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_keda_crds(share: Path, env: dict[str, str]) -> None:
    """Copy the ScaledObject CRD out of KEDA's module zip, checked against the pinned h1 hash."""
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            ["go", "mod", "download", "-json", f"{KEDA[0]}@{KEDA[1]}"],
            cwd=tmp,
            env={**env, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
        )
    try:
        info = json.loads(r.stdout)
    except ValueError:
        raise ControlPlaneError(f"go mod download {KEDA[0]}@{KEDA[1]} failed:\n{r.stderr[-3000:]}") from None
    if info.get("Error") or info.get("Sum") != KEDA[2] or not info.get("Dir"):
        raise ControlPlaneError(
            f"go mod download {KEDA[0]}@{KEDA[1]}: {info.get('Error') or 'hash ' + str(info.get('Sum'))}"
            f" (expected {KEDA[2]})"
        )
    share.mkdir(parents=True, exist_ok=True)
    for rel in KEDA_CRDS:
        shutil.copyfile(Path(info["Dir"]) / rel, share / Path(rel).name)


@dataclass(frozen=True)
class Build:
    root: Path  # <cache>/<key>

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def share(self) -> Path:
        return self.root / "share"

    def complete(self) -> bool:
        return (self.root / "build.json").is_file() and all(
            (self.bin / b).is_file() for names in MODULES.values() for b in names
        )


def build(*, quiet: bool = False) -> Build:
    """Build every pinned binary into the cache unless it is already there; returns where they are."""
    env = go_env()
    key = pins_key(go_version(env))
    b = Build(cache_root() / key)
    if b.complete():
        if not quiet:
            print(f"control-plane: up to date in {b.bin}", file=sys.stderr)
        return b
    with file_lock(cache_root() / f"{key}.lock"):
        if b.complete():  # another process built it while this one waited
            return b
        t0 = time.monotonic()
        partial = b.root / "bin.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        took: dict[str, float] = {}
        for module, names in MODULES.items():
            t1 = time.monotonic()
            print(f"control-plane: building {', '.join(names)} ({module}) ...", file=sys.stderr, flush=True)
            cmd = ["go", "build", "-trimpath", "-ldflags", ldflags(module), "-o", str(partial) + "/", "tool"]
            r = subprocess.run(cmd, cwd=HERE / module, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                output = (r.stdout + r.stderr)[-4000:]
                raise ControlPlaneError(
                    f"building {module} failed ({' '.join(cmd)} in {HERE / module}):\n{output}"
                )
            for built, name in RENAMED.items():
                if (partial / built).is_file():
                    (partial / built).rename(partial / name)
            missing = [n for n in names if not (partial / n).is_file()]
            if missing:
                raise ControlPlaneError(
                    f"building {module} made no {', '.join(missing)} (check its go.mod tool lines)"
                )
            took[module] = round(time.monotonic() - t1, 1)
            print(f"control-plane: {module} built in {took[module]:.0f} s", file=sys.stderr, flush=True)
        fetch_keda_crds(b.share, env)
        shutil.rmtree(b.bin, ignore_errors=True)
        partial.rename(b.bin)
        record = {
            "versions": versions(),
            "go": go_version(env),
            "build_s": round(time.monotonic() - t0, 1),
            "build_s_by_module": took,
        }
        (b.root / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return b


# -- certificates, tokens, kubeconfigs ------------------------------------------------------------------


def write_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate (loopback and the in-cluster names), and the key pair
    that signs ServiceAccount tokens. Made at each start: nothing secret outlives the cluster."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=7)

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prewarm-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    sans += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(next(ipaddress.ip_network(SERVICE_CIDR).hosts())),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(pem_key(ca_key))
    (pki / "apiserver.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "apiserver.key").write_bytes(pem_key(key))
    (pki / "sa.key").write_bytes(pem_key(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for f in pki.iterdir():
        if f.suffix == ".key":
            f.chmod(0o600)


def kubeconfig(server: str, ca_pem: bytes, user: str, token: str) -> str:
    """A kubeconfig with the CA inlined, so the file alone reaches the cluster."""
    ca = base64.b64encode(ca_pem).decode()
    return (
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- name: prewarm-test\n  cluster:\n"
        f"    server: {server}\n    certificate-authority-data: {ca}\n"
        f"users:\n- name: {user}\n  user:\n    token: {token}\n"
        f"contexts:\n- name: prewarm-test\n  context:\n    cluster: prewarm-test\n    user: {user}\n"
        "current-context: prewarm-test\n"
    )


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 now (held together while chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- processes -------------------------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when gone or a
    zombie: with the PID it names one process, so `stop` never signals a process that reused a PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, ticks: int | None) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (a start in this same process)
    now = start_ticks(pid)
    return now is not None and (ticks is None or now == ticks)


# klog's E/F lines, Go's "Error:"/panic, cobra's flag errors, and zap/slog JSON at error level
ERROR_LINE = re.compile(r'^(Error|error|fatal|panic)\b|^[EF]\d{4} |"level":"(error|fatal|panic|ERROR)"')


def log_tail(path: Path, lines: int = 30) -> str:
    """The first lines naming an error (a usage dump or a shutdown buries them), then the log's last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [ln for ln in text if ERROR_LINE.search(ln)][:8]
    head = ["(first error lines)", *errors, "(last lines)"] if errors else []
    return "\n".join(head + text[-lines:]) or "(empty log)"


@dataclass
class Proc:
    name: str
    pid: int
    ticks: int | None
    log: Path

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.ticks, "log": str(self.log)}

    def failure(self, what: str) -> ControlPlaneError:
        return ControlPlaneError(f"{self.name} {what}; the end of {self.log}:\n{log_tail(self.log)}")


def launch(name: str, argv: list[str], d: Path, env: dict[str, str] | None = None) -> Proc:
    """Start a component in a process group of its own (so `stop` ends it and anything it forked),
    stdout and stderr to DIR/<name>.log."""
    log = d / f"{name}.log"
    with log.open("ab") as out:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=d,
        )
    return Proc(name, p.pid, start_ticks(p.pid), log)


def wait_for(proc: Proc, what: str, check: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> float:
    """Poll `check` until it holds; fail at once when the process exits, or at the deadline. Returns the
    seconds it took."""
    t0 = time.monotonic()
    delay = 0.05
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except (OSError, ValueError, urllib.error.URLError, ssl.SSLError):
            pass
        if not alive(proc.pid, proc.ticks):
            raise proc.failure(f"exited before {what}")
        if time.monotonic() - t0 > timeout_s:
            raise proc.failure(f"not {what} after {timeout_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def terminate(name: str, pid: int, ticks: int | None, grace_s: float = 15.0) -> None:
    """SIGTERM the component's process group, SIGKILL it if it lingers; a PID that now names another
    process (or none) is left alone."""
    if not alive(pid, ticks):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive(pid, ticks) and not group_alive(pid):
            return
        time.sleep(0.1)
    print(
        f"control-plane: {name} (pid {pid}) ignored SIGTERM for {grace_s:.0f} s; killing it", file=sys.stderr
    )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (alive(pid, ticks) or group_alive(pid)):
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in process group `pgid`."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


# -- talking to the API server without a client library --------------------------------------------------


class Api:
    def __init__(self, server: str, token: str, ca: Path) -> None:
        self.server, self.token = server, token
        self.ctx = ssl.create_default_context(cafile=str(ca))

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def ok(self, path: str) -> bool:
        return self.call("GET", path, timeout=5)[0] == 200


def local_healthz(port: int) -> bool:
    """A component's own /healthz on its loopback serving port (self-signed: only liveness is checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=5) as r:
        return bool(r.status == 200)


def node_manifest(name: str, gpus: int) -> dict[str, Any]:
    """A kwok node: kwok manages it (annotation), pods may land on it, and it offers `gpus` GPUs."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


# -- start / stop ---------------------------------------------------------------------------------------


def etcd_flags(etcd: str) -> list[str]:
    """etcd < 3.6 spells the progress-notify flag `--experimental-...`. v1.36 API servers need progress
    notifications: without them a watch on an idle resource fails with 504 'Too large resource version'."""
    out = subprocess.run([etcd, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"etcd Version: (\d+)\.(\d+)", out)
    new = m is not None and (int(m.group(1)), int(m.group(2))) >= (3, 6)
    prefix = "--" if new else "--experimental-"
    # a test cluster's data need not survive a crash: skipping fsync keeps writes fast on a busy disk
    return [f"{prefix}watch-progress-notify-interval=5s", *(["--unsafe-no-fsync"] if new else [])]


def start(d: Path, *, nodes: int = 2, gpus_per_node: int = 8, hpa_sync_s: int = 5) -> dict[str, Any]:
    """Start the whole control plane into `d`; returns the state written to d/state.json."""
    t0 = time.monotonic()
    d = d.resolve()
    d.mkdir(parents=True, exist_ok=True)
    if (d / "state.json").exists():
        st = json.loads((d / "state.json").read_text())
        if any(alive(p["pid"], p.get("start_ticks")) for p in st.get("processes", {}).values()):
            raise ControlPlaneError(f"{d} already holds a running control plane: `stop --dir {d}` first")
    b = build(quiet=True)
    bins = {n: str(b.bin / n) for names in MODULES.values() for n in names}
    pki = d / "pki"
    write_pki(pki)
    tokens = {u: secrets.token_hex(24) for u in ("admin", "controller-manager", "scheduler", "kwok")}
    (d / "tokens.csv").write_text(
        f'{tokens["admin"]},admin,admin-uid,"system:masters"\n'
        f"{tokens['controller-manager']},system:kube-controller-manager,kcm-uid\n"
        f"{tokens['scheduler']},system:kube-scheduler,scheduler-uid\n"
        f'{tokens["kwok"]},kwok-controller,kwok-uid,"system:masters"\n'
    )
    (d / "tokens.csv").chmod(0o600)
    etcd_port, peer_port, api_port, kcm_port, sched_port = free_ports(5)
    server = f"https://127.0.0.1:{api_port}"
    ca_pem = (pki / "ca.crt").read_bytes()
    kubeconfigs = {}
    for who, user in (
        ("admin", "admin"),
        ("controller-manager", "system:kube-controller-manager"),
        ("scheduler", "system:kube-scheduler"),
        ("kwok", "kwok-controller"),
    ):
        path = d / ("kubeconfig" if who == "admin" else f"{who}.kubeconfig")
        path.write_text(kubeconfig(server, ca_pem, user, tokens[who]))
        path.chmod(0o600)
        kubeconfigs[who] = str(path)
    procs: list[Proc] = []
    state: dict[str, Any] = {
        "dir": str(d),
        "host": server,
        "kubeconfig": kubeconfigs["admin"],
        "admin_token": tokens["admin"],
        "ca": str(pki / "ca.crt"),
        "bin": str(b.bin),
        "share": str(b.share),
        "versions": versions(),
        "ports": {
            "etcd": etcd_port,
            "apiserver": api_port,
            "controller-manager": kcm_port,
            "scheduler": sched_port,
        },
        "processes": {},
    }

    def save() -> None:
        state["processes"] = {p.name: p.as_dict() for p in procs}
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(d / "state.json")

    timings: dict[str, float] = {}
    try:
        p = launch(
            "etcd",
            [
                bins["etcd"],
                "--name=prewarm-test",
                f"--data-dir={d / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=prewarm-test=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls=",
                "--log-level=warn",
                *etcd_flags(bins["etcd"]),
            ],
            d,
        )
        procs.append(p)
        save()

        def etcd_healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=5) as r:
                return bool(json.loads(r.read()).get("health") == "true")

        timings["etcd"] = wait_for(p, "healthy (GET /health)", etcd_healthy)

        p = launch(
            "kube-apiserver",
            [
                bins["kube-apiserver"],
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            d,
        )
        procs.append(p)
        save()
        api = Api(server, tokens["admin"], pki / "ca.crt")
        timings["kube-apiserver"] = wait_for(p, "ready (GET /readyz)", lambda: api.ok("/readyz"))

        p = launch(
            "kube-controller-manager",
            [
                bins["kube-controller-manager"],
                f"--kubeconfig={kubeconfigs['controller-manager']}",
                f"--authentication-kubeconfig={kubeconfigs['controller-manager']}",
                f"--authorization-kubeconfig={kubeconfigs['controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={d / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--horizontal-pod-autoscaler-sync-period={hpa_sync_s}s",
                "--profiling=false",
                "--v=1",
            ],
            d,
        )
        procs.append(p)
        p = launch(
            "kube-scheduler",
            [
                bins["kube-scheduler"],
                f"--kubeconfig={kubeconfigs['scheduler']}",
                f"--authentication-kubeconfig={kubeconfigs['scheduler']}",
                f"--authorization-kubeconfig={kubeconfigs['scheduler']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={d / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            d,
        )
        procs.append(p)
        p = launch(
            "kwok",
            [
                bins["kwok"],
                f"--kubeconfig={kubeconfigs['kwok']}",
                f"--config={HERE / 'stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.0.0.1/16",
                "--node-ip=10.0.0.1",
            ],
            d,
        )
        procs.append(p)
        save()
        kcm, sched, kwok = procs[2], procs[3], procs[4]
        timings["kube-controller-manager"] = wait_for(
            kcm, "healthy (GET /healthz)", lambda: local_healthz(kcm_port)
        )
        timings["kube-scheduler"] = wait_for(
            sched, "healthy (GET /healthz)", lambda: local_healthz(sched_port)
        )
        # the controllers work end to end once the ServiceAccount controller has made `default`
        timings["default ServiceAccount"] = wait_for(
            kcm,
            "making the default ServiceAccount (namespace default)",
            lambda: api.ok("/api/v1/namespaces/default/serviceaccounts/default"),
        )
        for i in range(nodes):
            name = f"kwok-node-{i}"
            status, body = api.call("POST", "/api/v1/nodes", node_manifest(name, gpus_per_node))
            if status not in (201, 409):
                raise ControlPlaneError(f"creating node {name}: HTTP {status}: {body}")

        def nodes_ready() -> bool:
            _, body = api.call("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
            ready = [
                n
                for n in (body or {}).get("items", [])
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ]
            return len(ready) >= nodes

        timings["kwok nodes Ready"] = wait_for(kwok, f"making its {nodes} nodes Ready", nodes_ready)
    except BaseException:
        for proc in reversed(procs):
            terminate(proc.name, proc.pid, proc.ticks)
        with contextlib.suppress(OSError):
            (d / "state.json").unlink()
        raise
    state["start_s"] = round(time.monotonic() - t0, 1)
    state["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    save()
    return state


def stop(d: Path) -> list[str]:
    """Stop every component recorded in d/state.json, newest first; returns the ones that were running."""
    path = d / "state.json"
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    stopped = []
    for name, p in reversed(list(state.get("processes", {}).items())):
        if alive(p["pid"], p.get("start_ticks")):
            stopped.append(name)
        terminate(name, p["pid"], p.get("start_ticks"))
    path.unlink()
    return stopped


# -- the command line -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="control-plane", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build the pinned binaries into the cache (a no-op when they are there)")
    p_start = sub.add_parser("start", help="start etcd, the control plane and kwok; write DIR/kubeconfig")
    p_start.add_argument("--dir", required=True, type=Path)
    p_start.add_argument("--nodes", type=int, default=2)
    p_start.add_argument("--gpus-per-node", type=int, default=8)
    p_start.add_argument(
        "--hpa-sync-period", type=int, default=5, help="seconds between HPA controller syncs"
    )
    for name, text in (("stop", "stop what `start --dir DIR` started"), ("env", "print KUBECONFIG=...")):
        sub.add_parser(name, help=text).add_argument("--dir", required=True, type=Path)
    sub.add_parser("status", help="print DIR/state.json with each process alive or not").add_argument(
        "--dir", required=True, type=Path
    )
    sub.add_parser("bin-dir", help="print the directory of the built binaries (building them if needed)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            t0 = time.monotonic()
            b = build()
            print(f"control-plane: binaries in {b.bin} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
        elif args.cmd == "bin-dir":
            print(build(quiet=True).bin)
        elif args.cmd == "start":
            st = start(
                args.dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node, hpa_sync_s=args.hpa_sync_period
            )
            v = st["versions"]
            steps = ", ".join(f"{k} {s:.1f}" for k, s in st["timings_s"].items())
            print(
                f"control-plane: Kubernetes {v['kubernetes']}, kwok {v['kwok']}, etcd {v['etcd']} "
                f"at {st['host']} ready in {st['start_s']} s ({steps})",
                file=sys.stderr,
            )
            print(f"KUBECONFIG={st['kubeconfig']}")
        elif args.cmd == "stop":
            stopped = stop(args.dir)
            print(f"control-plane: stopped {', '.join(stopped) or 'nothing (none running)'}", file=sys.stderr)
        elif args.cmd == "env":
            path = args.dir.resolve() / "state.json"
            if not path.exists():
                raise ControlPlaneError(
                    f"no control plane in {args.dir} (no state.json): `start --dir` first"
                )
            print(f"KUBECONFIG={json.loads(path.read_text())['kubeconfig']}")
        elif args.cmd == "status":
            path = args.dir.resolve() / "state.json"
            if not path.exists():
                raise ControlPlaneError(f"no control plane in {args.dir}")
            st = json.loads(path.read_text())
            for name, p in st["processes"].items():
                running = alive(p["pid"], p.get("start_ticks"))
                print(f"{name:26} pid {p['pid']:>7}  {'running' if running else 'GONE'}")
    except ControlPlaneError as exc:
        print(f"control-plane {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
