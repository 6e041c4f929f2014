"""`prewarm export-openmetrics`: a trace as an OpenMetrics counter, to backfill a Prometheus with it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from forecaster.sources.openmetrics import write_openmetrics
from forecaster.sources.trace import read_trace
from service.cli.common import guarded, split_series


@guarded()
def export_openmetrics(
    trace: Annotated[Path, typer.Argument(help="CSV or CSV.gz trace.")],
    series: Annotated[
        list[str] | None, typer.Option("--series", "-s", help="Series to export (default: all).")
    ] = None,
) -> None:
    """Write a trace as the OpenMetrics counter prewarm_requests_total{model=...} on stdout, for
    `promtool tsdb create-blocks-from openmetrics`."""
    names = split_series(series)
    source = read_trace(trace, only=set(names) if names else None)
    write_openmetrics([source.load(n) for n in (names or source.names())], sys.stdout)
