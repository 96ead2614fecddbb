"""The state store: current placements, the apply journal, the audit log and the writer lock.

One store is one database, SQLite (a file; the default is ``.placement/state.db``) or PostgreSQL
(an SQLAlchemy URL), reached through SQLAlchemy Core with the same behaviour on both.

- The schema is versioned with alembic. ``StateStore.open`` runs the migration scripts in
  ``placement/migrations/versions`` up to the newest one, and refuses a store whose recorded version
  (table ``schema_version``) is newer than any script this code knows.
- ``meta`` holds ``serial``, bumped in the same transaction as every change to ``placements``, and
  ``lineage``, a UUID created once when the store is initialised. A plan records both; apply refuses
  the plan when they no longer match.
- The journal records every action of an apply before it runs (``started``) and after it ran
  (``succeeded`` or ``failed``); an action whose latest entry is ``started`` was cut off by a crash.
- The lock is a row in ``locks``. Taking it is one INSERT, so the primary key decides between
  concurrent writers in any process and on either backend; a held lock names its owner and can be
  broken with ``placement force-unlock <ID>``.

Write transactions are serialised: on SQLite they begin with ``BEGIN IMMEDIATE`` (WAL mode, 30 s busy
timeout), on PostgreSQL the writers that read before they write take the ``serial`` row ``FOR UPDATE``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from placement.errors import PlacementError
from placement.models import Placement

DEFAULT_STATE_PATH = ".placement/state.db"
STATE_LOCK = "state"
SCHEMA_VERSION_TABLE = "schema_version"
SQLITE_BUSY_TIMEOUT_S = 30.0
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Key of the PostgreSQL advisory lock held while migrating (any constant bigint; "plcm" in ASCII).
_PG_MIGRATION_LOCK_KEY = 0x706C636D

Action = Literal["create", "delete", "move", "keep"]
Phase = Literal["started", "succeeded", "failed"]
ACTIONS: tuple[str, ...] = get_args(Action)


class StateError(PlacementError):
    """The state store cannot be used as asked (newer schema, lock not held, inconsistent journal)."""


@dataclass(frozen=True)
class LockInfo:
    """A held lock: who holds it, for what, since when (UTC ISO 8601) and until when (None: no expiry)."""

    name: str
    lock_id: str
    owner: str
    operation: str
    acquired_at: str
    expires_at: str | None = None

    def describe(self) -> str:
        expiry = f", expires {self.expires_at}" if self.expires_at else ""
        return (f"held by {self.owner} for {self.operation!r} since {self.acquired_at}{expiry} "
                f"(lock id {self.lock_id})")


class LockHeldError(StateError):
    """Another writer holds the lock and did not release it within the timeout."""

    def __init__(self, holder: LockInfo, waited_s: float):
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"the {holder.name!r} lock is {holder.describe()}; gave up after waiting {waited_s:g} s.\n"
            f"If that process is no longer running, break the lock with: "
            f"placement force-unlock {holder.lock_id}"
        )


@dataclass(frozen=True)
class PlacementRecord:
    """One replica of a workload as running now. ``spec`` is the placement as planned (JSON object).

    ``created_at`` and ``updated_at`` are set by the store (UTC ISO 8601); values passed in are ignored.
    """

    workload: str
    replica: int
    provider: str
    region: str
    zone: str | None
    offer_id: str
    idempotency_key: str
    plan_digest: str
    spec: dict[str, Any] = field(default_factory=dict)
    resource_id: str | None = None
    status: str = "active"
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_placement(cls, placement: Placement, *, idempotency_key: str, plan_digest: str,
                       resource_id: str | None = None, status: str = "active") -> PlacementRecord:
        return cls(
            workload=placement.workload,
            replica=placement.replica,
            provider=placement.provider,
            region=placement.region,
            zone=placement.zone,
            offer_id=placement.offer_id,
            idempotency_key=idempotency_key,
            plan_digest=plan_digest,
            spec=placement.model_dump(mode="json"),
            resource_id=resource_id,
            status=status,
        )

    def placement(self) -> Placement:
        return Placement.model_validate(self.spec)


@dataclass(frozen=True)
class StateSnapshot:
    """Serial, lineage and placements read in one transaction."""

    serial: int
    lineage: str
    placements: tuple[PlacementRecord, ...]


@dataclass(frozen=True)
class JournalEntry:
    id: int
    plan_digest: str
    action_id: str
    action: str
    workload: str
    replica: int | None
    phase: str
    detail: dict[str, Any]
    at: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    who: str
    operation: str
    plan_digest: str | None
    outcome: str
    detail: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# Schema (must match the newest migration in placement/migrations/versions)
# --------------------------------------------------------------------------------------------------


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime: ``timestamptz`` on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store; use timezone-aware UTC")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_md = MetaData()

placements_t = Table(
    "placements", _md,
    Column("workload", String(128), primary_key=True),
    Column("replica", Integer, primary_key=True),
    Column("provider", String(128), nullable=False),
    Column("region", String(128), nullable=False),
    Column("zone", String(128), nullable=True),
    Column("offer_id", String(512), nullable=False),
    Column("resource_id", String(512), nullable=True),
    Column("idempotency_key", String(256), nullable=False),
    Column("plan_digest", String(80), nullable=False),
    Column("spec", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

journal_t = Table(
    "journal", _md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan_digest", String(80), nullable=False),
    Column("action_id", String(256), nullable=False),
    Column("action", String(16), nullable=False),
    Column("workload", String(128), nullable=False),
    Column("replica", Integer, nullable=True),
    Column("phase", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

meta_t = Table(
    "meta", _md,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

locks_t = Table(
    "locks", _md,
    Column("name", String(64), primary_key=True),
    Column("lock_id", String(36), nullable=False),
    Column("owner", String(256), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
)

audit_t = Table(
    "audit", _md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("who", String(256), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("plan_digest", String(80), nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False),
)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_owner() -> str:
    """``user@host pid N`` for this process, the usual ``owner`` of a lock."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dumps(value: dict[str, Any] | None) -> str:
    return json.dumps(value or {}, sort_keys=True, separators=(",", ":"))


