"""The shipped kustomize overlays applied for real, and prewarm run as their ServiceAccounts, on the REAL
control plane (tests/kube_cluster.py: kube-apiserver with its admission plugins and the RBAC authorizer, the
controllers, kwok playing the kubelets), with the kubectl (and kustomize) built with it.

Why a real server: what matters here is what only a real one decides: whether every object is accepted
(schema validation, admission, PodSecurity "restricted" enforced on the pods the ReplicaSets create),
whether the least-privilege Roles really let prewarm do a day's work (the RBAC authorizer, answering each
request prewarm's client sends), and what a refusal says word for word. tests/test_deploy.py checks the
same manifests offline.

The overlays name their namespaces (`prewarm`, `serving`), so they are applied once per test run, whichever
pytest-xdist worker gets there first (a lock and a record shared by the run's workers), as the README tells a
user to: `kubectl create namespace serving`, then `kubectl apply -k` each overlay. The tests that act as the
standalone overlay's ServiceAccount, take a verb from its Roles or read them back, share its Roles and its
Lease, so they hold a second lock while they run. (Not an xdist_group: with pytest 9.2, pytest-xdist 3.8's
loadgroup no longer groups anything: it renames `item._nodeid`, which pytest no longer reads.)
tests/test_kube_helm.py reuses the helpers below for the chart, in namespaces of its own.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import TrafficSeries
from service.compose import build_from_config
from service.config import parse_config
from service.runtime import Controller
from service.serve import Jobs
from service.view import ControllerView
from tests.fakes import Clock
from tests.kube_cluster import KubeCluster, locked, wait_until
from tests.prometheus_harness import PrometheusProcess, backfill, require_binaries
from tests.test_kube_real import RequestLog, deployment, hpa, without

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
SHIPPED_NAMESPACES = ("prewarm", "serving")
STEP_S = 60
HISTORY_DAYS = 3
TICK_S = 300
DAY_TICKS = 86_400 // TICK_S
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


# -- rendering and applying -------------------------------------------------------------------------------


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    """How kubectl names an object it applied: `kind.group/name` (the group left out for the core API)."""
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"].lower() + (f".{group}" if group else "")
    return kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def applied(stdout: str) -> dict[str, str]:
    """kubectl apply's report, `kind[.group]/name` -> created | configured | unchanged."""
    out = {}
    for line in stdout.splitlines():
        m = re.fullmatch(r"(\S+) (created|configured|unchanged|serverside-applied)", line.strip())
        assert m, f"an unexpected line from kubectl apply: {line!r}"
        out[m.group(1)] = m.group(2)
    return out


def names(objs: list[dict[str, Any]]) -> set[str]:
    return {f"{kind}/{name}" for kind, _, name in map(key, objs)}


def pod_of(deployment: dict[str, Any]) -> client.V1Pod:
    """A Pod made from a Deployment's template, as its ReplicaSet makes one."""
    template = deployment["spec"]["template"]
    meta = {**template.get("metadata", {}), "generateName": f"{deployment['metadata']['name']}-"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}  # type: ignore[return-value]


def assert_pod_templates_admitted(cluster: KubeCluster, objs: list[dict[str, Any]]) -> None:
    """Each Deployment's pod template, created as a Pod with a server-side dry run in its namespace (whose
    PodSecurity "restricted" profile is enforced), is admitted; and a pod the profile refuses is refused
    there, so the check is not passing for want of enforcement."""
    core = client.CoreV1Api(cluster.api())
    deployments = [d for d in objs if d["kind"] == "Deployment"]
    assert deployments
    for d in deployments:
        ns = d["metadata"]["namespace"]
        labels = core.read_namespace(ns).metadata.labels or {}
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", (ns, labels)
        core.create_namespaced_pod(ns, pod_of(d), dry_run="All")
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(
                ns,
                {
                    "metadata": {"generateName": "root-"},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                },
                dry_run="All",
            )
        message = json.loads(refused.value.body)["message"]
        assert refused.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message


def assert_deployments_run(cluster: KubeCluster, objs: list[dict[str, Any]]) -> None:
    """The ReplicaSets really created the pods (PodSecurity enforces on them) and kwok ran them."""
    apps = client.AppsV1Api(cluster.api())
    for d in (o for o in objs if o["kind"] == "Deployment"):
        name, ns, want = d["metadata"]["name"], d["metadata"]["namespace"], d["spec"]["replicas"]

        def available(name: str = name, ns: str = ns, want: int = want) -> bool:
            return (apps.read_namespaced_deployment_status(name, ns).status.available_replicas or 0) == want

        wait_until(f"Deployment {ns}/{name} to have its {want} replicas available", available, timeout_s=90)


