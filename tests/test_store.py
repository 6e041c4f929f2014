"""The decision store: atomic decision + state, restart-safe, retention; and a process killed mid-write
loses no committed decision."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.patches import apply as patched
from service.patches import diff
from service.store import PATCH_LIMIT, DecisionStore, json_text

WRITER = """
import sys
from service.patches import apply as patched
from service.patches import diff
from service.store import PATCH_LIMIT, DecisionStore
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


@pytest.mark.parametrize("bulk_sql", [True, False], ids=["sqlite-statements", "sqlalchemy"])
def test_a_failed_batch_stores_none_of_its_decisions(tmp_path: Path, bulk_sql: bool) -> None:
    store = DecisionStore(f"sqlite:///{tmp_path / 'p.db'}")
    store.bulk_sql = bulk_sql
    unstorable = {"recommendations": object()}  # fails inside the transaction, after the decisions' insert
    with pytest.raises(Exception, match="JSON serializable"):
        store.record_many([("a", decision(30.0), {}), ("b", decision(30.0), unstorable)])
    assert store.decisions("a") == [] and store.decisions("b") == [] and store.state("a") is None


def test_the_ticks_sqlite_statements_write_the_rows_sqlalchemy_writes(tmp_path: Path) -> None:
    """The tick's writes as plain SQLite statements (ids, JSON text, states inserted and updated, patches and
    new bases, actuations) leave the database byte for byte as SQLAlchemy's executemany does."""
    tables = []
    for bulk_sql in (False, True):
        path = tmp_path / f"{bulk_sql}.db"
        store = DecisionStore(f"sqlite:///{path}")
        store.bulk_sql = bulk_sql
        store.record("b", decision(0.0), None, {"recommendations": [[0.0, 1]], "scale_events": []})
        for t in range(5):
            at = 30.0 * t
            made = [
                (
                    m,
                    steady(at, desired=5 if (t, m) == (3, "a") else 3, observed=10.0 + t),
                    {"recommendations": [[at, t]]},
                )
                for m in ("a", "b", "c")
            ]
            if t == 2:
                made.append(("c", {**steady(at), "steps": []}, {}))  # another shape: a new base mid-batch
            ids = store.record_many(made)
            assert ids == list(range(ids[0], ids[0] + len(made)))
            assert [store.decision(i).record for i in ids] == [dict(d) for _, d, _ in made]  # type: ignore[union-attr]
            store.set_actuations(
                [(ids[0], {"outcome": "applied", "tick": t}), (ids[-1], {"outcome": "failed"})]
            )
        with sqlite3.connect(path) as con:
            tables.append(
                [
                    list(con.execute(f"SELECT * FROM {t} ORDER BY 1"))
                    for t in ("decisions", "decision_bases", "planner_states")
                ]
            )
    assert tables[0] == tables[1] and len(tables[0][0]) == 17


def steady(at_s: float, desired: int = 3, observed: float = 10.0) -> dict[str, Any]:
    """A decision as a steady model makes it tick after tick: its time, window and observed rate move."""
    return {
        **decision(at_s),
        "desired_replicas": desired,
        "steps": [{"stage": "reactive_floor", "after": desired, "message": f"observed {observed:.3g} req/s"}],
        "inputs": {"observed_rps": observed, "window_start_s": at_s, "window_end_s": at_s + 630.0},
    }


def wide(value: float) -> dict[str, float]:
    """More inputs than a patch may change."""
    return {f"x{i}": value for i in range(PATCH_LIMIT)}


def stored(db: Path) -> list[tuple[int, Any, int | None]]:
    """(id, stored record, base id) of every decision row."""
    with sqlite3.connect(db) as conn:
        return [
            (i, json.loads(rec), b) for i, rec, b in conn.execute("SELECT id, record, base_id FROM decisions")
        ]


