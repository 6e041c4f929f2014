"""The policies a backtest compares: what teams run today, prewarm itself, and the oracle lower bound.

- reactive: an HPA / Ray Serve autoscaler: target utilisation on the observed arrival rate, scale-up
  at once, scale-down only to the highest recommendation of the last 5 minutes; pays T_load on every rise.
- static-K: the textbook warm pool: K spare replicas above what reactive asks for.
- scheduled: hand-written cron: per hour-of-week, replicas for the trailing history's peak of that hour
  (hour-of-day until a week of history exists), refreshed daily, shifted T_load early as a careful team
  would; reactive on top.
- predictive: prewarm: the forecaster and the planner, refit daily on the trailing 14 days, re-anchored on new
  data as it arrives, exactly the calls the live service makes.
- oracle: knows the future arrivals and asks exactly T_load ahead for what they need; the cost lower bound.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from backtest.simulator import Observation, by_tick
from forecaster.dropouts import DropoutWatch
from forecaster.models import ModelError
from forecaster.models.base import ForecastModel
from forecaster.selection import make_forecaster, refit
from forecaster.types import SECONDS_PER_DAY, FloatArray, Forecast, TrafficSeries
from planner import Decision, PlannerSpec, PlannerState, Reason, Snapshot, plan
from planner.stages import observed_need

History = Callable[[float], TrafficSeries]  # epoch seconds -> everything observed before it


def _clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def observed_rps(obs: Observation, window_s: float) -> float:
    """The arrival rate over the trailing `window_s` (at most since the start), as a live controller reads
    it from its metrics: the planner's reactive window (planner/spec.py)."""
    window = min(float(obs.elapsed_s), window_s)
    return obs.arrived(window) / window if window > 0 else obs.observed_rps


class Reactive:
    """The reactive autoscaler a team runs today (HPA / Ray Serve): replicas for the observed rate and
    queue at a target utilisation, read exactly as the planner's reactive floor reads them (same window,
    same queue term), scale-down only to the highest recommendation of the stabilisation window; with
    `spare` K, a warm pool of K replicas on top. It is the planner at an operating point that ignores the
    forecast, written out for speed: tests hold the two equal."""

    def __init__(
        self,
        capacity_rps: float,
        *,
        target_utilization: float = 0.8,
        scale_down_stabilization_s: float = 300.0,
        t_load_s: float = 300.0,
        tick_s: float = 30.0,
        min_replicas: int = 1,
        max_replicas: int = 10_000,
        spare: int = 0,
        name: str | None = None,
    ) -> None:
        self.name = name or ("reactive" if spare == 0 else f"static-{spare}")
        self.spec = PlannerSpec(
            capacity_rps_per_replica=capacity_rps,
            t_load_s=t_load_s,
            tick_s=tick_s,
            target_utilization=target_utilization,
            scale_down_stabilization_s=scale_down_stabilization_s,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            use_forecast=False,
            burst_reserve_replicas=spare,
        )
        self._recs: deque[tuple[float, int]] = deque()
        self._window_s = self.spec.reactive_window_s

    def recommendation(self, obs: Observation) -> int:
        rps = observed_rps(obs, self._window_s)
        # reactive_floor of this observation, its count without the Snapshot and sentence it would build at
        # every tick of every setting: read at the tick it is made, the rate is fresh (a spec's
        # max_observation_age_s is > 0), so None only where it is not a valid rate
        valid = math.isfinite(rps) and rps >= 0
        rec = observed_need(rps, obs.queue_length, self.spec) if valid else 0
        self._recs.append((obs.now_s, rec))
        while self._recs and self._recs[0][0] <= obs.now_s - self.spec.scale_down_stabilization_s - 1e-9:
            self._recs.popleft()
        current = obs.asked - self.spec.burst_reserve_replicas
        if rec < current:
            rec = min(current, max(n for _, n in self._recs))
        return rec

    def decide(self, obs: Observation) -> int:
        spec = self.spec
        return _clamp(
            self.recommendation(obs) + spec.burst_reserve_replicas, spec.min_replicas, spec.max_replicas
        )


