"""schemathesis against the API's own OpenAPI schema: no request it generates gets a 500 or a response
that violates the schema."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from tests.fakes import ticked_demo


def _app() -> object:
    store = Path(tempfile.mkdtemp(prefix="prewarm-schema-")) / "store.db"
    _, view, _ = ticked_demo(store, 3)
    return create_app(view, api_token="schema-token")


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_500_or_an_off_schema_response(case: schemathesis.Case) -> None:
    case.call_and_validate()
