"""The image and the manifests agree with the repository: what the Dockerfile copies and runs exists, the
shipped configs parse, probes and the ServiceMonitor point at real endpoints and ports."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from service.cli import app
from service.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


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
    configs = [
        d["data"]["config.yaml"]
        for f in ("prewarm.yaml", "sidecar-example.yaml")
        for d in docs(f)
        if d["kind"] == "ConfigMap"
    ]
    assert len(configs) == 2
    for text in configs:
        cfg = parse_config(yaml.safe_load(text))
        assert cfg.models and cfg.models[0].target is not None and cfg.models[0].capacity_rps


def test_the_deployment_mounts_the_config_where_the_image_reads_it_and_probes_the_real_endpoints() -> None:
    objs = {d["kind"]: d for d in docs("prewarm.yaml")}
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
    sa = [d for d in docs("rbac.yaml") if d["kind"] == "ServiceAccount"]
    assert sa[0]["metadata"]["name"] == "prewarm"
    port_names = {p["name"] for p in objs["Service"]["spec"]["ports"]}
    sm = objs["ServiceMonitor"]["spec"]
    assert sm["selector"]["matchLabels"].items() <= objs["Service"]["metadata"]["labels"].items()
    assert {e["port"] for e in sm["endpoints"]} <= port_names and sm["endpoints"][0]["path"] == "/metrics"
