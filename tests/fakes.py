"""Hand-written test doubles shared by the service tests."""

from __future__ import annotations

from pathlib import Path

from service.runtime import Controller
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView


class Clock:
    """A clock the test moves by hand: `clock.t += 60`."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ticked_demo(store: Path, minutes: int) -> tuple[Controller, ControllerView, Clock]:
    """The embedded demo after `minutes` one-minute control ticks (forecasts fitted, decisions recorded)."""
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{store}")
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock)
    for _ in range(minutes):
        jobs.tick_all()
        clock.t += 60
    jobs.tick_all()
    return ctl, view, clock
