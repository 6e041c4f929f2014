"""The service's configuration file: typed, validated, units in the names.

This module holds the `prometheus` and `models` sections (what the nightly backtest and the live loop read
traffic from); the service adds its own sections beside them. Every error names the key, the value given
and what is allowed, so a bad file stops with one actionable line.

    prometheus:
      url: http://prometheus.monitoring:9090
      bearer_token_file: /var/run/secrets/prometheus/token   # or bearer_token, or username + password
    models:
      - name: llama-8b
        query: sum(rate(http_requests_total{model="llama-8b"}[1m]))   # requests per second
        step_s: 60
        history_days: 14
        capacity_rps: 30
        t_load_s: 300
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forecaster.dropouts import DEFAULT_MAX_S, DEFAULT_MIN_COUNT
from forecaster.sources.prometheus import ModelQuery, PrometheusSettings
from forecaster.types import SECONDS_PER_DAY


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key, the value and the rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusConfig(_Strict):
    url: str = Field(pattern=r"^https?://[^/\s]+", description="Prometheus base URL")
    bearer_token: str | None = None
    bearer_token_file: Path | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = Field(30.0, ge=0.1, le=3600)
    retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0, le=600)
    max_points_per_query: int = Field(10_000, ge=2, le=11_000)

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusConfig:
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("give bearer_token or bearer_token_file, not both")
        if (self.bearer_token or self.bearer_token_file) and (self.username or self.password):
            raise ValueError("give a bearer token or username/password, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("basic auth needs both username and password")
        return self

    def settings(self) -> PrometheusSettings:
        token = self.bearer_token
        if self.bearer_token_file is not None:
            try:
                token = self.bearer_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"prometheus.bearer_token_file={str(self.bearer_token_file)!r}: {exc}"
                ) from exc
        return PrometheusSettings(
            url=self.url,
            bearer_token=token,
            username=self.username,
            password=self.password,
            ca_file=str(self.ca_file) if self.ca_file else None,
            insecure_skip_verify=self.insecure_skip_verify,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_points_per_query=self.max_points_per_query,
        )


class TargetConfig(_Strict):
    """What to scale: a Kubernetes Deployment/StatefulSet, a Ray Serve application/deployment, or the
    built-in simulated fleet (for trying the service without a cluster)."""

    kind: Literal["Deployment", "StatefulSet", "RayServe", "Simulated"]
    namespace: str = Field(
        min_length=1, max_length=253, description="namespace, or the Ray Serve application"
    )
    name: str = Field(min_length=1, max_length=253, description="workload, or the Ray Serve deployment")
    actuator_mode: str = Field(
        "auto", description="kubernetes: auto, hpa-floor, keda-floor, replicas; Ray Serve: floor, direct"
    )

    @model_validator(mode="after")
    def _mode(self) -> TargetConfig:
        allowed = {"RayServe": ("floor", "direct"), "Simulated": ("auto",)}.get(
            self.kind, ("auto", "hpa-floor", "keda-floor", "replicas")
        )
        if self.kind == "RayServe" and self.actuator_mode == "auto":
            object.__setattr__(self, "actuator_mode", "floor")
        elif self.actuator_mode not in allowed:
            raise ValueError(
                f"actuator_mode={self.actuator_mode!r} for kind {self.kind}; allowed: {', '.join(allowed)}"
            )
        return self


class SloConfig(_Strict):
    """A model's SLO: `target` of requests start within `wait_s`. With a target, the nightly job tunes the
    operating point (alpha x burst reserve) on the trailing `tune_window_days` to meet it at least cost."""

    wait_s: float = Field(2.0, ge=0, le=3600, description="longest acceptable queueing wait")
    target: float | None = Field(None, description="share of requests within wait_s, (0, 1), e.g. 0.99")
    tune_window_days: float = Field(7.0, ge=1, le=30, description="history each tuning run replays")

    @field_validator("target")
    @classmethod
    def _share(cls, v: float | None) -> float | None:
        if v is None:
            return v
        from backtest.tuning import TuningError, check_target

        try:
            return check_target(v, "target")
        except TuningError as exc:
            raise ValueError(str(exc).removeprefix(f"target={v!r} ")) from None


class QueryGroupConfig(_Strict):
    """One PromQL expression for many models, split by a label: read in one query per refresh instead of
    one per model (e.g. sum by (model) (rate(vllm:request_success_total[1m])))."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    query: str = Field(min_length=1, description="PromQL returning one request-rate series per model")
    label: str = Field("model", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="the label naming the model")
    step_s: int = Field(60, ge=1, le=3600)
    history_days: float = Field(14.0, gt=0, le=400)


