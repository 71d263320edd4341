"""One replica among several on one PostgreSQL database (issue 18, docs/replicas-plan.md).

On SQLite there is one process and none of this runs. On PostgreSQL every ``makewatch run``
is a replica: :class:`Replica` holds leases (watcher.leases) on

* ``org:<organization_id>``, one per organization: only its holder polls it, so each
  organization's API budget lives in exactly one replica; and
* ``alerts``: only its holder decides, delivers, sends digests and prunes, so two replicas
  never decide on the same events or send the same row at once.

Every write made for a lease goes through a :class:`FencedStore`: its transaction starts
with the lease check (``watcher.leases.fence``), so a replica that lost a lease while it was
paused or cut off cannot commit cursors, events or sent marks for it when it wakes up
(``LeaseLost``: the write is rolled back, the task stops quietly and waits for the lease).

Budget across a takeover: each renewal stores the holder's recent request times with the
lease; the next holder seeds its rate limiter with them and assumes the previous holder went
on at the same pace until its lease expired (:func:`takeover_budget`), so no 60-second window
holds more than the organization's budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from watcher import leases as lz
from watcher.clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

ALERTS_LEASE = "alerts"
BUDGET_WINDOW_S = 60.0


def org_lease(organization_id: int) -> str:
    """The lease name of an organization."""
    return f"org:{organization_id}"


def default_replica_id() -> str:
    """``host:pid:random``: new at every start, so a restarted replica claims anew."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def takeover_budget(previous: lz.PreviousHolder | None, now: float, ttl_s: float) -> list[float]:
    """The request times to count against an organization's budget when taking its lease.

    What the previous holder reported at its last renewal (``budget``), plus, when it did not
    hand the lease over (it died or froze: ``holder`` is set), the same pace again from that
    renewal until its lease expired: it may have gone on polling meanwhile. Times older than
    the budget window are left out.
    """
    if previous is None:
        return []
    times = sorted(float(t) for t in previous.budget)
    if previous.holder is not None and previous.renewed_at is not None and times:
        recent = [t for t in times if t > previous.renewed_at - BUDGET_WINDOW_S]
        pace = len(recent) / BUDGET_WINDOW_S  # requests per second over the last window
        until = min(previous.renewed_at + ttl_s, now)
        n = int(pace * max(0.0, until - previous.renewed_at))
        step = (until - previous.renewed_at) / n if n else 0.0
        times += [previous.renewed_at + step * (i + 1) for i in range(n)]
    return [t for t in times if t > now - BUDGET_WINDOW_S]


class FencedStore:
    """``store`` whose writes are made under ``lease``: each write transaction starts with
    the lease check, and raises :class:`watcher.leases.LeaseLost` (rolling back) once the
    lease is gone. Reads and everything else go to ``store`` as they are."""

    def __init__(self, store: Any, lease: lz.Lease, now: Callable[[], float | None] = lambda: None) -> None:
        self._store = store
        self.lease = lease
        self._now = now

    def _fenced(self, fn: Callable[[Any], T]) -> Callable[[Any], T]:
        def tx(db: Any) -> T:
            lz.fence(db.connection, self.lease, self._now())
            return fn(db)

        return tx

    async def write(self, fn: Callable[[Any], T]) -> T:
        return await self._store.write(self._fenced(fn))

    def write_sync(self, fn: Callable[[Any], T]) -> T:
        return self._store.write_sync(self._fenced(fn))

    async def check_lease(self) -> None:
        """Raise :class:`watcher.leases.LeaseLost` unless the lease is still this replica's
        (a fenced transaction that writes nothing)."""
        await self.write(lambda db: None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Replica:
    """This process's leases and what changes them; the service asks it what to run."""

    def __init__(
        self,
        url: str,
        names: Sequence[str],
        *,
        replica_id: str | None = None,
        ttl_s: float = 30.0,
        clock: Clock | None = None,
        lease_clock: Callable[[], float] | None = None,
    ) -> None:
        self.id = replica_id or default_replica_id()
        self.names = sorted(set(names))
        self.clock = clock
        self.manager = lz.LeaseManager(url, self.id, ttl_s=ttl_s, clock=lease_clock)
        #: The previous holder of each name this replica took, until the service used it.
        self.previous: dict[str, lz.PreviousHolder] = {}
        self._changed = asyncio.Event()
        self.started = False

    @property
    def ttl_s(self) -> float:
        return self.manager.ttl_s

    def lease(self, name: str) -> lz.Lease | None:
        """The fencing token for ``name`` while this replica holds it."""
        return self.manager.lease(name)

    def fence_now(self) -> float | None:
        """``now`` for the fence: the injected lease clock (tests), else the server's."""
        return self.manager.clock() if self.manager.clock else None

    def fenced(self, store: Any, lease: lz.Lease) -> FencedStore:
        return FencedStore(store, lease, self.fence_now)

    @property
    def counters(self) -> lz.LeaseCounters:
        return self.manager.counters

    async def start(self) -> None:
        """Register this replica and take a first share, before any polling starts."""
        await self.manager.open()
        await self.manager.register(self.names)
        self._apply(await self.manager.tick())
        self.started = True

    def _apply(self, changes: lz.Changes) -> None:
        self.previous.update(changes.previous)
        for name in changes.lost:
            self.previous.pop(name, None)
        if changes.gained or changes.lost:
            log.info(
                "replica %s: leases gained %s, lost %s; holding %d of %d",
                self.id, sorted(changes.gained), sorted(changes.lost), len(changes.held), len(self.names),
            )
            self._changed.set()

    async def wait_change(self, stop: asyncio.Event, *also: asyncio.Future[Any], timeout_s: float | None = None) -> None:
        """Until a lease is gained or lost, ``stop`` is set, one of ``also`` ends, or
        ``timeout_s`` of the service clock passed."""
        self._changed.clear()
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._changed.wait()),
            asyncio.ensure_future(stop.wait()),
        }
        if timeout_s is not None and self.clock is not None:
            waits.add(asyncio.ensure_future(self.clock.sleep(timeout_s)))
        owned = set(waits)
        waits |= set(also)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in owned:
                task.cancel()

    async def run(self, stop: asyncio.Event, publish: Callable[[], None] = lambda: None) -> None:
        """Renew and rebalance every third of the TTL until ``stop``; ``publish`` is called
        before each tick (it hands the budgets to the manager: :meth:`LeaseManager.set_budget`)."""

        async def sleep(seconds: float) -> None:
            if self.clock is None:
                await asyncio.wait_for(stop.wait(), seconds)
                return
            waits = {asyncio.ensure_future(self.clock.sleep(seconds)), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()

        async def quiet_sleep(seconds: float) -> None:
            try:
                await sleep(seconds)
            except TimeoutError:
                pass
            publish()  # before the next tick renews: the budgets travel with the renewal

        def on_change(changes: lz.Changes) -> None:
            self._apply(changes)
            publish()

        publish()
        await lz.run(self.manager, on_change, stop, sleep=quiet_sleep)

    async def stop(self) -> None:
        """SIGTERM: hand every lease over (after the last write), then disconnect."""
        try:
            if self.started:
                released = await self.manager.release_all()
                log.info("replica %s: released %d lease(s)", self.id, len(released))
        finally:
            await self.manager.close()

    async def holders(self) -> dict[str, tuple[str | None, int, float | None]]:
        return await self.manager.holders()