class Scheduled:
    name = "scheduled"

    def __init__(
        self,
        capacity_rps: float,
        history: History,
        *,
        t_load_s: float,
        target_utilization: float = 0.8,
        min_replicas: int = 1,
        max_replicas: int = 10_000,
        trailing_s: float = 14 * SECONDS_PER_DAY,
    ) -> None:
        self.history = history
        self.per_replica = capacity_rps * target_utilization
        self.t_load_s = t_load_s
        self.trailing_s = trailing_s
        self.lo, self.hi = min_replicas, max_replicas
        self.reactive = Reactive(
            capacity_rps, target_utilization=target_utilization, t_load_s=t_load_s, min_replicas=0
        )
        self._table: dict[int, int] = {}
        self._weekly = False
        self._built_at = -math.inf

    def _build(self, now_s: float) -> None:
        h = self.history(now_s).tail(self.trailing_s)
        rate = np.where(np.isfinite(h.values), h.values, 0.0) / h.step_s
        hours = np.floor(h.times_s() / 3600).astype(np.int64)
        self._weekly = h.span_s >= 7 * SECONDS_PER_DAY
        slots = hours % (168 if self._weekly else 24)
        peak = np.zeros(168 if self._weekly else 24)
        np.maximum.at(peak, slots, rate)
        self._table = {int(s): math.ceil(p / self.per_replica - 1e-9) for s, p in enumerate(peak)}
        self._built_at = now_s

    def decide(self, obs: Observation) -> int:
        if obs.now_s - self._built_at >= SECONDS_PER_DAY:
            self._build(obs.now_s)
        hour = int((obs.now_s + self.t_load_s) // 3600)
        floor = self._table.get(hour % (168 if self._weekly else 24), 0)
        return _clamp(max(floor, self.reactive.recommendation(obs)), self.lo, self.hi)


class ForecastFeed:
    """The forecasts a predictive policy sees, tick by tick: refit daily on the trailing history, re-anchored
    every `refresh_s` on the data that has arrived, and the dropout watch's verdict on the newest data:
    exactly the calls the live service makes. One feed serves any number of planner candidates (forecast
    once, plan many): it predicts every level they use in one call and keeps each refresh, so a candidate
    simulated after the first reads the same forecasts at the same ticks without refitting."""

    def __init__(
        self,
        history: History,
        *,
        levels: tuple[float, ...],
        lookahead_s: float,
        break_even_s: float,
        model: str = "auto-fast",
        refit_every_s: float = SECONDS_PER_DAY,
        trailing_s: float = 14 * SECONDS_PER_DAY,
        refresh_s: float = 300.0,
        dropouts: DropoutWatch | None = None,
    ) -> None:
        self.history = history
        self.levels = tuple(sorted(set(levels)))
        self.lookahead_s, self.break_even_s = lookahead_s, break_even_s
        self.factory = make_forecaster(model, horizon_s=lookahead_s)
        self.refit_every_s = refit_every_s
        self.trailing_s = trailing_s
        self.refresh_s = refresh_s
        self.dropouts = dropouts or DropoutWatch()
        self.models: Counter[str] = Counter()
        self._model: ForecastModel | None = None
        self._fitted_at = -math.inf
        self._forecast: Forecast | None = None
        self._forecast_at = -math.inf
        self._dropout_note = ""
        self._recheck_at_s = -math.inf
        self._seen_s = -math.inf
        self._times: list[float] = []  # when the (forecast, dropout note) below took effect
        self._states: list[tuple[Forecast | None, str]] = []

    def _refresh(self, now_s: float) -> None:
        hist = self.history(now_s).tail(self.trailing_s)
        self.dropouts.check(hist, self._forecast)  # judged by the forecast made before the zeros came
        hist = self.dropouts.clean(hist)
        if len(hist) < 2:
            return
        try:
            if self._model is None or now_s - self._fitted_at >= self.refit_every_s:
                self._model = refit(self._model, self.factory).fit(hist)
                self._fitted_at = now_s
            else:
                self._model = self._model.update(hist)
            span = (now_s - hist.end_s) + self.lookahead_s + self.break_even_s + self.refresh_s
            h = max(1, math.ceil(span / hist.step_s) + 1)
            self._forecast = self._model.predict(h, self.levels)
            self.models[self._forecast.model] += 1
        except ModelError:
            self._model, self._forecast = None, None  # the planner falls back and says why
        self._forecast_at = now_s

    def _advance(self, now_s: float) -> None:
        changed = False
        if now_s - self._forecast_at >= self.refresh_s:
            self._refresh(now_s)
            changed = True
        if now_s >= self._recheck_at_s:  # the history only changes when a step completes
            recent = self.history(now_s).tail(self.dropouts.max_s + self.lookahead_s)
            dropout = self.dropouts.check(recent, self._forecast)
            self._dropout_note = dropout.describe(recent.step_s) if dropout else ""
            self._recheck_at_s = recent.end_s + recent.step_s if len(recent) else now_s
            changed = True
        if changed:
            self._times.append(now_s)
            self._states.append((self._forecast, self._dropout_note))

    def at(self, now_s: float) -> tuple[Forecast | None, str]:
        """The newest forecast and dropout note as of `now_s`. Calls past the newest computed time advance
        the feed; earlier ones (a later candidate replaying the same ticks) read what was kept."""
        if now_s > self._seen_s:
            self._advance(now_s)
            self._seen_s = now_s
        i = bisect.bisect_right(self._times, now_s) - 1
        return self._states[i] if i >= 0 else (None, "")


class Predictive:
    """prewarm: the planner on the feed's forecasts at one operating point (the spec's alpha, burst
    reserve and whether it uses the forecast at all)."""

    def __init__(
        self,
        spec: PlannerSpec,
        history: History,
        *,
        model: str = "auto-fast",
        refit_every_s: float = SECONDS_PER_DAY,
        trailing_s: float = 14 * SECONDS_PER_DAY,
        refresh_s: float = 300.0,
        dropouts: DropoutWatch | None = None,
        name: str = "predictive",
        feed: ForecastFeed | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.feed = feed or ForecastFeed(
            history,
            levels=(spec.quantile,),
            lookahead_s=spec.lookahead_s,
            break_even_s=spec.break_even_s,
            model=model,
            refit_every_s=refit_every_s,
            trailing_s=trailing_s,
            refresh_s=refresh_s,
            dropouts=dropouts,
        )
        self.state = PlannerState()
        self.reasons: Counter[str] = Counter()
        self.last: tuple[Decision, Snapshot] | None = None

    @property
    def models(self) -> Counter[str]:
        return self.feed.models

    def decide(self, obs: Observation) -> int:
        forecast, dropout_note = self.feed.at(obs.now_s)
        snap = Snapshot(
            current_replicas=obs.asked,
            ready_replicas=obs.ready,
            forecast=forecast,
            data_dropout=dropout_note,
            observed_rps=observed_rps(obs, self.spec.reactive_window_s),
            observed_at_s=obs.now_s,
            queue_length=obs.queue_length,
        )
        decision, self.state = plan(snap, self.spec, self.state, obs.now_s)
        self.reasons[str(decision.reason)] += 1
        self.last = (decision, snap)  # what the fleet backtest's fleet stage reads
        return decision.desired_replicas

    def share(self, reason: Reason) -> float:
        total = sum(self.reasons.values())
        return self.reasons[str(reason)] / total if total else 0.0


class Oracle:
    """Asks at each tick for the most replicas the true arrivals need over [now, now + T_load + tick): at 1
    request/s per replica or more, arrivals smoothed over the SLO's wait (a request may wait that long at no
    cost) over capacity; below that, the requests in service if none waited (each holds a replica for
    1/capacity seconds). `headroom` scales that need (the oracle's one knob in tuning: below 1 it trades
    late requests for replica-hours, so the room left below any policy is measured at equal lateness)."""

    def __init__(
        self,
        arrivals: FloatArray,
        capacity_rps: float,
        *,
        t_load_s: float,
        tick_s: int,
        slo_wait_s: float,
        min_replicas: int = 1,
        max_replicas: int = 10_000,
        headroom: float = 1.0,
        name: str = "oracle",
    ) -> None:
        self.name = name
        if capacity_rps < 1.0:
            # server regime (the simulator's too): a request holds a replica for 1/capacity seconds, so with
            # no request waiting the busy replicas at t are the arrivals of the last 1/capacity seconds
            hold = max(1, round(1.0 / capacity_rps))
            total = np.cumsum(arrivals)
            moving = total - np.concatenate([np.zeros(min(hold, total.size)), total[:-hold]])
            need = np.ceil(moving - 1e-9)
        else:
            w = max(1, int(slo_wait_s) + 1)
            smooth = np.convolve(arrivals, np.ones(w) / w, mode="full")[: arrivals.size]
            need = np.ceil(smooth / capacity_rps - 1e-9)
        if headroom != 1.0:  # its knob: below 1, fewer than it knows are needed (the cost of being late)
            need = np.ceil(need * headroom - 1e-9)
        per_tick = by_tick(need, tick_s).max(axis=1)
        n_ticks = per_tick.size
        span = math.ceil((t_load_s + tick_s) / tick_s)
        ahead = np.array([per_tick[k : k + span].max() for k in range(n_ticks)]) if n_ticks else per_tick
        self._plan = [_clamp(int(x), min_replicas, max_replicas) for x in ahead]
        self._tick_s = tick_s

    def decide(self, obs: Observation) -> int:
        k = min(len(self._plan) - 1, obs.elapsed_s // self._tick_s)
        return self._plan[k]
