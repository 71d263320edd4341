"""watcher.pgtx and watcher.pgstore on a real PostgreSQL: the facade gives sqlite-utils'
results, both engines get the same schema from the same migrations, and the store keeps the
SQLite store's contract (atomic writes, snapshot reads, writes one at a time, migrations
once, no password in any message)."""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import PgServer, pg_server, pg_url  # noqa: F401 - fixtures
from sqlite_utils import Database
from sqlite_utils.db import NotFoundError, PrimaryKeyRequired

from watcher.store import MIGRATIONS, SchemaTooNewError, Store, StoreError

psycopg = pytest.importorskip("psycopg", reason="psycopg is in the [test] extra")

from watcher.pgstore import (  # noqa: E402
    MIGRATE_LOCK,
    WRITE_LOCK,
    PgStore,
    StateDatabaseError,
    StateDatabaseUnavailable,
)
from watcher.pgtx import PgDatabase, translate  # noqa: E402

pytestmark = pytest.mark.postgres


# ------------------------------------------------------------------------- translate


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s"),
        ("SELECT '?' , ?", "SELECT '?' , %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ('SELECT "col?" FROM t WHERE "a""?" = ?', 'SELECT "col?" FROM t WHERE "a""?" = %s'),
        ("SELECT 1 WHERE k LIKE 'delivery:%'", "SELECT 1 WHERE k LIKE 'delivery:%%'"),
        ("SELECT 10 % 3, ?", "SELECT 10 %% 3, %s"),
        ("SELECT ? -- why?\n, ?", "SELECT %s -- why?\n, %s"),
        ("SELECT /* a ? b % */ ?", "SELECT /* a ? b %% */ %s"),
        ("SELECT x::text FROM t", "SELECT x::text FROM t"),
        ("SELECT %s", "SELECT %%s"),
    ],
)
def test_translate_turns_placeholders_outside_quotes_and_doubles_percent(sql: str, expected: str) -> None:
    assert translate(sql) == expected


# ----------------------------------------------------------------- facade vs sqlite-utils


@pytest.fixture
def pgdb(pg_url: str) -> Iterator[PgDatabase]:  # noqa: F811 - fixture
    db = PgDatabase(psycopg.connect(pg_url, autocommit=True))
    yield db
    db.close()


def make_schema(db: Any) -> None:
    db["t"].create(
        {"id": int, "name": str, "score": float, "flag": int, "data": bytes, "meta": str},
        pk="id",
        defaults={"score": 0},
        not_null=["name"],
    ).create_index(["name"], unique=True)
    db["pairs"].create({"a": str, "b": int, "v": str}, pk=("a", "b"), not_null=["a", "b"])
    db["kv"].create({"key": str, "value": str, "n": int}, pk="key")
    db["kv"].add_column("extra", int, not_null_default=7)
    db["kids"].create({"id": int, "t_id": int}, pk="id", foreign_keys=[("t_id", "t", "id")])


