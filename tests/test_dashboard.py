"""The dashboard in a real headless Chromium (Debian's `chromium`) on the demo after a morning of ticks: the
charts have time and value axes with units, the forecast band is drawn over the past as well as ahead of
now, ready capacity is drawn against demand with the applied scale-ups marked, decisions are grouped and
explained, and a screenshot shows the band and the capacity line in their colours."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from api.app import create_app
from service.view import ControllerView
from tests.fakes import ticked_demo
from tests.prometheus_harness import free_port

MORNING_MINUTES = 240  # 06:00 to 10:00 of the demo: the morning rise and its pre-warming
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium not installed: run `bash scripts/test.sh`, which installs Debian's chromium")


@contextlib.contextmanager
def served(view: ControllerView) -> Iterator[str]:
    """The app over `view` on a real uvicorn server on a free port, up before its URL is yielded."""
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def headless(*args: str) -> list[str]:
    """A headless Chromium command line."""
    return [browser(), "--headless=new", "--no-sandbox", "--disable-gpu", *args]


def dump_dom(url: str, profile: Path, *flags: str) -> str:
    """The DOM of `url` after its scripts ran, in headless Chromium with a fresh profile."""
    return subprocess.run(
        headless(*flags, f"--user-data-dir={profile}", "--dump-dom", url),
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str]]:
    """(the DOM after the scripts ran, a 1280x1500 screenshot, the models) of the demo's page."""
    tmp = tmp_path_factory.mktemp("dashboard")
    browser()  # fails before the demo is ticked where Chromium is missing
    ctl, view, _ = ticked_demo(tmp / "store.db", MORNING_MINUTES)
    shot = tmp / "dashboard.png"
    window = ("--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1500")
    budget = "--virtual-time-budget=15000"
    with served(view) as base:
        url = f"{base}/"
        dom = dump_dom(url, tmp / "p1", *window, budget)
        subprocess.run(
            headless(*window, budget, f"--user-data-dir={tmp / 'p2'}", f"--screenshot={shot}", url),
            capture_output=True,
            timeout=120,
        )
    if shot.exists():  # kept for a person to look at (CI uploads nothing; locally: .artifacts/)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "dashboard.png")
    return dom, shot, sorted(ctl.models)


def svg(dom: str, chart: str) -> str:
    found = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
    assert found, f"no {chart} chart"
    return found.group(0)


def xs(path_d: str) -> list[float]:
    return [float(x) for x in re.findall(r"[MLH]\s*(-?[\d.]+)", path_d)]


def test_both_charts_have_time_and_value_axes_with_units(page: tuple[str, Path, list[str]]) -> None:
    dom, _, _ = page
    for chart, unit in (("traffic", "req/s"), ("replicas", "replicas")):
        s = svg(dom, chart)
        y_axis = re.search(r'<g class="y-axis" data-unit="([^"]+)">(.*?)</g>', s, re.S)
        assert y_axis and y_axis.group(1) == unit
        y_ticks = [float(t) for t in re.findall(r'class="tick"[^>]*>([\d.]+)<', y_axis.group(2))]
        assert len(y_ticks) >= 3 and y_ticks == sorted(y_ticks) and y_ticks[0] == 0
        x_axis = re.search(r'<g class="x-axis">(.*?)</g>', s, re.S)
        assert x_axis and "time (UTC)" in x_axis.group(1)
        times = re.findall(r'class="tick"[^>]*>(\d\d:\d\d)<', x_axis.group(1))
        assert len(times) >= 3, times


def test_the_band_is_drawn_over_the_past_and_ahead_and_capacity_against_demand(
    page: tuple[str, Path, list[str]],
) -> None:
    dom, _, _ = page
    s = svg(dom, "traffic")
    now = re.search(r'<line class="now" x1="([\d.]+)"', s)
    assert now, "the now line"
    now_x = float(now.group(1))
    past = re.findall(r'<path class="band past-band" d="([^"]+)"', s)
    assert past, "the forecast band over the past"
    past_x = [x for d in past for x in xs(d)]
    # the view is the last 12 hours and 3 ahead (about 67 px per hour): the band covers the morning's hours
    assert min(past_x) < now_x - 200 and max(past_x) <= now_x + 1, "the past band spans hours before now"
    future = re.findall(r'<path class="band future-band" d="([^"]+)"', s)
    assert future and min(xs(future[0])) >= now_x - 60
    capacity = re.search(r'<path class="capacity" d="([^"]+)"', s)
    assert capacity and len(xs(capacity.group(1))) >= 100, "ready capacity over the morning"
    observed = re.search(r'<path class="observed" d="([^"]+)"', s)
    assert observed and len(xs(observed.group(1))) >= 100
    ups = re.findall(r'<path class="scale-up"[^>]*><title>([^<]+)</title>', s)
    assert ups and all(re.search(r"(\d+) -&gt; (\d+) replicas", u) for u in ups)
    assert all(int(a) < int(b) for a, b in (re.search(r"(\d+) -&gt; (\d+)", u).groups() for u in ups))  # type: ignore[union-attr]


