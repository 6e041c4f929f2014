"""The service meets each model's SLO target: the nightly tuning run on the demo's simulated night, the point
applied from the next tick and carried by its decisions, every run recorded, a failed run keeping the
previous point, a restart resuming it, SloUnreachable said, and the tuning shown over the API and /metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from backtest.tuning import TuningGrid
from forecaster.sources.base import SourceError
from planner.slo import LEVELS as SLO_LEVELS
from service.config import ConfigError, parse_config
from service.nightly import nightly_tune
from service.runtime import Controller
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock

DAY = 86_400
GRID = TuningGrid(budgets=(0.001, 0.01, 0.1), pools=(4, 2, 0), utilizations=(0.8,))
NAME = "chat-large"


def demo(store: Path, clock: Clock) -> Controller:
    return build_demo(clock, f"sqlite:///{store}", tune_window_s=DAY)


@pytest.fixture(scope="module")
def night(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Controller, ControllerView, Clock, Path]:
    """The demo from 02:40 of its first night to 03:20: the nightly jobs run at 03:00 of its clock."""
    store = tmp_path_factory.mktemp("tuning") / "store.db"
    clock = Clock(demo_start_s() + 20 * 3600 + 40 * 60)
    ctl = demo(store, clock)
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock, backtest_days=3, grid=GRID)
    ran = []
    for _ in range(40):
        jobs.tick_all()
        ran.append(jobs.nightly_if_due())
        clock.t += 60
    assert ran.index(True) == 20  # 03:00 exactly, once
    assert ran.count(True) == 1
    return ctl, view, clock, store


def test_the_demo_tunes_each_model_in_its_first_night_and_decisions_carry_the_point(
    night: tuple[Controller, ControllerView, Clock, Path],
) -> None:
    ctl, view, clock, _ = night
    for name, r in ctl.models.items():
        runs = ctl.store.tunings(name, limit=5)
        assert len(runs) == 1 and runs[0]["ok"], runs
        chosen = runs[0]["chosen"]
        assert r.tuning is not None and r.tuning["chosen"] == chosen
        last = ctl.store.decisions(name, limit=1)[0].record  # a tick after 03:00
        inputs = last["inputs"]
        assert inputs["burst_reserve_replicas"] == chosen["burst_reserve_replicas"]
        assert inputs["use_forecast"] == int(chosen["use_forecast"])
        assert inputs["late_budget"] == chosen["late_budget"]
        if chosen["use_forecast"] and chosen["late_budget"] is None:
            assert inputs["alpha"] == chosen["alpha"]
        assert inputs["slo_target"] == 0.99
        if chosen["late_budget"] is not None:  # planning for the SLO reads each step's whole distribution
            ctl.refit_model(name, clock())
            assert r.forecast is not None and set(SLO_LEVELS) <= set(r.forecast.levels)
        assert view.jobs["nightly_tuning"].last_error is None


def test_the_tuning_endpoint_shows_candidates_the_choice_and_the_warm_pool_it_saves_against(
    night: tuple[Controller, ControllerView, Clock, Path],
) -> None:
    _, view, _, _ = night
    with TestClient(create_app(view, api_token="t")) as client:
        doc = client.get(f"/v1/models/{NAME}/tuning").json()
        assert doc["slo_target"] == 0.99 and doc["operating_point"]["source"] == "tuned"
        applied = doc["applied"]
        assert applied["why"] and applied["rule"].startswith("walk the knob from its most protective")
        passed_over = applied["not_simulated"]
        own = [c for c in applied["families"]["predictive"]["candidates"] if c["setting"].startswith("slo-")]
        assert own and len(own) + len(passed_over.get("predictive", [])) == 3  # the grid's budgets
        pool = applied["warm_pool"]
        assert pool["setting"].startswith("static-") and pool["replica_hours_per_day"] > 0
        assert applied["hours_ratio_vs_warm_pool"] == pytest.approx(
            applied["replica_hours_per_day"] / pool["replica_hours_per_day"], rel=1e-3
        )
        model = client.get(f"/v1/models/{NAME}").json()
        assert model["slo_target"] == 0.99
        assert model["burst_reserve_replicas"] == applied["chosen"]["burst_reserve_replicas"]
        text = client.get("/metrics").text
        for metric in (
            "prewarm_slo_target",
            "prewarm_operating_point_alpha",
            "prewarm_operating_point_late_budget",
            "prewarm_burst_reserve_replicas",
            "prewarm_tuning_attainment",
            "prewarm_tuning_hours_ratio_vs_warm_pool",
            "prewarm_tuning_saving_vs_warm_pool",
        ):
            assert f'{metric}{{model="{NAME}"}}' in text, metric
        ready = client.get("/readyz").json()["models"][NAME]
        assert ready["tuning"] in ("meets target on the trailing window", "SloUnreachable")


def test_a_model_without_a_target_is_not_tuned(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", slo_target=None)
    assert nightly_tune(ctl, NAME, clock(), GRID) is None
    with TestClient(create_app(ControllerView(ctl, clock), api_token="t")) as client:
        r = client.get(f"/v1/models/{NAME}/tuning")
        assert r.status_code == 404 and "no SLO target" in r.json()["detail"]


def test_a_failed_tuning_run_is_recorded_and_keeps_the_previous_point(
    night: tuple[Controller, ControllerView, Clock, Path],
) -> None:
    ctl, view, clock, _ = night
    r = ctl.models["embed-batch"]
    before, history = r.spec, r.history

    def down(now_s: float) -> Any:
        raise SourceError("prometheus unreachable")

    r.history = down
    try:
        with pytest.raises(SourceError):
            nightly_tune(ctl, r.name, clock(), GRID)
    finally:
        r.history = history
    assert r.spec == before
    failed = ctl.store.tunings(r.name, limit=1)[0]
    assert not failed["ok"] and "prometheus unreachable" in failed["error"]
    assert failed["kept"] == r.tuning["chosen"]["setting"]  # type: ignore[index]
    _, ready = view.readiness()
    assert any("previous operating point is kept" in w for w in ready["models"][r.name]["warnings"])
    assert ctl.store.tunings(r.name, ok_only=True, limit=1)[0]["ok"]


def test_a_restart_resumes_the_tuned_point(night: tuple[Controller, ControllerView, Clock, Path]) -> None:
    ctl, _, clock, store = night
    again = demo(store, Clock(clock.t))
    for name, r in again.models.items():
        tuned = ctl.models[name].spec
        assert (r.spec.quantile, r.spec.burst_reserve_replicas, r.spec.use_forecast) == (
            tuned.quantile,
            tuned.burst_reserve_replicas,
            tuned.use_forecast,
        )


def test_an_unreachable_target_runs_the_most_protective_point_and_says_so(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", tune_window_s=DAY, slo_target=0.999)
    r = ctl.models["code-assist"]
    r.spec = dataclasses.replace(r.spec, max_replicas=2)  # a cap far under the peak: no candidate gets there
    doc = nightly_tune(ctl, r.name, clock(), GRID)
    assert doc is not None and doc["slo_unreachable"] and "SloUnreachable" in doc["why"]
    scores = doc["families"]["predictive"]["candidates"]
    assert doc["families"]["predictive"]["chosen"]["violation_rate"] == min(
        c["violation_rate"] for c in scores
    )
    view = ControllerView(ctl, clock)
    Jobs(ctl, view, clock).tick_all()
    decision = ctl.store.decisions(r.name, limit=1)[0].record
    assert "SloUnreachable" in decision["reasons"] and "SLO unreachable" in decision["explanation"]
    _, ready = view.readiness()
    assert ready["models"][r.name]["tuning"] == "SloUnreachable"
    assert any("SloUnreachable" in w for w in ready["models"][r.name]["warnings"])


@pytest.mark.parametrize(
    ("slo", "says"),
    [
        pytest.param({"target": 99}, "models.0.slo.target=99", id="a percentage"),
        pytest.param({"target": 1.5}, "allowed (0, 1)", id="above one"),
        pytest.param({"wait_s": -1}, "models.0.slo.wait_s=-1", id="a negative wait"),
        pytest.param(
            {"tune_window_days": 0.5}, "models.0.slo.tune_window_days=0.5", id="a window under a day"
        ),
    ],
)
def test_a_bad_slo_in_the_config_names_the_key_the_value_and_the_range(
    slo: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"models": [{"name": "m", "query": "up", "slo": slo}]})
    assert says in str(exc.value)


def test_the_old_slo_wait_key_says_where_it_moved() -> None:
    with pytest.raises(ConfigError, match=r"slo_wait_s is now slo\.wait_s"):
        parse_config({"models": [{"name": "m", "query": "up", "slo_wait_s": 2}]})
