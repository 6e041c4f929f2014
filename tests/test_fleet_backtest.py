"""The fleet backtest: several traces replayed together on one GPU budget, from the CLI. Every policy stays
within the budget, series that do not overlap are refused by name unless aligned by whole weeks, and the
fleet stage beats first come, first served where the budget binds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backtest.fleet import FleetError, align_week, common_span, parse_budgets
from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.sources.trace import write_trace
from forecaster.types import TrafficSeries
from service.cli import app

DAY = 86_400


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("fleet")
    a, b = tmp / "a.csv.gz", tmp / "b.csv.gz"
    write_trace(a, [generate(DEMO_FLEET[0], days=4, step_s=60, seed=1)])
    write_trace(b, [generate(s, days=4, step_s=60, seed=2) for s in DEMO_FLEET[1:3]])
    return a, b


def test_three_models_on_half_their_need_stay_within_the_budget_and_the_fleet_stage_helps(
    traces: tuple[Path, Path], tmp_path: Path
) -> None:
    report = tmp_path / "fleet.html"
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            *map(str, traces),
            "--fleet-budget",
            "50%,90%",
            "--t-load",
            "5m",
            "--json",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    need = doc["p999_need_gpus"]
    assert need == 45  # 15 replicas at each model's p99.9 rate
    half, most = doc["fleet"]
    assert (half["budget"], most["budget"]) == (22.5, 40.5)
    for run in doc["fleet"]:
        assert set(run["policies"]) == {"reactive", "static", "predictive", "predictive-fleet"}
        for p in run["policies"].values():
            assert p["peak_gpus"] <= run["budget"] + 1e-9
            assert set(p["models"]) == {"chat-large", "code-assist", "embed-batch"}
    pol = half["policies"]
    assert pol["predictive-fleet"]["violation_rate"] < pol["predictive"]["violation_rate"]
    assert pol["predictive-fleet"]["violation_rate"] < pol["reactive"]["violation_rate"]
    page = report.read_text()
    assert page.count("<h2>budget ") == 2 and page.count("alt='GPUs per model, ") == 8  # 2 budgets x 4


def test_series_that_do_not_overlap_are_refused_by_name_unless_aligned_by_whole_weeks() -> None:
    a = TrafficSeries("early", 0.0, 60, np.ones(3 * 1440))
    b = TrafficSeries("late", 30 * DAY + 3600, 60, np.ones(3 * 1440))
    with pytest.raises(FleetError, match=r"'late' starts after 'early' ends.*--align-week"):
        common_span([a, b])
    aligned = align_week([a, b])
    assert aligned[0] is a and aligned[1].start_s == 2 * DAY + 3600  # 4 weeks back: same weekday and hour
    assert common_span(aligned) == (2 * DAY + 3600, 3 * DAY)


def test_a_bad_budget_says_what_is_allowed() -> None:
    assert parse_budgets("50%, 120", 200) == [100.0, 120.0]
    with pytest.raises(FleetError, match="expected a GPU count"):
        parse_budgets("lots", 200)
    with pytest.raises(FleetError, match="allowed: more than 0"):
        parse_budgets("0", 200)
