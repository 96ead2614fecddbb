"""State store tests, run against SQLite (a file under tmp_path) and a real PostgreSQL server.

PostgreSQL: a database named ``placement_test_<random>`` is created on the server given by
``PLACEMENT_TEST_PG_URL`` (default: the local server, database ``test``) for the test session and
dropped at the end; each test gets its own schema in it. If the server cannot be reached, the
PostgreSQL cases are skipped with the reason.

Cross-process behaviour (the lock, concurrent writers) is tested with real child processes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from placement.errors import PlacementError
from placement.state import (
    MIGRATIONS_DIR,
    SCHEMA_VERSION_TABLE,
    LockHeldError,
    PlacementRecord,
    StateError,
    StateStore,
)

PG_ADMIN_URL = os.environ.get("PLACEMENT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = {"placements", "journal", "meta", "locks", "audit", SCHEMA_VERSION_TABLE}

# A child process working on the same store. argv: url, mode, mode arguments; prints one JSON line.
CHILD = r"""
import json, sys, time
from placement.state import LockHeldError, PlacementRecord, StateStore

url, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if mode == "open":
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the parent's "go"
    with StateStore.open(url) as store:
        print(json.dumps({"lineage": store.lineage(), "version": store.schema_version()}))
    sys.exit(0)
store = StateStore.open(url)
if mode == "lock":
    timeout_s, owner = float(args[0]), args[1]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the parent's "go"
    began = time.monotonic()
    try:
        info = store.acquire_lock(owner, "apply", timeout_s=timeout_s, poll_s=0.05)
    except LockHeldError as exc:
        print(json.dumps({"error": str(exc), "holder": exc.holder.lock_id,
                          "waited": time.monotonic() - began}))
    else:
        print(json.dumps({"lock_id": info.lock_id, "acquired_at": info.acquired_at}))
elif mode == "write":
    name, count = args[0], int(args[1])
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the parent's "go"
    for i in range(count):
        store.record_placement(PlacementRecord(
            workload=name, replica=i, provider="aws", region="us-east-1", zone=None, offer_id="o",
            idempotency_key=f"{name}-{i}", plan_digest="sha256:p", spec={"i": i}))
    print(json.dumps({"done": count}))