class ModelConfig(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    query: str | None = Field(
        None, min_length=1, description="PromQL whose value is the request rate in requests/s"
    )
    query_group: str | None = Field(
        None, description="instead of query: the query group that reads this model"
    )
    label_value: str | None = Field(
        None,
        min_length=1,
        description="with query_group: this model's value of the group's label (default: name)",
    )
    step_s: int = Field(60, ge=1, le=3600)
    history_days: float = Field(14.0, gt=0, le=400)
    max_staleness_s: float = Field(300.0, gt=0, le=86_400)
    capacity_rps: float | None = Field(None, gt=0, description="requests/s one replica serves")
    t_load_s: float = Field(300.0, ge=0, le=86_400)
    t_load_min_s: float | None = Field(
        None, ge=0, le=86_400, description="a learned T_load is never below this; null: the control tick"
    )
    slo: SloConfig = SloConfig()
    min_replicas: int = Field(
        1, ge=0, le=100_000, description="0: scale to zero when no request is likely (with slo.target)"
    )
    max_replicas: int = Field(1000, ge=1, le=100_000)
    cost_miss: float = Field(9.0, gt=0, description="cost of being one replica short, per tick")
    cost_idle: float = Field(1.0, gt=0, description="cost of one idle replica, per tick")
    alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="forecast quantile, and the price of queueing headroom; default the newsvendor fractile",
    )
    forecaster: str = Field("auto-fast", description="auto, auto-fast or a model alias (prewarm models)")
    target: TargetConfig | None = None
    mode: Literal["active", "shadow"] = "shadow"
    max_added_per_tick: int | None = Field(None, ge=1, le=100_000)
    gpus_per_replica: float = Field(1.0, gt=0, le=64, description="GPUs one replica holds (fleet budget)")
    priority: float = Field(
        1.0, gt=0, le=1000, description="weight of this model's late requests when the fleet budget binds"
    )
    prior: str | None = Field(
        None,
        description="under two days of history: borrow this model's daily shape (default: the fleet's)",
    )
    dropout_min_count: float = Field(
        DEFAULT_MIN_COUNT,
        gt=0,
        description="forecast requests per step above which a run of zeros is a telemetry dropout",
    )
    dropout_max_s: float = Field(
        DEFAULT_MAX_S, ge=0, le=30 * 86_400, description="hold a dropout at most this long, then believe it"
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "slo_wait_s" in data:
            raise ValueError("slo_wait_s is now slo.wait_s (beside slo.target)")
        return data

    @model_validator(mode="after")
    def _bounds(self) -> ModelConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas={self.max_replicas} must be >= min_replicas={self.min_replicas}")
        if (self.query is None) == (self.query_group is None):
            raise ValueError(
                "give query (this model's own PromQL) or query_group (a shared one), exactly one"
            )
        if self.label_value is not None and self.query_group is None:
            raise ValueError(f"label_value={self.label_value!r} needs query_group")
        return self

    def query_spec(self, groups: Sequence[QueryGroupConfig] = ()) -> ModelQuery:
        if self.query is not None:
            return ModelQuery(
                name=self.name,
                query=self.query,
                step_s=self.step_s,
                history_s=self.history_days * SECONDS_PER_DAY,
                max_staleness_s=self.max_staleness_s,
            )
        g = next(g for g in groups if g.name == self.query_group)
        return ModelQuery(
            name=self.name,
            query=g.query,
            step_s=g.step_s,
            history_s=g.history_days * SECONDS_PER_DAY,
            max_staleness_s=self.max_staleness_s,
            group=g.name,
            label=g.label,
            label_value=self.label_value or self.name,
        )


class ApiConfig(_Strict):
    host: str = "0.0.0.0"  # a sidecar listens on the pod network; the Service decides exposure
    port: int = Field(8080, ge=1, le=65535)
    token: str | None = Field(None, description="bearer token for the POST endpoints; none: they are refused")
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_token(self) -> ApiConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        return self

    def resolved_token(self) -> str | None:
        """The token now. A token file that does not exist (yet) is no token: the mutating endpoints are
        refused and /readyz says why, but the service runs (a Secret mounted `optional` may appear later);
        a file that exists but cannot be read is a configuration error."""
        if self.token_file is None:
            return self.token
        try:
            return self.token_file.read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"api.token_file={str(self.token_file)!r}: {exc}") from exc

    def why_no_token(self) -> str:
        if self.token_file is None:
            return "set api.token, api.token_file, --api-token or PREWARM_API_TOKEN"
        if not self.token_file.exists():
            return f"api.token_file={str(self.token_file)!r} does not exist (create its Secret)"
        return f"api.token_file={str(self.token_file)!r} is empty"


