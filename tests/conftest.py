"""Shared fixtures: the bundled Make simulator on a real socket, and fast clocks."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp import web

from watcher.clock import ScaledClock, SystemClock
from watcher.make import MakeClient, SlidingWindowLimiter
from watcher.simulator import World, create_app

START = 1_790_000_000.0  # 2026-09-21T14:13:20Z


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


class SimThread:
    """The simulator in a thread of its own, so it outlives every killed poller."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(create_app(self.world), access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self.runner = runner
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self) -> SimThread:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def inject_error(self, scenario_id: int, n: int) -> str:
        body = json.dumps({"scenarioId": scenario_id, "status": 3, "errorName": "DataError", "errorMessage": f"row {n}"}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_sim/runs", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)["scenarioLog"]["id"]


def makewatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "watcher.cli", *args]


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
