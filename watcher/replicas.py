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
lease, and between two renewals a holder makes at most :func:`tick_quota` requests for the
organization (its limiter's gate holds the next one until the renewal). The next holder
seeds its rate limiter with what was stored and, after a death, that quota spent at the
lease's expiry (:func:`takeover_budget`), so no 60-second window holds more than the
organization's budget, and a takeover costs the taker a few requests, not a minute.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
#: How often a request held by the quota looks again (a renewal comes every ttl/3).
QUOTA_RECHECK_S = 0.25
#: Headroom of :func:`tick_quota` over the budget's steady pace: a cycle's burst still fits.
QUOTA_HEADROOM = 2.0


def tick_quota(per_window: int, ttl_s: float) -> int:
    """Requests a holder may make for an organization between two renewals of its lease
    (every ttl/3): twice its budget's pace, so polling is not slowed, and what a taker must
    assume a dead holder spent after its last renewal."""
    return max(2, math.ceil(per_window * (ttl_s / 3) / BUDGET_WINDOW_S * QUOTA_HEADROOM))


def org_lease(organization_id: int) -> str:
    """The lease name of an organization."""
    return f"org:{organization_id}"


def default_replica_id() -> str:
    """``host:pid:random``: new at every start, so a restarted replica claims anew."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def takeover_budget(
    previous: lz.PreviousHolder | None, now: float, ttl_s: float, per_window: int
) -> list[float]:
    """The request times to count against an organization's budget when taking its lease.

    What the last holders reported (``budget``: the times stored with the last renewal or
    release, or by a taker at once; a claim keeps them). A release reports everything. A
    holder that died or froze (``holder`` is set) may have gone on after its last renewal:
    at most :func:`tick_quota` requests (its gate holds more until a renewal that never
    came), and no more than its window's budget allowed; they are counted at its lease's
    expiry, the latest moment they could have been made, so that no 60-second window holds
    more than ``per_window`` requests of the holders together. Times older than the window
    are left out.
    """
    if previous is None:
        return []
    times = sorted(float(t) for t in previous.budget)
    if previous.holder is not None and previous.renewed_at is not None:
        # renewed_at is the database server's clock; ``now`` is this replica's, read a moment
        # after the claim: the expiry moved onto this clock (a little late: the safe side).
        skew = now - previous.claimed_at if previous.claimed_at is not None else 0.0
        expiry = previous.renewed_at + ttl_s + skew
        seen = sum(1 for t in times if t > expiry - BUDGET_WINDOW_S)
        times += [expiry] * max(0, min(tick_quota(per_window, ttl_s), per_window - seen))
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
        # Per lease: service-clock time since which its requests count against tick_quota.
        self._quota_start: dict[str, float] = {}
        self._pending_start: float | None = None

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

    def gate(self, lease: lz.Lease, limiter: Any) -> Callable[[], float | None]:
        """For the organization's rate limiter (its ``gate``): refuse any request once
        ``lease`` lapsed by this replica's own clock (LeaseManager.still_held), and hold one
        while :func:`tick_quota` requests were made since the last renewal began."""

        def check() -> float | None:
            if not self.manager.still_held(lease):
                raise lz.LeaseLost(lease.name)
            since = self._quota_start.get(lease.name)
            if since is None or self.clock is None:
                return None
            if limiter.count_since(since) < tick_quota(limiter.per_window, self.ttl_s):
                return None
            return self.clock.time() + QUOTA_RECHECK_S  # until the next renewal resets it

        return check

    def quota_from_now(self, name: str) -> None:
        """A lease was (re)gained: its quota counts from now."""
        if self.clock is not None:
            self._quota_start[name] = self.clock.time()

    def before_tick(self) -> None:
        """The budgets are being handed to the manager: requests from now on belong to the
        next renewal's quota, once that renewal succeeds (:meth:`after_tick`)."""
        if self.clock is not None:
            self._pending_start = self.clock.time()

    def after_tick(self) -> None:
        """Every held lease was just renewed: their quotas count from the hand-over."""
        if self._pending_start is not None:
            for name in self.manager.held:
                self._quota_start[name] = self._pending_start

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
            self.before_tick()

        def on_change(changes: lz.Changes) -> None:
            self._apply(changes)
            publish()

        publish()
        self.before_tick()
        await lz.run(self.manager, on_change, stop, sleep=quiet_sleep, on_tick=self.after_tick)

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
