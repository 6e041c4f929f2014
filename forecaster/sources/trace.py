"""CSV / CSV.gz request traces: `timestamp,series,requests`, one row per series and interval.

Rules (the project's common trace format):
- ISO-8601 timestamps, UTC when no offset is given; the start of the interval.
- `requests` is a non-negative number (fractions and exponents such as `1.084e+04` are valid).
- The step is inferred per series: the smallest gap between its timestamps, a whole number of seconds from
  1 s to 1 h; every other gap must be a multiple of it. An interval with no row means zero requests.
- Rows may come in any order; a repeated (timestamp, series) pair is an error.
Every problem is reported as a TraceError naming the file, the line, the column and what was expected.

Parsing is vectorised with pandas (a 650,000-row file loads in about a second); the validation finds the
first offending row of each kind so that the message can point at it.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.sources.base import SourceError
from forecaster.types import TrafficSeries

COLUMNS = ("timestamp", "series", "requests")
MIN_STEP_S = 1
MAX_STEP_S = 3600


class TraceError(SourceError):
    def __init__(self, path: str, message: str, line: int | None = None, column: str | None = None) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += (
                f", column {COLUMNS.index(column) + 1} ({column})" if column in COLUMNS else f", {column}"
            )
        super().__init__(f"{where}: {message}")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TraceError(str(path), f"corrupt gzip data ({exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceError(str(path), f"not UTF-8 text (byte {exc.start}); expected a CSV file") from exc


def _check_header(path: str, text: str) -> None:
    first = text.split("\n", 1)[0].strip("\r")
    if not first.strip():
        raise TraceError(path, "empty file; expected the header `timestamp,series,requests`", line=1)
    header = [h.strip() for h in next(csv.reader([first]))]
    if header != list(COLUMNS):
        raise TraceError(
            path, f"header is {','.join(header)!r}; expected exactly 'timestamp,series,requests'", 1
        )


def _first_bad_line(mask: np.ndarray, lines: np.ndarray) -> int:
    return int(lines[np.flatnonzero(mask)[0]])


@dataclass(frozen=True)
class TraceFile:
    """A parsed trace: every series in the file, each on its own inferred grid."""

    path: str
    series: dict[str, TrafficSeries]

    def names(self) -> list[str]:
        return sorted(self.series)

    def load(self, name: str) -> TrafficSeries:
        try:
            return self.series[name]
        except KeyError:
            names = self.names()
            shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
            raise SourceError(f"{self.path}: no series {name!r}; the file has: {shown}") from None


def read_trace(path: str | Path, only: set[str] | None = None) -> TraceFile:
    """Parse a trace file. `only` keeps just those series (all rows are still validated)."""
    p = Path(path)
    name = str(p)
    if not p.is_file():
        raise TraceError(name, "no such file")
    text = _read_text(p)
    _check_header(name, text)
    try:
        df = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True, engine="c"
        )
    except pd.errors.ParserError as exc:
        # pandas says e.g. "Error tokenizing data. C error: Expected 3 fields in line 7, saw 4"
        raise TraceError(
            name, f"malformed CSV row: {str(exc).split('error: ')[-1]}; expected 3 fields"
        ) from exc
    if df.empty:
        raise TraceError(name, "no data rows after the header; expected at least two rows per series", 2)
    lines = np.arange(2, len(df) + 2)

    series_col = df["series"].str.strip()
    bad = (series_col == "").to_numpy()
    if bad.any():
        raise TraceError(name, "empty series name", _first_bad_line(bad, lines), "series")

    ts = pd.to_datetime(df["timestamp"].str.strip(), utc=True, format="ISO8601", errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        line = _first_bad_line(bad, lines)
        raise TraceError(
            name,
            f"unparseable timestamp {df['timestamp'].iloc[line - 2]!r}; expected ISO-8601 such as "
            "2024-05-01T12:00:00Z",
            line,
            "timestamp",
        )
    counts = pd.to_numeric(df["requests"].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(counts)
    if bad.any():
        line = _first_bad_line(bad, lines)
        raise TraceError(
            name,
            f"requests {df['requests'].iloc[line - 2]!r} is not a number; expected a non-negative count",
            line,
            "requests",
        )
    bad = counts < 0
    if bad.any():
        line = _first_bad_line(bad, lines)
        raise TraceError(
            name, f"requests {counts[line - 2]:g} is negative; expected a count >= 0", line, "requests"
        )

    ns = ts.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    frame = pd.DataFrame({"series": series_col.to_numpy(), "ns": ns, "count": counts, "line": lines})
    dup = frame.duplicated(["series", "ns"], keep=False).to_numpy()
    if dup.any():
        d = frame[dup].sort_values(["series", "ns", "line"])
        first, second = int(d["line"].iloc[0]), int(d["line"].iloc[1])
        raise TraceError(
            name,
            f"duplicate row for series {d['series'].iloc[0]!r} at {df['timestamp'].iloc[second - 2].strip()}"
            f" (first given on line {first}); expected one row per series and interval",
            second,
            "timestamp",
        )

    out: dict[str, TrafficSeries] = {}
    frame = frame.sort_values(["series", "ns"], kind="stable")
    for sname, g in frame.groupby("series", sort=False):
        key = str(sname)
        if only is not None and key not in only:
            continue
        out[key] = _to_series(name, key, g["ns"].to_numpy(), g["count"].to_numpy(), g["line"].to_numpy())
    if only is not None:
        missing = sorted(only - set(out))
        if missing:
            have = sorted(set(frame["series"]))
            shown = ", ".join(have[:10]) + (f", ... ({len(have)} in all)" if len(have) > 10 else "")
            raise SourceError(f"{name}: no series {missing[0]!r}; the file has: {shown}")
    return TraceFile(name, out)


def _to_series(path: str, name: str, ns: np.ndarray, counts: np.ndarray, lines: np.ndarray) -> TrafficSeries:
    if ns.size < 2:
        raise TraceError(
            path,
            f"series {name!r} has a single row, so its step cannot be inferred; expected at least two rows",
            int(lines[0]),
        )
    diffs = np.diff(ns)
    step_ns = int(diffs.min())
    if step_ns % 1_000_000_000:
        i = int(np.argmin(diffs)) + 1
        raise TraceError(
            path,
            f"series {name!r} has a step of {step_ns / 1e9:g} s; expected a whole number of seconds",
            int(lines[i]),
            "timestamp",
        )
    step_s = step_ns // 1_000_000_000
    if not MIN_STEP_S <= step_s <= MAX_STEP_S:
        i = int(np.argmin(diffs)) + 1
        raise TraceError(
            path,
            f"series {name!r} has a step of {step_s} s; "
            f"expected a step from {MIN_STEP_S} s to {MAX_STEP_S} s",
            int(lines[i]),
            "timestamp",
        )
    off = diffs % step_ns != 0
    if off.any():
        i = int(np.flatnonzero(off)[0]) + 1
        raise TraceError(
            path,
            f"series {name!r} mixes steps: this row is {diffs[i - 1] / 1e9:g} s after the previous one, "
            f"not a multiple of the series' {step_s} s step",
            int(lines[i]),
            "timestamp",
        )
    idx = (ns - ns[0]) // step_ns
    values = np.zeros(int(idx[-1]) + 1, dtype=np.float64)
    values[idx] = counts
    return TrafficSeries(name=name, start_s=ns[0] / 1e9, step_s=int(step_s), values=values)


def write_trace(path: str | Path, series: list[TrafficSeries]) -> None:
    """Write series in the trace format (gzip when the name ends in .gz). NaN gaps are left out as rows."""
    from forecaster.types import to_datetime

    p = Path(path)
    buf = io.StringIO()
    buf.write("timestamp,series,requests\n")
    for s in series:
        for t, v in zip(s.times_s(), s.values, strict=True):
            if np.isfinite(v):
                stamp = to_datetime(float(t)).strftime("%Y-%m-%dT%H:%M:%SZ")
                buf.write(f"{stamp},{s.name},{v:.6g}\n")
    data = buf.getvalue().encode()
    p.write_bytes(gzip.compress(data, mtime=0) if p.suffix == ".gz" else data)
