"""schemathesis against the API's own OpenAPI schema: no request it generates gets a 500 or a response
that violates the schema."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _app() -> object:
    import tempfile

    clock = Clock(demo_start_s())
    store = Path(tempfile.mkdtemp(prefix="prewarm-schema-")) / "store.db"
    ctl = build_demo(clock, f"sqlite:///{store}")
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock)
    for _ in range(3):
        jobs.tick_all()
        clock.t += 60
    return create_app(view, api_token="schema-token")


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_500_or_an_off_schema_response(case: schemathesis.Case) -> None:
    case.call_and_validate()
