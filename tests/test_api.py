"""The REST API over the embedded demo, with a fake clock: models, forecasts, decisions and their
explanations, token-protected switches, health, readiness and metrics; every bad request is a 4xx."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from service.runtime import Controller
from service.serve import build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock, ticked_demo

TOKEN = "t0ken"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Controller, Clock]]:
    ctl, view, clock = ticked_demo(tmp_path_factory.mktemp("api") / "store.db", 6)
    with TestClient(create_app(view, api_token=TOKEN)) as client:
        yield client, ctl, clock


def test_models_are_listed_with_mode_forecast_model_and_t_load(
    demo: tuple[TestClient, Controller, Clock],
) -> None:
    client, ctl, _ = demo
    models = client.get("/v1/models").json()
    assert sorted(m["name"] for m in models) == sorted(ctl.models)
    m = models[0]
    assert m["mode"] == "active" and m["forecast_model"] == "profile"
    assert m["t_load_s"] == 600.0 and m["t_load_source"].startswith("configured")
    assert m["current_replicas"] >= 1 and m["desired_replicas"] >= 1


def test_the_forecast_comes_as_json_and_csv_for_the_asked_horizon(
    demo: tuple[TestClient, Controller, Clock],
) -> None:
    client, ctl, _ = demo
    name = next(iter(ctl.models))
    fc = client.get(f"/v1/models/{name}/forecast", params={"horizon": "30m", "quantiles": "0.5,0.9"}).json()
    assert len(fc["points"]) == 30 and fc["step_s"] == 60 and fc["unit"] == "requests per step"
    p = fc["points"][0]
    assert set(p["quantiles"]) == {"0.5", "0.9"} and p["quantiles"]["0.5"] <= p["quantiles"]["0.9"]
    csv = client.get(f"/v1/models/{name}/forecast", params={"horizon": "10m", "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "timestamp,mean,q0.5,q0.9" and len(lines) == 11


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        pytest.param("/v1/models/nope/forecast", {}, 404, "unknown model 'nope'", id="unknown-model"),
        pytest.param(
            "/v1/models/{m}/forecast", {"horizon": "soon"}, 400, "is not a duration", id="bad-horizon"
        ),
        pytest.param("/v1/models/{m}/forecast", {"horizon": "30d"}, 400, "7-day maximum", id="long-horizon"),
        pytest.param(
            "/v1/models/{m}/forecast", {"quantiles": "0.5,1.5"}, 400, "inside (0, 1)", id="bad-quantile"
        ),
        pytest.param(
            "/v1/models/{m}/forecast", {"quantiles": "x"}, 400, "expected numbers", id="nan-quantile"
        ),
        pytest.param(
            "/v1/models/{m}/forecast", {"quantiles": "0.7"}, 400, "not forecast; have", id="absent-level"
        ),
        pytest.param("/v1/models/{m}/forecast", {"format": "xml"}, 422, "format", id="bad-format"),
        pytest.param("/v1/models/{m}/decisions", {"since": "yesterday"}, 400, "ISO-8601", id="bad-since"),
        pytest.param("/v1/models/{m}/decisions", {"limit": 0}, 422, "limit", id="bad-limit"),
        pytest.param("/v1/decisions/999999", {}, 404, "no decision 999999", id="unknown-decision"),
        pytest.param("/v1/decisions/abc", {}, 422, "decision_id", id="non-numeric-decision"),
        pytest.param("/v1/models/{m}/backtests/latest", {}, 404, "no backtest", id="no-backtest-yet"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_was_wrong(
    demo: tuple[TestClient, Controller, Clock], path: str, params: dict[str, object], status: int, words: str
) -> None:
    client, ctl, _ = demo
    r = client.get(path.format(m=next(iter(ctl.models))), params=params)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_decisions_carry_steps_reasons_actuation_and_an_explanation(
    demo: tuple[TestClient, Controller, Clock],
) -> None:
    client, ctl, _ = demo
    name = next(iter(ctl.models))
    ds = client.get(f"/v1/models/{name}/decisions", params={"limit": 5}).json()
    assert len(ds) == 5 and ds[0]["at"] > ds[-1]["at"]  # newest first
    d = client.get(f"/v1/decisions/{ds[0]['id']}").json()
    assert d == ds[0]
    assert d["explanation"].startswith(f"{d['desired_replicas']} replica")
    assert "forecast p90" in d["explanation"]
    assert [s["stage"] for s in d["steps"]][:2] == ["demand", "reactive_floor"]
    assert all(s["reason"] for s in d["steps"])
    assert d["actuation"]["outcome"] in ("applied", "unchanged")
    assert d["inputs"]["t_load_s"] == 600.0


def test_switches_need_the_bearer_token(demo: tuple[TestClient, Controller, Clock]) -> None:
    client, ctl, _ = demo
    name = next(iter(ctl.models))
    assert client.post(f"/v1/models/{name}/mode", json={"mode": "shadow"}).status_code == 401
    bad = client.post(f"/v1/models/{name}/pause", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post(f"/v1/models/{name}/mode", json={"mode": "shadow"}, headers=auth)
    assert r.status_code == 200 and r.json()["mode"] == "shadow"
    assert client.post(f"/v1/models/{name}/mode", json={"mode": "off"}, headers=auth).status_code == 422
    assert client.post(f"/v1/models/{name}/pause", headers=auth).json()["paused"] is True
    assert client.post(f"/v1/models/{name}/resume", headers=auth).json()["paused"] is False
    assert (
        client.post(f"/v1/models/{name}/mode", json={"mode": "active"}, headers=auth).json()["mode"]
        == "active"
    )


def test_json_sent_as_a_form_is_refused_with_the_header_to_send(
    demo: tuple[TestClient, Controller, Clock],
) -> None:
    """`curl -d '{...}'` without a content type sends a form: the answer says what to send instead."""
    client, ctl, _ = demo
    name = next(iter(ctl.models))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    r = client.post(f"/v1/models/{name}/mode", content=b'{"mode": "shadow"}', headers=form)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("request body: ")
    assert "Content-Type: application/json" in r.json()["detail"]
    as_json = {**auth, "Content-Type": "application/json"}
    ok = client.post(f"/v1/models/{name}/mode", content=b'{"mode": "shadow"}', headers=as_json)
    assert ok.status_code == 200 and ok.json()["mode"] == "shadow"


def test_without_a_configured_token_every_switch_is_refused(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    view = ControllerView(build_demo(clock, f"sqlite:///{tmp_path / 's.db'}"), clock)
    with TestClient(create_app(view, api_token=None)) as client:
        r = client.post("/v1/models/chat-large/pause", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and "no api token is configured" in r.json()["detail"]


def test_health_readiness_and_metrics(demo: tuple[TestClient, Controller, Clock], tmp_path: Path) -> None:
    client, *_ = demo
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert all(m["actuator_reachable"] for m in ready.json()["models"].values())
    text = client.get("/metrics").text
    for family in (
        "prewarm_desired_replicas",
        "prewarm_t_load_seconds",
        "prewarm_forecast_requests_per_second",
        "prewarm_decisions_total",
        "prewarm_job_failures_total",
    ):
        assert f"# TYPE {family} " in text
    assert all(line.startswith(("# ", "prewarm_")) for line in text.strip().splitlines())
    # a service that has not ticked yet is not ready, and says why per model
    clock = Clock(demo_start_s())
    fresh = ControllerView(build_demo(clock, f"sqlite:///{tmp_path / 'f.db'}"), clock)
    with TestClient(create_app(fresh, api_token=None)) as c2:
        r = c2.get("/readyz")
    assert r.status_code == 503
    assert "no successful refit yet" in r.json()["models"]["chat-large"]["problems"][0]


def test_the_dashboard_is_served_without_a_build_step(demo: tuple[TestClient, Controller, Clock]) -> None:
    client, *_ = demo
    page = client.get("/")
    assert page.status_code == 200 and 'data-chart="traffic"' in page.text and "/v1/models" in page.text


def test_the_api_reference_needs_no_network_and_lists_every_endpoint(
    demo: tuple[TestClient, Controller, Clock],
) -> None:
    """FastAPI's /docs loads Swagger UI from a CDN and is blank in a cluster without internet access."""
    client, *_ = demo
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "a remote asset"
    assert "<script" not in page.text
    for path in client.get("/openapi.json").json()["paths"]:
        assert f"<code>{html.escape(path)}</code>" in page.text, path
    assert 'href="/openapi.json"' in page.text and "needs <code>Authorization: Bearer</code>" in page.text
    assert client.get("/redoc").status_code == 404  # ReDoc's page would load its script from a CDN too
