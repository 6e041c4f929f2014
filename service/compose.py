"""Build the running service from a config file: Prometheus as the traffic source, one actuator per target
kind (Kubernetes, Ray Serve, the simulated fleet) behind the safety rails, leader election when acting on
Kubernetes, and the nightly backtest with its self-check."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from actuator.base import (
    ActuationResult,
    ColdStart,
    FloorRestorer,
    Outcome,
    ReplicaActuator,
    ReplicaState,
    Target,
    reading,
)
from actuator.errors import PermanentError
from actuator.lead_time import LeadTimeEstimator
from actuator.safety import GuardedActuator, Mode, Rails
from compute.base import Compute
from compute.local import LocalCompute
from forecaster.dropouts import DropoutWatch
from forecaster.sources.prometheus import PrometheusSource
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner import PlannerSpec, untuned_late_budget
from planner.explain import Decision
from service.budget import BudgetSource, QuotaBudget
from service.config import ConfigError, ModelConfig, PrewarmConfig
from service.leadership import LeaderLoop, Leadership, ShardLoop, shard_of
from service.runtime import Controller, ModelRuntime, SimulatedFleet
from service.store import DecisionStore


@dataclass
class RoutingActuator:
    """One actuator per target kind, behind the one port the controller uses."""

    by_kind: dict[str, ReplicaActuator]

    def _for(self, t: Target) -> ReplicaActuator:
        kind = "kubernetes" if t.kind in ("Deployment", "StatefulSet") else t.kind
        try:
            return self.by_kind[kind]
        except KeyError:
            raise PermanentError(f"{t}: no actuator for kind {t.kind}") from None

    def current(self, target: Target) -> ReplicaState:
        return self._for(target).current(target)

    def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
        return self._for(target).apply(target, decision, decision_id)

    def cold_starts(self, target: Target) -> list[ColdStart]:
        return self._for(target).cold_starts(target)

    @contextmanager
    def reading(self, targets: Sequence[Target]) -> Iterator[None]:
        """Each actuator's bulk reads of its own targets (actuator/base.py, BulkReader)."""
        mine: dict[int, tuple[ReplicaActuator, list[Target]]] = {}
        for t in targets:
            with contextlib.suppress(PermanentError):  # no actuator for its kind: its own calls say so
                inner = self._for(t)
                mine.setdefault(id(inner), (inner, []))[1].append(t)
        with contextlib.ExitStack() as stack:
            for inner, ts in mine.values():
                stack.enter_context(reading(inner, ts))
            yield

    def restore(self, target: Target) -> ActuationResult:
        inner = self._for(target)
        if isinstance(inner, FloorRestorer):
            return inner.restore(target)
        return ActuationResult(Outcome.UNCHANGED, f"{target}: no floor held, nothing to give back")


def planner_spec(m: ModelConfig, tick_s: float, where: str) -> PlannerSpec:
    if m.capacity_rps is None:
        raise ConfigError(f"{where}.capacity_rps is required to serve (requests/s one replica handles)")
    return PlannerSpec(
        capacity_rps_per_replica=m.capacity_rps,
        t_load_s=m.t_load_s,
        tick_s=tick_s,
        slo_wait_s=m.slo.wait_s,
        slo_target=m.slo.target,
        late_budget=untuned_late_budget(m.slo.target, m.min_replicas),
        alpha=m.alpha,
        cost_miss=m.cost_miss,
        cost_idle=m.cost_idle,
        min_replicas=m.min_replicas,
        max_replicas=m.max_replicas,
        max_observation_age_s=max(120.0, 2 * m.step_s + m.max_staleness_s),
    )


def t_load_floor(m: ModelConfig, tick_s: float, where: str) -> dict[str, Any]:
    """The least a learned T_load may be: the configured floor, else one control tick (a replica asked for
    at one tick is seen ready at the next at the earliest, so a shorter cold start plans like one tick)."""
    if m.t_load_min_s is not None:
        return {"floor_s": m.t_load_min_s, "floor_why": f"{where}.t_load_min_s"}
    return {"floor_s": tick_s, "floor_why": "the control tick (schedules.tick_s)"}


