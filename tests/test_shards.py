"""Several prewarm replicas sharing one fleet: models hash to shards, each shard has a Lease, each replica
holds an even share; when one dies its shards move to the others one lease duration after its last renew,
and at no instant do two replicas hold one shard. Against the real control plane (tests/kube_cluster.py),
through the official client, with the permissions of the Role prewarm ships; time is passed in."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from actuator.base import Outcome
from actuator.leader import LeaseElector, Membership, member_lease_name, process_identity
from forecaster.sources.synthetic import synthetic_fleet
from planner.explain import Decision, Reason
from service.compose import build_from_config
from service.config import ConfigError, parse_config
from service.leadership import ShardLoop, assign, shard_of
from service.serve import Jobs, build_demo, demo_start_s
from service.view import ControllerView
from tests.fakes import Clock, HeldShards
from tests.kube_cluster import KubeCluster
from tests.test_kube_real import RBAC_YAML, Kube, service_account_with

SHARDS = 6
STEP_S = 0.5
RETRY_S = 2.0
DURATION_S = 15.0


@pytest.fixture
def kube(kube_cluster: KubeCluster, kube_ns: str) -> Kube:
    return Kube(kube_cluster, kube_ns)


def leader_election_rules() -> list[dict[str, Any]]:
    """The rules of the Role prewarm ships for its own namespace's Leases."""
    docs = [d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "prewarm-leader-election"]
    return list(role["rules"])


def replica(kube: Kube, token: str, name: str, now: list[float]) -> ShardLoop:
    api = kube.cluster.api_as(token)
    identity = process_identity(name)

    def elector(lease: str) -> LeaseElector:
        return LeaseElector(api, namespace=kube.ns, name=lease, identity=identity, retry_period_s=RETRY_S)

    membership = Membership(elector(member_lease_name("prewarm", identity)), "prewarm")
    return ShardLoop(membership, [elector(f"prewarm-{k}") for k in range(SHARDS)], lambda: now[0])


def test_three_replicas_split_the_shards_and_a_dead_ones_move_to_the_others_with_none_held_twice(
    kube: Kube,
) -> None:
    """Four minutes stepped by value (each replica renews every 2 s, on its own phase): the three hold two
    shards each, and when one is killed (it never steps again, nor releases) the other two hold three each
    from one lease duration (plus a renew period) after its last renew on."""
    token = service_account_with(kube, leader_election_rules(), name="prewarm-shards")
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()
    now = [t0]
    loops = {name: replica(kube, token, name, now) for name in ("pod-a", "pod-b", "pod-c")}
    dead: set[str] = set()
    killed_at = 120.0
    last_renew: dict[str, float] = {}
    twice: list[tuple[float, int]] = []
    held: dict[float, dict[str, list[int]]] = {}
    for i in range(int(240 / STEP_S)):
        at = i * STEP_S
        now[0] = t0 + at
        for j, (name, loop) in enumerate(loops.items()):
            if name not in dead and (at - 0.5 * j) % RETRY_S == 0:
                loop.step()
                last_renew[name] = at
                errors = [e.last_error for e in loop.electors] + [loop.membership.last_error]
                assert not any(errors), errors
        if at == killed_at:
            dead.add("pod-c")
        # a dead replica acts on nothing, whatever it last believed
        held[at] = {name: loop.held() for name, loop in loops.items() if name not in dead}
        counts = Counter(k for shards in held[at].values() for k in shards)
        twice.extend((at, k) for k, n in counts.items() if n > 1)
    assert twice == []
    settled = held[killed_at - STEP_S]
    assert sorted(len(s) for s in settled.values()) == [2, 2, 2]
    assert sorted(k for s in settled.values() for k in s) == list(range(SHARDS))
    # once the survivors have seen the dead one's Leases unchanged for a lease duration, they hold all
    deadline = last_renew["pod-c"] + DURATION_S + 2 * RETRY_S
    after = [
        at
        for at, h in held.items()
        if at > killed_at and sorted(k for s in h.values() for k in s) == list(range(SHARDS))
    ]
    assert after and after[0] <= deadline
    assert all(sorted(len(s) for s in held[at].values()) == [3, 3] for at in held if at >= deadline)
    # the dead replica's shards moved; the survivors kept theirs
    for name in ("pod-a", "pod-b"):
        assert set(settled[name]) <= set(held[239.5][name])


def test_a_replica_that_stops_cleanly_hands_its_shards_over_at_the_next_renew(kube: Kube) -> None:
    token = service_account_with(kube, leader_election_rules(), name="prewarm-shards")
    now = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()]
    a, b = replica(kube, token, "pod-a", now), replica(kube, token, "pod-b", now)
    for _ in range(3):  # each sees the other, then both settle
        a.step(), b.step()
        now[0] += RETRY_S
    assert sorted(a.held() + b.held()) == list(range(SHARDS)) and len(a.held()) == len(b.held()) == 3
    a.stop(release=True)
    assert a.held() == []
    b.step()  # a's membership Lease is released: b is alone, and a's shard Leases are free
    assert b.held() == list(range(SHARDS))
    # a gone for good: once b has seen its membership Lease unchanged for 20 lease durations, b deletes it
    now[0] += 20 * DURATION_S + RETRY_S
    b.step()
    names = {lease.metadata.name for lease in kube.coord.list_namespaced_lease(kube.ns).items}
    assert member_lease_name("prewarm", b.identity) in names
    assert member_lease_name("prewarm", a.identity) not in names
    assert b.held() == list(range(SHARDS))