store.close()
"""


def _child(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, url, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _last_json(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line and json.loads(line) == {"ready": True}, proc.stderr.read() if proc.stderr else ""


def _go(*procs: subprocess.Popen[str]) -> None:
    """Start children that are ready (store open, modules imported) as close together as possible."""
    for proc in procs:
        _wait_ready(proc)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _record(workload: str = "train", replica: int = 0, **changes: object) -> PlacementRecord:
    values: dict[str, object] = {
        "workload": workload, "replica": replica, "provider": "aws", "region": "us-east-1",
        "zone": "us-east-1a", "offer_id": "aws/us-east-1/us-east-1a/p4d.24xlarge/on-demand",
        "idempotency_key": f"{workload}-{replica}-k1", "plan_digest": "sha256:" + "0" * 64,
        "spec": {"workload": workload, "replica": replica, "hourly_usd": 32.77},
    }
    values.update(changes)
    return PlacementRecord(**values)  # type: ignore[arg-type]


def _head() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """URL of a fresh database for this session, or None when the server is unreachable."""
    name = f"placement_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        print(f"PostgreSQL tests skipped: cannot create a database at {PG_ADMIN_URL}: {exc}")
        admin.dispose()
        yield None
        return
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "nested" / "state.db")
    base: str | None = request.getfixturevalue("pg_database")
    if base is None:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not reachable")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture
def store(url: str) -> Iterator[StateStore]:
    opened = StateStore.open(url)
    yield opened
    opened.close()


def _raw_engine(url: str) -> Engine:
    return create_engine(url if "://" in url else f"sqlite:///{url}")


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


def test_migrates_an_empty_database(url: str) -> None:
    with StateStore.open(url) as store:
        assert store.schema_version() == _head() == "0001"
        assert store.serial() == 0
        lineage = store.lineage()
        assert uuid.UUID(lineage).version == 4
    engine = _raw_engine(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
        versions = conn.execute(text(f"SELECT version_num FROM {SCHEMA_VERSION_TABLE}")).scalars().all()
    engine.dispose()
    assert versions == ["0001"]
    with StateStore.open(url) as again:
        assert again.lineage() == lineage
        assert again.schema_version() == "0001"


def test_processes_opening_an_empty_store_together_initialise_it_once(url: str) -> None:
    procs = [_child(url, "open") for _ in range(4)]
    _go(*procs)
    results = [_last_json(proc) for proc in procs]
    with StateStore.open(url) as store:
        assert results == [{"lineage": store.lineage(), "version": "0001"}] * 4


def test_newer_schema_is_refused(url: str) -> None:
    StateStore.open(url).close()
    engine = _raw_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {SCHEMA_VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(StateError, match=r"schema version 9999.*newer.*Upgrade placement-engine") as info:
        StateStore.open(url)
    assert isinstance(info.value, PlacementError)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {SCHEMA_VERSION_TABLE}")).scalar_one() == "9999"
    engine.dispose()


def test_unversioned_tables_are_refused(url: str) -> None:
    engine = _raw_engine(url)
    if url.startswith("/"):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE placements (workload VARCHAR(10))"))
    engine.dispose()
    with pytest.raises(StateError, match="no 'schema_version' table"):
        StateStore.open(url)


# --------------------------------------------------------------------------------------------------
# Placements and the serial
# --------------------------------------------------------------------------------------------------


def test_serial_counts_changes_not_reads(store: StateStore, url: str) -> None:
    assert store.serial() == 0
    store.placements()
    store.snapshot()
    assert store.serial() == 0

    first = store.record_placement(_record())
    assert store.serial() == 1
    assert first.created_at == first.updated_at
    assert dt.datetime.fromisoformat(first.created_at or "").utcoffset() == dt.timedelta(0)

    assert store.record_placement(_record()) == first  # identical: no change, no bump
    assert store.serial() == 1

    moved = store.record_placement(_record(region="us-west-2", zone=None, resource_id="i-0abc"))
    assert store.serial() == 2
    assert (moved.region, moved.zone, moved.resource_id) == ("us-west-2", None, "i-0abc")
    assert moved.created_at == first.created_at
    assert (moved.updated_at or "") >= (first.updated_at or "")

    store.record_placement(_record(replica=1))
    snap = store.snapshot()
    assert snap.serial == 3
    assert [(p.workload, p.replica) for p in snap.placements] == [("train", 0), ("train", 1)]
    assert snap.placements[0].spec == {"workload": "train", "replica": 0, "hourly_usd": 32.77}

    assert store.remove_placement("train", 0) is True
    assert store.serial() == 4
    assert store.remove_placement("train", 0) is False
    assert store.serial() == 4
    assert store.get_placement("train", 0) is None
    assert [p.replica for p in store.placements()] == [1]

    with StateStore.open(url) as other:
        assert other.serial() == 4
        assert other.lineage() == store.lineage()


def test_concurrent_writers_in_other_processes_each_bump_the_serial(store: StateStore, url: str) -> None:
    procs = [_child(url, "write", f"w{n}", "25") for n in range(4)]
    _go(*procs)
    for proc in procs:
        assert _last_json(proc) == {"done": 25}
    assert store.serial() == 100
    assert len(store.placements()) == 100


# --------------------------------------------------------------------------------------------------
# Journal and audit
# --------------------------------------------------------------------------------------------------


def test_journal_records_before_and_after_and_finds_unfinished(store: StateStore) -> None:
    plan = "sha256:" + "a" * 64
    store.journal_start(plan, "a1", "create", "train", 0, {"offer": "o1"})
    store.journal_start(plan, "a2", "move", "train", 1)
    store.journal_start(plan, "a3", "delete", "old", 0)
    store.journal_finish(plan, "a1", ok=True, detail={"resource_id": "i-1"})
    store.journal_finish(plan, "a3", ok=False, detail={"error": "quota"})
    store.journal_start("sha256:" + "b" * 64, "a2", "keep", "other", None)

    entries = store.journal_for(plan)
    assert [(e.action_id, e.phase) for e in entries] == [
        ("a1", "started"), ("a2", "started"), ("a3", "started"), ("a1", "succeeded"), ("a3", "failed")]
    assert entries[3].detail == {"resource_id": "i-1"}
    assert (entries[3].action, entries[3].workload, entries[3].replica) == ("create", "train", 0)
    assert entries[0].at <= entries[3].at
    assert store.completed_actions(plan) == {"a1"}
    assert [(e.action_id, e.action, e.replica) for e in store.unfinished_actions(plan)] == [("a2", "move", 1)]

    with pytest.raises(StateError, match="already succeeded"):
        store.journal_start(plan, "a1", "create", "train", 0)
    with pytest.raises(StateError, match="already failed"):
        store.journal_finish(plan, "a3", ok=True)
    with pytest.raises(StateError, match="never started"):
        store.journal_finish(plan, "a9", ok=True)
    with pytest.raises(StateError, match="unknown action"):
        store.journal_start(plan, "a4", "explode", "train", 0)  # type: ignore[arg-type]

    store.journal_start(plan, "a3", "delete", "old", 0)  # a failed action may be retried
    store.journal_finish(plan, "a3", ok=True)
    store.journal_finish(plan, "a2", ok=True)
    assert store.completed_actions(plan) == {"a1", "a2", "a3"}
    assert store.unfinished_actions(plan) == []
    assert store.serial() == 0  # the journal is not the placements


def test_audit_log_newest_first(store: StateStore) -> None:
    store.audit("alice@host pid 1", "plan", None, "ok")
    store.audit("alice@host pid 1", "apply", "sha256:p", "failed", {"error": "quota", "actions": 3})
    store.audit("bob@host pid 2", "force-unlock", None, "ok", {"lock_id": "x"})
    log = store.audit_log(limit=2)
    assert [(e.who, e.operation, e.outcome) for e in log] == [
        ("bob@host pid 2", "force-unlock", "ok"), ("alice@host pid 1", "apply", "failed")]
    assert log[1].plan_digest == "sha256:p"
    assert log[1].detail == {"actions": 3, "error": "quota"}
    assert dt.datetime.fromisoformat(log[0].at).utcoffset() == dt.timedelta(0)
    assert len(store.audit_log()) == 3


# --------------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------------


def test_lock_held_makes_another_process_time_out_naming_the_holder(store: StateStore, url: str) -> None:
    held = store.acquire_lock("alice@build-1 pid 4242", "apply", timeout_s=0)
    assert store.current_lock() == held
    child = _child(url, "lock", "0.4", "bob@laptop pid 7")
    _go(child)
    result = _last_json(child)
    message = str(result["error"])
    assert result["holder"] == held.lock_id
    assert float(str(result["waited"])) >= 0.4
    assert "alice@build-1 pid 4242" in message
    assert "'apply'" in message
    assert held.acquired_at in message
    assert f"placement force-unlock {held.lock_id}" in message
    assert store.current_lock() == held


def test_release_lets_a_waiting_process_in(store: StateStore, url: str) -> None:
    held = store.acquire_lock("alice", "apply", timeout_s=0)
    waiter = _child(url, "lock", "30", "bob")
    _go(waiter)
    time.sleep(0.3)  # the waiter is now polling against the held lock
    assert store.current_lock() == held
    released_at = dt.datetime.now(dt.UTC)
    store.release_lock(held.lock_id)
    result = _last_json(waiter)
    assert "lock_id" in result, result
    assert dt.datetime.fromisoformat(str(result["acquired_at"])) >= released_at - dt.timedelta(seconds=1)
    now_held = store.current_lock()
    assert now_held is not None
    assert (now_held.lock_id, now_held.owner) == (result["lock_id"], "bob")


def test_only_one_of_simultaneous_acquirers_wins(store: StateStore, url: str) -> None:
    procs = [_child(url, "lock", "0", f"racer-{n}") for n in range(4)]
    _go(*procs)
    results = [_last_json(proc) for proc in procs]
    winners = [r for r in results if "lock_id" in r]
    assert len(winners) == 1, results
    current = store.current_lock()
    assert current is not None
    assert current.lock_id == winners[0]["lock_id"]
    assert all(r["holder"] == current.lock_id for r in results if "error" in r)


def test_force_unlock_needs_the_current_lock_id(store: StateStore) -> None:
    with pytest.raises(StateError, match="no lock is held"):
        store.force_unlock("nope")
    held = store.acquire_lock("alice", "apply", timeout_s=0)
    with pytest.raises(StateError, match=f"not the current 'state' lock.*{held.lock_id}"):
        store.force_unlock(str(uuid.uuid4()))
    assert store.current_lock() == held
    assert store.force_unlock(held.lock_id) == held
    assert store.current_lock() is None
    with pytest.raises(StateError, match="not held any more"):
        store.release_lock(held.lock_id)
    again = store.acquire_lock("bob", "apply", timeout_s=0)
    assert again.lock_id != held.lock_id


def test_locked_context_releases_on_success_and_on_error(store: StateStore) -> None:
    with store.locked("alice", "apply", timeout_s=0) as info:
        assert store.current_lock() == info
        with pytest.raises(LockHeldError):
            store.acquire_lock("bob", "apply", timeout_s=0)
    assert store.current_lock() is None
    with pytest.raises(RuntimeError, match="boom"), store.locked("alice", "apply", timeout_s=0):
        raise RuntimeError("boom")
    assert store.current_lock() is None
    with pytest.raises(StateError, match="not held any more"), store.locked("alice", "apply", 0) as info:
        store.force_unlock(info.lock_id)


def test_expired_lock_can_be_taken_over(url: str) -> None:
    t0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
    with StateStore.open(url, clock=lambda: t0) as first:
        held = first.acquire_lock("alice", "apply", timeout_s=0, ttl_s=10)
        assert held.expires_at == "2025-01-01T12:00:10+00:00"
    with StateStore.open(url, clock=lambda: t0 + dt.timedelta(seconds=5)) as early:
        with pytest.raises(LockHeldError, match="expires 2025-01-01T12:00:10"):
            early.acquire_lock("bob", "apply", timeout_s=0)
        refreshed = early.refresh_lock(held.lock_id, ttl_s=10)
        assert refreshed.expires_at == "2025-01-01T12:00:15+00:00"
    with (StateStore.open(url, clock=lambda: t0 + dt.timedelta(seconds=12)) as still_early,
          pytest.raises(LockHeldError)):
        still_early.acquire_lock("bob", "apply", timeout_s=0)
    with StateStore.open(url, clock=lambda: t0 + dt.timedelta(seconds=16)) as late:
        taken = late.acquire_lock("bob", "apply", timeout_s=0)
        assert taken.owner == "bob"
        assert late.current_lock() == taken
        with pytest.raises(StateError, match="not held any more"):
            late.release_lock(held.lock_id)