def delete_namespaces(cluster: KubeCluster, names: tuple[str, ...], *, wait: bool) -> None:
    core = client.CoreV1Api(cluster.api())
    for ns in names:
        cluster.delete_namespace(ns)
    if wait:

        def gone() -> bool:
            left = {n.metadata.name for n in core.list_namespace().items}
            return not left & set(names)

        wait_until(f"namespaces {', '.join(names)} to be gone", gone, timeout_s=180, interval_s=0.5)


@dataclass
class Shipped:
    objects: dict[str, list[dict[str, Any]]]  # overlay -> its rendered objects
    applied: dict[str, tuple[str, str]]  # overlay -> kubectl apply's stdout and stderr

    def config(self, overlay: str) -> dict[str, Any]:
        (cm,) = [o for o in self.objects[overlay] if o["kind"] == "ConfigMap"]
        return dict(yaml.safe_load(cm["data"]["config.yaml"]))

    def service_account(self, overlay: str) -> tuple[str, str]:
        (sa,) = [o for o in self.objects[overlay] if o["kind"] == "ServiceAccount"]
        return sa["metadata"]["namespace"], sa["metadata"]["name"]


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory this test run's processes share (an xdist worker's base temp is popen-gwN inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def shipped(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Shipped:
    """Both overlays applied as the README says, one after the other, into a cluster without them (what a
    previous run on the same cluster left is deleted first): once per test run, by the first worker that
    asks; the others read what it recorded. They stay until the cluster stops (or the next run deletes them):
    no worker knows when the others are done with them."""
    d = run_dir(tmp_path_factory)
    record = d / "shipped-overlays.json"
    with locked(d / "shipped-overlays.lock"):
        if record.exists():
            doc = json.loads(record.read_text())
            return Shipped(doc["objects"], {k: (v[0], v[1]) for k, v in doc["applied"].items()})
        delete_namespaces(kube_cluster, SHIPPED_NAMESPACES, wait=True)
        kube_cluster.kubectl("create", "namespace", "serving")
        # the README leaves `serving`'s profile to the user; held to "restricted" here, as prewarm's own is
        kube_cluster.kubectl("label", "namespace", "serving", *(f"{k}={v}" for k, v in RESTRICTED.items()))
        objects, out = {}, {}
        for overlay in ("standalone", "sidecar"):
            objects[overlay] = documents(kube_cluster.kubectl("kustomize", str(OVERLAYS / overlay)).stdout)
            r = kube_cluster.kubectl("apply", "-k", str(OVERLAYS / overlay))
            out[overlay] = (r.stdout, r.stderr)
        record.write_text(json.dumps({"objects": objects, "applied": out}))
        return Shipped(objects, {k: (v[0], v[1]) for k, v in out.items()})


@pytest.fixture
def as_standalone(shipped: Shipped, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipped]:
    """The shipped overlays, with the standalone overlay's ServiceAccount, Roles and Lease to this test alone
    while it runs (the run's other worker waits for them)."""
    with locked(run_dir(tmp_path_factory) / "standalone-account.lock"):
        yield shipped


def test_both_overlays_apply_one_after_the_other_creating_every_object_and_taking_over_none(
    kube_cluster: KubeCluster, as_standalone: Shipped
) -> None:
    # as_standalone: the diff below reads back the standalone overlay's Roles, which the tests that take a
    # verb from them change while they run (on the other worker, it read a Role less `update`)
    shipped = as_standalone
    for overlay, (stdout, stderr) in shipped.applied.items():
        report = applied(stdout)
        # every object of the overlay created by this apply: nothing the other overlay made was "configured"
        # (taken over) or found "unchanged" (shared)
        assert report == dict.fromkeys(names(shipped.objects[overlay]), "created"), (overlay, stdout)
        assert "Warning" not in stderr, (overlay, stderr)  # no deprecation, no PodSecurity warning
    # and what the server holds is what was written: no field it rewrote or dropped (`kubectl diff` exits 0
    # when the server-side dry run of another apply changes nothing; re-applying would say "configured" for
    # the PodDisruptionBudget whatever it holds, as client-side apply always re-sends its selector)
    for overlay in shipped.applied:
        diff = kube_cluster.kubectl("diff", "-k", str(OVERLAYS / overlay), check=False)
        assert (diff.returncode, diff.stdout) == (0, ""), (overlay, diff.stdout, diff.stderr)


def test_every_pod_template_is_admitted_under_the_restricted_profile_and_its_pods_run(
    kube_cluster: KubeCluster, shipped: Shipped
) -> None:
    for objs in shipped.objects.values():
        assert_pod_templates_admitted(kube_cluster, objs)
        assert_deployments_run(kube_cluster, objs)


# -- prewarm, run as the overlay's ServiceAccount -----------------------------------------------------------


def restricted_deployment(name: str, replicas: int) -> client.V1Deployment:
    """A model server Deployment that kwok runs and the PodSecurity "restricted" profile admits."""
    d = deployment(name, replicas)
    d.spec.template.spec.security_context = client.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=1000, seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")
    )
    d.spec.template.spec.containers[0].security_context = client.V1SecurityContext(
        allow_privilege_escalation=False, capabilities=client.V1Capabilities(drop=["ALL"])
    )
    return d