class FixedToken:
    """A token given once (the demo's --api-token or PREWARM_API_TOKEN), as the API's TokenSource."""

    def __init__(self, value: str | None) -> None:
        self.value = value or None

    def token(self) -> str | None:
        return self.value

    def why_none(self) -> str:
        return "the demo takes --api-token or PREWARM_API_TOKEN"


class ApiToken:
    """The api section as the API's TokenSource: the token is read on every mutating request, so a Secret
    mounted `optional` that appears (or rotates) later takes effect without a restart."""

    def __init__(self, api: ApiConfig) -> None:
        self.api = api

    def token(self) -> str | None:
        try:
            return self.api.resolved_token()
        except ConfigError:
            return None

    def why_none(self) -> str:
        try:
            self.api.resolved_token()
        except ConfigError as exc:
            return str(exc)
        return self.api.why_no_token()


class StoreConfig(_Strict):
    url: str = Field("sqlite:///prewarm.db", description="SQLAlchemy URL of the decision store")
    retention_days: float = Field(30.0, gt=0, le=3650)


class SchedulesConfig(_Strict):
    tick_s: float = Field(30.0, ge=1, le=3600, description="control tick interval")
    refit_s: float = Field(
        300.0,
        ge=60,
        le=7 * 86_400,
        description="forecast re-anchored on new data this often (full refit daily)",
    )
    forecast_horizon_s: float = Field(
        86_400.0,
        ge=600,
        le=7 * 86_400,
        description="how far ahead the published forecast reaches (API, dashboard)",
    )
    publish_every_s: float = Field(
        900.0,
        ge=60,
        le=86_400,
        description="the published forecast is re-predicted this often; every refresh re-predicts what the "
        "planner reads",
    )
    backtest_hour_utc: int = Field(3, ge=0, le=23, description="hour of the nightly backtest (UTC)")
    backtest_days: float = Field(14.0, ge=3, le=90, description="history each nightly backtest replays")


class KubernetesConfig(_Strict):
    in_cluster: bool = True
    kubeconfig: Path | None = None
    lease_namespace: str = "prewarm"
    lease_name: str = "prewarm-leader"
    lease_duration_s: float = Field(
        15.0, ge=2, le=600, description="a standby takes the Lease over after this long without a renew"
    )
    renew_deadline_s: float = Field(
        10.0, gt=0, le=600, description="the leader stops acting when it has not renewed for this long"
    )
    retry_period_s: float = Field(2.0, gt=0, le=60, description="renew (or try to acquire) this often")
    shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="several replicas share the fleet: models hash to this many shards, a Lease each "
        "(<lease_name>-<k>), and each replica acts on an even share of them (1: one leader acts on all)",
    )
    restore_floor_on_stop: bool = Field(
        True, description="on a clean shutdown, the leader gives each HPA/ScaledObject its own floor back"
    )

    @model_validator(mode="after")
    def _timing(self) -> KubernetesConfig:
        from actuator.leader import check_timing

        problem = check_timing(self.lease_duration_s, self.renew_deadline_s, self.retry_period_s)
        if problem:
            raise ValueError(problem)
        return self


