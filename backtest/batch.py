"""Backtests over many series, as `prewarm backtest` and `prewarm tune` run them: one call each.

- `replay_each`: every series replayed on its own through every policy (and, with an SLO target, walked
  forward at it), in this process or one task per series on a compute backend, with its HTML report;
- `replay_fleet`: the series replayed together as one fleet on each GPU budget, with its HTML report;
- `tune_each`: every series' operating point tuned for its SLO target.

`ReplayOptions` holds the settings as the user gave them; a series' own config (a model of a config file)
fills what they leave open. The CLI parses its flags into them and prints what comes back; the per-series
work is the same module-level function a compute worker runs (backtest/tasks.py), so a fanned-out backtest
returns what a serial one does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backtest.fleet import (
    FleetBacktest,
    FleetMember,
    align_week,
    p999_needs,
    parse_budgets,
    run_fleet_backtest,
)
from backtest.report import write_fleet_html, write_html
from backtest.run import POLICIES, BacktestConfig, SeriesBacktest, capacity_for
from backtest.simulator import lognormal_t_load
from backtest.tasks import replay_series
from backtest.tuning import (
    DEFAULT_TUNE_WINDOW_S,
    FAMILIES,
    NONZERO_FAMILIES,
    ZERO_FLOOR_BUDGETS,
    TuningError,
    TuningGrid,
    TuningResult,
    candidate_count,
    tune,
)
from compute.base import Compute, Task
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from planner.fleet import DEFAULT_SLO_TARGET

# what a config file says about one series (capacity_rps, t_load_s, slo_target, slo_wait_s; None: unset)
Settings = Mapping[str, float | None]
# opens a progress display for a total of units; what it yields advances it by some
ProgressBar = Callable[[int], AbstractContextManager[Callable[[int], None]]]


class BacktestFailed(RuntimeError):
    """A series' backtest failed on the compute backend (after its retries); the message names it and why."""


def _given(flag: float | None, config: float | None, default: float) -> float:
    """A setting as given on the command line, else the series' config's, else the default."""
    return flag if flag is not None else config if config is not None else default


