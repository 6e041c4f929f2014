"""The decision store: every decision with its inputs, steps, reasons and actuation result; each model's
planner state (restart-safe); the latest forecasts and backtests.

SQLAlchemy Core on SQLite by default (any SQLAlchemy URL works), WAL mode so the API reads while the control
tick writes. Each decision is committed together with the planner state it produced (one tick's decisions
of every model in one transaction, before any of them is applied), so a crash at any point loses no
committed decision and never leaves a state that no decision explains.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from service.patches import apply as patched
from service.patches import diff

metadata = MetaData()

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("at_s", Float, nullable=False, index=True),
    Column("valid", Boolean, nullable=False),
    Column("current_replicas", Integer, nullable=False),
    Column("raw_replicas", Integer, nullable=False),
    Column("desired_replicas", Integer, nullable=False),
    Column("reason", String(64), nullable=False),
    # Decision.as_dict(); with base_id, the patch of that base that gives it (service/patches.py)
    Column("record", JSON, nullable=False),
    Column("actuation", JSON, nullable=True),  # ActuationResult.as_dict()
    Column("base_id", Integer, nullable=True),
    # the API's question is always "this model's newest decisions": one index answers it without a sort
    Index("ix_decisions_model_at", "model", "at_s"),
)
# whole records that a model's decisions are stored as patches of: a steady model's decisions differ in a
# few values from tick to tick (the time, the window, the observed rate and the sentences quoting them). A
# base goes when no decision refers to it any more (purge)
decision_bases = Table(
    "decision_bases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("record", JSON, nullable=False),
)
planner_states = Table(
    "planner_states",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated_at_s", Float, nullable=False),
)
forecasts = Table(
    "forecasts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, index=True),
    Column("origin_s", Float, nullable=False, index=True),
    Column("forecast", JSON, nullable=False),
)
backtests = Table(
    "backtests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, index=True),
    Column("at_s", Float, nullable=False),
    Column("result", JSON, nullable=False),
)

# every tuning run, applied or failed: its candidates, the chosen operating point and why (backtest/tuning.py)
tuning_runs = Table(
    "tuning_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("at_s", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("result", JSON, nullable=False),
    Index("ix_tuning_runs_model_at", "model", "at_s"),
)

# the nightly ledger (backtest/ledger.py): each whole day's outcome under each policy setting, replayed once
replay_days = Table(
    "replay_days",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("fingerprint", String(32), primary_key=True),
    Column("setting", String(64), primary_key=True),
    Column("day_s", Float, primary_key=True),
    Column("outcome", JSON, nullable=False),
)


# a patch holding more values than this is a changed decision: it is stored whole and becomes the base
PATCH_LIMIT = 24


@dataclass
class _Base:
    """A model's newest base record this process stored (its decisions are stored as patches of it)."""

    id: int
    record: dict[str, Any]


@dataclass(frozen=True)
class StoredDecision:
    id: int
    model: str
    at_s: float
    record: dict[str, Any]
    actuation: dict[str, Any] | None


