"""The fleet backtest: several traces replayed together on one GPU budget, from the CLI. Every policy stays
within the budget, series that do not overlap are refused by name unless aligned by whole weeks, series that
share a name across files are named by their file, the fleet stage beats first come, first served where the
budget binds and leaves no model worse off than under reactive, and each model is judged against its own
target."""

from __future__ import annotations

import json
from dataclasses import replace
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
            "--slo-target",
            "0.99",
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
    for run in doc["fleet"]:
        fleet, reactive = run["policies"]["predictive-fleet"], run["policies"]["reactive"]
        assert fleet["worse_than_reactive"] == {}  # the guarantee, within 0.2 points
        for name, m in fleet["models"].items():
            assert m["target"] == 0.99 and m["met"] == (m["violation_rate"] <= 0.01)
            assert m["violation_rate"] <= reactive["models"][name]["violation_rate"] + run["worse_tolerance"]
        assert fleet["models_meeting_target"] == sum(m["met"] for m in fleet["models"].values())
        worst = max(fleet["models"], key=lambda n: fleet["models"][n]["violation_rate"])
        assert fleet["worst_model"] == worst
    page = report.read_text()
    assert page.count("<h2>budget ") == 2 and page.count("alt='GPUs per model, ") == 8  # 2 budgets x 4
    # each budget's models ranked by their deficit under the fleet stage, worst first
    table = page.split("model (by deficit)")[1].split("</table>")[0]
    ranked = [row.split("<td class='l'>")[1].split("</td>")[0] for row in table.split("<tr>")[1:]]
    deficits = [half["policies"]["predictive-fleet"]["models"][m]["deficit"] for m in ranked]
    assert sorted(ranked) == ["chat-large", "code-assist", "embed-batch"]
    assert deficits == sorted(deficits, reverse=True)


def test_series_that_share_a_name_across_files_are_named_by_their_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    a, b = tmp_path / "a" / "web.csv.gz", tmp_path / "b.csv.gz"
    web, code, flat = (generate(s, days=3, step_s=60, seed=i) for i, s in enumerate(DEMO_FLEET[:3]))
    write_trace(a, [replace(web, name="all")])
    write_trace(b, [code, replace(flat, name="all")])
    args = ["backtest", str(a), str(b), "--fleet-budget", "90%", "--t-load", "5m"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["fleet"][0]
    assert set(run["policies"]["reactive"]["models"]) == {"web/all", "b/all", DEMO_FLEET[1].name}
    assert f"series 'all' of {a} is named 'web/all' (several TRACE files hold 'all')" in run["notes"]
    printed = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert printed.exit_code == 0 and "is named 'b/all'" in printed.output


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


def test_files_with_the_same_name_are_told_apart_by_their_folders() -> None:
    from service.cli.inputs import name_by_file

    one = TrafficSeries("all", 0.0, 60, np.ones(10))
    named, notes = name_by_file(
        [
            (Path("/t/servegen/trace.csv.gz"), [one]),
            (Path("/t/tweets/trace.csv.gz"), [one, replace(one, name="x")]),
        ]
    )
    assert [s.name for s in named] == ["servegen/trace/all", "tweets/trace/all", "x"] and len(notes) == 2
    assert name_by_file([(Path("/t/a.csv"), [one])]) == ([one], [])
