"""The embedded demo traffic: seeded, and shaped like production traffic."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.sources.base import SourceError
from forecaster.sources.synthetic import DEMO_FLEET, SyntheticSource, TrafficShape, generate, rate_rps
from tests.conftest import shape


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    a = generate(DEMO_FLEET[0], days=3, seed=7)
    b = generate(DEMO_FLEET[0], days=3, seed=7)
    c = generate(DEMO_FLEET[0], days=3, seed=8)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_a_models_traffic_does_not_change_when_the_fleet_grows() -> None:
    alone = SyntheticSource(DEMO_FLEET[:1], days=2).load("chat-large")
    in_fleet = SyntheticSource(DEMO_FLEET, days=2).load("chat-large")
    np.testing.assert_array_equal(alone.values, in_fleet.values)


def test_counts_are_non_negative_integers_around_the_requested_mean() -> None:
    for s in DEMO_FLEET:
        series = generate(s, days=7, step_s=60)
        assert np.all(series.values >= 0) and np.all(series.values == np.round(series.values))
        assert series.values.mean() / 60 == pytest.approx(s.mean_rps, rel=0.1)


def test_daily_shape_peaks_at_the_configured_hour_with_the_configured_swing() -> None:
    s = shape(peak_to_trough=4.0, peak_hour=18.0, weekend_factor=1.0, drift_per_day=0.0, bursts_per_day=0.0)
    r = rate_rps(s, 0.0, 7 * 1440, 60, seed=0).reshape(7, 24, 60).mean(axis=(0, 2))
    assert int(np.argmax(r)) in (17, 18, 19)
    assert r.max() / r.min() == pytest.approx(4.0, rel=0.15)


def test_two_of_every_seven_days_run_at_the_weekend_factor() -> None:
    s = shape(peak_to_trough=1.0, weekend_factor=0.5, drift_per_day=0.0, bursts_per_day=0.0)
    daily = rate_rps(s, 0.0, 14 * 24, 3600, seed=0).reshape(14, 24).mean(axis=1)
    low = np.sort(daily)[:4]
    high = np.sort(daily)[4:]
    # the factor is softened around midnight (no hard edge), so a weekend day averages about 0.5 ** 0.8
    assert low.mean() / high.mean() == pytest.approx(0.5**0.8, rel=0.1)
    assert set(np.argsort(daily)[:4] % 7) == {5, 6}  # by position from the epoch, stable across windows


def test_on_off_clients_and_bursts_make_the_series_lumpier() -> None:
    calm = shape(clients=0, bursts_per_day=0.0, drift_per_day=0.0)
    lumpy = shape(clients=5, client_share=0.6, bursts_per_day=3.0, drift_per_day=0.0)

    def roughness(s: TrafficShape) -> float:
        r = rate_rps(s, 0.0, 7 * 1440, 60, seed=3)
        return float(np.mean(np.abs(np.diff(np.log(r)))))

    assert roughness(lumpy) > 2 * roughness(calm)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"mean_rps": 0.0}, "mean_rps must be > 0", id="zero-rate"),
        pytest.param({"peak_to_trough": 0.5}, "peak_to_trough must be >= 1", id="trough-above-peak"),
        pytest.param({"client_share": 1.0}, "client_share must be in", id="all-clients"),
    ],
)
def test_bad_shape_is_refused_with_the_key_and_value(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrafficShape("x", **{"mean_rps": 1.0, **kwargs})  # type: ignore[arg-type]


def test_unknown_model_names_the_fleet() -> None:
    with pytest.raises(SourceError, match="chat-large"):
        SyntheticSource().load("nope")