class RayConfig(_Strict):
    dashboard_url: str = Field("http://127.0.0.1:8265", pattern=r"^https?://[^/\s]+")
    token: str | None = None


class ComputeConfig(_Strict):
    """Where nightly backtests, tuning runs and daily full refits run, fanned out per model."""

    backend: Literal["local", "ray"] = Field(
        "local", description="local: this machine's cores; ray: a Ray cluster (pip install 'prewarm[ray]')"
    )
    workers: int | None = Field(
        None, ge=1, le=1024, description="local worker processes; null: one per core (1: in the service)"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster address (host:port or ray://...); auto: RAY_ADDRESS; null: start one"
    )
    retries: int = Field(2, ge=0, le=10, description="attempts after the first for a failed or lost task")
    worker_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="local workers' niceness: the control tick in the service's own process runs first when "
        "a night fills every core (0: equal priority)",
    )
    pause_for_tick: bool = Field(
        True,
        description="local workers are stopped while the control tick runs and go on after it: the tick "
        "keeps its idle speed beside a night (which loses the ticks' share of its time)",
    )

    @model_validator(mode="after")
    def _ray_only(self) -> ComputeConfig:
        if self.ray_address is not None and self.backend != "ray":
            raise ValueError(
                f"ray_address={self.ray_address!r} needs backend: ray (backend is {self.backend!r})"
            )
        return self


class GpuQuotaConfig(_Strict):
    """A namespace ResourceQuota whose hard limit is the fleet's GPU budget."""

    namespace: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    resource: str = Field("requests.nvidia.com/gpu", min_length=1)
    refresh_s: float = Field(60.0, ge=1, le=86_400, description="re-read the quota this often")


class FleetConfig(_Strict):
    """GPUs prewarm may hold warm across all its models: a number (gpu_budget) or a ResourceQuota's hard
    limit (gpu_quota); neither: no shared budget (each model alone)."""

    gpu_budget: float | None = Field(None, gt=0, le=1_000_000)
    gpu_quota: GpuQuotaConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> FleetConfig:
        if self.gpu_budget is not None and self.gpu_quota is not None:
            raise ValueError("give gpu_budget (a number) or gpu_quota (a ResourceQuota), not both")
        return self


class PrewarmConfig(_Strict):
    prometheus: PrometheusConfig | None = None
    models: list[ModelConfig] = Field(default_factory=list)
    api: ApiConfig = ApiConfig()
    store: StoreConfig = StoreConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    ray: RayConfig = RayConfig()
    fleet: FleetConfig = FleetConfig()
    compute: ComputeConfig = ComputeConfig()
    query_groups: list[QueryGroupConfig] = Field(default_factory=list)
    kill_switch: bool = Field(False, description="true: compute and record everything, apply nothing")

    @model_validator(mode="after")
    def _unique(self) -> PrewarmConfig:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        groups = [g.name for g in self.query_groups]
        dup = sorted({n for n in groups if groups.count(n) > 1})
        if dup:
            raise ValueError(f"query group names must be unique; repeated: {', '.join(dup)}")
        for i, m in enumerate(self.models):
            if m.prior is not None and (m.prior == m.name or m.prior not in names):
                others = ", ".join(n for n in names if n != m.name) or "(none)"
                raise ValueError(f"models.{i}.prior={m.prior!r} must name another model; allowed: {others}")
            if m.query_group is not None and m.query_group not in groups:
                raise ValueError(
                    f"models.{i}.query_group={m.query_group!r} names no query group; defined: "
                    f"{', '.join(groups) or '(none)'}"
                )
        return self

    def redacted(self) -> dict[str, Any]:
        """The whole configuration in force (every default filled in), secrets shown as '<set>'."""
        doc = self.model_dump(mode="json")
        for section, key in (
            ("api", "token"),
            ("prometheus", "bearer_token"),
            ("prometheus", "password"),
            ("ray", "token"),
        ):
            part = doc.get(section)
            if isinstance(part, dict) and part.get(key) is not None:
                part[key] = "<set>"
        return doc

    def query_specs(self, names: Sequence[str] | None = None) -> list[ModelQuery]:
        """The Prometheus query of each model (of `names`, or all)."""
        return [m.query_spec(self.query_groups) for m in self.models if names is None or m.name in names]


