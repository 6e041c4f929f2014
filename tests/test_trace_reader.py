"""The trace format: what parses, what is refused, and how the refusal reads."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from forecaster.sources.base import SourceError
from forecaster.sources.trace import TraceError, read_trace, write_trace
from forecaster.types import TrafficSeries


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unsorted_rows_gaps_fractions_and_offsets_parse_into_regular_series(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "timestamp,series,requests\n"
        "2024-01-01T00:02:00Z,a,3\n"
        "2024-01-01T00:00:00Z,a,1.5\n"
        "2024-01-01T01:05:00+01:00,a,1.084e+01\n"  # 00:05 UTC, three steps after a missing 00:03 and 00:04
        "2024-01-01T00:01:00,a,0\n"  # no offset: UTC
        "2024-01-01T00:00:00Z,b,7\n"
        "2024-01-01T00:00:10Z,b,8\n",
    )
    tf = read_trace(p)
    a = tf.load("a")
    assert a.step_s == 60
    assert a.start_s == pytest.approx(1704067200.0)
    np.testing.assert_allclose(a.values, [1.5, 0.0, 3.0, 0.0, 0.0, 10.84])  # missing intervals are zeros
    b = tf.load("b")
    assert (b.step_s, list(b.values)) == (10, [7.0, 8.0])
    assert tf.names() == ["a", "b"]


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    p.write_bytes(
        gzip.compress(b"timestamp,series,requests\n2024-01-01T00:00:00Z,x,1\n2024-01-01T00:00:01Z,x,2\n")
    )
    assert list(read_trace(p).load("x").values) == [1.0, 2.0]


ROW0 = "2024-01-01T00:00:00Z,a,1\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("", "line 1: empty file", id="empty-file"),
        pytest.param("time,series,requests\n" + ROW0, "line 1: header is", id="wrong-header"),
        pytest.param("timestamp,series,requests\n", "line 2: no data rows", id="header-only"),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "yesterday,a,2\n",
            "line 3, column 1 (timestamp): unparseable timestamp 'yesterday'",
            id="bad-timestamp",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,-4\n",
            "line 3, column 3 (requests): requests -4 is negative",
            id="negative-count",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,lots\n",
            "line 3, column 3 (requests): requests 'lots' is not a number",
            id="non-numeric-count",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,nan\n",
            "line 3, column 3 (requests): requests 'nan' is not a number",
            id="nan-count",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,,2\n",
            "line 3, column 2 (series): empty series name",
            id="empty-series",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,2\n2024-01-01T00:02:10Z,a,2\n",
            "line 4, column 1 (timestamp): series 'a' mixes steps: this row is 70 s after the previous one",
            id="mixed-steps",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,2\n2024-01-01T00:01:00Z,a,3\n",
            "duplicate row for series 'a' at 2024-01-01T00:01:00Z (first given on line 3)",
            id="duplicate",
        ),
        pytest.param("timestamp,series,requests\n" + ROW0, "series 'a' has a single row", id="single-row"),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T02:00:00Z,a,2\n",
            "step of 7200 s; expected a step from 1 s to 3600 s",
            id="step-too-long",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:00:00.500Z,a,2\n",
            "expected a whole number of seconds",
            id="sub-second-step",
        ),
        pytest.param(
            "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,2,9\n",
            "malformed CSV row",
            id="extra-field",
        ),
    ],
)
def test_bad_input_names_file_line_column_and_what_was_expected(
    tmp_path: Path, body: str, expected: str
) -> None:
    p = write(tmp_path, body)
    with pytest.raises(TraceError) as info:
        read_trace(p)
    assert str(info.value).startswith(str(p))
    assert expected in str(info.value)


def test_missing_file_and_unknown_series_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        read_trace(tmp_path / "nope.csv")
    p = write(tmp_path, "timestamp,series,requests\n" + ROW0 + "2024-01-01T00:01:00Z,a,2\n")
    with pytest.raises(SourceError, match="no series 'b'; the file has: a"):
        read_trace(p, only={"b"})
    with pytest.raises(SourceError, match="no series 'b'"):
        read_trace(p).load("b")


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    s = TrafficSeries("m/x", 1_700_000_000.0, 60, np.array([0.0, 2.5, 1e4, 3.0]))
    write_trace(tmp_path / "o.csv.gz", [s])
    back = read_trace(tmp_path / "o.csv.gz").load("m/x")
    assert (back.start_s, back.step_s) == (s.start_s, s.step_s)
    np.testing.assert_allclose(back.values, s.values)


def test_shared_traces_load_with_their_documented_steps(shared_traces: Path) -> None:
    tweets = read_trace(shared_traces / "nab-tweets-2015" / "trace.csv.gz")
    assert len(tweets.names()) == 10
    aapl = tweets.load("tweets/AAPL")
    assert aapl.step_s == 300 and aapl.start_s == 1424986973.0  # 2015-02-26T21:42:53Z
    assert aapl.span_s > 54 * 86400
    serve = read_trace(
        shared_traces / "servegen-bailian-2025" / "trace.csv.gz",
        only={"m-large", "m-mid", "m-small", "deepseek-r1", "mm-image"},
    )
    assert {s.step_s for s in serve.series.values()} == {600}
    assert len(serve.load("m-large")) == 2016 and serve.load("m-large").start_s == 0.0
    azure = read_trace(shared_traces / "azure-llm-2023" / "trace.csv.gz")
    assert azure.load("code").step_s == 1 and azure.load("conv").step_s == 1
