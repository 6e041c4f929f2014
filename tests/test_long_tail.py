"""The long tail in the backtest: at a zero floor the serverless baselines (keep-alive, the hybrid histogram)
are tuned and walked forward like every other family, prewarm plans zero from a sparse forecast, and the
frontier prices prewarm against them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backtest.long_tail import in_long_tail, long_tail
from backtest.run import BacktestConfig, Replay
from backtest.tuning import (
    FAMILIES,
    NONZERO_FAMILIES,
    OperatingPoint,
    TuningError,
    TuningGrid,
    default_families,
    point_policy,
)
from forecaster.sources.synthetic import NIGHTLY_BATCH, TrafficShape, generate
from forecaster.sources.trace import write_trace
from forecaster.types import TrafficSeries
from service.cli import app
from tests.conftest import working_hours

DAY = 86_400
NIGHTLY = replace(NIGHTLY_BATCH, scheduled=False)  # the demo's batch client, some nights none or two


def nightly(days: float) -> TrafficSeries:
    return generate(NIGHTLY, days=days, step_s=60, seed=5)


def test_the_scale_to_zero_families_run_only_where_the_floor_is_zero() -> None:
    assert set(default_families(BacktestConfig(capacity_rps=1.0, min_replicas=0))) == set(FAMILIES)
    assert default_families(BacktestConfig(capacity_rps=1.0)) == NONZERO_FAMILIES
    assert {"keepalive", "histogram"} <= set(FAMILIES) - set(NONZERO_FAMILIES)


def test_each_baseline_knob_is_walked_from_its_most_protective_setting() -> None:
    grid = TuningGrid()
    assert grid.path("keepalive") == sorted(grid.keepalives_s, reverse=True)
    heads = [h for h, _ in grid.path("histogram")]
    tails = [t for _, t in grid.path("histogram")]
    assert heads == sorted(heads) and tails == sorted(tails, reverse=True)
    assert (5.0, 99.0) in grid.path("histogram"), "the published setting is on the path"


@pytest.mark.parametrize(
    ("grid", "says"),
    [
        pytest.param({"keepalives_s": (0.0,)}, "keep-alives", id="zero keep-alive"),
        pytest.param({"percentiles": ((10.0, 5.0),)}, "head < tail", id="head past tail"),
        pytest.param({"percentiles": ((5.0, 90.0), (10.0, 99.0))}, "narrow", id="not monotone"),
    ],
)
def test_a_bad_baseline_grid_says_what_is_wrong(grid: dict[str, object], says: str) -> None:
    with pytest.raises(TuningError, match=says):
        TuningGrid(**grid)  # type: ignore[arg-type]


def test_prewarm_on_the_sparse_forecast_lets_a_nightly_model_sit_at_zero_and_warms_it_before_the_batch() -> (
    None
):
    s = nightly(days=6.0)
    cfg = BacktestConfig(capacity_rps=1.0, t_load_s=300.0, min_replicas=0, model="sparse", warmup_s=4 * DAY)
    replay = Replay.of(s, cfg)
    feed = replay.feed((0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975))
    res = replay.run(point_policy(OperatingPoint(None, late_budget=0.05), cfg.planner_spec())(replay, feed))
    always = replay.run(cfg.reactive(spare=1, name="always-one-warm"))
    asked = res.asked_per_tick
    assert min(asked) == 0 and asked.count(0) > 0.7 * len(asked), "zero most of the day"
    assert res.replica_seconds < 0.35 * always.replica_seconds
    assert res.slo_violation_rate < 0.05, "the batch found its replica warm"


WORKING_HOURS = working_hours(weekdays_only=False)
BUSY = TrafficShape("chat", mean_rps=5.0, bursts_per_day=0.0)


@pytest.fixture(scope="module")
def sparse_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "tail.csv.gz"
    write_trace(
        path,
        [nightly(days=4.0), generate(WORKING_HOURS, days=4.0, step_s=60, seed=6), generate(BUSY, days=4.0)],
    )
    return path


def test_the_long_tail_is_picked_by_rule_not_by_hand() -> None:
    week = 7 * DAY
    busy = generate(BUSY, days=9.0, step_s=60)
    quiet = generate(WORKING_HOURS, days=9.0, step_s=60, seed=6)
    short = generate(WORKING_HOURS, days=2.0, step_s=60, seed=6)
    assert in_long_tail(quiet, capacity_rps=1.0, utilization=0.8)
    assert not in_long_tail(busy, capacity_rps=1.0, utilization=0.8), "never idle"
    assert not in_long_tail(quiet, capacity_rps=0.01, utilization=0.8), "its sessions need many replicas"
    chosen, note = long_tail([busy, quiet, short], 1.0, 0.8, min_span_s=week + 2 * DAY)
    assert [s.name for s in chosen] == [WORKING_HOURS.name]
    assert "1 of 3 series" in note and "1 shorter than 9 days left out" in note


def test_many_series_walked_forward_add_up_to_one_fleet_per_family() -> None:
    from backtest.records import FamilyWalk, WalkForward, fleet_walks

    def walk(series: str, fams: dict[str, tuple[float, float, float]]) -> WalkForward:
        pols = {
            f: FamilyWalk(f, 0.99, r, v, h, 0, ("x",), 0, (v / r,), (h,)) for f, (r, v, h) in fams.items()
        }
        return WalkForward(series, 0.99, 7 * DAY, 0.0, pols)

    totals = fleet_walks(
        {
            "a": [walk("a", {"predictive": (100, 1, 10), "one-warm": (100, 0, 24)})],
            "b": [walk("b", {"predictive": (300, 3, 20), "one-warm": (300, 1, 24)})],
        }
    )
    p = totals[0.99]["predictive"]
    assert (p["series"], p["requests"], p["violations"], p["replica_hours"]) == (2, 400, 4.0, 30.0)
    assert p["violation_rate"] == 0.01 and p["hours_vs_one_warm"] == pytest.approx(30 / 48, abs=1e-4)


def test_cli_backtest_at_a_zero_floor_walks_the_baselines_forward_and_prices_prewarm_against_them(
    sparse_trace: Path, tmp_path: Path
) -> None:
    report = tmp_path / "tail.html"
    r = CliRunner().invoke(
        app,
        [
            "backtest",
            str(sparse_trace),
            "--long-tail",
            "--policies",
            "reactive",
            "--capacity-rps",
            "1",
            "--min-replicas",
            "0",
            "--model",
            "sparse",
            "--slo-target",
            "0.99,0.95",
            "--tune-window",
            "1d",
            "--json",
            "--report",
            str(report),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    wf = doc["walk_forward"][NIGHTLY.name]
    assert {"keepalive", "histogram", "predictive", "static"} <= set(wf["policies"])
    assert wf["policies"]["keepalive"]["settings"][0].startswith("keepalive-")
    assert wf["policies"]["histogram"]["settings"][0].startswith("histogram-")
    fr = doc["frontier"][NIGHTLY.name]
    assert [p["target"] for p in fr["policies"]["keepalive"]] == [0.99, 0.95]
    assert "predictive_hours_vs_keepalive_at_equal_violation" in fr
    assert "predictive_hours_vs_histogram_at_equal_violation" in fr
    assert set(doc["walk_forward"]) == {NIGHTLY.name, WORKING_HOURS.name}, "the busy model is not the tail"
    fleet = doc["fleet_walk_forward"]["0.99"]
    assert fleet["one-warm"]["hours_vs_one_warm"] == 1.0 and fleet["predictive"]["series"] == 2
    assert {"keepalive", "histogram", "predictive", "static"} <= set(fleet)
    page = report.read_text()
    assert "<h2>the series as one fleet</h2>" in page and "walked forward at target 0.95" in page
    assert "when each family kept each model warm, at target 0.99, busiest first" in page
    assert "alt='timeline strips'" in page


def test_the_walk_forward_keeps_when_each_day_s_chosen_setting_held_replicas() -> None:
    from backtest.tuning import simulate_candidates
    from backtest.walk_forward import walk_forward

    cfg = BacktestConfig(capacity_rps=1.0, t_load_s=300.0, min_replicas=0, model="profile", warmup_s=2 * DAY)
    runs = simulate_candidates(nightly(days=5.0), cfg, families=("keepalive", "one-warm"))
    wf = walk_forward(runs, 0.99, DAY)
    per_day = DAY // cfg.tick_s
    for family, w in wf.policies.items():
        assert len(w.ready_per_tick) == len(w.settings) * per_day, family
        ready_h = sum(w.ready_per_tick) * cfg.tick_s / 3600
        assert 0 < ready_h <= w.replica_hours + 1e-9, "ready replicas are a part of those paid for"
    one = wf.policies["one-warm"]
    assert min(one.ready_per_tick) == 1, "always one warm"
    assert min(wf.policies["keepalive"].ready_per_tick) == 0, "the keep-alive let the model reach zero"


def test_cli_long_tail_needs_a_capacity_to_count_replicas_at(sparse_trace: Path) -> None:
    r = CliRunner().invoke(app, ["backtest", str(sparse_trace), "--long-tail", "--min-replicas", "0"])
    assert r.exit_code != 0 and "--long-tail needs --capacity-rps" in r.output
