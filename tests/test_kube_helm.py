"""The Helm chart (deploy/helm/prewarm): linted strictly and rendered by the helm pinned and built with the
test control plane (scripts/control_plane/helm), compared object by object with the kustomize standalone
overlay, its RBAC held to the one source (deploy/kubernetes/base/rbac.yaml), and the rendered chart applied
to the REAL control plane (tests/kube_cluster.py) in a fresh pair of namespaces, where prewarm then acts for
a day as the chart's ServiceAccount.

Why a real server for the last part: as for the overlays (tests/test_kube_overlays.py, whose helpers this
reuses), only the API server can say that every object is accepted, that the pods pass PodSecurity
"restricted", and that the chart's Roles really let prewarm work.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import parse_config
from tests.kube_cluster import KubeCluster
from tests.prometheus_harness import PrometheusProcess
from tests.test_deploy import built, docs
from tests.test_kube_overlays import (
    RESTRICTED,
    applied,
    assert_deployments_run,
    assert_pod_templates_admitted,
    delete_namespaces,
    documents,
    model,
    names,
    run_a_day,
    start_prometheus,
)

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "prewarm"
# the chart's copies of the one source of each (a test keeps them equal, byte for byte)
COPIES = {
    CHART / "files" / "rbac.yaml": ROOT / "deploy" / "kubernetes" / "base" / "rbac.yaml",
    CHART / "files" / "prewarm-rules.yaml": ROOT / "deploy" / "prometheus" / "prewarm-rules.yaml",
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([built("helm"), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def render(tmp: Path | None = None, values: dict[str, Any] | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "prewarm", str(CHART)]
    if values is not None:
        assert tmp is not None
        f = tmp / f"values-{uuid.uuid4().hex[:6]}.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return documents(helm(*args).stdout)


def by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}


# -- offline: lint, render, the one source of RBAC ---------------------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [
        pytest.param((), id="defaults"),
        pytest.param(
            (
                "monitoring.serviceMonitor.enabled=true",
                "monitoring.prometheusRule.enabled=true",
                "namespace.create=false",
                "namespace.name=",
                "rbac.modelNamespaces={serving,batch}",
                "existingConfigMap=my-config",
                "image.pullPolicy=Always",
                "nodeSelector.gpu=none",
            ),
            id="every-switch",
        ),
    ],
)
def test_the_chart_lints_strictly(sets: tuple[str, ...]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    out = helm("lint", "--strict", str(CHART), *args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


def test_the_chart_copies_of_rbac_and_the_alert_rules_are_their_sources_byte_for_byte() -> None:
    for copy, source in COPIES.items():
        assert copy.read_bytes() == source.read_bytes(), (
            f"{copy.relative_to(ROOT)} differs from {source.relative_to(ROOT)}, its source: "
            f"cp {source.relative_to(ROOT)} {copy.relative_to(ROOT)}"
        )


def grants(objs: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    """Role name -> every (apiGroup, resource, verb) it grants."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    for role in (o for o in objs if o["kind"] == "Role"):
        out[role["metadata"]["name"]] = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
    return out


def test_the_charts_roles_grant_exactly_what_the_kustomize_base_grants() -> None:
    base = grants(docs("base/"))  # deploy/kubernetes/base, as kustomize renders it
    chart = grants(render())
    assert set(base) == {"prewarm-actuator", "prewarm-leader-election"}
    assert chart == base


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """An object less its labels (the chart adds Helm's; the PodSecurity ones are kept) and annotations
    (the chart's config checksum on the pod template); selectors and pod labels are compared as they are."""
    obj = yaml.safe_load(yaml.safe_dump(obj))
    meta = obj["metadata"]
    meta["labels"] = {k: v for k, v in meta.get("labels", {}).items() if k.startswith("pod-security.")}
    meta.pop("annotations", None)
    if obj["kind"] == "Deployment":
        obj["spec"]["template"]["metadata"].pop("annotations", None)
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in obj["data"].items()}
    return obj


def test_with_its_default_values_the_chart_renders_the_standalone_overlays_objects() -> None:
    overlay = by_key(docs("standalone"))
    chart = by_key(render())
    assert set(chart) == set(overlay)
    for k, obj in chart.items():
        assert normalized(obj) == normalized(overlay[k]), k
    # and what Helm adds, everywhere
    for obj in chart.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", obj["metadata"]


