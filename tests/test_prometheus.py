"""The Prometheus source against a real Prometheus server, backfilled from traces with promtool."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from forecaster.sources.openmetrics import write_openmetrics
from forecaster.sources.prometheus import ModelQuery, PrometheusError, PrometheusSettings, PrometheusSource
from forecaster.sources.synthetic import DEFAULT_START_S, DEMO_FLEET, generate
from forecaster.sources.trace import read_trace
from forecaster.types import SECONDS_PER_DAY, TrafficSeries
from service.cli import app
from tests.prometheus_harness import GatedProxy, PrometheusProcess, backfill, backfill_file, require_binaries

STEP = 60
DAYS = 14
END_S = DEFAULT_START_S + DAYS * SECONDS_PER_DAY
GAP = slice(5000, 5060)  # an hour with no samples
RESET_AT = 9000  # the counter restarts from zero here (a pod restart)
STALE_BY_S = 2 * 3600


def rate_query(model: str) -> str:
    return f'sum(rate(prewarm_requests_total{{model="{model}"}}[1m]))'


@pytest.fixture(scope="module")
def steady() -> TrafficSeries:
    return generate(DEMO_FLEET[0], days=DAYS, step_s=STEP, seed=3)


def _reset_counter_lines(counts: np.ndarray) -> str:
    """The counter of `counts` written by hand, back to zero at RESET_AT as a restarted pod's would be."""
    total, lines = 0.0, [f'prewarm_requests_total{{model="reset"}} 0 {int(DEFAULT_START_S)}\n']
    for i, c in enumerate(counts.tolist()):
        total = c if i == RESET_AT else total + c
        lines.append(
            f'prewarm_requests_total{{model="reset"}} {total:.15g} {int(DEFAULT_START_S) + (i + 1) * STEP}\n'
        )
    return "".join(lines)


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, steady: TrafficSeries
) -> Iterator[PrometheusProcess]:
    require_binaries()
    data = tmp_path_factory.mktemp("prom") / "data"
    gappy = steady.values.copy()
    gappy[GAP] = np.nan
    stale = steady.slice(0, len(steady) - STALE_BY_S // STEP)
    backfill(
        [
            TrafficSeries("steady", steady.start_s, STEP, steady.values),
            TrafficSeries("gappy", steady.start_s, STEP, gappy),
            TrafficSeries("stale", stale.start_s, STEP, stale.values),
        ],
        data,
        extra_openmetrics=_reset_counter_lines(steady.values),
    )
    server = PrometheusProcess(data).start()
    yield server
    server.stop()


def source(url: str, *models: str, sleeps: list[float] | None = None, **settings: object) -> PrometheusSource:
    record = sleeps if sleeps is not None else []
    return PrometheusSource(
        PrometheusSettings(url, **settings),  # type: ignore[arg-type]
        [ModelQuery(m, rate_query(m), step_s=STEP) for m in models],
        clock=lambda: END_S,
        sleep=record.append,
    )


def test_fourteen_days_at_one_minute_arrive_in_chunks_and_equal_the_trace(
    prometheus: PrometheusProcess, steady: TrafficSeries
) -> None:
    loaded = source(prometheus.url, "steady").fetch("steady", END_S)
    assert loaded.queries == 3  # 20,160 points in chunks of at most 10,000
    assert (loaded.series.start_s, loaded.series.step_s, len(loaded.series)) == (
        steady.start_s,
        STEP,
        len(steady),
    )
    np.testing.assert_allclose(loaded.series.values, steady.values, rtol=1e-9, atol=1e-6)
    assert not loaded.freshness.stale and loaded.freshness.age_s == 0


def test_small_chunks_are_stitched_back_in_order(
    prometheus: PrometheusProcess, steady: TrafficSeries
) -> None:
    loaded = source(prometheus.url, "steady", max_points_per_query=777).fetch("steady", END_S)
    assert loaded.queries == -(-len(steady) // 777)
    np.testing.assert_allclose(loaded.series.values, steady.values, rtol=1e-9, atol=1e-6)


def test_a_scrape_gap_reads_as_missing_never_as_zero(
    prometheus: PrometheusProcess, steady: TrafficSeries
) -> None:
    values = source(prometheus.url, "gappy").fetch("gappy", END_S).series.values
    missing = np.flatnonzero(np.isnan(values))
    # the gap, and the first interval after it (its rate window holds one sample only)
    assert missing.tolist() == list(range(GAP.start, GAP.stop + 1))
    ok = np.isfinite(values)
    np.testing.assert_allclose(values[ok], steady.values[ok], rtol=1e-9, atol=1e-6)


def test_a_counter_reset_keeps_every_request(prometheus: PrometheusProcess, steady: TrafficSeries) -> None:
    values = source(prometheus.url, "reset").fetch("reset", END_S).series.values
    np.testing.assert_allclose(values, steady.values, rtol=1e-9, atol=1e-6)


def test_a_series_that_stopped_reporting_is_stale_and_says_how_old(prometheus: PrometheusProcess) -> None:
    loaded = source(prometheus.url, "stale").fetch("stale", END_S)
    assert loaded.freshness.stale
    assert loaded.freshness.age_s == STALE_BY_S
    assert "7200 s old (limit 300 s)" in loaded.freshness.reason
    # the steps since it stopped are gaps, not zeros
    assert np.isnan(loaded.series.values[-STALE_BY_S // STEP :]).all()


def test_refresh_reads_only_the_new_range_and_matches_a_full_load(prometheus: PrometheusProcess) -> None:
    src = source(prometheus.url, "steady")
    src.fetch("steady", END_S - 3600)
    refreshed = src.refresh("steady", END_S)
    assert refreshed.queries == 1
    full = source(prometheus.url, "steady").fetch("steady", END_S)
    assert refreshed.series.start_s == full.series.start_s
    np.testing.assert_array_equal(refreshed.series.values, full.series.values)


@pytest.mark.parametrize(
    ("query", "kind", "words"),
    [
        pytest.param("sum(rate(prewarm_requests_total[1m]", "bad_query", "parse error", id="wrong-promql"),
        pytest.param(
            'sum(rate(no_such_metric{model="x"}[1m]))', "empty", "returned no data", id="no-such-metric"
        ),
        pytest.param(
            "rate(prewarm_requests_total[1m])", "not_one_series", "aggregate it", id="not-aggregated"
        ),
    ],
)
def test_a_query_that_cannot_work_is_a_permanent_error_that_says_why(
    prometheus: PrometheusProcess, query: str, kind: str, words: str
) -> None:
    sleeps: list[float] = []
    src = PrometheusSource(
        PrometheusSettings(prometheus.url),
        [ModelQuery("m", query, step_s=STEP)],
        clock=lambda: END_S,
        sleep=sleeps.append,
    )
    with pytest.raises(PrometheusError) as info:
        src.fetch("m", END_S)
    assert (info.value.kind, info.value.transient) == (kind, False)
    assert words in str(info.value)
    assert sleeps == []  # permanent: not retried


def test_an_unreachable_server_is_transient_and_retried_with_backoff() -> None:
    proxy = GatedProxy("http://127.0.0.1:9")
    url = proxy.url
    proxy.close()  # nothing listens there any more
    sleeps: list[float] = []
    src = source(url, "steady", sleeps=sleeps, retries=3, backoff_s=0.5)
    with pytest.raises(PrometheusError) as info:
        src.fetch("steady", END_S)
    assert (info.value.kind, info.value.transient) == ("unreachable", True)
    assert "after 4 attempts" in str(info.value)
    assert sleeps == [0.5, 1.0, 2.0]


def test_the_server_going_away_mid_load_fails_clearly_and_writes_nothing(
    prometheus: PrometheusProcess,
) -> None:
    proxy = GatedProxy(prometheus.url, serve_requests=1)  # the first of three chunks, then gone
    sleeps: list[float] = []
    src = source(proxy.url, "steady", sleeps=sleeps, retries=2, timeout_s=5.0)
    with pytest.raises(PrometheusError) as info:
        src.fetch("steady", END_S)
    assert (info.value.kind, info.value.transient) == ("unreachable", True)
    assert "after 3 attempts" in str(info.value)
    assert len(proxy.seen_authorization) == 1
    assert src.cached("steady") is None


def test_a_failed_refresh_leaves_the_cached_series_untouched(prometheus: PrometheusProcess) -> None:
    proxy = GatedProxy(prometheus.url, serve_requests=3)  # exactly one full load
    src = source(proxy.url, "steady", retries=1, timeout_s=5.0)
    before = src.fetch("steady", END_S - 5 * 3600).series
    with pytest.raises(PrometheusError) as info:
        src.refresh("steady", END_S)
    assert info.value.kind == "unreachable"
    assert src.cached("steady") is before


def test_the_bearer_token_is_passed_through(prometheus: PrometheusProcess, steady: TrafficSeries) -> None:
    proxy = GatedProxy(prometheus.url, token="s3cret")
    try:
        with pytest.raises(PrometheusError) as info:
            source(proxy.url, "steady").fetch("steady", END_S)
        assert (info.value.kind, info.value.status, info.value.transient) == ("auth", 401, False)
        assert "missing or wrong bearer token" in str(info.value)
        loaded = source(proxy.url, "steady", bearer_token="s3cret").fetch("steady", END_S)
        np.testing.assert_allclose(loaded.series.values, steady.values, rtol=1e-9, atol=1e-6)
        assert proxy.seen_authorization[-1] == "Bearer s3cret"
    finally:
        proxy.close()


def test_openmetrics_export_is_cumulative_with_whole_second_timestamps() -> None:
    s = TrafficSeries("a/b", 1_000_000.0, 60, np.array([3.0, 0.0, np.nan, 2.5]))
    buf = io.StringIO()
    assert write_openmetrics([s], buf) == 4
    lines = buf.getvalue().splitlines()
    assert lines[2:] == [
        'prewarm_requests_total{model="a/b"} 0 1000000',
        'prewarm_requests_total{model="a/b"} 3 1000060',
        'prewarm_requests_total{model="a/b"} 3 1000120',
        'prewarm_requests_total{model="a/b"} 5.5 1000240',
        "# EOF",
    ]


def test_a_trace_backfilled_into_prometheus_backtests_the_same_as_the_csv(
    shared_traces: Path, tmp_path: Path
) -> None:
    require_binaries()
    trace = shared_traces / "nab-tweets-2015" / "trace.csv.gz"
    runner = CliRunner()
    om = runner.invoke(app, ["export-openmetrics", str(trace), "--series", "tweets/AAPL"])
    assert om.exit_code == 0, om.output
    (tmp_path / "aapl.om").write_text(om.stdout)
    data = tmp_path / "data"
    backfill_file(tmp_path / "aapl.om", data)
    server = PrometheusProcess(data).start()
    try:
        s = read_trace(trace, only={"tweets/AAPL"}).load("tweets/AAPL")
        common = ["--series", "tweets/AAPL", "--policies", "reactive,static,oracle", "--json"]
        from_csv = runner.invoke(app, ["backtest", str(trace), *common])
        from_prom = runner.invoke(
            app,
            [
                "backtest",
                "--prometheus",
                server.url,
                "--step",
                "5m",
                "--query",
                'sum(rate(prewarm_requests_total{model="tweets/AAPL"}[5m]))',
                "--start",
                "2015-02-26T21:42:53Z",
                "--end",
                "2015-04-23T02:52:53Z",
                *common,
            ],
        )
    finally:
        server.stop()
    assert from_csv.exit_code == 0 and from_prom.exit_code == 0, from_csv.output + from_prom.output
    assert s.end_s == 1429757573.0  # the --end above is the trace's end
    a = json.loads(from_csv.stdout)["series"]["tweets/AAPL"]
    b = json.loads(from_prom.stdout)["series"]["tweets/AAPL"]
    assert a.keys() == b.keys()
    for policy in a:
        for metric in ("requests", "slo_violations", "replica_hours", "cold_starts"):
            assert b[policy][metric] == pytest.approx(a[policy][metric], rel=0.01), (policy, metric)


def test_the_nightly_backtest_runs_every_model_of_a_config_file(
    prometheus: PrometheusProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"prometheus:\n  url: {prometheus.url}\n  retries: 1\n"
        "models:\n"
        f"  - name: steady\n    query: '{rate_query('steady')}'\n    capacity_rps: 20\n    t_load_s: 120\n"
        f"  - name: gappy\n    query: '{rate_query('gappy')}'\n"
    )
    end = datetime.fromtimestamp(END_S, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = CliRunner().invoke(
        app,
        ["backtest", "--config", str(cfg), "--end", end, "--days", "14", "--policies", "reactive", "--json"],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["series"]
    assert sorted(runs) == ["gappy", "steady"]
    assert runs["steady"]["reactive"]["requests"] == pytest.approx(
        float(np.sum(generate(DEMO_FLEET[0], days=DAYS, step_s=STEP, seed=3).values[2 * 1440 :])), rel=1e-6
    )


def test_a_backtest_asking_for_more_days_than_prometheus_holds_replays_what_exists_within_the_config(
    prometheus: PrometheusProcess, tmp_path: Path
) -> None:
    """A new user's first backtest: --days 14 against a Prometheus that holds less. The missing days are
    history that never existed (not an outage to replay), and the model's config bounds every policy."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"prometheus:\n  url: {prometheus.url}\n  retries: 1\nmodels:\n"
        f"  - name: steady\n    query: '{rate_query('steady')}'\n    capacity_rps: 20\n    t_load_s: 120\n"
        "    max_replicas: 4\n    slo: {wait_s: 5}\n"
    )
    end = datetime.fromtimestamp(END_S, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args = ["backtest", "--config", str(cfg), "--end", end, "--policies", "reactive,static,oracle", "--json"]
    result = CliRunner().invoke(app, [*args, "--days", str(DAYS + 6)])
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)["series"]["steady"]
    # the warm-up is the first two days that exist, not two of the six that never did
    assert run["reactive"]["requests"] == pytest.approx(
        float(np.sum(generate(DEMO_FLEET[0], days=DAYS, step_s=STEP, seed=3).values[2 * 1440 :])), rel=1e-6
    )
    assert {p: r["peak_replicas"] for p, r in run.items() if p != "oracle"} == {"reactive": 4, "static-2": 4}
    flag = CliRunner().invoke(app, [*args, "--days", str(DAYS), "--max-replicas", "6"])
    assert json.loads(flag.stdout)["series"]["steady"]["reactive"]["peak_replicas"] == 6  # the flag wins


def test_a_config_file_with_an_unreachable_prometheus_fails_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    proxy = GatedProxy("http://127.0.0.1:9")
    url = proxy.url
    proxy.close()
    cfg.write_text(f"prometheus:\n  url: {url}\n  retries: 0\nmodels:\n  - name: a\n    query: up\n")
    result = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--days", "3"])
    assert result.exit_code == 2
    assert f"Prometheus at {url} is unreachable" in result.output
    assert "Traceback" not in result.output


GROUP_QUERY = "sum by (model) (rate(prewarm_requests_total[1m]))"


def grouped(url: str, *models: str, max_staleness_s: float = 300.0) -> PrometheusSource:
    return PrometheusSource(
        PrometheusSettings(url),
        [
            ModelQuery(
                m,
                GROUP_QUERY,
                step_s=STEP,
                max_staleness_s=max_staleness_s,
                group="all",
                label="model",
                label_value=m,
            )
            for m in models
        ],
        clock=lambda: END_S,
    )


def test_a_query_group_reads_every_model_in_one_query_and_equals_their_own_queries(
    prometheus: PrometheusProcess,
) -> None:
    src = grouped(prometheus.url, "steady", "gappy", "stale")
    loaded = src.fetch("steady", END_S)
    assert loaded.queries == 3  # the 14 days in three chunks, for all three models at once
    for name in ("steady", "gappy", "stale"):
        own = source(prometheus.url, name).fetch(name, END_S).series
        np.testing.assert_array_equal(src.cached(name).values, own.values)  # type: ignore[union-attr]
    # per-model staleness stays per model
    assert not loaded.freshness.stale
    stale = src.freshness(src.model("stale"), src.cached("stale"), END_S)  # type: ignore[arg-type]
    assert stale.stale and "7200 s old" in stale.reason


def test_a_group_refresh_is_one_query_for_all_and_matches_a_full_load(prometheus: PrometheusProcess) -> None:
    src = grouped(prometheus.url, "steady", "gappy")
    src.fetch("steady", END_S - 3600)
    refreshed = src.refresh("gappy", END_S)
    assert refreshed.queries == 1
    full = grouped(prometheus.url, "steady", "gappy")
    full.fetch("steady", END_S)
    for name in ("steady", "gappy"):
        np.testing.assert_array_equal(src.cached(name).values, full.cached(name).values)  # type: ignore[union-attr]


def test_a_model_missing_from_the_groups_answer_has_gaps_and_is_stale_alone(
    prometheus: PrometheusProcess,
) -> None:
    src = grouped(prometheus.url, "steady", "nobody")
    src.fetch("steady", END_S)
    missing = src.refresh("nobody", END_S)
    assert np.isnan(missing.series.values).all() and missing.freshness.stale
    assert "no samples for 'nobody'" in missing.freshness.reason
    assert not src.refresh("steady", END_S).freshness.stale


def test_a_group_query_that_does_not_aggregate_by_its_label_is_refused(prometheus: PrometheusProcess) -> None:
    src = PrometheusSource(
        PrometheusSettings(prometheus.url),
        [
            ModelQuery(
                "steady",
                # every series renamed model="steady", told apart only by a pod label
                'label_replace(label_replace(rate(prewarm_requests_total[1m]), "pod", "$1", "model", '
                '"(.*)"), "model", "steady", "", "")',
                step_s=STEP,
                group="g",
                label="model",
                label_value="steady",
            )
        ],
        clock=lambda: END_S,
    )
    with pytest.raises(PrometheusError, match=r"two series with model=.*aggregate it by \(model\)"):
        src.fetch("steady", END_S)


def test_models_of_one_group_must_share_its_query_and_label_values_must_differ() -> None:
    settings = PrometheusSettings("http://127.0.0.1:9")
    a = ModelQuery("a", GROUP_QUERY, group="g", label="model", label_value="x")
    with pytest.raises(ValueError, match="differ from a in query or step"):
        PrometheusSource(settings, [a, ModelQuery("b", GROUP_QUERY, step_s=30, group="g", label="model",
                                                  label_value="y")], clock=lambda: END_S)  # fmt: skip
    with pytest.raises(ValueError, match="model='x' names two models"):
        PrometheusSource(settings, [a, ModelQuery("b", GROUP_QUERY, group="g", label="model",
                                                  label_value="x")], clock=lambda: END_S)  # fmt: skip
