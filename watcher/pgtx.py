"""The PostgreSQL side of the ``db`` handle: what product code calls on sqlite-utils' Database.

Every ``fn(db)`` the store runs, and every migration of ``watcher.store.MIGRATIONS``, is
written against sqlite-utils' ``Database``. :class:`PgDatabase` gives the same calls, with
the same Python results, over one psycopg 3 connection, so the same code runs on both
engines. It covers what the code base uses, not all of sqlite-utils:

* ``db.execute(sql, params)`` → a cursor (``fetchone``, ``fetchall``, ``rowcount``, iteration,
  rows as tuples); ``db.query(sql, params)`` → dicts, lazily, as sqlite-utils;
  ``db.executemany``; ``db.table_names()``; ``db[name]`` / ``db.table(name)`` → :class:`PgTable`.
* SQL is written for SQLite with ``?`` placeholders: :func:`translate` makes it psycopg's.
  What differs in kind (``json_each``, ``json_extract``, scalar ``MIN``) is not translated:
  it must go through ``watcher.dialect``.
* Values: ``bool`` parameters are sent as integers (flags are ``bigint`` columns, as SQLite
  stores them); ``numeric`` results (``sum`` of a bigint, ``avg``, ``extract``) come back as
  ``int`` or ``float``, as SQLite's would, never as ``Decimal``.

The facade runs no transaction control: the store opens and ends the transaction around
``fn(db)`` (watcher.pgstore).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Loader
from sqlite_utils.db import NotFoundError, PrimaryKeyRequired, jsonify_if_needed

__all__ = ["PgCursor", "PgDatabase", "PgTable", "pg_type", "quote_identifier", "translate"]

#: Rows per multi-row INSERT, as sqlite-utils' default batch; PostgreSQL takes at most
#: 65,535 parameters per statement, so wide rows get smaller batches.
BATCH_SIZE = 100
MAX_PARAMS = 65_000

_TOKEN = re.compile(
    r"""'(?:[^']|'')*'        # a string literal, '' inside it
      | "(?:[^"]|"")*"        # a quoted identifier
      | --[^\n]*              # a line comment
      | /\*.*?\*/             # a block comment
      | [?%]""",
    re.VERBOSE | re.DOTALL,
)


def _token(match: re.Match[str]) -> str:
    text = match.group()
    if text == "?":
        return "%s"
    # psycopg parses the whole query for %s and %(name)s, literals and comments included.
    return text.replace("%", "%%")


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """SQLite-style SQL → psycopg's: ``?`` → ``%s`` outside string literals, quoted
    identifiers and comments; every literal ``%`` → ``%%``.

    The store always passes a parameter list (empty if none), so psycopg always parses the
    query and ``%%`` always means ``%``. Not understood: ``E'...'`` strings with backslash
    escapes and ``$$`` dollar quoting (SQLite has neither).
    """
    return _TOKEN.sub(_token, sql)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------- values


Buffer = bytes | bytearray | memoryview


class _NumericLoader(Loader):
    """``numeric`` → ``int`` when it has no fraction digits, else ``float`` (SQLite's types)."""

    def load(self, data: Buffer) -> int | float:  # type: ignore[override]
        text = bytes(data).decode()
        return float(text) if "." in text or "e" in text.lower() or text == "NaN" else int(text)


def _param(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _params(params: Sequence[Any] | Mapping[str, Any] | None) -> Sequence[Any]:
    if params is None:
        return ()
    if isinstance(params, Mapping):
        raise TypeError("named parameters are not supported by the PostgreSQL facade: use ?")
    return [_param(v) for v in params]


def _value(value: Any) -> Any:
    """A row value as sqlite-utils writes it: dicts/lists as JSON text, bools as integers."""
    return _param(jsonify_if_needed(value))


_TYPES = {
    int: "bigint",
    bool: "bigint",
    float: "double precision",
    str: "text",
    bytes: "bytea",
    dict: "text",
    list: "text",
    tuple: "text",
}


def pg_type(column_type: Any) -> str:
    """The PostgreSQL type for a sqlite-utils column type (``int``, ``float``, ``str`` ...).

    Flags (``bool``) are ``bigint``, so a row reads back the same Python values on both
    engines (SQLite has no boolean type).
    """
    try:
        return _TYPES[str if column_type is None else column_type]
    except KeyError:
        raise ValueError(f"unknown column type {column_type!r}") from None


_PY_TYPES = {"bigint": int, "integer": int, "smallint": int, "double precision": float,
             "real": float, "numeric": float, "text": str, "bytea": bytes}


def _default_sql(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


# ---------------------------------------------------------------------------- cursor


class PgCursor:
    """A finished statement, read like sqlite3's cursor (rows are tuples).

    Unlike psycopg's, fetching from a statement that returns no rows gives None / [] as
    sqlite3 does. ``lastrowid`` does not exist on PostgreSQL: use ``RETURNING id``.
    """

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def lastrowid(self) -> int:
        raise AttributeError("lastrowid: PostgreSQL has no rowid; use INSERT ... RETURNING id")

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


# -------------------------------------------------------------------------- database


class PgDatabase:
    """sqlite-utils' ``Database`` calls the code base uses, on one psycopg connection.

    ``connection`` is the psycopg ``Connection`` (there is deliberately no ``conn``: code that
    reaches for sqlite3's connection is not portable and fails loudly here).
    """

    engine = "postgres"

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        connection.adapters.register_loader("numeric", _NumericLoader)
        # Tables never go away once created, and primary keys never change: cached per
        # connection (DDL through the facade refreshes them).
        self._known_tables: set[str] = set()
        self._pks: dict[str, list[str]] = {}
        self._identity: dict[str, tuple[str, str] | None] = {}

    # -- statements

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgCursor:
        """Run one statement (``?`` placeholders); the cursor holds its result."""
        cursor = self.connection.cursor()
        cursor.execute(translate(sql), _params(params))
        return PgCursor(cursor)

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> PgCursor:
        """One statement for each parameter row (psycopg pipelines them)."""
        cursor = self.connection.cursor()
        cursor.executemany(translate(sql), [_params(p) for p in seq_of_params])
        return PgCursor(cursor)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> Iterator[dict[str, Any]]:
        """Rows as dicts; lazy (runs at the first ``next``), as sqlite-utils' ``query``."""
        cursor = self.execute(sql, params)
        names = [c.name for c in cursor.description or ()]
        for row in cursor.fetchall():
            yield dict(zip(names, row, strict=True))

    # -- tables

    def __getitem__(self, name: str) -> PgTable:
        return PgTable(self, name)

    def table(self, name: str) -> PgTable:
        return PgTable(self, name)

    def table_names(self) -> list[str]:
        """Tables of the current schema, oldest first (SQLite lists them in creation order)."""
        rows = self.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.oid"
        ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.connection.close()

    # -- cached metadata

    def _forget(self, table: str) -> None:
        self._pks.pop(table, None)
        self._identity.pop(table, None)

    def _table_exists(self, table: str) -> bool:
        if table in self._known_tables:
            return True
        found = self.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname = ?",
            [table],
        ).fetchone()
        if found:
            self._known_tables.add(table)
        return found is not None

    def _table_pks(self, table: str) -> list[str]:
        if table not in self._pks:
            rows = self.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = ?::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                [quote_identifier(table)],
            ).fetchall()
            self._pks[table] = [r[0] for r in rows]
        return self._pks[table]

    def _identity_column(self, table: str) -> tuple[str, str] | None:
        """(column, its sequence) of the table's identity column, or None."""
        if table not in self._identity:
            row = self.execute(
                "SELECT column_name, pg_get_serial_sequence(?, column_name) "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ? AND is_identity = 'YES'",
                [quote_identifier(table), table],
            ).fetchone()
            self._identity[table] = None if row is None else (row[0], row[1])
        return self._identity[table]


# ----------------------------------------------------------------------------- table


class PgTable:
    """sqlite-utils' ``Table`` API as the code base uses it, with the same results.

    Integer primary keys: SQLite's ``INTEGER PRIMARY KEY`` is the rowid, numbered max + 1
    when no id is given; here it is ``bigint GENERATED BY DEFAULT AS IDENTITY``. An identity
    does not move when a row brings its own id, so after inserting explicit ids the facade
    moves the sequence past the largest (``setval``, never backwards): mixing explicit and
    generated ids in one table then works as on SQLite. The sequence is not transactional:
    a rolled-back insert, and a row skipped by ``ignore=True``, leave a gap in the ids where
    SQLite would reuse the number (nothing here relies on ids without gaps).
    """

    def __init__(self, db: PgDatabase, name: str) -> None:
        self.db = db
        self.name = name
        self.last_pk: Any = None
        self.last_rowid: Any = None

    @property
    def _q(self) -> str:
        return quote_identifier(self.name)

    # -- reading

    def exists(self) -> bool:
        return self.db._table_exists(self.name)

    @property
    def pks(self) -> list[str]:
        return self.db._table_pks(self.name)

    @property
    def columns_dict(self) -> dict[str, Any]:
        """``{column: Python type}`` in column order (``int``, ``float``, ``str``, ``bytes``)."""
        rows = self.db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            [self.name],
        ).fetchall()
        return {name: _PY_TYPES.get(kind, str) for name, kind in rows}

    def count_where(self, where: str | None = None, where_args: Sequence[Any] | None = None) -> int:
        sql = f"SELECT count(*) FROM {self._q}"  # noqa: S608 - a quoted name
        if where is not None:
            sql += " WHERE " + where
        row = self.db.execute(sql, where_args or []).fetchone()
        assert row is not None
        return int(row[0])

    @property
    def count(self) -> int:
        return self.count_where()

    @property
    def rows(self) -> Iterator[dict[str, Any]]:
        return self.rows_where()

    def rows_where(
        self,
        where: str | None = None,
        where_args: Sequence[Any] | None = None,
        order_by: str | None = None,
        select: str = "*",
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Matching rows as dicts, lazily; nothing (not an error) if the table does not exist."""
        if not self.exists():
            return
        sql = f"SELECT {select} FROM {self._q}"  # noqa: S608 - the caller's SQL, as sqlite-utils
        if where is not None:
            sql += " WHERE " + where
        if order_by is not None:
            sql += " ORDER BY " + order_by
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset is not None:
            sql += f" OFFSET {int(offset)}"
        yield from self.db.query(sql, where_args or [])

    def _pk_where(self, pk_values: Any) -> tuple[str, list[Any]]:
        values = list(pk_values) if isinstance(pk_values, list | tuple) else [pk_values]
        pks = self.pks
        if len(pks) != len(values):
            raise NotFoundError(f"Need {len(pks)} primary key value{'' if len(pks) == 1 else 's'}")
        return " AND ".join(f"{quote_identifier(p)} = ?" for p in pks), values

    def _last_pk(self, values: list[Any]) -> Any:
        return values[0] if len(values) == 1 else tuple(values)

    def get(self, pk_values: Any) -> dict[str, Any]:
        """The row with this primary key (a tuple for a compound one); ``NotFoundError`` if none."""
        where, values = self._pk_where(pk_values)
        row = next(self.rows_where(where, values), None)
        if row is None:
            raise NotFoundError
        self.last_pk = self._last_pk(values)
        return row

    # -- writing

    def update(self, pk_values: Any, updates: Mapping[str, Any] | None = None) -> PgTable:
        """Set ``updates`` on the row with this primary key; ``NotFoundError`` if there is none."""
        where, values = self._pk_where(pk_values)
        self.get(values)
        if not updates:
            return self
        sets = ", ".join(f"{quote_identifier(k)} = ?" for k in updates)
        cursor = self.db.execute(
            f"UPDATE {self._q} SET {sets} WHERE {where}",  # noqa: S608 - quoted names
            [_value(v) for v in updates.values()] + values,
        )
        assert cursor.rowcount == 1
        self.last_pk = self._last_pk(values)
        return self

    def delete(self, pk_values: Any) -> PgTable:
        """Delete the row with this primary key; ``NotFoundError`` if there is none."""
        where, values = self._pk_where(pk_values)
        self.get(values)
        self.db.execute(f"DELETE FROM {self._q} WHERE {where}", values)  # noqa: S608
        return self

    def insert(self, record: Mapping[str, Any], *, pk: Any = None, ignore: bool = False) -> PgTable:
        """Insert one row; ``last_pk`` is its primary key (the generated id, for instance)."""
        return self.insert_all([record], pk=pk, ignore=ignore)

    def insert_all(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        pk: Any = None,
        ignore: bool = False,
        batch_size: int = BATCH_SIZE,
        upsert: bool = False,
    ) -> PgTable:
        """Insert rows in multi-row statements, as sqlite-utils does.

        A column some row of the call has and another lacks is written NULL in the latter
        (sqlite-utils' behaviour: the table default does not apply), except an identity
        ``id``: NULL there means "generate one", as SQLite's rowid does. ``ignore=True`` skips a
        row that conflicts with any unique key (``ON CONFLICT DO NOTHING``); unlike SQLite's
        ``OR IGNORE`` a NOT NULL violation still raises.
        """
        rows = [dict(r) for r in records]
        if not rows:
            return self
        if upsert:
            pk_cols = self._upsert_pk(pk)
            rows = self._dedupe(rows, pk_cols)
        columns: list[str] = sorted({k for r in rows for k in r})
        identity = self.db._identity_column(self.name)
        id_col = identity[0] if identity else None
        self.last_pk = self.last_rowid = None
        returning = self.pks if len(rows) == 1 and self.pks else None
        if not columns:
            raise ValueError(f"insert into {self.name}: a row without any column")
        if upsert:
            missing = [c for c in pk_cols if c not in columns or any(r.get(c) is None for r in rows)]
            if missing:
                raise PrimaryKeyRequired(
                    f"upsert() requires a value for the primary key column{'s' if len(missing) > 1 else ''}: "
                    + ", ".join(missing)
                )
            updates = [c for c in columns if c not in pk_cols]
            conflict = f" ON CONFLICT ({', '.join(map(quote_identifier, pk_cols))}) "
            conflict += (
                "DO UPDATE SET " + ", ".join(f"{quote_identifier(c)} = excluded.{quote_identifier(c)}" for c in updates)
                if updates else "DO NOTHING"
            )
        else:
            conflict = " ON CONFLICT DO NOTHING" if ignore else ""
        per_batch = max(1, min(batch_size, MAX_PARAMS // len(columns)))
        head = f"INSERT INTO {self._q} ({', '.join(map(quote_identifier, columns))}) VALUES "  # noqa: S608
        tail = conflict + (" RETURNING " + ", ".join(map(quote_identifier, returning)) if returning else "")
        result = None
        # Runs of rows that bring an identity id, or leave it out, in order: SQLite numbers a
        # row without id max + 1 at its turn, so the identity moves past a run's explicit ids
        # before the next run generates any.
        for _, run in itertools.groupby(rows, key=lambda r: id_col is not None and r.get(id_col) is not None):
            segment = list(run)
            top_id: int | None = None
            for start in range(0, len(segment), per_batch):
                groups, params = [], []
                for row in segment[start : start + per_batch]:
                    marks = []
                    for c in columns:
                        value = row.get(c)
                        if c == id_col and value is None:
                            marks.append("DEFAULT")
                            continue
                        if c == id_col and isinstance(value, int):
                            top_id = value if top_id is None else max(top_id, value)
                        marks.append("?")
                        params.append(_value(value))
                    groups.append("(" + ", ".join(marks) + ")")
                result = self.db.execute(head + ", ".join(groups) + tail, params)
            if identity is not None and top_id is not None and top_id >= 1:
                self._advance_identity(identity[1], top_id)
        if returning and result is not None:
            self._set_last_pk(result, rows[0], returning)
        return self

    def upsert_all(self, records: Iterable[Mapping[str, Any]], *, pk: Any = None) -> PgTable:
        """Insert rows, or update the row with the same ``pk`` (default: the table's primary
        key): only the columns the rows give are written, the others keep their value."""
        return self.insert_all(records, pk=pk, upsert=True)

    def _upsert_pk(self, pk: Any) -> list[str]:
        if pk is None:
            pk_cols = self.pks
            if not pk_cols:
                raise PrimaryKeyRequired("upsert() requires a pk")
            return pk_cols
        return [pk] if isinstance(pk, str) else list(pk)

    @staticmethod
    def _dedupe(rows: list[dict[str, Any]], pk_cols: list[str]) -> list[dict[str, Any]]:
        """One row per key, the last one winning: SQLite applies a repeated key row after row;
        PostgreSQL refuses ("ON CONFLICT DO UPDATE command cannot affect row a second time")."""
        by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = tuple(row.get(c) for c in pk_cols)
            by_key.pop(key, None)
            by_key[key] = row
        return list(by_key.values())

    def _set_last_pk(self, result: PgCursor, record: Mapping[str, Any], pk_cols: list[str] | None) -> None:
        if not pk_cols:
            return
        row = result.fetchone()
        if row is None:  # ignored: point at the conflicting row when the record names it
            if all(c in record for c in pk_cols):
                self.last_pk = self._last_pk([record[c] for c in pk_cols])
            return
        self.last_pk = self._last_pk(list(row))
        self.last_rowid = self.last_pk if len(pk_cols) == 1 else None

    def _advance_identity(self, sequence: str, top_id: int) -> None:
        self.db.execute(
            "SELECT setval(?::regclass, ?) WHERE ? > COALESCE(pg_sequence_last_value(?::regclass), 0)",
            [sequence, top_id, top_id, sequence],
        )

    # -- schema

    def create(
        self,
        columns: Mapping[str, Any],
        pk: str | Sequence[str] | None = None,
        foreign_keys: Sequence[tuple[str, str, str]] | None = None,
        not_null: Iterable[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> PgTable:
        """``CREATE TABLE`` with sqlite-utils' arguments and PostgreSQL types (:func:`pg_type`).

        A single integer ``pk`` is an identity column (see the class docstring); a compound
        one is ``PRIMARY KEY (a, b)``. ``foreign_keys`` are ``(column, table, column)``.
        """
        not_null = set(not_null or ())
        defaults = dict(defaults or {})
        for name in (*not_null, *defaults):
            if name not in columns:
                raise ValueError(f"{name!r} is not a column of {self.name}")
        fks = {fk[0]: fk for fk in foreign_keys or ()}
        single_pk = pk if isinstance(pk, str) else None
        parts = []
        for name, kind in columns.items():
            sql_type = pg_type(kind)
            part = f"{quote_identifier(name)} {sql_type}"
            if name == single_pk:
                if sql_type == "bigint":
                    part += " GENERATED BY DEFAULT AS IDENTITY"
                part += " PRIMARY KEY"
            if name in not_null:
                part += " NOT NULL"
            if name in defaults:
                part += " DEFAULT " + _default_sql(defaults[name])
            if name in fks:
                _, other, other_col = fks[name]
                part += f" REFERENCES {quote_identifier(other)} ({quote_identifier(other_col)})"
            parts.append(part)
        if pk is not None and single_pk is None:
            parts.append("PRIMARY KEY (" + ", ".join(map(quote_identifier, pk)) + ")")
        self.db.execute(f"CREATE TABLE {self._q} (\n   " + ",\n   ".join(parts) + "\n)", [])
        self.db._forget(self.name)
        self.db._known_tables.add(self.name)
        return self

    def create_index(
        self,
        columns: Sequence[str],
        index_name: str | None = None,
        unique: bool = False,
        if_not_exists: bool = False,
    ) -> PgTable:
        """``CREATE INDEX``, named as sqlite-utils names it (``idx_<table>_<columns>``), so
        both engines have the same index names."""
        name = index_name or "idx_{}_{}".format(self.name.replace(" ", "_"), "_".join(columns))
        self.db.execute(
            "CREATE {}INDEX {}{} ON {} ({})".format(
                "UNIQUE " if unique else "",
                "IF NOT EXISTS " if if_not_exists else "",
                quote_identifier(name),
                self._q,
                ", ".join(map(quote_identifier, columns)),
            ),
            [],
        )
        return self

    def add_column(
        self,
        col_name: str,
        col_type: Any = None,
        fk: str | None = None,
        fk_col: str | None = None,
        not_null_default: Any = None,
    ) -> PgTable:
        """``ALTER TABLE ... ADD COLUMN``; ``not_null_default`` makes it ``NOT NULL DEFAULT x``."""
        sql = f"ALTER TABLE {self._q} ADD COLUMN {quote_identifier(col_name)} {pg_type(col_type)}"
        if not_null_default is not None:
            sql += " NOT NULL DEFAULT " + _default_sql(not_null_default)
        if fk is not None:
            sql += f" REFERENCES {quote_identifier(fk)} ({quote_identifier(fk_col or 'id')})"
        self.db.execute(sql, [])
        self.db._forget(self.name)
        return self
