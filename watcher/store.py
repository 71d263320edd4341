"""makewatch's state: one SQLite file, versioned migrations, one writer thread.

Contracts
---------
* **One writer, never on the event loop.** Every write is a function ``fn(db)`` run in one
  dedicated thread that owns the only read-write connection, inside one ``BEGIN IMMEDIATE``
  transaction: it commits as a whole or not at all (an exception from ``fn``, a constraint
  violation, or the process dying before ``COMMIT`` leaves nothing behind). Writes run one at a
  time, in the order they were submitted.
* **Reads beside the writer.** A read is ``fn(db)`` run in a second thread on a read-only
  connection, inside one read transaction: a consistent snapshot of the last commit. WAL lets
  it run while a write is in progress; it never sees a write that has not committed.
* ``fn`` must return materialised values (``list(table.rows_where(...))``): a lazy iterator
  would be read after its transaction ended, in the wrong thread, so it is refused.
* **JSON columns** are named ``*_json`` in SQLite. The helpers here take and return them
  decoded, under the name without the suffix: ``payload``, ``snapshot``, ``scheduling``,
  ``license``, ``usage``.
* Times are epoch seconds (REAL) unless the name ends in ``_ms``. Nothing here reads a clock:
  callers pass every time in.
* **No secrets.** No table has a column for a token or a webhook URL; they live in the config.

Each ``Store`` helper (``record_progress``, ``get_cursor`` ...) is the same-named module
function run in one transaction. To make several of them one transaction, call the module
functions inside your own ``await store.write(lambda db: ...)``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlite_utils import Database
from sqlite_utils.db import Table
from sqlite_utils.migrations import Migrations

from watcher import dialect
from watcher.leases import m016_leases

__all__ = [
    "MIGRATIONS",
    "STREAMS",
    "MigrationFn",
    "SchemaTooNewError",
    "StateFileError",
    "BaseStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailable",
    "count_events",
    "get_cursor",
    "get_organization",
    "get_scenarios",
    "insert_events",
    "open_state",
    "record_progress",
    "state_file_error",
    "unprocessed_events",
    "upsert_cursors",
    "upsert_org_health",
    "upsert_organization",
    "upsert_scenarios",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MigrationFn = Callable[[Database], None]

DEFAULT_BUSY_TIMEOUT_S = 10.0
MIGRATION_SET = "makewatch"
STREAMS = ("logs", "dlqs")

EVENT_FIELDS = (
    "key",
    "kind",
    "severity",
    "org_id",
    "team_id",
    "scenario_id",
    "occurred_at",
    "detected_at",
    "payload",
)

# Columns stored as JSON text, by table: the Python name; SQLite has it with a "_json" suffix.
_JSON_FIELDS: dict[str, tuple[str, ...]] = {
    "organizations": ("license", "usage"),
    "scenarios": ("scheduling", "snapshot", "activity", "volume", "steps"),
    "events": ("payload",),
    "alerts": ("payload", "samples", "channels", "thread_ref", "silenced_by"),
}


class StoreError(Exception):
    """The state database cannot be used as asked."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer makewatch than this one."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (a database server restarting): the transaction
    did not happen, a later one may. The service retries; nothing is lost (the work is done
    again from the cursors)."""


class StoreClosedError(StoreError):
    """The store was used after ``close()``."""


class StateFileError(StoreError):
    """The state file itself is unusable: read-only, corrupt, a directory, deleted, disk full.

    Retrying cannot help, so the service stops on it (exit 1) instead of logging the same
    traceback every cycle. ``str()`` names the file, what is wrong and what to do.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"state file {path}: {problem}")


# --------------------------------------------------------------------------- migrations


def m001_initial_schema(db: Database) -> None:
    """Schema v1: every table of DESIGN.md's "State (SQLite)"."""
    db["organizations"].create(
        {
            "id": int,  # Make organization id
            "name": str,
            "base_url": str,
            "plan": str,
            "api_limit": int,
            "license_json": str,
            "usage_json": str,
            "updated_at": float,
        },
        pk="id",
    )
    scenarios = db["scenarios"].create(
        {
            "id": int,  # Make scenario id
            "org_id": int,
            "team_id": int,
            "name": str,
            "is_active": int,
            "is_invalid": int,
            "is_paused": int,
            "dlq_count": int,
            "operations": int,
            "centicredits": int,
            "transfer": int,
            "hook_id": int,
            "scheduling_json": str,
            "next_exec": str,
            "snapshot_json": str,
            "first_seen_at": float,
            "updated_at": float,
            "last_checked_at": float,
            "last_error_at": float,
            "error_score": float,
        },
        pk="id",
        defaults={"error_score": 0},
    )
    scenarios.create_index(["org_id"])
    db["cursors"].create(
        {
            "scenario_id": int,
            "stream": str,  # 'logs' | 'dlqs'
            "last_imt_id": str,
            "last_ts_ms": int,
            "updated_at": float,
        },
        pk=("scenario_id", "stream"),
        # A compound primary key that is not a rowid alias accepts NULLs in SQLite.
        not_null=["scenario_id", "stream"],
    )
    events = db["events"].create(
        {
            "id": int,
            "key": str,
            "kind": str,
            "severity": str,
            "org_id": int,
            "team_id": int,
            "scenario_id": int,
            "occurred_at": float,
            "detected_at": float,
            "payload_json": str,
            "processed_at": float,
        },
        pk="id",
        not_null=["key"],
    )
    events.create_index(["key"], unique=True)
    events.create_index(["processed_at"])
    events.create_index(["org_id", "occurred_at"])
    db["alerts"].create(
        {
            "id": int,
            "fingerprint": str,
            "kind": str,
            "severity": str,
            "org_id": int,
            "team_id": int,
            "scenario_id": int,
            "state": str,  # firing | resolved
            "first_seen": float,
            "last_seen": float,
            "count": int,
            "count_since_notice": int,
            "last_notified": float,
            "reason": str,
            "payload_json": str,
            "thread_ref_json": str,
        },
        pk="id",
    ).create_index(["fingerprint"], unique=True)
    db["outbox"].create(
        {
            "id": int,
            "alert_id": int,
            "channel": str,
            "kind": str,
            "payload_json": str,
            "status": str,  # pending | sent | parked
            "attempts": int,
            "next_attempt_at": float,
            "created_at": float,
            "sent_at": float,
            "last_error": str,
        },
        pk="id",
        defaults={"attempts": 0},
        foreign_keys=[("alert_id", "alerts", "id")],
    ).create_index(["status", "next_attempt_at"])
    db["deliveries"].create(
        {"id": int, "outbox_id": int, "attempted_at": float, "ok": int, "error": str},
        pk="id",
        foreign_keys=[("outbox_id", "outbox", "id")],
    )
    db["silences"].create(
        {
            "id": int,
            "matchers_json": str,
            "starts_at": float,
            "ends_at": float,
            "reason": str,
            "created_by": str,
            "created_at": float,
            "expired_at": float,
        },
        pk="id",
    )
    db["digests"].create(
        {"recipient": str, "period_start": float, "period_end": float, "sent_at": float},
        pk=("recipient", "period_start"),
        not_null=["recipient", "period_start"],
    )
    db["org_health"].create(
        {
            "org_id": int,
            "consecutive_failures": int,
            "last_ok_at": float,
            "last_error": str,
            "last_error_at": float,
            "unreachable_reported": int,
        },
        pk="org_id",
        defaults={"unreachable_reported": 0},
    )


