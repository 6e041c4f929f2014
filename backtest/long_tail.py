"""Which models are the long tail: a rule, so that a sparse set is never picked by hand.

A model is in the long tail when one warm replica is most of what it ever needs and it is often idle: its
busiest trace interval needs at most `MAX_REPLICAS` replicas at the capacity and target utilisation given,
it sees under half a request in at least `IDLE_SHARE` of its intervals, and it sees at least one request a
day (a model that sees none is not served at all). A series too short to be walked forward (warm-up, tune
window and one scored day) is left out with the rest, and the note says how many of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forecaster.types import SECONDS_PER_DAY, TrafficSeries

MAX_REPLICAS = 2
IDLE_SHARE = 0.25
IDLE_BELOW = 0.5  # requests in an interval that count as idle
MIN_PER_DAY = 1.0


def in_long_tail(s: TrafficSeries, capacity_rps: float, utilization: float) -> bool:
    v = np.where(np.isfinite(s.values), s.values, 0.0)
    if not v.size or s.span_s <= 0:
        return False
    peak_rps = float(v.max()) / s.step_s
    per_day = float(v.sum()) / (s.span_s / SECONDS_PER_DAY)
    return (
        peak_rps <= MAX_REPLICAS * capacity_rps * utilization
        and float(np.mean(v < IDLE_BELOW)) >= IDLE_SHARE
        and per_day >= MIN_PER_DAY
    )


def long_tail(
    series: Sequence[TrafficSeries], capacity_rps: float, utilization: float, min_span_s: float
) -> tuple[list[TrafficSeries], str]:
    """The series in the long tail and at least `min_span_s` long, and a note on what was left out."""
    short = [s for s in series if s.span_s < min_span_s]
    long = [s for s in series if s.span_s >= min_span_s]
    chosen = [s for s in long if in_long_tail(s, capacity_rps, utilization)]
    note = (
        f"long tail: {len(chosen)} of {len(series)} series (busiest interval within {MAX_REPLICAS} replicas "
        f"at {capacity_rps:g} req/s and {utilization:.0%} utilisation, idle in {IDLE_SHARE:.0%}+ of "
        f"intervals, {MIN_PER_DAY:g}+ request a day); {len(short)} shorter than "
        f"{min_span_s / SECONDS_PER_DAY:g} days left out"
    )
    return chosen, note
