"""`prewarm demo-trace`: the built-in synthetic fleet written as a trace file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forecaster.durations import parse_duration_s
from forecaster.sources.synthetic import SyntheticSource
from forecaster.sources.trace import write_trace
from service.cli.common import UsageError, guarded, out


@guarded()
def demo_trace(
    path: Annotated[Path, typer.Argument(help="Where to write the trace (.csv or .csv.gz).")],
    days: Annotated[float, typer.Option(min=0.01, max=365.0, help="Days of traffic.")] = 21.0,
    step: Annotated[str, typer.Option(help="Step, e.g. 1m.")] = "1m",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the built-in synthetic fleet as a trace file."""
    step_s = parse_duration_s(step, what="--step")
    if step_s != int(step_s) or not 1 <= step_s <= 3600:
        raise UsageError(f"--step {step!r}: expected whole seconds from 1s to 1h")
    src = SyntheticSource(days=days, step_s=int(step_s), seed=seed)
    write_trace(path, [src.load(n) for n in src.names()])
    out.print(f"wrote {len(src.names())} series x {days:g} days to {path}", highlight=False)
