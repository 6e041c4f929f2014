"""`prewarm serve` applies one precedence to every option (flag > PREWARM_* environment > file > default)
and refuses a flag that cannot apply, saying why, instead of silently ignoring it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from forecaster.sources.synthetic import DEMO_FLEET
from service.cli import app
from tests.serve_process import ServeProcess

FILE = "store: {url: 'sqlite:///file.db'}\napi: {token: from-file, port: 8081}\nmodels: []\n"


def effective(tmp_path: Path, args: list[str], env: dict[str, str]) -> dict[str, object]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(FILE)
    result = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--print-config", *args], env=env)
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    return {"store": doc["store"]["url"], "port": doc["api"]["port"], "workers": doc["compute"]["workers"]}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param([], {}, ("sqlite:///file.db", 8081, None), id="the file over the defaults"),
        pytest.param(
            [],
            {"PREWARM_STORE__URL": "sqlite:///env.db", "PREWARM_COMPUTE__WORKERS": "3"},
            ("sqlite:///env.db", 8081, 3),
            id="the environment over the file",
        ),
        pytest.param(
            ["--store", "sqlite:///flag.db", "--port", "9100", "--workers", "2"],
            {"PREWARM_STORE__URL": "sqlite:///env.db", "PREWARM_API__PORT": "9000"},
            ("sqlite:///flag.db", 9100, 2),
            id="a flag over the environment",
        ),
    ],
)
def test_every_flag_reaches_the_configured_service_above_the_environment_and_the_file(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: tuple[object, ...]
) -> None:
    """--store, --api-token and --port used to have no effect with --config."""
    assert tuple(effective(tmp_path, args, env).values()) == expected


def test_the_api_token_flag_and_its_environment_shortcut_are_applied_and_never_printed(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("api: {token_file: /run/secrets/missing}\nmodels: []\n")
    for args, env in ((["--api-token", "from-flag"], {}), ([], {"PREWARM_API_TOKEN": "from-env"})):
        result = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--print-config", *args], env=env)
        api = yaml.safe_load(result.output)["api"]
        assert (api["token"], api["token_file"]) == ("<set>", None) and "from-" not in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["--speed", "10"], "--speed applies to the demo only", id="the demo's clock speed"),
        pytest.param(
            ["--ray-address", "auto", "--backend", "local"], "needs backend: ray", id="ray without ray"
        ),
    ],
)
def test_a_flag_that_cannot_apply_to_a_configured_service_is_refused_with_the_reason(
    tmp_path: Path, args: list[str], words: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(FILE)
    result = CliRunner().invoke(app, ["serve", "--config", str(cfg), *args])
    assert result.exit_code == 2 and words in result.output


def test_the_demo_refuses_print_config_and_the_config_only_flags() -> None:
    for args in (["--print-config"], ["--workers", "2"]):
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2 and (
            "needs --config" in result.output or "apply to a --config" in result.output
        )


def test_the_demo_runs_as_the_readme_says_and_its_readiness_says_why_posts_are_refused(
    tmp_path: Path,
) -> None:
    """`prewarm serve` with nothing else, as a process: ready, ticking every demo model, the POST endpoints
    refused without a token and /readyz saying so; SIGTERM stops it cleanly."""
    demo = ServeProcess(None, tmp_path, name="demo").start("--store", f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        ready = demo.wait_for("/readyz 200", lambda: (r := demo.get("/readyz"))[0] == 200 and r, 120)
        body = ready[1]
        assert any("POST endpoints are refused: no api token" in w for w in body["warnings"]), body
        status, models = demo.get("/v1/models")
        assert status == 200 and len(models) == len(DEMO_FLEET)
        status, refused = demo.request("POST", f"/v1/models/{models[0]['name']}/pause", {})
        assert status == 403 and "no api token" in refused["detail"]
        demo.signal(signal.SIGTERM)
        assert demo.wait(60) == 0, demo.tail()
    finally:
        demo.stop()
