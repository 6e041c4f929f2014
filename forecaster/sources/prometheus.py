"""Traffic from Prometheus: one PromQL request-rate expression per model, read as a TrafficSeries.

This is the only module that talks to Prometheus (through prometheus-api-client). What it guarantees:

- Units: the query's value is a rate in requests/s, evaluated on a grid of `step_s`. The value at evaluation
  time t is the rate over the window ending at t, so it is written as the count of the interval
  [t - step, t): `values[i] = rate(start_s + (i + 1) * step) * step`. A series read from Prometheus and the
  same traffic read from a trace file are the same TrafficSeries.
- Long ranges are split into chunks under Prometheus's points-per-query limit (11,000) and stitched back by
  timestamp, so overlapping or out-of-order samples land where they belong. NaN/Inf samples, negative rates
  and steps with no sample become NaN (explicit gaps), never zeros.
- Staleness: every load reports the age of the newest sample; older than the model's `max_staleness_s`
  marks the model stale (the planner then holds and keeps its reactive floor).
- Errors are `PrometheusError`s that say what failed and are typed transient (retry later: unreachable,
  timeout, 429/5xx) or permanent (bad PromQL, auth, TLS, empty result, a query that is not one series).
  Transient errors are retried with exponential backoff before they are raised.
- Incremental: after the first full load, `refresh` fetches only the new range (plus a short re-read of the
  newest steps, whose samples may have been incomplete) and updates the cache only when every chunk
  arrived: a failure mid-load leaves the previous series untouched.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from forecaster.sources.base import SourceError
from forecaster.types import SECONDS_PER_DAY, FloatArray, TrafficSeries

# Prometheus refuses a range query of more than 11,000 points per series; stay clear of the edge.
PROMETHEUS_MAX_POINTS = 11_000
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class PrometheusError(SourceError):
    """A Prometheus read failed. `kind` is one of: unreachable, timeout, tls, auth, bad_query, http, empty,
    not_one_series, bad_response. `transient` says whether retrying later can help."""

    def __init__(self, kind: str, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach Prometheus. Give either a bearer token or a username and password (basic auth)."""

    url: str
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    max_points_per_query: int = 10_000

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/]+", self.url):
            raise ValueError(
                f"prometheus url={self.url!r} must start with http:// or https:// and name a host"
            )
        if self.bearer_token and (self.username or self.password):
            raise ValueError("prometheus: give bearer_token or username/password, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("prometheus: basic auth needs both username and password")
        checks = [
            ("timeout_s", self.timeout_s, 0.1, 3600.0),
            ("retries", self.retries, 0, 20),
            ("backoff_s", self.backoff_s, 0.0, 600.0),
            ("max_points_per_query", self.max_points_per_query, 2, PROMETHEUS_MAX_POINTS),
        ]
        for key, value, lo, hi in checks:
            if not (isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"prometheus {key}={value!r} is out of range; allowed [{lo:g}, {hi:g}]")


@dataclass(frozen=True)
class ModelQuery:
    """One model's traffic: a PromQL expression whose value is requests per second."""

    name: str
    query: str
    step_s: int = 60
    history_s: float = 14 * SECONDS_PER_DAY
    max_staleness_s: float = 300.0
    # a query group: `query` is shared by every model of `group` and returns one series per model, told
    # apart by `label` (e.g. sum by (model) (rate(...))); this model's series has label=label_value
    group: str | None = None
    label: str = ""
    label_value: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.query.strip():
            raise ValueError(f"model {self.name!r}: name and query are required")
        if self.group is not None and not (self.label and self.label_value):
            raise ValueError(f"model {self.name!r}: a grouped query needs its label and label value")
        if not (isinstance(self.step_s, int) and 1 <= self.step_s <= 3600):
            raise ValueError(
                f"model {self.name!r}: step_s={self.step_s!r} is out of range; allowed [1, 3600]"
            )
        if not (self.step_s <= self.history_s <= 400 * SECONDS_PER_DAY):
            raise ValueError(
                f"model {self.name!r}: history_s={self.history_s!r} is out of range; "
                f"allowed [step_s, {400 * SECONDS_PER_DAY}]"
            )
        if not (self.max_staleness_s > 0):
            raise ValueError(f"model {self.name!r}: max_staleness_s={self.max_staleness_s!r} must be > 0")


@dataclass(frozen=True)
class Freshness:
    """How current a loaded series is."""

    newest_sample_s: float | None  # evaluation time of the newest finite sample
    age_s: float | None
    stale: bool
    reason: str


@dataclass(frozen=True)
class Loaded:
    series: TrafficSeries
    freshness: Freshness
    queries: int  # range queries this load took (chunks), for logs and benchmarks
    notes: tuple[str, ...] = ()


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_text(body: str) -> str:
    """Prometheus's own error sentence from an API error body, or the body itself, shortened."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("error"):
            return str(doc["error"])
    except ValueError:
        pass
    return body.strip()[:300] or "(empty body)"


def classify(exc: BaseException, url: str) -> PrometheusError:
    """Turn what the client raised into a typed PrometheusError that says what failed."""
    if isinstance(exc, PrometheusError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        return PrometheusError("tls", f"TLS handshake with {url} failed: {exc}", transient=False)
    if isinstance(exc, requests.exceptions.Timeout):
        return PrometheusError(
            "timeout", f"Prometheus at {url} did not answer in time: {exc}", transient=True
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return PrometheusError("unreachable", f"Prometheus at {url} is unreachable: {exc}", transient=True)
    if isinstance(exc, PrometheusApiClientException):
        m = re.match(r"HTTP Status Code (\d+) \((.*)\)$", str(exc), re.S)
        if m is None:
            return PrometheusError("http", f"Prometheus at {url}: {exc}", transient=False)
        status = int(m.group(1))
        raw = m.group(2)
        try:  # the client formats the body as a bytes repr: b'...'
            body = _bytes_repr_text(raw)
        except (ValueError, SyntaxError):
            body = raw
        text = _error_text(body)
        if status in (401, 403):
            return PrometheusError(
                "auth",
                f"Prometheus at {url} refused the credentials (HTTP {status}): {text}",
                transient=False,
                status=status,
            )
        if status in (400, 422):
            return PrometheusError(
                "bad_query",
                f"Prometheus rejected the query (HTTP {status}): {text}",
                transient=False,
                status=status,
            )
        return PrometheusError(
            "http",
            f"Prometheus at {url} answered HTTP {status}: {text}",
            transient=status in TRANSIENT_STATUS,
            status=status,
        )
    if isinstance(exc, ValueError | KeyError | TypeError):
        return PrometheusError(
            "bad_response",
            f"{url} did not answer like a Prometheus API ({type(exc).__name__}: {exc})",
            transient=False,
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return PrometheusError("unreachable", f"request to {url} failed: {exc}", transient=True)
    raise exc


def _bytes_repr_text(text: str) -> str:
    """Decode the `b'...'` repr the client puts in its messages (ast.literal_eval: literals only)."""
    value = ast.literal_eval(text)
    if not isinstance(value, bytes):
        raise ValueError("not a bytes literal")
    return value.decode("utf-8", "replace")


@dataclass
class PrometheusSource:
    """Reads each configured model's traffic; implements the TrafficSource port (names / load).

    `clock` gives epoch seconds (the service passes the wall clock, tests a fixed time); `sleep` waits
    between retries (tests pass a recorder, so nothing sleeps).
    """

    settings: PrometheusSettings
    models: Sequence[ModelQuery]
    clock: Callable[[], float]
    sleep: Callable[[float], None] = time.sleep
    _cache: dict[str, TrafficSeries] = field(default_factory=dict, init=False, repr=False)
    _client: PrometheusConnect | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        self._by_name = {m.name: m for m in self.models}
        self._groups: dict[str, list[ModelQuery]] = {}
        for m in self.models:
            if m.group is not None:
                self._groups.setdefault(m.group, []).append(m)
        for group, members in self._groups.items():
            first = members[0]
            odd = [
                m.name
                for m in members
                if (m.query, m.step_s, m.history_s, m.label)
                != (first.query, first.step_s, first.history_s, first.label)
            ]
            if odd:
                raise ValueError(
                    f"query group {group!r}: {', '.join(odd)} differ from {first.name} in query or step"
                )
            values = [m.label_value for m in members]
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"query group {group!r}: {first.label}={dup[0]!r} names two models")

    # -- the TrafficSource port ------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def load(self, name: str) -> TrafficSeries:
        return self.fetch(name, self.clock()).series

    # -- reading ---------------------------------------------------------------------------------------

    def cached(self, name: str) -> TrafficSeries | None:
        """The series as of the last successful load, or None."""
        return self._cache.get(name)

    def model(self, name: str) -> ModelQuery:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.names())
            raise SourceError(f"no model {name!r} in the Prometheus config; known: {known}") from None

    def fetch(self, name: str, now_s: float, *, start_s: float | None = None) -> Loaded:
        """A full load of `name`'s history up to `now_s` (from `start_s` when given, else history_s back).
        A grouped model loads its whole group (one query for all of them)."""
        m = self.model(name)
        if m.group is not None:
            return self._load_group(m.group, now_s, full=True, start_s=start_s)[name]
        if start_s is None:  # the grid of step multiples, as a live loop reads it
            end = float(math.floor(now_s / m.step_s) * m.step_s)
            first = float(end - math.floor(m.history_s / m.step_s) * m.step_s)
        else:  # the grid anchored at start_s: a backfilled trace's intervals need not start on step multiples
            first = float(start_s)
            end = first + math.floor((now_s - first) / m.step_s) * m.step_s
        if first >= end:
            raise SourceError(f"model {name!r}: the range {_iso(first)}..{_iso(end)} is empty")
        values, queries, notes = self._range(m, first + m.step_s, end)
        series = TrafficSeries(name, float(first), m.step_s, values)
        self._cache[name] = series
        return Loaded(series, self.freshness(m, series, now_s), queries, tuple(notes))

    def refresh(self, name: str, now_s: float) -> Loaded:
        """The cached series brought up to `now_s`, reading only the new range (a full load at first). A
        grouped model refreshes its whole group with one query, so the group's other models find their
        series current and read nothing."""
        m = self.model(name)
        if m.group is not None:
            return self._load_group(m.group, now_s, full=False)[name]
        old = self._cache.get(name)
        if old is None:
            return self.fetch(name, now_s)
        end = old.start_s + math.floor((now_s - old.start_s) / m.step_s) * m.step_s  # the cached grid
        if end - old.end_s > m.history_s:
            return self.fetch(name, now_s)
        # re-read the newest steps too: their samples may have been incomplete when last read
        reread = max(2, math.ceil(300 / m.step_s))
        keep = max(0, len(old) - reread)
        first_interval = old.start_s + keep * m.step_s
        if end <= first_interval:
            return Loaded(old, self.freshness(m, old, now_s), 0)
        values, queries, notes = self._range(m, first_interval + m.step_s, end)
        merged = np.concatenate([old.values[:keep], values])
        series = TrafficSeries(name, old.start_s, m.step_s, merged).tail(m.history_s)
        self._cache[name] = series
        return Loaded(series, self.freshness(m, series, now_s), queries, tuple(notes))

    def _load_group(
        self, group: str, now_s: float, *, full: bool, start_s: float | None = None
    ) -> dict[str, Loaded]:
        """Bring every model of a query group up to `now_s` with one range query (chunked), split by the
        group's label. Each model's staleness is still its own: a model missing from the answer gets gaps
        and is judged stale alone. The caches change only when the whole read succeeded."""
        members = self._groups[group]
        g = members[0]
        step = g.step_s
        olds = [self._cache.get(m.name) for m in members]
        if start_s is None:
            end = float(math.floor(now_s / step) * step)
            history_first = float(end - math.floor(g.history_s / step) * step)
        else:
            history_first = float(start_s)
            end = history_first + math.floor((now_s - history_first) / step) * step
        reread = max(2, math.ceil(300 / step))
        first = history_first
        if not full and all(
            o is not None and (o.start_s - history_first) % step == 0 and end - o.end_s <= g.history_s
            for o in olds
        ):
            # re-read the newest steps too: their samples may have been incomplete when last read
            first = max(history_first, min(o.end_s for o in olds if o is not None) - reread * step)
        else:
            full = True
        if first >= end:
            if full:
                raise SourceError(f"query group {group!r}: the range {_iso(first)}..{_iso(end)} is empty")
            return {
                m.name: Loaded(o, self.freshness(m, o, now_s), 0)
                for m, o in zip(members, olds, strict=True)
                if o
            }
        by_value, queries, notes = self._range_by(g, first + step, end, label=g.label)
        n = round((end - first) / step)
        out: dict[str, Loaded] = {}
        for m, old in zip(members, olds, strict=True):
            values = by_value.get(m.label_value)
            if values is None:
                values = np.full(n, np.nan)  # absent from the answer: gaps, and stale on its own
            if full or old is None or first < old.start_s:
                series = TrafficSeries(m.name, first, step, values)
            else:  # first is on old's grid and not past its end (the re-read starts inside it)
                merged = np.concatenate([old.values[: old.index_at(first)], values])
                series = TrafficSeries(m.name, old.start_s, step, merged).tail(g.history_s)
            out[m.name] = Loaded(series, self.freshness(m, series, now_s), queries, tuple(notes))
        for name, loaded in out.items():
            self._cache[name] = loaded.series
        return out

    @staticmethod
    def freshness(m: ModelQuery, series: TrafficSeries, now_s: float) -> Freshness:
        finite = np.flatnonzero(np.isfinite(series.values))
        if finite.size == 0:
            return Freshness(None, None, True, f"no samples for {m.name!r} in the loaded range")
        newest = series.start_s + (int(finite[-1]) + 1) * series.step_s
        age = float(max(0.0, now_s - newest))
        if age > m.max_staleness_s:
            return Freshness(
                newest,
                age,
                True,
                f"the newest sample of {m.name!r} is {age:.0f} s old (limit {m.max_staleness_s:g} s)",
            )
        return Freshness(newest, age, False, f"the newest sample is {age:.0f} s old")

    def _connect(self) -> PrometheusConnect:
        if self._client is None:
            s = self.settings
            session = requests.Session()
            session.verify = False if s.insecure_skip_verify else (s.ca_file or True)
            headers = {"Authorization": f"Bearer {s.bearer_token}"} if s.bearer_token else None
            auth = (s.username, s.password) if s.username and s.password else None
            # retries are ours (typed, with a sleep tests can replace), not urllib3's
            self._client = PrometheusConnect(
                url=s.url.rstrip("/"),
                headers=headers,
                auth=auth,
                session=session,
                retry=Retry(total=0, raise_on_status=False),
                timeout=s.timeout_s,  # type: ignore[arg-type,unused-ignore]  # typed int, used as a float
            )
        return self._client

    def _query(self, m: ModelQuery, start_s: float, end_s: float) -> list[dict[str, Any]]:
        client = self._connect()
        attempt = 0
        while True:
            try:
                result = client.custom_query_range(
                    m.query,
                    start_time=datetime.fromtimestamp(start_s, tz=UTC),
                    end_time=datetime.fromtimestamp(end_s, tz=UTC),
                    step=str(m.step_s),
                )
                if not isinstance(result, list):
                    raise TypeError(f"result is a {type(result).__name__}, not a list")
                return result
            except Exception as exc:
                err = classify(exc, self.settings.url)
                if not err.transient or attempt >= self.settings.retries:
                    if err.transient and attempt:
                        err = PrometheusError(
                            err.kind,
                            f"{err} (after {attempt + 1} attempts)",
                            transient=True,
                            status=err.status,
                        )
                    raise err from exc
                self.sleep(self.settings.backoff_s * 2**attempt)
                attempt += 1

    def _range(
        self, m: ModelQuery, first_eval_s: float, last_eval_s: float
    ) -> tuple[FloatArray, int, list[str]]:
        """Values at every evaluation time first..last (inclusive, on the step grid), counts per step: the
        one series the model's query must return."""
        by_series, queries, notes = self._range_by(m, first_eval_s, last_eval_s, label=None)
        if len(by_series) > 1:
            labels = sorted(by_series)
            raise PrometheusError(
                "not_one_series",
                f"the query for {m.name!r} returned {len(labels)} series ({', '.join(labels[:3])}"
                f"{', ...' if len(labels) > 3 else ''}); aggregate it to one, e.g. sum(...)",
                transient=False,
            )
        if not by_series:
            raise PrometheusError(
                "empty",
                f"the query for {m.name!r} returned no data between {_iso(first_eval_s)} and "
                f"{_iso(last_eval_s)}: check the metric name and labels in {m.query!r}",
                transient=False,
            )
        return next(iter(by_series.values())), queries, notes

    def _range_by(
        self, m: ModelQuery, first_eval_s: float, last_eval_s: float, *, label: str | None
    ) -> tuple[dict[str, FloatArray], int, list[str]]:
        """Counts per step of every series the query returns, keyed by the value of `label` (None: by the
        whole label set). Two series with the same value of `label` are refused: the group's query must
        aggregate by it."""
        step = m.step_s
        n = round((last_eval_s - first_eval_s) / step) + 1
        out: dict[str, FloatArray] = {}
        label_sets: dict[str, str] = {}
        per_chunk = self.settings.max_points_per_query
        queries = 0
        off_grid = bad = 0
        for lo in range(0, n, per_chunk):
            hi = min(n, lo + per_chunk) - 1
            result = self._query(m, first_eval_s + lo * step, first_eval_s + hi * step)
            queries += 1
            for series in result:
                metric = series.get("metric", {})
                whole = json.dumps(metric, sort_keys=True)
                key = whole if label is None else str(metric.get(label, ""))
                if label_sets.setdefault(key, whole) != whole:
                    raise PrometheusError(
                        "not_one_series",
                        f"the query of group {m.group!r} returned two series with {label}={key!r} "
                        f"({label_sets[key]}, {whole}); aggregate it by ({label})",
                        transient=False,
                    )
                pts = series.get("values")
                if pts is None:
                    raise PrometheusError(
                        "bad_response",
                        f"query for {m.name!r} returned a series without values",
                        transient=False,
                    )
                rates = out.setdefault(key, np.full(n, np.nan))
                if not pts:
                    continue
                ts = np.array([float(p[0]) for p in pts])
                vals = np.array([_number(p[1]) for p in pts])
                pos = (ts - first_eval_s) / step
                idx = np.rint(pos).astype(np.int64)
                off_grid += int(np.count_nonzero(np.abs(pos - idx) > 1e-6))
                inside = (idx >= 0) & (idx < n)
                ok = np.isfinite(vals) & (vals >= 0)
                bad += int(np.count_nonzero(inside & ~ok))
                # a later chunk overwrites an overlapping earlier one; gaps stay NaN
                rates[idx[inside]] = np.where(ok[inside], vals[inside], np.nan)
        notes = []
        if bad:
            notes.append(f"{bad} NaN, infinite or negative samples kept as gaps")
        if off_grid:
            notes.append(f"{off_grid} samples off the {step} s grid placed on the nearest step")
        return {k: v * step for k, v in out.items()}, queries, notes


def _number(text: object) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
