"""The refresh work of a fleet is spread evenly over the ticks: each model's forecast refreshes keep a
phase of their own in the refresh interval (also when its full fit lands through the collector on its due
tick), and each model's day-ahead publishes keep a phase of their own in the publish interval (also when
the whole fleet was first published at once). A tick carrying a double share of either is the fleet's
slowest tick."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from compute.local import LocalCompute
from forecaster.sources.synthetic import synthetic_fleet
from service.serve import COLLECT_EVERY_S, Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock

MODELS = 40
TICK_S = 30.0


def fleet(tmp_path: Path, compute: LocalCompute) -> tuple[Jobs, Clock]:
    clock = Clock(demo_start_s())
    ctl = build_demo(
        clock,
        f"sqlite:///{tmp_path / 'p.db'}",
        tick_s=TICK_S,
        shapes=synthetic_fleet(MODELS),
        days_after=1.0,
        compute=compute,
    )
    return Jobs(ctl, ControllerView(ctl, clock), clock, compute=compute), clock


def test_each_tick_refreshes_a_tenth_and_publishes_a_third_of_that_after_the_fits_land_together(
    tmp_path: Path,
) -> None:
    compute = LocalCompute(workers=2)
    try:
        jobs, clock = fleet(tmp_path, compute)
        refreshed, published, publishes = run(jobs, clock)
    finally:
        compute.close()
    ctl = jobs.ctl
    assert refreshed[0] == MODELS  # the fits landed together, and each was refreshed at once
    # from then on a tenth of the fleet every tick: none twice, none skipped (not 2/10 and then 0)
    assert set(refreshed[1:]) == {MODELS // 10}
    # each model's day ahead every 15 minutes after its first (at its fit's first forecast)
    for name, times in publishes.items():
        gaps = {b - a for a, b in itertools.pairwise(times[1:])}
        assert gaps == {ctl.publish_every_s}, (name, times)
    # and over a publish interval they are spread: every 5-minute refresh cycle publishes some of them,
    # none all (before, the whole fleet published within one refresh interval of every three)
    cycles: Counter[int] = Counter()
    for i, n in enumerate(published[31:61]):
        cycles[i // 10] += n
    assert sum(cycles.values()) == MODELS
    assert all(0 < n < MODELS for n in cycles.values()), cycles


def run(jobs: Jobs, clock: Clock) -> tuple[list[int], list[int], dict[str, list[float]]]:
    """The first tick (every model submits its full fit), all fits finished (they land together through
    the collector on the next tick), then 70 ticks: per tick, the models refreshed and those published;
    per model, its publishes."""
    ctl = jobs.ctl
    assert ctl.refit_every_s == 10 * TICK_S and ctl.publish_every_s == 3 * ctl.refit_every_s
    jobs.tick_all()
    for r in ctl.models.values():
        assert r.fitting is not None
        r.fitting.outcome()  # waits for the fit
    refreshed: list[int] = []
    published: list[int] = []
    publishes: dict[str, list[float]] = {name: [] for name in ctl.models}
    for _ in range(70):  # the fits land on the first of these ticks; then over two publish intervals
        clock.t += TICK_S
        jobs.tick_all()
        now = clock.t
        refreshed.append(sum(r.refit.last_ok_s == now for r in ctl.models.values()))
        published.append(sum(r.published_s == now for r in ctl.models.values()))
        for name, r in ctl.models.items():
            if r.published_s == now:
                publishes[name].append(now)
    return refreshed, published, publishes


def test_with_the_collector_between_ticks_the_refreshes_leave_the_tick_and_keep_their_phase(
    tmp_path: Path,
) -> None:
    """The service's collector runs every COLLECT_EVERY_S: it refreshes each forecast as it falls due, so
    the tick refreshes only those due at its own instant (40 models' phases are 7.5 s apart: a quarter of
    them), where alone it refreshes all; each model still every refresh interval exactly."""
    compute = LocalCompute(workers=2)
    try:
        jobs, clock = fleet(tmp_path, compute)
        ctl = jobs.ctl
        jobs.tick_all()
        for r in ctl.models.values():
            assert r.fitting is not None
            r.fitting.outcome()
        clock.t += TICK_S
        jobs.tick_all()  # the fits land together, every model refreshed at once
        by_tick: list[int] = []
        by_collector = 0
        times: dict[str, list[float]] = {name: [] for name in ctl.models}
        for _ in range(40):
            for _ in range(int(TICK_S / COLLECT_EVERY_S) - 1):
                clock.t += COLLECT_EVERY_S
                for name in jobs.collect():
                    by_collector += 1
                    times[name].append(clock.t)
            clock.t += COLLECT_EVERY_S
            jobs.tick_all()
            now = clock.t
            done = [name for name, r in ctl.models.items() if r.refit.last_ok_s == now]
            by_tick.append(len(done))
            for name in done:
                times[name].append(now)
    finally:
        compute.close()
    assert set(by_tick) == {MODELS // 10 // 4}  # alone, the tick refreshes MODELS // 10
    assert by_collector == 4 * MODELS - sum(by_tick)  # 40 ticks: four intervals, each model in each
    for name, seen in times.items():
        assert {b - a for a, b in itertools.pairwise(seen)} == {ctl.refit_every_s}, (name, seen)
