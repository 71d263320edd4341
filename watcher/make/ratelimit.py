"""Per-organization request budget.

Why not a token/leaky bucket (aiolimiter): a bucket of capacity N refilled at N per minute
lets through N at once and then N more over the next minute, i.e. up to 2N requests in one
60-second window. Make counts requests per organization per minute, and the budget must hold
"counted over any 60-second window" (DESIGN.md, Invariants). A sliding log of the last N
requests gives exactly that guarantee, is a few lines, and, unlike the ``limits`` package,
takes an injected clock and can be awaited.

What counts is when a request *reaches Make*, which we never see: only that it is after we
started sending it and before its response came back. A loaded machine, a connection pool
or a slow TLS handshake can put seconds between the two, so a log of send times lets
requests sent a minute apart arrive in one of Make's windows (seen: 19 and 26 against a
budget of 15). Hence :meth:`SlidingWindowLimiter.slot`: a request holds its place from
before it is sent until its response is in, and leaves the window ``window_s`` after that.
Proof sketch: if N+1 requests arrived within ``window_s``, the last of them to be granted was
granted before its own arrival, while every other was in flight or had completed after the
first arrival, i.e. less than ``window_s`` earlier: all N were still counted, so it could not
have been granted.

``margin_s`` widens the window a little for the difference between our clock and Make's.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from watcher.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class SlidingWindowLimiter:
    """At most ``per_window`` requests in any ``window_s`` (+``margin_s``) of ``clock`` time.

    A request counts while it is in flight and for the window after it completed
    (:meth:`slot`); :meth:`acquire` counts an instant. Fair: waiters are served in arrival
    order. ``pause_until(t)`` stops all grants until ``t`` (after a 429, or when Make says no
    requests remain in its window).
    """

    def __init__(
        self,
        per_window: int,
        *,
        window_s: float = 60.0,
        margin_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        self._limit = per_window
        self.window_s = window_s
        self.margin_s = margin_s
        self.clock = clock or SystemClock()
        self._done: list[float] = []  # completion times still in the window, sorted
        self._in_flight = 0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.granted = 0
        #: Asked right before each grant is handed out (watcher.replicas, for a replica's
        #: lease on the organization): it raises to refuse the request, returns a clock time
        #: to hold it until, or None to let it go. None: always granted.
        self.gate: Callable[[], float | None] | None = None

    @property
    def per_window(self) -> int:
        return self._limit

    def set_limit(self, per_window: int) -> None:
        """Change the budget (e.g. once ``license.apiLimit`` is known)."""
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        self._limit = per_window
        self._changed.set()

    def lower_limit(self, per_window: int) -> None:
        """Lower the budget, never raise it (for limits learnt from response headers)."""
        if 1 <= per_window < self._limit:
            log.info("lowering request budget from %d to %d per minute", self._limit, per_window)
            self._limit = per_window

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, t: float) -> None:
        """Grant nothing before clock time ``t`` (extends, never shortens, a pause)."""
        if t > self._paused_until:
            self._paused_until = t

    @property
    def in_flight(self) -> int:
        """Requests granted by :meth:`slot` whose response is not in yet."""
        return self._in_flight

    def recent(self) -> list[float]:
        """What counts against the budget now, oldest first: completion times in the window,
        and each request in flight as if it completed now (what a replica hands over with the
        organization's lease: watcher.replicas; a request in flight reaches Make after now)."""
        now = self.clock.time()
        self._expire(now)
        return list(self._done) + [now] * self._in_flight

    def seed(self, completions: list[float]) -> None:
        """Count requests another process made (the previous holder of the organization's
        lease) as if this one had completed them at those times."""
        for t in completions:
            bisect.insort(self._done, float(t))
        self._expire(self.clock.time())
        self._changed.set()

    def count_since(self, t: float) -> int:
        """Requests completed after clock time ``t`` (still in the window) or in flight."""
        self._expire(self.clock.time())
        return len(self._done) - bisect.bisect_right(self._done, t) + self._in_flight

    def used(self) -> int:
        """Requests counting against the budget now: in flight or completed in the window."""
        self._expire(self.clock.time())
        return len(self._done) + self._in_flight

    def _expire(self, now: float) -> None:
        horizon = now - (self.window_s + self.margin_s)
        cut = bisect.bisect_right(self._done, horizon)
        if cut:
            del self._done[:cut]

    async def _grant(self) -> None:
        """Wait until one more request fits in the budget (the caller then counts it)."""
        async with self._lock:
            while True:
                now = self.clock.time()
                if now < self._paused_until:
                    await self.clock.sleep(self._paused_until - now)
                    continue
                self._expire(now)
                over = len(self._done) + self._in_flight - self._limit
                if over < 0:
                    hold = self.gate() if self.gate is not None else None
                    if hold is not None and hold > now:
                        await self._wait(hold - now)
                        continue
                    self.granted += 1
                    return
                if over < len(self._done):
                    # Room comes back when the (over+1)-th oldest completion leaves the window.
                    wake = self._done[over] + self.window_s + self.margin_s
                    await self._wait(max(wake - now, 0.001))
                else:
                    # Every counted request is still in flight: only a response (or a higher
                    # limit) can change that.
                    await self._wait(None)

    async def _wait(self, seconds: float | None) -> None:
        """Sleep ``seconds`` of clock time (forever if None), or until a slot is released or
        the limit changes, whichever comes first."""
        self._changed.clear()
        waiters = [asyncio.ensure_future(self._changed.wait())]
        if seconds is not None:
            waiters.append(asyncio.ensure_future(self.clock.sleep(seconds)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def acquire(self) -> None:
        """Wait until one more request fits in the budget, then count it at this instant.

        For something that happens at once; a request that takes time should hold a
        :meth:`slot` instead.
        """
        await self._grant()
        bisect.insort(self._done, self.clock.time())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request's place in the budget from before it is sent until its response
        is in (or it failed or was cancelled); it then counts for a window from that moment."""
        await self._grant()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            bisect.insort(self._done, self.clock.time())
            self._changed.set()