def kubernetes_api(cfg: PrewarmConfig) -> Any:
    from kubernetes import client, config

    if cfg.kubernetes.in_cluster:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        path = str(cfg.kubernetes.kubeconfig) if cfg.kubernetes.kubeconfig else None
        config.load_kube_config(config_file=path)  # type: ignore[no-untyped-call]
    return client.ApiClient()


def build_from_config(
    cfg: PrewarmConfig,
    clock: Callable[[], float],
    *,
    kubernetes_api_client: Any | None = None,
    compute: Compute | None = None,
) -> Controller:
    """The controller for every configured model. `kubernetes_api_client` replaces the in-cluster or
    kubeconfig client (tests point it at a fake API server)."""
    if not cfg.models:
        raise ConfigError("models: at least one model is required to serve")
    if cfg.prometheus is None:
        raise ConfigError("prometheus: a Prometheus connection is required to serve the configured models")
    source = PrometheusSource(cfg.prometheus.settings(), cfg.query_specs(), clock=clock)
    kinds = {m.target.kind for m in cfg.models if m.target is not None}
    by_kind: dict[str, ReplicaActuator] = {}
    modes_k8s: dict[Target, str] = {}
    modes_ray: dict[Target, str] = {}
    runtimes: list[ModelRuntime] = []
    rails: dict[Target, Rails] = {}
    for i, m in enumerate(cfg.models):
        where = f"models.{i}"
        if m.target is None:
            raise ConfigError(f"{where}.target is required to serve (kind, namespace, name)")
        t = Target(m.target.kind, m.target.namespace, m.target.name)
        if m.target.kind in ("Deployment", "StatefulSet"):
            modes_k8s[t] = m.target.actuator_mode
        elif m.target.kind == "RayServe":
            modes_ray[t] = m.target.actuator_mode
        spec = planner_spec(m, cfg.schedules.tick_s, where)
        runtimes.append(
            ModelRuntime(
                m.name,
                t,
                spec,
                _history(source, m.name),
                forecaster=m.forecaster,
                lead_time=LeadTimeEstimator(m.t_load_s, **t_load_floor(m, cfg.schedules.tick_s, where)),
                stale=_staleness(source, m.name, clock),
                dropouts=DropoutWatch(m.dropout_min_count, m.dropout_max_s),
                tune_window_s=m.slo.tune_window_days * SECONDS_PER_DAY,
                gpus_per_replica=m.gpus_per_replica,
                priority=m.priority,
                prior=m.prior,
            )
        )
        rails[t] = Rails(mode=Mode(m.mode), max_added_per_tick=m.max_added_per_tick)
    is_leader: Callable[[], bool] = lambda: True  # noqa: E731
    leader: Leadership | None = None
    budget: float | BudgetSource | None = cfg.fleet.gpu_budget
    quota = cfg.fleet.gpu_quota
    if kinds & {"Deployment", "StatefulSet"} or quota is not None:
        from actuator.kubernetes import KubernetesActuator
        from actuator.leader import process_identity

        api = kubernetes_api_client if kubernetes_api_client is not None else kubernetes_api(cfg)
        identity = process_identity(os.environ.get("POD_NAME"))
        k8s = KubernetesActuator(api, modes=modes_k8s, instance=identity)
        if quota is not None:
            budget = QuotaBudget(
                lambda: k8s.gpu_quota(quota.namespace, quota.name, quota.resource),
                f"ResourceQuota {quota.namespace}/{quota.name} {quota.resource}",
                refresh_s=quota.refresh_s,
            )
    holds: Callable[[Target], bool] | None = None
    kc = cfg.kubernetes
    if kc.shards > 1 and not kinds & {"Deployment", "StatefulSet"}:
        raise ConfigError(
            f"kubernetes.shards={kc.shards}: shards are held as Kubernetes Leases, and no model targets a "
            "Deployment or StatefulSet (allowed: 1 here)"
        )
    if kinds & {"Deployment", "StatefulSet"}:
        from actuator.leader import LeaseElector, Membership, member_lease_name

        by_kind["kubernetes"] = k8s

        def elector(name: str) -> LeaseElector:
            return LeaseElector(
                api,
                namespace=kc.lease_namespace,
                name=name,
                identity=identity,
                lease_duration_s=kc.lease_duration_s,
                renew_deadline_s=kc.renew_deadline_s,
                retry_period_s=kc.retry_period_s,
            )

        # renewed on their own schedule by the service (start()); a write asks the newest renew
        if kc.shards == 1:
            leader = LeaderLoop(elector(kc.lease_name), clock)
        else:
            membership = Membership(elector(member_lease_name(kc.lease_name, identity)), kc.lease_name)
            shards = ShardLoop(membership, [elector(f"{kc.lease_name}-{k}") for k in range(kc.shards)], clock)
            shard_by_target = {r.target: shard_of(r.name, kc.shards) for r in runtimes}
            holds = lambda t: shards.holds(shard_by_target[t])  # noqa: E731
            leader = shards
        is_leader = leader.leading
    if "RayServe" in kinds:
        from actuator.ray_serve import RayServeActuator

        by_kind["RayServe"] = RayServeActuator(cfg.ray.dashboard_url, token=cfg.ray.token, modes=modes_ray)
    if "Simulated" in kinds:
        by_kind["Simulated"] = SimulatedFleet(clock, max(m.t_load_s for m in cfg.models))
    actuator = GuardedActuator(
        RoutingActuator(by_kind),
        kill_switch=cfg.kill_switch,
        is_leader=is_leader,
        holds=holds,
        rails=rails,
        leader_problem=leader.problem if leader is not None else lambda: None,
    )
    ctl = Controller(
        runtimes,
        actuator,
        DecisionStore(cfg.store.url),
        refit_every_s=cfg.schedules.refit_s,
        forecast_horizon_s=cfg.schedules.forecast_horizon_s,
        publish_every_s=cfg.schedules.publish_every_s,
        gpu_budget=budget,
        compute=compute,
    )
    ctl.leader = leader
    return ctl


