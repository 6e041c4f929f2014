"""The nightly ledger: each whole UTC day is replayed once per policy setting and kept; a later night
replays only the new day, and its documents equal a night that replayed everything."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from backtest.ledger import complete_days, fingerprint
from backtest.run import BacktestConfig, capacity_for
from backtest.tasks import NightSpec, night_model
from backtest.tuning import OperatingPoint, TuningGrid
from compute.local import LocalCompute
from forecaster.sources.synthetic import DEMO_FLEET, generate
from service.nightly import run_night
from service.serve import build_demo, demo_start_s
from service.store import DecisionStore
from tests.fakes import Clock

DAY = 86_400
GRID = TuningGrid(budgets=(0.01, 0.1), pools=(2, 0), utilizations=(0.8,))
SERIES = generate(DEMO_FLEET[1], days=7.5, step_s=300, seed=3)
CFG = BacktestConfig(capacity_for(SERIES), t_load_s=600.0, tick_s=60, model="profile")
SPEC = NightSpec(OperatingPoint(0.9, 0), backtest_days=4.0, target=0.99, tune_days=2, grid=GRID)


def upto(day: int) -> object:
    return SERIES.before(SERIES.start_s + day * DAY + 2 * 3600)  # the night job at 02:00


def strip(doc: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in doc.items() if k not in ("replayed", "known_used")}


def test_whole_days_after_two_days_of_history() -> None:
    days = complete_days(SERIES)
    assert days and all(d % DAY == 0 for d in days)
    assert days[0] - SERIES.start_s >= 2 * DAY and days[-1] + DAY <= SERIES.end_s
    assert complete_days(SERIES, 2) == days[-2:] and complete_days(SERIES, 0) == []


def test_a_later_night_replays_only_the_new_day_and_equals_a_night_that_replays_everything() -> None:
    first = night_model(upto(6), CFG, SPEC)  # type: ignore[arg-type]
    assert first["backtest"] and first["tuning"] and first["known_used"] == 0
    known = {(s, d): o for s, d, o in first["replayed"]}
    second = night_model(upto(7), CFG, SPEC, known)  # type: ignore[arg-type]
    fresh = night_model(upto(7), CFG, SPEC)  # type: ignore[arg-type]
    assert strip(second) == strip(fresh)
    new_days = {d for _, d, _ in second["replayed"]}
    assert new_days == {complete_days(upto(7))[-1]}  # type: ignore[arg-type]
    assert len(second["replayed"]) < len(fresh["replayed"]) / 2
    assert second["backtest"]["days"] == 4.0  # type: ignore[index]
    assert "each replayed once the night after it" in second["backtest"]["notes"][0]  # type: ignore[index]
    # the warm pool static-0 is the reactive autoscaler: one replay serves both
    assert not any(s == "static-0" for s, _, _ in fresh["replayed"])
    pol = second["backtest"]["policies"]  # type: ignore[index]
    assert pol["static-0"]["slo_violations"] == pol["reactive"]["slo_violations"]


def test_another_configuration_or_another_set_of_levels_is_another_ledger() -> None:
    fp = fingerprint(CFG, SPEC.levels())
    assert fingerprint(replace(CFG, t_load_s=660.0), SPEC.levels()) != fp
    assert fingerprint(CFG, (0.5,)) != fp
    assert fingerprint(replace(CFG, warmup_s=DAY), SPEC.levels()) == fp  # the warm-up is per day anyway


def test_the_store_keeps_a_models_days_per_configuration_and_drops_old_ones(tmp_path: Path) -> None:
    store = DecisionStore(f"sqlite:///{tmp_path / 's.db'}")
    rows = [("static-2", 10 * DAY, {"requests": 1.0}), ("a0.9+0", 11 * DAY, {"requests": 2.0})]
    store.put_replay_days("m", "fp1", rows, keep_s=0)
    store.put_replay_days("m", "fp2", [("static-2", 11 * DAY, {"requests": 3.0})], keep_s=0)
    assert store.replay_days("m", "fp1", 0) == {
        ("static-2", 10 * DAY): {"requests": 1.0},
        ("a0.9+0", 11 * DAY): {"requests": 2.0},
    }
    assert store.replay_days("m", "fp1", 11 * DAY) == {("a0.9+0", 11 * DAY): {"requests": 2.0}}
    store.put_replay_days("m", "fp1", [("a0.9+0", 11 * DAY, {"requests": 5.0})], keep_s=11 * DAY)
    assert store.replay_days("m", "fp1", 0) == {("a0.9+0", 11 * DAY): {"requests": 5.0}}
    assert store.replay_days("other", "fp1", 0) == {}


def test_the_services_second_night_replays_one_day_per_setting(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", tune_window_s=2 * DAY, days_after=1.5)
    for name in list(ctl.models)[1:]:
        del ctl.models[name]
    (name,) = ctl.models
    serial = LocalCompute(1)
    first = run_night(ctl, serial, clock(), backtest_days=4, grid=GRID)
    assert first["backtest"][name].ok and first["tuning"][name].ok
    stored = ctl.store.replay_days(name, _fp(ctl, name), 0)
    assert stored
    days_before = {d for _, d in stored}
    second = run_night(ctl, serial, clock() + DAY, backtest_days=4, grid=GRID)
    assert second["backtest"][name].ok and second["tuning"][name].ok
    after = ctl.store.replay_days(name, _fp(ctl, name), 0)
    new_days = {d for _, d in after} - days_before
    assert len(new_days) == 1
    assert np.isclose(
        ctl.store.latest_backtest(name)["days"],
        4.0,  # type: ignore[index]
    )


def _fp(ctl: object, name: str) -> str:
    rows = ctl.store  # type: ignore[attr-defined]
    with rows.engine.connect() as conn:
        from sqlalchemy import text

        return str(
            conn.execute(
                text("select fingerprint from replay_days where model=:m limit 1"), {"m": name}
            ).scalar()
        )
