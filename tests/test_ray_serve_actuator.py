"""The Ray Serve actuator against a real local Ray Serve (started here on 127.0.0.1, auth disabled)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from actuator.base import Outcome, Target
from actuator.errors import TransientError
from actuator.lead_time import LeadTimeEstimator
from actuator.ray_serve import CONNECTION_RETRIES, RayServeActuator
from planner.explain import Decision, Reason, Step
from tests.loopback import LoopbackServer
from tests.prometheus_harness import free_port
from tests.ray_harness import ray_head

ROOT = Path(__file__).resolve().parent.parent
COLD_START_S = 3.0
MODEL = Target("RayServe", "llm", "Model")
READY_TIMEOUT_S = 120.0
# both Ray test modules start and `ray stop --force` a head on this machine: one xdist worker runs them
pytestmark = pytest.mark.xdist_group("ray")


def decision(n: int) -> Decision:
    return Decision(
        0.0, True, 1, n, n, Reason.FORECAST_DEMAND, (Step("demand", None, n, Reason.FORECAST_DEMAND, "x"),)
    )


def wait_for(check: object, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll a real system until check() is true (the system's own time, not a stand-in for a clock). A
    transient error (the dashboard dropping a connection, busy while it deploys) means "not yet"."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (TransientError, requests.ConnectionError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout_s:g} s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


@pytest.fixture(scope="module")
def serve() -> Iterator[str]:
    with ray_head(dashboard=True, extra_env={"PREWARM_TEST_COLD_START_S": str(COLD_START_S)}) as head:
        url = head.dashboard_url
        assert url is not None
        config = {
            "http_options": {"host": "127.0.0.1", "port": free_port()},
            "applications": [
                {
                    "name": "llm",
                    "route_prefix": "/llm",
                    "import_path": "tests.ray_app:app",
                    "deployments": [
                        {
                            "name": "Model",
                            "autoscaling_config": {
                                "min_replicas": 1,
                                "max_replicas": 4,
                                "target_ongoing_requests": 2,
                            },
                        }
                    ],
                },
                {  # replicas set from outside through the external scaling endpoint
                    "name": "batch",
                    "route_prefix": "/batch",
                    "import_path": "tests.ray_app:app",
                    "external_scaler_enabled": True,
                    "deployments": [{"name": "Model", "num_replicas": 1}],
                },
            ],
        }

        def accepted() -> bool:
            # the same declarative config again is idempotent: the first PUT starts Serve's controller,
            # which on a loaded machine took longer than one read timeout (60 s) to answer, or answered
            # 500 while it was still starting (a CI run beside a 10,000-model soak): both mean "not yet"
            try:
                r = requests.put(f"{url}/api/serve/applications/", json=config, timeout=60)
            except requests.Timeout:
                return False
            if r.status_code >= 500:
                raise TransientError(f"HTTP {r.status_code}: {r.text[:500]}", delay_s=0.5)
            r.raise_for_status()
            return True

        wait_for(accepted, "the dashboard to accept the Serve config", timeout_s=4 * READY_TIMEOUT_S)

        def running() -> bool:
            apps = requests.get(f"{url}/api/serve/applications/", timeout=10).json().get("applications", {})
            return all(apps.get(a, {}).get("status") == "RUNNING" for a in ("llm", "batch"))

        wait_for(running, "both applications to run")
        yield url


def test_raising_the_floor_starts_warm_replicas_and_t_load_is_learned(serve: str) -> None:
    act = RayServeActuator(serve)
    assert act.current(MODEL).floor == 1
    asked = time.monotonic()
    result = act.apply(MODEL, decision(3), "d-1")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 1, 3)
    wait_for(lambda: act.current(MODEL).ready >= 3, "three RUNNING replicas")
    waited_s = time.monotonic() - asked
    state = act.current(MODEL)
    assert (state.desired, state.ready, state.floor) == (3, 3, 3)
    est = LeadTimeEstimator(300.0, min_samples=2)
    est.observe(act.cold_starts(MODEL))
    lead = est.estimate()
    assert (lead.source, lead.samples) == ("learned", 2)
    # the constructor sleeps COLD_START_S; process start and polling add to it, as much as the machine's
    # load makes them (24 s beside a 10,000-model soak), never more than the test waited for them
    assert COLD_START_S <= lead.t_load_s <= waited_s + 1.0, (lead, waited_s)
    # everything else in the deployed config is preserved
    deployed = requests.get(f"{serve}/api/serve/applications/", timeout=10).json()["applications"]["llm"]
    assert deployed["deployed_app_config"]["deployments"] == [
        {
            "name": "Model",
            "autoscaling_config": {"min_replicas": 3, "max_replicas": 4, "target_ongoing_requests": 2},
        }
    ]
    assert deployed["route_prefix"] == "/llm"
    assert act.apply(MODEL, decision(3), "d-2").outcome is Outcome.UNCHANGED


def test_direct_mode_uses_the_external_scaling_endpoint_where_the_application_enables_it(serve: str) -> None:
    batch = Target("RayServe", "batch", "Model")
    act = RayServeActuator(serve, modes={batch: "direct"})
    result = act.apply(batch, decision(2), "d-7")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 1, 2), result.message
    assert "external scale 1 -> 2" in result.message
    wait_for(lambda: act.current(batch).ready >= 2, "two RUNNING replicas of the externally scaled app")
    # the llm application was not redeployed by this
    apps = requests.get(f"{serve}/api/serve/applications/", timeout=10).json()["applications"]
    assert apps["llm"]["deployed_app_config"]["deployments"][0]["autoscaling_config"]["min_replicas"] >= 1


def test_the_floor_is_capped_at_max_replicas(serve: str) -> None:
    result = RayServeActuator(serve).apply(MODEL, decision(9), "d-3")
    assert result.after == 4 and "max_replicas is 4; asked 9" in result.message


def test_direct_mode_on_an_autoscaled_deployment_is_refused_with_the_reason(serve: str) -> None:
    result = RayServeActuator(serve, modes={MODEL: "direct"}).apply(MODEL, decision(2), "d-4")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, True)
    assert "cannot set num_replicas on a deployment with an autoscaling_config" in result.message


def test_an_unknown_deployment_is_a_permanent_error_naming_what_exists(serve: str) -> None:
    result = RayServeActuator(serve).apply(Target("RayServe", "llm", "Nope"), decision(2), "d-5")
    assert result.permanent and "has no deployment 'Nope' (found: Model)" in result.message


def test_an_unreachable_dashboard_is_transient() -> None:
    result = RayServeActuator(f"http://127.0.0.1:{free_port()}").apply(MODEL, decision(2), "d-6")
    assert (result.outcome, result.permanent) == (Outcome.FAILED, False)
    assert "the Ray dashboard is unreachable" in result.message


# -- a dashboard that closes kept-alive connections (a fake speaking real HTTP/1.1, no Ray) ----------------

APPS = {
    "applications": {
        "llm": {
            "deployed_app_config": {
                "name": "llm",
                "import_path": "app:app",
                "deployments": [{"name": "Model"}],
            },
            "deployments": {
                "Model": {
                    "target_num_replicas": 2,
                    "replicas": [
                        {"replica_id": "a", "state": "RUNNING"},
                        {"replica_id": "b", "state": "RUNNING"},
                    ],
                    "deployment_config": {"autoscaling_config": {"min_replicas": 2, "max_replicas": 4}},
                }
            },
        }
    }
}


class ClosingDashboard(LoopbackServer):
    """Answers the Serve REST API's GET and PUT of the applications with HTTP/1.1 keep-alive, and closes a
    kept-alive connection without an answer on the next `drops` requests that arrive on one (with
    `every_request`, on every request, a fresh connection's first too): what the Ray dashboard does to a
    connection it has timed out."""

    def __init__(self, drops: int = 1, *, every_request: bool = False) -> None:
        self.drops, self.every_request = drops, every_request
        self.requests: list[str] = []  # each request's method, dropped ones included
        self.dropped = 0
        self.puts: list[object] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the dashboard's server

            def setup(self) -> None:
                super().setup()
                self.served = 0  # requests answered on this connection

            def do_GET(self) -> None:
                self._answer(APPS)

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self._drop():
                    fake.puts.append(json.loads(body))
                    self._send(b"")

            def _answer(self, doc: object) -> None:
                if not self._drop():
                    self._send(json.dumps(doc).encode())

            def _drop(self) -> bool:
                fake.requests.append(self.command)
                if fake.drops > 0 and (self.served > 0 or fake.every_request):
                    fake.drops -= 1
                    fake.dropped += 1
                    self.close_connection = True  # closed with no status line: "Remote end closed ..."
                    return True
                self.served += 1
                return False

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        super().__init__(Handler)


@pytest.fixture
def closing_dashboard() -> Iterator[ClosingDashboard]:
    fake = ClosingDashboard()
    yield fake
    fake.close()


def test_a_read_on_a_connection_the_dashboard_closed_is_sent_again_on_a_new_one(
    closing_dashboard: ClosingDashboard,
) -> None:
    act = RayServeActuator(closing_dashboard.url)
    assert act.current(MODEL).ready == 2  # opens the connection the session keeps alive
    assert act.current(MODEL).ready == 2  # sent on it, dropped, sent again on a new one
    assert (closing_dashboard.requests, closing_dashboard.dropped) == (["GET", "GET", "GET"], 1)


def test_the_floor_is_raised_when_the_connection_drops_under_its_put(
    closing_dashboard: ClosingDashboard,
) -> None:
    act = RayServeActuator(closing_dashboard.url)
    # the GET of the deployed config opens the connection; the PUT on it is dropped, then sent again
    result = act.apply(MODEL, decision(3), "d-8")
    assert (result.outcome, result.before, result.after) == (Outcome.APPLIED, 2, 3), result.message
    assert closing_dashboard.requests == ["GET", "PUT", "PUT"]
    [put] = closing_dashboard.puts
    assert put["applications"][0]["deployments"] == [  # type: ignore[index]
        {"name": "Model", "autoscaling_config": {"min_replicas": 3, "max_replicas": 4}}
    ]


def test_a_dashboard_that_drops_every_request_is_tried_a_bounded_number_of_times() -> None:
    fake = ClosingDashboard(drops=100, every_request=True)
    try:
        with pytest.raises(TransientError, match="the Ray dashboard is unreachable"):
            RayServeActuator(fake.url).current(MODEL)
        assert fake.requests == ["GET"] * (1 + CONNECTION_RETRIES)
    finally:
        fake.close()


def held_tick(act: RayServeActuator, targets: list[Target]) -> list[tuple[object, ...]]:
    """A tick's calls for each model, asking for what it already holds: its replicas, apply, cold starts."""
    out: list[tuple[object, ...]] = []
    for t in targets:
        have = act.current(t)
        result = act.apply(t, decision(have.floor if have.floor is not None else have.desired), "d-held")
        act.cold_starts(t)
        out.append((have, result.outcome, result.message, result.before, result.after))
    return out


def test_a_tick_reads_the_applications_once_and_a_model_already_there_sends_nothing_more(serve: str) -> None:
    """The applications document describes every application: read per call, a tick fetched it about three
    times a model. Within reading(), once; a write reads it afresh first (its PUT replaces every
    application) and the next call reads it again."""
    batch = Target("RayServe", "batch", "Model")
    targets = [MODEL, batch]
    modes = {batch: "direct"}
    alone = RayServeActuator(serve, modes=modes)
    sent: list[tuple[str, str]] = []
    act = RayServeActuator(serve, modes=modes)
    act.session.hooks["response"].append(
        lambda r, *_, **__: sent.append((r.request.method, r.request.path_url))
    )
    one_by_one = held_tick(alone, targets)
    with act.reading(targets):
        assert held_tick(act, targets) == one_by_one
        assert all(outcome is Outcome.UNCHANGED for _, outcome, *_ in one_by_one)
        assert sent == [("GET", "/api/serve/applications/")]
        sent.clear()
        floor = act.current(MODEL).floor
        assert floor is not None
        moved = act.apply(MODEL, decision(1 if floor > 1 else 2), "d-moved")
        assert moved.outcome is Outcome.APPLIED, moved.message
        assert sent == [("GET", "/api/serve/applications/"), ("PUT", "/api/serve/applications/")]
        act.current(batch)
        assert sent[-1] == ("GET", "/api/serve/applications/")  # after the write, read again