def build_compute(
    backend: str = "local",
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    retries: int = 2,
    worker_nice: int = 0,
    pause_for_tick: bool = False,
) -> Compute:
    """The compute backend (compute/): the one place that chooses it. `ray` is imported only here and only
    when asked for; `ray_address` "auto" reads RAY_ADDRESS."""
    if backend == "local":
        return LocalCompute(workers, retries=retries, nice=worker_nice, pause_for_tick=pause_for_tick)
    if backend == "ray":
        try:
            from compute.ray_backend import RayCompute
        except ImportError as exc:
            raise ConfigError(
                f"compute.backend='ray' needs the ray extra: pip install 'prewarm[ray]' ({exc})"
            ) from exc
        address = os.environ.get("RAY_ADDRESS") if ray_address == "auto" else ray_address
        return RayCompute(address, retries=retries)
    raise ConfigError(f"compute.backend={backend!r} is not one of: local, ray")


def compute_from_config(cfg: PrewarmConfig) -> Compute:
    c = cfg.compute
    return build_compute(
        c.backend,
        workers=c.workers,
        ray_address=c.ray_address,
        retries=c.retries,
        worker_nice=c.worker_nice,
        pause_for_tick=c.pause_for_tick,
    )


def _history(source: PrometheusSource, name: str) -> Callable[[float], TrafficSeries]:
    def history(now_s: float) -> TrafficSeries:
        cached = source.cached(name)
        if cached is not None and cached.end_s > now_s - source.model(name).step_s:
            return cached.before(now_s)
        return source.refresh(name, now_s).series

    return history


def _staleness(source: PrometheusSource, name: str, clock: Callable[[], float]) -> Callable[[], str]:
    def stale() -> str:
        series = source.cached(name)
        if series is None:
            return "no traffic data loaded yet"
        f = source.freshness(source.model(name), series, clock())
        return f.reason if f.stale else ""

    return stale
