"""Soak: the service loop holding many models for days of simulated time, with faults, killed and restarted.

    python -m benchmarks.soak [--models 1000] [--days 3] [--tick 60] [--seed 0] [--json]

A child process runs the control loop (`Jobs.tick_all`, as `prewarm serve` schedules it) over the synthetic
fleet in accelerated time on one SQLite store, with faults drawn from `--seed`:
- Prometheus errors and timeouts: outage windows in which a share of the models' traffic reads fail, and
  scattered single timeouts (typed PrometheusErrors, as the source raises them); a model whose data is older
  than 300 s reads as stale, as the service judges it;
- actuator storms: windows in which writes fail with 409 Conflict or 503 and reads with 503;
- a refit worker killed (SIGKILL) while the first night's full fits are in flight;
- the process itself SIGKILLed mid-tick on day 1, and restarted on the same store.
The parent then reads the store and checks: no committed decision lost, no scale-down on missing data,
every model ticked within two ticks of its due time, and resident memory flat after warm-up: sampled every
simulated hour in the restarted process (the one that runs to the end; the first is killed on day 1), its
last sample within 10% of the first one taken once the fleet is warm (at most 5% of an hour's decisions
without a forecast: the restart refits every model, and memory grows as their forecasts land). The report
carries the curve and the share of decisions without a forecast by hour.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.patches import apply as patched

DAY = 86_400
HOUR = 3_600
WARM_MISSING = 0.05  # warm once at most this share of an hour's decisions found no forecast
STALE_AFTER_S = 300.0
HOLD_REASONS = ("ForecastStale", "DataDropout", "ForecastMissing", "ObservedRateMissing")


@dataclass(frozen=True)
class SoakConfig:
    models: int = 1000
    days: int = 3
    tick_s: int = 60
    seed: int = 0
    store: str = "soak.db"
    workers: int = 2
    speed: float = 0.0  # simulated seconds per real second at most (0: as fast as the ticks run)


@dataclass(frozen=True)
class Faults:
    """When each fault happens, in ticks from the start; drawn once from the seed (parent and child agree)."""

    outages: list[tuple[int, int, float]]  # (first tick, last tick, share of models whose reads fail)
    storms: list[tuple[int, int]]
    timeout_p: float
    kill_worker_tick: int  # the first tick after midnight: the night's full fits are running
    kill_process_tick: int

    @classmethod
    def draw(cls, cfg: SoakConfig, start_s: float) -> Faults:
        rng = np.random.default_rng(cfg.seed)
        per_day = DAY // cfg.tick_s
        midnight = int(((DAY - start_s % DAY) % DAY) // cfg.tick_s) + 1  # the night's full fits start
        n = cfg.days * per_day

        def windows(k: int, lo_s: float, hi_s: float) -> list[tuple[int, int]]:
            out = []
            for _ in range(k):
                first = int(rng.integers(per_day // 12, n - per_day // 12))
                out.append((first, first + int(rng.uniform(lo_s, hi_s) / cfg.tick_s)))
            return out

        outages = [(a, b, float(rng.uniform(0.2, 0.8))) for a, b in windows(2 * cfg.days, 300, 1800)]
        return cls(
            outages=outages,
            storms=windows(2 * cfg.days, 300, 1200),
            timeout_p=0.002,
            kill_worker_tick=midnight,
            kill_process_tick=int(rng.integers(per_day // 8, per_day // 2)),
        )


# -- the child: the service loop with faults ---------------------------------------------------------------


def child(cfg: SoakConfig, resume: bool) -> None:
    from actuator.base import ActuationResult, ColdStart, Outcome, ReplicaState, Target
    from actuator.errors import TransientError
    from compute.local import LocalCompute
    from forecaster.sources.prometheus import PrometheusError
    from forecaster.sources.synthetic import synthetic_fleet
    from forecaster.types import TrafficSeries
    from planner.explain import Decision
    from service.heap import Heap
    from service.runtime import SimulatedFleet
    from service.serve import Jobs, build_demo, demo_start_s
    from service.view import ControllerView

    start = demo_start_s()
    faults = Faults.draw(cfg, start)
    clock_t = [start]

    def clock() -> float:
        return clock_t[0]

    def tick_index() -> int:
        return round((clock() - start) / cfg.tick_s)

    def active(windows: list[tuple[int, int]]) -> bool:
        k = tick_index()
        return any(a <= k <= b for a, b in windows)

    compute = LocalCompute(cfg.workers)
    ctl = build_demo(
        clock,
        f"sqlite:///{cfg.store}",
        tick_s=float(cfg.tick_s),
        forecaster="profile",
        slo_target=None,
        shapes=synthetic_fleet(cfg.models),
        days_after=cfg.days + 1,
        compute=compute,
    )
    if resume:  # continue the simulated clock after the newest committed tick
        db = sqlite3.connect(cfg.store)
        (last,) = db.execute("SELECT max(at_s) FROM decisions").fetchone()
        db.close()
        clock_t[0] = float(last)

    class FaultyHistory:
        """A model's traffic reads through a Prometheus that fails in outages and times out now and then."""

        def __init__(self, name: str, inner: Any, share_key: float) -> None:
            self.name, self.inner, self.share_key = name, inner, share_key
            self.rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
            self.last_ok_end: float | None = None

        def __call__(self, now_s: float) -> TrafficSeries:
            k = round((now_s - start) / cfg.tick_s)
            for a, b, share in faults.outages:
                if a <= k <= b and self.share_key < share:
                    raise PrometheusError(
                        "unreachable", "Prometheus is unreachable (soak outage)", transient=True
                    )
            if self.rng.random() < faults.timeout_p:
                raise PrometheusError("timeout", "Prometheus did not answer in time (soak)", transient=True)
            series: TrafficSeries = self.inner(now_s)
            self.last_ok_end = series.end_s
            return series

        def stale(self) -> str:
            if self.last_ok_end is None:
                return "no traffic data loaded yet"
            age = clock() - self.last_ok_end
            if age <= STALE_AFTER_S:
                return ""
            return f"the newest sample is {age:.0f} s old (limit {STALE_AFTER_S:g} s)"

    for i, r in enumerate(ctl.models.values()):
        h = FaultyHistory(r.name, r.history, (i * 0.6180339887) % 1.0)
        r.history, r.stale = h, h.stale

    class StormyFleet:
        """The simulated fleet behind an API server that answers 409 and 503 in storms."""

        def __init__(self, inner: SimulatedFleet) -> None:
            self.inner = inner
            self.rng = np.random.default_rng(cfg.seed + 1)

        def current(self, target: Target) -> ReplicaState:
            if active(faults.storms) and self.rng.random() < 0.3:
                raise TransientError(f"reading {target}: HTTP 503: service unavailable (soak)", delay_s=10.0)
            return self.inner.current(target)

        def apply(self, target: Target, decision: Decision, decision_id: str) -> ActuationResult:
            if active(faults.storms):
                code = "409: the object has been modified" if self.rng.random() < 0.5 else "503: unavailable"
                return ActuationResult(
                    Outcome.FAILED, f"scaling {target}: HTTP {code} (soak)", retry_after_s=10.0
                )
            return self.inner.apply(target, decision, decision_id)

        def cold_starts(self, target: Target) -> list[ColdStart]:
            return self.inner.cold_starts(target)

    ctl.actuator.inner = StormyFleet(ctl.actuator.inner)  # type: ignore[arg-type,assignment]
    jobs = Jobs(ctl, ControllerView(ctl, clock), clock, compute=compute, heap=Heap())
    n_ticks = cfg.days * DAY // cfg.tick_s
    db = sqlite3.connect(cfg.store)

    def say(**doc: Any) -> None:
        print(json.dumps(doc), flush=True)

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    wall0, k0 = time.monotonic(), tick_index()
    while True:
        if cfg.speed > 0:  # accelerated, not instantaneous: the fits in the workers take real seconds
            ahead = (tick_index() - k0) * cfg.tick_s / cfg.speed - (time.monotonic() - wall0)
            if ahead > 0:
                time.sleep(ahead)
        clock_t[0] += cfg.tick_s
        k = tick_index()
        if k > n_ticks:
            break
        say(event="tick", tick=k)  # the parent may kill here: mid-tick
        jobs.tick_all()
        jobs.collect()  # the service's collector between ticks (finished fits, the hourly full collection)
        if k == faults.kill_worker_tick and compute._pool is not None:
            victim = next(iter(compute._pool._processes))  # a worker running tonight's full fits
            os.kill(victim, signal.SIGKILL)
            say(event="worker_killed", tick=k, pid=victim)
        (committed,) = db.execute("SELECT max(id) FROM decisions").fetchone()
        say(event="committed", tick=k, max_id=committed)
        if k % (DAY // cfg.tick_s) == 0:
            say(event="day", day=k // (DAY // cfg.tick_s), rss_mb=round(rss_mb(), 1))
        if k % max(1, HOUR // cfg.tick_s) == 0:
            say(event="rss", tick=k, resumed=resume, rss_mb=round(rss_mb(), 1))
    compute.close()


# -- the parent: run, kill, restart, check --------------------------------------------------------------


def _spawn(cfg: SoakConfig, resume: bool) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "benchmarks.soak", "--child", json.dumps(asdict(cfg))]
    return subprocess.Popen(
        [*args, "--resume"] if resume else args,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    from service.serve import demo_start_s

    faults = Faults.draw(cfg, demo_start_s())
    Path(cfg.store).unlink(missing_ok=True)
    events: list[dict[str, Any]] = []
    first = _spawn(cfg, resume=False)
    assert first.stdout is not None
    for line in first.stdout:
        doc = json.loads(line)
        events.append(doc)
        if doc["event"] == "tick" and doc["tick"] == faults.kill_process_tick:
            first.send_signal(signal.SIGKILL)  # mid-tick
            break
    first.wait()
    committed_before_kill = max((e["max_id"] or 0 for e in events if e["event"] == "committed"), default=0)
    second = _spawn(cfg, resume=True)
    assert second.stdout is not None
    for line in second.stdout:
        events.append(json.loads(line))
    if second.wait() != 0:
        raise RuntimeError(f"the restarted service exited with {second.returncode}")
    return check(cfg, faults, events, committed_before_kill)


def check(
    cfg: SoakConfig, faults: Faults, events: list[dict[str, Any]], committed_before_kill: int
) -> dict[str, Any]:
    db = sqlite3.connect(cfg.store)
    ids = {i for (i,) in db.execute("SELECT id FROM decisions WHERE id <= ?", (committed_before_kill,))}
    lost = committed_before_kill - len(ids)
    # a decision stored as a patch of its base is read back whole (service/store.py), each base parsed once
    bases = {i: json.loads(rec) for i, rec in db.execute("SELECT id, record FROM decision_bases")}
    rows = [
        (model, at_s, current, desired, patched(bases[base], json.loads(rec)) if base else json.loads(rec))
        for model, at_s, current, desired, rec, base in db.execute(
            "SELECT model, at_s, current_replicas, desired_replicas, record, base_id FROM decisions "
            "ORDER BY model, at_s"
        )
    ]
    down_on_missing = []
    worst_gap: dict[str, float] = {}
    last: dict[str, float] = {}
    held = 0
    for model, at_s, current, desired, record in rows:
        reasons = record["reasons"]
        if any(r in HOLD_REASONS for r in reasons):
            held += 1
            if desired < current:
                down_on_missing.append((model, at_s, current, desired, reasons))
        if model in last:
            worst_gap[model] = max(worst_gap.get(model, 0.0), at_s - last[model])
        last[model] = at_s
    days = {e["day"]: e["rss_mb"] for e in events if e["event"] == "day"}
    curve = [
        (e["tick"] * cfg.tick_s / HOUR, e["rss_mb"], e["resumed"]) for e in events if e["event"] == "rss"
    ]
    # warm-up: the restarted process refits every model, and memory grows as their forecasts land (at 10,000
    # models on 2 workers, for most of a simulated day). It ends at the first hour in which at most
    # WARM_MISSING of the decisions found no forecast; growth after it is what would grow for good (None:
    # the run ended first, too short to judge)
    t0 = min((at for _, at, *_ in rows), default=0.0)
    missing: dict[int, list[bool]] = {}
    for _, at_s, _, _, record in rows:
        missing.setdefault(int((at_s - t0) // HOUR), []).append("ForecastMissing" in record["reasons"])
    share = {h: sum(v) / len(v) for h, v in missing.items()}
    after = [(h, mb) for h, mb, resumed in curve if resumed]
    warm_at = next((i for i, (h, _) in enumerate(after) if share.get(int(h) - 1, 1.0) <= WARM_MISSING), None)
    warm = after[warm_at][1] if warm_at is not None and warm_at < len(after) - 1 else None
    growth = round(after[-1][1] / warm - 1, 4) if warm else None
    per_day = DAY // cfg.tick_s
    out = {
        "config": asdict(cfg),
        "ticks": cfg.days * per_day,
        "decisions": len(rows),
        "killed_at_tick": faults.kill_process_tick,
        "worker_killed": any(e["event"] == "worker_killed" for e in events),
        "committed_before_kill": committed_before_kill,
        "lost_decisions": lost,
        "decisions_on_missing_data": held,
        "scale_downs_on_missing_data": len(down_on_missing),
        "models_ticked": len(last),
        "worst_gap_ticks": round(max(worst_gap.values(), default=0.0) / cfg.tick_s, 2),
        "rss_mb_by_day": days,
        "rss_growth_day1_to_day3": (
            round(days[cfg.days] / days[1] - 1, 4) if cfg.days > 1 and {1, cfg.days} <= days.keys() else None
        ),
        "rss_mb_by_hour": [[round(h, 2), mb, "restarted" if r else "first"] for h, mb, r in curve],
        "rss_growth_after_warmup": growth,
        "warm_from_hour": after[warm_at][0] if warm is not None and warm_at is not None else None,
        "no_forecast_share_by_hour": {h + 1: round(v, 3) for h, v in sorted(share.items())},
    }
    out["ok"] = bool(
        lost == 0
        and not down_on_missing
        and out["models_ticked"] == cfg.models
        and out["worst_gap_ticks"] <= 2
        and growth is not None
        and abs(growth) <= 0.10
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--tick", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default="soak.db")
    ap.add_argument("--speed", type=float, default=0.0, help="simulated s per real s at most (0: unpaced)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(SoakConfig(**json.loads(args.child)), args.resume)
        return
    cfg = SoakConfig(args.models, args.days, args.tick, args.seed, args.store, args.workers, args.speed)
    report = run_soak(cfg)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
