"""watcher.store: file mode, migrations, the single writer, atomicity, crash safety."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from watcher.store import (
    MIGRATIONS,
    SchemaTooNewError,
    Store,
    StoreClosedError,
    StoreError,
    insert_events,
    upsert_cursors,
)

REPO = Path(__file__).resolve().parents[1]


def event(key: str, kind: str = "execution_error", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "severity": "error",
        "org_id": 1,
        "team_id": 10,
        "scenario_id": 100,
        "occurred_at": 1_782_984_000.0,
        "detected_at": 1_782_984_010.0,
        "payload": {"imtId": key, "reason": "boom"},
    }
    row.update(fields)
    return row


def cursor(scenario_id: int = 100, stream: str = "logs", imt: str = "a1") -> dict[str, Any]:
    return {
        "scenario_id": scenario_id,
        "stream": stream,
        "last_imt_id": imt,
        "last_ts_ms": 1_782_984_000_000,
        "updated_at": 1_782_984_010.0,
    }


def n_events(db: Database) -> int:
    return db["events"].count


def n_cursors(db: Database) -> int:
    return db["cursors"].count


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "makewatch.db"


@pytest.fixture
def store(path: Path):
    s = Store.open(path)
    yield s
    s.close()


# ------------------------------------------------------------------ file and migrations


def test_it_creates_the_file_owner_only_with_wal_and_pragmas_on(store: Store, path: Path) -> None:
    store.record_progress_sync([event("e1")], [cursor()])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600

    def pragmas(db: Database) -> tuple[str, int, int]:
        return (
            db.execute("PRAGMA journal_mode").fetchone()[0],
            db.execute("PRAGMA foreign_keys").fetchone()[0],
            db.execute("PRAGMA busy_timeout").fetchone()[0],
        )

    assert store.write_sync(pragmas) == ("wal", 1, 10_000)
    assert store.read_sync(pragmas) == ("wal", 1, 10_000)


def test_it_leaves_an_existing_readable_file_alone_but_warns(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir()
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="watcher.store"), Store.open(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "chmod 600" in caplog.text


def test_the_read_connection_is_read_only(store: Store) -> None:
    with pytest.raises(Exception, match="readonly"):
        store.read_sync(lambda db: db["events"].insert({"key": "e1"}))


def applied_migrations(path: Path) -> list[str]:
    with Database(path) as db:
        return [row["name"] for row in db["_sqlite_migrations"].rows]


def test_opening_twice_applies_each_migration_once(path: Path) -> None:
    with Store.open(path) as first:
        first.record_progress_sync([event("e1")], [cursor()])
        assert first.schema_version == len(MIGRATIONS)
    with Store.open(path) as second:
        assert second.schema_version == len(MIGRATIONS)
        assert second.count_events_sync() == {"execution_error": 1}
    assert applied_migrations(path) == [fn.__name__ for fn in MIGRATIONS]


def m999_add_note_to_events(db: Database) -> None:
    # Not idempotent: adding the column twice fails, so running it twice would show.
    db["events"].add_column("note", str)


def test_it_upgrades_a_v1_database_to_v2(path: Path) -> None:
    with Store.open(path, migrations=MIGRATIONS[:1]) as v1:
        v1.record_progress_sync([event("e1")], [cursor()])
        assert v1.schema_version == 1
    newer = [*MIGRATIONS, m999_add_note_to_events]
    with Store.open(path, migrations=newer) as v2:
        assert v2.schema_version == len(newer)
        assert "note" in v2.read_sync(lambda db: db["events"].columns_dict)
        # the real later migrations ran on the v1 file too
        assert "pending_since" in v2.read_sync(lambda db: db["scenarios"].columns_dict)
        assert v2.count_events_sync() == {"execution_error": 1}
    with Store.open(path, migrations=newer) as again:
        assert again.schema_version == len(newer)
    assert applied_migrations(path) == [fn.__name__ for fn in newer]


def test_a_failing_migration_is_rolled_back_and_stays_pending(path: Path) -> None:
    def m002_broken(db: Database) -> None:
        db["events"].add_column("note", str)
        raise RuntimeError("migration bug")

    m002_broken.__name__ = "m999_add_note_to_events"
    with pytest.raises(RuntimeError, match="migration bug"):
        Store.open(path, migrations=[*MIGRATIONS, m002_broken])
    assert applied_migrations(path) == [fn.__name__ for fn in MIGRATIONS]
    with Store.open(path, migrations=[*MIGRATIONS, m999_add_note_to_events]) as fixed:
        assert fixed.schema_version == len(MIGRATIONS) + 1


def test_it_refuses_a_database_newer_than_the_code(path: Path) -> None:
    Store.open(path, migrations=[*MIGRATIONS, m999_add_note_to_events]).close()
    threads_before = threading.active_count()
    with pytest.raises(SchemaTooNewError, match="newer makewatch.*m999_add_note_to_events"):
        Store.open(path)
    assert threading.active_count() == threads_before  # nothing left running or open


# --------------------------------------------------------------------- record_progress


async def test_record_progress_inserts_each_event_once_and_returns_the_count(
    store: Store,
) -> None:
    batch = [event("e1"), event("e2"), event("e2"), event("w1", kind="execution_warning")]
    assert await store.record_progress(batch, [cursor(imt="a1")]) == 3
    assert await store.record_progress(batch, [cursor(imt="a2")]) == 0
    assert await store.record_progress([event("e1"), event("e3")], [cursor(imt="a3")]) == 1
    assert await store.count_events() == {"execution_error": 3, "execution_warning": 1}
    assert await store.count_events("execution_error") == {"execution_error": 3}
    assert await store.count_events("quota") == {"quota": 0}
    assert (await store.get_cursor(100, "logs"))["last_imt_id"] == "a3"
    assert await store.get_cursor(100, "dlqs") is None


async def test_unprocessed_events_come_back_oldest_first_with_payload_decoded(
    store: Store,
) -> None:
    await store.record_progress([event("e1"), event("e2"), event("e3")], [])
    await store.write(lambda db: db["events"].update(1, {"processed_at": 5.0}))
    rows = await store.unprocessed_events(limit=10)
    assert [row["key"] for row in rows] == ["e2", "e3"]
    assert rows[0]["payload"] == {"imtId": "e2", "reason": "boom"}
    assert "payload_json" not in rows[0]
    assert [row["key"] for row in await store.unprocessed_events(limit=1)] == ["e2"]


async def test_record_progress_upserts_scenarios_and_health_keeping_what_is_left_out(
    store: Store,
) -> None:
    first = {
        "id": 100,
        "org_id": 1,
        "name": "Orders",
        "is_active": 1,
        "operations": 5,
        "snapshot": {"isActive": True},
        "first_seen_at": 10.0,
        "last_error_at": 7.0,
    }
    other = {"id": 101, "org_id": 1, "name": "Invoices", "first_seen_at": 10.0}
    await store.record_progress(
        [], [], scenarios=[first, other], health=[{"org_id": 1, "consecutive_failures": 2}]
    )
    later = {"id": 100, "org_id": 1, "operations": 9, "first_seen_at": 99.0}
    await store.record_progress(
        [], [], scenarios=[later], health=[{"org_id": 1, "last_ok_at": 50.0}]
    )
    scenarios = await store.get_scenarios(1)
    assert sorted(scenarios) == [100, 101]
    orders = scenarios[100]
    assert (orders["name"], orders["operations"], orders["last_error_at"]) == ("Orders", 9, 7.0)
    assert orders["first_seen_at"] == 10.0  # set once, never moved
    assert orders["snapshot"] == {"isActive": True}
    assert orders["error_score"] == 0
    assert await store.get_scenarios(2) == {}
    health = await store.read(lambda db: db["org_health"].get(1))
    assert (health["consecutive_failures"], health["last_ok_at"]) == (2, 50.0)
    assert health["unreachable_reported"] == 0


async def test_organizations_round_trip_their_json_fields(store: Store) -> None:
    org = {
        "id": 7,
        "name": "Acme",
        "base_url": "https://eu2.make.com/api/v2",
        "plan": "core",
        "api_limit": 60,
        "license": {"operations": 10_000},
        "usage": None,
        "updated_at": 1.0,
    }
    await store.upsert_organization(org)
    await store.upsert_organization({"id": 7, "api_limit": 120})
    stored = await store.get_organization(7)
    assert stored == {**org, "api_limit": 120}
    assert await store.get_organization(8) is None


def test_no_table_has_a_column_for_a_secret(store: Store) -> None:
    def columns(db: Database) -> list[str]:
        return [f"{t}.{c}" for t in db.table_names() for c in db[t].columns_dict]

    suspicious = ("token", "secret", "password", "webhook", "api_key", "apikey")
    assert [c for c in store.read_sync(columns) if any(s in c.lower() for s in suspicious)] == []


# ------------------------------------------------------------------------- atomicity


async def test_a_write_that_raises_after_inserting_events_leaves_nothing(store: Store) -> None:
    def half_done(db: Database) -> None:
        insert_events(db, [event("e1"), event("e2")])
        upsert_cursors(db, [cursor()])
        raise RuntimeError("poller bug")

    with pytest.raises(RuntimeError, match="poller bug"):
        await store.write(half_done)
    assert await store.read(lambda db: (n_events(db), n_cursors(db))) == (0, 0)
    # The writer is still usable afterwards.
    assert await store.record_progress([event("e1")], [cursor()]) == 1


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"cursors": [cursor(), cursor(stream="bogus")]}, ValueError),
        ({"cursors": [{**cursor(), "scenario_id": None}]}, Exception),
        # A Make id that is not an integer: SQLite's own datatype constraint.
        ({"scenarios": [{"id": "not-an-id", "org_id": 1}]}, Exception),
        ({"health": [{"org_id": 1, "no_such_column": 1}]}, Exception),
    ],
    ids=["unknown-stream", "null-scenario-id", "non-integer-scenario-id", "unknown-column"],
)
async def test_a_bad_row_late_in_record_progress_rolls_back_the_events_too(
    store: Store, bad: dict[str, Any], error: type[Exception]
) -> None:
    args: dict[str, Any] = {"events": [event("e1"), event("e2")], "cursors": [cursor()], **bad}
    with pytest.raises(error):
        await store.record_progress(**args)
    assert await store.read(lambda db: (n_events(db), n_cursors(db))) == (0, 0)
    assert await store.get_scenarios(1) == {}


async def test_a_write_fn_cannot_start_another_write(store: Store) -> None:
    def nested(db: Database) -> None:
        insert_events(db, [event("e1")])
        store.write_sync(n_events)

    with pytest.raises(StoreError, match="deadlock"):
        await store.write(nested)
    assert await store.read(n_events) == 0


async def test_a_lazy_result_is_refused(store: Store) -> None:
    with pytest.raises(TypeError, match="materialised"):
        await store.read(lambda db: db["events"].rows)


async def test_a_closed_store_refuses_work(path: Path) -> None:
    s = Store.open(path)
    await s.aclose()
    await s.aclose()  # idempotent
    with pytest.raises(StoreClosedError):
        await s.write(n_events)
    with pytest.raises(StoreClosedError):
        s.read_sync(n_events)


# ------------------------------------------------------------------------ concurrency


async def test_a_slow_write_does_not_block_the_event_loop(store: Store) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    def slow(db: Database) -> int:
        n = insert_events(db, [event("e1")])
        time.sleep(0.2)  # noqa: ASYNC251 - runs in the writer thread, which is the point
        return n

    task = asyncio.create_task(ticker())
    assert await store.write(slow) == 1
    stop.set()
    await task
    assert ticks >= 8  # ~20 without blocking; 1 if the write had held the loop


async def test_reads_run_while_a_write_is_in_progress_and_see_only_commits(
    store: Store,
) -> None:
    inserted, release = threading.Event(), threading.Event()

    def held_open(db: Database) -> None:
        insert_events(db, [event("e1")])
        inserted.set()
        if not release.wait(timeout=5):
            raise TimeoutError("the test never released the write")

    write = asyncio.create_task(store.write(held_open))
    assert await asyncio.to_thread(inserted.wait, 5)
    assert await asyncio.wait_for(store.read(n_events), timeout=2) == 0
    assert await asyncio.wait_for(store.count_events(), timeout=2) == {}
    assert not write.done()
    release.set()
    await write
    assert await store.read(n_events) == 1


async def test_concurrent_writes_are_serialised_and_all_land(store: Store) -> None:
    await store.write(lambda db: db["org_health"].insert({"org_id": 1, "consecutive_failures": 0}))
    threads: set[int] = set()

    def bump_in(db: Database, i: int) -> int:
        threads.add(threading.get_ident())
        insert_events(db, [event(f"e{i}")])
        # Read-modify-write: interleaved writers would lose increments.
        failures = db["org_health"].get(1)["consecutive_failures"]
        time.sleep(0.001)  # noqa: ASYNC251 - writer thread; widens any race window
        db["org_health"].update(1, {"consecutive_failures": failures + 1})
        return i

    results = await asyncio.gather(
        *(store.write(lambda db, i=i: bump_in(db, i)) for i in range(50))
    )
    assert results == list(range(50))
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert await store.read(n_events) == 50
    health = await store.read(lambda db: db["org_health"].get(1))
    assert health["consecutive_failures"] == 50


async def test_sync_and_async_apis_see_the_same_data(store: Store) -> None:
    assert store.record_progress_sync([event("e1")], [cursor(imt="s1")]) == 1
    assert await store.count_events() == {"execution_error": 1}
    assert await store.record_progress([event("e2")], [cursor(imt="a2")]) == 1
    assert store.count_events_sync() == {"execution_error": 2}
    assert store.get_cursor_sync(100, "logs")["last_imt_id"] == "a2"
    assert [e["key"] for e in store.unprocessed_events_sync(10)] == ["e1", "e2"]
    store.upsert_organization_sync({"id": 1, "name": "Acme"})
    assert (await store.get_organization(1))["name"] == "Acme"
    await store.write(lambda db: db["scenarios"].insert({"id": 5, "org_id": 1}))
    assert list(store.get_scenarios_sync(1)) == [5]


# ---------------------------------------------------------------------------- crashes

CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from watcher.store import Store, insert_events, upsert_cursors

    store = Store.open(sys.argv[1])
    ok = {"key": "committed", "kind": "execution_error"}
    store.record_progress_sync([ok], [{"scenario_id": 1, "stream": "logs", "last_imt_id": "a"}])
    wal = sys.argv[1] + "-wal"
    committed_wal_size = os.path.getsize(wal)

    def crash(db):
        # A one-page cache makes SQLite spill the uncommitted pages into the WAL file, so the
        # kill leaves half a transaction on disk, not just in memory.
        db.execute("PRAGMA cache_size = 1")
        events = [{"key": f"lost{i}", "kind": "execution_error", "payload": {"pad": "x" * 200}}
                  for i in range(500)]
        insert_events(db, events)
        upsert_cursors(db, [{"scenario_id": 1, "stream": "logs", "last_imt_id": "z"}])
        print(os.path.getsize(wal) - committed_wal_size, flush=True)
        os._exit(1)

    store.write_sync(crash)
    """
)


