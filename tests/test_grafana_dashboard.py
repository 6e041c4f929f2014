"""The Grafana dashboard against a real Prometheus scraping a running prewarm (the demo) over HTTP, with
prewarm's recording rules loaded: every panel's every query, with the model variable filled in from its own
variable query, returns data. A metric renamed in code fails here, not in a user's dashboard."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from api.app import create_app
from backtest.tuning import TuningGrid
from forecaster.sources.synthetic import DEMO_FLEET
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock
from tests.prometheus_harness import PrometheusProcess, free_port, require_binaries

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "prewarm-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "prewarm-rules.yaml"
GRID = TuningGrid(budgets=(0.001, 0.01, 0.1), pools=(4, 2, 0), utilizations=(0.8,))
WAIT_S = 90.0  # a real Prometheus scraping and evaluating rules once a second


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        doc: dict[str, Any] = json.load(r)
    assert doc["status"] == "success", doc
    return doc


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p.get("targets", [])
    ]


def grafana_expr(expr: str, model: str) -> str:
    """What Grafana sends for a target: the variable and the interval macros filled in."""
    return expr.replace("$model", model).replace("$__rate_interval", "1m").replace("$__interval", "15s")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A demo that ran from 01:00 through its first nightly backtest and tuning (03:00) to 03:30, served over
    HTTP, scraped by a real Prometheus every second with prewarm's rules evaluated every second."""
    require_binaries()
    tmp = tmp_path_factory.mktemp("grafana")
    clock = Clock(demo_start_s() + 19 * 3600)
    ctl = build_demo(clock, f"sqlite:///{tmp / 'store.db'}", tune_window_s=86_400)
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock, backtest_days=3, grid=GRID)
    for _ in range(150):  # 150 one-minute ticks: enough steps for the live coverage figure
        jobs.tick_all()
        jobs.nightly_if_due()
        clock.t += 60
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(view, api_token=None), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # the same rules, evaluated every second instead of every 30 s so the test does not wait on them
    rules = yaml.safe_load(RULES.read_text())
    for g in rules["groups"]:
        g["interval"] = "1s"
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yaml")],
        "scrape_configs": [{"job_name": "prewarm", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    prom = PrometheusProcess(tmp / "tsdb", config=yaml.safe_dump(config)).start()
    try:
        deadline = time.monotonic() + WAIT_S
        query = urllib.parse.quote("prewarm:slo_attainment_estimate:ratio_1h")
        while time.monotonic() < deadline:  # a real scraper and rule evaluator warming up, not a clock
            if get(f"{prom.url}/api/v1/query?query={query}")["data"]["result"]:
                break
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes, so rate() over them has two samples
        yield prom.url
    finally:
        prom.stop()
        server.should_exit = True
        thread.join(timeout=10)


def test_every_panel_query_returns_data_for_the_model_the_variable_offers(scraped: str) -> None:
    dash = json.loads(DASHBOARD.read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "model")
    metric = re.fullmatch(r"label_values\((\w+), model\)", var["query"]["query"])
    assert metric, var["query"]
    models = get(f"{scraped}/api/v1/label/model/values?match[]={metric.group(1)}")["data"]
    assert sorted(models) == sorted(s.name for s in DEMO_FLEET)
    queries = panel_queries(dash)
    assert len(queries) >= 20
    end = time.time()
    empty = []
    for model in models:
        # attainment is a share of requests: a model of the long tail that saw none in the hour has none
        # (the rule keeps only models with traffic), and its panels say so by showing no data
        seen = f'max(sum_over_time(prewarm_observed_requests_per_second{{model="{model}"}}[1h]))'
        traffic = get(f"{scraped}/api/v1/query?{urllib.parse.urlencode({'query': seen, 'time': end})}")
        idle = float(traffic["data"]["result"][0]["value"][1]) == 0.0
        for title, expr in queries:
            params = urllib.parse.urlencode(
                {"query": grafana_expr(expr, model), "start": end - 30, "end": end, "step": "1"}
            )
            result = get(f"{scraped}/api/v1/query_range?{params}")["data"]["result"]
            if idle and "slo_attainment_estimate" in expr:
                assert not result, f"{model} saw no request in the hour, yet {title} shows attainment"
            elif not result:
                empty.append(f"{model}: {title}: {expr}")
    assert not empty, "panel queries with no data:\n" + "\n".join(empty)


def test_the_dashboard_covers_what_an_operator_asks_of_prewarm() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for _, e in panel_queries(dash))
    for metric in (
        "prewarm:observed_requests_per_second",
        "prewarm_forecast_current_requests_per_second",
        "prewarm:ready_capacity_requests_per_second",
        "prewarm_desired_replicas",
        "prewarm_current_replicas",
        "prewarm:decisions:rate5m",
        "prewarm_t_load_seconds",
        "prewarm_forecast_coverage_ratio",
        "prewarm_slo_target",
        "prewarm_tuning_saving_vs_warm_pool",
    ):
        assert metric in exprs, metric
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["fieldConfig"]["defaults"]["unit"], p[
                "title"
            ]