def _loads(value: str) -> dict[str, Any]:
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else {"value": loaded}


def _url_for(location: str | os.PathLike[str]) -> URL:
    """A plain path means an SQLite file; anything with ``://`` is an SQLAlchemy URL."""
    raw = os.fspath(location)
    if "://" not in raw:
        return URL.create("sqlite+pysqlite", database=str(Path(raw).expanduser().resolve()))
    url = make_url(raw)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Driver autocommit: transactions are begun explicitly by _sqlite_on_begin, so DDL and reads are
    # transactional too and write transactions can take the write lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("placement_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if _is_memory_sqlite(url):
        engine = create_engine(url, poolclass=StaticPool,
                               connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})
    else:
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["version_table"] = SCHEMA_VERSION_TABLE
    return config


def _current_revisions(conn: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(conn, opts={"version_table": SCHEMA_VERSION_TABLE})
    return tuple(context.get_current_heads())


def _placement_from_row(row: Any) -> PlacementRecord:
    return PlacementRecord(
        workload=row.workload, replica=row.replica, provider=row.provider, region=row.region, zone=row.zone,
        offer_id=row.offer_id, idempotency_key=row.idempotency_key, plan_digest=row.plan_digest,
        spec=_loads(row.spec), resource_id=row.resource_id, status=row.status,
        created_at=_iso(row.created_at), updated_at=_iso(row.updated_at),
    )


def _journal_from_row(row: Any) -> JournalEntry:
    return JournalEntry(
        id=row.id, plan_digest=row.plan_digest, action_id=row.action_id, action=row.action,
        workload=row.workload, replica=row.replica, phase=row.phase, detail=_loads(row.detail),
        at=_iso(row.at) or "",
    )


def _audit_from_row(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row.id, at=_iso(row.at) or "", who=row.who, operation=row.operation, plan_digest=row.plan_digest,
        outcome=row.outcome, detail=_loads(row.detail),
    )


def _lock_from_row(row: Any) -> LockInfo:
    return LockInfo(
        name=row.name, lock_id=row.lock_id, owner=row.owner, operation=row.operation,
        acquired_at=_iso(row.acquired_at) or "", expires_at=_iso(row.expires_at),
    )


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


class StateStore:
    """A migrated state database. Create with ``StateStore.open``; ``close()`` when done."""

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] = utc_now):
        self._engine = engine
        self._clock = clock
        self._lineage: str | None = None

    @classmethod
    def open(cls, location: str | os.PathLike[str] = DEFAULT_STATE_PATH, *,
             clock: Callable[[], dt.datetime] = utc_now) -> StateStore:
        """Open (creating and migrating as needed) the store at a file path or SQLAlchemy URL."""
        url = _url_for(location)
        try:
            engine = _make_engine(url)
        except SQLAlchemyError as exc:
            shown = url.render_as_string(hide_password=True)
            raise StateError(f"cannot use state store {shown}: {exc}") from exc
        store = cls(engine, clock=clock)
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(placement_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @staticmethod
    def _serialise(conn: Connection) -> int:
        """Take the writers' row lock (PostgreSQL; SQLite is already locked) and return the serial."""
        query = select(meta_t.c.value).where(meta_t.c.key == "serial").with_for_update()
        return int(conn.execute(query).scalar_one())

    @staticmethod
    def _set_serial(conn: Connection, serial: int) -> None:
        conn.execute(update(meta_t).where(meta_t.c.key == "serial").values(value=str(serial)))

    # -- schema ------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        config = _alembic_config()
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        known = [r.revision for r in script.walk_revisions()]
        with self._read() as conn:
            current = _current_revisions(conn)
        if current == (head,):
            return
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
            current = _current_revisions(conn)
            self._check_revisions(conn, current, known, head)
            if current != (head,):
                config.attributes["connection"] = conn
                command.upgrade(config, "head")

    def _check_revisions(self, conn: Connection, current: tuple[str, ...], known: list[str],
                         head: str | None) -> None:
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise StateError(
                f"the state store at {self.url} has schema version {', '.join(unknown)}, which is newer than "
                f"this version of placement knows (newest known: {head}). Upgrade placement-engine to use "
                f"this store; it was left unchanged."
            )
        if len(current) > 1:
            raise StateError(f"the state store at {self.url} records several schema versions "
                             f"({', '.join(current)}); it cannot be migrated automatically.")
        if not current and inspect(conn).has_table(placements_t.name):
            raise StateError(f"the database at {self.url} has a 'placements' table but no "
                             f"{SCHEMA_VERSION_TABLE!r} table; it was not created by placement. "
                             f"Use an empty database or schema.")

    def schema_version(self) -> str | None:
        with self._read() as conn:
            current = _current_revisions(conn)
        return current[0] if current else None

    # -- meta --------------------------------------------------------------------------------------

    def serial(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(meta_t.c.value).where(meta_t.c.key == "serial")).scalar_one())

    def lineage(self) -> str:
        if self._lineage is None:
            with self._read() as conn:
                self._lineage = conn.execute(
                    select(meta_t.c.value).where(meta_t.c.key == "lineage")).scalar_one()
        return self._lineage

    def snapshot(self) -> StateSnapshot:
        with self._read() as conn:
            values = {key: value for key, value in conn.execute(select(meta_t.c.key, meta_t.c.value))}
            rows = conn.execute(
                select(placements_t).order_by(placements_t.c.workload, placements_t.c.replica))
            return StateSnapshot(serial=int(values["serial"]), lineage=values["lineage"],
                                 placements=tuple(_placement_from_row(r) for r in rows))

    # -- placements --------------------------------------------------------------------------------

    def placements(self) -> list[PlacementRecord]:
        return list(self.snapshot().placements)

    def get_placement(self, workload: str, replica: int) -> PlacementRecord | None:
        with self._read() as conn:
            row = conn.execute(select(placements_t).where(
                placements_t.c.workload == workload, placements_t.c.replica == replica)).one_or_none()
        return None if row is None else _placement_from_row(row)

    def record_placement(self, rec: PlacementRecord) -> PlacementRecord:
        """Insert or replace the placement of ``(rec.workload, rec.replica)``; bumps the serial when
        anything changed. Returns the stored record."""
        values: dict[str, Any] = {
            "provider": rec.provider, "region": rec.region, "zone": rec.zone, "offer_id": rec.offer_id,
            "resource_id": rec.resource_id, "idempotency_key": rec.idempotency_key,
            "plan_digest": rec.plan_digest, "spec": _dumps(rec.spec), "status": rec.status,
        }
        key = and_(placements_t.c.workload == rec.workload, placements_t.c.replica == rec.replica)
        with self._write() as conn:
            serial = self._serialise(conn)
            row = conn.execute(select(placements_t).where(key)).one_or_none()
            now = self._clock()
            if row is None:
                conn.execute(insert(placements_t).values(workload=rec.workload, replica=rec.replica,
                                                         created_at=now, updated_at=now, **values))
            elif any(getattr(row, name) != value for name, value in values.items()):
                conn.execute(update(placements_t).where(key).values(updated_at=now, **values))
            else:
                return _placement_from_row(row)
            self._set_serial(conn, serial + 1)
            return _placement_from_row(conn.execute(select(placements_t).where(key)).one())

    def remove_placement(self, workload: str, replica: int) -> bool:
        """Forget a placement; bumps the serial. False (and no bump) when there was none."""
        with self._write() as conn:
            serial = self._serialise(conn)
            result = conn.execute(delete(placements_t).where(
                placements_t.c.workload == workload, placements_t.c.replica == replica))
            if result.rowcount == 0:
                return False
            self._set_serial(conn, serial + 1)
            return True

    # -- journal -----------------------------------------------------------------------------------

    @staticmethod
    def _latest_phase(conn: Connection, plan_digest: str, action_id: str) -> Any:
        return conn.execute(
            select(journal_t)
            .where(journal_t.c.plan_digest == plan_digest, journal_t.c.action_id == action_id)
            .order_by(journal_t.c.id.desc()).limit(1)
        ).one_or_none()

    def _journal_insert(self, conn: Connection, **values: Any) -> JournalEntry:
        values["at"] = self._clock()
        new_id = conn.execute(insert(journal_t).values(**values)).inserted_primary_key
        assert new_id is not None
        return _journal_from_row(conn.execute(select(journal_t).where(journal_t.c.id == new_id[0])).one())

    def journal_start(self, plan_digest: str, action_id: str, action: Action, workload: str,
                      replica: int | None, detail: dict[str, Any] | None = None) -> JournalEntry:
        """Record that an action is about to run. Refused if it already succeeded for this plan."""
        if action not in ACTIONS:
            raise StateError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        with self._write() as conn:
            self._serialise(conn)
            latest = self._latest_phase(conn, plan_digest, action_id)
            if latest is not None and latest.phase == "succeeded":
                raise StateError(f"action {action_id} of plan {plan_digest} already succeeded "
                                 f"at {_iso(latest.at)}; it must not run twice")
            return self._journal_insert(conn, plan_digest=plan_digest, action_id=action_id, action=action,
                                        workload=workload, replica=replica, phase="started",
                                        detail=_dumps(detail))

    def journal_finish(self, plan_digest: str, action_id: str, ok: bool,
                       detail: dict[str, Any] | None = None) -> JournalEntry:
        """Record the outcome of a started action."""
        with self._write() as conn:
            self._serialise(conn)
            latest = self._latest_phase(conn, plan_digest, action_id)
            if latest is None or latest.phase != "started":
                state = "was never started" if latest is None else f"already {latest.phase}"
                raise StateError(f"cannot finish action {action_id} of plan {plan_digest}: it {state}")
            return self._journal_insert(conn, plan_digest=plan_digest, action_id=action_id,
                                        action=latest.action, workload=latest.workload,
                                        replica=latest.replica, phase="succeeded" if ok else "failed",
                                        detail=_dumps(detail))

    def journal_for(self, plan_digest: str) -> list[JournalEntry]:
        with self._read() as conn:
            rows = conn.execute(select(journal_t).where(journal_t.c.plan_digest == plan_digest)
                                .order_by(journal_t.c.id))
            return [_journal_from_row(r) for r in rows]

    def _latest_entries(self, plan_digest: str) -> dict[str, JournalEntry]:
        latest: dict[str, JournalEntry] = {}
        for entry in self.journal_for(plan_digest):
            latest[entry.action_id] = entry
        return latest

    def completed_actions(self, plan_digest: str) -> set[str]:
        """Ids of the actions of this plan that succeeded."""
        return {e.action_id for e in self._latest_entries(plan_digest).values() if e.phase == "succeeded"}

    def last_journal_plan(self) -> str | None:
        """The plan digest of the newest journal entry: the plan whose apply changed the state last."""
        with self._read() as conn:
            return conn.execute(select(journal_t.c.plan_digest).order_by(journal_t.c.id.desc()).limit(1)).scalar()

    def unfinished_actions(self, plan_digest: str) -> list[JournalEntry]:
        """The ``started`` entries of actions with no outcome recorded after them (a crash mid-action)."""
        return [e for e in self._latest_entries(plan_digest).values() if e.phase == "started"]

    # -- audit -------------------------------------------------------------------------------------

    def audit(self, who: str, operation: str, plan_digest: str | None, outcome: str,
              detail: dict[str, Any] | None = None) -> AuditEntry:
        with self._write() as conn:
            new_id = conn.execute(insert(audit_t).values(
                at=self._clock(), who=who, operation=operation, plan_digest=plan_digest, outcome=outcome,
                detail=_dumps(detail))).inserted_primary_key
            assert new_id is not None
            return _audit_from_row(conn.execute(select(audit_t).where(audit_t.c.id == new_id[0])).one())

    def audit_log(self, limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        with self._read() as conn:
            rows = conn.execute(select(audit_t).order_by(audit_t.c.id.desc()).limit(limit))
            return [_audit_from_row(r) for r in rows]

    # -- lock --------------------------------------------------------------------------------------

    def current_lock(self, name: str = STATE_LOCK) -> LockInfo | None:
        with self._read() as conn:
            row = conn.execute(select(locks_t).where(locks_t.c.name == name)).one_or_none()
        return None if row is None else _lock_from_row(row)

    def _try_lock(self, name: str, owner: str, operation: str, ttl_s: float | None) -> LockInfo | None:
        now = self._clock()
        expires = None if ttl_s is None else now + dt.timedelta(seconds=ttl_s)
        lock_id = str(uuid.uuid4())
        try:
            with self._write() as conn:
                # An expired lock is removed by its exact row (name and expiry), so two writers cannot both
                # clear it and both insert: the INSERT below still decides on the primary key.
                conn.execute(delete(locks_t).where(locks_t.c.name == name, locks_t.c.expires_at.is_not(None),
                                                   locks_t.c.expires_at <= now))
                conn.execute(insert(locks_t).values(name=name, lock_id=lock_id, owner=owner,
                                                    operation=operation, acquired_at=now, expires_at=expires))
        except IntegrityError:
            return None
        return LockInfo(name=name, lock_id=lock_id, owner=owner, operation=operation,
                        acquired_at=_iso(now) or "", expires_at=_iso(expires))

    def acquire_lock(self, owner: str, operation: str, timeout_s: float, poll_s: float = 0.2, *,
                     ttl_s: float | None = None, name: str = STATE_LOCK) -> LockInfo:
        """Take the lock, retrying every ``poll_s`` until ``timeout_s``; then raise ``LockHeldError``.

        ``ttl_s`` sets an expiry after which another writer may take the lock over (None: never; such a
        lock is released, or broken with ``force_unlock``). ``refresh_lock`` extends it.
        """
        start = time.monotonic()
        deadline = start + max(timeout_s, 0.0)
        while True:
            info = self._try_lock(name, owner, operation, ttl_s)
            if info is not None:
                return info
            holder = self.current_lock(name)
            if holder is None:
                continue  # released between the INSERT and the read: try again at once
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeldError(holder, waited_s=round(time.monotonic() - start, 3))
            time.sleep(min(max(poll_s, 0.001), remaining))

    def refresh_lock(self, lock_id: str, ttl_s: float, *, name: str = STATE_LOCK) -> LockInfo:
        """Move the expiry of a held lock to ``ttl_s`` from now."""
        expires = self._clock() + dt.timedelta(seconds=ttl_s)
        with self._write() as conn:
            result = conn.execute(update(locks_t).where(locks_t.c.name == name, locks_t.c.lock_id == lock_id)
                                  .values(expires_at=expires))
            if result.rowcount == 0:
                raise StateError(f"lock {lock_id} is not held any more (released, broken or expired)")
            return _lock_from_row(conn.execute(select(locks_t).where(locks_t.c.name == name)).one())

    def release_lock(self, lock_id: str, *, name: str = STATE_LOCK) -> None:
        """Release a lock this process holds. Raises ``StateError`` if it is no longer held."""
        with self._write() as conn:
            result = conn.execute(delete(locks_t).where(locks_t.c.name == name, locks_t.c.lock_id == lock_id))
        if result.rowcount == 0:
            raise StateError(f"lock {lock_id} is not held any more (it was broken with force-unlock or "
                             f"expired); another writer may have changed the state since")

    def force_unlock(self, lock_id: str, *, name: str = STATE_LOCK) -> LockInfo:
        """Break the lock with this id, whoever holds it. Returns what was removed."""
        with self._write() as conn:
            row = conn.execute(select(locks_t).where(locks_t.c.name == name)).one_or_none()
            if row is None or row.lock_id != lock_id:
                held = ("no lock is held" if row is None
                        else f"the current lock is {_lock_from_row(row).describe()}")
                raise StateError(f"lock id {lock_id} is not the current {name!r} lock: {held}")
            conn.execute(delete(locks_t).where(locks_t.c.name == name, locks_t.c.lock_id == lock_id))
            return _lock_from_row(row)

    @contextmanager
    def locked(self, owner: str, operation: str, timeout_s: float, poll_s: float = 0.2, *,
               ttl_s: float | None = None, name: str = STATE_LOCK) -> Iterator[LockInfo]:
        """Hold the lock for the body of a ``with`` block.

        A lock lost during the block (broken or expired) raises ``StateError`` on exit, unless the body
        is already raising, in which case the body's exception is the one that propagates.
        """
        info = self.acquire_lock(owner, operation, timeout_s, poll_s, ttl_s=ttl_s, name=name)
        try:
            yield info
        except BaseException:
            with suppress(StateError):
                self.release_lock(info.lock_id, name=name)
            raise
        self.release_lock(info.lock_id, name=name)
