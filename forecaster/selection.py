"""Per-series model choice by rolling-origin cross-validation, and split-conformal quantile calibration.

Calibration. A model's own intervals are often wrong (too narrow at 1-minute steps, too wide after an
outage). For each quantile level and horizon bucket we take the held-out log-scale residuals
s = log1p(y) - log1p(q_model) over the validation windows and shift the model's quantile by the
conformal quantile of s at that level (with the (n+1)/n finite-sample correction for upper levels). The
shift is multiplicative on the count scale, which matches traffic noise (it grows with the level) and keeps
counts non-negative. Quantiles stay ordered: each level's path is made non-decreasing across levels.

Selection. Every candidate is scored by the mean scaled pinball loss at the planner's levels, *after*
calibration, cross-fitted (calibrate on the even windows and score the odd ones, then the reverse), so a
model with poor raw intervals but good shape can win, and no model is scored on the windows it was
calibrated on; and by its point error (MASE). Calibration can repair a candidate's intervals but not its
shape, and choosing on pinball alone picked worse points than the candidates had (a better-calibrated
model over a sharper one), so the criterion weighs both, each relative to the best candidate on it:
pinball / best pinball + MASE / best MASE. The winner, every candidate's scores and the reason are kept
for the fit report.

Point. Weighing both can still rightly prefer better intervals over better points (on m-mid the chosen
combination's pinball was 26% below the profile model's and its MASE 8% above), so the mean, the point
forecast, is chosen on its own: the candidate, or combination of the best two or three by MASE, with the
lowest cross-validated MASE. The planner reads only the quantiles; the mean is what the API, the dashboard
and `evaluate` report.

Combination. One pick from a noisy CV is fragile: two candidates a hair apart in CV can be far apart on the
next days. So the equal-weight combinations of the best two and best three candidates (mean of means,
mean of quantiles, then calibrated like any candidate) are scored the same cross-fitted way, and one is
chosen only if it scores better than every single candidate.

Shocks. The calibration weights recent windows more (half-life two days), which still takes days to widen
after a regime change (a storm, a launch). When the newest day's windows miss an upper quantile far more
often than its level allows (beyond two binomial standard errors), that level's shift is taken from the
newest day alone, so coverage recovers within a day; it only ever widens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from forecaster.evaluation import coverage, mase, scaled_pinball
from forecaster.models import MODELS, FitReport, ForecastModel, ModelError
from forecaster.models.base import Timer
from forecaster.models.combination import Combination, combo_alias
from forecaster.models.profile import SeasonalProfile
from forecaster.models.sparse import SparseCounts, is_sparse
from forecaster.rolling import (
    CAL_LEVELS,
    Progress,
    RollingCache,
    RollingForecasts,
    origin_grid,
    rolling_forecasts,
)
from forecaster.shape import DailyShape
from forecaster.types import SECONDS_PER_DAY, FloatArray, Forecast, TrafficSeries, interp_weights

DEFAULT_CANDIDATES: tuple[str, ...] = (
    "profile", "holt_winters", "mstl", "prophet", "local_trend",
    "seasonal_naive_daily", "seasonal_naive_weekly",
)  # fmt: skip
FAST_CANDIDATES: tuple[str, ...] = ("profile", "seasonal_naive_daily", "seasonal_naive_weekly")
CAL_HALF_LIFE_S = 2 * SECONDS_PER_DAY
SCORE_LEVELS: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
CV_SPAN_S = 7 * SECONDS_PER_DAY
# CV windows at least every 30 minutes, and no closer than the horizon: windows then tile the 7-day span, so
# every step is scored once. Every 2 hours at a 1-hour horizon left half the week unscored (42 windows per
# cross-fitting half), where the conformal shift at the upper scored levels (0.95, 0.99) is the largest
# residual or near it, and rare failures (a seasonal naive echoing yesterday's one-off spike) were seldom
# sampled, so a candidate could win selection by luck. Windows closer than the horizon score each step twice
# or more at other lead times, for as many forecasts again: at a 1-hour horizon, 30-minute windows cost a
# quarter of `auto`'s time (benchmarks/bench_fit). Each lead-time bucket of the calibration then sees half
# the residuals, which at 0.99 put the conformal shift on the largest one (tweets/UPS, 1-hour horizon:
# pinball 0.0685 -> 0.0807) until thin buckets borrowed their neighbours' lead times (TAIL_WEIGHT: 0.0616).
# The planner's horizons (T_load + tick, minutes) keep 30-minute windows.
CV_EVERY_S = 1800.0
MIN_WINDOWS = 6
MIN_BUCKET = 30
# a level's conformal shift needs residuals whose weight past the level is at least this (about five
# residuals beyond it, the usual bar for estimating a tail share): a lighter bucket's 0.99 shift is its
# largest residual or near it, noise that the pinball loss pays for (tweets/UPS at a 1-hour horizon with
# hourly windows: 0.0807, 0.0616 with lead-time buckets pooled to this weight)
TAIL_WEIGHT = 5.0
MAX_FAILURE_SHARE = 0.1
COMBINE_TOP = (2, 3)  # combinations of the best k candidates that are tried
SHOCK_WINDOW_S = SECONDS_PER_DAY  # the newest windows a shock is judged on
SHOCK_MIN_WINDOWS = 12
SHOCK_SIGMAS = 2.0


def cv_every_s(horizon_s: float) -> float:
    """Spacing of `auto`'s cross-validation windows for a horizon: CV_EVERY_S, or the horizon when longer."""
    return max(CV_EVERY_S, float(horizon_s))


