"""Where a command's series come from: a trace file, the built-in demo fleet, or Prometheus (one --query, or
every model of a --config file, with what the config says about each)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from forecaster.durations import parse_duration_s
from forecaster.sources.base import TrafficSource
from forecaster.sources.synthetic import SyntheticSource
from forecaster.sources.trace import read_trace
from forecaster.types import TrafficSeries
from service.cli.common import UsageError, iso, parse_at

MAX_SERIES_WITHOUT_FLAG = 10

# what a config file says about each of its models, by name (None: unset)
Settings = dict[str, dict[str, float | None]]


def open_source(trace: Path | None, demo: bool, only: set[str] | None) -> tuple[TrafficSource, str]:
    """The trace, or the demo fleet when no trace is given, and how to name it."""
    if trace is None or demo:
        if trace is not None:
            raise UsageError("give either a TRACE or --demo, not both")
        return SyntheticSource(), "built-in synthetic fleet (seed 0)"
    return read_trace(trace, only=only), str(trace)


def pick_series(source: TrafficSource, series: list[str] | None, every: bool = False) -> list[TrafficSeries]:
    """The series named, or all of them when there are few enough to mean it (or `every`: a rule such as
    --long-tail picks among them next)."""
    if series:
        return [source.load(s) for s in series]
    names = source.names()
    if len(names) > MAX_SERIES_WITHOUT_FLAG and not every:
        raise UsageError(
            f"the trace has {len(names)} series; pick some with --series (e.g. --series {names[0]})"
        )
    return [source.load(n) for n in names]


def load_series(
    trace: Path | None,
    demo: bool,
    names: list[str] | None,
    prometheus: str | None,
    query: str | None,
    config: Path | None,
    start: str | None,
    end: str | None,
    days: float,
    step: str,
    bearer_token: str | None,
    every: bool = False,
) -> tuple[list[TrafficSeries], str, Settings]:
    """The series to replay, from a trace, the demo or Prometheus, with what a config says about each."""
    if prometheus is not None or config is not None:
        if trace is not None or demo:
            raise UsageError("give a TRACE (or --demo) or --prometheus, not both")
        return _prometheus_series(prometheus, query, config, names, start, end, days, step, bearer_token)
    if query is not None:
        raise UsageError("--query needs --prometheus")
    source, label = open_source(trace, demo, set(names) if names else None)
    return pick_series(source, names, every), label, {}


def fleet_series(traces: list[Path], names: list[str] | None) -> tuple[list[TrafficSeries], list[str]]:
    """Every named series from the traces (a name may live in any of the files), for a fleet replay, and
    what was renamed: a name that several files hold is prefixed with each file's label (`a/all`, `b/all`)."""
    if not traces:
        raise UsageError("--fleet-budget needs one or more TRACE files")
    per_file: list[tuple[Path, list[TrafficSeries]]] = []
    for path in traces:
        source = read_trace(path)  # every series: a name may live in any of the files
        wanted = [n for n in source.names() if names is None or n in names]
        if names is None and len(wanted) > MAX_SERIES_WITHOUT_FLAG:
            raise UsageError(f"{path} has {len(wanted)} series; pick some with --series")
        per_file.append((path, [source.load(n) for n in wanted]))
    found = {s.name for _, group in per_file for s in group}
    missing = sorted(set(names or ()) - found)
    if missing:
        raise UsageError(f"--series not found in any TRACE: {', '.join(missing)}")
    return name_by_file(per_file)


def name_by_file(per_file: list[tuple[Path, list[TrafficSeries]]]) -> tuple[list[TrafficSeries], list[str]]:
    """Series names made unique across files: a name held by several files becomes `<label>/<name>` in each,
    the label being the shortest tail of the file's path (without .csv/.gz) that tells the files apart."""
    count = Counter(s.name for _, group in per_file for s in group)
    repeated = {n for n, c in count.items() if c > 1}
    if not repeated:
        return [s for _, group in per_file for s in group], []
    labels = _file_labels([p for p, group in per_file if any(s.name in repeated for s in group)])
    out: list[TrafficSeries] = []
    notes: list[str] = []
    for path, group in per_file:
        for s in group:
            if s.name in repeated:
                new = f"{labels[path]}/{s.name}"
                notes.append(
                    f"series {s.name!r} of {path} is named {new!r} (several TRACE files hold {s.name!r})"
                )
                s = TrafficSeries(new, s.start_s, s.step_s, s.values)
            out.append(s)
    return out, notes


