"""tests/test_store.py's store-level tests, unchanged, on both engines.

The tests are imported from test_store: pytest collects them here, where ``store`` is this
module's fixture, parametrised ``sqlite`` / ``postgres``. Tests that open their own store
with ``Store.open(path)`` get a shim that opens a :class:`PgStore` on the test's database
instead. Tests about the SQLite file itself (mode, WAL, read-only connection, the
``_sqlite_migrations`` table) are not imported: they have no PostgreSQL meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_store
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures
from test_store import (  # noqa: F401 - collected here, with this module's `store`
    test_a_bad_row_late_in_record_progress_rolls_back_the_events_too,
    test_a_lazy_result_is_refused,
    test_a_slow_write_does_not_block_the_event_loop,
    test_a_write_fn_cannot_start_another_write,
    test_a_write_that_raises_after_inserting_events_leaves_nothing,
    test_concurrent_writes_are_serialised_and_all_land,
    test_no_table_has_a_column_for_a_secret,
    test_organizations_round_trip_their_json_fields,
    test_prune_forgets_old_history_but_keeps_open_work,
    test_reads_run_while_a_write_is_in_progress_and_see_only_commits,
    test_record_progress_inserts_each_event_once_and_returns_the_count,
    test_record_progress_upserts_scenarios_and_health_keeping_what_is_left_out,
    test_sync_and_async_apis_see_the_same_data,
    test_unprocessed_events_come_back_oldest_first_with_payload_decoded,
)

from watcher.store import Store

pytest.importorskip("psycopg", reason="psycopg is in the [test] extra")

from watcher.pgstore import PgStore  # noqa: E402

# Every test here, imported ones included, runs once per engine.
pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("pg_url")

        class PgShim:
            """``Store.open(path)`` in test_store opens the test's PostgreSQL database."""

            @staticmethod
            def open(path: Any, **kwargs: Any) -> PgStore:
                return PgStore.open(url, **kwargs)

        monkeypatch.setattr(test_store, "Store", PgShim)
    return request.param


@pytest.fixture
def store(engine: str, tmp_path: Path) -> Iterator[Any]:
    s = test_store.Store.open(tmp_path / "makewatch.db") if engine == "sqlite" else test_store.Store.open(None)
    yield s
    s.close()


def test_the_shim_is_in_place(engine: str) -> None:
    assert (test_store.Store is Store) == (engine == "sqlite")