def bucket_edges(horizon: int) -> np.ndarray:
    """Horizon buckets [e_k, e_k+1) in steps (0-based): 0, 1, 2-3, 4-7, ... up to the horizon."""
    edges = [0]
    while edges[-1] < horizon:
        edges.append(min(horizon, max(1, 2 * edges[-1])))
    return np.asarray(edges, dtype=np.int64)


@dataclass(frozen=True)
class Calibrator:
    """Log-scale shifts per horizon bucket and quantile level; identity when `offsets` is all zero."""

    levels: tuple[float, ...]
    edges: np.ndarray  # (B+1,) horizon bucket edges in steps
    offsets: FloatArray  # (B, L)
    samples: np.ndarray  # (B,) residuals behind each bucket's shifts

    @classmethod
    def identity(cls, levels: Sequence[float] = CAL_LEVELS) -> Calibrator:
        return cls(tuple(levels), np.array([0, 1]), np.zeros((1, len(levels))), np.zeros(1, dtype=np.int64))

    @classmethod
    def fit(
        cls,
        rf: RollingForecasts,
        windows: np.ndarray,
        step_s: float,
        half_life_s: float = CAL_HALF_LIFE_S,
        shock_sigmas: float = SHOCK_SIGMAS,
    ) -> Calibrator:
        """Shifts from the given windows; a window's weight halves every `half_life_s` of age (weighted,
        non-exchangeable split conformal: recent errors matter more when the series drifts)."""
        edges = bucket_edges(rf.horizon)
        n_b, n_l = edges.size - 1, len(rf.levels)
        act = rf.actual[windows]  # (W, H)
        offsets = np.zeros((n_b, n_l))
        samples = np.zeros(n_b, dtype=np.int64)
        age_s = (
            (rf.origin_idx[windows].max() - rf.origin_idx[windows]) * step_s if windows.size else np.zeros(0)
        )
        w_win = 0.5 ** (age_s / half_life_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            s_all = np.log1p(act)[:, None, :] - np.log1p(rf.q[windows])  # (W, L, H)
        w_all = np.broadcast_to(w_win[:, None], act.shape)

        def finite(block: FloatArray, wts: FloatArray) -> tuple[FloatArray, FloatArray]:
            ok = np.isfinite(block)
            return block[ok], wts[ok]

        for j, lv in enumerate(rf.levels):
            per_bucket = [
                finite(s_all[:, j, edges[b] : edges[b + 1]], w_all[:, edges[b] : edges[b + 1]])
                for b in range(n_b)
            ]
            weight = [float(w.sum()) for _, w in per_bucket]
            # too little weight past the level: take in the next lead times (then the previous ones) until
            # there is enough
            need = TAIL_WEIGHT / max(min(lv, 1.0 - lv), 1e-9)
            for b in range(n_b):
                lo, hi, total = b, b + 1, weight[b]
                while total < need and (lo > 0 or hi < n_b):
                    if hi < n_b:
                        total, hi = total + weight[hi], hi + 1
                    else:
                        lo -= 1
                        total += weight[lo]
                s, w = per_bucket[b]
                if hi - lo > 1:
                    s = np.concatenate([x for x, _ in per_bucket[lo:hi]])
                    w = np.concatenate([x for _, x in per_bucket[lo:hi]])
                if s.size < MIN_BUCKET:  # too few windows for this bucket: use every horizon
                    s = np.concatenate([x for x, _ in per_bucket])
                    w = np.concatenate([x for _, x in per_bucket])
                samples[b] = s.size
                offsets[b, j] = _conformal_shift(s, w, lv) if s.size else 0.0
        recent = age_s <= SHOCK_WINDOW_S
        if int(recent.sum()) >= SHOCK_MIN_WINDOWS:
            _widen_after_shock(offsets, s_all[recent], edges, rf.levels, int(recent.sum()), shock_sigmas)
        return cls(rf.levels, edges, offsets, samples)

    def shift(self, h: int, level: float) -> FloatArray:
        """Offsets for steps 0..h-1 at one level (interpolated across levels, last bucket held)."""
        lo, hi, f = interp_weights(self.levels, level)
        per_bucket = self.offsets[:, lo] * (1 - f) + self.offsets[:, hi] * f
        b_of_step = np.clip(
            np.searchsorted(self.edges, np.arange(h), side="right") - 1, 0, per_bucket.size - 1
        )
        return np.asarray(per_bucket[b_of_step], dtype=np.float64)

    def apply(self, fc: Forecast, levels: Sequence[float]) -> Forecast:
        h = fc.horizon
        out: dict[float, FloatArray] = {}
        prev = np.zeros(h)
        for lv in sorted(levels):
            raw = fc.quantile(lv)
            cal = np.maximum(np.expm1(np.log1p(raw) + self.shift(h, lv)), 0.0)
            cal = np.maximum(cal, prev)  # ordered across levels
            out[lv] = cal
            prev = cal
        return Forecast(
            fc.origin_s, fc.step_s, fc.mean, out, fc.model, fc.notes, p_any=fc.p_any, p_none=fc.p_none
        )

    def apply_rolling(
        self, rf: RollingForecasts, windows: np.ndarray, levels: Sequence[float]
    ) -> dict[float, FloatArray]:
        """Calibrated quantile arrays (W', H) for the given windows of a rolling run."""
        out: dict[float, FloatArray] = {}
        prev = np.zeros((windows.size, rf.horizon))
        q = rf.q[windows]  # (W', L, H)
        for level in sorted(levels):
            lo, hi, f = interp_weights(rf.levels, level)
            raw = q[:, lo, :] * (1 - f) + q[:, hi, :] * f
            cal = np.maximum(np.expm1(np.log1p(raw) + self.shift(rf.horizon, level)[None, :]), 0.0)
            cal = np.maximum(cal, prev)
            out[level] = cal
            prev = cal
        return out


def _widen_after_shock(
    offsets: FloatArray,
    s_recent: FloatArray,
    edges: np.ndarray,
    levels: Sequence[float],
    n_windows: int,
    sigmas: float,
) -> None:
    """For each upper level whose shifted quantile the newest windows exceed far more often than 1 - level
    allows, take the shift from those windows alone (per bucket, pooled when a bucket is thin); in place."""
    for j, lv in enumerate(levels):
        if lv < 0.5:
            continue
        per_step = np.concatenate(
            [s_recent[:, j, edges[b] : edges[b + 1]] - offsets[b, j] for b in range(edges.size - 1)], axis=1
        )
        ok = np.isfinite(per_step)
        if not ok.any():
            continue
        miss = float((per_step[ok] > 0).mean())
        p = 1.0 - lv
        if miss <= p + sigmas * np.sqrt(p * (1 - p) / n_windows):
            continue
        pooled = s_recent[:, j, :][np.isfinite(s_recent[:, j, :])]
        for b in range(edges.size - 1):
            block = s_recent[:, j, edges[b] : edges[b + 1]]
            sb = block[np.isfinite(block)]
            if sb.size < MIN_BUCKET:
                sb = pooled
            offsets[b, j] = max(offsets[b, j], _conformal_shift(sb, np.ones(sb.size), lv))


def _conformal_shift(s: FloatArray, w: FloatArray, level: float) -> float:
    """Weighted conformal quantile: the smallest score whose weighted CDF reaches `level`, counting one
    extra unit-weight point at +inf for upper levels (the finite-sample correction, so that
    P(y <= q + shift) >= level) and at -inf for lower ones (so that it stays <= level)."""
    order = np.argsort(s)
    s, w = s[order], w[order]
    total = w.sum() + 1.0
    if level >= 0.5:
        cdf = np.cumsum(w) / total
    else:
        cdf = (1.0 + np.cumsum(w)) / total
        if level < 1.0 / total:
            return float(s[0])
    k = int(np.searchsorted(cdf, level - 1e-12, side="left"))
    return float(s[min(k, s.size - 1)])


@dataclass
class CandidateScore:
    alias: str
    pinball: float  # cross-fitted, after calibration (the selection criterion)
    pinball_raw: float
    mase: float
    coverage: dict[float, float]  # cross-fitted calibrated coverage per score level
    windows: int
    failures: int
    excluded: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "pinball": _r(self.pinball),
            "pinball_raw": _r(self.pinball_raw),
            "mase": _r(self.mase),
            "coverage": {f"{k:g}": _r(v) for k, v in self.coverage.items()},
            "windows": self.windows,
            "failures": self.failures,
            "excluded": self.excluded,
        }


