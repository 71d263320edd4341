"""Shared fixtures: the bundled Make simulator on a real socket, and fast clocks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from watcher.clock import ScaledClock
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
