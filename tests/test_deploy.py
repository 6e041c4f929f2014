"""The image and the manifests agree with the repository: what the Dockerfile copies and runs exists, both
kustomize overlays render with `kubectl kustomize` and validate strictly, they apply side by side without
overwriting each other's objects, their pods meet the PodSecurity "restricted" profile as written, the
shipped configs parse, probes and monitors point at real endpoints and ports, and the alert rules pass
`promtool test rules`. They are rendered with the kubectl (and kustomize) pinned and built with the test
control plane (scripts/control_plane), the one that applies them to a real API server in
tests/test_kube_overlays.py; the Helm chart's tests are in tests/test_kube_helm.py."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from service.cli import app
from service.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
CONTROL_PLANE = ROOT / "scripts" / "control_plane"
DEPLOY = ROOT / "deploy" / "kubernetes"
RULES = ROOT / "deploy" / "prometheus"
OVERLAYS = ("standalone", "sidecar")
MONITORING = ("monitoring/standalone", "monitoring/sidecar")
# kinds of the Prometheus Operator's CRDs, whose schemas kubernetes-validate does not carry
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@functools.cache
def built(tool: str) -> str:
    """A tool built with the test control plane (kubectl, helm), built into its cache first if need be
    (`scripts/control-plane bin-dir`; scripts/test.sh builds them before pytest and puts them on the PATH)."""
    r = subprocess.run(
        [sys.executable, str(CONTROL_PLANE / "cli.py"), "bin-dir"],
        capture_output=True,
        text=True,
        timeout=45 * 60,
    )
    assert r.returncode == 0, f"scripts/control-plane bin-dir failed:\n{r.stderr[-4000:]}"
    path = Path(r.stdout.strip()) / tool
    assert path.is_file(), f"scripts/control-plane built no {tool} in {path.parent}"
    return str(path)


def kubectl() -> str:
    return built("kubectl")


def pin(module: str, path: str) -> str:
    """The version scripts/control_plane/<module>/go.mod requires of `path`."""
    text = (CONTROL_PLANE / module / "go.mod").read_text()
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(path)}\s+(v\S+)", text, re.M)
    assert m, f"{module}/go.mod does not require {path}"
    return m.group(1)


def test_the_manifests_are_rendered_with_the_pinned_kubectl_and_kustomize() -> None:
    out = subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True)
    v = json.loads(out.stdout)
    assert v["clientVersion"]["gitVersion"] == pin("kubernetes", "k8s.io/kubernetes")
    assert v["kustomizeVersion"] == pin("kubernetes", "sigs.k8s.io/kustomize/kustomize/v5")


def render(overlay: str) -> str:
    where = DEPLOY / overlay if "/" in overlay else DEPLOY / "overlays" / overlay
    out = subprocess.run([kubectl(), "kustomize", str(where)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def docs(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


def test_both_overlays_render_and_every_object_validates_strictly(tmp_path: Path) -> None:
    for overlay in OVERLAYS:
        rendered = tmp_path / f"{overlay}.yaml"
        rendered.write_text(render(overlay))
        out = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", str(rendered)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(rendered.read_text()) if d}
        passed = re.findall(r"passed for resource (\w+)/", out.stdout)
        # every object without an operator CRD kind was checked against its schema, not skipped
        assert len(passed) == sum(1 for d in yaml.safe_load_all(rendered.read_text()) if d) - sum(
            1 for d in yaml.safe_load_all(rendered.read_text()) if d and d["kind"] in OPERATOR_KINDS
        ), out.stdout + out.stderr
        assert {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"} <= kinds
        # a cluster without the Prometheus Operator applies the overlays: its kinds live in monitoring/
        assert not kinds & OPERATOR_KINDS


def test_the_monitoring_kustomizations_carry_the_rules_and_a_monitor_for_each_overlay() -> None:
    for where, monitor in zip(MONITORING, ("ServiceMonitor", "PodMonitor"), strict=True):
        kinds = {d["kind"] for d in docs(where)}
        assert kinds == {"PrometheusRule", monitor}, where


def test_the_overlays_never_own_the_same_object() -> None:
    """Applying one overlay after the other must not silently take over the other's Roles or bindings."""
    ids = [
        {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs(o)}
        for o in OVERLAYS
    ]
    assert not ids[0] & ids[1]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the PodSecurity "restricted" profile (v1.25+) refuses in a pod spec, checked as the admission
    plugin does: run as non-root, no privilege escalation, every capability dropped, a RuntimeDefault or
    Localhost seccomp profile, and only the allowed volume types."""
    out = []
    pod_sc = pod.get("securityContext", {})
    allowed_volumes = {
        "configMap",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
        "csi",
    }
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= allowed_volumes:
            out.append(f"volume {v['name']}: {sorted(kinds)}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            out.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            out.append(f"{c['name']}: capabilities.drop ALL")
        added = set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}
        if added:
            out.append(f"{c['name']}: capabilities.add {sorted(added)}")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccompProfile")
    return out


def test_both_overlays_pods_meet_the_restricted_pod_security_profile() -> None:
    for overlay in OVERLAYS:
        for d in docs(overlay):
            if d["kind"] == "Deployment":
                assert restricted_violations(d["spec"]["template"]["spec"]) == [], overlay


def test_only_the_prewarm_container_holds_the_sidecars_service_account_token() -> None:
    (dep,) = [d for d in docs("sidecar") if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    token_volumes = {
        v["name"]
        for v in pod["volumes"]
        if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))
    }
    holders = {
        c["name"] for c in pod["containers"] for m in c.get("volumeMounts", []) if m["name"] in token_volumes
    }
    assert token_volumes and holders == {"prewarm"}
    (mount,) = [
        m
        for c in pod["containers"]
        if c["name"] == "prewarm"
        for m in c["volumeMounts"]
        if m["name"] in token_volumes
    ]
    assert (
        mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    )  # where in-cluster config reads


def test_the_sidecar_overlay_keeps_its_account_bindings_and_lease_in_the_pods_namespace() -> None:
    objs = docs("sidecar")
    pod_ns = {d["metadata"]["namespace"] for d in objs if d["kind"] == "Deployment"}
    assert pod_ns == {"serving"}
    assert all(d["metadata"]["namespace"] == "serving" for d in objs)
    for rb in (d for d in objs if d["kind"] == "RoleBinding"):
        assert all(s["namespace"] == "serving" for s in rb["subjects"])
    (cm,) = [d for d in objs if d["kind"] == "ConfigMap"]
    assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).kubernetes.lease_namespace == "serving"


def test_the_standalone_overlay_runs_two_replicas_behind_a_lease_and_a_disruption_budget() -> None:
    objs = {d["kind"]: d for d in docs("standalone")}
    assert objs["Deployment"]["spec"]["replicas"] == 2
    assert objs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    roles = [d for d in docs("standalone") if d["kind"] == "Role"]
    lease_rules = [r for d in roles for r in d["rules"] if "leases" in r["resources"]]
    assert lease_rules and set(lease_rules[0]["verbs"]) == {"get", "list", "create", "update", "delete"}


def test_the_alert_rules_pass_promtool_and_the_prometheusrule_carries_the_same_groups() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed: run `bash scripts/test.sh`"
    out = subprocess.run(
        [promtool, "test", "rules", "prewarm-rules.test.yaml"], cwd=RULES, capture_output=True, text=True
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    plain = yaml.safe_load((RULES / "prewarm-rules.yaml").read_text())
    (rule,) = [d for d in docs("monitoring/standalone") if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == plain["groups"]
    alerts = {r["alert"] for g in plain["groups"] for r in g["rules"] if "alert" in r}
    tested = set(re.findall(r"alertname: (\w+)", (RULES / "prewarm-rules.test.yaml").read_text()))
    assert alerts == tested, f"alerts without a promtool test: {sorted(alerts - tested)}"
    for g in plain["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                assert r["annotations"]["summary"] and r["annotations"]["runbook"], r["alert"]


def test_the_dockerfile_is_multi_stage_non_root_and_runs_prewarm_serve_from_this_repository() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("0", "root")
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which is not in the repository"
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["prewarm", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["prewarm"] == "service.cli:main"
    assert CliRunner().invoke(app, ["serve", "--help"]).exit_code == 0
    assert cmd == ["--config", "/etc/prewarm/config.yaml"]
    assert "/healthz" in re.search(r"HEALTHCHECK.*", text, re.S).group(0)  # type: ignore[union-attr]


def test_every_shipped_config_parses() -> None:
    configs = [d["data"]["config.yaml"] for o in OVERLAYS for d in docs(o) if d["kind"] == "ConfigMap"]
    assert len(configs) == 2
    for text in configs:
        cfg = parse_config(yaml.safe_load(text))
        assert cfg.models and cfg.models[0].target is not None and cfg.models[0].capacity_rps


def test_the_deployment_mounts_the_config_where_the_image_reads_it_and_probes_the_real_endpoints() -> None:
    rendered = docs("standalone")
    objs = {d["kind"]: d for d in rendered}
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["--config", "/etc/prewarm/config.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert (
        mounts["config"] == "/etc/prewarm"
        and vols["config"]["configMap"]["name"] == objs["ConfigMap"]["metadata"]["name"]
    )
    assert (c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )
    assert pod["serviceAccountName"] == "prewarm"
    sa = [d for d in rendered if d["kind"] == "ServiceAccount"]
    assert sa[0]["metadata"]["name"] == "prewarm"
    port_names = {p["name"] for p in objs["Service"]["spec"]["ports"]}
    (sm,) = [d["spec"] for d in docs("monitoring/standalone") if d["kind"] == "ServiceMonitor"]
    assert sm["selector"]["matchLabels"].items() <= objs["Service"]["metadata"]["labels"].items()
    assert {e["port"] for e in sm["endpoints"]} <= port_names and sm["endpoints"][0]["path"] == "/metrics"
