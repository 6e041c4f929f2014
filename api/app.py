"""The FastAPI application: /v1 read-only views, token-protected switches, health, metrics, dashboard.

Every bad request is a 4xx with a sentence saying what was wrong (unknown model, bad horizon, bad quantile,
bad time); nothing a client sends can cause a 500.
"""

from __future__ import annotations

import csv
import hmac
import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from api.ports import ServiceView, TokenSource, UnknownModel
from api.reference import render_reference
from forecaster.durations import parse_duration_s

DASHBOARD = Path(__file__).with_name("dashboard.html")
MAX_HORIZON_S = 7 * 86_400
BEARER = HTTPBearer(auto_error=False, description="the api token from the config")


class StepOut(BaseModel):
    stage: str
    before: int | None
    after: int
    reason: str
    message: str


class DecisionOut(BaseModel):
    id: int
    model: str
    at: str
    valid: bool
    current_replicas: int
    raw_replicas: int
    desired_replicas: int
    reason: str
    reasons: list[str]
    explanation: str
    inputs: dict[str, Any]
    steps: list[StepOut]
    actuation: dict[str, Any] | None = None
    ready_replicas: int | None = Field(None, description="Replicas warm and serving when the tick ran")


class ModelOut(BaseModel):
    name: str
    target: str
    mode: Literal["active", "shadow"]
    paused: bool
    forecast_model: str | None
    t_load_s: float
    t_load_source: str
    current_replicas: int | None
    desired_replicas: int | None
    healthy: bool
    health_note: str
    data_age_s: float | None
    fit: dict[str, Any] | None = Field(
        None, description="The fit in use: its forecaster, the history it was fitted on (history_s), notes"
    )
    fit_error: str | None = Field(None, description="Why the newest full fit failed (the previous is kept)")
    slo_target: float | None = None
    slo_wait_s: float | None = None
    alpha: float | None = None
    late_budget: float | None = Field(
        None, description="Share of requests the plan lets be late at each step (planning for the SLO)"
    )
    lam: float | None = Field(None, alias="lambda", description="late_budget / (1 - slo_target)")
    use_forecast: bool = True
    burst_reserve_replicas: int = 0
    burst_reserve_share: float = 0.0
    slo_unreachable: bool = False


class ForecastPoint(BaseModel):
    timestamp: str
    mean: float
    quantiles: dict[str, float]


class ForecastOut(BaseModel):
    model: str
    forecast_model: str
    origin: str
    step_s: int
    # the traffic series' own unit, as it is fitted: requests in each step (divide by step_s for requests/s;
    # decisions and their explanations speak in requests/s)
    unit: Literal["requests per step"] = Field(
        "requests per step", description="each value counts the requests of one step_s; / step_s for req/s"
    )
    points: list[ForecastPoint]


class ModeIn(BaseModel):
    mode: Literal["active", "shadow"] = Field(
        description="active applies decisions; shadow only records them"
    )


class Problem(BaseModel):
    detail: str


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str) -> float:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            400, f"{what}={text!r} is not an ISO-8601 time such as 2026-01-05T09:00:00Z"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def decision_out(d: dict[str, Any]) -> DecisionOut:
    return DecisionOut(
        id=int(d["id"]),
        model=str(d["model"]),
        at=iso(float(d["at_s"])),
        valid=bool(d["valid"]),
        current_replicas=int(d["current_replicas"]),
        raw_replicas=int(d["raw_replicas"]),
        desired_replicas=int(d["desired_replicas"]),
        reason=str(d["reason"]),
        reasons=[str(r) for r in d.get("reasons", [])],
        explanation=str(d.get("explanation", "")),
        inputs=dict(d.get("inputs", {})),
        steps=[StepOut(**s) for s in d.get("steps", [])],
        actuation=d.get("actuation"),
        ready_replicas=d.get("ready_replicas"),
    )


