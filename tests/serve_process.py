"""`prewarm serve --config` as a real process, the way a user starts it: its JSON log lines, its API, its
children (the compute pool's workers), and how it ends on SIGTERM or SIGKILL. For the end-to-end tests that
run it against a real Prometheus and a Kubernetes API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.prometheus_harness import free_port

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (from /proc): the pool's forkserver, its workers, the resource
    tracker."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip() or str(pid)
    except OSError:
        return f"{pid} (gone)"


@dataclass
class ServeProcess:
    """One `python -m service serve` with a config written from `doc` (None: the embedded demo)."""

    doc: dict[str, Any] | None
    workdir: Path
    name: str = "prewarm"
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, *args: str) -> ServeProcess:
        source: list[str] = []
        if self.doc is not None:
            cfg = self.workdir / f"{self.name}.yaml"
            cfg.write_text(yaml.safe_dump(self.doc))
            source = ["--config", str(cfg)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREWARM_", "POD_NAME"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", *source, "--port", str(self.port), *args],
            cwd=ROOT,
            env={**env, **self.env},
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return self.request("GET", path, token=token)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {token}"} if token else {}),
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read().decode()
                return r.status, json.loads(raw) if raw.startswith(("{", "[")) else raw
        except urllib.error.HTTPError as e:
            raw = e.read().decode()
            return e.code, json.loads(raw) if raw.startswith(("{", "[")) else raw

    def wait_for(self, what: str, check: Any, timeout_s: float) -> Any:
        """Poll `check()` until it returns something truthy (a connection refused is "not yet"); fail with
        the log's tail when the process died or the time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # waiting on a real process's state, not standing in for a clock
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}"
                )
            try:
                got = check()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                got = None
            if got:
                return got
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {what} after {timeout_s:g} s:\n{self.tail()}")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (other output, such as a library's warning, is skipped)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