def test_the_values_for_the_common_choices(tmp_path: Path) -> None:
    objs = by_key(
        render(
            tmp_path,
            {
                "namespace": {"name": "", "create": False},
                "rbac": {"modelNamespaces": ["serving", "batch"]},
                "image": {"repository": "registry.local/prewarm", "tag": "1.2.3"},
                "replicas": 3,
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
                "apiToken": {"secretName": "my-token"},
                "mode": "active",
                "config": {
                    "prometheus": {"url": "http://prom:9090"},
                    "models": [
                        {
                            "name": "m",
                            "query": "q",
                            "capacity_rps": 1,
                            "target": {"kind": "Deployment", "namespace": "batch", "name": "m"},
                        }
                    ],
                },
            },
        )
    )
    ns = "default"  # the release's namespace
    assert ("Namespace", "", ns) not in objs and not [k for k in objs if k[0] == "Namespace"]
    assert {k[1] for k in objs if k[0] == "Role" and k[2] == "prewarm-actuator"} == {"serving", "batch"}
    (rb,) = [o for k, o in objs.items() if k == ("RoleBinding", "batch", "prewarm-actuator")]
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "prewarm", "namespace": ns}]
    dep = objs[("Deployment", ns, "prewarm")]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    assert pod["containers"][0]["image"] == "registry.local/prewarm:1.2.3"
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert {v["name"]: v for v in pod["volumes"]}["api-token"]["secret"]["secretName"] == "my-token"
    cfg = yaml.safe_load(objs[("ConfigMap", ns, "prewarm-config")]["data"]["config.yaml"])
    # what the chart fills in: the Lease where its Role is, the token where the Secret is mounted, the mode
    assert cfg["kubernetes"] == {"lease_namespace": ns}
    assert cfg["api"] == {"token_file": "/var/run/secrets/prewarm/api-token"}
    assert cfg["models"][0]["mode"] == "active"
    assert parse_config(cfg).models[0].target is not None


def test_monitors_render_only_when_enabled_and_carry_the_tested_rules() -> None:
    kinds = {"ServiceMonitor", "PrometheusRule"}
    assert not {o["kind"] for o in render()} & kinds
    objs = render(
        None, None, "monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true"
    )
    on = {o["kind"]: o for o in objs if o["kind"] in kinds}
    assert set(on) == kinds
    (rule,) = [d for d in docs("monitoring/standalone") if d["kind"] == "PrometheusRule"]
    assert on["PrometheusRule"]["spec"] == rule["spec"]
    (sm,) = [d for d in docs("monitoring/standalone") if d["kind"] == "ServiceMonitor"]
    assert on["ServiceMonitor"]["spec"] == sm["spec"]


def test_a_config_whose_target_has_no_role_is_refused_at_render_naming_the_key(tmp_path: Path) -> None:
    values = {"rbac": {"modelNamespaces": ["other"]}}
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump(values))
    r = helm("template", "prewarm", str(CHART), "-f", str(f), check=False)
    assert r.returncode != 0
    assert "config.models.0.target.namespace=serving has no prewarm-actuator Role" in r.stderr, r.stderr
    r = helm("template", "prewarm", str(CHART), "--set", "replicas=0", check=False)
    assert r.returncode != 0 and "/replicas" in r.stderr, r.stderr


# -- the rendered chart on the real control plane ----------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    server = start_prometheus(tmp_path_factory.mktemp("helm"))
    yield server
    server.stop()


def test_the_rendered_chart_applies_for_real_and_prewarm_acts_for_a_day_as_its_service_account(
    kube_cluster: KubeCluster, prometheus: PrometheusProcess, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    own, models_ns = f"prewarm-{suffix}", f"serving-{suffix}"
    try:
        kube_cluster.kubectl("create", "namespace", models_ns)
        kube_cluster.kubectl("label", "namespace", models_ns, *(f"{k}={v}" for k, v in RESTRICTED.items()))
        values = {
            "namespace": {"name": own},
            "rbac": {"modelNamespaces": [models_ns]},
            "mode": "active",
            "config": {
                "prometheus": {"url": prometheus.url},
                "models": [model("chat", {"namespace": models_ns, "name": "chart-chat"})],
                "store": {"url": "sqlite:////var/lib/prewarm/prewarm.db"},
            },
        }
        rendered = tmp_path / "rendered.yaml"
        objs = render(tmp_path, values)
        rendered.write_text(yaml.safe_dump_all(objs))
        out = kube_cluster.kubectl("apply", "-f", str(rendered))
        assert applied(out.stdout) == dict.fromkeys(names(objs), "created"), out.stdout
        assert "Warning" not in out.stderr, out.stderr
        diff = kube_cluster.kubectl("diff", "-f", str(rendered), check=False)
        assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
        assert_pod_templates_admitted(kube_cluster, objs)
        assert_deployments_run(kube_cluster, objs)
        (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
        config = yaml.safe_load(cm["data"]["config.yaml"])
        assert config["kubernetes"]["lease_namespace"] == own  # where the chart's leader-election Role is
        token = kube_cluster.token_for(own, "prewarm")
        run_a_day(kube_cluster, token, config, prometheus.url, models_ns, "chart", tmp_path / "s.db")
    finally:
        delete_namespaces(kube_cluster, (own, models_ns), wait=False)