def test_a_crash_before_commit_leaves_nothing_partial(path: Path) -> None:
    path.parent.mkdir()
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path)],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    uncommitted_bytes_on_disk = int(proc.stdout)
    assert uncommitted_bytes_on_disk > 50_000
    with Store.open(path) as reopened:
        assert reopened.count_events_sync() == {"execution_error": 1}
        assert [e["key"] for e in reopened.unprocessed_events_sync(1000)] == ["committed"]
        assert reopened.get_cursor_sync(1, "logs")["last_imt_id"] == "a"
        assert reopened.record_progress_sync([{"key": "after", "kind": "x"}], []) == 1


def test_prune_forgets_old_history_but_keeps_open_work(tmp_path: Path) -> None:
    from watcher.store import prune

    with Store.open(tmp_path / "p.db") as store:

        def seed(db: Database) -> None:
            old, new = 1000.0, 900_000.0
            for i, (t, processed) in enumerate([(old, old), (old, None), (new, new)]):
                db["events"].insert({"key": f"e{i}", "kind": "execution_error", "occurred_at": t, "processed_at": processed})
            db["alerts"].insert({"id": 1, "fingerprint": "gone", "state": "resolved", "last_seen": old})
            db["alerts"].insert({"id": 2, "fingerprint": "open", "state": "firing", "last_seen": old})
            db["alerts"].insert({"id": 3, "fingerprint": "kept-by-outbox", "state": "resolved", "last_seen": old})
            db["outbox"].insert({"id": 1, "alert_id": 1, "channel": "c", "status": "sent", "created_at": old})
            db["outbox"].insert({"id": 2, "alert_id": 2, "channel": "c", "status": "pending", "created_at": old})
            db["outbox"].insert({"id": 3, "alert_id": 3, "channel": "c", "status": "sent", "created_at": new})
            db["deliveries"].insert({"outbox_id": 1, "attempted_at": old, "ok": 1})
            db["deliveries"].insert({"outbox_id": 2, "attempted_at": old, "ok": 0})
            db["cycles"].insert({"org_id": 1, "started_at": old})
            db["cycles"].insert({"org_id": 1, "started_at": new})
            db["actions"].insert({"action": "start", "status": "done", "created_at": old})
            db["actions"].insert({"action": "start", "status": "pending", "created_at": old})
            db["actions"].insert({"action": "stop", "status": "done", "created_at": new})

        store.write_sync(seed)
        deleted = store.write_sync(lambda db: prune(db, 500_000.0))
        assert deleted == {
            "deliveries": 1, "outbox": 1, "events": 1, "alerts": 1, "cycles": 1, "digests": 0, "actions": 1,
        }
        # A pending action (in flight, or lost to a crash) stays visible; a finished old one goes.
        assert store.read_sync(
            lambda db: sorted((r["action"], r["status"]) for r in db["actions"].rows)
        ) == [("start", "pending"), ("stop", "done")]
        left = store.read_sync(
            lambda db: {
                "events": sorted(r["key"] for r in db["events"].rows),
                "alerts": sorted(r["fingerprint"] for r in db["alerts"].rows),
                "outbox": sorted(r["id"] for r in db["outbox"].rows),
                "deliveries": [r["outbox_id"] for r in db["deliveries"].rows],
            }
        )
        assert left == {
            "events": ["e1", "e2"],  # an unprocessed event stays, however old
            "alerts": ["kept-by-outbox", "open"],
            "outbox": [2, 3],  # pending work stays
            "deliveries": [2],
        }