def m002_detection_state(db: Database) -> None:
    """Schema v2: what the detection scheduler carries between cycles.

    ``pending_since``/``pending_reason``: the scenario moved (counters, dlqCount, state) and
    its logs are still to be read (work carried over when a cycle's budget runs out).
    ``last_run_status``: status of the newest run read, to tell a recovery.
    ``state_seq``: numbers the scenario's state transitions (event keys).
    ``watch_state``: small keyed JSON values (quota level reported in a period, hook backlog
    episodes, when usage was last read).
    """
    scenarios = db["scenarios"]
    scenarios.add_column("pending_since", float)
    scenarios.add_column("pending_reason", str)
    scenarios.add_column("last_run_status", int)
    scenarios.add_column("state_seq", int)
    db["watch_state"].create({"key": str, "value_json": str, "updated_at": float}, pk="key")



def m003_alert_engine_state(db: Database) -> None:
    """Schema v3: what the alert engine keeps per alert, and why each event did (not) notify.

    ``alerts.state`` is now pending | firing | resolved; ``channels_json`` records what each
    channel was last told; ``events.reason`` answers "why did (not) I get paged?".
    """
    alerts = db["alerts"]
    alerts.add_column("samples_json", str)
    alerts.add_column("channels_json", str)
    alerts.add_column("opened_at", float)
    alerts.add_column("episode", int)
    alerts.add_column("resolved_at", float)
    alerts.add_column("suppressed_count", int)
    db["events"].add_column("reason", str)
    db["outbox"].add_column("dedup_key", str)
    db["outbox"].create_index(["dedup_key"], unique=True)



def m004_cycle_stats(db: Database) -> None:
    """Schema v4: one row per polling cycle of an organization (the digest's health figures:
    API requests spent against the budget, failed polls)."""
    db["cycles"].create(
        {
            "id": int,
            "org_id": int,
            "started_at": float,
            "finished_at": float,
            "requests": int,
            "budget_per_minute": int,
            "ok": int,
            "error": str,
            "events": int,
        },
        pk="id",
    ).create_index(["org_id", "started_at"])



def m005_error_rate_stats(db: Database) -> None:
    """Schema v5: what the read scheduler learns per scenario: runs and failures read (its
    error-rate estimate) and the usual operations of a run (a smaller counter step hints at
    a run that stopped early, i.e. failed)."""
    db["scenarios"].add_column("runs_seen", int, not_null_default=0)
    db["scenarios"].add_column("errors_seen", int, not_null_default=0)
    db["scenarios"].add_column("ops_per_run", float)


def m006_recovered_before_notice(db: Database) -> None:
    """Schema v6: ``alerts.recovered_at``: an execution alert whose scenario ran fine again
    before anyone was told; it is still notified once (errors are events, not states).
    ``alerts.flapping``: it failed again soon after it resolved (resolution held back)."""
    db["alerts"].add_column("recovered_at", float)
    db["alerts"].add_column("flapping", int)


def m007_cursor_floor(db: Database) -> None:
    """Schema v7: ``cursors.floor_ms``: the scenario's baseline. Nothing before it becomes an
    event, whatever re-read window a later read uses (``backfill = "none"`` holds)."""
    db["cursors"].add_column("floor_ms", int)


def m008_acknowledgements(db: Database) -> None:
    """Schema v8: ``alerts.acked_at``/``acked_by``: a person acknowledged the alert (from the
    status page); the engine sends it no more notices but its resolution, and a re-opened
    alert starts unacknowledged."""
    db["alerts"].add_column("acked_at", float)
    db["alerts"].add_column("acked_by", str)


def m009_overdue_state(db: Database) -> None:
    """Schema v9: what the overdue check (watcher.silent) keeps per scenario, beside its
    snapshot: ``due_at``, the earliest scheduled run not yet followed by a run;
    ``overdue_at``, the ``due_at`` of an open overdue episode; ``last_edit``, Make's
    ``lastEdit`` (an edit may move the schedule)."""
    db["scenarios"].add_column("due_at", float)
    db["scenarios"].add_column("overdue_at", float)
    db["scenarios"].add_column("last_edit", str)


def m010_activity_profile(db: Database) -> None:
    """Schema v10: ``scenarios.activity_json``: what the idle check (watcher.silent.Activity)
    learnt of a scenario's runs per hour of the week, and its open idle episode."""
    db["scenarios"].add_column("activity_json", str)


def m011_daily_operations(db: Database) -> None:
    """Schema v11: ``scenarios.volume_json``: a scenario's operations per day, counted from
    the listings (watcher.silent.DailyOps), and its open volume anomaly."""
    db["scenarios"].add_column("volume_json", str)


