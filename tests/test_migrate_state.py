"""`makewatch migrate-state` on a real PostgreSQL: a realistic SQLite state goes to PostgreSQL
and back row for row with the same ids, the next inserts get fresh ids, and every refusal
(non-empty target, a running service, a live lease, bad options) writes nothing and never
prints a password."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures
from test_digest_content import NOW, seed

from alerts.pipeline import process_batch
from alerts.policy import AlertsSettings, Policy
from watcher import store as st
from watcher.actions import ActionRequest, record_local
from watcher.cli import main
from watcher.lock import StateLock
from watcher.migrate_state import NOT_COPIED, schema_tables
from watcher.pgstore import PgStore
from watcher.store import Store

pytestmark = pytest.mark.postgres

POLICY = Policy(alerts=AlertsSettings(default_channels=("ops",)))
PASSWORD = "s3cr3t-pw"
STATE_ENV = "MAKEWATCH_TEST_STATE_URL"


# --------------------------------------------------------------------------- helpers


def config(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "makewatch.toml"
    path.write_text(
        "[[organizations]]\n"
        'name = "Acme"\n'
        'base_url = "https://eu1.make.com/api/v2"\n'
        "organization_id = 1\n"
        'token_env = "MAKE_TOKEN_ACME"\n'
        f"\n[state]\n{state}\n"
    )
    return path


def sqlite_config(tmp_path: Path, db: Path) -> Path:
    return config(tmp_path, f'db_path = "{db}"')


def pg_config(tmp_path: Path) -> Path:
    return config(tmp_path, f'url_env = "{STATE_ENV}"')


def migrate(cfg: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        main, ["migrate-state", "--config", str(cfg), *args], env={"MAKE_TOKEN_ACME": "t", **(env or {})}
    )


def with_password(url: str) -> str:
    """The fixture's server trusts every local connection: the password is only carried."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def seed_sqlite(path: Path) -> None:
    """A state as the service leaves it: organizations, scenarios with their snapshots and
    cursors, events decided and pending, alerts, outbox rows sent/pending/parked with their
    delivery attempts, silences, cycles, digests, actions, watch_state, org health."""
    with Store.open(path) as store:
        store.write_sync(seed)  # the digest test's world: orgs, scenarios, events, outbox, silences, cycles
        store.write_sync(lambda db: process_batch(db, POLICY, NOW))  # alerts, held for group_wait
        store.write_sync(lambda db: process_batch(db, POLICY, NOW + 7200))  # ... then notified
        store.record_progress_sync(
            events=[{"key": "late:1", "kind": "execution_error", "org_id": 1, "scenario_id": 101,
                     "occurred_at": NOW + 5, "detected_at": NOW + 6, "payload": {"error_name": "Late", "n": 1.5}}],
            cursors=[
                {"scenario_id": sid, "stream": stream, "last_imt_id": f"imt-{sid}-{stream}",
                 "last_ts_ms": int(NOW * 1000) + sid, "updated_at": NOW, "floor_ms": 1}
                for sid in (101, 102, 103, 104, 105, 106) for stream in st.STREAMS
            ],
            scenarios=[{"id": 101, "scheduling": {"type": "indefinitely", "interval": 900},
                        "snapshot": {"isActive": True, "name": "Sync HubSpot ✓"}, "error_score": 0.25}],
            health=[{"org_id": 1, "consecutive_failures": 2, "last_error": "503", "last_error_at": NOW}],
        )
        store.write_sync(lambda db: st.set_watch_state(db, {"quota:1": {"level": 90}, "usage:1": NOW}, NOW))

        def deliveries(db: Any) -> None:
            for row in db.query("SELECT id FROM outbox ORDER BY id"):
                db["deliveries"].insert({"outbox_id": row["id"], "attempted_at": NOW, "ok": 1})
            db["deliveries"].insert({"outbox_id": 1, "attempted_at": NOW + 1, "ok": 0, "error": "HTTP 500"})
            for recipient in ("ops@example.com", "lead@example.com"):
                for day in range(4):
                    db["digests"].insert({"recipient": recipient, "period_start": NOW - 86400 * (day + 1),
                                          "period_end": NOW - 86400 * day, "sent_at": NOW - 86400 * day + 60})
            # Not copied: they describe the processes running on a state.
            db.execute("INSERT INTO replicas (id, host, pid, started_at, heartbeat_at) VALUES ('w-0', 'h', 1, 1, 1)")
            db.execute("INSERT INTO leases (name, holder, generation, expires_at) VALUES ('org:1', NULL, 3, 1)")

        store.write_sync(deliveries)

        async def actions() -> None:
            await record_local(store, ActionRequest("ack", "Acme", alert_id=1, actor="ana", dedup_key="env-1"),
                               NOW + 10, status="done", message="acknowledged")
            await record_local(store, ActionRequest("start", "Acme", scenario_id=103, actor="bob"),
                               NOW + 20, status="not_allowed", message="actions are off")

        asyncio.run(actions())
        assert store.read_sync(lambda db: db["alerts"].count) > 0


