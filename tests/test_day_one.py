"""Forecasts from day one: a model with under two days of history borrows a daily shape (the fleet's, or
a named model's), scaled by its own level, instead of forecasting a flat recent level."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from actuator.base import Target
from actuator.safety import GuardedActuator, Mode, Rails
from forecaster.models.borrowed import BorrowedShape
from forecaster.models.fallback import RecentLevel
from forecaster.models.profile import SeasonalProfile
from forecaster.selection import AutoModel
from forecaster.shape import MINUTES_PER_DAY, DailyShape, daily_shape, median_shape
from forecaster.sources.synthetic import TrafficShape, generate
from forecaster.types import TrafficSeries
from planner import PlannerSpec
from service.config import ConfigError, parse_config
from service.runtime import Controller, ModelRuntime, SimulatedFleet
from service.store import DecisionStore
from tests.fakes import Clock

DAY = 86_400
HOUR = 3600
# models of one fleet: their days rise and fall together (peak at 14:00 UTC), at different levels
AFTERNOON = [
    TrafficShape(f"m{i}", mean_rps=20.0 * (i + 1), peak_to_trough=5.0, peak_hour=14.0 + 0.3 * i)
    for i in range(4)
]
NIGHT = TrafficShape("night", mean_rps=30.0, peak_to_trough=5.0, peak_hour=2.0)


def series(shape: TrafficShape, days: float = 14.0, step_s: int = 300, seed: int = 1) -> TrafficSeries:
    return generate(shape, days=days, step_s=step_s, seed=seed)


def young(s: TrafficSeries, end_hour: float, hours: float) -> TrafficSeries:
    """The first `hours` of history ending at `end_hour` o'clock on the series' last day but one."""
    end = s.start_s + (round(s.span_s / DAY) - 2) * DAY + end_hour * HOUR
    return s.slice(s.index_at(end - hours * HOUR), s.index_at(end))


def mae(s: TrafficSeries, hist: TrafficSeries, model: object, h: int) -> float:
    fc = model.fit(hist).predict(h, (0.5, 0.9))  # type: ignore[attr-defined]
    i = s.index_at(hist.end_s)
    return float(np.mean(np.abs(s.values[i : i + h] - fc.mean)))


# -- daily shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("step_s", [60, 300, 600])
def test_a_daily_shape_is_the_median_day_normalised_whatever_the_step(step_s: int) -> None:
    s = series(AFTERNOON[0], step_s=step_s)
    shape = daily_shape(s)
    assert shape is not None and shape.values.shape == (MINUTES_PER_DAY,)
    assert shape.values.mean() == pytest.approx(1.0)
    peak_hour = shape.values.argmax() / 60
    assert 12.5 <= peak_hour <= 15.5  # the generator's 14:00 peak
    assert shape.values.max() / shape.values.min() > 2.5  # peak to trough 5, smoothed and noisy
    # averaged back onto the series' own step, it follows the traffic
    m = shape.over(s.start_s, s.step_s, len(s))
    assert np.corrcoef(m, s.values)[0, 1] > 0.8


def test_no_shape_under_two_days_or_without_traffic() -> None:
    s = series(AFTERNOON[0])
    assert daily_shape(s.slice(0, round(1.5 * DAY / 300))) is None
    assert daily_shape(TrafficSeries("idle", s.start_s, 300, np.zeros(len(s)))) is None
    assert median_shape([], "nothing") is None
    with pytest.raises(ValueError, match="1440 finite values"):
        DailyShape(np.ones(10), "short")


# -- the borrowed-shape model ------------------------------------------------------------------------


def fleet_shapes(exclude: str = "") -> list[DailyShape]:
    out = [daily_shape(series(t, seed=7)) for t in AFTERNOON if t.name != exclude]
    return [s for s in out if s is not None]


def test_twelve_hours_old_it_sees_the_afternoon_rise_that_the_recent_level_misses() -> None:
    s = series(AFTERNOON[0], seed=3)
    hist = young(s, end_hour=9.0, hours=12)  # 21:00 to 09:00: the rise to 14:00 is ahead
    h = round(6 * HOUR / 300)
    borrowed = mae(s, hist, BorrowedShape(fleet_shapes(exclude="m0")), h)
    flat = mae(s, hist, RecentLevel(), h)
    assert borrowed < 0.7 * flat


def test_the_shape_is_followed_only_as_far_as_the_models_own_hours_bear_it_out() -> None:
    flat_shape = TrafficShape("flat", mean_rps=50.0, peak_to_trough=1.0, bursts_per_day=0.0)
    s = series(flat_shape, seed=5)
    model = BorrowedShape(fleet_shapes()).fit(young(s, end_hour=12.0, hours=12))
    assert model._beta == 0.0  # its own flat hours said: do not follow the borrowed rise
    fc = model.predict(72, (0.9,))
    assert np.ptp(fc.mean) < 1e-9 * fc.mean.max() + 1e-9  # a flat level, as the recent level forecasts
    assert "strength 0" in " ".join(model.report.notes)


def test_of_a_fleet_with_two_kinds_of_day_it_borrows_the_kind_its_own_hours_follow() -> None:
    priors = [*fleet_shapes(), *(daily_shape(series(replace(NIGHT, name=f"n{i}"), seed=i)) for i in range(3))]
    s = series(NIGHT, seed=11)
    hist = young(s, end_hour=23.0, hours=12)  # 11:00 to 23:00: the night peak at 02:00 is ahead
    h = round(5 * HOUR / 300)
    model = BorrowedShape([p for p in priors if p is not None])
    nearest = mae(s, hist, model, h)
    assert "nearest its own hours" in model.prior.source
    assert model.prior.values.argmax() / 60 < 5 or model.prior.values.argmax() / 60 > 23
    median_of_all = median_shape([p for p in priors if p is not None], "all")
    assert median_of_all is not None
    assert nearest < mae(s, hist, BorrowedShape([median_of_all]), h)


def test_past_a_day_its_own_day_weighs_in_and_the_report_says_what_was_borrowed() -> None:
    s = series(AFTERNOON[1], seed=2)
    prior = fleet_shapes(exclude="m1")
    model = BorrowedShape(prior).fit(young(s, end_hour=9.0, hours=36))
    notes = " ".join(model.report.notes)
    assert "36.0 h of history: borrowed" in notes and "its own day weighs 0.75" in notes
    assert model.predict(12, (0.9,)).notes[0].startswith("borrowed:")


def test_profile_and_auto_borrow_under_two_days_and_fall_back_to_the_recent_level_without_priors() -> None:
    s = series(AFTERNOON[2], seed=4)
    hist = young(s, end_hour=9.0, hours=12)
    shapes = fleet_shapes(exclude="m2")
    for model in (SeasonalProfile(shapes), AutoModel(horizon_s=HOUR, priors=shapes)):
        model.fit(hist)
        assert model.report.fallback == "borrowed_shape", model.alias
        assert any("borrowed the median of the" in n for n in model.report.notes)
    assert SeasonalProfile().fit(hist).report.fallback == "recent_level"
    full = SeasonalProfile(shapes).fit(s)  # two days and more: its own profile, nothing borrowed
    assert full.report.fallback is None


# -- config and the service ----------------------------------------------------------------------------

BASE = """
models:
  - name: a
    query: sum(rate(a[1m]))
    capacity_rps: 10
  - name: b
    query: sum(rate(b[1m]))
    capacity_rps: 10
    prior: {prior}