def scenario(db: Any) -> list[Any]:
    """A run of every facade call; each step's Python result goes in the list."""
    out: list[Any] = []
    t, pairs, kv = db["t"], db["pairs"], db["kv"]
    out.append(t.insert({"name": "a", "flag": True, "data": b"\x00\x01"}).last_pk)
    out.append(t.insert({"id": 10, "name": "b", "meta": {"x": [1, "?%"]}}).last_pk)
    out.append(t.insert({"name": "c"}).last_pk)  # after an explicit id: max + 1
    t.insert_all([{"name": "d", "score": 1.5}, {"id": 30, "name": "e"}, {"name": "f"}])
    out.append(t.count)
    out.append(list(t.rows_where(order_by="id")))
    out.append(list(t.rows_where("name > ? AND score < ?", ["b", 1], order_by="name DESC", limit=2, offset=1)))
    out.append(list(t.rows_where(select="id, name", order_by="id", limit=1)))
    out.append(t.count_where("name LIKE 'd%' OR name LIKE ?", ["e%"]))
    out.append(t.get(10))
    with pytest.raises(NotFoundError):
        t.get(999)
    t.update(10, {"score": 2.5, "meta": ["y"], "flag": False})
    out.append(t.get(10))
    with pytest.raises(NotFoundError):
        t.update(999, {"score": 1})
    out.append(t.update(10).last_pk)
    pairs.insert_all([{"a": "x", "b": 1, "v": "one"}, {"a": "x", "b": 2, "v": "two"}, {"a": "y", "b": 1}])
    pairs.upsert_all([{"a": "x", "b": 1, "v": "uno"}, {"a": "z", "b": 9, "v": "new"}], pk=("a", "b"))
    pairs.upsert_all([{"a": "y", "b": 1}], pk=("a", "b"))  # only the key: nothing to update
    out.append(pairs.get(("x", 1)))
    pairs.delete(("x", 2))
    with pytest.raises(NotFoundError):
        pairs.delete(("x", 2))
    out.append(sorted((r["a"], r["b"], r["v"]) for r in pairs.rows))
    kv.upsert_all([{"key": "k1", "value": "v1", "n": 1}, {"key": "k2", "value": "v2", "n": 2}], pk="key")
    kv.upsert_all([{"key": "k1", "n": 10}], pk="key")  # value is kept
    kv.upsert_all([{"key": "k3", "n": 1}, {"key": "k3", "n": 2}], pk="key")  # the last wins
    with pytest.raises(PrimaryKeyRequired):
        kv.upsert_all([{"value": "no key"}], pk="key")
    out.append(list(kv.rows_where(order_by="key")))
    out.append(kv.upsert_all([{"key": "k4", "n": 4}], pk="key").last_pk)
    out.append((t.exists(), db["missing"].exists(), list(db["missing"].rows_where())))
    out.append(t.columns_dict)
    out.append(kv.columns_dict)
    out.append([n for n in db.table_names()])
    cursor = db.execute("SELECT id, name FROM t WHERE id > ? ORDER BY id", [10])
    out.append((cursor.fetchone(), cursor.fetchall()))
    out.append(list(db.execute("SELECT name FROM t WHERE name LIKE 'a%' ORDER BY id")))
    out.append(db.execute("SELECT 'it''s ?', '50%', ?", ["?"]).fetchone())
    out.append(db.execute("UPDATE t SET flag = ? WHERE id >= ?", [True, 30]).rowcount)
    out.append(db.execute("UPDATE t SET flag = 0 WHERE id = -1").fetchone())
    out.append(list(db.query("SELECT count(*) AS n, sum(id) AS s, sum(score) AS f FROM t")))
    out.append(list(db.query('SELECT name AS "col?" FROM t WHERE id = ?', [10])))
    many = db.executemany if isinstance(db, PgDatabase) else db.conn.executemany  # not in sqlite-utils
    many("INSERT INTO kv (key, n) VALUES (?, ?)", [("m1", 1), ("m2", 2)])
    out.append(db["kv"].count_where("key LIKE 'm%'"))
    out.append(db["kids"].insert({"t_id": 10}).last_pk)
    out.append(sorted(r["id"] for r in t.rows))
    # Last: a skipped row still takes a number from PostgreSQL's identity (a gap SQLite does
    # not have), so only names are compared after it.
    out.append(t.insert({"name": "a"}, ignore=True).last_pk)  # conflicts on the unique name
    t.insert_all([{"name": "a"}, {"name": "g"}, {"name": "g"}], ignore=True)
    out.append(sorted(r["name"] for r in t.rows))
    return out


def test_the_facade_gives_sqlite_utils_results(tmp_path: Path, pgdb: PgDatabase) -> None:
    lite = Database(tmp_path / "x.db")
    lite.execute("PRAGMA foreign_keys = ON")
    make_schema(lite)
    make_schema(pgdb)
    expected = scenario(lite)
    got = scenario(pgdb)
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {i}"


