"""Rolling-origin evaluation of every model and of `auto`, the way `auto` would run live.

One rolling run per candidate covers both the evaluation windows and the cross-validation windows before
them (origins every `every_s`; each model refit daily on its trailing history, updated in between). At each
evaluation origin, `auto` re-selects and re-calibrates using only windows whose targets were fully observed
by then, within the last `cv_span_s`; then its forecast for that origin is the chosen model's, calibrated.
So auto's scores are out-of-sample in the same sense as every other model's, at a fraction of the cost of
re-running the whole selection per origin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from forecaster.evaluation import coverage, mase, scaled_pinball, smape
from forecaster.models import MODELS, ModelError
from forecaster.models.sparse import brier, calibration_bins, is_sparse
from forecaster.rolling import Progress, RollingForecasts, origin_grid, rolling_forecasts
from forecaster.selection import (
    CV_EVERY_S,
    CV_SPAN_S,
    DEFAULT_CANDIDATES,
    MIN_WINDOWS,
    SCORE_LEVELS,
    Calibrator,
    bucket_edges,
    chosen_run,
    cv_every_s,
    point_run,
    select,
)
from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries


@dataclass
class ModelScores:
    mase: float
    smape: float
    pinball: float
    coverage: dict[float, float]
    windows: int
    failures: int = 0
    # coverage per horizon bucket (label such as "10-20m" -> level -> coverage): calibration that holds
    # on average can still be too narrow at the far end of the horizon, where pre-warming decides
    coverage_by_horizon: dict[str, dict[float, float]] = field(default_factory=dict)
    # "any request in a step": Brier score of the chance against what came, and the decile calibration
    # (mean chance, observed frequency, cases) of every decile bin with a case; what scale to zero reads
    brier_any: float = float("nan")
    calibration_any: list[tuple[float, float, int]] = field(default_factory=list)
    # the same for "any request within the horizon" (a window the length of T_load: whether a model at
    # zero sees a request before a replica asked for now could serve), over windows observed whole
    brier_window: float = float("nan")
    calibration_window: list[tuple[float, float, int]] = field(default_factory=list)

    def worst_decile_gap(self, min_cases: int = 100, *, window: bool = False) -> float:
        """The largest |mean chance - observed frequency| over the deciles holding `min_cases` or more (of
        each step, or with `window` of each whole horizon)."""
        bins = self.calibration_window if window else self.calibration_any
        gaps = [abs(p - f) for p, f, n in bins if n >= min_cases]
        return max(gaps) if gaps else float("nan")

    def as_dict(self) -> dict[str, object]:
        def r(x: float) -> float | None:
            return round(x, 4) if np.isfinite(x) else None

        return {
            "mase": r(self.mase),
            "smape": r(self.smape),
            "pinball": r(self.pinball),
            "coverage": {f"{k:g}": r(v) for k, v in self.coverage.items()},
            "coverage_by_horizon": {
                b: {f"{k:g}": r(v) for k, v in c.items()} for b, c in self.coverage_by_horizon.items()
            },
            "windows": self.windows,
            "failures": self.failures,
            "any_request": {
                "brier": r(self.brier_any),
                "calibration": [[round(p, 4), round(f, 4), n] for p, f, n in self.calibration_any],
                "window": {
                    "brier": r(self.brier_window),
                    "calibration": [[round(p, 4), round(f, 4), n] for p, f, n in self.calibration_window],
                },
            },
        }


@dataclass
class SeriesEvaluation:
    series: str
    step_s: int
    horizon: int
    windows: int
    models: dict[str, ModelScores]
    chosen: str  # auto's choice at the last evaluation origin
    choices: dict[str, int] = field(default_factory=dict)  # how often auto chose each model
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "chosen": self.chosen,
            "choices": self.choices,
            "step_s": self.step_s,
            "horizon_steps": self.horizon,
            "windows": self.windows,
            "models": {k: v.as_dict() for k, v in self.models.items()},
            "notes": self.notes,
        }


def observed_any(actual: FloatArray) -> FloatArray:
    """Whether any request came in each step: a whole count of at least one, or where a source reports
    expected counts (fractional), the Poisson chance of any, 1 - exp(-count)."""
    finite = actual[np.isfinite(actual)]
    whole = bool(np.all(np.abs(finite - np.round(finite)) < 1e-9))
    return np.asarray((actual >= 1).astype(np.float64) if whole else -np.expm1(-np.maximum(actual, 0.0)))


def _scores(
    actual: FloatArray,
    point: FloatArray,
    qs: dict[float, FloatArray],
    scale: FloatArray,
    step_s: int,
    failures: int = 0,
    p_any: FloatArray | None = None,
    p_window: FloatArray | None = None,
) -> ModelScores:
    edges = bucket_edges(actual.shape[1])
    by_horizon = {
        _span_label(int(lo) * step_s, int(hi) * step_s): {
            lv: coverage(actual[:, lo:hi], qs[lv][:, lo:hi]) for lv in qs
        }
        for lo, hi in pairwise(edges)
    }
    brier_any, calibration_any = float("nan"), []
    if p_any is not None:
        ok = np.isfinite(actual) & np.isfinite(p_any)
        chance, came = p_any[ok], observed_any(actual)[ok]
        brier_any, calibration_any = brier(chance, came), calibration_bins(chance, came, min_cases=1)
    brier_window, calibration_window = float("nan"), []
    if p_window is not None:
        whole = np.all(np.isfinite(actual), axis=1) & np.isfinite(p_window)
        # any in the window: one minus the chance that no step saw one
        came_w = 1.0 - np.prod(1.0 - observed_any(actual[whole]), axis=1)
        chance_w = p_window[whole]
        if chance_w.size:
            brier_window = brier(chance_w, came_w)
            calibration_window = calibration_bins(chance_w, came_w, min_cases=1)
    return ModelScores(
        brier_any=brier_any,
        calibration_any=calibration_any,
        brier_window=brier_window,
        calibration_window=calibration_window,
        mase=mase(actual, point, scale),
        smape=smape(actual, point),
        pinball=scaled_pinball(actual, qs, scale),
        coverage={lv: coverage(actual, qs[lv]) for lv in qs},
        windows=int(actual.shape[0]),
        failures=failures,
        coverage_by_horizon=by_horizon,
    )


def _span_label(lo_s: int, hi_s: int) -> str:
    """Steps [lo, hi) ahead as a time span, e.g. "0-5m", "20-40m", "1-2h"."""

    def fmt(x: int) -> str:
        if x % 3600 == 0 and x:
            return f"{x // 3600}h"
        if x % 60 == 0:
            return f"{x // 60}m"
        return f"{x}s"

    return f"{fmt(lo_s)}-{fmt(hi_s)}"


def _raw_quantiles(
    rf: RollingForecasts, windows: np.ndarray, levels: Sequence[float]
) -> dict[float, FloatArray]:
    return Calibrator.identity(rf.levels).apply_rolling(rf, windows, levels)


def evaluate_series(
    series: TrafficSeries,
    *,
    horizon_s: float = 3600.0,
    n_windows: int = 48,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    levels: Sequence[float] = SCORE_LEVELS,
    every_s: float = CV_EVERY_S,
    cv_span_s: float = CV_SPAN_S,
    progress: Progress | None = None,
) -> SeriesEvaluation:
    horizon = max(1, round(horizon_s / series.step_s))
    levels = tuple(sorted(levels))
    notes: list[str] = []
    # short series (the one-hour burst traces) get proportionally short windows
    min_history_s = min(2 * SECONDS_PER_DAY, series.span_s / 2)
    usable_s = series.span_s - min_history_s - horizon * series.step_s
    if usable_s <= 0:
        raise ModelError(f"{series.name!r} is too short to evaluate a {horizon_s:g} s horizon")
    every = max(float(series.step_s), min(every_s, usable_s / (n_windows + MIN_WINDOWS)))
    if every < every_s:
        notes.append(f"short series: windows every {every:g} s instead of {every_s:g} s")
    last = series.end_s - horizon * series.step_s
    grid = origin_grid(
        series, first_s=series.start_s + min_history_s, last_s=last, every_s=every, horizon=horizon
    )
    eval_pos = np.arange(max(MIN_WINDOWS, grid.size - n_windows), grid.size)
    if eval_pos.size == 0:
        raise ModelError(f"{series.name!r} is too short for {MIN_WINDOWS} validation and 1 evaluation window")
    first_needed = grid[eval_pos[0]] * series.step_s - cv_span_s
    keep = grid * series.step_s >= first_needed - 1e-9
    offset = int(np.argmax(keep))
    grid = grid[keep]
    eval_pos = eval_pos - offset

    runs = [rolling_forecasts(MODELS[c], series, grid, horizon, progress=progress) for c in candidates]
    models: dict[str, ModelScores] = {}
    for rf in runs:
        ok = rf.ok()[eval_pos]
        w = eval_pos[ok]
        if w.size == 0:
            continue
        models[rf.alias] = _scores(
            rf.actual[w],
            rf.mean[w],
            _raw_quantiles(rf, w, levels),
            rf.scale[w],
            series.step_s,
            failures=int((~ok).sum()),
            p_any=rf.p_any[w],
            p_window=rf.p_window[w],
        )

    # auto: re-select at every evaluation origin from the windows it could have seen by then
    by_alias = {rf.alias: rf for rf in runs}
    origin_t = grid * series.step_s
    act_rows, point_rows, scale_rows, any_rows, window_rows = [], [], [], [], []
    # live, auto on a sparse history takes the chance of any request from the sparse model whichever model
    # its quantiles come from (forecaster/selection.py): scored the same way here
    chance = by_alias.get("sparse") if is_sparse(series.slice(0, int(grid[eval_pos[0]]))) else None
    q_rows: dict[float, list[FloatArray]] = {lv: [] for lv in levels}
    choices: Counter[str] = Counter()
    # auto's CV windows are spaced as live (cv_every_s: no closer than the horizon), back from each
    # evaluation origin: every stride-th window of the grid (of a short series' shrunken grid, in proportion)
    stride = max(1, round(cv_every_s(horizon_s) / every_s))
    for e in eval_pos:
        seen = _cv_windows(grid, e, horizon, origin_t, cv_span_s, stride)
        if seen.size >= MIN_WINDOWS:
            sel = select(runs, seen, series.step_s, levels)
            rf, calib, prf = chosen_run(sel, by_alias), sel.calibrator, point_run(sel, by_alias)
            label = sel.label
        else:
            rf = prf = by_alias.get("profile", runs[0])
            calib, label = Calibrator.identity(), rf.alias
        if not (rf.ok()[e] and prf.ok()[e]):
            continue
        choices[label] += 1
        qs = calib.apply_rolling(rf, np.array([e]), levels)
        act_rows.append(rf.actual[e])
        point_rows.append(prf.mean[e])
        odds = chance if chance is not None and chance.ok()[e] else rf
        any_rows.append(odds.p_any[e])
        window_rows.append(odds.p_window[e])
        scale_rows.append(rf.scale[e])
        for lv in levels:
            q_rows[lv].append(qs[lv][0])
    if act_rows:
        models["auto"] = _scores(
            np.stack(act_rows),
            np.stack(point_rows),
            {lv: np.stack(v) for lv, v in q_rows.items()},
            np.asarray(scale_rows),
            series.step_s,
            p_any=np.stack(any_rows),
            p_window=np.asarray(window_rows),
        )
    chosen = choices.most_common(1)[0][0] if choices else ""
    last_choice = chosen
    if act_rows:
        # what auto picked at the last origin
        for e in eval_pos[::-1]:
            seen = _cv_windows(grid, e, horizon, origin_t, cv_span_s, stride)
            if seen.size >= MIN_WINDOWS:
                last_choice = select(runs, seen, series.step_s, levels).label
            break
    return SeriesEvaluation(
        series.name, series.step_s, horizon, int(eval_pos.size), models, last_choice, dict(choices), notes
    )


def _cv_windows(
    grid: np.ndarray, e: int | np.integer, horizon: int, origin_t: np.ndarray, cv_span_s: float, stride: int
) -> np.ndarray:
    """The windows auto could have cross-validated on at evaluation window e: fully observed by its origin,
    within the CV span, every `stride`-th grid window back from e."""
    pos = np.arange(grid.size)
    ok = (grid + horizon <= grid[e]) & (origin_t >= origin_t[e] - cv_span_s) & ((e - pos) % stride == 0)
    return np.flatnonzero(ok)


def evaluation_cost(
    series: TrafficSeries,
    *,
    horizon_s: float,
    n_windows: int,
    candidates: Sequence[str],
    every_s: float = CV_EVERY_S,
    cv_span_s: float = CV_SPAN_S,
) -> int:
    """How many (model, origin) forecasts `evaluate_series` will make: the progress bar's total."""
    horizon = max(1, round(horizon_s / series.step_s))
    min_history_s = min(2 * SECONDS_PER_DAY, series.span_s / 2)
    usable_s = series.span_s - min_history_s - horizon * series.step_s
    if usable_s <= 0:
        return 0
    every = max(float(series.step_s), min(every_s, usable_s / (n_windows + MIN_WINDOWS)))
    n_grid = int(usable_s // every) + 1
    n_eval = min(n_windows, max(0, n_grid - MIN_WINDOWS))
    n_cv = int(min(cv_span_s, usable_s) // every)
    return (min(n_grid, n_eval + n_cv + 1)) * len(candidates)
