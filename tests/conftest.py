"""Shared fixtures: the bundled Make simulator on a real socket, and fast clocks."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings

from watcher.clock import ScaledClock, SystemClock
from watcher.make import MakeClient, SlidingWindowLimiter
from watcher.simulator import World, create_app
from watcher.store import Store

START = 1_790_000_000.0  # 2026-09-21T14:13:20Z

# Hypothesis (the fuzz tests). "ci", the default: the same examples on every run (fixed
# seeds), no deadline (a loaded 2-core runner must not flake), no example database (nothing
# written to .hypothesis/), few enough examples that the fuzz modules take seconds.
# HYPOTHESIS_PROFILE=thorough explores many more, with fresh random seeds, locally.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    derandomize=False,
    deadline=None,
    database=None,
    max_examples=3000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@contextmanager
def log_messages(level: int = logging.DEBUG) -> Iterator[list[str]]:
    """The messages logged meanwhile, from any logger. For tests under hypothesis, whose
    examples cannot share pytest's function-scoped caplog."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, root = Collect(level), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(old_level, level) if old_level else level)
    try:
        yield messages
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@dataclass
class Sim:
    world: World
    base_url: str
    session: aiohttp.ClientSession

    def client(self, token: str, **kwargs) -> MakeClient:
        kwargs.setdefault("clock", self.world.clock)
        kwargs.setdefault("max_attempts", 3)
        return MakeClient(self.session, self.base_url, token, **kwargs)

    def requests(self, org_id: int | None = None, path_prefix: str = ""):
        return [
            r
            for r in self.world.requests
            if (org_id is None or r.org_id == org_id) and r.path.startswith(path_prefix)
        ]


@pytest.fixture
def fast_clock() -> ScaledClock:
    """1000x real time: a 60 s rate-limit window passes in 60 ms, backoffs in milliseconds."""
    return ScaledClock(speed=1000.0, start=START)


@pytest.fixture
async def start_sim(aiohttp_server) -> AsyncIterator[Callable[[World], Awaitable[Sim]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(world: World) -> Sim:
        server = await aiohttp_server(create_app(world))
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Sim(world, str(server.make_url("/api/v2")), session)

    yield start
    for s in sessions:
        await s.close()


def limiter(per_minute: int, clock, margin_s: float = 1.0) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(per_minute, clock=clock, margin_s=margin_s)


# --- makewatch as a subprocess, the simulator in a thread that outlives it -----------------


class AppThread:
    """An aiohttp application served on 127.0.0.1 from a thread of its own, so that it
    outlives the subprocesses a test starts and kills, and answers while the test blocks."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        # A handler still asleep (a stand-in told to be slow) must not hold the test up.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self.runner = runner
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self) -> Self:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class SimThread(AppThread):
    """The simulator in a thread of its own, so it outlives every killed poller."""

    def __init__(self, world: World) -> None:
        super().__init__(create_app(world))
        self.world = world

    def inject_error(self, scenario_id: int, n: int) -> str:
        body = json.dumps({"scenarioId": scenario_id, "status": 3, "errorName": "DataError", "errorMessage": f"row {n}"}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_sim/runs", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)["scenarioLog"]["id"]


def makewatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "watcher.cli", *args]


def start_run(cfg: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``makewatch run`` as a subprocess, its stderr kept for :func:`stop`."""
    return subprocess.Popen(
        makewatch("run", "--config", str(cfg)), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def cycles(db: Path) -> int:
    """Cycles a makewatch has recorded in the state file ``db`` (0 before the first)."""
    if not db.exists():
        return 0
    with Store.open(db) as store:
        return store.read_sync(lambda d: d["cycles"].count if d["cycles"].exists() else 0)


def wait_until_running(proc: subprocess.Popen[str], db: Path, timeout_s: float = 20.0) -> int:
    """Wait until ``proc`` has completed a cycle; return the cycle count then."""
    deadline = time.monotonic() + timeout_s
    start = cycles(db)
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run exited early: {proc.communicate()[1]}"
        now = cycles(db)
        if now > start:
            return now
        time.sleep(0.1)
    raise AssertionError(f"no cycle within {timeout_s} s")


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, as systemd and Docker stop it: it must exit 0; returns its stderr."""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    return stderr


@pytest.fixture
def service(tmp_path: Path):
    """A simulated organization and a config polling it every second: (cfg, db, env)."""
    world = World(seed=11, clock=SystemClock())
    org = world.add_organization(name="Solo", plan="pro")
    team = world.add_team(org.id, name="T")
    token = world.add_token(org_ids=[org.id])
    world.add_scenario(team.id, name="s", first_run_at=time.time() + 10**8)
    db = tmp_path / "state.db"
    with SimThread(world) as sim:
        cfg = tmp_path / "makewatch.toml"
        cfg.write_text(
            f'[[organizations]]\nname = "Solo"\nbase_url = "http://127.0.0.1:{sim.port}/api/v2"\n'
            f'organization_id = {org.id}\ntoken_env = "TOK"\n'
            f'[state]\ndb_path = "{db}"\n[polling]\npoll_interval_s = 1.0\n'
            '[web]\nlisten = "127.0.0.1:0"\n'
        )
        yield cfg, db, {**os.environ, "TOK": token}


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"makewatch_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def json_paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and indexes) into a JSON-like value, the root first: where the fuzz
    tests put their mutations."""
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from json_paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from json_paths(v, (*at, i))


# MAKEWATCH_TEST_ENGINE=postgres runs a test module on PostgreSQL instead of SQLite: every
# Store.open of the test process opens a fresh database on the session's server (the same
# path, the same database, within a test), so a module written against the store's contract
# proves it on both engines. .ci/run lists the modules it runs this way; a module that tests
# the SQLite file itself (modes, WAL, locks) is not among them.
TEST_ENGINE = os.environ.get("MAKEWATCH_TEST_ENGINE", "sqlite")

if TEST_ENGINE == "postgres":
    from pg_fixture import pg_server  # noqa: F401 - the session's server, as a fixture

    @pytest.fixture(autouse=True)
    def _stores_on_postgres(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        import uuid

        import psycopg

        from watcher.pgstore import PgStore

        server = request.getfixturevalue("pg_server")
        made: dict[str, str] = {}

        def open_on_postgres(path: str | os.PathLike[str], **kwargs: Any) -> PgStore:
            key = str(Path(path).absolute())
            if key not in made:
                name = "t_" + uuid.uuid4().hex[:16]
                with psycopg.connect(server.base_url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                made[key] = name
            kwargs.pop("busy_timeout_s", None)
            return PgStore.open(server.url(made[key]), **kwargs)

        monkeypatch.setattr(Store, "open", staticmethod(open_on_postgres))
        yield
        with psycopg.connect(server.base_url, autocommit=True) as conn:
            for name in made.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
