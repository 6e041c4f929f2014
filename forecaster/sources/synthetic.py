"""A seeded generator of realistic model-serving traffic, for the demo and for tests.

Real traces may not ship with the project, so the embedded default is generated. Each model's request rate is
the product of parts that production traces show (see ../shared/traces/README.md):

- a daily shape (two harmonics: a main peak and a shoulder), peak/trough ratio set per model;
- a weekly shape: two of every seven days (by position, not by calendar name) run at `weekend_factor`;
- level drift: a smooth random walk of the log level (day-to-day totals wander by `drift_per_day`);
- on/off clients: batch-like clients that are active a few hours a day at their own time (with jitter) and
  silent otherwise, adding a square-ish wave on top of the base;
- occasional bursts: Poisson arrivals of spikes that multiply the rate and decay over tens of minutes;
- count noise: gamma-Poisson (negative binomial), over-dispersed like real arrivals;
- sparse models (the long tail): traffic only in sessions, `sessions_per_day` of them on average, each
  starting at a random time within the active hours (`active_hours`, local to UTC) and lasting
  `session_min` minutes on average (exponential), on weekdays only if `weekdays_only`: a nightly batch
  client, a tool used in working hours. Silent otherwise: exactly zero requests.

Everything is drawn from one `numpy.random.Generator` seeded by (seed, model name), so a model's series does
not change when other models are added to the fleet.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from forecaster.sources.base import SourceError
from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries

# 2026-01-05T00:00:00Z. Any fixed instant works: models learn weekly shape from positions, not weekday names.
DEFAULT_START_S = 1_767_571_200.0


@dataclass(frozen=True)
class TrafficShape:
    """The knobs of one synthetic model. Rates are requests per second."""

    name: str
    mean_rps: float
    peak_to_trough: float = 3.0
    peak_hour: float = 20.0
    weekend_factor: float = 0.7
    drift_per_day: float = 0.08
    clients: int = 0
    client_share: float = 0.3
    bursts_per_day: float = 0.3
    burst_multiplier: float = 2.5
    burst_decay_s: float = 1200.0
    dispersion: float = 30.0  # gamma shape of the gamma-Poisson noise: lower is noisier
    sessions_per_day: float = 0.0  # > 0: a sparse model, active only in sessions
    session_min: float = 30.0
    active_hours: tuple[float, float] = (0.0, 24.0)  # [from, to) hour of day (UTC) sessions start in
    weekdays_only: bool = False
    scheduled: bool = False  # True: exactly round(sessions_per_day) sessions a day (a cron job), not Poisson

    @property
    def sparse(self) -> bool:
        """Active only in sessions: a model of the long tail, which may scale to zero between them."""
        return self.sessions_per_day > 0

    def __post_init__(self) -> None:
        if self.mean_rps <= 0:
            raise ValueError(f"{self.name}: mean_rps must be > 0, got {self.mean_rps}")
        if self.peak_to_trough < 1:
            raise ValueError(f"{self.name}: peak_to_trough must be >= 1, got {self.peak_to_trough}")
        if not 0 <= self.client_share < 1:
            raise ValueError(f"{self.name}: client_share must be in [0, 1), got {self.client_share}")
        if self.sessions_per_day < 0 or self.session_min <= 0:
            raise ValueError(f"{self.name}: sessions_per_day must be >= 0 and session_min > 0")
        lo, hi = self.active_hours
        if not 0 <= lo < hi <= 24:
            raise ValueError(
                f"{self.name}: active_hours {self.active_hours} must satisfy 0 <= from < to <= 24"
            )


# the long tail: a batch client that runs once a night, and an assistant used in office hours on weekdays
NIGHTLY_BATCH = TrafficShape(
    "nightly-batch",
    mean_rps=0.01,
    peak_to_trough=1.0,
    bursts_per_day=0.0,
    sessions_per_day=1.0,
    session_min=40.0,
    active_hours=(1.5, 2.5),
    scheduled=True,
)
DOCS_ASSISTANT = TrafficShape(
    "docs-assistant",
    mean_rps=0.02,
    peak_to_trough=1.0,
    bursts_per_day=0.0,
    sessions_per_day=6.0,
    session_min=20.0,
    active_hours=(8.0, 18.0),
    weekdays_only=True,
)

DEMO_FLEET: tuple[TrafficShape, ...] = (
    TrafficShape("chat-large", mean_rps=40.0, peak_to_trough=3.5, peak_hour=20.0, weekend_factor=0.75),
    TrafficShape(
        "code-assist",
        mean_rps=12.0,
        peak_to_trough=6.0,
        peak_hour=14.0,
        weekend_factor=0.35,
        clients=6,
        client_share=0.35,
        bursts_per_day=0.2,
    ),
    TrafficShape(
        "embed-batch",
        mean_rps=25.0,
        peak_to_trough=1.8,
        peak_hour=3.0,
        weekend_factor=1.0,
        clients=4,
        client_share=0.6,
        bursts_per_day=0.6,
        burst_multiplier=3.0,
        dispersion=10.0,
    ),
    TrafficShape(
        "vision-small", mean_rps=5.0, peak_to_trough=2.5, peak_hour=11.0, weekend_factor=0.6, dispersion=8.0
    ),
    NIGHTLY_BATCH,
    DOCS_ASSISTANT,
)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _daily_log_shape(hours: FloatArray, peak_hour: float, peak_to_trough: float) -> FloatArray:
    phase = 2 * np.pi * (hours - peak_hour) / 24.0
    raw = np.cos(phase) + 0.35 * np.cos(2 * phase + 0.8)
    grid = np.linspace(0, 2 * np.pi, 2881)
    g = np.cos(grid) + 0.35 * np.cos(2 * grid + 0.8)
    lo, hi = float(g.min()), float(g.max())
    # scale so that exp(max) / exp(min) == peak_to_trough
    return np.asarray((raw - (hi + lo) / 2) * (np.log(peak_to_trough) / (hi - lo)), dtype=np.float64)


def rate_rps(shape: TrafficShape, start_s: float, n: int, step_s: int, seed: int) -> FloatArray:
    """The expected request rate (requests per second) at each step; the noise-free part of the traffic."""
    rng = _rng(seed, shape.name)
    t = start_s + step_s * np.arange(n, dtype=np.float64)
    rel_days = (t - start_s) / SECONDS_PER_DAY
    hours = (t % SECONDS_PER_DAY) / 3600.0
    log_rate = _daily_log_shape(hours, shape.peak_hour, shape.peak_to_trough)

    # weekly: days 5 and 6 of each 7 (counted from the epoch, so the pattern is stable across windows)
    day_of_week = np.floor(t / SECONDS_PER_DAY) % 7
    smooth = 0.5 * (1 - np.cos(2 * np.pi * np.clip(hours / 24.0, 0, 1)))  # no hard edge at midnight
    weekend = (day_of_week >= 5).astype(np.float64)
    log_rate = log_rate + np.log(shape.weekend_factor) * weekend * (0.6 + 0.4 * smooth)

    # level drift: a random walk sampled once a day, interpolated
    n_days = int(np.ceil(rel_days[-1] if n else 0)) + 2
    walk = np.cumsum(rng.normal(0.0, shape.drift_per_day, n_days))
    walk -= walk.mean()
    log_rate = log_rate + np.interp(rel_days, np.arange(n_days, dtype=np.float64), walk)

    base = (1 - shape.client_share) * np.exp(log_rate)
    rate = base
    if shape.clients:
        per_client = shape.client_share / shape.clients
        total_on = np.zeros(n)
        for _ in range(shape.clients):
            start_h = rng.uniform(0, 24)
            dur_h = rng.uniform(2, 8)
            jitter = rng.normal(0, 0.5, n_days)  # hours, per day
            day_idx = np.floor(rel_days).astype(int)
            s = (hours - start_h - jitter[day_idx]) % 24.0
            on = (s < dur_h).astype(np.float64)
            skip = rng.random(n_days) < 0.1  # some days the client does not run
            on[skip[day_idx]] = 0.0
            total_on += on * (24.0 / dur_h) * per_client * np.exp(walk[day_idx] * 0.5)
        rate = rate + total_on * np.exp(np.log(shape.weekend_factor) * weekend * 0.5)

    if shape.bursts_per_day > 0 and n:
        k = rng.poisson(shape.bursts_per_day * max(rel_days[-1], 1.0 / 24))
        if k:
            at = rng.uniform(start_s, t[-1], k)
            size = rng.uniform(0.5, 1.0, k) * (shape.burst_multiplier - 1)
            mult = np.ones(n)
            for a, sz in zip(at, size, strict=True):
                dt = t - a
                mult += np.where(dt >= 0, sz * np.exp(-np.maximum(dt, 0) / shape.burst_decay_s), 0.0)
            rate = rate * mult

    if shape.sessions_per_day > 0 and n:
        rate = rate * _sessions(shape, rng, t, start_s, n_days)

    # normalise to the requested mean before noise
    return np.asarray(rate * (shape.mean_rps / float(np.mean(rate))), dtype=np.float64)


def _sessions(
    shape: TrafficShape, rng: np.random.Generator, t: FloatArray, start_s: float, n_days: int
) -> FloatArray:
    """1 inside a session, 0 outside: each day's sessions start uniformly in the active hours."""
    on = np.zeros(t.size)
    lo, hi = shape.active_hours
    first_day = np.floor(start_s / SECONDS_PER_DAY) * SECONDS_PER_DAY
    for d in range(n_days):
        day0 = first_day + d * SECONDS_PER_DAY
        if shape.weekdays_only and (day0 // SECONDS_PER_DAY) % 7 >= 5:
            continue
        count = round(shape.sessions_per_day) if shape.scheduled else rng.poisson(shape.sessions_per_day)
        for _ in range(count):
            begin = day0 + rng.uniform(lo, hi) * 3600.0
            length = rng.exponential(shape.session_min * 60.0)
            on[(t >= begin) & (t < begin + length)] = 1.0
    return on


def synthetic_fleet(models: int) -> tuple[TrafficShape, ...]:
    """`models` shapes for scale tests: the demo fleet's shapes in turn, each copy named `<shape>-<i>` (so
    its noise and events differ), its mean rate and peak hour moved a little so that peaks do not all
    coincide."""
    if models < 1:
        raise ValueError(f"models={models} must be >= 1")
    out = []
    for i in range(models):
        base = DEMO_FLEET[i % len(DEMO_FLEET)]
        k = i // len(DEMO_FLEET)
        out.append(
            replace(
                base,
                name=f"{base.name}-{i:04d}",
                mean_rps=base.mean_rps * (0.5 + (k * 0.618034) % 1.0),
                peak_hour=(base.peak_hour + (k * 0.381966 % 1.0) * 4.0 - 2.0) % 24.0,
            )
        )
    return tuple(out)


def generate(
    shape: TrafficShape,
    *,
    days: float = 21.0,
    step_s: int = 60,
    start_s: float = DEFAULT_START_S,
    seed: int = 0,
) -> TrafficSeries:
    """One model's counts per step, with gamma-Poisson noise around `rate_rps`."""
    if step_s <= 0 or days <= 0:
        raise ValueError(f"days and step_s must be positive, got days={days}, step_s={step_s}")
    n = round(days * SECONDS_PER_DAY / step_s)
    lam = rate_rps(shape, start_s, n, step_s, seed) * step_s
    rng = _rng(seed + 1, shape.name)
    mixed = rng.gamma(shape.dispersion, lam / shape.dispersion)
    counts = rng.poisson(mixed).astype(np.float64)
    return TrafficSeries(name=shape.name, start_s=start_s, step_s=step_s, values=counts)


class SyntheticSource:
    """The embedded default fleet as a TrafficSource."""

    def __init__(
        self,
        shapes: tuple[TrafficShape, ...] = DEMO_FLEET,
        *,
        days: float = 21.0,
        step_s: int = 60,
        start_s: float = DEFAULT_START_S,
        seed: int = 0,
    ) -> None:
        self._shapes = {s.name: s for s in shapes}
        self._kw = {"days": days, "step_s": step_s, "start_s": start_s, "seed": seed}
        self._cache: dict[str, TrafficSeries] = {}

    def names(self) -> list[str]:
        return sorted(self._shapes)

    def load(self, name: str) -> TrafficSeries:
        if name not in self._shapes:
            raise SourceError(f"synthetic fleet has no model {name!r}; it has: {', '.join(self.names())}")
        if name not in self._cache:
            kw = self._kw
            self._cache[name] = generate(
                self._shapes[name],
                days=float(kw["days"]),
                step_s=int(kw["step_s"]),
                start_s=float(kw["start_s"]),
                seed=int(kw["seed"]),
            )
        return self._cache[name]