def create_app(view: ServiceView, *, api_token: str | TokenSource | None) -> FastAPI:
    """`api_token`: the bearer token the mutating endpoints require, or where to read it on each request
    (None: they are refused, 403)."""
    app = FastAPI(
        title="prewarm",
        version="1",
        description="Predictive pre-warming autoscaler: forecasts, decisions and their explanations.",
        responses={400: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}},
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: blank without internet access
        redoc_url=None,
    )

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(render_reference(app.openapi()))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = tuple(e.get("loc", ()))
            where = ".".join(str(p) for p in loc if p not in ("query", "body", "path"))
            if loc == ("body",):  # the body as a whole: most often JSON sent without its content type
                parts.append(
                    f"request body: {e.get('msg')}; send a JSON object with Content-Type: application/json "
                    "(curl -d alone sends a form)"
                )
                continue
            parts.append(f"{where}: {e.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    def model_or_404(name: str) -> dict[str, Any]:
        try:
            return view.model(name)
        except UnknownModel:
            known = ", ".join(m["name"] for m in view.models()[:20])
            raise HTTPException(404, f"unknown model {name!r}; known: {known or 'none'}") from None

    def require_token(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        token = api_token if api_token is None or isinstance(api_token, str) else api_token.token()
        if token is None:
            why = "" if api_token is None or isinstance(api_token, str) else f" ({api_token.why_none()})"
            raise HTTPException(403, f"mutating endpoints are disabled: no api token is configured{why}")
        given = cred.credentials if cred is not None else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    guarded: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}}

    @app.get("/v1/models", response_model=list[ModelOut], summary="Every configured model")
    def list_models() -> list[dict[str, Any]]:
        return view.models()

    @app.get("/v1/models/{model}", response_model=ModelOut, summary="One model")
    def get_model(model: str) -> dict[str, Any]:
        return model_or_404(model)

    @app.get(
        "/v1/models/{model}/forecast",
        response_model=ForecastOut,
        summary="The latest forecast (format=csv for CSV)",
        responses={200: {"content": {"text/csv": {}}}},
    )
    def get_forecast(
        model: str,
        horizon: Annotated[str, Query(description="how far ahead, e.g. 30m, 2h")] = "2h",
        quantiles: Annotated[str, Query(description="comma-separated levels in (0, 1)")] = "0.5,0.9",
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Any:
        model_or_404(model)
        try:
            horizon_s = parse_duration_s(horizon, what="horizon")
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if horizon_s > MAX_HORIZON_S:
            raise HTTPException(400, f"horizon={horizon!r} is longer than the 7-day maximum")
        try:
            levels = sorted({float(q) for q in quantiles.split(",") if q.strip()})
        except ValueError:
            raise HTTPException(400, f"quantiles={quantiles!r}: expected numbers such as 0.5,0.9") from None
        if not levels or any(not (0 < q < 1) or not math.isfinite(q) for q in levels):
            raise HTTPException(400, f"quantiles={quantiles!r}: each level must be inside (0, 1)")
        fc = view.forecast(model)
        if fc is None:
            raise HTTPException(404, f"no forecast for {model!r} yet (the first refit has not succeeded)")
        available = {float(k): v for k, v in fc["quantiles"].items()}
        missing = [q for q in levels if q not in available]
        if missing:
            have = ",".join(f"{q:g}" for q in sorted(available))
            raise HTTPException(
                400, f"quantiles {', '.join(f'{q:g}' for q in missing)} are not forecast; have {have}"
            )
        n = min(len(fc["mean"]), max(1, math.ceil(horizon_s / fc["step_s"])))
        points = [
            ForecastPoint(
                timestamp=iso(fc["origin_s"] + i * fc["step_s"]),
                mean=fc["mean"][i],
                quantiles={f"{q:g}": available[q][i] for q in levels},
            )
            for i in range(n)
        ]
        if format == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["timestamp", "mean", *[f"q{q:g}" for q in levels]])
            for p in points:
                w.writerow([p.timestamp, p.mean, *[p.quantiles[f"{q:g}"] for q in levels]])
            return Response(buf.getvalue(), media_type="text/csv")
        return ForecastOut(
            model=model,
            forecast_model=fc["model"],
            origin=iso(fc["origin_s"]),
            step_s=fc["step_s"],
            points=points,
        )

    @app.get(
        "/v1/models/{model}/history",
        summary="Observed requests per step since a time, and the p50/p90 forecast made before each",
    )
    def get_history(model: str, since: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        model_or_404(model)
        since_s = parse_time(since, "since") if since else view.now_s() - 86_400
        return view.history(model, since_s)

    @app.get(
        "/v1/models/{model}/decisions", response_model=list[DecisionOut], summary="Decisions, newest first"
    )
    def get_decisions(
        model: str,
        since: Annotated[str | None, Query(description="ISO-8601 time")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[DecisionOut]:
        model_or_404(model)
        since_s = parse_time(since, "since") if since else None
        return [decision_out(d) for d in view.decisions(model, since_s, limit)]

    @app.get("/v1/decisions/{decision_id}", response_model=DecisionOut, summary="One decision")
    def get_decision(decision_id: Annotated[int, Field(ge=0, le=2**62)]) -> DecisionOut:
        d = view.decision(decision_id)
        if d is None:
            raise HTTPException(404, f"no decision {decision_id}")
        return decision_out(d)

    @app.get("/v1/models/{model}/backtests/latest", summary="The last nightly backtest of this model")
    def get_backtest(model: str) -> dict[str, Any]:
        model_or_404(model)
        bt = view.latest_backtest(model)
        if bt is None:
            raise HTTPException(404, f"no backtest of {model!r} yet")
        return bt

    @app.get(
        "/v1/models/{model}/tuning",
        summary="The SLO, the tuned operating point, the candidate table and the saving against a warm pool",
    )
    def get_tuning(model: str) -> dict[str, Any]:
        model_or_404(model)
        doc = view.tuning(model)
        if doc is None:
            raise HTTPException(404, f"{model!r} has no SLO target (slo.target), so it is not tuned")
        return doc

    @app.post(
        "/v1/models/{model}/mode",
        response_model=ModelOut,
        dependencies=[Depends(require_token)],
        responses=guarded,
    )
    def post_mode(model: str, body: ModeIn) -> dict[str, Any]:
        model_or_404(model)
        return view.set_mode(model, body.mode)

    @app.post(
        "/v1/models/{model}/pause",
        response_model=ModelOut,
        dependencies=[Depends(require_token)],
        responses=guarded,
    )
    def post_pause(model: str) -> dict[str, Any]:
        model_or_404(model)
        return view.set_paused(model, True)

    @app.post(
        "/v1/models/{model}/resume",
        response_model=ModelOut,
        dependencies=[Depends(require_token)],
        responses=guarded,
    )
    def post_resume(model: str) -> dict[str, Any]:
        model_or_404(model)
        return view.set_paused(model, False)

    @app.get("/v1/fleet", summary="How the shared GPU budget was allocated across the models this tick")
    def get_fleet() -> dict[str, Any]:
        return view.fleet()

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The service ticks (200); each model's health, and why not, in the body",
        responses={503: {"description": "not ticking yet, or no longer; the body says why"}},
    )
    def readyz() -> JSONResponse:
        ok, detail = view.readiness()
        return JSONResponse({"ready": ok, **detail}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus exposition")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(render_metrics(view.metrics()), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD.read_text())

    return app


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(samples: list[tuple[str, str, dict[str, str], float]]) -> str:
    """The text exposition format: one HELP/TYPE per family, then its samples."""
    out: list[str] = []
    seen: set[str] = set()
    for name, help_text, labels, value in sorted(samples, key=lambda s: s[0]):
        if name not in seen:
            seen.add(name)
            kind = "counter" if name.endswith("_total") else "gauge"
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
        lab = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        val = "NaN" if not math.isfinite(value) else repr(float(value))
        out.append(f"{name}{{{lab}}} {val}" if lab else f"{name} {val}")
    return "\n".join(out) + "\n"