def dump(store: Any, skip: tuple[str, ...] = NOT_COPIED) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the schema, by table, in primary-key order."""

    def read(db: Any) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for table in schema_tables(db):
            if table in skip:
                continue
            order = ", ".join(db[table].pks)
            out[table] = [dict(sorted(r.items())) for r in db[table].rows_where(order_by=order)]
        return out

    return store.read_sync(read)


def counts(store: Any) -> dict[str, int]:
    return store.read_sync(lambda db: {t: db[t].count for t in schema_tables(db)})


def pg_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()]


# ----------------------------------------------------------------------------- tests


def test_sqlite_to_postgres_and_back_keeps_every_row_and_id(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    source = tmp_path / "state.db"
    seed_sqlite(source)
    with Store.open(source) as s:
        before = dump(s)
    assert all(before[t] for t in ("organizations", "scenarios", "cursors", "events", "alerts", "outbox",
                                   "deliveries", "silences", "digests", "cycles", "actions", "watch_state",
                                   "org_health"))
    statuses = {r["status"] for r in before["outbox"]}
    assert {"sent", "pending", "parked"} <= statuses
    assert any(r["alert_id"] for r in before["outbox"])  # copied after the alerts they refer to

    # A small batch: every table, compound keys included, is read in several pages.
    result = migrate(sqlite_config(tmp_path, source), "--to-env", "TARGET", "--batch-rows", "7",
                     env={"TARGET": pg_url})
    assert result.exit_code == 0, result.output
    assert re.search(rf"^  events +{len(before['events'])} rows$", result.output, re.M), result.output
    total = sum(map(len, before.values()))
    assert f"copied {total} rows in {len(before)} tables" in result.output
    assert 'url_env = "TARGET"' in result.output

    with PgStore.open(pg_url) as pg:
        after = dump(pg)
        assert after == before  # same values, same ids, table by table
        assert pg.read_sync(lambda db: (db["leases"].count, db["replicas"].count)) == (0, 0)

        # The identities moved past the copied ids: new rows get fresh ones, no collision.
        top = {t: max(r["id"] for r in before[t]) for t in ("events", "alerts", "outbox")}

        def insert(db: Any) -> dict[str, int]:
            st.insert_events(db, [{"key": "after:1", "kind": "execution_error", "org_id": 1, "scenario_id": 101,
                                   "occurred_at": NOW + 99, "payload": {"error_name": "New"}}])
            event = db.execute("SELECT id FROM events WHERE key = 'after:1'").fetchone()[0]
            alert = db["alerts"].insert({"fingerprint": "after", "kind": "execution_error", "state": "firing",
                                         "first_seen": NOW, "last_seen": NOW, "count": 1}).last_pk
            outbox = db["outbox"].insert({"alert_id": alert, "channel": "ops", "kind": "firing",
                                          "status": "pending", "created_at": NOW}).last_pk
            return {"events": event, "alerts": alert, "outbox": outbox}

        fresh = pg.write_sync(insert)
        assert fresh == {t: top[t] + 1 for t in top}
        pg.write_sync(lambda db: db.execute(
            "INSERT INTO leases (name, holder, generation, expires_at) VALUES ('org:1', NULL, 1, 0)"
        ))
        on_pg = dump(pg)

    back = tmp_path / "back" / "state.db"
    result = migrate(pg_config(tmp_path), "--to", f"sqlite://{back}", env={STATE_ENV: pg_url})
    assert result.exit_code == 0, result.output
    assert f'db_path = "{back}"' in result.output
    with Store.open(back) as s:
        assert dump(s) == on_pg
        assert s.read_sync(lambda db: db["leases"].count) == 0
        # SQLite numbers the next row max + 1 as well.
        assert s.write_sync(lambda db: db["alerts"].insert({"fingerprint": "again"}).last_pk) == fresh["alerts"] + 1


def test_a_target_that_holds_data_is_refused_and_left_as_it_was(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    source = tmp_path / "state.db"
    seed_sqlite(source)
    with PgStore.open(pg_url) as pg:
        pg.write_sync(lambda db: db["silences"].insert({"reason": "someone else's", "starts_at": 1.0, "ends_at": 2.0}))
        before = dump(pg, skip=())
    result = migrate(sqlite_config(tmp_path, source), "--to", pg_url)
    assert result.exit_code == 1
    assert "already holds makewatch data: silences (1)" in result.output
    assert "never merges" in result.output
    with PgStore.open(pg_url) as pg:
        assert dump(pg, skip=()) == before

    # The other way: an existing SQLite file with a state in it is not overwritten.
    with PgStore.open(pg_url) as pg:
        pg.write_sync(lambda db: db.execute("DELETE FROM silences"))
    assert migrate(sqlite_config(tmp_path, source), "--to", pg_url).exit_code == 0
    result = migrate(pg_config(tmp_path), "--to", str(source), env={STATE_ENV: pg_url})
    assert result.exit_code == 1 and "already holds makewatch data" in result.output
    with Store.open(source) as s, PgStore.open(pg_url) as pg:
        assert dump(s) == dump(pg)  # still exactly one copy of each row


def test_a_copy_that_fails_half_way_writes_nothing(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    source = tmp_path / "state.db"
    seed_sqlite(source)
    with Store.open(source) as s:
        # SQLite keeps a text in an integer column; PostgreSQL refuses it. Tables before
        # this one (organizations) and earlier batches of scenarios were already inserted.
        s.write_sync(lambda db: db.execute("UPDATE scenarios SET operations = 'lots' WHERE id = 107").rowcount)
    result = migrate(sqlite_config(tmp_path, source), "--to", pg_url, "--batch-rows", "2")
    assert result.exit_code == 1
    assert "nothing was written to the target" in result.output
    assert "Traceback" not in result.output
    with PgStore.open(pg_url) as pg:
        assert set(counts(pg).values()) == {0}
    # Empty again: once the value is fixed the migration goes through.
    with Store.open(source) as s:
        s.write_sync(lambda db: db.execute("UPDATE scenarios SET operations = 5 WHERE id = 107").rowcount)
    assert migrate(sqlite_config(tmp_path, source), "--to", pg_url).exit_code == 0


def test_a_running_service_on_the_sqlite_file_is_refused(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    source = tmp_path / "state.db"
    seed_sqlite(source)
    with StateLock(source):  # what `makewatch run` holds for its lifetime
        result = migrate(sqlite_config(tmp_path, source), "--to", pg_url)
    assert result.exit_code == 1
    assert f"makewatch is running on {source}" in result.output and "stop it first" in result.output
    assert pg_tables(pg_url) == []  # the target was not even opened


def test_a_live_lease_on_a_postgres_source_is_refused_naming_it(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    with PgStore.open(pg_url) as pg:
        pg.write_sync(lambda db: db["silences"].insert({"reason": "x", "starts_at": 1.0, "ends_at": 2.0}))
        # Expiry on the database server's clock, which is what leases are compared with (the
        # test's own clock may be faked to another hour).
        now = "extract(epoch FROM clock_timestamp())"
        pg.write_sync(lambda db: db.execute(
            "INSERT INTO leases (name, holder, generation, expires_at) VALUES "  # noqa: S608 - fixed text
            f"('org:1', 'w-1', 4, {now} + 60), ('org:2', NULL, 2, {now} + 60), ('org:3', 'w-2', 1, {now} - 5)"
        ))
    target = tmp_path / "new.db"
    result = migrate(pg_config(tmp_path), "--to", str(target), env={STATE_ENV: pg_url})
    assert result.exit_code == 1
    assert "org:1 by w-1 (expires in" in result.output
    assert "org:2" not in result.output and "org:3" not in result.output  # free, expired
    assert not target.exists()
    # Expired, the lease no longer stops it.
    with PgStore.open(pg_url) as pg:
        pg.write_sync(lambda db: db.execute("UPDATE leases SET expires_at = 0"))
    result = migrate(pg_config(tmp_path), "--to", str(target), env={STATE_ENV: pg_url})
    assert result.exit_code == 0, result.output
    with Store.open(target) as s:
        assert [r["reason"] for r in s.read_sync(lambda db: list(db["silences"].rows))] == ["x"]


def test_the_password_is_never_printed_nor_logged(tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    source = tmp_path / "state.db"
    seed_sqlite(source)
    secret_url = with_password(pg_url)
    cfg = sqlite_config(tmp_path, source)

    done = migrate(cfg, "--to-env", "TARGET", env={"TARGET": secret_url})
    assert done.exit_code == 0, done.output
    assert "--to-env" not in done.output  # no warning: the password is not on the command line

    refused = migrate(cfg, "--to", secret_url)  # not empty any more
    assert refused.exit_code == 1 and "already holds" in refused.output
    assert "a password on the command line" in refused.output

    missing = migrate(cfg, "--to", secret_url.rsplit("/", 1)[0] + "/no_such_db")
    assert missing.exit_code == 1 and "does not exist" in missing.output

    unparsable = migrate(cfg, "--to", f"postgresql://u:{PASSWORD}@h:notaport/db")
    assert unparsable.exit_code != 0

    for result in (done, refused, missing, unparsable):
        assert PASSWORD not in result.output
        assert "postgresql://makewatch@127.0.0.1" in result.output or result is unparsable
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((), "exactly one of --to URL|PATH and --to-env NAME"),
        (("--to", "x.db", "--to-env", "TARGET"), "exactly one of --to URL|PATH and --to-env NAME"),
        (("--to-env", "UNSET_TARGET_VAR"), "environment variable UNSET_TARGET_VAR is not set"),
        (("--to", "other.db"), "the target must be a PostgreSQL URL"),
        (("--to", "mysql://h/db"), "unknown kind of target mysql://"),
    ],
)
def test_bad_options_exit_2_saying_why(tmp_path: Path, args: tuple[str, ...], problem: str) -> None:
    source = tmp_path / "state.db"
    result = migrate(sqlite_config(tmp_path, source), *args, env={"TARGET": "postgresql://u@h/db"})
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert not source.exists()


def test_a_missing_source_file_is_refused(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    result = migrate(sqlite_config(tmp_path, tmp_path / "none.db"), "--to", pg_url)
    assert result.exit_code == 1 and "no state file at" in result.output
    assert not (tmp_path / "none.db").exists()
    assert pg_tables(pg_url) == []