"""


def test_a_prior_must_name_another_model() -> None:
    assert parse_config(yaml.safe_load(BASE.format(prior="a")), "t").models[1].prior == "a"
    for bad in ("b", "nope"):
        with pytest.raises(ConfigError, match=rf"models.1.prior='{bad}' must name another model; allowed: a"):
            parse_config(yaml.safe_load(BASE.format(prior=bad)), "t")


def controller(tmp_path: Path, prior: str | None) -> tuple[Controller, Clock]:
    old = [series(t, seed=20 + i) for i, t in enumerate(AFTERNOON[:3])]
    new = series(AFTERNOON[3], seed=30)
    now = new.start_s + 12 * DAY + 9 * HOUR
    born = now - 12 * HOUR
    clock = Clock(now)
    runtimes = []
    for s in [*old, new]:
        target = Target("Deployment", "demo", s.name)
        spec = PlannerSpec(capacity_rps_per_replica=5.0, t_load_s=300.0, tick_s=60.0, max_replicas=100)

        def history(t: float, s: TrafficSeries = s) -> TrafficSeries:
            h = s.before(t)
            return h.slice(h.index_at(born), len(h)) if s.name == new.name else h

        runtimes.append(
            ModelRuntime(
                s.name, target, spec, history, forecaster="auto-fast", prior=prior if s is new else None
            )
        )
    act = GuardedActuator(
        SimulatedFleet(clock, 300.0), rails={r.target: Rails(mode=Mode.SHADOW) for r in runtimes}
    )
    store = DecisionStore(f"sqlite:///{tmp_path / 'prewarm.db'}")
    return Controller(runtimes, act, store), clock


def test_the_service_gives_a_young_model_the_fleets_shapes_or_its_named_prior(tmp_path: Path) -> None:
    ctl, clock = controller(tmp_path, prior=None)
    ctl.refit_model("m3", clock.t)
    report = ctl.models["m3"].model.report  # type: ignore[union-attr]
    assert report.fallback == "borrowed_shape"
    assert any("of 3 fleet shapes nearest its own hours" in n for n in report.notes)
    ctl.refit_model("m0", clock.t)  # an old model borrows nothing
    assert ctl.models["m0"].model.report.fallback is None  # type: ignore[union-attr]

    ctl, clock = controller(tmp_path, prior="m1")
    ctl.refit_model("m3", clock.t)
    report = ctl.models["m3"].model.report  # type: ignore[union-attr]
    assert report.fallback == "borrowed_shape"
    assert any("borrowed m1's daily shape" in n for n in report.notes)


def test_a_borrowed_shape_at_a_fixed_strength_follows_it_and_bad_strengths_are_refused() -> None:
    ramp = DailyShape(np.linspace(0.5, 1.5, 1440), "a ramp")
    series = TrafficSeries("young", 0.0, 300, np.full(144, 100.0))
    flat = BorrowedShape([ramp], strengths=(0.0,)).fit(series)
    full = BorrowedShape([ramp], strengths=(1.0,)).fit(series)
    assert np.allclose(flat.predict(12, (0.5,)).mean, flat.predict(12, (0.5,)).mean[0])
    assert full.predict(12, (0.5,)).mean[-1] > full.predict(12, (0.5,)).mean[0]
    with pytest.raises(ValueError, match=r"strengths must be in \[0, 1\]"):
        BorrowedShape([ramp], strengths=(1.5,))