@given(
    members=st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=6, unique=True),
    shards=st.integers(1, 40),
    held_by=st.lists(st.integers(-1, 7), max_size=40),
)
def test_every_shard_has_one_owner_each_member_an_even_share_and_a_held_shard_moves_only_if_it_must(
    members: list[str], shards: int, held_by: list[int]
) -> None:
    # who holds each shard now: a member, a dead replica ("gone"), or nobody
    holders = {
        k: (members[h] if h < len(members) else "gone") for k, h in enumerate(held_by[:shards]) if h >= 0
    }
    owners = assign(shards, members, holders)
    assert sorted(owners) == list(range(shards))
    counts = Counter(owners.values())
    assert max(counts.values()) - min(counts.get(m, 0) for m in members) <= 1
    for m in members:  # a member keeps as many of its shards as its share allows
        had = [k for k, h in holders.items() if h == m]
        assert sum(owners[k] == m for k in had) == min(len(had), counts.get(m, 0))
    assert assign(shards, list(reversed(members)), holders) == owners  # the order they are listed in is moot


def test_models_hash_to_shards_stably_and_about_evenly() -> None:
    names = [f"model-{i:04d}" for i in range(1200)]
    counts = Counter(shard_of(n, 12) for n in names)
    assert sorted(counts) == list(range(12)) and max(counts.values()) < 1.3 * min(counts.values())
    assert (shard_of("llm", 12), shard_of("chat-large", 12)) == (0, 7)  # crc32: the same in every process


def test_a_replica_plans_refreshes_and_reports_only_the_models_of_the_shards_it_holds(tmp_path: Path) -> None:
    clock = Clock(demo_start_s())
    ctl = build_demo(clock, f"sqlite:///{tmp_path / 's.db'}", shapes=synthetic_fleet(24), gpu_budget=30.0)
    shards = HeldShards(shards=4, mine={0, 1})
    ctl.leader = shards
    guarded = ctl.actuator
    guarded.holds = lambda t: shards.holds(ctl.shard(t.name))
    view = ControllerView(ctl, clock)
    jobs = Jobs(ctl, view, clock)
    mine = {name for name in ctl.models if shard_of(name, 4) in (0, 1)}
    assert 0 < len(mine) < len(ctl.models)
    jobs.tick_all()
    decided = {name for name in ctl.models if ctl.store.decisions(name)}
    refreshed = {name for name, r in ctl.models.items() if r.forecast is not None}
    assert decided == refreshed == mine
    ready = view.readiness()[1]
    assert set(ready["models"]) == mine
    assert ready["shards"] == {
        "count": 4,
        "held": [0, 1],
        "members": ["pod-a", "pod-b"],
        "models": len(mine),
        "budget_share": round(len(mine) / len(ctl.models), 6),  # one GPU a replica each
    }
    metrics = {name: v for name, _, _, v in view.metrics() if name.startswith("prewarm_shards")}
    assert metrics == {"prewarm_shards": 4.0, "prewarm_shards_held": 2.0}
    # the fleet stage shares out this replica's part of the budget, and says so
    fleet = view.fleet()
    assert fleet["shards"]["held"] == [0, 1] and fleet["budget_gpus"] == pytest.approx(30.0 * len(mine) / 24)
    # a write for another replica's model is refused, whatever asked for it
    other = next(name for name in ctl.models if name not in mine)
    ask = Decision(clock.t, True, 1, 3, 3, Reason.FORECAST_DEMAND, ())
    result = guarded.apply(ctl.models[other].target, ask, "1")
    assert result.outcome is Outcome.SKIPPED and "holds the shard Lease of Simulated/demo/" in result.message
    assert guarded.apply(ctl.models[min(mine)].target, ask, "2").outcome is Outcome.APPLIED
    # the shards move: the next tick plans the newly held ones (and leaves the lost ones to their holder)
    shards.mine = {2}
    clock.t += 30
    jobs.tick_all()
    now_mine = {name for name in ctl.models if shard_of(name, 4) == 2}
    assert {
        name for name in ctl.models if len(ctl.store.decisions(name)) == 1 and name not in mine
    } == now_mine


def test_shards_without_a_kubernetes_target_are_refused_by_name() -> None:
    doc = {
        "prometheus": {"url": "http://127.0.0.1:9"},
        "models": [
            {
                "name": "llm",
                "query": "sum(rate(x[1m]))",
                "capacity_rps": 5,
                "target": {"kind": "RayServe", "namespace": "serve", "name": "llm"},
            }
        ],
        "kubernetes": {"shards": 3},
    }
    with pytest.raises(
        ConfigError, match=r"kubernetes.shards=3: .*no model targets a Deployment.*allowed: 1"
    ):
        build_from_config(parse_config(doc), Clock(0.0))