def history() -> dict[str, TrafficSeries]:
    """Minute counts for two models (a chat model peaking in the evening, a code assistant at 14:00):
    HISTORY_DAYS of history, then the simulated day."""
    out = {}
    for name, shape in (("chat", DEMO_FLEET[0]), ("code", DEMO_FLEET[1])):
        s = generate(shape, days=HISTORY_DAYS + 1, step_s=STEP_S, seed=7)
        out[name] = TrafficSeries(name, s.start_s, STEP_S, s.values)
    return out


def start_prometheus(tmp: Path) -> PrometheusProcess:
    require_binaries()
    backfill(history().values(), tmp / "data")
    return PrometheusProcess(tmp / "data").start()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    server = start_prometheus(tmp_path_factory.mktemp("overlays"))
    yield server
    server.stop()


def model(name: str, target: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A model of the config, reading the backfilled series `name`; ~12 replicas at its peak."""
    series = history()[name].values
    return {
        "name": name,
        "query": f'sum(rate(prewarm_requests_total{{model="{name}"}}[1m]))',
        "step_s": STEP_S,
        "history_days": HISTORY_DAYS,
        "capacity_rps": float(np.quantile(series / STEP_S, 0.999)) / 12,
        "t_load_s": 300,
        "forecaster": "profile",
        "mode": "active",
        "target": {"kind": "Deployment", **target},
        **extra,
    }


def config_as_shipped(
    shipped_config: dict[str, Any], prometheus_url: str, store: Path, models: list[dict[str, Any]]
) -> dict[str, Any]:
    """The shipped config with its Lease settings as they are, pointed at the test's Prometheus, store and
    models, and at the cluster through the test's client rather than the in-cluster one."""
    doc = copy.deepcopy(shipped_config)
    doc.update(
        prometheus={"url": prometheus_url, "retries": 0},
        models=models,
        store={"url": f"sqlite:///{store}"},
        api={"token": "t"},
        schedules={"tick_s": TICK_S},
    )
    doc["kubernetes"] = {**doc.get("kubernetes", {}), "in_cluster": False}
    return doc


def day_start() -> float:
    """The simulated day: right after the backfilled history."""
    return history()["chat"].start_s + HISTORY_DAYS * 86_400


def released_lease(cluster: KubeCluster, ns: str, name: str) -> None:
    """The Lease exists and no one holds it (as a clean shutdown leaves it): the next process takes it over
    with an update."""
    leases = client.CoordinationV1Api(cluster.api())
    try:
        leases.read_namespaced_lease(name, ns)
    except ApiException as exc:
        if exc.status != 404:
            raise
        leases.create_namespaced_lease(
            ns, {"metadata": {"name": name}, "spec": {"holderIdentity": "", "leaseDurationSeconds": 1}}
        )


@dataclass
class Prewarm:
    """prewarm as `serve` composes it, on a clock stepped by value, talking as one ServiceAccount."""

    ctl: Controller
    view: ControllerView
    jobs: Jobs
    clock: Clock
    sent: RequestLog

    @classmethod
    def start(cls, cluster: KubeCluster, token: str, doc: dict[str, Any], at_s: float) -> Prewarm:
        api = cluster.api_as(token)
        sent = RequestLog.attach(api)
        clock = Clock(at_s)
        ctl = build_from_config(parse_config(doc), clock, kubernetes_api_client=api)
        view = ControllerView(ctl, clock)
        return cls(ctl, view, Jobs(ctl, view, clock), clock, sent)

    def tick(self, n: int = 1) -> None:
        """n control ticks, the leader Lease renewed before each (the service renews on its own schedule)."""
        assert self.ctl.leader is not None
        for _ in range(n):
            self.ctl.leader.step()
            self.jobs.tick_all()
            self.clock.t += TICK_S

    def stop(self) -> None:
        if self.ctl.leader is not None:
            self.ctl.leader.stop()  # releases the Lease: the next process leads at once

    def actuations(self, model: str) -> list[dict[str, Any]]:
        """Every decision's actuation for `model`, oldest first."""
        return [d.actuation or {} for d in reversed(self.ctl.store.decisions(model, limit=10_000))]


def prewarm_events(cluster: KubeCluster, ns: str, deployment: str) -> list[client.CoreV1Event]:
    sel = f"involvedObject.kind=Deployment,involvedObject.name={deployment}"
    items = client.CoreV1Api(cluster.api()).list_namespaced_event(ns, field_selector=sel).items
    return [e for e in items if e.source and e.source.component == "prewarm"]


def run_a_day(
    cluster: KubeCluster,
    token: str,
    shipped_config: dict[str, Any],
    prometheus_url: str,
    models_ns: str,
    prefix: str,
    store: Path,
) -> None:
    """prewarm acts for a simulated day (a tick every 5 minutes) on two Deployments in `models_ns`: `chat`
    through its HPA's floor, `code` through the scale subresource. Nothing it sends is refused, every write
    lands, and the cluster ends where the last decisions put it."""
    admin = cluster.api()
    apps, hpas = client.AppsV1Api(admin), client.AutoscalingV2Api(admin)
    chat, code = f"{prefix}-chat", f"{prefix}-code"
    apps.create_namespaced_deployment(models_ns, restricted_deployment(chat, 1))
    apps.create_namespaced_deployment(models_ns, restricted_deployment(code, 1))
    hpas.create_namespaced_horizontal_pod_autoscaler(models_ns, hpa(chat, 1, 40))
    models = [
        model("chat", {"namespace": models_ns, "name": chat, "actuator_mode": "hpa-floor"}),
        model("code", {"namespace": models_ns, "name": code, "actuator_mode": "replicas"}),
    ]
    doc = config_as_shipped(shipped_config, prometheus_url, store, models)
    run = Prewarm.start(cluster, token, doc, day_start())
    try:
        run.tick(DAY_TICKS)
        refused = run.sent.answered(401, 403)
        assert refused == [], refused[:5]
        assert run.sent.answered(0, 500, 502, 503, 504) == []
        assert run.ctl.leader is not None and run.ctl.leader.elector.last_error is None
        for name, mode, workload in (("chat", "hpa-floor", chat), ("code", "replicas", code)):
            r = run.ctl.models[name]
            assert (r.tick.failures, r.tick.last_error) == (0, None), r.tick.last_error
            assert not r.actuation.failures, r.actuation.last_error
            acts = run.actuations(name)
            assert len(acts) == DAY_TICKS
            outcomes = {a["outcome"] for a in acts}
            assert outcomes <= {"applied", "unchanged"}, [a for a in acts if a["outcome"] not in outcomes]
            moves = [a for a in acts if a["outcome"] == "applied"]
            assert all(f": {mode} " in a["message"] for a in moves), moves[:3]
            # it followed the day: up towards the peak and back down
            assert any(a["after"] > a["before"] for a in moves) and any(
                a["after"] < a["before"] for a in moves
            )
            # one Event per applied decision, on the workload
            assert len(prewarm_events(cluster, models_ns, workload)) == len(moves)
        last = {
            name: run.ctl.store.decisions(name, limit=1)[0].record["desired_replicas"]
            for name in ("chat", "code")
        }
        floor = hpas.read_namespaced_horizontal_pod_autoscaler(chat, models_ns).spec.min_replicas
        assert floor == last["chat"]
        assert apps.read_namespaced_deployment(code, models_ns).spec.replicas == last["code"]
        kc = run.ctl.leader.elector
        lease = client.CoordinationV1Api(admin).read_namespaced_lease(kc.name, kc.namespace)
        assert lease.spec.holder_identity == kc.identity
    finally:
        run.stop()


@pytest.mark.parametrize("overlay", ["standalone", "sidecar"])
def test_prewarm_acts_for_a_day_as_the_overlays_service_account_and_nothing_is_refused(
    kube_cluster: KubeCluster,
    shipped: Shipped,
    prometheus: PrometheusProcess,
    overlay: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """As the overlay's ServiceAccount (a bound token, as its pod would hold), with the overlay's own Lease
    settings: hpa-floor and replicas modes, 288 ticks, every read and write allowed by the shipped Roles."""
    if overlay == "standalone":
        request.getfixturevalue("as_standalone")  # no other test takes a verb from its Roles meanwhile
    token = kube_cluster.token_for(*shipped.service_account(overlay))
    run_a_day(
        kube_cluster, token, shipped.config(overlay), prometheus.url, "serving", overlay, tmp_path / "s.db"
    )


# -- a Role without one verb: the server's refusal, word for word, stops prewarm ---------------------------


def sa_can(cluster: KubeCluster, ns: str, sa: str, verb: str, group: str, resource: str, where: str) -> bool:
    """What the real authorizer answers for the ServiceAccount now (RBAC changes reach it asynchronously)."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{ns}:{sa}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=where, verb=verb, group=group, resource=resource
            ),
        )
    )
    out = client.AuthorizationV1Api(cluster.api()).create_subject_access_review(review)
    return bool(out.status.allowed)


def role_rules(cluster: KubeCluster, name: str, ns: str) -> list[dict[str, Any]]:
    """A Role's rules as the server holds them, in the API's own field names."""
    role = client.RbacAuthorizationV1Api(cluster.api()).read_namespaced_role(name, ns)
    return list(cluster.api().sanitize_for_serialization(role)["rules"])


@dataclass
class Removed:
    role: str
    namespace: str
    group: str
    resource: str
    verb: str


@pytest.fixture
def role_without(
    kube_cluster: KubeCluster, as_standalone: Shipped, request: pytest.FixtureRequest
) -> Iterator[Removed]:
    """The standalone overlay's applied Role less one verb (put back afterwards)."""
    what: Removed = request.param
    rbac = client.RbacAuthorizationV1Api(kube_cluster.api())
    rules = role_rules(kube_cluster, what.role, what.namespace)
    ns, sa = as_standalone.service_account("standalone")

    def allowed() -> bool:
        return sa_can(kube_cluster, ns, sa, what.verb, what.group, what.resource, what.namespace)

    rbac.patch_namespaced_role(what.role, what.namespace, {"rules": without(rules, what.resource, what.verb)})
    wait_until(f"{what.verb} on {what.resource} to be refused", lambda: not allowed())
    try:
        yield what
    finally:
        rbac.patch_namespaced_role(what.role, what.namespace, {"rules": rules})
        wait_until(f"{what.verb} on {what.resource} to be allowed again", allowed)


LEASE_403 = (
    'Lease prewarm/prewarm-leader: HTTP 403: leases.coordination.k8s.io "prewarm-leader" is forbidden: '
    'User "system:serviceaccount:prewarm:prewarm" cannot update resource "leases" in API group '
    '"coordination.k8s.io" in the namespace "prewarm"'
)


@pytest.mark.parametrize(
    ("role_without", "refusal"),
    [
        pytest.param(
            Removed("prewarm-actuator", "serving", "autoscaling", "horizontalpodautoscalers", "update"),
            "set minReplicas of the HPA for Deployment/serving/rbac-chat: HTTP 403: "
            'horizontalpodautoscalers.autoscaling "rbac-chat" is forbidden: User '
            '"system:serviceaccount:prewarm:prewarm" cannot update resource "horizontalpodautoscalers" '
            'in API group "autoscaling" in the namespace "serving"',
            id="no-update-on-hpas",
        ),
        pytest.param(
            Removed("prewarm-actuator", "serving", "", "events", "create"),
            "record an Event on Deployment/serving/rbac-chat: HTTP 403: events is forbidden: User "
            '"system:serviceaccount:prewarm:prewarm" cannot create resource "events" in API group "" in the '
            'namespace "serving"',
            id="no-create-on-events",
        ),
        pytest.param(
            Removed("prewarm-leader-election", "prewarm", "coordination.k8s.io", "leases", "update"),
            LEASE_403,
            id="no-update-on-leases",
        ),
    ],
    indirect=["role_without"],
)
def test_a_role_without_one_verb_stops_prewarm_with_the_servers_refusal_word_for_word(
    kube_cluster: KubeCluster,
    shipped: Shipped,
    prometheus: PrometheusProcess,
    role_without: Removed,
    refusal: str,
    tmp_path: Path,
) -> None:
    apps, hpas = client.AppsV1Api(kube_cluster.api()), client.AutoscalingV2Api(kube_cluster.api())
    try:  # the floor a previous case raised goes back, so that this case's first decision writes
        hpas.patch_namespaced_horizontal_pod_autoscaler("rbac-chat", "serving", {"spec": {"minReplicas": 1}})
    except ApiException as exc:
        if exc.status != 404:
            raise
        apps.create_namespaced_deployment("serving", restricted_deployment("rbac-chat", 1))
        hpas.create_namespaced_horizontal_pod_autoscaler("serving", hpa("rbac-chat", 1, 40))
    # a floor of 3 over the HPA's 1: the first decision must write
    chat = model(
        "chat", {"namespace": "serving", "name": "rbac-chat", "actuator_mode": "hpa-floor"}, min_replicas=3
    )
    doc = config_as_shipped(shipped.config("standalone"), prometheus.url, tmp_path / "s.db", [chat])
    token = kube_cluster.token_for(*shipped.service_account("standalone"))
    released_lease(kube_cluster, "prewarm", "prewarm-leader")
    run = Prewarm.start(kube_cluster, token, doc, day_start())
    try:
        run.tick(2)
        first, second = run.actuations("chat")
        assert (first["outcome"], first["permanent"]) == ("failed", True), first
        assert refusal in first["message"] and "rbac.yaml" in first["message"], first["message"]
        assert run.ctl.rails("chat").permanent_error == first["message"]
        assert second["outcome"] == "skipped" and "after a permanent error" in second["message"], second
        _, ready = run.view.readiness()
        assert f"actuation stopped: {first['message']}" in ready["models"]["chat"]["problems"]
        # the refused write was sent once; nothing was retried after it (the Lease alone is tried again at
        # each renew: once its Role is fixed the process leads, while the models wait for an operator)
        verb = {"update": "PUT", "create": "POST"}[role_without.verb]
        tries = 2 if role_without.resource == "leases" else 1
        assert len([c for c in run.sent.answered(403) if c[0] == verb]) == tries
    finally:
        run.stop()


def test_without_update_on_the_lease_the_servers_refusal_is_kept_and_nothing_is_written(
    kube_cluster: KubeCluster, as_standalone: Shipped, prometheus: PrometheusProcess, tmp_path: Path
) -> None:
    """When prewarm may not take or renew its Lease: the server's refusal word for word in the elector's
    errors (a permanent one: every decision then says so, not "another instance leads"), and no write to
    any workload."""
    shipped = as_standalone
    what = Removed("prewarm-leader-election", "prewarm", "coordination.k8s.io", "leases", "update")
    rbac = client.RbacAuthorizationV1Api(kube_cluster.api())
    rules = role_rules(kube_cluster, what.role, what.namespace)
    ns, sa = shipped.service_account("standalone")
    admin = kube_cluster.api()
    client.AppsV1Api(admin).create_namespaced_deployment("serving", restricted_deployment("lease-chat", 1))
    client.AutoscalingV2Api(admin).create_namespaced_horizontal_pod_autoscaler(
        "serving", hpa("lease-chat", 1, 40)
    )
    chat = model(
        "chat", {"namespace": "serving", "name": "lease-chat", "actuator_mode": "hpa-floor"}, min_replicas=3
    )
    doc = config_as_shipped(shipped.config("standalone"), prometheus.url, tmp_path / "s.db", [chat])
    released_lease(kube_cluster, "prewarm", "prewarm-leader")
    rbac.patch_namespaced_role(what.role, what.namespace, {"rules": without(rules, what.resource, what.verb)})
    try:
        wait_until(
            "update on leases to be refused",
            lambda: not sa_can(kube_cluster, ns, sa, "update", what.group, "leases", "prewarm"),
        )
        run = Prewarm.start(kube_cluster, kube_cluster.token_for(ns, sa), doc, day_start())
        run.tick(2)
    finally:
        rbac.patch_namespaced_role(what.role, what.namespace, {"rules": rules})
    assert run.ctl.leader is not None and not run.ctl.leader.leading()
    assert LEASE_403 in (run.ctl.leader.elector.last_error or ""), run.ctl.leader.elector.last_error
    assert LEASE_403 in (run.ctl.leader.problem() or "")
    assert run.sent.written() == {("PUT", "leases")}, run.sent.writes()
    assert (
        client.AutoscalingV2Api(admin)
        .read_namespaced_horizontal_pod_autoscaler("lease-chat", "serving")
        .spec.min_replicas
        == 1
    )