def test_decisions_are_grouped_colour_coded_and_explained(page: tuple[str, Path, list[str]]) -> None:
    dom, _, models = page
    items = re.findall(
        r'<li class="decision( run)?" data-reason="(\w+)" style="border-left-color: ([^;]+);', dom
    )
    assert 5 <= len(items) <= 80
    runs = re.findall(r"\(×(\d+) ticks\)", dom)
    assert runs and sum(int(n) for n in runs) + sum(1 for r in items if not r[0]) > len(items), (
        "runs collapsed"
    )
    colours = {reason: c for _, reason, c in items}
    assert len(set(colours.values())) == len(colours) or len(colours) == 1 or len(set(colours.values())) > 1
    explanations = re.findall(r'class="why">([^<]+)', dom)
    assert len(explanations) == len(items)
    assert any(re.match(r"\d+ replicas?: forecast p90 of [\d.]+ req/s", e) for e in explanations)
    summary = re.search(r'<div id="summary" class="card facts">(.*?)</div>\s*<div id="slo"', dom, re.S)
    assert summary, "the model's facts"
    facts = dict(re.findall(r"<div><b>([^<]+)</b>([^<]+)</div>", summary.group(1)))
    assert facts["model"] == models[0] and facts["mode"] == "active"
    # the demo's replicas have cold-started by 10:00: T_load is learned, and the page says from what
    assert re.fullmatch(r"\d+ s \(learned: p95 of the last \d+ cold starts.*\)", facts["T_load"]), facts[
        "T_load"
    ]
    slo = re.search(r'id="slo" class="card muted">([^<]+)<', dom)
    assert slo and slo.group(1).startswith("SLO: 0.99 of requests within 2 s; operating point alpha 0.9")


def test_the_screenshot_shows_the_band_and_the_capacity_line(page: tuple[str, Path, list[str]]) -> None:
    _, shot, _ = page
    assert shot.exists(), "chromium wrote no screenshot"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1500)
    pixels = list(img.get_flattened_data()) if hasattr(img, "get_flattened_data") else list(img.getdata())

    def near(rgb: tuple[int, int, int], tol: int = 18) -> int:
        return sum(1 for p in pixels if all(abs(a - b) <= tol for a, b in zip(p, rgb, strict=True)))

    # the band (#9ecae1 at 55% over white) and the capacity line (#1a9850) in visible quantities
    assert near((187, 220, 237)) > 2_000, "no forecast band in the picture"
    assert near((26, 152, 80), tol=30) > 300, "no capacity line in the picture"


def test_the_replicas_chart_covers_the_same_window_as_the_demand_chart(
    page: tuple[str, Path, list[str]],
) -> None:
    """A scale-up must line up with the demand that caused it: same time axis, same now line."""
    dom, _, _ = page
    axes = []
    for chart in ("traffic", "replicas"):
        s = svg(dom, chart)
        x_axis = re.search(r'<g class="x-axis">(.*?)</g>', s, re.S)
        assert x_axis
        ticks = re.findall(r'<text class="tick" x="([\d.]+)"[^>]*>(\d\d:\d\d)<', x_axis.group(1))
        now = re.search(r'<line class="now" x1="([\d.]+)"', s)
        assert ticks and now, chart
        axes.append((ticks, now.group(1)))
    assert axes[0] == axes[1]


def test_the_api_reference_renders_in_a_browser_without_network(tmp_path: Path) -> None:
    from service.serve import build_demo, demo_start_s
    from service.view import ControllerView
    from tests.fakes import Clock

    clock = Clock(demo_start_s())
    view = ControllerView(build_demo(clock, f"sqlite:///{tmp_path / 's.db'}"), clock)
    with served(view) as base:
        flags = ("--disable-background-networking", "--no-first-run", "--virtual-time-budget=5000")
        dom = dump_dom(f"{base}/docs", tmp_path / "p", *flags)
    assert "<h1>prewarm API</h1>" in dom
    for path in ("/v1/models/{model}/forecast", "/v1/models/{model}/pause", "/readyz", "/metrics"):
        assert f"<code>{path}</code>" in dom, path


def test_a_model_of_the_long_tail_shows_its_zero_and_the_pre_warm_before_its_first_request(
    tmp_path: Path,
) -> None:
    """The page addressed to the demo's office-hours assistant (#docs-assistant) after its morning: the
    decisions say why it held no replica overnight and why one was pre-warmed before 08:00."""
    _, view, _ = ticked_demo(tmp_path / "store.db", MORNING_MINUTES)
    with served(view) as base:
        dom = dump_dom(
            f"{base}/#docs-assistant",
            tmp_path / "p",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=15000",
        )
    summary = re.search(r'<div id="summary"[^>]*>(.*?)</div>\s*</div>', dom, re.S)
    assert summary and "docs-assistant" in summary.group(1), "the page shows the model its address names"
    slo = re.search(r'<div id="slo"[^>]*>(.*?)</div>', dom, re.S)
    assert slo and "operating point late budget 1% (lambda 1)" in slo.group(1), "it plans for its SLO untuned"
    assert 'data-model="docs-assistant" class="on"' in dom
    decisions = re.search(r'<ul id="decisions">(.*)</ul>', dom, re.S)
    assert decisions
    assert "ScaleToZero" in decisions.group(1) and "chance of any request" in decisions.group(1)
    assert "pre-warming one replica" in decisions.group(1)