def _r(x: float) -> float | None:
    return round(x, 5) if np.isfinite(x) else None


@dataclass
class Selection:
    chosen: str
    calibrator: Calibrator
    scores: list[CandidateScore]
    reason: str
    levels: tuple[float, ...] = SCORE_LEVELS
    horizon: int = 0
    members: tuple[str, ...] = ()  # the combined candidates when `chosen` is a combination
    # the candidates whose mean is the point forecast (empty: `members`), chosen on MASE alone
    point_members: tuple[str, ...] = ()

    @property
    def quantile_members(self) -> tuple[str, ...]:
        return self.members or (self.chosen,)

    @property
    def point(self) -> tuple[str, ...]:
        return self.point_members or self.quantile_members

    @property
    def label(self) -> str:
        """What was chosen, as the fitted model is named: the quantiles' choice, and the mean's when other."""
        return f"{self.chosen} (mean: {combo_alias(self.point)})" if self.point_members else self.chosen

    def as_dict(self) -> dict[str, object]:
        return {
            "chosen": self.chosen,
            "members": list(self.quantile_members),
            "point_members": list(self.point),
            "reason": self.reason,
            "horizon_steps": self.horizon,
            "levels": list(self.levels),
            "candidates": [s.as_dict() for s in self.scores],
        }


