from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from forecaster.sources.synthetic import DEMO_FLEET, DOCS_ASSISTANT, TrafficShape, generate
from forecaster.types import TrafficSeries

ROOT = Path(__file__).resolve().parent.parent
SHARED_TRACES = ROOT.parent / "shared" / "traces"
pytest_plugins = ["tests.kube_cluster"]  # the real Kubernetes control plane, one per test run


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """../shared/traces; CI always has it, so there a missing folder is a failure, not a skip."""
    if not SHARED_TRACES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_TRACES} is missing in CI")
        pytest.skip(f"{SHARED_TRACES} not present")
    return SHARED_TRACES


@pytest.fixture(scope="session")
def chat_15d() -> TrafficSeries:
    """15 days of the demo's chat model at 5-minute steps: daily + weekly shape, drift, bursts."""
    return generate(DEMO_FLEET[0], days=15, step_s=300, seed=1)


def periodic_series(
    days: float, step_s: int, *, noise: float = 0.0, weekend: float = 1.0, seed: int = 0, level: float = 100.0
) -> TrafficSeries:
    """A clean daily sinusoid (peak/trough 3) with optional weekend factor and multiplicative noise."""
    n = int(days * 86400 / step_s)
    t = step_s * np.arange(n, dtype=np.float64)
    daily = np.exp(0.55 * np.sin(2 * np.pi * t / 86400))
    dow = np.floor(t / 86400) % 7
    rate = level * daily * np.where(dow >= 5, weekend, 1.0)
    if noise:
        rate = rate * np.exp(np.random.default_rng(seed).normal(0, noise, n))
    return TrafficSeries("periodic", 0.0, step_s, rate)


def shape(name: str = "t", **kw: float) -> TrafficShape:
    return TrafficShape(name, **{"mean_rps": 10.0, **kw})  # type: ignore[arg-type]


def working_hours(weekdays_only: bool = True) -> TrafficShape:
    """A sparse model used in sessions during working hours (6 of 20 minutes a day between 08 and 18): the
    demo's assistant, on weekdays only or every day."""
    return replace(DOCS_ASSISTANT, weekdays_only=weekdays_only)