@contextmanager
def _no_bar(total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@dataclass(frozen=True)
class ReplayOptions:
    """A backtest's settings as given. None leaves a setting to the series' config, then to the default."""

    capacity_rps: float | None = None  # None: the config's, else the 99.9th-percentile rate / 15
    t_load_s: float | None = None  # None: the config's, else 300 s
    t_load_sigma: float = 0.0  # > 0: each cold start drawn from a lognormal around t_load_s
    slo_wait_s: float | None = None  # None: the config's, else 2 s
    tick_s: int = 30
    min_replicas: int | None = None  # None: the config's, else 1
    max_replicas: int | None = None  # None: the config's, else 10,000
    warmup_s: float = 2 * SECONDS_PER_DAY
    start_s: float | None = None  # replay from here (the history before it is the warm-up)
    end_s: float | None = None  # replay until here
    warm_pools: tuple[int, ...] = (2,)
    policies: tuple[str, ...] = POLICIES
    model: str = "auto-fast"
    alpha: float | None = None
    alpha_sweep: tuple[float, ...] = ()
    seed: int = 0
    # replay_each: also walk forward at each and draw the frontier; tune_each: the first (none: the config's)
    slo_targets: tuple[float, ...] = ()
    tune_window_s: float = DEFAULT_TUNE_WINDOW_S

    @property
    def slo_target(self) -> float | None:
        return self.slo_targets[0] if self.slo_targets else None

    @property
    def work(self) -> int:
        """Progress units of one series' replay: a policy run each, a simulation each for the walk-forward."""
        runs = len(self.policies) + len(self.alpha_sweep)
        if "static" in self.policies:  # one run per pool size
            runs += len(self.warm_pools) - 1
        if self.slo_targets:  # the scale-to-zero families too where the floor may be zero
            zero = self.min_replicas == 0
            runs += candidate_count(TuningGrid(), FAMILIES if zero else NONZERO_FAMILIES)
            runs += len(ZERO_FLOOR_BUDGETS) if zero else 0
        return runs

    def config(self, series: TrafficSeries, fixed: Settings) -> tuple[TrafficSeries, BacktestConfig]:
        """The series cut to the replay's range, and its replay's configuration."""
        warmup_s = self.warmup_s
        # a series with settings of its own came from Prometheus, loaded for exactly the range asked: all of
        # it is warm-up + replay. A trace is cut here: the history before --start is the warm-up
        if not fixed and (self.start_s is not None or self.end_s is not None):
            lo = series.index_at(self.start_s) if self.start_s is not None else 0
            hi = series.index_at(self.end_s) if self.end_s is not None else len(series)
            series = series.slice(0, hi)
            if self.start_s is not None:
                warmup_s = max(0.0, lo * series.step_s)
        t_load_s = _given(self.t_load_s, fixed.get("t_load_s"), 300.0)
        sampler = lognormal_t_load(t_load_s, self.t_load_sigma, self.seed) if self.t_load_sigma > 0 else None
        cfg = BacktestConfig(
            capacity_rps=self.capacity_rps or fixed.get("capacity_rps") or capacity_for(series),
            t_load_s=t_load_s,
            t_load_sampler=sampler,
            slo_wait_s=_given(self.slo_wait_s, fixed.get("slo_wait_s"), 2.0),
            tick_s=self.tick_s,
            min_replicas=int(_given(self.min_replicas, fixed.get("min_replicas"), 1)),
            max_replicas=int(_given(self.max_replicas, fixed.get("max_replicas"), 10_000)),
            warmup_s=warmup_s,
            warm_pools=self.warm_pools,
            policies=self.policies,
            model=self.model,
            alpha=self.alpha,
            alpha_sweep=self.alpha_sweep,
            seed=self.seed,
        )
        return series, cfg

    def fleet_config(self, series: TrafficSeries) -> BacktestConfig:
        """A fleet member's configuration: the fleet replays the span every series shares (no --start or
        --end), every policy of the fleet (not --policies), at one cold-start time."""
        return BacktestConfig(
            capacity_rps=self.capacity_rps or capacity_for(series),
            t_load_s=self.t_load_s if self.t_load_s is not None else 300.0,
            slo_wait_s=self.slo_wait_s if self.slo_wait_s is not None else 2.0,
            tick_s=self.tick_s,
            min_replicas=self.min_replicas if self.min_replicas is not None else 1,
            max_replicas=self.max_replicas if self.max_replicas is not None else 10_000,
            warmup_s=self.warmup_s,
            warm_pools=self.warm_pools,
            model=self.model,
            alpha=self.alpha,
            seed=self.seed,
        )


def replay_each(
    series: Sequence[TrafficSeries],
    opts: ReplayOptions,
    *,
    settings: Mapping[str, Settings] | None = None,
    compute: Compute | None = None,
    progress: ProgressBar = _no_bar,
    report: Path | None = None,
) -> list[SeriesBacktest]:
    """Every series through every policy of `opts` (and the walk-forward at its SLO target), in order: in
    this process with a progress bar, or one task per series on `compute` (BacktestFailed names the first
    that failed). Writes the HTML report to `report` when given."""
    jobs = [opts.config(s, (settings or {}).get(s.name, {})) for s in series]
    window_s = opts.tune_window_s
    if compute is not None:
        tasks = [Task(s.name, replay_series, (s, cfg, opts.slo_targets, window_s)) for s, cfg in jobs]
        runs = []
        for outcome in compute.map(tasks):
            if not outcome.ok:
                raise BacktestFailed(f"backtest of {outcome.key} failed: {outcome.error}")
            runs.append(outcome.value)
    else:
        with progress(len(jobs) * opts.work) as tick:
            runs = [replay_series(s, cfg, opts.slo_targets, window_s, progress=tick) for s, cfg in jobs]
    if report is not None:
        write_html(runs, report)
    return runs


@dataclass(frozen=True)
class FleetReplays:
    """A fleet replayed on each budget: its size, the GPUs it needs at every model's p99.9 rate, the runs."""

    members: int
    need_gpus: float
    runs: list[FleetBacktest]

    def as_dict(self) -> dict[str, Any]:
        return {"p999_need_gpus": self.need_gpus, "fleet": [r.as_dict() for r in self.runs]}


def replay_fleet(
    series: Sequence[TrafficSeries],
    opts: ReplayOptions,
    budgets: str,
    *,
    align: bool = False,
    report: Path | None = None,
    notes: Sequence[str] = (),
) -> FleetReplays:
    """The series replayed together on each of `budgets` (GPU counts, or shares of the fleet's p99.9 need
    such as 70%), each model against the options' SLO target (else the fleet stage's default); with
    `align`, each first shifted by whole weeks into the earliest one's week. `notes` (e.g. how series were
    renamed) join each run's. Writes the HTML report to `report` when given."""
    target = opts.slo_target if opts.slo_target is not None else DEFAULT_SLO_TARGET
    members = [
        FleetMember(s, opts.fleet_config(s), slo_target=target)
        for s in (align_week(series) if align else series)
    ]
    need = p999_needs(members)
    runs = run_fleet_backtest(members, parse_budgets(budgets, need))
    for run in runs:
        run.notes[:0] = notes
    if report is not None:
        write_fleet_html(runs, report)
    return FleetReplays(len(members), need, runs)


def tune_each(
    series: Sequence[TrafficSeries],
    opts: ReplayOptions,
    *,
    settings: Mapping[str, Settings] | None = None,
    progress: ProgressBar = _no_bar,
) -> list[TuningResult]:
    """Each series' operating point tuned on its trailing `opts.tune_window_s` for its SLO target (the
    options', else its config's), in order."""
    with progress(len(series) * candidate_count(TuningGrid(), ("static", "reactive", "predictive"))) as tick:
        results = []
        for s in series:
            fixed = (settings or {}).get(s.name, {})
            target = opts.slo_target if opts.slo_target is not None else fixed.get("slo_target")
            if target is None:
                raise TuningError(f"{s.name}: give --slo-target (or slo.target in the model's config)")
            _, cfg = opts.config(s, fixed)
            results.append(tune(s, cfg, target, window_s=opts.tune_window_s, progress=tick))
    return results
