"""``makewatch migrate-state``: copy the state between the SQLite file and PostgreSQL (issue 18).

What it guarantees
------------------
* **The source is only read.** It is opened with its store, which migrates it to this
  version's schema (the only write it gets), then read in ONE snapshot: a SQLite read
  transaction, or PostgreSQL's ``REPEATABLE READ READ ONLY``.
* **Nobody runs on it meanwhile.** A SQLite source is locked with ``makewatch run``'s own
  lock (watcher.lock) for the whole copy, so a service cannot start half-way; a PostgreSQL
  source is refused while any replica holds a live lease.
* **Never two states merged.** The target is created or migrated with the same
  ``MIGRATIONS`` and must hold no row in any table of the schema.
* **All or nothing.** Every row goes in ONE target transaction: a failure leaves the target
  as it was (migrated, empty), ready for another try.
* **Same ids.** Rows keep their primary keys; on PostgreSQL the facade (watcher.pgtx) moves
  each identity past the largest id it was given, so the next insert gets a fresh one.
* ``leases`` and ``replicas`` are not copied: they describe processes running on the source.
* **No password in any output**: the target is named ``postgresql://user@host:port/dbname``
  (:func:`watcher.pgstore.describe_url`), and error texts are scrubbed of it.

How the copy streams
--------------------
Each store runs its transactions in threads of its own. The source's reader thread reads the
tables in batches (keyset pagination on the primary key: no ``OFFSET``, so a large table
costs the same per batch) and hands them through a small queue to the target's writer
thread, which inserts them; memory stays at a few batches whatever the size of the state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import click
import psycopg

from watcher.cli_common import CONFIG_OPTION, load_config_or_exit

__all__ = [
    "BOOKKEEPING_TABLES",
    "COMMAND",
    "NOT_COPIED",
    "MigrateRefused",
    "Target",
    "copy_state",
    "live_leases",
    "parse_target",
    "schema_tables",
]

logger = logging.getLogger(__name__)

#: Each engine's record of applied migrations: the target has its own, from its own opening.
BOOKKEEPING_TABLES = frozenset({"_sqlite_migrations", "_makewatch_migrations"})
#: Tables about the processes running on a state, not about what they saw and sent.
NOT_COPIED = ("leases", "replicas")
DEFAULT_BATCH_ROWS = 1000
#: How long the reader waits for the writer to take a batch before looking whether it failed.
_DONE = object()  # the reader's last item: every batch was handed over
_FAILED = object()  # the reader's last item when it stopped early (its error, or the writer's)


class MigrateRefused(Exception):
    """The migration would be unsafe or cannot start; ``str()`` says why and what to do."""


class UsageProblem(MigrateRefused):
    """The command line asks for something that makes no sense (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to copy the state: a SQLite file (``path``) or a PostgreSQL URL (``url``)."""

    engine: Literal["sqlite", "postgres"]
    describe: str
    path: Path | None = None
    url: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)


def parse_target(value: str) -> Target:
    """``postgresql://…`` (or ``postgres://…``), ``sqlite:///path/to/file.db`` (the path
    after ``sqlite://``: ``/path/to/file.db``) or a plain path."""
    text = value.strip()
    if not text:
        raise UsageProblem("the target is empty")
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        from watcher.pgstore import describe_url

        describe, password = describe_url(text)
        return Target("postgres", describe, url=text, password=password)
    if scheme == "sqlite":
        path = text[len("sqlite://") :]
        if not path:
            raise UsageProblem("sqlite:// needs a path: sqlite:///path/to/file.db")
        return Target("sqlite", path, path=Path(path))
    if scheme:
        raise UsageProblem(f"unknown kind of target {scheme}://; give postgresql://… or sqlite:///path")
    return Target("sqlite", text, path=Path(text).expanduser())


def _scrub(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


# --------------------------------------------------------------------------- schema


def schema_tables(db: Any) -> list[str]:
    """makewatch's tables, in creation order (so a table comes after those it refers to),
    without the migration bookkeeping and SQLite's own (``sqlite_*``)."""
    return [
        name
        for name in db.table_names()
        if name not in BOOKKEEPING_TABLES and not name.startswith("sqlite_")
    ]


def _columns(db: Any, table: str) -> list[str]:
    return list(db[table].columns_dict)


def _pks(db: Any, table: str) -> list[str]:
    pks = list(db[table].pks)
    # sqlite-utils says ["rowid"] for a table without a primary key: every table of the
    # schema has one, so that would be a foreign table.
    if not pks or (pks == ["rowid"] and "rowid" not in _columns(db, table)):
        raise MigrateRefused(f"table {table} has no primary key: is this makewatch's state?")
    return pks


def _describe_schema(db: Any) -> dict[str, list[str]]:
    return {table: _columns(db, table) for table in schema_tables(db)}


def _counts(db: Any, tables: Sequence[str]) -> dict[str, int]:
    return {table: db[table].count for table in tables}


def live_leases(db: Any) -> list[tuple[str, str, float]]:
    """``(name, holder, seconds left)`` of every lease a replica holds now, by the database
    server's clock (the one the leases are kept by)."""
    if "leases" not in db.table_names():
        return []
    rows = db.execute(
        "SELECT name, holder, expires_at - extract(epoch FROM clock_timestamp()) FROM leases "
        "WHERE holder IS NOT NULL AND expires_at > extract(epoch FROM clock_timestamp()) "
        "ORDER BY name"
    ).fetchall()
    return [(str(name), str(holder), float(left)) for name, holder, left in rows]


def _batches(db: Any, table: str, columns: Sequence[str], pks: Sequence[str], rows: int) -> Iterator[list[dict[str, Any]]]:
    """The table's rows in primary-key order, ``rows`` at a time (keyset pagination)."""
    from watcher.pgtx import quote_identifier as q

    select = f"SELECT {', '.join(map(q, columns))} FROM {q(table)}"  # noqa: S608 - quoted names
    order = " ORDER BY " + ", ".join(map(q, pks)) + f" LIMIT {int(rows)}"
    key = "(" + ", ".join(map(q, pks)) + ") > (" + ", ".join("?" * len(pks)) + ")"
    index = [list(columns).index(pk) for pk in pks]
    last: list[Any] | None = None
    while True:
        if last is None:
            found = db.execute(select + order, []).fetchall()
        else:
            found = db.execute(select + " WHERE " + key + order, last).fetchall()
        if not found:
            return
        yield [dict(zip(columns, row, strict=True)) for row in found]
        if len(found) < rows:
            return
        last = [found[-1][i] for i in index]


# ----------------------------------------------------------------------------- copy


class _Stopped(Exception):
    """The other side of the copy failed: stop quietly, its error is the one to report."""


def copy_state(
    source: Any,
    target: Any,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> dict[str, int]:
    """Copy every table of the schema but :data:`NOT_COPIED` from ``source`` to ``target``
    (two open :class:`watcher.store.BaseStore`): one source snapshot, one target transaction.
    Returns the rows copied, by table, in copy order. Raises :class:`MigrateRefused` if the
    target holds any row (checked again under the target's write lock)."""
    from watcher.store import StoreError

    tables = source.read_sync(schema_tables)
    plan = source.read_sync(
        lambda db: [(t, _columns(db, t), _pks(db, t)) for t in tables if t not in NOT_COPIED]
    )
    # Two batches in flight at most: the reader waits no longer than one insert, well inside
    # PostgreSQL's idle_in_transaction_session_timeout (watcher.pgstore) on its snapshot.
    # No timed waits: each side blocks on the queue, and the reader always ends with one of
    # two sentinels, which the writer waits for even after it failed (it drains the queue
    # meanwhile), so neither side can be left blocked on the other.
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    failed = threading.Event()
    ended = threading.Event()  # the reader put its sentinel
    ending = threading.Lock()

    def put(item: Any) -> None:
        if failed.is_set():
            raise _Stopped
        handoff.put(item)

    def end(sentinel: object) -> None:
        with ending:  # exactly one sentinel: a second could block on a queue nobody reads
            if ended.is_set():
                return
            ended.set()
        handoff.put(sentinel)

    def read_all(db: Any) -> None:
        try:
            for table, columns, pks in plan:
                for batch in _batches(db, table, columns, pks, batch_rows):
                    put((table, batch))
        except BaseException:
            failed.set()
            end(_FAILED)
            raise
        end(_DONE)

    def drain() -> None:
        """After the writer failed: take what the reader still hands over until it ends."""
        while handoff.get() not in (_DONE, _FAILED):
            pass

    attempts: list[int] = []

    def write_all(db: Any) -> dict[str, int]:
        # PgStore runs a write fn again after a deadlock: the batches taken by the first
        # attempt are gone from the queue, so a second one would commit a partial copy.
        attempts.append(1)
        if len(attempts) > 1:
            failed.set()
            raise StoreError("the target's transaction was interrupted (deadlock); nothing was written, run it again")
        try:
            _refuse_non_empty(_counts(db, schema_tables(db)), target.describe)
            copied = {table: 0 for table, _, _ in plan}
            while True:
                item = handoff.get()
                if item is _DONE:
                    return copied
                if item is _FAILED:
                    raise _Stopped
                table, batch = item
                db[table].insert_all(batch)
                copied[table] += len(batch)
        except _Stopped:
            raise  # the reader failed and has ended: nothing left to take
        except BaseException:
            failed.set()
            drain()
            raise

    async def both() -> list[Any]:
        read = asyncio.ensure_future(source.read(read_all))
        write = asyncio.ensure_future(target.write(write_all))
        await asyncio.wait({read})
        if not ended.is_set():
            # The read transaction failed before read_all could end it: tell the writer.
            failed.set()
            await asyncio.to_thread(end, _FAILED)
        return await asyncio.gather(read, write, return_exceptions=True)

    try:
        read_result, write_result = asyncio.run(both())
    except BaseException:
        # Ctrl-C: the threads would otherwise go on and commit the copy after all.
        failed.set()
        raise
    # The first failure is the one to report; the other side only stopped because of it.
    for result in (write_result, read_result):
        if isinstance(result, BaseException) and not isinstance(result, _Stopped):
            raise result
    assert isinstance(write_result, dict)
    return write_result


def _refuse_non_empty(counts: dict[str, int], describe: str) -> None:
    held = {t: n for t, n in counts.items() if n}
    if held:
        listed = ", ".join(f"{t} ({n})" for t, n in held.items())
        raise MigrateRefused(
            f"the target {describe} already holds makewatch data: {listed}. migrate-state "
            "never merges two states; give it an empty database (or a new file)"
        )


# -------------------------------------------------------------------------- command


def _open_source(state: Any, stack: ExitStack) -> Any:
    """The configured store, migrated, with nobody running on it (held so until the end)."""
    from watcher.store import Store

    if state.url is not None:
        from watcher.pgstore import PgStore

        store = stack.enter_context(PgStore.open(state.url.reveal()))
        leases = store.read_sync(live_leases)
        if leases:
            held = ", ".join(f"{name} by {holder} (expires in {left:.0f} s)" for name, holder, left in leases)
            raise MigrateRefused(
                f"makewatch replicas are running on {store.describe}: {held}. Stop every "
                "`makewatch run` on it first (a stopped replica's leases expire within "
                "state.lease_ttl_s)"
            )
        return store
    path = Path(state.db_path)
    if not path.is_file():
        raise MigrateRefused(f"no state file at {path} (state.db_path): nothing to migrate")
    _lock(path, stack)
    return stack.enter_context(Store.open(path))


def _lock(path: Path, stack: ExitStack) -> None:
    from watcher.lock import AlreadyRunningError, StateLock

    lock = StateLock(path)
    try:
        lock.acquire()
    except AlreadyRunningError as exc:
        who = f" (pid {exc.pid})" if exc.pid is not None else ""
        raise MigrateRefused(
            f"makewatch is running on {path}{who}: stop it first, so that nothing is written "
            "while the state is copied"
        ) from None
    stack.callback(lock.release)


def _open_target(target: Target, source_schema: dict[str, list[str]], stack: ExitStack) -> Any:
    """The target store, created or migrated, checked empty and of the source's schema."""
    from watcher.store import Store

    if target.engine == "postgres":
        from watcher.pgstore import PgStore

        assert target.url is not None
        store = stack.enter_context(PgStore.open(target.url))
    else:
        assert target.path is not None
        _lock(target.path, stack)
        store = stack.enter_context(Store.open(target.path))
    schema = store.read_sync(_describe_schema)
    differ = sorted(
        t for t in set(schema) | set(source_schema) if sorted(schema.get(t, ())) != sorted(source_schema.get(t, ()))
    )
    if differ:
        raise MigrateRefused(
            f"the target {store.describe} and the source have different tables or columns "
            f"({', '.join(differ)}) although both are at the same schema version: was one "
            "of them changed by hand?"
        )
    _refuse_non_empty(store.read_sync(lambda db: _counts(db, list(schema))), store.describe)
    return store


def _resolve_target(to: str | None, to_env: str | None) -> Target:
    if (to is None) == (to_env is None):
        raise UsageProblem(
            "give exactly one of --to URL|PATH and --to-env NAME (an environment variable "
            "holding the URL, so that no password is on the command line)"
        )
    if to_env is not None:
        value = os.environ.get(to_env)
        if not value:
            raise UsageProblem(f"--to-env: environment variable {to_env} is not set")
        return parse_target(value)
    assert to is not None
    return parse_target(to)


def _switch_hint(target: Target, to_env: str | None) -> list[str]:
    if target.engine == "postgres":
        name = to_env or "MAKEWATCH_STATE_URL"
        lines = ["To use it, set in the config:", "  [state]", f'  url_env = "{name}"']
        if to_env is None:
            lines.append(f"and export {name}={target.describe} (with its password) where makewatch runs.")
        lines.append("Remove state.db_path; the SQLite file is left as it was (a backup).")
        return lines
    assert target.path is not None
    return [
        "To use it, set in the config:",
        "  [state]",
        f'  db_path = "{target.path}"',
        "and remove state.url / url_env / url_file; the PostgreSQL database is left as it was.",
    ]


def _fail(message: str, code: int, password: str | None = None) -> None:
    click.echo(f"makewatch migrate-state: {_scrub(message, password)}", err=True)
    sys.exit(code)


@click.command("migrate-state")
@CONFIG_OPTION
@click.option("--to", "to", metavar="URL|PATH", help="The target: postgresql://user@host:port/dbname, or sqlite:///path/to/file.db (or a plain path).")
@click.option("--to-env", metavar="NAME", help="Read the target URL from this environment variable (no password on the command line).")
@click.option("--batch-rows", default=DEFAULT_BATCH_ROWS, show_default=True, type=click.IntRange(min=1), help="Rows read and written at a time.")
def migrate_state(config_path: Path, to: str | None, to_env: str | None, batch_rows: int) -> None:
    """Copy the state [state] names into an empty PostgreSQL database, or from PostgreSQL into a new SQLite file.

    The source is migrated to this version's schema and otherwise only read; the target is
    created with the same schema and must hold no makewatch data (two states are never
    merged). Every row keeps its id and goes in one transaction. Refused (exit 1) while
    `makewatch run` uses the source; exit 2 on a configuration or usage error.
    """
    from watcher.store import StoreError

    try:
        target = _resolve_target(to, to_env)
    except MigrateRefused as exc:
        _fail(str(exc), 2)
    settings = load_config_or_exit(config_path)
    state = settings.state
    source_engine = "sqlite" if state.url is None else "postgres"
    if target.engine == source_engine:
        other = "a PostgreSQL URL" if source_engine == "sqlite" else "a SQLite file"
        _fail(f"the state is already on {'SQLite' if source_engine == 'sqlite' else 'PostgreSQL'}: the target must be {other}", 2)
    if to is not None and target.password:
        click.echo(
            "makewatch migrate-state: note: a password on the command line can be seen in "
            "`ps` and the shell's history; --to-env NAME avoids it",
            err=True,
        )
    started = time.monotonic()
    with ExitStack() as stack:
        try:
            source = _open_source(state, stack)
            schema = source.read_sync(_describe_schema)
            store = _open_target(target, schema, stack)
            click.echo(f"copying the state from {source.describe} to {store.describe}")
            copied = copy_state(source, store, batch_rows=batch_rows)
        except MigrateRefused as exc:
            _fail(str(exc), 1, target.password)
        except (StoreError, sqlite3.Error, OSError) as exc:
            _fail(f"{exc}; nothing was written to the target", 1, target.password)
        except psycopg.Error as exc:  # the copy itself failed on PostgreSQL (a value it refused)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"{type(exc).__name__}: {first}; nothing was written to the target", 1, target.password)
    width = max(map(len, copied), default=0)
    for table, n in copied.items():
        click.echo(f"  {table:<{width}}  {n:>9} row{'' if n == 1 else 's'}")
    click.echo(f"  ({', '.join(NOT_COPIED)}: not copied, they describe the processes running on the source)")
    click.echo(
        f"copied {sum(copied.values())} rows in {len(copied)} tables to {store.describe} "
        f"in {time.monotonic() - started:.1f} s"
    )
    for line in _switch_hint(target, to_env):
        click.echo(line)


COMMAND = migrate_state