def score_candidate(
    rf: RollingForecasts, windows: np.ndarray, levels: Sequence[float], step_s: float
) -> CandidateScore:
    ok = rf.ok()[windows]
    fails = int((~ok).sum())
    usable = windows[ok]
    if usable.size < 2 or fails > MAX_FAILURE_SHARE * windows.size:
        return CandidateScore(
            rf.alias,
            np.inf,
            np.inf,
            np.inf,
            {},
            int(windows.size),
            fails,
            excluded=f"failed in {fails} of {windows.size} windows",
        )
    halves = (usable[0::2], usable[1::2])
    pin: list[float] = []
    cov: dict[float, list[float]] = {lv: [] for lv in levels}
    for cal_w, test_w in (halves, halves[::-1]):
        calib = Calibrator.fit(rf, cal_w, step_s)
        qs = calib.apply_rolling(rf, test_w, levels)
        act = rf.actual[test_w]
        pin.append(scaled_pinball(act, qs, rf.scale[test_w]) * test_w.size)
        for lv in levels:
            cov[lv].append(coverage(act, qs[lv]) * test_w.size)
    raw = Calibrator.identity(rf.levels).apply_rolling(rf, usable, levels)
    return CandidateScore(
        alias=rf.alias,
        pinball=float(np.sum(pin) / usable.size),
        pinball_raw=scaled_pinball(rf.actual[usable], raw, rf.scale[usable]),
        mase=mase(rf.actual[usable], rf.mean[usable], rf.scale[usable]),
        coverage={lv: float(np.sum(v) / usable.size) for lv, v in cov.items()},
        windows=int(usable.size),
        failures=fails,
    )