def test_a_missing_foreign_key_target_is_refused_on_both(tmp_path: Path, pgdb: PgDatabase) -> None:
    lite = Database(tmp_path / "x.db")
    lite.execute("PRAGMA foreign_keys = ON")
    for db, error in ((lite, Exception), (pgdb, psycopg.errors.ForeignKeyViolation)):
        make_schema(db)
        with pytest.raises(error):
            db["kids"].insert({"t_id": 12345})


def test_lastrowid_and_conn_are_not_portable(pgdb: PgDatabase) -> None:
    make_schema(pgdb)
    with pytest.raises(AttributeError, match="RETURNING"):
        _ = pgdb.execute("INSERT INTO kv (key) VALUES (?)", ["a"]).lastrowid
    assert not hasattr(pgdb, "conn")


# -------------------------------------------------------------------------- schema


def _normal_type(declared: str) -> str:
    declared = declared.lower()
    if declared in ("integer", "bigint"):
        return "integer"
    if declared in ("float", "real", "double precision"):
        return "real"
    if declared == "text":
        return "text"
    return declared


def sqlite_schema(path: Path) -> dict[str, Any]:
    db = Database(path)
    out: dict[str, Any] = {}
    for table in db.table_names():
        if table.startswith("_sqlite"):
            continue
        cols = db.execute(f"PRAGMA table_info([{table}])").fetchall()
        pks = [c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5]]
        indexes = sorted(
            (r[1], bool(r[2]))
            for r in db.execute(f"PRAGMA index_list([{table}])").fetchall()
            if r[3] == "c"  # made by CREATE INDEX (not the primary key's autoindex)
        )
        out[table] = {
            "columns": [(c[1], _normal_type(c[2])) for c in cols],
            # A primary key column is NOT NULL on PostgreSQL; SQLite's rowid alias is too.
            "not_null": sorted(c[1] for c in cols if c[3] or c[5]),
            "defaults": {c[1]: c[4] for c in cols if c[4] is not None},
            "pk": pks,
            "indexes": indexes,
        }
    db.close()
    return out