def bases(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [i for (i,) in conn.execute("SELECT id FROM decision_bases ORDER BY id")]


def test_a_steady_models_decisions_are_stored_as_patches_and_read_back_whole(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    store = DecisionStore(f"sqlite:///{db}")
    made = [steady(30.0), steady(60.0, observed=11.5), steady(90.0, observed=12.0), steady(120.0, desired=4)]
    ids = [store.record_many([("m", d, {})])[0] for d in made]
    rows = stored(db)
    (base,) = bases(db)
    assert all(b == base for _, _, b in rows)
    assert rows[0][1] == []  # the base's own decision: nothing to patch
    # the next: its time, window, rate and the sentence quoting it (a few values, not the whole record)
    assert sorted(tuple(path) for path, _ in rows[1][1]) == [
        ("at_s",),
        ("inputs", "observed_rps"),
        ("inputs", "window_end_s"),
        ("inputs", "window_start_s"),
        ("steps", 0, "message"),
    ]
    assert [d.record for d in reversed(store.decisions("m"))] == made
    assert [store.decision(i).record for i in ids] == made  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda d: {**d, "steps": [*d["steps"], {"stage": "bounds"}]}, id="a stage more"),
        pytest.param(lambda d: {**d, "inputs": {**d["inputs"], "queue_length": 2.0}}, id="an input more"),
        pytest.param(lambda d: {**d, "inputs": dict.fromkeys(d["inputs"], -1.0)}, id="many values"),
    ],
)  # fmt: skip
def test_a_decision_of_another_shape_is_stored_whole_as_a_new_base(
    tmp_path: Path, changed: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    db = tmp_path / "r.db"
    store = DecisionStore(f"sqlite:///{db}")
    first = {**steady(30.0), "inputs": steady(30.0)["inputs"] | wide(0.0)}
    store.record_many([("m", first, {}), ("n", steady(30.0), {})])
    other = changed(first)
    (i,) = store.record_many([("m", other, {})])
    assert len(bases(db)) == 3 and stored(db)[-1] == (i, [], bases(db)[-1])
    assert store.decision(i).record == other  # type: ignore[union-attr]


def test_a_purge_keeps_the_bases_that_kept_decisions_need(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    store = DecisionStore(f"sqlite:///{db}")
    made = [steady(float(t), observed=float(t)) for t in (30, 60, 90, 120)]
    for d in made:
        store.record_many([("m", d, {})])
    store.record_many([("gone", steady(30.0), {})])
    store.record_many([("gone", {**steady(35.0), "steps": []}, {})])  # a second base of its own
    assert len(bases(db)) == 3
    assert store.purge(45.0) == 3
    assert [d.record for d in reversed(store.decisions("m"))] == made[1:]  # their base is older, and kept
    assert len(bases(db)) == 2  # "gone"'s first base had no decision left; its newest is kept for the next
    again = DecisionStore(f"sqlite:///{db}")  # a restart: its bases are new ones
    again.purge(100.0)
    assert len(bases(db)) == 1 and [d.record for d in again.decisions("m")] == [made[3]]


def test_a_failed_batch_leaves_no_base_and_no_patch_of_what_it_did_not_store(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    store = DecisionStore(f"sqlite:///{db}")
    with pytest.raises(Exception, match="JSON serializable"):
        store.record_many([("m", steady(30.0), {}), ("n", steady(30.0), {"recommendations": object()})])
    assert bases(db) == []
    (first,) = store.record_many([("m", steady(60.0), {})])
    assert stored(db) == [(first, [], bases(db)[0])]
    assert store.decision(first).record == steady(60.0)  # type: ignore[union-attr]


def test_a_database_from_before_patches_gets_their_column_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    DecisionStore(f"sqlite:///{db}").record("m", decision(5.0), None, {})
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE decisions DROP COLUMN base_id")
        conn.execute("DROP TABLE decision_bases")
    again = DecisionStore(f"sqlite:///{db}")
    again.record_many([("m", steady(30.0), {})])
    again.record_many([("m", steady(60.0), {})])
    assert [d.record for d in again.decisions("m")] == [steady(60.0), steady(30.0), decision(5.0)]


scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5) | st.text(max_size=3)
documents = st.dictionaries(
    st.text(max_size=2), st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=2), inner, max_size=3), max_leaves=8), max_size=4
)  # fmt: skip


@given(base=documents, record=documents)
def test_a_patch_applied_to_its_base_gives_the_record_back_exactly(
    base: dict[str, Any], record: dict[str, Any]
) -> None:
    patch = diff(base, record, limit=1_000)
    if patch is None:  # only records of another shape get no patch
        assert base.keys() != record.keys() or base != record
        return
    again = patched(base, json.loads(json.dumps(patch)))  # as the store writes and reads it
    assert json.dumps(again) == json.dumps(record)  # equal, and written the same (1 is not 1.0)
    assert diff(base, base, limit=0) == []


@given(doc=documents | st.lists(documents, max_size=3) | scalars)
def test_the_tick_s_json_writer_writes_what_json_dumps_writes(doc: Any) -> None:
    assert json_text(doc) == json.dumps(doc)  # the SQLAlchemy path's text (NaN, non-ASCII, 1 and 1.0 alike)