def combine_runs(runs: Sequence[RollingForecasts]) -> RollingForecasts:
    """The equal-weight combination's rolling forecasts (a window fails where any member failed)."""
    first = runs[0]
    failures = {k: v for rf in runs for k, v in rf.failures.items()}
    return RollingForecasts(
        combo_alias([rf.alias for rf in runs]),
        first.origin_idx,
        first.horizon,
        first.levels,
        np.mean([rf.q for rf in runs], axis=0),
        np.mean([rf.mean for rf in runs], axis=0),
        first.actual,
        first.scale,
        failures,
        np.mean([rf.p_any for rf in runs], axis=0),
        np.mean([rf.p_window for rf in runs], axis=0),
    )


def select(
    runs: Sequence[RollingForecasts],
    windows: np.ndarray,
    step_s: float,
    levels: Sequence[float] = SCORE_LEVELS,
) -> Selection:
    """Choose among rolling runs (same origins and horizon) using only `windows` (indices into them): the
    candidate, or combination of the best two or three, with the lowest pinball / best pinball + MASE /
    best MASE (module docstring)."""
    scores = [score_candidate(rf, windows, levels, step_s) for rf in runs]
    finite = [i for i in range(len(scores)) if np.isfinite(scores[i].pinball)]
    if not finite:
        raise ModelError("every candidate model failed in cross-validation")
    ranked = sorted(finite, key=lambda i: (_balance(scores[i], [scores[j] for j in finite]), i))
    # (score, rolling run, members) of every usable candidate, singles first, then the combinations
    pool: list[tuple[CandidateScore, RollingForecasts, tuple[str, ...]]] = [
        (scores[i], runs[i], (runs[i].alias,)) for i in finite
    ]
    for k in COMBINE_TOP:
        if len(ranked) < k:
            break
        combo = combine_runs([runs[i] for i in ranked[:k]])
        sc = score_candidate(combo, windows, levels, step_s)
        scores.append(sc)
        if np.isfinite(sc.pinball):
            pool.append((sc, combo, tuple(runs[i].alias for i in ranked[:k])))
    pool_scores = [sc for sc, _, _ in pool]
    order = sorted(pool, key=lambda c: _balance(c[0], pool_scores))
    chosen, rf, members = order[0]
    point, point_mase = _point_choice(runs, scores, finite, windows, members, chosen.mase)
    calib = Calibrator.fit(rf, windows[rf.ok()[windows]], step_s)
    runner = (
        f"; runner-up {order[1][0].alias} at {_balance(order[1][0], pool_scores):.3f}"
        if len(order) > 1
        else ""
    )
    what = f"the equal-weight combination of {' and '.join(members)}" if len(members) > 1 else chosen.alias
    reason = (
        f"{what} has the best balance of calibrated pinball loss ({chosen.pinball:.4f}, levels "
        f"{', '.join(f'{lv:g}' for lv in levels)}) and point error (MASE {chosen.mase:.3f}), each relative "
        f"to the best candidate on it: {_balance(chosen, pool_scores):.3f} (2 = best on both), over "
        f"{chosen.windows} rolling windows{runner}"
    )
    if point != members:
        reason += (
            f"; its mean (the point forecast) is {combo_alias(point)}'s, whose cross-validated MASE "
            f"{point_mase:.3f} is lower than {chosen.mase:.3f}"
        )
    point_members = point if point != members else ()
    return Selection(chosen.alias, calib, scores, reason, tuple(levels), rf.horizon, members, point_members)


