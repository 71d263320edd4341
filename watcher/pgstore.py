"""makewatch's state on PostgreSQL: the same store contract as the SQLite file (watcher.store).

Contracts (those of :class:`watcher.store.Store`, and how they hold here)
------------------------------------------------------------------------
* **Writes one at a time, across processes.** Each ``fn(db)`` runs in the writer thread in
  one transaction whose first statement is ``pg_advisory_xact_lock(WRITE_LOCK)``: two write
  transactions, from this process or another, never overlap, which is what SQLite's
  ``BEGIN IMMEDIATE`` gives and what product code relies on (it reads, then writes what it
  read, inside one write). The lock dies with the transaction, or with the connection.
  A deadlock or serialization failure retries the whole ``fn`` once.
* **Reads see one snapshot** (``REPEATABLE READ READ ONLY``), never an uncommitted write,
  and are always rolled back.
* **Migrations** are ``watcher.store.MIGRATIONS``, the same functions as on SQLite, run on a
  :class:`watcher.pgtx.PgDatabase` under ``pg_advisory_lock(MIGRATE_LOCK)``, each in its own
  transaction, recorded in ``_makewatch_migrations``: two processes opening a fresh database
  at once apply each migration once.
* **Connections**: one per thread, created and closed in the thread that uses it. Each sets
  ``idle_in_transaction_session_timeout`` so that a frozen process's open transaction (and its
  advisory lock) ends on its own. A connection that was lost (the server restarted, a
  failover, a replica frozen past that timeout) fails the transaction it was in, which is
  rolled back by the server, and is opened again at the next transaction: the service rides
  out a database outage (:class:`StateDatabaseUnavailable`, retried) instead of exiting.
  What cannot mend by retrying (authentication, a missing database, missing privileges, a
  read-only server) is a :class:`StateDatabaseError` and stops the service.
* **No password anywhere**: ``describe`` is ``postgresql://user@host:port/dbname``; psycopg's
  errors can quote the connection string, so every error raised while connecting is
  rewritten without it (and without its chain).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from watcher.pgtx import PgDatabase
from watcher.store import (
    MIGRATION_SET,
    MIGRATIONS,
    BaseStore,
    MigrationFn,
    StateFileError,
    StoreError,
    StoreUnavailable,
    _check_history,
    _refuse_lazy,
)

__all__ = [
    "MIGRATE_LOCK",
    "WRITE_LOCK",
    "PgStore",
    "StateDatabaseError",
    "StateDatabaseUnavailable",
    "describe_url",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Advisory lock keys (one bigint each, the ASCII of a name: readable in ``pg_locks``).
#: WRITE_LOCK: held by every write transaction. MIGRATE_LOCK: held (per session) while the
#: migrations are checked and applied.
WRITE_LOCK = int.from_bytes(b"mkwatchW", "big")
MIGRATE_LOCK = int.from_bytes(b"mkwatchM", "big")

#: A frozen process (SIGSTOP, a hung thread) must not hold the write lock forever: its
#: transaction is ended by the server after this long idle inside it.
IDLE_IN_TRANSACTION_TIMEOUT_S = 20
#: Generous: a write waits for the others (they are short), but not forever.
LOCK_TIMEOUT_S = 30
STATEMENT_TIMEOUT_S = 30
DEFAULT_CONNECT_TIMEOUT_S = 10

_MIGRATIONS_TABLE = "_makewatch_migrations"
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


class StateDatabaseError(StateFileError):
    """The state database cannot be used: unreachable, connection lost, authentication failed,
    no such database, not writable. The service stops on it (as on a broken state file: it
    is a :class:`StateFileError`). ``str()`` names the database (never the password) and the
    problem."""

    def __init__(self, describe: str, problem: str) -> None:
        self.path = describe  # type: ignore[assignment] - a URL without password, not a file
        self.describe = describe
        self.problem = problem
        StoreError.__init__(self, f"state database {describe}: {problem}")


class StateDatabaseUnavailable(StoreUnavailable):
    """The state database cannot be reached right now (connection refused or lost): the
    transaction did not happen; the next one connects again. Not fatal for the service."""


def describe_url(url: str) -> tuple[str, str | None]:
    """``(postgresql://user@host:port/dbname, password)`` of a connection URL or conninfo.

    Raises :class:`StateDatabaseError` (without quoting ``url``) if it cannot be parsed.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        raise StateDatabaseError("postgresql://?", "the connection URL cannot be parsed") from None
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port")
    text = "postgresql://" + (f"{user}@" if user else "") + str(host)
    text += (f":{port}" if port else "") + "/" + str(params.get("dbname") or "")
    password = params.get("password")
    return text, (str(password) if password else None)


def _scrub(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


# SQLSTATE classes/codes meaning "this database cannot be used as configured": retrying the
# same statement on the same connection cannot help.
_FATAL_SQLSTATES = {
    "28000": "authentication failed (invalid authorization)",
    "28P01": "authentication failed (wrong password)",
    "3D000": "the database does not exist",
    "42501": "permission denied; makewatch's role must own (or be granted) its tables",
    "25006": "the server is read-only (a standby?); point makewatch at the primary",
}
# Those mean the connection is gone, not the database: a new connection may well work.
_TRANSIENT_SQLSTATES = {"57P01", "57P02", "57P03"}


class PgStore(BaseStore):
    engine = "postgres"
    """The state on PostgreSQL. Open with :meth:`PgStore.open`; the API is :class:`BaseStore`'s."""

    def __init__(
        self,
        url: str,
        *,
        migrations: Sequence[MigrationFn] = MIGRATIONS,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        """Prefer :meth:`PgStore.open`."""
        self.describe, self._password = describe_url(url)
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._init_executors()
        try:
            self.schema_version: int = self._writer.submit(self._open_writer, list(migrations)).result()
            self._reader.submit(self._open_reader).result()
        except BaseException as exc:
            self.close()
            problem = self.state_file_error(exc)
            if problem is None or problem is exc:
                raise
            raise problem from None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrations: Sequence[MigrationFn] = MIGRATIONS,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> PgStore:
        """Connect to ``url`` (``postgresql://user:password@host:port/dbname``) and migrate.

        Raises :class:`StateDatabaseError` when the database cannot be reached or used, and
        :class:`watcher.store.SchemaTooNewError` if a newer makewatch migrated it. Blocks
        while migrating: call it before the event loop starts, or in a thread.
        """
        return cls(url, migrations=migrations, connect_timeout_s=connect_timeout_s)

    # -- errors

    def state_file_error(self, exc: BaseException) -> StateFileError | None:
        """``exc`` as a :class:`StateDatabaseError` if the database is unusable, else None.

        Authentication failure, missing database, missing privileges, read-only server. A
        lost connection is not (the next transaction connects again), nor is a constraint
        violation or a bug in a query.
        """
        if isinstance(exc, StateFileError):
            return exc
        if not isinstance(exc, psycopg.Error) or self._transient(exc):
            return None
        detail = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, self._password)
        problem = _FATAL_SQLSTATES.get(exc.sqlstate or "")
        if problem is None and exc.sqlstate == "42P01":
            problem = f"a table is missing ({detail}); is this makewatch's database?"
        if problem is None:
            return None
        return StateDatabaseError(self.describe, problem)

    @staticmethod
    def _transient(exc: psycopg.Error) -> bool:
        """A lost or refused connection, or a server going down: a new connection may work."""
        if exc.sqlstate in _TRANSIENT_SQLSTATES:
            return True
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
            exc.sqlstate is None or exc.sqlstate.startswith("08")
        )

    def check_file(self) -> None:
        """Nothing to check: there is no file that could be swapped under a connection."""

    # -- connections, each created and closed in the thread that uses it

    def _connect(self, *, opening: bool = True) -> PgDatabase:
        """A new connection. While opening the store any failure is a StateDatabaseError
        (the service does not start); later, an unreachable server is a
        StateDatabaseUnavailable (retried at the next transaction)."""
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,  # transactions are explicit BEGIN ... COMMIT, as in Store
                connect_timeout=max(1, round(self._connect_timeout_s)),
                application_name="makewatch",
            )
        except psycopg.Error as exc:
            detail = _scrub(str(exc).strip(), self._password)
            if self._transient(exc):
                if not opening:
                    raise StateDatabaseUnavailable(f"state database {self.describe}: unreachable ({detail})") from None
                raise StateDatabaseError(self.describe, f"cannot reach the server ({detail})") from None
            problem = self.state_file_error(exc) or StateDatabaseError(self.describe, detail)
            raise problem from None
        for setting, value in (
            ("idle_in_transaction_session_timeout", f"{IDLE_IN_TRANSACTION_TIMEOUT_S}s"),
            ("lock_timeout", f"{LOCK_TIMEOUT_S}s"),
            ("statement_timeout", f"{STATEMENT_TIMEOUT_S}s"),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        return PgDatabase(conn)

    def _open_writer(self, migrations: list[MigrationFn]) -> int:
        self._writer_thread = threading.get_ident()
        db = self._connect()
        self._wdb = db
        collation = db.execute(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        if collation and collation[0] not in ("C", "POSIX", "C.UTF-8", "C.utf8"):
            logger.warning(
                "state database %s has collation %s: text sorts differently from SQLite "
                "(create it with LC_COLLATE 'C')", self.describe, collation[0],
            )
        version = self._migrate(db, migrations)
        # A role that can read but not write, or a standby, must fail now, not at the first
        # write of the first cycle: a real write lock and a real (empty) UPDATE.
        self._write_tx(
            lambda d: d.execute(f"UPDATE {_MIGRATIONS_TABLE} SET applied_at = applied_at WHERE false")  # noqa: S608
        )
        return version

    def _open_reader(self) -> None:
        self._rdb = self._connect()

    # -- migrations

    def _migrate(self, db: PgDatabase, fns: Sequence[MigrationFn]) -> int:
        """Apply the missing migrations, each in its own transaction; return the version.

        The whole check-and-apply holds the session lock MIGRATE_LOCK, so a second process
        opening at once waits, then finds everything applied.
        """
        names = [fn.__name__ for fn in fns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate migration names: {names}")
        conn = db.connection
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_MIGRATIONS_TABLE} ("
                "migration_set text NOT NULL, name text NOT NULL, "
                "applied_at double precision NOT NULL, PRIMARY KEY (migration_set, name))"
            )
            rows = conn.execute(
                f"SELECT name FROM {_MIGRATIONS_TABLE} WHERE migration_set = %s ORDER BY applied_at",  # noqa: S608
                (MIGRATION_SET,),
            ).fetchall()
            applied = [r[0] for r in rows]
            _check_history(applied, names, self.describe)  # type: ignore[arg-type]
            for fn in fns[len(applied) :]:
                def step(d: PgDatabase, fn: MigrationFn = fn) -> None:
                    fn(d)  # type: ignore[arg-type] - the facade stands for sqlite-utils' Database
                    d.execute(
                        f"INSERT INTO {_MIGRATIONS_TABLE} (migration_set, name, applied_at) "  # noqa: S608
                        "VALUES (?, ?, extract(epoch FROM clock_timestamp()))",
                        [MIGRATION_SET, fn.__name__],
                    )

                self._write_tx(step)
                logger.info("state %s: applied migration %s", self.describe, fn.__name__)
            return len(fns)
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))

    # -- transactions, run in the owning thread

    @staticmethod
    def _rollback(db: PgDatabase) -> None:
        if db.connection.broken or db.connection.closed:
            return
        db.connection.rollback()

    def _live(self, which: str) -> PgDatabase:
        """The thread's connection, connected again first if it was lost."""
        db = self._wdb if which == "writer" else self._rdb
        assert db is not None
        if db.connection.closed or db.connection.broken:
            db.close()
            db = self._connect(opening=False)
            if which == "writer":
                self._wdb = db
            else:
                self._rdb = db
            logger.warning("state %s: connected again (%s)", self.describe, which)
        return db

    def _write_tx(self, fn: Callable[[Any], T]) -> T:
        db = self._begin("writer", "BEGIN")
        conn = db.connection
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                result = _refuse_lazy(fn(db))
                status = conn.info.transaction_status
                if status == TransactionStatus.INERROR:
                    # COMMIT would quietly roll back: fn swallowed a failed statement, and
                    # PostgreSQL (unlike SQLite) aborts the whole transaction on one.
                    raise StoreError(
                        "a statement failed inside the write fn and the fn went on; PostgreSQL "
                        "aborted the transaction, nothing of it was kept"
                    )
                if status != TransactionStatus.INTRANS:
                    raise StoreError("the write fn ended the transaction itself")
                conn.execute("COMMIT")
                return result
            except _RETRYABLE as exc:
                self._rollback(db)
                if attempt == 2:
                    raise
                logger.info("state %s: write retried after %s", self.describe, type(exc).__name__)
            except psycopg.Error as exc:
                self._rollback(db)
                if self._transient(exc):
                    raise self._unavailable(exc) from None
                raise
            except BaseException:
                self._rollback(db)
                raise
        raise AssertionError("unreachable")

    def _begin(self, which: str, statement: str) -> PgDatabase:
        """The thread's connection with a transaction begun. A connection found dead at that
        first statement (the server restarted since the last transaction) is replaced and
        the BEGIN tried once more: nothing had been sent yet, so that is safe. A failure
        later in a transaction is never retried here: a lost COMMIT may have committed."""
        db = self._live(which)
        try:
            db.connection.execute(statement)
        except psycopg.Error as exc:
            if not self._transient(exc):
                raise
            db = self._live(which)
            try:
                db.connection.execute(statement)
            except psycopg.Error as again:
                if self._transient(again):
                    raise self._unavailable(again) from None
                raise
        return db

    def _unavailable(self, exc: psycopg.Error) -> StateDatabaseUnavailable:
        detail = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, self._password)
        return StateDatabaseUnavailable(
            f"state database {self.describe}: lost the connection ({detail}); the transaction was "
            "rolled back, the next one connects again"
        )

    def _read_tx(self, fn: Callable[[Any], T]) -> T:
        db = self._begin("reader", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            try:
                return _refuse_lazy(fn(db))
            finally:
                self._rollback(db)
        except psycopg.Error as exc:
            if self._transient(exc):
                raise self._unavailable(exc) from None
            raise