def _describe(exc: ValidationError, where: str) -> str:
    lines = []
    for e in exc.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) else f"={value!r}"
        msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{key}{shown}: {msg}")
    return f"{where}: " + "; ".join(lines)


ENV_PREFIX = "PREWARM_"
# the shortcuts the CLI documents beside the PREWARM_<SECTION>__<KEY> paths
ENV_SHORTCUTS = {"PREWARM_API_TOKEN": "api.token", "PREWARM_PROMETHEUS_TOKEN": "prometheus.bearer_token"}
# keys that say the same thing two ways: a layer that sets one drops the other from the layers below it
ALTERNATIVES = {
    ("api", "token"): "token_file",
    ("api", "token_file"): "token",
    ("prometheus", "bearer_token"): "bearer_token_file",
    ("prometheus", "bearer_token_file"): "bearer_token",
}


def set_path(doc: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """`doc` with the value at a dotted path set (copied on the way down, the input untouched); setting one
    of two alternative keys (a token or its file) drops the other."""
    out = dict(doc)
    node = out
    for part in path[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[path[-1]] = value
    other = ALTERNATIVES.get(tuple(path[-2:])) if len(path) >= 2 else None  # type: ignore[arg-type]
    if other is not None:
        node.pop(other, None)
    return out


def apply_env(doc: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """PREWARM_<SECTION>__<KEY>=value overrides the file, e.g. PREWARM_API__TOKEN, PREWARM_PROMETHEUS__URL,
    PREWARM_KILL_SWITCH=true; PREWARM_API_TOKEN is api.token and PREWARM_PROMETHEUS_TOKEN
    prometheus.bearer_token (when there is a prometheus section). A variable without a section that names
    no top-level key is not for the config and is left alone. Values are read as YAML scalars."""
    out = dict(doc)
    for key, raw in sorted(env.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        if key in ENV_SHORTCUTS:
            path = ENV_SHORTCUTS[key].split(".")
            if path[0] == "prometheus" and not isinstance(out.get("prometheus"), dict):
                continue  # a token for a Prometheus the file does not configure
            out = set_path(out, path, raw)
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        if len(path) == 1 and path[0] not in PrewarmConfig.model_fields:
            continue  # not a config path (PREWARM_TEST_KUBECONFIG, say); PREWARM_API__TOKN still fails
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out = set_path(out, path, value)
    return out


def apply_overrides(doc: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line flags, as dotted config paths (`{"store.url": ...}`): the highest layer."""
    out = dict(doc)
    for key, value in overrides.items():
        if value is not None:
            out = set_path(out, key.split("."), value)
    return out


def parse_config(
    doc: Any,
    where: str = "config",
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PrewarmConfig:
    """One precedence for every option: command-line flag (`overrides`) > environment > file > default."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(doc).__name__}")
    if env:
        doc = apply_env(doc, env)
    if overrides:
        doc = apply_overrides(doc, overrides)
    try:
        return PrewarmConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None


def with_compute(
    cfg: PrewarmConfig, overrides: Mapping[str, Any], where: str = "command line"
) -> PrewarmConfig:
    """The config with its compute section overridden (the CLI's --backend, --workers, --ray-address)."""
    try:
        section = ComputeConfig.model_validate({**cfg.compute.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"{where} compute")) from None
    return cfg.model_copy(update={"compute": section})


def load_config(
    path: Path, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> PrewarmConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(doc, str(path), env, overrides)
