"""What every command shares: its consoles, how a user's mistake ends (one line on stderr, exit status 2),
parsing of times, durations and lists, the progress bar, and the compute backend a command fans out on."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from functools import wraps
from typing import Any, NoReturn, ParamSpec

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from compute.base import Compute
from forecaster.durations import parse_duration_s
from forecaster.models import ModelError
from forecaster.sources.base import SourceError
from forecaster.types import quantile_key, to_datetime, validate_quantile_levels

# piped into a file or a log (the nightly job, `| tee`), Rich would fit every table to 80 columns and cut the
# numbers short ("1,254,81…"); COLUMNS, when set, still decides
PIPED_WIDTH = 240
err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)

DEMO_HELP = "Use the built-in synthetic fleet (the default when no TRACE is given)."
_ZERO = re.compile(r"0+(\.0*)?[smhdw]?")
P = ParamSpec("P")


class UsageError(Exception):
    pass


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def guard(fn: Callable[[], None], *also: type[Exception]) -> None:
    """Run a command's body: a mistake the user can make (and the errors in `also`) ends in one line and
    exit status 2, never a traceback. Anything else is a bug, and its traceback is what a report needs."""
    mistakes: tuple[type[Exception], ...] = (SourceError, ModelError, UsageError, ValueError, *also)
    try:
        fn()
    except mistakes as exc:
        fail(str(exc))


def guarded(*also: type[Exception]) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """A command run under `guard`. The signature typer reads (flags, types, help) is the command's own:
    `wraps` keeps it, and typing.get_type_hints follows __wrapped__ to the command's module."""

    def decorate(command: Callable[P, None]) -> Callable[P, None]:
        @wraps(command)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            guard(lambda: command(*args, **kwargs), *also)

        return run

    return decorate


def duration_s(text: str, what: str, *, zero: bool = False) -> float:
    """A duration flag in seconds; with `zero`, 0 (with or without a unit) is allowed too: a warm-up of
    nothing replays a trace from its start."""
    if zero and _ZERO.fullmatch(text.strip().lower()):
        return 0.0
    return parse_duration_s(text, what=what)


def split_series(series: list[str] | None) -> list[str] | None:
    """--series given repeatedly, comma-separated, or both."""
    if not series:
        return None
    return [s.strip() for item in series for s in item.split(",") if s.strip()]


def parse_levels(text: str) -> tuple[float, ...]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(
            f"--quantiles {text!r}: expected comma-separated numbers such as 0.5,0.9,0.99"
        ) from None
    try:
        return validate_quantile_levels(values)
    except ValueError as exc:
        raise UsageError(f"--quantiles: {exc}") from None


def parse_at(text: str) -> float:
    """An ISO-8601 time flag as epoch seconds; without a zone it is UTC."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r} is not an ISO-8601 time such as 2024-05-01T12:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso(epoch_s: float) -> str:
    return to_datetime(epoch_s).strftime("%Y-%m-%dT%H:%M:%SZ")


def qcol(q: float) -> str:
    """A quantile's column heading."""
    return f"q{quantile_key(q)}"


def notes_of(report: dict[str, Any]) -> list[str]:
    notes = report.get("notes", [])
    return [str(n) for n in notes] if isinstance(notes, list) else []


def shows_progress(as_json: bool) -> bool:
    """A progress bar only for a person watching a terminal: never into a pipe, a file or JSON."""
    return sys.stderr.isatty() and not as_json


@contextmanager
def progress(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for work that takes more than a moment (hidden when not a terminal)."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def progress_bar(label: str, enabled: bool) -> Callable[[int], AbstractContextManager[Callable[[int], None]]]:
    """`progress` for a package function that knows its own total (backtest.batch's ProgressBar)."""
    return lambda total: progress(label, total, enabled)


@contextmanager
def compute_for(
    backend: str | None, workers: int | None, ray_address: str | None
) -> Iterator[Compute | None]:
    """The compute backend the flags ask for, closed afterwards; None when they ask for one worker in this
    process (the default: deterministic, with a progress bar)."""
    if (workers or 1) <= 1 and backend != "ray" and ray_address is None:
        yield None
        return
    from service.compose import build_compute

    if ray_address is not None and backend not in (None, "ray"):
        raise UsageError(f"--ray-address needs --backend ray, not {backend!r}")
    kind = "ray" if ray_address is not None else backend or "local"
    if kind not in ("local", "ray"):
        raise UsageError(f"--backend {backend!r}: expected local or ray")
    compute = build_compute(kind, workers=workers, ray_address=ray_address)
    try:
        yield compute
    finally:
        compute.close()
