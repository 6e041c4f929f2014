"""Hand-written test doubles shared by the service tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class HeldShards:
    """The service's Leadership port (service/leadership.py) holding the shards it is told: ShardLoop's
    side of the Leases is tested against the real control plane, the service's side with this."""

    shards: int
    mine: set[int]
    identity: str = "pod-a"
    on_change: Callable[[bool], None] | None = None
    members: tuple[str, ...] = ("pod-a", "pod-b")

    def leading(self) -> bool:
        return bool(self.mine)

    def holds(self, shard: int) -> bool:
        return shard in self.mine

    def held(self) -> list[int]:
        return sorted(self.mine)

    def problem(self) -> str | None:
        return None

    def step(self) -> object:
        return self.held()

    def start(self) -> None:
        pass

    def stop(self, *, release: bool = True) -> None:
        self.mine = set()


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