def pg_schema(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        db = PgDatabase(conn)
        for table in db.table_names():
            if table.startswith("_makewatch"):
                continue
            cols = db.execute(
                "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
            indexes = db.execute(
                "SELECT c.relname, i.indisunique FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = ?::regclass AND NOT i.indisprimary ORDER BY c.relname",
                [f'"{table}"'],
            ).fetchall()
            out[table] = {
                "columns": [(c[0], _normal_type(c[1])) for c in cols],
                "not_null": sorted(c[0] for c in cols if c[2] == "NO"),
                "defaults": {c[0]: c[3] for c in cols if c[3] is not None},
                "pk": db[table].pks,
                "indexes": sorted((name, unique) for name, unique in indexes),
            }
    return out


def test_both_engines_get_the_same_schema_from_the_same_migrations(tmp_path: Path, pg_url: str) -> None:  # noqa: F811 - fixture
    Store.open(tmp_path / "state.db").close()
    with PgStore.open(pg_url) as store:
        assert store.schema_version == len(MIGRATIONS)
    lite, pg = sqlite_schema(tmp_path / "state.db"), pg_schema(pg_url)
    assert list(pg) == list(lite)
    for table in lite:
        assert pg[table] == lite[table], table


# ------------------------------------------------------------------------- the store


@pytest.fixture
def store(pg_url: str) -> Iterator[PgStore]:  # noqa: F811 - fixture
    with PgStore.open(pg_url) as s:
        yield s


def test_a_failing_write_leaves_nothing(store: PgStore) -> None:
    def fn(db: Any) -> None:
        db["watch_state"].insert({"key": "a", "value_json": "1"})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.write_sync(fn)
    assert store.read_sync(lambda db: db["watch_state"].count) == 0


def test_a_write_fn_that_swallows_a_failed_statement_keeps_nothing_and_says_so(store: PgStore) -> None:
    def fn(db: Any) -> None:
        db["watch_state"].insert({"key": "a", "value_json": "1"})
        try:
            db["watch_state"].insert({"key": "a", "value_json": "2"})
        except psycopg.errors.UniqueViolation:
            pass  # fine on SQLite (statement rollback); PostgreSQL aborted the transaction

    with pytest.raises(StoreError, match="aborted the transaction"):
        store.write_sync(fn)
    assert store.read_sync(lambda db: db["watch_state"].count) == 0
    assert store.write_sync(lambda db: db["watch_state"].insert({"key": "b"}).last_pk) == "b"


def test_a_lazy_result_is_refused(store: PgStore) -> None:
    with pytest.raises(TypeError, match="materialised"):
        store.read_sync(lambda db: db["events"].rows)
    with pytest.raises(TypeError, match="materialised"):
        store.write_sync(lambda db: db.query("SELECT 1"))


def test_a_read_sees_one_snapshot_and_never_an_uncommitted_write(store: PgStore) -> None:
    inserted, read_done = threading.Event(), threading.Event()
    started, committed = threading.Event(), threading.Event()

    def slow_write(db: Any) -> None:
        db["watch_state"].insert({"key": "w"})
        inserted.set()
        assert read_done.wait(10)

    def count(db: Any) -> int:
        return db["watch_state"].count

    writer = threading.Thread(target=store.write_sync, args=(slow_write,))
    writer.start()
    assert inserted.wait(10)
    assert store.read_sync(count) == 0  # the write has not committed
    read_done.set()
    writer.join(10)
    assert store.read_sync(count) == 1

    def two_reads(db: Any) -> tuple[int, int]:
        first = count(db)
        started.set()
        assert committed.wait(10)
        return first, count(db)

    reader = store._reader.submit(store._read_tx, two_reads)
    assert started.wait(10)
    store.write_sync(lambda db: db["watch_state"].insert({"key": "w2"}))
    committed.set()
    assert reader.result(10) == (1, 1)  # one snapshot: the commit in between is not seen
    assert store.read_sync(count) == 2


def test_writers_of_two_stores_run_one_at_a_time(pg_url: str) -> None:  # noqa: F811 - fixture
    with PgStore.open(pg_url) as one, PgStore.open(pg_url) as two:
        one.write_sync(lambda db: db["org_health"].insert({"org_id": 1, "consecutive_failures": 0}))
        barrier = threading.Barrier(2)

        def increment(db: Any) -> None:
            n = db["org_health"].get(1)["consecutive_failures"]  # read, then write what was read
            db["org_health"].update(1, {"consecutive_failures": n + 1})

        def work(store: PgStore) -> None:
            barrier.wait(10)
            for _ in range(50):
                store.write_sync(increment)

        threads = [threading.Thread(target=work, args=(s,)) for s in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert one.read_sync(lambda db: db["org_health"].get(1)["consecutive_failures"]) == 100


def test_every_write_holds_the_write_lock(store: PgStore) -> None:
    def locks(db: Any) -> list[Any]:
        return db.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchall()

    assert store.write_sync(locks) == [(WRITE_LOCK,)]
    assert store.read_sync(locks) == []


def test_sessions_carry_the_timeouts_and_the_application_name(store: PgStore) -> None:
    def settings(db: Any) -> tuple[Any, ...]:
        return db.execute(
            "SELECT current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('lock_timeout'), current_setting('statement_timeout'), "
            "current_setting('application_name')"
        ).fetchone()

    assert store.read_sync(settings) == ("20s", "30s", "30s", "makewatch")
    assert store.write_sync(settings) == ("20s", "30s", "30s", "makewatch")


def applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM _makewatch_migrations ORDER BY applied_at")]


def test_migrations_run_once_and_opening_again_changes_nothing(pg_url: str) -> None:  # noqa: F811 - fixture
    with PgStore.open(pg_url, migrations=MIGRATIONS[:3]) as store:
        assert store.schema_version == 3
    with PgStore.open(pg_url) as store:
        assert store.schema_version == len(MIGRATIONS)
    with PgStore.open(pg_url) as store:
        assert store.schema_version == len(MIGRATIONS)
    assert applied(pg_url) == [fn.__name__ for fn in MIGRATIONS]


def test_two_stores_opening_a_fresh_database_at_once_both_succeed(pg_url: str) -> None:  # noqa: F811 - fixture
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def open_one() -> None:
        barrier.wait(10)
        try:
            with PgStore.open(pg_url) as s:
                results.append(s.schema_version)
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [len(MIGRATIONS)] * 2
    assert applied(pg_url) == [fn.__name__ for fn in MIGRATIONS]


def test_a_database_migrated_by_a_newer_makewatch_is_refused(pg_url: str) -> None:  # noqa: F811 - fixture
    PgStore.open(pg_url).close()
    with pytest.raises(SchemaTooNewError, match="newer makewatch"):
        PgStore.open(pg_url, migrations=MIGRATIONS[:-1])


def test_a_failing_migration_is_not_recorded_and_releases_the_lock(pg_url: str) -> None:  # noqa: F811 - fixture
    def m999_broken(db: Any) -> None:
        db["half"].create({"id": int}, pk="id")
        raise RuntimeError("broken migration")

    with pytest.raises(RuntimeError, match="broken migration"):
        PgStore.open(pg_url, migrations=(*MIGRATIONS, m999_broken))
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK,)).fetchone() == (True,)
    assert applied(pg_url) == [fn.__name__ for fn in MIGRATIONS]


def test_a_lost_connection_fails_that_transaction_and_the_next_one_connects_again(
    store: PgStore, pg_url: str, caplog: pytest.LogCaptureFixture  # noqa: F811 - fixture
) -> None:
    """A server restart or failover, or a frozen process whose idle transaction the server
    ended: not fatal. The transaction in flight is lost (rolled back by the server), the next
    one reconnects; the service retries the round (watcher.service)."""
    store.write_sync(lambda db: db["watch_state"].insert({"key": "a", "value_json": "1", "updated_at": 1.0}))

    def kill_backends() -> None:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'makewatch' AND datname = current_database()"
            )

    def killed_midway(db: Any) -> None:
        db["watch_state"].insert({"key": "b", "value_json": "2", "updated_at": 2.0})
        kill_backends()
        db["watch_state"].insert({"key": "b2", "value_json": "2", "updated_at": 2.0})

    with pytest.raises(StateDatabaseUnavailable) as caught:
        store.write_sync(killed_midway)
    assert store.state_file_error(caught.value) is None  # not fatal: the service retries
    assert store.describe in str(caught.value)
    with caplog.at_level(logging.WARNING, logger="watcher.pgstore"):
        store.write_sync(lambda db: db["watch_state"].insert({"key": "c", "value_json": "3", "updated_at": 3.0}))
        # The reader's connection died too (found dead at its BEGIN, replaced at once).
        assert store.read_sync(lambda db: sorted(r["key"] for r in db["watch_state"].rows)) == ["a", "c"]
    assert "connected again (writer)" in caplog.text and "connected again (reader)" in caplog.text
    kill_backends()  # between transactions: the next ones just connect again
    assert store.read_sync(lambda db: db["watch_state"].count) == 2
    assert store.state_file_error(ValueError("not ours")) is None