def m012_alert_timers(db: Database) -> None:
    """Schema v12: ``alerts.due_at``: when a decision without new events could next change
    the alert (alerts.engine, "Timers"); NULL when only an event can. The alert tick loads
    the alerts due, those of its events' scenarios and those of inhibiting kinds, not every
    open alert, hence the indexes. Open alerts from before are due at once: the first tick
    decides them and sets their timers."""
    alerts = db["alerts"]
    alerts.add_column("due_at", float)
    alerts.create_index(["due_at"])
    alerts.create_index(["scenario_id"])
    alerts.create_index(["kind"])
    db.execute("UPDATE alerts SET due_at = 0 WHERE state != 'resolved'")


def m013_step_profile(db: Database) -> None:
    """Schema v13: ``scenarios.steps_json``: the operations steps usual for a scenario
    (watcher.steps.StepProfile), and ``hint_step``, the step a pending read was hinted by."""
    db["scenarios"].add_column("steps_json", str)
    db["scenarios"].add_column("hint_step", int)


def m014_maintenance_windows(db: Database) -> None:
    """Schema v14: maintenance windows (recurring silences, alerts.silences.Window) added with
    ``makewatch silence add --every``: ``silences.weekdays`` (``"sun,mon"``), ``start_time``
    and ``end_time`` (``HH:MM``), ``timezone``, ``name``, ``notify_resolved``; a row without
    ``timezone`` is a one-off silence. ``alerts.silenced_by_json``: the silence that held the
    alert at its last decision, so that the notice sent when it ends can name it."""
    silences = db["silences"]
    for column in ("weekdays", "start_time", "end_time", "timezone", "name"):
        silences.add_column(column, str)
    silences.add_column("notify_resolved", int)
    db["alerts"].add_column("silenced_by_json", str)


def m015_actions(db: Database) -> None:
    """Schema v15: ``actions``, the audit trail of acting on Make and on alerts (watcher.actions):
    who asked what, when, from where, and Make's answer; ``dedup_key`` (a Slack envelope or
    action id) makes a redelivered request a no-op."""
    db["actions"].create(
        {
            "id": int,
            "dedup_key": str,
            "created_at": float,
            "finished_at": float,
            "source": str,  # cli | slack | http | web
            "actor": str,
            "actor_id": str,
            "action": str,
            "org_id": int,
            "scenario_id": int,
            "alert_id": int,
            "target_json": str,
            "status": str,  # pending | done | already | refused | failed | not_allowed
            "message": str,
            "http_status": int,
            "is_active": int,
            "execution_id": str,
            # Where the click came from (Slack channel name, channel id, message ts), so the
            # next poll's verdict is told in the same thread.
            "slack_json": str,
            # After a reactivation: awaiting -> active -> ran_ok | failed_again |
            # inactive_again | no_run (watcher.action_confirm).
            "confirm_state": str,
            "confirm_note": str,
            "confirmed_at": float,
        },
        pk="id",
    )
    db["actions"].create_index(["dedup_key"], unique=True)
    db["actions"].create_index(["confirm_state"])
    db["actions"].create_index(["alert_id"])


# Append only: a migration, once released, is never edited, renamed or reordered. Its function
# name is what the database records as applied.
MIGRATIONS: tuple[MigrationFn, ...] = (
    m001_initial_schema,
    m002_detection_state,
    m003_alert_engine_state,
    m004_cycle_stats,
    m005_error_rate_stats,
    m006_recovered_before_notice,
    m007_cursor_floor,
    m008_acknowledgements,
    m009_overdue_state,
    m010_activity_profile,
    m011_daily_operations,
    m012_alert_timers,
    m013_step_profile,
    m014_maintenance_windows,
    m015_actions,
    m016_leases,
)


def _migrate(db: Database, fns: Sequence[MigrationFn], path: Path) -> int:
    """Apply the missing migrations of ``fns``, each in its own transaction; return the version.

    Each step takes the write lock (``BEGIN IMMEDIATE``) and re-reads what is applied, so two
    processes opening a fresh file at once never apply a migration twice.
    """
    names = [fn.__name__ for fn in fns]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate migration names: {names}")
    migrations = Migrations(MIGRATION_SET)
    for fn in fns:
        migrations(name=fn.__name__)(fn)
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            applied = [m.name for m in migrations.applied(db)]
            _check_history(applied, names, path)
            pending = names[len(applied) :]
            if pending:
                # Migrations.apply() wraps each migration in atomic(), a savepoint inside this
                # transaction; stop_before limits it to exactly one migration per transaction.
                migrations.apply(db, stop_before=pending[1] if len(pending) > 1 else None)
        except BaseException:
            db.rollback()
            raise
        db.commit()
        if not pending:
            return len(applied)
        logger.info("state %s: applied migration %s", path, pending[0])


def _check_history(applied: list[str], known: list[str], path: Path) -> None:
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise SchemaTooNewError(
            f"{path} was migrated by a newer makewatch (schema version {len(applied)}, this "
            f"version knows {len(known)}; unknown migrations: {', '.join(unknown)}). "
            "Upgrade makewatch, or point it at another state file."
        )
    if applied != known[: len(applied)]:
        raise StoreError(
            f"{path}: applied migrations {applied} are not a prefix of this version's "
            f"{known}; the migration list was edited after release"
        )


# ------------------------------------------------------------------------------- rows


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    # default=str: one odd value (a datetime in a payload) must not fail the whole batch.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _encode(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A caller's row → a SQLite row: ``payload`` becomes the JSON text ``payload_json``."""
    out = dict(row)
    for name in _JSON_FIELDS.get(table, ()):
        if name in out:
            if f"{name}_json" in out:
                raise ValueError(f"{table} row has both {name!r} and {name + '_json'!r}")
            out[f"{name}_json"] = _dumps(out.pop(name))
    return out


