"""A real PostgreSQL for tests: ``initdb`` in a temp dir, ``pg_ctl start`` on a free port.

Why not a mock: the lease and outbox claims rely on what the server does under concurrency
(row locks, ``SKIP LOCKED``, ``ON CONFLICT``), which only the server can show.

How
---
* The server binaries come from ``PATH`` or Debian's ``/usr/lib/postgresql/<v>/bin`` (the
  ``postgresql`` package, installed by ``.ci/run``).
* PostgreSQL refuses to run as root, and CI runs as root: then every server command runs as
  an unprivileged user through ``runuser -u <user> --`` (``MAKEWATCH_PG_USER``; default the
  ``postgres`` user Debian's package creates, else ``nobody``). The data directory lives in a
  fresh ``mkdtemp`` under ``/tmp`` (pytest's own temp root is 0700 root, which that user
  cannot enter), owned by that user.
* The server listens on 127.0.0.1 only, on a free port, with ``trust`` authentication (a
  throwaway cluster nobody else can reach), its socket in the data directory, fsync off.
  ``--locale=C``: text compares and sorts by code point, as in SQLite (the store's prefix
  scans and ORDER BY name must not depend on the machine's locale).
* ``MAKEWATCH_TEST_PG_URL`` points the tests at an existing server instead (each test still
  gets a database of its own).
* No binaries: the tests skip with the reason, except under ``CI`` where they fail: CI must
  run them.

One server per test session (``pg_server``); one fresh database per test (``pg_url``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PgServer", "find_pg_bin", "pg_server", "pg_url", "start_pg"]

SUPERUSER = "makewatch"


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    initdb = shutil.which("initdb")
    candidates = [Path(initdb).resolve().parent] if initdb else []
    # Debian keeps them off PATH, one directory per major version: newest first.
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in candidates:
        if all((directory / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _run_as() -> str | None:
    """The user to run the server as (None: ourselves, when we are not root)."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("MAKEWATCH_PG_USER")
    for name in ([wanted] if wanted else ["postgres", "nobody"]):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bin_dir: Path | None
    data_dir: Path | None
    user: str | None
    port: int
    base_url: str  # the maintenance database (postgres)

    def url(self, dbname: str) -> str:
        return self.base_url.rsplit("/", 1)[0] + "/" + dbname

    def _cmd(self, *argv: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(argv)

    def stop(self) -> None:
        if self.bin_dir is None or self.data_dir is None:
            return
        subprocess.run(
            self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir / "data"), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            check=False,
            timeout=30,
            env=_server_env(),
        )
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _server_env() -> dict[str, str]:
    """The environment of the server's commands: this one without libfaketime.

    The suite is also run at a faked hour (``faketime ... pytest``, which preloads
    libfaketime into every child): the database server is infrastructure, like a real one,
    not code under test, and its timers (deadlock_timeout, statement and lock timeouts) stop
    working under libfaketime, which hangs the tests that rely on them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKETIME")}
    preload = " ".join(p for p in env.get("LD_PRELOAD", "").split() if "faketime" not in p)
    if preload:
        env["LD_PRELOAD"] = preload
    else:
        env.pop("LD_PRELOAD", None)
    return env


def start_pg() -> PgServer:
    """Start a throwaway cluster (see the module docstring); the caller stops it."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl, postgres)")
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="makewatch-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    port = _free_port()
    server = PgServer(bin_dir, root, user, port, f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres")

    def run(*argv: str) -> None:
        done = subprocess.run(
            server._cmd(*argv), capture_output=True, text=True, check=False, timeout=120, env=_server_env()
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "-t", "60", "start")
    except BaseException:
        server.stop()
        raise
    return server


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason} (apt-get install postgresql, or set MAKEWATCH_TEST_PG_URL)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the whole test session."""
    external = os.environ.get("MAKEWATCH_TEST_PG_URL")
    if external:
        yield PgServer(None, None, None, 0, external)
        return
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the driver is not installed ({exc}); pip install -e '.[test]'")
    if find_pg_bin() is None:
        _unavailable("initdb/pg_ctl/postgres not on PATH nor under /usr/lib/postgresql/*/bin")
    server = start_pg()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg_server.base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.url(name)
    finally:
        with psycopg.connect(pg_server.base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
