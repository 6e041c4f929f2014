"""The soak, small: the service loop over three simulated days with Prometheus outages and timeouts,
actuator 409/503 storms, a refit worker killed and the process SIGKILLed mid-tick and restarted on the same
store (benchmarks/soak.py runs the same with 1,000 models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import SoakConfig, run_soak


@pytest.mark.slow
def test_three_days_of_faults_lose_no_decision_never_scale_down_on_missing_data_and_hold_memory(
    tmp_path: Path,
) -> None:
    report = run_soak(
        SoakConfig(models=6, days=3, tick_s=600, seed=7, store=str(tmp_path / "soak.db"), speed=6000.0)
    )
    assert report["worker_killed"] and report["committed_before_kill"] > 0
    assert report["lost_decisions"] == 0
    assert report["decisions_on_missing_data"] > 0  # the faults happened and were held through
    assert report["scale_downs_on_missing_data"] == 0
    assert report["models_ticked"] == 6 and report["worst_gap_ticks"] <= 2
    assert abs(report["rss_growth_day1_to_day3"]) <= 0.10, report["rss_mb_by_day"]
    assert report["warm_from_hour"] is not None  # the six models' fits landed well before the end
    assert abs(report["rss_growth_after_warmup"]) <= 0.10, report["rss_mb_by_hour"]
    restarted = [h for h, _, p in report["rss_mb_by_hour"] if p == "restarted"]
    assert len(restarted) >= 48 and restarted[-1] == 72  # hourly, from the restart on day 1 to the end
    assert report["ok"]