def _decode(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A SQLite row → a caller's row: ``payload_json`` comes back decoded as ``payload``."""
    out = dict(row)
    for name in _JSON_FIELDS.get(table, ()):
        column = f"{name}_json"
        if column in out:
            text = out.pop(column)
            out[name] = None if text is None else json.loads(text)
    return out


def _table(db: Database, name: str) -> Table:
    return db.table(name)


def _upsert(db: Database, table: str, rows: Iterable[Mapping[str, Any]], pk: Any) -> None:
    """Upsert ``rows`` so that a column a row leaves out keeps its stored value.

    sqlite-utils builds one statement per batch over the union of the batch's keys and would
    write NULL into a column one row has and another lacks, so rows are grouped by key set.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        encoded = _encode(table, row)
        groups.setdefault(tuple(sorted(encoded)), []).append(encoded)
    for group in groups.values():
        _table(db, table).upsert_all(group, pk=pk)


# ----------------------------------------------------------- transaction-level functions
# Each takes a Database already inside a transaction (the one store.write() opened).


def insert_events(db: Database, events: Iterable[Mapping[str, Any]]) -> int:
    """Insert events; one whose ``key`` is already stored is silently skipped.

    Each event has ``key`` (required, unique) and any of ``kind``, ``severity``, ``org_id``,
    ``team_id``, ``scenario_id``, ``occurred_at``, ``detected_at``, ``payload`` (a dict).
    Returns how many rows were actually inserted.
    """
    rows = []
    for event in events:
        unexpected = set(event) - set(EVENT_FIELDS)
        if unexpected:
            raise ValueError(f"event has unexpected fields: {sorted(unexpected)}")
        if not event.get("key"):
            raise ValueError("event without a key")
        rows.append(_encode("events", {f: event.get(f) for f in EVENT_FIELDS}))
    if not rows:
        return 0
    table = _table(db, "events")
    where, keys = dialect.in_list(db, "key", [row["key"] for row in rows])
    before = table.count_where(where, keys)
    table.insert_all(rows, ignore=True)
    return table.count_where(where, keys) - before


def new_event_keys(db: Database, keys: Iterable[str]) -> set[str]:
    """The subset of ``keys`` not stored yet (to report only what an insert will add)."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return set()
    where, args = dialect.in_list(db, "key", wanted)
    found = {row["key"] for row in db.query(f"SELECT key FROM events WHERE {where}", args)}  # noqa: S608 - fixed text
    return set(wanted) - found


def upsert_cursors(db: Database, cursors: Iterable[Mapping[str, Any]]) -> None:
    """Upsert cursors: ``scenario_id``, ``stream`` ('logs' | 'dlqs') and what to update of
    ``last_imt_id``, ``last_ts_ms``, ``updated_at``, ``floor_ms`` (set once, at the baseline)."""
    rows = list(cursors)
    for row in rows:
        if row.get("stream") not in STREAMS:
            raise ValueError(f"cursor stream must be one of {STREAMS}: {row.get('stream')!r}")
    _upsert(db, "cursors", rows, pk=("scenario_id", "stream"))


def upsert_scenarios(db: Database, scenarios: Iterable[Mapping[str, Any]]) -> None:
    """Upsert scenario snapshots by ``id``; columns a row leaves out keep their value.

    ``first_seen_at`` is only ever set once: a later snapshot's value never overwrites it.
    """
    scenarios = list(scenarios)
    first_seen = [(row["first_seen_at"], row["id"]) for row in scenarios if "first_seen_at" in row]
    # A generator: each row is copied (without first_seen_at) just before it is encoded, so a
    # first listing of 10,000 scenarios is not held twice more while it is written.
    rows = ({k: v for k, v in row.items() if k != "first_seen_at"} for row in scenarios)
    _upsert(db, "scenarios", rows, pk="id")
    for first_seen_at, scenario_id in first_seen:
        db.execute(
            "UPDATE scenarios SET first_seen_at = ? WHERE id = ? AND first_seen_at IS NULL",
            [first_seen_at, scenario_id],
        )


def upsert_org_health(db: Database, rows: Iterable[Mapping[str, Any]]) -> None:
    """Upsert ``org_health`` rows by ``org_id``; columns a row leaves out keep their value."""
    _upsert(db, "org_health", rows, pk="org_id")


def record_progress(
    db: Database,
    events: Iterable[Mapping[str, Any]],
    cursors: Iterable[Mapping[str, Any]],
    scenarios: Iterable[Mapping[str, Any]] = (),
    health: Iterable[Mapping[str, Any]] = (),
) -> int:
    """New events, the cursors that cover them, scenario snapshots and health rows.

    Run inside one transaction (``Store.record_progress`` does that), a crash leaves all of it
    or none: never an advanced cursor without its events, so no error is lost, and never events
    twice, since a duplicate ``key`` is skipped. Returns how many events were new.
    """
    inserted = insert_events(db, events)
    upsert_cursors(db, cursors)
    upsert_scenarios(db, scenarios)
    upsert_org_health(db, health)
    return inserted


def get_watch_state(db: Database, prefix: str) -> dict[str, Any]:
    """Every ``watch_state`` value whose key starts with ``prefix``, decoded."""
    rows = _table(db, "watch_state").rows_where("key >= ? AND key < ?", [prefix, prefix + "\uffff"])
    return {row["key"]: json.loads(row["value_json"]) for row in rows}


def set_watch_state(db: Database, values: Mapping[str, Any], now: float) -> None:
    """Upsert ``watch_state`` values (JSON-encodable)."""
    rows = [{"key": k, "value_json": _dumps(v), "updated_at": now} for k, v in values.items()]
    if rows:
        _table(db, "watch_state").upsert_all(rows, pk="key")


def pending_scenarios(db: Database, org_id: int) -> list[dict[str, Any]]:
    """Scenarios of ``org_id`` whose logs (or DLQs) are still to be read."""
    rows = _table(db, "scenarios").rows_where(
        "org_id = ? AND pending_since IS NOT NULL", [org_id], order_by="pending_since, id"
    )
    return [_decode("scenarios", row) for row in rows]


def get_cursors(db: Database, org_id: int) -> dict[tuple[int, str], dict[str, Any]]:
    """Every cursor of the scenarios of ``org_id``, by (scenario id, stream)."""
    rows = db.query(
        "SELECT c.* FROM cursors c JOIN scenarios s ON s.id = c.scenario_id WHERE s.org_id = ?",
        [org_id],
    )
    return {(row["scenario_id"], row["stream"]): row for row in rows}


def prune(db: Database, before: float) -> dict[str, int]:
    """Forget what is older than ``before`` and no longer needed: processed events, sent or
    parked outbox rows and their delivery attempts, resolved alerts, cycle statistics, old
    digest records, finished actions. Open alerts, pending work, cursors and snapshots are kept. Returns how
    many rows went, by table."""
    deleted: dict[str, int] = {}

    def run(table: str, sql: str, args: list[Any]) -> None:
        deleted[table] = db.execute(sql, args).rowcount

    run(
        "deliveries",
        "DELETE FROM deliveries WHERE attempted_at < ? AND outbox_id IN "
        "(SELECT id FROM outbox WHERE status IN ('sent', 'parked'))",
        [before],
    )
    run("outbox", "DELETE FROM outbox WHERE status IN ('sent', 'parked') AND created_at < ? "
        "AND id NOT IN (SELECT outbox_id FROM deliveries)", [before])
    run("events", "DELETE FROM events WHERE processed_at IS NOT NULL AND occurred_at < ?", [before])
    run("alerts", "DELETE FROM alerts WHERE state = 'resolved' AND last_seen < ? "
        "AND id NOT IN (SELECT alert_id FROM outbox WHERE alert_id IS NOT NULL)", [before])
    run("cycles", "DELETE FROM cycles WHERE started_at < ?", [before])
    run("digests", "DELETE FROM digests WHERE period_end < ? AND sent_at IS NOT NULL", [before])
    # The audit trail of actions lives as long as the rest of the history (finished ones only).
    run("actions", "DELETE FROM actions WHERE created_at < ? AND status != 'pending'", [before])
    return deleted


#: What old history keeps of an event's payload, by kind, once no digest period can cover it
#: (``compact_history``): the digest asks older events only which scenarios and which error
#: names were seen before (alerts.digest, "recurring", "new kinds"), so of those kinds one
#: event per organization, scenario and error name is kept, with these fields. A recovery
#: (None) is never read again, so it goes. (The poller never makes an event again from a run
#: its cursor passed, so a forgotten one does not come back.) The kinds not listed keep
#: their payload: the digest reads webhook backlogs and silent-failure episodes from their
#: beginning.
COMPACT_EVENT_FIELDS: dict[str, tuple[str, ...] | None] = {
    "execution_error": ("error_name", "scenario_name"),
    "execution_warning": ("error_name", "scenario_name"),
    "execution_recovered": None,
}
_COMPACTED_UNTIL = "compacted_until"


def compact_history(db: Database, before: float, sent_before: float | None = None) -> dict[str, int]:
    """Shrink old history to what is still read of it, until ``prune`` forgets it: events
    processed before ``before`` keep :data:`COMPACT_EVENT_FIELDS` of their payload (or go);
    notices queued before ``sent_before`` (default ``before``) and sent keep no payload (a
    summary: its ``kind``, ``phase`` and ``alert.org_id``): the digest counts them by
    organization, nothing renders a sent notice again; parked ones stay whole, to be looked
    at. Each row is shrunk once: a
    watermark in ``watch_state`` says how far it went. Returns how many rows, by table."""
    sent_before = before if sent_before is None else sent_before
    mark = get_watch_state(db, _COMPACTED_UNTIL).get(_COMPACTED_UNTIL) or {}
    since, last_outbox = float(mark.get("events", 0.0)), int(mark.get("outbox_id", 0))
    done: dict[str, int] = {"events": 0, "outbox": 0}
    for kind, keep in COMPACT_EVENT_FIELDS.items():
        where = "WHERE processed_at > ? AND processed_at <= ? AND kind = ?"
        if keep is None:
            done["events"] += db.execute(f"DELETE FROM events {where}", [since, before, kind]).rowcount  # noqa: S608 - fixed text
            continue
        value = dialect.json_object(db, [(k, dialect.json_get(db, "payload_json", k)) for k in keep])
        done["events"] += db.execute(
            f"UPDATE events SET payload_json = {value} {where}",  # noqa: S608 - fixed names
            [since, before, kind],
        ).rowcount
        error_name = dialect.json_get(db, "payload_json", "error_name", cast="text")
        done["events"] += db.execute(
            "DELETE FROM events WHERE kind = ? AND processed_at <= ? AND id NOT IN "  # noqa: S608 - fixed text
            "(SELECT MAX(id) FROM events WHERE kind = ? AND processed_at <= ? "
            f"GROUP BY org_id, scenario_id, {error_name})",
            [kind, before, kind, before],
        ).rowcount
    top = db.execute(
        "SELECT MAX(id) FROM outbox WHERE id > ? AND created_at <= ?", [last_outbox, sent_before]
    ).fetchone()[0]
    if top is not None:
        # A notice of an alert needs nothing: the digest takes the org from the alert row,
        # which prune keeps while a notice refers to it. A summary keeps its org (none).
        get = functools.partial(dialect.json_get, db, "payload_json")
        summary = dialect.json_object(db, [
            ("kind", get("kind")),
            ("phase", get("phase")),
            ("alert", dialect.json_object(db, [("org_id", get("alert.org_id"))], nested=True)),
        ])
        done["outbox"] = db.execute(
            f"UPDATE outbox SET payload_json = CASE WHEN alert_id IS NOT NULL THEN NULL ELSE {summary} END "  # noqa: S608 - fixed text
            "WHERE id > ? AND id <= ? AND status = 'sent' AND created_at <= ?",
            [last_outbox, top, sent_before],
        ).rowcount
        last_outbox = top
    set_watch_state(
        db, {_COMPACTED_UNTIL: {"events": max(since, before), "outbox_id": last_outbox}}, before
    )
    return done


def get_cursor(db: Database, scenario_id: int, stream: str) -> dict[str, Any] | None:
    """The cursor of ``scenario_id``'s ``stream``, or None if it was never read."""
    rows = _table(db, "cursors").rows_where(
        "scenario_id = ? AND stream = ?", [scenario_id, stream], limit=1
    )
    return next(iter(rows), None)


def get_scenarios(db: Database, org_id: int) -> dict[int, dict[str, Any]]:
    """The stored snapshot of every scenario of ``org_id``, by scenario id."""
    rows = _table(db, "scenarios").rows_where("org_id = ?", [org_id], order_by="id")
    return {row["id"]: _decode("scenarios", row) for row in rows}


def scenario_names(db: Database, ids: Iterable[int]) -> dict[int, str]:
    """The stored names of the scenarios ``ids`` (those known), by id."""
    ids = sorted(set(ids))
    if not ids or not db["scenarios"].exists():
        return {}
    marks = ",".join("?" * len(ids))
    return {r["id"]: r["name"] for r in db.query(f"SELECT id, name FROM scenarios WHERE id IN ({marks})", ids) if r["name"]}  # noqa: S608 - placeholders only


def upsert_organization(db: Database, row: Mapping[str, Any]) -> None:
    """Upsert an organization by ``id`` (``license`` and ``usage`` are dicts)."""
    _upsert(db, "organizations", [row], pk="id")


def get_organization(db: Database, org_id: int) -> dict[str, Any] | None:
    """The stored organization, or None."""
    rows = _table(db, "organizations").rows_where("id = ?", [org_id], limit=1)
    row = next(iter(rows), None)
    return None if row is None else _decode("organizations", row)


def unprocessed_events(db: Database, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` events not yet processed (``processed_at`` NULL), oldest insert first."""
    rows = _table(db, "events").rows_where("processed_at IS NULL", order_by="id", limit=int(limit))
    return [_decode("events", row) for row in rows]


def count_events(db: Database, kind: str | None = None) -> dict[str, int]:
    """Number of stored events by kind (only ``kind``, with 0 if none, when it is given)."""
    if kind is not None:
        return {kind: _table(db, "events").count_where("kind = ?", [kind])}
    return {
        row["kind"]: row["n"]
        for row in db.query("SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind")
    }


# ------------------------------------------------------------------------------ Store


def _prepare_file(path: Path) -> None:
    """Create the file owner-only (0600) before SQLite does; warn about a readable one.

    SQLite gives its -wal and -shm files the database file's permissions, so they follow.
    An existing file is left as its owner set it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning(
                "state file %s has mode %04o: group/other users can access it; `chmod 600` it",
                path,
                mode,
            )
    else:
        os.close(fd)


# SQLite result codes (extended ones share the prefix) that mean the file cannot be used,
# whatever we retry: https://www.sqlite.org/rescode.html. SQLITE_BUSY is not among them: it
# is another process writing, and busy_timeout waits for it.
_FATAL_SQLITE_CODES = (
    "SQLITE_READONLY",  # incl. SQLITE_READONLY_DBMOVED: the file was unlinked while open
    "SQLITE_IOERR",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_PERM",
)
_SIDE_FILES = ("", "-wal", "-shm", "-journal", ".lock")

FileIdentity = tuple[int, int]


def _identity(path: Path) -> FileIdentity:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def state_file_error(
    path: str | os.PathLike[str],
    exc: BaseException,
    identity: FileIdentity | None = None,
) -> StateFileError | None:
    """``exc`` as a :class:`StateFileError` if it says the state file is unusable, else None.

    Classifies SQLite errors by result code (read-only, I/O error, corrupt, not a database,
    cannot open, disk full) or a missing table (the file was swapped for another database),
    and ``OSError`` about the file, its -wal/-shm/.lock companions or its directory. The
    message is worked out from the file system as it is now, so a file deleted under a
    running service reads "was deleted", not SQLite's "attempt to write a readonly
    database". ``identity`` is ``(st_dev, st_ino)`` of the file when it was opened.
    """
    path = Path(path)
    if isinstance(exc, StateFileError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorname", "") or ""
        missing_table = "no such table" in str(exc)
        if not (code.startswith(_FATAL_SQLITE_CODES) or missing_table):
            return None
        return StateFileError(path, _describe(path, code, str(exc), identity))
    if isinstance(exc, OSError):
        names = {str(path) + suffix for suffix in _SIDE_FILES}
        names |= {str(Path(n).absolute()) for n in names}
        parents = {str(p) for p in Path(path).absolute().parents}
        if exc.filename is None:
            return None
        filename = str(Path(os.fsdecode(exc.filename)).absolute())
        if filename not in names and filename not in parents:
            return None
        return StateFileError(path, _describe(path, "", exc.strerror or str(exc), identity))
    return None


def _describe(path: Path, code: str, detail: str, identity: FileIdentity | None) -> str:
    """What is wrong with the file and what to do, from the file system's present state."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a directory; set state.db_path to a path in a directory"
            break
    if path.is_dir():
        return "is a directory; set state.db_path to a file path, such as <that directory>/makewatch.db"
    if identity is not None:
        try:
            now = _identity(path)
        except FileNotFoundError:
            return (
                "was deleted (or moved) while makewatch was running; what it wrote since is "
                "lost. Restore the file, or start makewatch again to begin a new one"
            )
        except OSError:
            now = identity
        if now != identity:
            return (
                "was replaced by another file while makewatch was running; start makewatch "
                "again to use the new file"
            )
    directory = path.absolute().parent
    if path.exists() and not os.access(path, os.W_OK):
        return (
            "is read-only for this user (permissions, an immutable flag or a read-only "
            "mount); make it writable by the user makewatch runs as"
        )
    if code.startswith("SQLITE_READONLY") or code == "SQLITE_PERM":
        return (
            f"cannot be written (SQLite: {detail}); makewatch needs write access to the file "
            f"and to its directory {directory}, where SQLite keeps the -wal and -shm files"
        )
    if code in ("SQLITE_NOTADB",) or code.startswith("SQLITE_CORRUPT"):
        return (
            f"is not a makewatch state file, or is corrupt (SQLite: {detail}); move it aside "
            "or restore a backup. Without it makewatch starts a new file and takes a fresh "
            "baseline from Make (open alerts and sent-notification records are lost)"
        )
    if "no such table" in detail:
        return (
            f"is not a makewatch state file (SQLite: {detail}); was it replaced by another "
            "database? Point state.db_path at makewatch's file"
        )
    if code == "SQLITE_FULL":
        return f"the disk holding it is full; free space in {directory}"
    if directory.exists() and not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"its directory {directory} is not writable for this user; SQLite must create the "
            "-wal and -shm files there. Make it writable by the user makewatch runs as"
        )
    if code.startswith("SQLITE_IOERR"):
        return f"disk I/O error (SQLite: {detail}); check the disk and file system it is on"
    return f"cannot be used ({detail}); check that it is a makewatch state file you can write"


def open_state(state: Any, **kwargs: Any) -> BaseStore:
    """Open the store ``[state]`` names: PostgreSQL when it has a URL (``state.url``), else
    the SQLite file at ``state.db_path``. ``state`` is a ``watcher.config.StateSettings``
    (duck-typed: this module does not import the config). Blocks while migrating."""
    if getattr(state, "url", None) is not None:
        from watcher.pgstore import PgStore  # psycopg only when PostgreSQL is configured

        return PgStore.open(state.url.reveal(), **kwargs)
    return Store.open(state.db_path, **kwargs)


def _refuse_lazy(result: T) -> T:
    if isinstance(result, Iterator):
        raise TypeError(
            "a store fn must return materialised values (e.g. list(rows)): a lazy iterator "
            "would be read after its transaction, in another thread"
        )
    return result


class BaseStore:
    """What every engine's store shares: the public API over two single-thread executors.

    An engine (:class:`Store` for SQLite, :class:`watcher.pgstore.PgStore` for PostgreSQL)
    opens one writer and one reader connection, each in its own thread, and implements
    ``_write_tx``/``_read_tx`` (one transaction around ``fn(db)``) and ``_close_db``.
    ``describe`` names the store in messages (a path, or a host and database: never a
    password).
    """

    describe: str = "store"
    #: Which engine: "sqlite" or "postgres" (several replicas can share only the latter).
    engine: str = "sqlite"
    _closed: bool
    _close_lock: threading.Lock
    _writer: ThreadPoolExecutor
    _reader: ThreadPoolExecutor
    _writer_thread: int | None
    _wdb: Any
    _rdb: Any

    def _init_executors(self) -> None:
        self._closed = False
        self._close_lock = threading.Lock()
        self._wdb = None
        self._rdb = None
        self._writer_thread = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")

    def _write_tx(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _read_tx(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    @staticmethod
    def _close_db(db: Any) -> None:
        if db is not None:
            db.close()

    def state_file_error(self, exc: BaseException) -> StateFileError | None:
        """The state problem ``exc`` stands for (fatal for the service), or None."""
        return None

    def check_file(self) -> None:
        """Raise if the store the service opened is no longer the one it writes to."""

    def _executor(self, which: str) -> ThreadPoolExecutor:
        if self._closed:
            raise StoreClosedError(f"store {self.describe} is closed")
        if which == "writer" and threading.get_ident() == self._writer_thread:
            raise StoreError("a write fn must not start another write: it would deadlock")
        return self._writer if which == "writer" else self._reader

    # -- public API

    async def write(self, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` in the writer thread in one transaction; return its result.

        All or nothing: if ``fn`` raises, everything it did is rolled back and the exception
        propagates. Cancelling the awaiting task before the write starts means it never runs;
        once started it still commits (or rolls back) as a whole, and the result is dropped.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor("writer"), self._write_tx, fn)

    async def read(self, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` on the read-only connection, in one snapshot, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor("reader"), self._read_tx, fn)

    def write_sync(self, fn: Callable[[Database], T]) -> T:
        """:meth:`write` for synchronous code (CLI commands, tests): blocks until committed."""
        return self._executor("writer").submit(self._write_tx, fn).result()

    def read_sync(self, fn: Callable[[Database], T]) -> T:
        """:meth:`read` for synchronous code."""
        return self._executor("reader").submit(self._read_tx, fn).result()

    def close(self) -> None:
        """Finish the queued writes and reads, then close both connections. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._reader.submit(self._close_db, self._rdb).result()
        finally:
            self._reader.shutdown(wait=True)
            try:
                self._writer.submit(self._close_db, self._wdb).result()
            finally:
                self._writer.shutdown(wait=True)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop while queued writes finish."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- typed helpers: each is one transaction

    async def record_progress(
        self,
        events: Sequence[Mapping[str, Any]],
        cursors: Sequence[Mapping[str, Any]],
        scenarios: Sequence[Mapping[str, Any]] = (),
        health: Sequence[Mapping[str, Any]] = (),
    ) -> int:
        """See :func:`record_progress`; one transaction. Returns the number of new events."""
        return await self.write(
            functools.partial(
                record_progress, events=events, cursors=cursors, scenarios=scenarios, health=health
            )
        )

    def record_progress_sync(
        self,
        events: Sequence[Mapping[str, Any]],
        cursors: Sequence[Mapping[str, Any]],
        scenarios: Sequence[Mapping[str, Any]] = (),
        health: Sequence[Mapping[str, Any]] = (),
    ) -> int:
        """Synchronous :meth:`record_progress`."""
        return self.write_sync(
            functools.partial(
                record_progress, events=events, cursors=cursors, scenarios=scenarios, health=health
            )
        )

    async def get_cursor(self, scenario_id: int, stream: str) -> dict[str, Any] | None:
        """See :func:`get_cursor`."""
        return await self.read(
            functools.partial(get_cursor, scenario_id=scenario_id, stream=stream)
        )

    def get_cursor_sync(self, scenario_id: int, stream: str) -> dict[str, Any] | None:
        """Synchronous :meth:`get_cursor`."""
        return self.read_sync(functools.partial(get_cursor, scenario_id=scenario_id, stream=stream))

    async def get_scenarios(self, org_id: int) -> dict[int, dict[str, Any]]:
        """See :func:`get_scenarios`."""
        return await self.read(functools.partial(get_scenarios, org_id=org_id))

    def get_scenarios_sync(self, org_id: int) -> dict[int, dict[str, Any]]:
        """Synchronous :meth:`get_scenarios`."""
        return self.read_sync(functools.partial(get_scenarios, org_id=org_id))

    async def upsert_organization(self, row: Mapping[str, Any]) -> None:
        """See :func:`upsert_organization`; one transaction."""
        await self.write(functools.partial(upsert_organization, row=row))

    def upsert_organization_sync(self, row: Mapping[str, Any]) -> None:
        """Synchronous :meth:`upsert_organization`."""
        self.write_sync(functools.partial(upsert_organization, row=row))

    async def get_organization(self, org_id: int) -> dict[str, Any] | None:
        """See :func:`get_organization`."""
        return await self.read(functools.partial(get_organization, org_id=org_id))

    def get_organization_sync(self, org_id: int) -> dict[str, Any] | None:
        """Synchronous :meth:`get_organization`."""
        return self.read_sync(functools.partial(get_organization, org_id=org_id))

    async def unprocessed_events(self, limit: int) -> list[dict[str, Any]]:
        """See :func:`unprocessed_events`."""
        return await self.read(functools.partial(unprocessed_events, limit=limit))

    def unprocessed_events_sync(self, limit: int) -> list[dict[str, Any]]:
        """Synchronous :meth:`unprocessed_events`."""
        return self.read_sync(functools.partial(unprocessed_events, limit=limit))

    async def count_events(self, kind: str | None = None) -> dict[str, int]:
        """See :func:`count_events`."""
        return await self.read(functools.partial(count_events, kind=kind))

    def count_events_sync(self, kind: str | None = None) -> dict[str, int]:
        """Synchronous :meth:`count_events`."""
        return self.read_sync(functools.partial(count_events, kind=kind))


class Store(BaseStore):
    """The state database: one writer thread, one reader thread, both off the event loop.

    Open with :meth:`Store.open`; close with :meth:`close` (or ``await aclose()``, or use it as
    a context manager). See the module docstring for the transaction contract.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        migrations: Sequence[MigrationFn] = MIGRATIONS,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        """Prefer :meth:`Store.open`."""
        self.path = Path(path)
        self.describe = str(self.path)
        self._busy_timeout_s = busy_timeout_s
        self._identity: FileIdentity | None = None
        self._init_executors()
        try:
            _prepare_file(self.path)
            self.schema_version: int = self._writer.submit(
                self._open_writer, list(migrations)
            ).result()
            # The reader opens after the writer: WAL mode and the -shm file must exist first.
            self._reader.submit(self._open_reader).result()
            self._identity = _identity(self.path)
        except BaseException as exc:
            self.close()
            problem = state_file_error(self.path, exc)
            if problem is None or problem is exc:
                raise
            raise problem from exc

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        migrations: Sequence[MigrationFn] = MIGRATIONS,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> Store:
        """Open (creating it 0600 if missing) and migrate the state file at ``path``.

        ``migrations`` replaces the schema's migration list (for tests). Raises
        :class:`SchemaTooNewError` if the file was migrated by a newer makewatch.
        Blocks while migrating: call it before the event loop starts, or in a thread.
        """
        return cls(path, migrations=migrations, busy_timeout_s=busy_timeout_s)

    def state_file_error(self, exc: BaseException) -> StateFileError | None:
        """:func:`state_file_error` for this store's file (it knows which file was opened)."""
        return state_file_error(self.path, exc, self._identity)

    def check_file(self) -> None:
        """Raise :class:`StateFileError` if the path no longer names the file that was opened.

        On Unix a deleted file stays writable through the open connection, so without this
        a service whose file was deleted would go on writing to a file nobody can read.
        """
        try:
            identity = _identity(self.path)
        except FileNotFoundError as exc:
            raise StateFileError(self.path, _describe(self.path, "", "", self._identity)) from exc
        if identity != self._identity:
            raise StateFileError(self.path, _describe(self.path, "", "", self._identity))

    # -- connections, each created and closed in the thread that uses it

    def _open_writer(self, migrations: list[MigrationFn]) -> int:
        self._writer_thread = threading.get_ident()
        db = Database(sqlite3.connect(self.path, timeout=self._busy_timeout_s))
        self._wdb = db
        db.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
        # synchronous stays FULL (the default): with NORMAL, a power cut could undo the commit
        # that recorded a sent notification, and it would be sent again.
        if db.journal_mode != "wal":
            raise StoreError(f"{self.path}: cannot use WAL mode (a network file system?)")
        version = _migrate(db, migrations, self.path)
        # SQLite opens a file it cannot write read-only without a word, and BEGIN IMMEDIATE
        # still succeeds: without a real write here, a read-only state file would only fail
        # at the first write of the first cycle. Rewriting user_version (unused otherwise)
        # with its own value is the smallest real write.
        db.execute("BEGIN IMMEDIATE")
        try:
            user_version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute(f"PRAGMA user_version = {int(user_version)}")
        except BaseException:
            db.rollback()
            raise
        db.execute("COMMIT")
        return version

    def _open_reader(self) -> None:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        db = Database(sqlite3.connect(uri, uri=True, timeout=self._busy_timeout_s))
        self._rdb = db
        db.execute("PRAGMA foreign_keys = ON")

    # -- transactions, run in the owning thread

    def _write_tx(self, fn: Callable[[Database], T]) -> T:
        db = self._wdb
        assert db is not None
        # IMMEDIATE takes the write lock up front: a deferred BEGIN that reads first and
        # writes later can fail with SQLITE_BUSY at once, without waiting busy_timeout, when
        # another process (a CLI command) writes meanwhile.
        db.execute("BEGIN IMMEDIATE")
        try:
            result = _refuse_lazy(fn(db))
            if not db.conn.in_transaction:
                raise StoreError("the write fn ended the transaction itself")
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        return result

    def _read_tx(self, fn: Callable[[Database], T]) -> T:
        db = self._rdb
        assert db is not None
        db.execute("BEGIN")
        try:
            return _refuse_lazy(fn(db))
        finally:
            db.rollback()
