"""The dashboard in a real headless Chromium (Debian's `chromium`): it loads the demo, draws the charts and
lists decisions with their explanations."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import uvicorn

from api.app import create_app
from tests.fakes import ticked_demo
from tests.prometheus_harness import free_port


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium not installed: run `bash scripts/test.sh`, which installs Debian's chromium")


def test_the_dashboard_draws_the_charts_and_explains_decisions_in_a_real_browser(tmp_path: Path) -> None:
    exe = browser()
    ctl, view, _ = ticked_demo(tmp_path / "store.db", 5)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(view, api_token=None), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:  # a real server starting up
            time.sleep(0.05)
        assert server.started
        dom = subprocess.run(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    first = sorted(ctl.models)[0]
    traffic = re.search(r'<svg id="traffic".*?</svg>', dom, re.S)
    assert traffic and traffic.group(0).count("<path") >= 2, "the traffic chart and its forecast band"
    replicas = re.search(r'<svg id="replicas".*?</svg>', dom, re.S)
    assert replicas and replicas.group(0).count("<path") == 2, "desired and current replicas"
    explanations = re.findall(r'class="why">([^<]+)', dom)
    assert len(explanations) >= 5
    assert re.match(r"\d+ replicas?: forecast p90 of [\d.]+ req/s", explanations[0])
    assert f'id="summary" class="card muted">{first}: active, forecast model profile' in dom
    slo = re.search(r'id="slo" class="card muted">([^<]+)<', dom)
    assert slo and slo.group(1).startswith("SLO: 0.99 of requests within 2 s; operating point alpha 0.9")
    assert "tuning: not tuned yet" in slo.group(1)
