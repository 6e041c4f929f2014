"""The live fleet stage: the demo's four models share a GPU budget smaller than their morning asks. Every
tick stays within the budget, clipped decisions say BudgetLimited and why, models whose asks fit are not
touched, and /v1/fleet and /metrics show the allocation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock

BUDGET = 20


def test_the_demo_fleet_shares_a_gpu_budget_and_explains_every_clip(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 'store.db'}", gpu_budget=BUDGET)
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock)
    used, clipped_ticks = [], 0
    for _ in range(180):  # 06:00 to 09:00: the morning rise
        jobs.tick_all()
        assert ctl.allocation is not None
        used.append(ctl.allocation.used_gpus)
        clipped_ticks += bool(ctl.allocation.clipped)
        total = sum(r.last_decision["desired_replicas"] for r in ctl.models.values() if r.last_decision)
        assert total <= BUDGET, f"the decisions ask {total} replicas of a {BUDGET}-GPU budget"
        clock.t += 60
    assert max(used) <= BUDGET and clipped_ticks > 0
    limited = [
        d.record
        for name in ctl.models
        for d in ctl.store.decisions(name, limit=200)
        if d.record["reason"] == "BudgetLimited"
    ]
    assert limited, "some decisions were clipped by the budget"
    step = limited[0]["steps"][-1]
    assert step["stage"] == "fleet_budget" and step["after"] < step["before"]
    assert f"fleet budget {BUDGET} GPUs" in step["message"] and "granted" in step["message"]
    assert "fleet budget" in limited[0]["explanation"]

    client = TestClient(create_app(view, api_token=None))
    doc = client.get("/v1/fleet").json()
    assert doc["budget_gpus"] == BUDGET and set(doc["models"]) == set(ctl.models)
    assert doc["used_gpus"] <= BUDGET
    for m, g in doc["models"].items():
        assert g["granted_replicas"] <= g["asked_replicas"] and (g["clipped"] == (m in doc["clipped"]))
        # each model's floor, and its expected late share at the grant against its own SLO's budget
        assert 0 <= g["floor_replicas"] <= g["asked_replicas"] and g["late_budget"] > 0
        assert g["expected_late_share"] is None or 0 <= g["expected_late_share"] <= 1
        assert isinstance(g["damped"], bool)
    # the tick threads the fleet stage's state: every model's last ask is known to the next tick
    assert set(ctl.allocation.state.asks) == set(ctl.models)
    text = client.get("/metrics").text
    assert f"prewarm_fleet_gpu_budget {BUDGET}" in text and "prewarm_fleet_clipped{" in text


def test_without_a_budget_each_model_plans_alone_and_the_fleet_view_says_so(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 'store.db'}")
    view = ControllerView(ctl, clock)
    Jobs(ctl, view, clock).tick_all()
    assert ctl.allocation is None
    doc = TestClient(create_app(view, api_token=None)).get("/v1/fleet").json()
    assert doc == {
        "budget_gpus": None,
        "asked_gpus": None,
        "used_gpus": None,
        "clipped": [],
        "models": {},
        "shards": None,  # one replica acts on every model
    }
