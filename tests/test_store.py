"""The decision store: atomic decision + state, restart-safe, retention; and a process killed mid-write
loses no committed decision."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from service.store import DecisionStore

WRITER = """
import sys
from service.store import DecisionStore
store = DecisionStore(sys.argv[1])
for i in range(100000):
    d = {"at_s": float(i), "valid": True, "current_replicas": 1, "raw_replicas": 2, "desired_replicas": 2,
         "reason": "ForecastDemand", "steps": [], "inputs": {}, "explanation": "x" * 200}
    n = store.record("m", d, {"outcome": "applied"}, {"recommendations": [[float(i), 2]], "scale_events": []})
    print(n, flush=True)
"""


def decision(at_s: float) -> dict[str, object]:
    return {
        "at_s": at_s,
        "valid": True,
        "current_replicas": 1,
        "raw_replicas": 3,
        "desired_replicas": 3,
        "reason": "ForecastDemand",
        "steps": [],
        "inputs": {},
        "explanation": "3 replicas",
    }


def test_a_decision_and_its_state_are_stored_together_and_read_back(tmp_path: Path) -> None:
    store = DecisionStore(f"sqlite:///{tmp_path / 's.db'}")
    a = store.record("m", decision(10.0), None, {"recommendations": [[10.0, 3]], "scale_events": []})
    store.set_actuation(a, {"outcome": "applied", "message": "1 -> 3"})
    b = store.record("m", decision(20.0), None, {"recommendations": [[20.0, 3]], "scale_events": []})
    assert [d.id for d in store.decisions("m")] == [b, a]
    assert store.decision(a).actuation == {"outcome": "applied", "message": "1 -> 3"}  # type: ignore[union-attr]
    again = DecisionStore(f"sqlite:///{tmp_path / 's.db'}")  # a restart
    assert again.state("m") == {"recommendations": [[20.0, 3]], "scale_events": []}
    assert again.purge(15.0) == 1 and [d.id for d in again.decisions("m")] == [b]


def test_a_process_killed_mid_write_loses_no_committed_decision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    committed = [int(proc.stdout.readline()) for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no final checkpoint
    proc.wait()
    store = DecisionStore(url)
    for i in committed:
        assert store.decision(i) is not None, f"decision {i} was reported committed but is gone"
    latest = store.decisions("m", limit=1)[0]
    # the stored planner state is the one the newest stored decision produced
    assert store.state("m") == {"recommendations": [[latest.at_s, 2]], "scale_events": []}


def test_a_database_from_before_an_index_existed_gets_it_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store = DecisionStore(f"sqlite:///{db}")
    store.record("m", decision(5.0), None, {})
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_decisions_model_at")
    again = DecisionStore(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM decisions WHERE model = 'm' ORDER BY at_s DESC LIMIT 20"
        ).fetchall()
    assert "ix_decisions_model_at" in names
    assert "ix_decisions_model_at" in str(plan) and "TEMP B-TREE" not in str(plan)  # no sort per request
    assert [d.at_s for d in again.decisions("m")] == [5.0]


def test_a_ticks_decisions_of_many_models_are_stored_in_order_with_their_states(tmp_path: Path) -> None:
    store = DecisionStore(f"sqlite:///{tmp_path / 'p.db'}")
    store.record("b", decision(0.0), None, {"recommendations": [[0.0, 1]], "scale_events": []})
    items = [(m, decision(30.0), {"recommendations": [[30.0, i]], "scale_events": []}) for i, m in
             enumerate(["a", "b", "c"])]  # fmt: skip
    ids = store.record_many(items)
    assert len(ids) == 3 and ids == sorted(ids)
    for (model, _, state), decision_id in zip(items, ids, strict=True):
        stored = store.decision(decision_id)
        assert stored is not None and stored.model == model and stored.actuation is None
        assert store.state(model) == state  # "b" updated, "a" and "c" inserted
    store.set_actuations([(ids[0], {"outcome": "applied"}), (ids[2], {"outcome": "failed"})])
    assert [store.decision(i).actuation for i in ids] == [  # type: ignore[union-attr]
        {"outcome": "applied"},
        None,
        {"outcome": "failed"},
    ]
    assert store.record_many([]) == []


def test_a_failed_batch_stores_none_of_its_decisions(tmp_path: Path) -> None:
    store = DecisionStore(f"sqlite:///{tmp_path / 'p.db'}")
    unstorable = {"recommendations": object()}  # fails inside the transaction, after the decisions' insert
    with pytest.raises(Exception, match="JSON serializable"):
        store.record_many([("a", decision(30.0), {}), ("b", decision(30.0), unstorable)])
    assert store.decisions("a") == [] and store.decisions("b") == [] and store.state("a") is None