def _point_choice(
    runs: Sequence[RollingForecasts],
    scores: Sequence[CandidateScore],
    finite: Sequence[int],
    windows: np.ndarray,
    members: tuple[str, ...],
    members_mase: float,
) -> tuple[tuple[str, ...], float]:
    """The candidate, or equal-weight combination of the best two or three, whose mean has the lowest
    cross-validated MASE (ties keep `members`, the quantiles' choice). The point forecast is judged by
    point error alone: the quantiles' choice weighs calibrated pinball loss too, which can rightly prefer a
    model with better intervals and worse points (the planner reads the quantiles; the mean is what the API
    and `evaluate` report)."""
    by_mase = sorted((i for i in finite if np.isfinite(scores[i].mase)), key=lambda i: (scores[i].mase, i))
    best: tuple[float, tuple[str, ...]] = (members_mase, members)
    cands: list[tuple[float, tuple[str, ...]]] = [(scores[i].mase, (runs[i].alias,)) for i in by_mase]
    for k in COMBINE_TOP:
        if len(by_mase) >= k:
            combo = combine_runs([runs[i] for i in by_mase[:k]])
            usable = windows[combo.ok()[windows]]
            if usable.size:
                err = mase(combo.actual[usable], combo.mean[usable], combo.scale[usable])
                cands.append((err, tuple(runs[i].alias for i in by_mase[:k])))
    for err, who in cands:
        if np.isfinite(err) and err < best[0] - 1e-12:
            best = (err, who)
    return best[1], best[0]


def _balance(sc: CandidateScore, pool: Sequence[CandidateScore]) -> float:
    """pinball / best pinball + MASE / best MASE over `pool` (pinball alone where MASE is unusable)."""
    best_p = min(c.pinball for c in pool)
    mases = [c.mase for c in pool if np.isfinite(c.mase)]
    best_m = min(mases) if mases else float("nan")
    point = sc.mase / best_m if np.isfinite(sc.mase) and best_m > 0 else 1.0
    return float(sc.pinball / best_p + point) if best_p > 0 else float(sc.pinball + point)


def chosen_run(sel: Selection, by_alias: dict[str, RollingForecasts]) -> RollingForecasts:
    """The rolling forecasts of what `sel` chose (a candidate's, or its members' combination)."""
    if len(sel.members) > 1:
        return combine_runs([by_alias[m] for m in sel.members])
    return by_alias[sel.chosen]


def point_run(sel: Selection, by_alias: dict[str, RollingForecasts]) -> RollingForecasts:
    """The rolling forecasts whose mean is `sel`'s point forecast."""
    point = sel.point
    return combine_runs([by_alias[m] for m in point]) if len(point) > 1 else by_alias[point[0]]


