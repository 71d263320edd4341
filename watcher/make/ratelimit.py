"""Per-organization request budget.

Why not a token/leaky bucket (aiolimiter): a bucket of capacity N refilled at N per minute
lets through N at once and then N more over the next minute, i.e. up to 2N requests in one
60-second window. Make counts requests per organization per minute, and the budget must hold
"counted over any 60-second window" (DESIGN.md, Invariants). A sliding log of the last N
grant times gives exactly that guarantee, is a few lines, and, unlike the ``limits``
package, takes an injected clock and can be awaited.

A ``margin_s`` widens the window a little so that jitter between the moment a request is
granted here and the moment it reaches Make cannot put N+1 requests in one of Make's windows.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from watcher.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class SlidingWindowLimiter:
    """At most ``per_window`` grants in any ``window_s`` (+``margin_s``) of ``clock`` time.

    Fair: waiters are served in arrival order. ``pause_until(t)`` stops all grants until
    ``t`` (after a 429, or when Make says no requests remain in its window).
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
        self._grants: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.granted = 0

    @property
    def per_window(self) -> int:
        return self._limit

    def set_limit(self, per_window: int) -> None:
        """Change the budget (e.g. once ``license.apiLimit`` is known)."""
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        self._limit = per_window

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

    def used(self) -> int:
        """Grants in the current window."""
        self._expire(self.clock.time())
        return len(self._grants)

    def _expire(self, now: float) -> None:
        horizon = now - (self.window_s + self.margin_s)
        while self._grants and self._grants[0] <= horizon:
            self._grants.popleft()

    async def acquire(self) -> None:
        """Wait until one more request fits in the budget, then count it."""
        async with self._lock:
            while True:
                now = self.clock.time()
                if now < self._paused_until:
                    await self.clock.sleep(self._paused_until - now)
                    continue
                self._expire(now)
                if len(self._grants) < self._limit:
                    self._grants.append(now)
                    self.granted += 1
                    return
                # Wait until the oldest grant still counting leaves the window.
                idx = len(self._grants) - self._limit
                wake = self._grants[idx] + self.window_s + self.margin_s
                await self.clock.sleep(max(wake - now, 0.001))
