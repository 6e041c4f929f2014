"""Raise warm replicas of a Ray Serve deployment through the Serve REST API on the Ray dashboard address.

Modes:
- `floor` (default): the deployment's `autoscaling_config.min_replicas`, so Serve's own autoscaler still
  reacts above prewarm's floor;
- `direct`: `num_replicas` (for deployments without autoscaling). With `external_scaler_enabled` on the
  application, direct mode uses Ray's external scaling endpoint
  (`POST /api/v1/applications/{app}/deployments/{deployment}/scale`) instead of redeploying the config.

Floor and direct-by-config update the declarative config (`PUT /api/serve/applications/`), which replaces
every application on the cluster: the config sent is the one Serve reports as deployed, with only the one
field changed, so everything else (other applications, routes, runtime envs, user configs) is preserved. An
application deployed imperatively (`serve.run`) has no declarative config to preserve; prewarm refuses to
PUT over it and says so.

Auth: the dashboard takes `Authorization: Bearer <token>`; the token comes from the config, RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or Ray's default token file, in that order.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from actuator.base import ActuationResult, ColdStart, Outcome, ReplicaState, Target
from actuator.errors import ActuatorError, PermanentError, TransientError
from planner.explain import Decision

RAY_DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
CONNECTION_RETRIES = 2  # further attempts of an idempotent request whose connection failed (see _call)


def ray_token(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    for p in ([Path(path)] if path else []) + [RAY_DEFAULT_TOKEN_FILE]:
        try:
            text = p.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def split_target(t: Target) -> tuple[str, str]:
    """A Ray Serve target is kind `RayServe`, namespace = application, name = deployment."""
    if t.kind != "RayServe":
        raise PermanentError(f"{t}: the Ray Serve actuator takes kind RayServe (application/deployment)")
    return t.namespace, t.name


class RayServeActuator:
    def __init__(
        self,
        dashboard_url: str,
        *,
        token: str | None = None,
        modes: dict[Target, str] | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        for t, m in (modes or {}).items():
            if m not in ("floor", "direct"):
                raise ValueError(f"mode for {t}={m!r} is not one of floor, direct")
        self.url = dashboard_url.rstrip("/")
        self.session = requests.Session()
        tok = ray_token(token)
        if tok:
            self.session.headers["Authorization"] = f"Bearer {tok}"
        self.modes = modes or {}
        self.timeout_s = timeout_s
        self._starts: dict[str, ColdStart] = {}
        self._starting_since: dict[str, float] = {}
        # within reading(): the Serve applications document, read once for the tick (None: not yet)
        self._reading = False
        self._read: dict[str, Any] | None = None
        self._imperative_of: tuple[dict[str, Any], list[str]] | None = None
        import time

        self.clock = clock or time.time

    # -- HTTP ----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, idempotent: bool | None = None) -> Any:
        """One request to the dashboard. An idempotent one (a GET, or a request whose body sets absolute
        values, so that sending it twice leaves what sending it once does) is sent again, at most
        CONNECTION_RETRIES times, when the connection fails before an answer: the dashboard closes
        kept-alive connections when idle, and the session's next request on one fails with "Remote end
        closed connection without response" although the dashboard is up. A timeout is not retried."""
        what = f"{method} {self.url}{path}"
        retries = CONNECTION_RETRIES if (method == "GET" if idempotent is None else idempotent) else 0
        attempt = 0
        while True:
            try:
                r = self.session.request(method, self.url + path, json=body, timeout=self.timeout_s)
                break
            except requests.RequestException as exc:
                # dropped before an answer; a timeout is a dashboard that may still act on it: not sent again
                dropped = isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.Timeout)
                if dropped and attempt < retries:
                    attempt += 1  # the pool discarded the failed connection: this one is new
                    continue
                raise TransientError(
                    f"{what}: the Ray dashboard is unreachable ({exc})", delay_s=10.0
                ) from exc
        if r.status_code >= 400:
            text = r.text.strip()[:500]
            if r.status_code in (401, 403):
                raise PermanentError(
                    f"{what}: HTTP {r.status_code}: {text} (set the Ray auth token in the config, "
                    "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)",
                    r.status_code,
                )
            if r.status_code >= 500 or r.status_code == 429:
                raise TransientError(f"{what}: HTTP {r.status_code}: {text}", delay_s=10.0)
            raise PermanentError(f"{what}: HTTP {r.status_code}: {text}", r.status_code)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError as exc:
            raise PermanentError(f"{what}: not a JSON answer; is this the Ray dashboard address?") from exc

    @contextmanager
    def reading(self, targets: Sequence[Target]) -> Iterator[None]:
        """Within the block (one tick), the Serve applications document is read once and every model's
        replicas, cold starts and "already there" come from it: it describes every application, and read per
        call a tick fetched it about three times a model. A write reads it afresh first (the PUT replaces
        every application, so it is built from the config as deployed now), and the next call after a write
        reads it again."""
        self._reading, self._read = True, None
        try:
            yield
        finally:
            self._reading, self._read = False, None

    def _instance(self) -> dict[str, Any]:
        if self._read is not None:
            return self._read
        doc = self._call("GET", "/api/serve/applications/")
        if not isinstance(doc, dict):
            raise PermanentError(
                f"{self.url}: the Serve REST API answered {type(doc).__name__}, not an object"
            )
        if self._reading:
            self._read = doc
        return doc

    def _details(self, t: Target) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        app_name, dep_name = split_target(t)
        inst = self._instance()
        apps = inst.get("applications") or {}
        app = apps.get(app_name)
        if app is None:
            raise PermanentError(
                f"{t}: no Serve application {app_name!r} (found: {', '.join(sorted(apps)) or 'none'})"
            )
        dep = (app.get("deployments") or {}).get(dep_name)
        if dep is None:
            known = ", ".join(sorted(app.get("deployments") or {})) or "none"
            raise PermanentError(
                f"{t}: application {app_name!r} has no deployment {dep_name!r} (found: {known})"
            )
        return inst, app, dep

    # -- the port ------------------------------------------------------------------------------------

    def current(self, t: Target) -> ReplicaState:
        _, _, dep = self._details(t)
        self._track(dep)
        replicas = dep.get("replicas") or []
        running = sum(1 for r in replicas if r.get("state") == "RUNNING")
        target = dep.get("target_num_replicas")
        cfg = dep.get("deployment_config") or {}
        floor = (cfg.get("autoscaling_config") or {}).get("min_replicas")
        return ReplicaState(
            desired=int(target if target is not None else len(replicas)), ready=running, floor=floor
        )

    def apply(self, t: Target, decision: Decision, decision_id: str) -> ActuationResult:
        want = int(decision.desired_replicas)
        if self._read is not None:  # the tick's read: enough to see that nothing needs writing
            seen = self._apply(t, want, write=False)
            if seen.outcome is Outcome.UNCHANGED:
                return seen
            self._read = None  # a write, or an error to tell: from the deployed config as it is now
        try:
            return self._apply(t, want, write=True)
        finally:
            self._read = None  # the next call reads what this one may have written

    def _apply(self, t: Target, want: int, *, write: bool) -> ActuationResult:
        """What applying `want` does; with write=False, what it would do (sending nothing)."""
        try:
            inst, app, dep = self._details(t)
            mode = self.modes.get(t, "floor")
            cfg = dep.get("deployment_config") or {}
            auto = cfg.get("autoscaling_config")
            if mode == "direct" and app.get("external_scaler_enabled"):
                before = int(dep.get("target_num_replicas") or 0)
                if before == want:
                    return ActuationResult(
                        Outcome.UNCHANGED, f"{t} already targets {want} (external scale)", want, want
                    )
                app_name, dep_name = split_target(t)
                # an absolute target: sending it twice scales to it once
                if write:
                    self._call(
                        "POST",
                        f"/api/v1/applications/{app_name}/deployments/{dep_name}/scale",
                        {"target_num_replicas": want},
                        idempotent=True,
                    )
                return ActuationResult(
                    Outcome.APPLIED, f"{t}: external scale {before} -> {want}", before, want
                )
            if mode == "floor" and not auto:
                raise PermanentError(
                    f"{t}: mode floor needs an autoscaling_config on the deployment; it has none "
                    "(use mode direct)"
                )
            if mode == "direct" and auto:
                raise PermanentError(
                    f"{t}: mode direct cannot set num_replicas on a deployment with an autoscaling_config "
                    "(Serve refuses both; use mode floor, or deploy with external_scaler_enabled and no "
                    "autoscaling_config to use the external scaling endpoint)"
                )
            config, entry = self._declarative(inst, t, whole=write)
            note = ""
            if mode == "floor":
                assert auto is not None
                # change only min_replicas in the config as written; a deployment whose autoscaling is set in
                # code gets the effective config written out (a config entry replaces the code's as a whole)
                written = entry.get("autoscaling_config")
                scaling = dict(written) if written else {k: v for k, v in auto.items() if v is not None}
                before = int(scaling.get("min_replicas", auto.get("min_replicas", 1)))
                cap = int(scaling.get("max_replicas", auto.get("max_replicas", want)))
                target = min(want, cap)
                if target != want:
                    note = f" (autoscaling max_replicas is {cap}; asked {want})"
                scaling["min_replicas"] = target
                if scaling.get("initial_replicas") is not None:
                    scaling["initial_replicas"] = max(int(scaling["initial_replicas"]), target)
                entry["autoscaling_config"] = scaling
            else:
                before = int(entry.get("num_replicas", cfg.get("num_replicas") or 1))
                target = want
                entry["num_replicas"] = target
            if before == target:
                return ActuationResult(
                    Outcome.UNCHANGED, f"{t} already at {target} ({mode}){note}", before, target
                )
            # the whole declarative config, as deployed but for one field: sending it twice deploys it once
            if write:
                self._call("PUT", "/api/serve/applications/", config, idempotent=True)
            return ActuationResult(Outcome.APPLIED, f"{t}: {mode} {before} -> {target}{note}", before, target)
        except ActuatorError as exc:
            permanent = isinstance(exc, PermanentError)
            delay = exc.delay_s if isinstance(exc, TransientError) else None
            return ActuationResult(Outcome.FAILED, str(exc), permanent=permanent, retry_after_s=delay)

    def _imperative(self, inst: dict[str, Any]) -> list[str]:
        """The applications deployed imperatively (no declarative config), once per document read."""
        if self._imperative_of is None or self._imperative_of[0] is not inst:
            apps = inst.get("applications") or {}
            found = sorted(n for n, a in apps.items() if not a.get("deployed_app_config"))
            self._imperative_of = (inst, found)
        return self._imperative_of[1]

    def _declarative(
        self, inst: dict[str, Any], t: Target, *, whole: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The whole deployed config (every application), and the target deployment's entry in it; with
        whole=False only the target's application in it (enough to read the entry: a tick reads every
        model's, and copying every application for each was quadratic)."""
        app_name, dep_name = split_target(t)
        apps = inst.get("applications") or {}
        imperative = self._imperative(inst)
        if imperative:
            raise PermanentError(
                f"{t}: application(s) {', '.join(imperative)} were deployed imperatively (serve.run) and "
                "have no declarative config; a PUT of the config would delete them. Deploy with "
                "`serve deploy` (or use mode direct with external_scaler_enabled)"
            )
        chosen = apps.values() if whole else [apps[app_name]] if app_name in apps else []
        config: dict[str, Any] = {"applications": [copy.deepcopy(a["deployed_app_config"]) for a in chosen]}
        for key in ("proxy_location", "http_options", "grpc_options", "target_capacity"):
            if inst.get(key) is not None:
                config[key] = copy.deepcopy(inst[key])
        # the GET reports options the PUT schema does not accept as is
        http = config.get("http_options")
        if isinstance(http, dict):
            config["http_options"] = {
                k: v
                for k, v in http.items()
                if k in ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s")
            }
        app_cfg = next(a for a in config["applications"] if a.get("name") == app_name)
        deployments = app_cfg.setdefault("deployments", [])
        entry = next((d for d in deployments if d.get("name") == dep_name), None)
        if entry is None:
            entry = {"name": dep_name}
            deployments.append(entry)
        return config, entry

    # -- cold starts ---------------------------------------------------------------------------------

    def _track(self, dep: dict[str, Any]) -> None:
        """Replica state transitions STARTING -> RUNNING are cold starts. Serve reports each replica's
        start_time_s (when it was asked for); RUNNING is seen at the first poll that shows it, so the
        measurement's resolution is the polling interval."""
        now = self.clock()
        for r in dep.get("replicas") or []:
            rid = str(r.get("replica_id") or r.get("actor_name"))
            state = r.get("state")
            started = r.get("start_time_s")
            if state in ("STARTING", "PENDING_MIGRATION", "UPDATING"):
                self._starting_since.setdefault(rid, float(started) if started else now)
            elif state == "RUNNING" and rid in self._starting_since and rid not in self._starts:
                created = self._starting_since[rid]
                self._starts[rid] = ColdStart(
                    replica=rid, created_s=created, ready_s=now, phases_s={"starting": now - created}
                )

    def cold_starts(self, t: Target) -> list[ColdStart]:
        _, _, dep = self._details(t)
        self._track(dep)
        return sorted(self._starts.values(), key=lambda c: c.ready_s)