class AutoModel:
    """Choose the best candidate for this series by rolling-origin CV, then forecast with it, calibrated.

    `horizon_s` is the look-ahead the forecasts will be used for (the planner's T_load + tick); CV windows
    are spaced `every_s` (by default `cv_every_s(horizon_s)`) over the last `cv_span_s` of history. With
    too little history for `MIN_WINDOWS` windows it uses the profile model (itself falling back below two
    days), uncalibrated, and says so.
    """

    alias = "auto"

    def __init__(
        self,
        horizon_s: float = 3600.0,
        candidates: Sequence[str] = DEFAULT_CANDIDATES,
        levels: Sequence[float] = SCORE_LEVELS,
        cv_span_s: float = CV_SPAN_S,
        every_s: float | None = None,
        refit_every_s: float = SECONDS_PER_DAY,
        progress: Progress | None = None,
        priors: Sequence[DailyShape] = (),
    ) -> None:
        unknown = [c for c in candidates if c not in MODELS]
        if unknown:
            raise ModelError(f"unknown candidate model(s): {', '.join(unknown)}")
        self.horizon_s = horizon_s
        self.candidates = tuple(candidates)
        self.levels = tuple(levels)
        self.cv_span_s = cv_span_s
        self.every_s = cv_every_s(horizon_s) if every_s is None else every_s
        self.refit_every_s = refit_every_s
        self.progress = progress
        self.priors = tuple(priors)  # daily shapes to borrow while the history is under two days
        self.report = FitReport(self.alias)
        self.selection: Selection | None = None
        self._model: ForecastModel | None = None
        self._calib = Calibrator.identity()
        self._chance: SparseCounts | None = None  # on a sparse history: the chance of any request
        self._ceiling: float | None = None  # on a sparse history: the largest count it holds
        self.cv_cache = RollingCache()

    def carry_from(self, previous: ForecastModel | None) -> Self:
        """Take over the CV windows a previous fit of the same series already forecast (same candidates,
        horizon and spacing), so a daily refit forecasts only the newest day's windows."""
        if (
            isinstance(previous, AutoModel)
            and previous.candidates == self.candidates
            and previous.horizon_s == self.horizon_s
            and previous.every_s == self.every_s
            and previous.refit_every_s == self.refit_every_s
        ):
            self.cv_cache = previous.cv_cache
        return self

    def cv_origins(self, series: TrafficSeries) -> np.ndarray:
        horizon = max(1, round(self.horizon_s / series.step_s))
        # on a grid fixed in time (multiples of every_s), so that tomorrow's windows are today's plus one
        # day's: the ones already forecast come from the CV cache
        last = np.floor((series.end_s - horizon * series.step_s) / self.every_s) * self.every_s
        return origin_grid(
            series, first_s=last - self.cv_span_s, last_s=last, every_s=self.every_s, horizon=horizon
        )

    def candidates_for(self, series: TrafficSeries) -> tuple[str, ...]:
        """The candidates, and the model of sparse traffic where the history is sparse (mostly idle steps):
        on dense traffic it is never the better forecast, and leaving it out keeps their selection as is."""
        if "sparse" in self.candidates or not is_sparse(series):
            return self.candidates
        return (*self.candidates, "sparse")

    def fit(self, series: TrafficSeries) -> Self:
        timer = Timer()
        horizon = max(1, round(self.horizon_s / series.step_s))
        origins = self.cv_origins(series)
        # the first windows need two days of history for any seasonal candidate to be itself
        origins = origins[origins * series.step_s >= 2 * SECONDS_PER_DAY]
        if origins.size < MIN_WINDOWS:
            chosen = "profile"
            self.selection = None
            self._calib = Calibrator.identity()
            note = (
                f"only {origins.size} cross-validation windows fit in the history (need {MIN_WINDOWS}): "
                "using the profile model uncalibrated"
            )
        else:
            runs = [
                rolling_forecasts(
                    MODELS[c],
                    series,
                    origins,
                    horizon,
                    refit_every_s=self.refit_every_s,
                    progress=self.progress,
                    cache=self.cv_cache,
                )
                for c in self.candidates_for(series)
            ]
            self.cv_cache.prune(series.start_s + int(origins[0]) * series.step_s)
            self.selection = select(runs, np.arange(origins.size), series.step_s, self.levels)
            chosen = self.selection.chosen
            self._calib = self.selection.calibrator
            note = self.selection.reason
        sel = self.selection
        members = sel.members if sel else ()
        if sel is not None and sel.point_members:  # the mean from other models than the quantiles
            both = list(dict.fromkeys((*sel.quantile_members, *sel.point_members)))  # each fitted once
            self._model = Combination(
                [MODELS[m] for m in both],
                quantiles=[both.index(m) for m in sel.quantile_members],
                point=[both.index(m) for m in sel.point_members],
            ).fit(series)
        elif len(members) > 1:
            self._model = Combination([MODELS[m] for m in members]).fit(series)
        elif chosen == "profile":  # a short history: the profile borrows a shape where it may
            self._model = SeasonalProfile(self.priors).fit(series)
        else:
            self._model = MODELS[chosen]().fit(series)
        # on a sparse history the chance of any request comes from the model of it, whichever model the
        # quantiles come from: it is what scale to zero and the dropout watch read (a rate model's mean
        # after a burst makes a session's end look like a telemetry dropout)
        sparse = is_sparse(series)
        self._chance, self._ceiling = None, _largest(series) if sparse else None
        if sparse and self._model.alias != "sparse":
            try:
                self._chance = SparseCounts().fit(series)
            except ModelError:
                self._chance = None
        inner = self._model.report
        self.report = FitReport.of(
            self.alias,
            series,
            fit_step_s=inner.fit_step_s,
            seasons_s=inner.seasons_s,
            fallback=inner.fallback,
            notes=[f"chose {chosen}: {note}", *inner.notes],
            fit_seconds=timer.elapsed(),
        )
        return self

    @property
    def chosen(self) -> str:
        return self._model.alias if self._model is not None else ""

    def update(self, series: TrafficSeries) -> Self:
        if self._model is None:
            return self.fit(series)
        self._model = self._model.update(series)
        if self._chance is not None:
            self._chance = self._chance.update(series)
        if self._ceiling is not None:
            self._ceiling = max(self._ceiling, _largest(series))
        return self

    def predict(self, h: int, levels: Sequence[float]) -> Forecast:
        if self._model is None:
            raise ModelError("auto: predict() before fit()")
        want = sorted(set(levels))
        fc = self._model.predict(h, want)
        cal = self._calib.apply(fc, want)
        notes = (*fc.notes, "quantiles split-conformal calibrated" if self.selection else "uncalibrated")
        p_any, p_none = cal.p_any, cal.p_none
        if p_any is None and self._chance is not None:
            p_any, p_none = self._chance.chances(h)
            notes = (*notes, "chance of any request from the sparse model")
        quantiles = {q: cal.quantiles[q] for q in levels}
        if self._ceiling is not None:
            # sparse traffic: the calibration's shift is a ratio (log1p), learnt mostly from sessions that
            # began where a zero was forecast, and applied to a session's own count it multiplied it past
            # anything the model ever saw (a client whose busiest 10 minutes held 124 requests was forecast
            # 8,000 at the 0.975 level, and planned for 16 replicas). A session's size is what the history
            # shows: no quantile above its largest count (a larger one is met by the reactive floor)
            quantiles = {q: np.minimum(v, self._ceiling) for q, v in quantiles.items()}
            notes = (*notes, f"quantiles at most the history's largest count, {self._ceiling:g}")
        return Forecast(
            cal.origin_s,
            cal.step_s,
            cal.mean,
            quantiles,
            self.chosen,
            notes,
            p_any=p_any,
            p_none=p_none,
        )