def test_an_unreachable_server_is_fatal_at_open_but_retried_later(pg_url: str) -> None:  # noqa: F811
    dead = "postgresql://makewatch@127.0.0.1:1/none"
    with pytest.raises(StateDatabaseError, match="127.0.0.1:1/none"):
        PgStore.open(dead, connect_timeout_s=1)


# --------------------------------------------------------------------- no password

SECRET = "Sup3r-s3cret-pw"


@pytest.fixture
def password_url(pg_server: PgServer, pg_url: str) -> Iterator[str]:  # noqa: F811
    """A role that must give its password (the fixture's server trusts everyone else)."""
    if pg_server.data_dir is None:
        pytest.skip("needs the fixture's own server (pg_hba.conf is edited)")
    role = "pw_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.base_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
        conn.execute(f'ALTER DATABASE "{pg_url.rsplit("/", 1)[1]}" OWNER TO {role}')
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    host = pg_url.split("@", 1)[1]
    yield f"postgresql://{role}:{SECRET}@{host}"


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + caplog.text
    assert SECRET not in text
    assert "Sup3r" not in text


def test_the_password_is_in_no_description_error_or_log(
    password_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with PgStore.open(password_url) as store:
        assert SECRET not in store.describe
        assert store.describe.startswith("postgresql://pw_")
        assert store.describe.endswith(password_url.rsplit("/", 1)[1])
        assert store.read_sync(lambda db: db["events"].count) == 0
    assert SECRET not in caplog.text

    wrong = password_url.replace(SECRET, SECRET + "x")
    with pytest.raises(StateDatabaseError, match="authentication failed") as caught:
        PgStore.open(wrong)
    assert_no_secret(caught.value, caplog)

    no_db = password_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StateDatabaseError, match="does not exist|authentication") as caught:
        PgStore.open(no_db)
    assert_no_secret(caught.value, caplog)

    closed_port = "postgresql://u:" + SECRET + "@127.0.0.1:1/db"
    with pytest.raises(StateDatabaseError, match="cannot reach") as caught:
        PgStore.open(closed_port, connect_timeout_s=2)
    assert_no_secret(caught.value, caplog)

    in_query = f"postgresql://127.0.0.1:1/db?password={SECRET}&user=u"
    with pytest.raises(StateDatabaseError) as caught:
        PgStore.open(in_query, connect_timeout_s=2)
    assert_no_secret(caught.value, caplog)

    # psycopg's own message would quote these URLs, password included.
    for bad in (f"postgresql://u:{SECRET}@[::1/db", f"postgresql://u:{SECRET}@h/db?bogus=1"):
        with pytest.raises(StateDatabaseError, match="cannot be parsed") as caught:
            PgStore.open(bad)
        assert_no_secret(caught.value, caplog)



