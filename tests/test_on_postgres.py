"""The store-level test modules again, on PostgreSQL (issue 18: one store contract, two
engines). Each module runs in a pytest of its own with ``MAKEWATCH_TEST_ENGINE=postgres``
(tests/conftest.py: every ``Store.open`` of the module then opens a fresh database on this
session's server), so the same tests that prove the pipeline, the digest, the outbox, the
silences, the status page and the poller on SQLite prove them on PostgreSQL, with no second
copy of any test. Modules about the SQLite file itself (modes, WAL, the OS lock, a state
file replaced under a running service) or that start ``makewatch`` processes on a state
file are not in the list: they have no PostgreSQL meaning or are covered by
tests/test_replicas_e2e.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_ENGINE
from pg_fixture import PgServer, pg_server  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent

MODULES = [
    "test_alerts_e2e",  # the pipeline: decisions, outbox rows, dedup keys
    "test_actions",  # the audit trail: ON CONFLICT ... RETURNING
    "test_actions_e2e",
    "test_delivery",  # the outbox: claims, retries, parking, channel state
    "test_digest_content",  # the digest's queries (JSON fields, per-organization counts)
    "test_digest_send",  # digest claims
    "test_digest_severity",
    "test_engine_history",  # compaction: JSON rewritten in SQL
    "test_poller",  # record_progress, cursors, scenario rows
    "test_web",  # the status page and /healthz queries
    "test_windows",  # silences and maintenance windows
]


@pytest.mark.postgres
@pytest.mark.timeout(300)
@pytest.mark.skipif(TEST_ENGINE == "postgres", reason="already running on PostgreSQL")
@pytest.mark.parametrize("module", MODULES)
def test_the_module_passes_on_postgresql(module: str, pg_server: PgServer) -> None:  # noqa: F811 - fixture
    env = {
        **os.environ,
        "MAKEWATCH_TEST_ENGINE": "postgres",
        "MAKEWATCH_TEST_PG_URL": pg_server.base_url,  # this session's server, not a new one
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/{module}.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, f"{module} on PostgreSQL:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