def _json_writer() -> Callable[[Any], str]:
    """json.dumps as the tick writes it thousands of times: json.dumps builds its C encoder anew on every
    call, which cost more than encoding a small patch; this one is built once and writes the same text
    (json.dumps's defaults, without its check for circular references: a record is a tree)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return json.dumps
    encoder = json.JSONEncoder()
    encode = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return lambda value: "".join(encode(value, 0))  # the same call json.dumps ends in


json_text = _json_writer()


class _SqliteBulk:
    """A tick's writes on SQLite as plain statements run many times by the driver: SQLAlchemy's executemany
    builds and type-processes every row's parameters, which cost more per model than planning it. The same
    rows and JSON text as the SQLAlchemy path (a test compares the two)."""

    # the columns SQLAlchemy would write as JSON text (None as JSON null, as its JSON type writes it)
    JSON_COLUMNS = frozenset(c.name for c in decisions.c if isinstance(c.type, JSON))

    @staticmethod
    def insert(
        conn: Any,
        items: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
        rows: list[dict[str, Any]],
    ) -> list[int]:
        # the rows' own keys are the columns; JSON first: a value that cannot be stored fails the batch
        # before any row is written
        columns = list(rows[0])
        as_json = [c in _SqliteBulk.JSON_COLUMNS for c in columns]
        values = [
            tuple(json_text(r[c]) if j else r[c] for c, j in zip(columns, as_json, strict=True)) for r in rows
        ]
        states = [(model, json_text(dict(state)), float(d["at_s"])) for model, d, state in items]
        conn.exec_driver_sql(
            f"INSERT INTO decisions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
        )
        # this transaction holds SQLite's write lock from its first insert, and a rowid table gives each
        # new row the largest rowid + 1: the rows just written are the newest len(rows) ids, in order
        top = int(conn.exec_driver_sql("SELECT max(id) FROM decisions").scalar_one())
        conn.exec_driver_sql(
            "INSERT INTO planner_states (model, state, updated_at_s) VALUES (?, ?, ?) ON CONFLICT(model) "
            "DO UPDATE SET state = excluded.state, updated_at_s = excluded.updated_at_s",
            states,
        )
        return list(range(top - len(rows) + 1, top + 1))

    @staticmethod
    def set_actuations(conn: Any, results: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        conn.exec_driver_sql(
            "UPDATE decisions SET actuation = ? WHERE id = ?", [(json_text(dict(a)), i) for i, a in results]
        )


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # fsync each commit: committed decisions survive power loss
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()


class DecisionStore:
    def __init__(self, url: str = "sqlite:///prewarm.db") -> None:
        parsed = make_url(url)
        sqlite = parsed.get_backend_name() == "sqlite"
        pool: dict[str, int] = {}
        if sqlite and parsed.database not in (None, "", ":memory:"):
            # one open connection per API worker thread (anyio runs up to 40): SQLAlchemy's default of 5 +
            # 10 overflow closes and reopens connections (and re-runs the PRAGMAs) under concurrent reads
            pool = {"pool_size": 40, "max_overflow": 0}
        self.engine = create_engine(url, future=True, **pool)
        if sqlite:
            _sqlite_pragmas(self.engine)
        metadata.create_all(self.engine)
        for table in metadata.tables.values():  # indexes added since a database was created
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)
        if "base_id" not in {c["name"] for c in inspect(self.engine).get_columns("decisions")}:
            with self.engine.begin() as conn:  # a database from before decisions were stored as patches
                conn.execute(text("ALTER TABLE decisions ADD COLUMN base_id INTEGER"))
        self._bases: dict[str, _Base] = {}  # each model's newest base this process stored
        # the tick's writes as plain SQLite statements (_SqliteBulk); on another database, SQLAlchemy's
        self.bulk_sql = sqlite

    def record(
        self,
        model: str,
        decision: Mapping[str, Any],
        actuation: Mapping[str, Any] | None,
        state: Mapping[str, Any],
    ) -> int:
        """Store one decision and the planner state it produced, atomically; returns the decision id."""
        with self.engine.begin() as conn:
            row = conn.execute(
                insert(decisions).values(
                    model=model,
                    at_s=float(decision["at_s"]),
                    valid=bool(decision["valid"]),
                    current_replicas=int(decision["current_replicas"]),
                    raw_replicas=int(decision["raw_replicas"]),
                    desired_replicas=int(decision["desired_replicas"]),
                    reason=str(decision["reason"]),
                    record=dict(decision),
                    actuation=dict(actuation) if actuation is not None else None,
                )
            )
            key = row.inserted_primary_key
            assert key is not None
            decision_id = int(key[0])
            self._put_state(conn, model, state, float(decision["at_s"]))
            return decision_id

    def record_many(self, items: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]]) -> list[int]:
        """Store one tick's decisions of many models, each with the planner state it produced, in one
        transaction (one commit for a thousand models, not a thousand); returns their ids in order. Each
        decision is stored as a patch of its model's newest base record (service/patches.py); one of another
        shape, or with more than PATCH_LIMIT values changed, becomes a new base (its own patch empty)."""
        if not items:
            return []
        patches = [
            diff(b.record, d, PATCH_LIMIT) if (b := self._bases.get(model)) is not None else None
            for model, d, _ in items
        ]
        with self.engine.begin() as conn:
            rebased = [(model, dict(d)) for (model, d, _), p in zip(items, patches, strict=True) if p is None]
            new_ids = iter(self._insert_bases(conn, rebased))
            bases = {model: _Base(next(new_ids), record) for model, record in rebased}
            rows = [
                {
                    "model": model,
                    "at_s": float(d["at_s"]),
                    "valid": bool(d["valid"]),
                    "current_replicas": int(d["current_replicas"]),
                    "raw_replicas": int(d["raw_replicas"]),
                    "desired_replicas": int(d["desired_replicas"]),
                    "reason": str(d["reason"]),
                    "record": [] if p is None else p,  # a new base's own decision is its empty patch
                    "actuation": None,
                    "base_id": (bases[model] if p is None else self._bases[model]).id,
                }
                for (model, d, _), p in zip(items, patches, strict=True)
            ]
            ids = (_SqliteBulk.insert if self.bulk_sql else self._insert_many)(conn, items, rows)
        self._bases.update(bases)  # committed: later decisions may be patches of them
        return ids

    @staticmethod
    def _insert_bases(conn: Any, records: list[tuple[str, dict[str, Any]]]) -> list[int]:
        if not records:
            return []
        q = insert(decision_bases).returning(decision_bases.c.id, sort_by_parameter_order=True)
        return [int(row[0]) for row in conn.execute(q, [{"model": m, "record": r} for m, r in records])]

    @staticmethod
    def _insert_many(
        conn: Any,
        items: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
        rows: list[dict[str, Any]],
    ) -> list[int]:
        ids = [
            int(row[0])
            for row in conn.execute(
                insert(decisions).returning(decisions.c.id, sort_by_parameter_order=True), rows
            )
        ]
        known = set(conn.execute(select(planner_states.c.model)).scalars())
        states = [{"m": model, "st": dict(state), "at": float(d["at_s"])} for model, d, state in items]
        old = [st for st in states if st["m"] in known]
        if old:
            conn.execute(
                update(planner_states)
                .where(planner_states.c.model == bindparam("m"))
                .values(state=bindparam("st"), updated_at_s=bindparam("at")),
                old,
            )
        new = [
            {"model": st["m"], "state": st["st"], "updated_at_s": st["at"]}
            for st in states
            if st["m"] not in known
        ]
        if new:
            conn.execute(insert(planner_states), new)
        return ids

    def set_actuations(self, results: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Each decision's actuation result, in one transaction."""
        if not results:
            return
        with self.engine.begin() as conn:
            if self.bulk_sql:
                _SqliteBulk.set_actuations(conn, results)
                return
            conn.execute(
                update(decisions)
                .where(decisions.c.id == bindparam("decision_id"))
                .values(actuation=bindparam("result")),
                [{"decision_id": i, "result": dict(a)} for i, a in results],
            )

    def set_actuation(self, decision_id: int, actuation: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            q = update(decisions).where(decisions.c.id == decision_id)
            conn.execute(q.values(actuation=dict(actuation)))

    @staticmethod
    def _put_state(conn: Any, model: str, state: Mapping[str, Any], at_s: float) -> None:
        done = conn.execute(
            update(planner_states)
            .where(planner_states.c.model == model)
            .values(state=dict(state), updated_at_s=at_s)
        )
        if done.rowcount == 0:
            conn.execute(insert(planner_states).values(model=model, state=dict(state), updated_at_s=at_s))

    def state(self, model: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(planner_states.c.state).where(planner_states.c.model == model)).first()
        return dict(row[0]) if row else None

    def decisions(self, model: str, since_s: float | None = None, limit: int = 100) -> list[StoredDecision]:
        """Newest first."""
        q = select(decisions).where(decisions.c.model == model)
        if since_s is not None:
            q = q.where(decisions.c.at_s >= since_s)
        q = q.order_by(decisions.c.at_s.desc(), decisions.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return self._rows(conn, list(conn.execute(q)))

    def decision(self, decision_id: int) -> StoredDecision | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(decisions).where(decisions.c.id == decision_id)).first()
            return self._rows(conn, [r])[0] if r else None

    @staticmethod
    def _rows(conn: Any, rows: list[Any]) -> list[StoredDecision]:
        """The stored decisions, each read back whole (a patch applied to its base)."""
        wanted = {int(r.base_id) for r in rows if r.base_id is not None}
        bases: dict[int, dict[str, Any]] = {}
        if wanted:
            b = decision_bases.c
            bases = {
                int(i): dict(rec) for i, rec in conn.execute(select(b.id, b.record).where(b.id.in_(wanted)))
            }
        return [
            StoredDecision(
                int(r.id),
                str(r.model),
                float(r.at_s),
                dict(r.record) if r.base_id is None else patched(bases[int(r.base_id)], r.record),
                r.actuation,
            )
            for r in rows
        ]

    def put_forecast(self, model: str, origin_s: float, forecast: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(forecasts).values(model=model, origin_s=origin_s, forecast=dict(forecast)))

    def latest_forecast(self, model: str) -> dict[str, Any] | None:
        q = select(forecasts.c.forecast).where(forecasts.c.model == model)
        q = q.order_by(forecasts.c.origin_s.desc())
        with self.engine.connect() as conn:
            row = conn.execute(q.limit(1)).first()
        return dict(row[0]) if row else None

    def put_backtest(self, model: str, at_s: float, result: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(backtests).values(model=model, at_s=at_s, result=dict(result)))

    def latest_backtest(self, model: str) -> dict[str, Any] | None:
        q = select(backtests.c.result, backtests.c.at_s).where(backtests.c.model == model)
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(backtests.c.at_s.desc()).limit(1)).first()
        return {"at_s": float(row[1]), **dict(row[0])} if row else None

    def put_tuning(self, model: str, at_s: float, ok: bool, result: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(tuning_runs).values(model=model, at_s=at_s, ok=ok, result=dict(result)))

    def tunings(self, model: str, *, ok_only: bool = False, limit: int = 1) -> list[dict[str, Any]]:
        """The newest tuning runs of a model (only the applied ones with ok_only), newest first."""
        t = tuning_runs.c
        q = select(t.result, t.at_s, t.ok).where(t.model == model)
        if ok_only:
            q = q.where(t.ok.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(t.at_s.desc()).limit(limit)).all()
        return [{"at_s": float(r[1]), "ok": bool(r[2]), **dict(r[0])} for r in rows]

    def replay_days(self, model: str, fingerprint: str, since_s: float) -> dict[tuple[str, float], Any]:
        """The ledger's day outcomes of a model under one configuration, from day `since_s` on."""
        t = replay_days.c
        q = select(t.setting, t.day_s, t.outcome).where(
            t.model == model, t.fingerprint == fingerprint, t.day_s >= since_s
        )
        with self.engine.connect() as conn:
            return {(str(r[0]), float(r[1])): dict(r[2]) for r in conn.execute(q)}

    def put_replay_days(
        self,
        model: str,
        fingerprint: str,
        rows: Sequence[tuple[str, float, Mapping[str, Any]]],
        keep_s: float,
    ) -> None:
        """Add a night's day outcomes (replacing any with the same key) and drop this model's days older
        than `keep_s`, whatever their configuration: an old fingerprint's days are never read again."""
        t = replay_days.c
        with self.engine.begin() as conn:
            for setting, day_s, _ in rows:
                conn.execute(
                    delete(replay_days).where(
                        t.model == model, t.fingerprint == fingerprint, t.setting == setting, t.day_s == day_s
                    )
                )
            if rows:
                values = [
                    {"model": model, "fingerprint": fingerprint, "setting": s, "day_s": d, "outcome": dict(o)}
                    for s, d, o in rows
                ]
                conn.execute(insert(replay_days), values)
            conn.execute(delete(replay_days).where(t.model == model, t.day_s < keep_s))

    def purge(self, older_than_s: float) -> int:
        """Drop decisions, forecasts and backtests older than the retention horizon, and the bases no
        decision needs any more; returns rows removed (bases not counted)."""
        d = decisions.c
        with self.engine.begin() as conn:
            n = conn.execute(delete(decisions).where(d.at_s < older_than_s)).rowcount
            n += conn.execute(delete(forecasts).where(forecasts.c.origin_s < older_than_s)).rowcount
            n += conn.execute(delete(backtests).where(backtests.c.at_s < older_than_s)).rowcount
            n += conn.execute(delete(tuning_runs).where(tuning_runs.c.at_s < older_than_s)).rowcount
            # bases no decision refers to any more (this process's newest ones stay: the next tick's
            # decisions may be patches of them)
            keep = {b.id for b in self._bases.values()}
            used = select(d.base_id).where(d.base_id.is_not(None))
            conn.execute(
                delete(decision_bases).where(
                    decision_bases.c.id.not_in(used), decision_bases.c.id.not_in(keep)
                )
            )
        return int(n)


def dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True)