def test_a_write_chosen_as_a_deadlock_victim_is_retried_once(store: PgStore, pg_url: str) -> None:  # noqa: F811 - fixture
    store.write_sync(lambda db: db["watch_state"].insert_all([{"key": "a", "value_json": "0"}, {"key": "b", "value_json": "0"}]))
    holds_b = threading.Event()
    attempts: list[int] = []

    def a_after_b(db: Any) -> None:
        attempts.append(1)
        db.execute("UPDATE watch_state SET value_json = 'w' WHERE key = 'b'")
        holds_b.set()
        db.execute("UPDATE watch_state SET value_json = 'w' WHERE key = 'a'")  # waits for other

    with psycopg.connect(pg_url, autocommit=True) as other:
        # The other side checks for a deadlock late, so the store's write is the victim.
        other.execute("SET deadlock_timeout = '10s'")
        other.execute("BEGIN")
        other.execute("UPDATE watch_state SET value_json = 'o' WHERE key = 'a'")
        writer = threading.Thread(target=store.write_sync, args=(a_after_b,))
        writer.start()
        assert holds_b.wait(10)
        other.execute("UPDATE watch_state SET value_json = 'o' WHERE key = 'b'")  # the cycle
        other.execute("COMMIT")
        writer.join(30)
    assert len(attempts) == 2
    assert store.read_sync(lambda db: sorted((r["key"], r["value_json"]) for r in db["watch_state"].rows)) == [
        ("a", "w"), ("b", "w"),
    ]