def _largest(series: TrafficSeries) -> float:
    finite = series.values[np.isfinite(series.values)]
    return float(finite.max()) if finite.size else 0.0


def refit(previous: ForecastModel | None, factory: Callable[[], ForecastModel]) -> ForecastModel:
    """A fresh model for a full fit that carries over what the previous fit of the same series may reuse
    (auto's cross-validation windows); fit it on the new history."""
    model = factory()
    if isinstance(model, AutoModel):
        model.carry_from(previous)
    return model


def full_fit(
    name: str,
    horizon_s: float,
    history: TrafficSeries,
    previous: ForecastModel | None = None,
    priors: Sequence[DailyShape] = (),
) -> ForecastModel:
    """The daily full fit of one model (module-level: a compute worker runs it by name); `previous` is the
    fit it replaces, whose reusable work it carries over; `priors` the daily shapes it may borrow while
    its history is under two days."""
    return refit(previous, make_forecaster(name, horizon_s=horizon_s, priors=priors)).fit(history)


def make_forecaster(
    name: str,
    horizon_s: float,
    progress: Progress | None = None,
    priors: Sequence[DailyShape] = (),
) -> Callable[[], ForecastModel]:
    """A factory for `auto`, `auto-fast` (vectorised candidates only) or a single model alias; `priors`:
    daily shapes that `auto` and `profile` borrow while the history is under two days."""
    if name == "auto":
        return lambda: AutoModel(horizon_s=horizon_s, progress=progress, priors=priors)
    if name == "auto-fast":
        return lambda: AutoModel(
            horizon_s=horizon_s, candidates=FAST_CANDIDATES, progress=progress, priors=priors
        )
    if name == "profile":
        return lambda: SeasonalProfile(priors)
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of: auto, auto-fast, {', '.join(MODELS)}")
    return MODELS[name]
