"""Injectable clocks.

Everything that reasons about time (rate limits, schedules, the simulator's scenario runs)
takes a :class:`Clock` instead of calling ``time.time()``/``asyncio.sleep()`` directly, so that
tests and benchmarks can run minutes of Make traffic in seconds (:class:`ScaledClock`) or
step time by hand (:class:`ManualClock`) without sleeping for real.

``time()`` is wall-clock epoch seconds (Make's ``x-ratelimit-reset`` and timestamps are
epoch based); ``sleep()`` waits for that many seconds *of this clock*.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def time(self) -> float:
        """Current time as epoch seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return _time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """A clock that runs ``speed`` times faster than real time from ``start``.

    Shared by the simulator and the client in a test, it lets a 60-second rate-limit window
    pass in ``60 / speed`` real seconds while both sides agree on what time it is.
    """

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = _time.time() if start is None else start
        self._t0 = _time.monotonic()

    def time(self) -> float:
        return self._start + (_time.monotonic() - self._t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """A clock that only moves when told to; sleepers wake when it passes their deadline."""

    def __init__(self, start: float = 1_782_984_000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        self.set(self._now + seconds)

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError("a ManualClock never goes backwards")
        self._now = t
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())
