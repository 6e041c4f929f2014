"""The `prewarm` command line, run as a user would (typer's runner, real files, JSON parsed back)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("trace") / "demo.csv.gz"
    r = runner.invoke(app, ["demo-trace", str(p), "--days", "9", "--step", "10m"])
    assert r.exit_code == 0, r.output
    return p


def test_forecast_json_has_one_point_per_step_with_each_quantile(demo_trace: Path) -> None:
    r = runner.invoke(
        app,
        [
            "forecast",
            str(demo_trace),
            "--series",
            "chat-large",
            "--horizon",
            "1h",
            "--quantiles",
            "0.5,0.9,0.99",
            "--model",
            "auto-fast",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["series"] == "chat-large" and doc["step_s"] == 600
    assert doc["model"] in ("profile", "seasonal_naive_daily", "seasonal_naive_weekly")
    assert len(doc["points"]) == 6
    p0 = doc["points"][0]
    assert set(p0["quantiles"]) == {"0.5", "0.9", "0.99"}
    assert p0["quantiles"]["0.5"] <= p0["quantiles"]["0.9"] <= p0["quantiles"]["0.99"]
    assert doc["origin"] == p0["timestamp"]
    assert doc["report"]["selection"]["chosen"] == doc["model"]


def test_forecast_at_uses_only_data_before_that_time(demo_trace: Path) -> None:
    r = runner.invoke(
        app,
        [
            "forecast",
            str(demo_trace),
            "-s",
            "vision-small",
            "--at",
            "2026-01-10T06:00:00Z",
            "--model",
            "profile",
            "--horizon",
            "30m",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["origin"] == "2026-01-10T06:00:00Z" and doc["report"]["n_obs"] == 5 * 144 + 36


def test_human_output_is_a_table_with_the_fit_notes(demo_trace: Path) -> None:
    r = runner.invoke(app, ["forecast", str(demo_trace), "-s", "chat-large", "--model", "holt_winters"])
    assert r.exit_code == 0, r.output
    assert "chat-large: holt_winters" in r.stdout and "q0.9" in r.stdout and "smoothing_level" in r.stdout


def test_evaluate_json_reports_every_model_and_auto(demo_trace: Path) -> None:
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(demo_trace),
            "-s",
            "chat-large",
            "--windows",
            "6",
            "--models",
            "profile,seasonal_naive_daily,seasonal_naive_weekly",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["series"]["chat-large"]
    assert doc["chosen"] in doc["models"]
    assert set(doc["models"]) == {"profile", "seasonal_naive_daily", "seasonal_naive_weekly", "auto"}
    for scores in doc["models"].values():
        assert {"mase", "smape", "pinball", "coverage"} <= set(scores)
        assert "0.9" in scores["coverage"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["forecast", "{bad}"], "line 3, column 3 (requests)", id="bad-trace"),
        pytest.param(["forecast", "{trace}", "-s", "nope"], "no series 'nope'", id="unknown-series"),
        pytest.param(
            ["forecast", "--demo", "--horizon", "soon"],
            "--horizon 'soon' is not a duration",
            id="bad-horizon",
        ),
        pytest.param(
            ["forecast", "--demo", "--quantiles", "0.5,1.5"], "outside the open interval", id="bad-quantile"
        ),
        pytest.param(["forecast", "--demo", "--model", "arima"], "unknown model 'arima'", id="bad-model"),
        pytest.param(
            ["forecast", "{trace}", "-s", "chat-large", "--at", "1999-01-01T00:00:00Z"],
            "is outside",
            id="at-outside",
        ),
        pytest.param(
            ["evaluate", "--demo", "--models", "arima"], "--models: unknown arima", id="bad-candidates"
        ),
    ],
)
def test_mistakes_end_in_one_clear_line_and_exit_2(
    args: list[str], message: str, demo_trace: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,series,requests\n2024-01-01T00:00:00Z,a,1\n2024-01-01T00:01:00Z,a,-1\n")
    args = [a.replace("{bad}", str(bad)).replace("{trace}", str(demo_trace)) for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output


def test_models_lists_every_alias() -> None:
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0
    for alias in ("profile", "holt_winters", "mstl", "prophet", "seasonal_naive_weekly", "auto"):
        assert alias in r.stdout


def test_a_backtest_of_several_series_fanned_out_on_two_workers_prints_what_serial_does(
    demo_trace: Path,
) -> None:
    args = ["backtest", str(demo_trace), "-s", "chat-large,embed-batch", "--policies", "reactive,predictive",
            "--model", "profile", "--json"]  # fmt: skip
    serial = runner.invoke(app, args)
    fanned = runner.invoke(app, [*args, "--workers", "2"])
    assert serial.exit_code == 0 and fanned.exit_code == 0, fanned.output
    assert json.loads(fanned.output) == json.loads(serial.output)
    assert len(json.loads(serial.output)["series"]) == 2
