"""A real Prometheus for tests and benchmarks: backfilled with promtool, started on a free loopback port.

Debian's Prometheus 2.42 pitfalls handled here: a long retention (the default 15 days would delete older
backfilled blocks at startup), 24-hour blocks for promtool (2-hour blocks make a 14-day backfill ~8x
slower), and whole-second timestamps in the OpenMetrics input (forecaster/sources/openmetrics.py).

`GatedProxy` stands in front of it the way an auth proxy does in a cluster: it can require a bearer token,
and it can go away after a number of requests (the server disappearing in the middle of a load).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from forecaster.sources.openmetrics import write_openmetrics
from forecaster.types import TrafficSeries
from tests.loopback import LoopbackServer

READY_TIMEOUT_S = 60.0


def require_binaries() -> None:
    missing = [b for b in ("prometheus", "promtool") if shutil.which(b) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not installed: run `bash scripts/test.sh`, which installs Debian's "
            "prometheus package"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backfill(series: Iterable[TrafficSeries], data_dir: Path, extra_openmetrics: str = "") -> None:
    """Write series (and any hand-written OpenMetrics families) into a TSDB directory with promtool."""
    om = data_dir.parent / f"{data_dir.name}.om"
    with om.open("w") as f:
        write_openmetrics(series, f)
    if extra_openmetrics:
        text = om.read_text().removesuffix("# EOF\n") + extra_openmetrics
        om.write_text(text if text.endswith("# EOF\n") else text + "# EOF\n")
    backfill_file(om, data_dir)
    om.unlink()


def backfill_file(om: Path, data_dir: Path) -> None:
    """promtool's backfill of one OpenMetrics file, in 24-hour blocks."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=24h",
            str(om),
            str(data_dir),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@dataclass
class PrometheusProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # prometheus.yml; by default nothing is scraped
    config: str = "global:\n  scrape_interval: 1h\nscrape_configs: []\n"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusProcess:
        cfg = self.data_dir.parent / f"{self.data_dir.name}-prometheus.yml"
        cfg.write_text(self.config)
        log = (self.data_dir.parent / f"{self.data_dir.name}-prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:  # waiting on a real process, not standing in for a clock
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready after {READY_TIMEOUT_S:g} s; see {log.name}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class GatedProxy(LoopbackServer):
    """An HTTP proxy to `upstream` that may require `Authorization: Bearer <token>` and may stop listening
    after `serve_requests` requests."""

    def __init__(self, upstream: str, *, token: str | None = None, serve_requests: int | None = None) -> None:
        self.upstream = upstream
        self.token = token
        self.remaining = serve_requests
        self.seen_authorization: list[str | None] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                proxy.seen_authorization.append(auth)
                if proxy.token is not None and auth != f"Bearer {proxy.token}":
                    self._send(401, b'{"status":"error","error":"missing or wrong bearer token"}')
                    return
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=30) as r:
                        self._send(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self._send(e.code, e.read())
                if proxy.remaining is not None:
                    proxy.remaining -= 1
                    if proxy.remaining <= 0:
                        # go away now: a request racing in is reset when the listening socket closes
                        proxy.close()

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        super().__init__(Handler)
