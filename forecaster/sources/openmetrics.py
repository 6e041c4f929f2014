"""Traces as OpenMetrics, so that `promtool tsdb create-blocks-from openmetrics` can backfill a Prometheus.

Each series becomes the counter `prewarm_requests_total{model="<series>"}`: one sample at the end of every
trace interval holding the cumulative count so far, plus a 0 at the start of the first interval (the counter
is created there), so `rate(prewarm_requests_total[<step>])` at the end of an interval gives exactly that
interval's count / step. Timestamps are whole seconds: promtool reads fractional values as seconds too, but
Prometheus 2.x silently puts millisecond-looking timestamps in the far future. NaN gaps write no sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TextIO

import numpy as np

from forecaster.types import TrafficSeries

METRIC = "prewarm_requests"


def label_value(text: str) -> str:
    """Escape a label value for the exposition format (backslash, quote, newline)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_openmetrics(series: Iterable[TrafficSeries], out: TextIO) -> int:
    """Write every series as one counter; returns the number of samples written."""
    out.write(f"# HELP {METRIC} Requests that arrived, replayed from a prewarm trace.\n")
    out.write(f"# TYPE {METRIC} counter\n")
    written = 0
    for s in series:
        if s.step_s != int(s.step_s) or s.start_s != math.floor(s.start_s):
            raise ValueError(f"series {s.name!r}: OpenMetrics export needs whole-second times and steps")
        labels = f'{{model="{label_value(s.name)}"}}'
        ends = (s.start_s + s.step_s * np.arange(1, len(s) + 1)).astype(np.int64)
        finite = np.isfinite(s.values)
        totals = np.cumsum(np.where(finite, s.values, 0.0))
        lines = [f"{METRIC}_total{labels} 0 {int(s.start_s)}\n"]
        lines.extend(
            f"{METRIC}_total{labels} {total:.15g} {t}\n"
            for t, total, ok in zip(ends.tolist(), totals.tolist(), finite.tolist(), strict=True)
            if ok
        )
        out.writelines(lines)
        written += len(lines)
    out.write("# EOF\n")
    return written
