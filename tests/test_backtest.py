"""The replica simulator and the policies: the textbook scenario, cold starts, accounting, no peeking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backtest.policies import Oracle, Predictive, Reactive
from backtest.run import BacktestConfig, compare, run_backtest, static_hours_at, sweep_alphas, sweep_pools
from backtest.simulator import Observation, Ticks, simulate, spread_arrivals
from forecaster.dropouts import DropoutWatch
from forecaster.sources.synthetic import DEMO_FLEET, generate
from forecaster.types import TrafficSeries
from planner import PlannerSpec
from service.cli import app


def textbook() -> TrafficSeries:
    v = np.full(120, 40.0)
    v[20:70] = 200.0  # 200 requests/s from second 20 to 70
    return TrafficSeries("textbook", 0.0, 1, v)


class Fixed:
    def __init__(self, plan: list[int] | int, name: str = "fixed") -> None:
        self.plan, self.name = plan, name
        self.seen: list[Observation] = []

    def decide(self, obs: Observation) -> int:
        self.seen.append(obs)
        if isinstance(self.plan, int):
            return self.plan
        return self.plan[min(len(self.plan) - 1, len(self.seen) - 1)]


def run(policy: object, arrivals: np.ndarray, **kw: float) -> object:
    args = {"start_s": 0.0, "capacity_rps": 30.0, "t_load_s": 25.0, "slo_wait_s": 2.0, "tick_s": 1, **kw}
    return simulate(arrivals, policy, **args)  # type: ignore[arg-type]


def test_textbook_reactive_violates_for_tens_of_percent_and_a_warm_pool_of_six_for_none() -> None:
    arr = spread_arrivals(textbook())
    reactive = run(Reactive(30.0, target_utilization=1.0, min_replicas=2), arr)
    pool = run(Reactive(30.0, target_utilization=1.0, min_replicas=2, spare=6), arr)
    assert 0.1 < reactive.slo_violation_rate < 0.9  # type: ignore[attr-defined]
    assert pool.slo_violations == 0  # type: ignore[attr-defined]
    assert reactive.requests == pool.requests == 12_800  # type: ignore[attr-defined]


def test_spreading_keeps_every_interval_total_and_is_seeded() -> None:
    s = TrafficSeries("s", 0.0, 60, np.array([0.0, 7.0, 120.4, 3.0]))
    a = spread_arrivals(s, seed=3)
    assert a.size == 240
    assert a.reshape(4, 60).sum(axis=1).tolist()[:2] == [0.0, 7.0]
    assert a.reshape(4, 60).sum(axis=1)[2] in (120.0, 121.0)
    np.testing.assert_array_equal(a, spread_arrivals(s, seed=3))


def test_a_replica_serves_exactly_t_load_after_it_is_asked_for() -> None:
    arr = np.zeros(60)
    arr[30:] = 30.0  # 30 req/s from second 30: one replica's worth
    r = run(Fixed([0] * 10 + [1]), arr, t_load_s=25.0)  # asked at second 10, ready at 35
    assert r.ready_per_tick[34] == 0 and r.ready_per_tick[35] == 1  # type: ignore[attr-defined]
    # requests from seconds 30..35 queue; those that wait more than 2 s violate
    assert r.slo_violations > 0  # type: ignore[attr-defined]
    assert r.cold_starts == 1  # type: ignore[attr-defined]
    assert r.replica_seconds == 50  # type: ignore[attr-defined]  # loading seconds are paid for


def test_releasing_cancels_loading_replicas_before_stopping_ready_ones() -> None:
    r = run(Fixed([2, 2, 5, 3]), np.zeros(10), t_load_s=100.0)
    assert r.asked_per_tick[2] == 5 and r.ready_per_tick[2] == 2  # type: ignore[attr-defined]
    assert r.asked_per_tick[3] == 3 and r.ready_per_tick[3] == 2  # type: ignore[attr-defined]


def test_the_run_starts_warm_and_policies_see_only_the_past() -> None:
    arr = np.arange(90, dtype=float)
    pol = Fixed(3)
    r = run(pol, arr, tick_s=30)
    assert r.ready_per_tick[0] == 3  # type: ignore[attr-defined]
    assert [o.elapsed_s for o in pol.seen] == [0, 30, 60]
    assert pol.seen[1].observed_rps == pytest.approx(arr[:30].mean())  # the tick that ended, not the next
    assert pol.seen[2].observed_rps == pytest.approx(arr[30:60].mean())
    # a trailing window of any length, never past the tick's start
    assert pol.seen[2].arrived(45) == pytest.approx(arr[15:60].sum())
    assert pol.seen[1].arrived(1000) == pytest.approx(arr[:30].sum())


def test_below_one_request_per_second_the_oracle_holds_the_requests_in_service_not_a_fluid_rate() -> None:
    # one request every 10 s, each holding a replica for 100 s: about 10 in service at any time
    arr = np.zeros(3600)
    arr[::10] = 1.0
    kw = {"start_s": 0.0, "capacity_rps": 0.01, "t_load_s": 60.0, "slo_wait_s": 2.0, "tick_s": 10}
    oracle = simulate(arr, Oracle(arr, 0.01, t_load_s=60.0, tick_s=10, slo_wait_s=2.0), **kw)  # type: ignore[arg-type]
    assert oracle.slo_violations == 0
    assert oracle.peak_replicas == 10  # a fluid count would ask ceil((1/3) / 0.01) = 34


def test_idle_capacity_and_cost_are_accounted() -> None:
    r = run(Fixed(2), np.full(100, 30.0), tick_s=10)
    assert r.replica_seconds == 200  # type: ignore[attr-defined]
    assert r.idle_replica_seconds == pytest.approx(100)  # type: ignore[attr-defined]
    assert r.slo_violations == 0  # type: ignore[attr-defined]


def test_the_oracle_is_cheaper_than_reactive_and_violates_less() -> None:
    s = generate(DEMO_FLEET[1], days=1.0, step_s=60, seed=2)
    arr = spread_arrivals(s)
    cap = float(np.quantile(s.values / 60, 0.999)) / 15
    kw = {"start_s": s.start_s, "capacity_rps": cap, "t_load_s": 300.0, "slo_wait_s": 2.0, "tick_s": 30}
    oracle = simulate(arr, Oracle(arr, cap, t_load_s=300.0, tick_s=30, slo_wait_s=2.0), **kw)  # type: ignore[arg-type]
    reactive = simulate(arr, Reactive(cap), **kw)  # type: ignore[arg-type]
    assert oracle.slo_violation_rate < reactive.slo_violation_rate
    assert oracle.slo_violation_rate < 0.001


def test_static_sweep_interpolation_and_comparison() -> None:
    from backtest.simulator import ReplayResult

    def fr(name: str, viol: float, hours: float) -> ReplayResult:
        return ReplayResult(name, requests=1000.0, slo_violations=viol * 1000, replica_seconds=hours * 3600)

    results = {
        "static-0": fr("static-0", 0.1, 100),
        "static-2": fr("static-2", 0.02, 140),
        "reactive": fr("reactive", 0.1, 100),
        "predictive": fr("predictive", 0.06, 90),
        "oracle": fr("oracle", 0.0, 60),
    }
    hours, note = static_hours_at(results, 0.06)
    assert hours == pytest.approx(120) and "static-0 and static-2" in note
    c = compare(results)
    assert c.violation_ratio_vs_reactive == pytest.approx(0.6)
    assert c.hours_ratio_vs_static == pytest.approx(0.75)
    assert c.hours_ratio_vs_oracle == pytest.approx(1.5)
    assert static_hours_at(results, 0.001)[0] is None


@pytest.mark.parametrize(("text", "pools"), [("0..3", (0, 1, 2, 3)), ("1,4", (1, 4))])
def test_sweep_syntax(text: str, pools: tuple[int, ...]) -> None:
    assert sweep_pools(text) == pools


def test_predictive_backtest_on_synthetic_traffic_beats_reactive_on_violations() -> None:
    s = generate(DEMO_FLEET[1], days=5.0, step_s=300, seed=4)
    cap = float(np.quantile(s.values / 300, 0.999)) / 15
    cfg = BacktestConfig(capacity_rps=cap, policies=("reactive", "predictive", "oracle"))
    bt = run_backtest(s, cfg)
    assert set(bt.results) == {"reactive", "predictive", "oracle"}
    assert bt.results["predictive"].slo_violation_rate < bt.results["reactive"].slo_violation_rate
    assert any("ForecastDemand" in n for n in bt.notes)


@pytest.mark.parametrize(("text", "alphas"), [("0.95,0.8", (0.8, 0.95)), ("0.9, 0.9,0.5", (0.5, 0.9))])
def test_alpha_sweep_syntax(text: str, alphas: tuple[float, ...]) -> None:
    assert sweep_alphas(text) == alphas


@pytest.mark.parametrize(
    ("text", "says"), [("0.5,1", "1.0 is not"), ("0,0.5", "0.0 is not"), ("a", "numbers")]
)
def test_a_bad_alpha_sweep_names_the_option_the_value_and_the_range(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="--sweep-alpha") as err:
        sweep_alphas(text)
    assert says in str(err.value) and (says == "numbers" or "(0, 1)" in str(err.value))


def test_an_alpha_sweep_runs_the_same_predictive_policy_at_each_alpha() -> None:
    s = generate(DEMO_FLEET[1], days=4.0, step_s=300, seed=4)
    cap = float(np.quantile(s.values / 300, 0.999)) / 15
    cfg = BacktestConfig(
        capacity_rps=cap, policies=("reactive", "predictive", "oracle"), alpha_sweep=(0.6, 0.9, 0.99)
    )
    bt = run_backtest(s, cfg)
    assert set(bt.results) == {
        "reactive",
        "predictive",
        "predictive-alpha0.6",
        "predictive-alpha0.9",
        "predictive-alpha0.99",
        "oracle",
    }
    # the default alpha is the newsvendor fractile of costs 9:1, so its sweep run is the same policy
    same, default = bt.results["predictive-alpha0.9"], bt.results["predictive"]
    assert same.replica_seconds == default.replica_seconds and same.slo_violations == default.slo_violations
    low, high = bt.results["predictive-alpha0.6"], bt.results["predictive-alpha0.99"]
    assert high.replica_seconds > low.replica_seconds and high.slo_violations < low.slo_violations
    assert compare(bt.results, "predictive-alpha0.99").violation_ratio_vs_reactive == pytest.approx(
        high.slo_violation_rate / bt.results["reactive"].slo_violation_rate
    )
    assert any(n.startswith("predictive-alpha0.6 decisions by reason") for n in bt.notes)


def test_cli_backtest_alpha_sweep_in_json_and_report(tmp_path: Path) -> None:
    trace, report = tmp_path / "t.csv", tmp_path / "r.html"
    r = CliRunner().invoke(app, ["demo-trace", str(trace), "--days", "3", "--step", "5m"])
    assert r.exit_code == 0, r.output
    args = ["backtest", str(trace), "-s", "chat-large", "--policies", "reactive,static,predictive"]
    sweep = ["--sweep-warm-pool", "0..3", "--sweep-alpha", "0.8,0.97"]
    r = CliRunner().invoke(app, [*args, *sweep, "--json", "--report", str(report)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {"predictive-alpha0.8", "predictive-alpha0.97"} <= set(doc["series"]["chat-large"])
    alphas = doc["alpha_sweep"]["chat-large"]
    assert alphas["predictive-alpha0.97"]["alpha"] == 0.97
    assert set(alphas["predictive-alpha0.8"]) >= {"violation_ratio_vs_reactive", "hours_ratio_vs_oracle"}
    assert "predictive-alpha0.97: alpha: 0.97; violation_ratio_vs_reactive" in report.read_text()
    bad = CliRunner().invoke(app, [*args, "--alpha", "1"])
    assert bad.exit_code == 2 and "--alpha 1 is out of range; allowed (0, 1)" in bad.output
    bad = CliRunner().invoke(app, [*args[:4], "--policies", "reactive", "--sweep-alpha", "0.9"])
    assert bad.exit_code == 2 and "add it to --policies" in bad.output


def test_cli_backtest_json_and_report(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    r = CliRunner().invoke(app, ["demo-trace", str(trace), "--days", "3", "--step", "5m"])
    assert r.exit_code == 0, r.output
    report = tmp_path / "r.html"
    r = CliRunner().invoke(
        app,
        [
            "backtest",
            str(trace),
            "-s",
            "vision-small",
            "--t-load",
            "5m",
            "--slo-wait",
            "2s",
            "--sweep-warm-pool",
            "0..2",
            "--json",
            "--report",
            str(report),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    row = doc["series"]["vision-small"]
    assert set(row) == {"reactive", "static-0", "static-1", "static-2", "scheduled", "predictive", "oracle"}
    assert set(row["reactive"]) == {
        "requests",
        "slo_violations",
        "slo_violation_rate",
        "replica_hours",
        "idle_replica_hours",
        "cold_starts",
        "peak_replicas",
    }
    html = report.read_text()
    assert "vision-small" in html and html.count("data:image/png;base64,") == 2


def test_cli_backtest_refuses_a_trace_shorter_than_the_warm_up(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["backtest", "--demo", "-s", "chat-large", "--warmup", "30d"])
    assert r.exit_code == 2
    assert "not more than the 30-day warm-up" in r.output


def test_cold_starts_can_be_drawn_from_a_seeded_distribution() -> None:
    from backtest.simulator import lognormal_t_load

    draws = lognormal_t_load(100.0, 0.5, seed=1)(2000)
    assert np.median(draws) == pytest.approx(100.0, rel=0.1)
    assert max(draws) > 200.0  # a long right tail
    assert lognormal_t_load(100.0, 0.5, seed=1)(5) == draws[:5]
    arr = np.zeros(400)
    r = simulate(
        arr,
        Fixed([0, 3]),
        start_s=0.0,
        capacity_rps=1.0,
        t_load_s=100.0,
        slo_wait_s=2.0,
        tick_s=1,
        t_load_sampler=lognormal_t_load(100.0, 0.5, seed=1),
    )
    ready = r.ready_per_tick
    first = [ready.index(k) for k in (1, 2, 3)]
    assert first == sorted(first) and len(set(first)) == 3  # three replicas, three different load times


def test_below_one_request_per_second_each_replica_is_a_server_busy_for_one_over_capacity() -> None:
    arr = np.zeros(600)
    arr[::5] = 1.0  # one request every 5 s; a replica at 0.1 req/s is busy 10 s with each
    one = simulate(arr, Fixed(1), start_s=0.0, capacity_rps=0.1, t_load_s=0.0, slo_wait_s=2.0, tick_s=30)
    two = simulate(arr, Fixed(2), start_s=0.0, capacity_rps=0.1, t_load_s=0.0, slo_wait_s=2.0, tick_s=30)
    assert one.slo_violation_rate > 0.9  # the backlog grows by one request every 10 s
    assert two.slo_violations == 0  # two servers keep up exactly: every request starts on arrival
    assert two.idle_replica_seconds == pytest.approx(0.0, abs=10.0)
    sparse = np.zeros(600)
    sparse[::20] = 1.0
    calm = simulate(sparse, Fixed(1), start_s=0.0, capacity_rps=0.1, t_load_s=0.0, slo_wait_s=2.0, tick_s=30)
    assert calm.slo_violations == 0
    assert calm.idle_replica_seconds == pytest.approx(300.0)


def test_server_mode_reports_the_backlog_to_the_policy() -> None:
    arr = np.zeros(120)
    arr[0:10] = 1.0  # ten requests in ten seconds onto one server that takes 10 s each
    pol = Fixed(1)
    simulate(arr, pol, start_s=0.0, capacity_rps=0.1, t_load_s=0.0, slo_wait_s=2.0, tick_s=30)
    assert pol.seen[1].queue_length == 6  # at 30 s four have started (at 0, 10, 20, 30 s), six still wait


def test_a_telemetry_dropout_is_held_through_not_scaled_down_on() -> None:
    # a collector outage: two busy hours read 0 on day 4, then the (never stopped) traffic is back
    s = generate(DEMO_FLEET[1], days=5.0, step_s=300, seed=4)
    day4 = 3 * 288
    busy = day4 + int(np.argmax(s.values[day4 : day4 + 288]))
    values = s.values.copy()
    values[busy - 24 : busy] = 0.0
    s = TrafficSeries(s.name, s.start_s, 300, values)
    cap = float(np.quantile(values / 300, 0.999)) / 15
    sim = s.slice(2 * 288, len(s))
    arrivals = spread_arrivals(sim, 0)
    spec = PlannerSpec(capacity_rps_per_replica=cap, t_load_s=300.0, tick_s=30.0)
    args = {"start_s": sim.start_s, "capacity_rps": cap, "t_load_s": 300.0, "slo_wait_s": 2.0, "tick_s": 30}
    watched = Predictive(spec, s.before, refresh_s=300.0)
    believed = Predictive(spec, s.before, refresh_s=300.0, dropouts=DropoutWatch(max_s=0.0))
    held = simulate(arrivals, watched, **args)  # type: ignore[arg-type]
    dropped = simulate(arrivals, believed, **args)  # type: ignore[arg-type]
    assert watched.reasons["DataDropout"] >= 200  # most of the 240 ticks of the outage
    assert believed.reasons["DataDropout"] == 0
    # believing the zeros released the fleet, and the returning traffic found it a cold start short: more
    # than half of a T_load's worth of it violated, which the held fleet served
    assert dropped.slo_violations - held.slo_violations > 0.5 * values[busy]
    assert dropped.slo_violations > 3 * held.slo_violations
    assert watched.feed.dropouts.spans == [(s.start_s + (busy - 24) * 300, s.start_s + busy * 300)]


def test_the_predictive_floor_counts_the_requests_in_service_not_one_ticks_rate() -> None:
    # sparse traffic, 400 s per request: one request in the last tick is one replica busy, not the
    # ceil((1/30) x 400 / 0.8) = 17 a rate over the 30-second tick would extrapolate
    spec = PlannerSpec(capacity_rps_per_replica=1 / 400, t_load_s=300.0, tick_s=30.0, min_replicas=0)
    assert spec.reactive_window_s == pytest.approx(400.0)
    empty = TrafficSeries("sparse", 0.0, 60, np.zeros(0))
    policy = Predictive(spec, lambda now_s: empty)  # no history: the planner holds and keeps the floor
    windows: list[float] = []

    def arrived(window_s: float) -> float:
        windows.append(window_s)
        return 1.0

    obs = Observation(3600.0, 3600, 1 / 30, 0.0, 1, 1, arrived)
    assert policy.decide(obs) == 2  # ceil((1/400) / (1/400 x 0.8))
    assert windows == [400.0]
    assert policy.reasons["ForecastMissing"] == 1


def plain_fluid_replay(
    arrivals: np.ndarray, counts: list[int], cap: float, t_load: float, slo: float, tick: int, score_from: int
) -> tuple[float, float, float, float, list[int], list[float]]:
    """The fluid queue second by second with no shortcut (every arrival a block appended and served, every
    second's promotions checked): the reference the simulator's fast paths must equal exactly. Returns
    (violations, idle replica-seconds, replica-seconds, requests, ready per tick, daily violations)."""
    n_sec = arrivals.size
    ready, loading = 0, []
    queue: list[list[float]] = []
    violations = idle = replica_s = requests = 0.0
    daily = [0.0] * max(1, -(-n_sec // 86_400))
    ready_per_tick = []
    for k in range(-(-n_sec // tick)):
        t0, t1 = k * tick, min(k * tick + tick, n_sec)
        want, asked = max(0, counts[min(k, len(counts) - 1)]), ready + len(loading)
        if k == 0:
            ready, loading = want, []
        elif want > asked:
            loading = sorted(loading + [t0 + t_load] * (want - asked))
        else:
            cancel = min(asked - want, len(loading))
            loading = loading[: len(loading) - cancel]
            ready -= asked - want - cancel
        if t0 >= score_from:
            replica_s += (ready + len(loading)) * (t1 - t0)
            requests += float(arrivals[t0:t1].sum())
        for t in range(t0, t1):
            while loading and loading[0] <= t:
                loading.pop(0)
                ready += 1
            if arrivals[t]:
                queue.append([t, float(arrivals[t])])
            budget = ready * cap
            while budget > 1e-12 and queue:
                served = min(queue[0][1], budget)
                if t - queue[0][0] > slo and queue[0][0] >= score_from:
                    violations += served
                    daily[int(queue[0][0] // 86_400)] += served
                budget -= served
                if served == queue[0][1]:
                    queue.pop(0)
                else:
                    queue[0][1] -= served
            if t0 >= score_from:
                idle += budget / cap
        ready_per_tick.append(ready)
    for t_arr, count in queue:
        if n_sec - t_arr > slo and t_arr >= score_from:
            violations += count
            daily[int(t_arr // 86_400)] += count
    return violations, idle, replica_s, requests, ready_per_tick, daily


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    arrivals=st.lists(st.integers(0, 40), min_size=1, max_size=400),
    counts=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    tick=st.integers(1, 30),
    t_load=st.integers(0, 60),
    score_from=st.integers(0, 100),
)
@example(arrivals=[5, 30, 5, 5, 0, 25] * 10, counts=[2, 3, 1], tick=5, t_load=5, score_from=0)
def test_the_replay_equals_a_plain_second_by_second_fluid_queue(
    arrivals: list[int], counts: list[int], tick: int, t_load: int, score_from: int
) -> None:
    """The simulator skips the queue's work where nothing can wait (a quiet tick, a second served within
    itself) and cuts the arrivals into ticks once for every setting: the outcome is the plain queue's,
    float for float, and the same whether the arrivals come cut (Ticks) or not."""
    arr = np.array(arrivals, dtype=float)
    kw = {"start_s": 0.0, "capacity_rps": 10.0, "t_load_s": float(t_load), "slo_wait_s": 2.0}
    a = simulate(arr, Fixed(counts), tick_s=tick, score_from_s=score_from, **kw)  # type: ignore[arg-type]
    b = simulate(Ticks.of(arr, tick), Fixed(counts), tick_s=tick, score_from_s=score_from, **kw)  # type: ignore[arg-type]
    violations, idle, replica_s, requests, ready, daily = plain_fluid_replay(
        arr, counts, 10.0, float(t_load), 2.0, tick, score_from
    )
    assert (a.slo_violations, a.replica_seconds, a.requests) == (violations, replica_s, requests)
    assert a.idle_replica_seconds == pytest.approx(idle, abs=1e-9)  # a quiet tick sums its idle at once
    assert a.ready_per_tick == ready and a.daily_violations.tolist() == daily
    assert a.as_dict() == b.as_dict() and a.ready_per_tick == b.ready_per_tick


def test_arrivals_cut_for_one_tick_are_refused_at_another() -> None:
    kw = {"start_s": 0.0, "capacity_rps": 1.0, "t_load_s": 0.0, "slo_wait_s": 1.0}
    with pytest.raises(ValueError, match="ticks of 30 s, replayed at a tick of 10 s"):
        simulate(Ticks.of(np.ones(60), 30), Fixed(1), tick_s=10, **kw)  # type: ignore[arg-type]