def _file_labels(paths: list[Path]) -> dict[Path, str]:
    def parts(p: Path) -> list[str]:
        name = p.name
        for ext in (".gz", ".csv"):
            name = name.removesuffix(ext)
        return [*p.resolve().parent.parts[1:], name]

    for depth in range(1, max(len(parts(p)) for p in paths) + 1):
        labels = {p: "/".join(parts(p)[-depth:]) for p in paths}
        if len(set(labels.values())) == len(paths):
            return labels
    return {p: str(p) for p in paths}  # the same file twice: its path, as given


def _prometheus_series(
    url: str | None,
    query: str | None,
    config: Path | None,
    names: list[str] | None,
    start: str | None,
    end: str | None,
    days: float,
    step: str,
    bearer_token: str | None,
) -> tuple[list[TrafficSeries], str, Settings]:
    """Each model's history from Prometheus, with what its config says about the fleet."""
    from forecaster.sources.prometheus import ModelQuery, PrometheusSettings, PrometheusSource
    from service.config import load_config

    overrides: Settings = {}
    if config is not None:
        if query is not None:
            raise UsageError("give --query (one model) or --config (all its models), not both")
        cfg = load_config(config)
        if cfg.prometheus is None and url is None:
            raise UsageError(f"{config} has no prometheus section; add one or pass --prometheus URL")
        models = [m for m in cfg.models if not names or m.name in names]
        missing = sorted(set(names or ()) - {m.name for m in cfg.models})
        if missing or not models:
            raise UsageError(f"{config}: no model named {', '.join(missing) or '(none configured)'}")
        queries = cfg.query_specs([m.name for m in models])
        overrides = {
            m.name: {
                "capacity_rps": m.capacity_rps,
                "t_load_s": m.t_load_s,
                "slo_target": m.slo.target,
                "slo_wait_s": m.slo.wait_s,
                "min_replicas": m.min_replicas,
                "max_replicas": m.max_replicas,
            }
            for m in models
        }
        settings = cfg.prometheus.settings() if cfg.prometheus is not None else PrometheusSettings(url or "")
        if url is not None:
            settings = PrometheusSettings(**{**settings.__dict__, "url": url})
    else:
        if url is None:
            raise UsageError("--config needs a prometheus section or --prometheus URL")
        if query is None or not names or len(names) != 1:
            raise UsageError("--prometheus needs --query PROMQL and one --series NAME (or --config FILE)")
        step_s = parse_duration_s(step, what="--step")
        if step_s != int(step_s) or not 1 <= step_s <= 3600:
            raise UsageError(f"--step {step!r}: expected whole seconds from 1s to 1h")
        queries = [ModelQuery(names[0], query, step_s=int(step_s), history_s=days * 86_400)]
        overrides = {names[0]: {"capacity_rps": None, "t_load_s": None}}
        settings = PrometheusSettings(url)
    if bearer_token:
        settings = PrometheusSettings(**{**settings.__dict__, "bearer_token": bearer_token})
    end_s = parse_at(end) if end else time.time()  # the CLI is a shell: it may read the clock
    start_s = parse_at(start) if start else None
    src = PrometheusSource(settings, queries, clock=lambda: end_s)
    chosen = []
    for q in queries:
        first = start_s if start_s is not None else end_s - days * 86_400
        # a model with less history than the range asked starts with gaps: history that never existed
        series = src.fetch(q.name, end_s, start_s=first).series.from_first_observation()
        if not len(series):
            raise UsageError(
                f"{q.name}: Prometheus has no samples of its query from {iso(first)} to {iso(end_s)}"
            )
        chosen.append(series)
    return chosen, f"Prometheus at {settings.url}", overrides
