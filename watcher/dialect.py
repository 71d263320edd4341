"""The few SQL expressions that SQLite and PostgreSQL spell differently.

Product code writes one SQL text for both engines of the store (watcher.store for SQLite,
watcher.pgstore for PostgreSQL) and asks this module for the parts that cannot be portable:
a list of values to match, a field of a JSON column, a JSON object built in SQL, a batch of
the same statement. Everything else is written portably: ``ON CONFLICT`` rather than
``INSERT OR IGNORE``, ``RETURNING id`` rather than ``lastrowid``, ``CASE`` rather than the
scalar ``MIN(a, b)`` (SQLite's is NULL when either side is, PostgreSQL's ``LEAST`` skips
NULLs), ``COALESCE(SUM(x), 0)`` rather than ``total(x)``, double-quoted identifiers.

Placeholders stay ``?`` everywhere: the PostgreSQL facade translates them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["POSTGRES", "SQLITE", "engine", "executemany", "in_list", "json_get", "json_object"]

SQLITE = "sqlite"
POSTGRES = "postgres"

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CASTS = {"int": "bigint", "float": "double precision", "text": "text"}


def engine(db: Any) -> str:
    """``"postgres"`` for the PostgreSQL facade (it says so), else ``"sqlite"``."""
    return getattr(db, "engine", SQLITE)


def in_list(db: Any, column: str, values: Iterable[Any]) -> tuple[str, list[Any]]:
    """``column`` is one of ``values``: the SQL condition and its one parameter.

    One parameter whatever the length, so a list of thousands neither hits SQLite's limit on
    bound variables nor makes a new statement per length: SQLite reads a JSON array
    (``json_each``), PostgreSQL an array (``= ANY``). Values must all be ints or all strings.
    """
    items = list(values)
    if engine(db) == POSTGRES:
        return f"{column} = ANY(?)", [items]
    return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(items)]


def _path(path: str) -> list[str]:
    parts = path.split(".")
    if not all(_KEY.match(p) for p in parts):
        raise ValueError(f"not a JSON path of plain keys: {path!r}")
    return parts


def json_get(db: Any, column: str, path: str, cast: str | None = None) -> str:
    """The SQL value at ``path`` (``"alert.org_id"``) of the JSON text in ``column``.

    Without ``cast`` it is the value as JSON (an object stays an object inside
    :func:`json_object`); with ``cast`` ("int", "float", "text") a scalar to compare or
    group by. A missing key gives NULL on both engines.
    """
    parts = _path(path)
    if engine(db) == POSTGRES:
        if cast is None:
            return f"({column}::json #> '{{{','.join(parts)}}}')"
        text = f"({column}::json #>> '{{{','.join(parts)}}}')"
        return text if cast == "text" else f"{text}::{_CASTS[cast]}"
    expr = f"json_extract({column}, '$.{path}')"
    if cast in (None, "text"):
        return expr
    return f"CAST({expr} AS {'INTEGER' if cast == 'int' else 'REAL'})"


def json_object(db: Any, pairs: Sequence[tuple[str, str]], *, nested: bool = False) -> str:
    """A JSON object built in SQL from ``(key, SQL expression)`` pairs, as JSON text (or, with
    ``nested``, as a value to put inside another :func:`json_object`)."""
    for key, _ in pairs:
        _path(key)
    args = ", ".join(f"'{key}', {expr}" for key, expr in pairs)
    if engine(db) == POSTGRES:
        return f"json_build_object({args})" + ("" if nested else "::text")
    return f"json_object({args})"


def executemany(db: Any, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """Run ``sql`` once per row of parameters, in the caller's transaction."""
    if engine(db) == POSTGRES:
        db.executemany(sql, list(rows))
    else:
        db.conn.executemany(sql, rows)
