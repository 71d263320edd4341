"""Leases: which replica polls which organization (issue 18, docs/replicas-plan.md §3).

One row per name (``org:<id>``, ``channel:<name>``) in ``leases``: ``holder`` (a replica id,
NULL when free), ``generation`` (+1 at every claim: the fencing token) and ``expires_at``.
Every replica runs :func:`run`, which calls :meth:`LeaseManager.tick` every ``ttl/3``::

    heartbeat ──► renew what I hold ──► count live replicas ──► plan() ──► release / claim
                  (a name missing                               fair share: ceil(names/live)
                   from the answer is lost)

Contract for the caller (the service):

* Poll a name only while it is in ``Changes.held``; stop at once when it shows up in
  ``Changes.lost`` (lost to expiry, to a takeover, or released to rebalance).
* Run every write made under a lease through :func:`fence` first, in the same transaction:
  the ``FOR SHARE`` row lock keeps the lease from changing hands until that write commits,
  and a stale generation or an expired lease raises :class:`LeaseLost` (roll back, stop that
  name quietly). The fence, not the manager's in-memory view, is what makes writes safe.
* ``Changes.previous`` carries the former holder's request timestamps (``set_budget``) so the
  taker's rate limiter starts where the dead or departing holder left it.

One clock: statements take ``now`` as a parameter only when a clock is injected (tests);
otherwise the database server's clock decides, so skew between replicas cannot steal a lease.
Nothing here waits on a lock: claims and renewals use ``FOR UPDATE SKIP LOCKED``, so a lease
row held by a write in flight (its fence) is skipped this tick instead of stalling renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

log = logging.getLogger(__name__)

__all__ = [
    "Changes",
    "Lease",
    "LeaseCounters",
    "LeaseLost",
    "LeaseManager",
    "Plan",
    "PreviousHolder",
    "fair_share",
    "fence",
    "m016_leases",
    "plan",
    "run",
]

# The database's clock unless a clock is injected: one clock for every replica.
NOW = "COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp()))"

# First retry after a failed tick (doubling up to the tick interval): a database restart
# should not cost a whole interval, a database that is down should not be hammered.
RETRY_FIRST_S = 1.0


# ------------------------------------------------------------------------------ schema


def m016_leases(db: Any) -> None:
    """Schema v16: ``leases`` (one row per organization or channel, see the module docstring)
    and ``replicas`` (one row per running replica, its heartbeat counts it as live).

    Plain SQL through ``db.execute`` so that one function runs on sqlite-utils' Database and
    on a PostgreSQL connection (BIGINT and DOUBLE PRECISION have the right affinities on
    SQLite). ``budget_json``: the holder's API request timestamps of the last minute.
    ``names_hash``: of the names a replica was configured with (mismatches are reported)."""
    db.execute(
        "CREATE TABLE leases ("
        " name TEXT PRIMARY KEY,"
        " holder TEXT,"
        " generation BIGINT NOT NULL DEFAULT 0,"
        " expires_at DOUBLE PRECISION,"
        " renewed_at DOUBLE PRECISION,"
        " budget_json TEXT)"
    )
    db.execute(
        "CREATE TABLE replicas ("
        " id TEXT PRIMARY KEY,"
        " host TEXT,"
        " pid BIGINT,"
        " started_at DOUBLE PRECISION,"
        " heartbeat_at DOUBLE PRECISION,"
        " names_hash TEXT)"
    )


# ------------------------------------------------------------------------------ planner


@dataclass(frozen=True)
class Plan:
    claim: list[str]
    release: list[str]


def fair_share(total: int, live: int) -> int:
    """How many names each of ``live`` replicas should hold: ``ceil(total / live)``."""
    return -(-total // max(1, live))


def plan(
    names: Iterable[str],
    held: Collection[str],
    free_or_expired: Collection[str],
    live_replicas: Collection[str],
    me: str,
    holdings: Mapping[str, int] | None = None,
) -> Plan:
    """What replica ``me`` should claim and release this tick (pure).

    Claim up to the fair share from ``free_or_expired``; when holding more than share + 1,
    release down to the share (releasing only the excess above share + 1 would leave a
    2-replica split of 30 stuck at 16/14 forever; the one-name band is what keeps a replica
    from giving up a name over rounding). The band gives way when another live replica holds
    fewer than ``total // live`` (``holdings``: names held per live replica): without that,
    3 replicas on 5 names could settle at 3/2/0, one of them idle for good. Names held but
    no longer configured are released.

    Order: the sorted names rotated to start at ``rank(me) / live`` of the way along, rank
    among the sorted live ids, so replicas that start together reach for different names,
    and what one releases is what the newcomer prefers."""
    order = sorted(set(names))
    replicas = sorted(set(live_replicas) | {me})
    if not order:
        return Plan(claim=[], release=sorted(held))
    share = fair_share(len(order), len(replicas))
    start = replicas.index(me) * len(order) // len(replicas)
    rank = {name: (i - start) % len(order) for i, name in enumerate(order)}
    mine = sorted((n for n in held if n in rank), key=rank.__getitem__)
    release = sorted(n for n in held if n not in rank)
    floor = len(order) // len(replicas)
    starving = any(n < floor for rid, n in (holdings or {}).items() if rid != me and rid in replicas)
    if len(mine) > share + 1 or (starving and len(mine) > share):
        release += mine[share:]
        return Plan(claim=[], release=release)
    want = share - len(mine)
    candidates = sorted((n for n in free_or_expired if n in rank and n not in held), key=rank.__getitem__)
    return Plan(claim=candidates[: max(0, want)], release=release)


# ------------------------------------------------------------------------------ fencing


@dataclass(frozen=True)
class Lease:
    """What a write is made under: the name, this replica, and the generation it claimed."""

    name: str
    holder: str
    generation: int


class LeaseLost(Exception):
    """The write's lease is no longer this replica's: roll back, nothing of it is kept. Not a
    crash: the organization has (or will have) another holder; stop its task quietly."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lease {name} is no longer held")
        self.name = name


FENCE = f"""
SELECT 1 FROM leases
 WHERE name = %(name)s AND holder = %(holder)s AND generation = %(gen)s AND expires_at > {NOW}
   FOR SHARE
"""


def fence(cursor_or_conn: Any, lease: Lease, now: float | None = None) -> None:
    """First statement of a store write transaction under ``lease`` (sync psycopg connection
    or cursor, inside the transaction). The ``FOR SHARE`` lock holds the row until COMMIT, so
    a takeover cannot slip between this check and the commit. Raises :class:`LeaseLost`.

    On SQLite (sqlite3 or sqlite-utils) a no-op: one process, held by the OS lock."""
    if isinstance(cursor_or_conn, sqlite3.Connection | sqlite3.Cursor) or isinstance(
        getattr(cursor_or_conn, "conn", None), sqlite3.Connection
    ):
        return
    params = {"name": lease.name, "holder": lease.holder, "gen": lease.generation, "now": now}
    if cursor_or_conn.execute(FENCE, params).fetchone() is None:
        raise LeaseLost(lease.name)


# ------------------------------------------------------------------------------ lease SQL

HEARTBEAT = f"""
INSERT INTO replicas (id, heartbeat_at) VALUES (%(me)s, {NOW})
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
RETURNING heartbeat_at
"""
REGISTER_REPLICA = f"""
INSERT INTO replicas (id, host, pid, started_at, heartbeat_at, names_hash)
VALUES (%(me)s, %(host)s, %(pid)s, {NOW}, {NOW}, %(hash)s)
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
       heartbeat_at = excluded.heartbeat_at, names_hash = excluded.names_hash
"""
# Sorted: concurrent ON CONFLICT DO NOTHING inserts in different orders deadlock (§5).
REGISTER_NAMES = """
INSERT INTO leases (name) SELECT n FROM unnest(%(names)s::text[]) AS n ORDER BY n
ON CONFLICT (name) DO NOTHING
"""
# Replicas dead for ten TTLs: their rows only clutter /healthz (ids are new at every start).
PRUNE_REPLICAS = f"DELETE FROM replicas WHERE heartbeat_at < {NOW} - 10 * %(ttl)s AND id <> %(me)s"
# Live replicas and how many of the names each holds now.
LIVE = f"""
SELECT r.id, count(l.name) FROM replicas r
  LEFT JOIN leases l ON l.holder = r.id AND l.expires_at > {NOW} AND l.name = ANY(%(names)s)
 WHERE r.heartbeat_at > {NOW} - %(ttl)s
 GROUP BY r.id ORDER BY r.id
"""
# Claimable: free, expired, or recorded as mine though I do not know it (a claim whose answer
# was lost when a tick was cut short): claimed again under a new generation, not left idle.
CLAIMABLE = f"(holder IS NULL OR holder = %(me)s OR expires_at IS NULL OR expires_at <= {NOW})"
FREE = f"SELECT name FROM leases WHERE name = ANY(%(names)s) AND {CLAIMABLE}"
# Renew by the holder of this very generation while still valid (an expired lease is lost
# even if nobody took it yet). SKIP LOCKED: a row under a fence (a write in flight) is skipped,
# not waited for; STILL_MINE then tells a skipped name from a lost one.
RENEW = f"""
WITH mine AS (
  SELECT l.name, u.budget FROM leases l
    JOIN unnest(%(names)s::text[], %(gens)s::bigint[], %(budgets)s::text[]) AS u(name, gen, budget)
      ON l.name = u.name AND l.generation = u.gen
   WHERE l.holder = %(me)s AND l.expires_at > {NOW}
     FOR UPDATE OF l SKIP LOCKED
)
UPDATE leases AS l SET expires_at = {NOW} + %(ttl)s, renewed_at = {NOW},
       budget_json = COALESCE(mine.budget, l.budget_json)
  FROM mine WHERE l.name = mine.name
RETURNING l.name, l.generation
"""
STILL_MINE = f"""
SELECT l.name FROM leases l
  JOIN unnest(%(names)s::text[], %(gens)s::bigint[]) AS u(name, gen)
    ON l.name = u.name AND l.generation = u.gen
 WHERE l.holder = %(me)s AND l.expires_at > {NOW}
"""
# The CTE reads the previous holder's row before the UPDATE overwrites it: the taker seeds its
# rate limiter with the budget across the takeover. FOR UPDATE re-checks the WHERE on the
# latest row version, so a name claimed by another replica meanwhile is not claimed twice.
CLAIM = f"""
WITH candidates AS (
  SELECT name, holder, renewed_at, budget_json FROM leases
   WHERE name = ANY(%(names)s) AND {CLAIMABLE}
   ORDER BY name
   LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
)
UPDATE leases AS l SET holder = %(me)s, generation = l.generation + 1,
       expires_at = {NOW} + %(ttl)s, renewed_at = {NOW}
  FROM candidates c WHERE l.name = c.name
RETURNING l.name, l.generation, c.holder, c.renewed_at, c.budget_json, {NOW}
"""
# Release keeps renewed_at and the budget for the next holder; expires_at = now: free at once.
# Rebalancing skips a row under a fence (released next tick); release_all waits for it.
_RELEASE = f"""
WITH mine AS (
  SELECT l.name, u.budget FROM leases l
    JOIN unnest(%(names)s::text[], %(budgets)s::text[]) AS u(name, budget) ON l.name = u.name
   WHERE l.holder = %(me)s
     FOR UPDATE OF l SKIP_LOCKED
)
UPDATE leases AS l SET holder = NULL, expires_at = {NOW}, renewed_at = {NOW},
       budget_json = COALESCE(mine.budget, l.budget_json)
  FROM mine WHERE l.name = mine.name
RETURNING l.name
"""
RELEASE_SKIPPING = _RELEASE.replace("SKIP_LOCKED", "SKIP LOCKED")
RELEASE_WAITING = _RELEASE.replace("SKIP_LOCKED", "")
HOLDERS = "SELECT name, holder, generation, expires_at FROM leases ORDER BY name"


# ------------------------------------------------------------------------------ manager


@dataclass(frozen=True)
class PreviousHolder:
    """Who held a name before this replica claimed it (None: it had been released)."""

    holder: str | None
    renewed_at: float | None  # the database server's clock
    budget: list[float]  # request times, the clocks of the replicas that made them
    claimed_at: float | None = None  # the server's clock when this replica claimed it


@dataclass(frozen=True)
class Changes:
    gained: dict[str, int] = field(default_factory=dict)  # name -> generation
    lost: set[str] = field(default_factory=set)  # stop polling these (lost or released)
    held: dict[str, int] = field(default_factory=dict)  # everything held after this tick
    previous: dict[str, PreviousHolder] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.gained or self.lost)


@dataclass
class LeaseCounters:
    """Lease changes since start, for /metrics (monotonic counters)."""

    gained: int = 0
    lost: int = 0  # expired, taken over, or not renewable (database unreachable)
    released: int = 0  # handed over: rebalancing and release_all
    taken_over: int = 0  # gained from another replica whose lease had expired


class LeaseManager:
    """One replica's leases, on its own autocommit ``AsyncConnection``: renewals never queue
    behind the store's writes. Not safe for concurrent use: :func:`run` is its only caller."""

    def __init__(self, url: str, replica_id: str, ttl_s: float = 30.0, clock: Callable[[], float] | None = None) -> None:
        self.url = url
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self.clock = clock
        self.counters = LeaseCounters()
        self._conn: Any = None
        self._names: list[str] = []
        self._held: dict[str, int] = {}
        # Local time (the injected clock, else monotonic) after which a held name must be
        # treated as lost even if the database cannot say so: set before each renewal is sent.
        self._deadline: dict[str, float] = {}
        self._budgets: dict[str, str] = {}

    @property
    def held(self) -> dict[str, int]:
        return dict(self._held)

    def lease(self, name: str) -> Lease | None:
        """The fencing token for writes about ``name``, or None when not held."""
        gen = self._held.get(name)
        return None if gen is None else Lease(name, self.replica_id, gen)

    def still_held(self, lease: Lease) -> bool:
        """``lease`` is still this replica's by its own clock: held in that generation and
        its last renewal less than a TTL ago. Checked before every request to Make, so a
        replica waking from a pause does not spend an organization's budget another replica
        holds now (the database would refuse its writes; only this stops its requests)."""
        return self._held.get(lease.name) == lease.generation and self._deadline.get(lease.name, 0.0) > self.local_time()

    def local_time(self) -> float:
        return self.clock() if self.clock else time.monotonic()

    def _now(self) -> float | None:
        return self.clock() if self.clock else None

    async def open(self) -> None:
            self._conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(1, int(self.ttl_s / 3)),
            application_name=f"makewatch-leases {self.replica_id}"[:63],
        )

    async def close(self) -> None:
        """Close the connection without releasing (what SIGKILL leaves behind)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _execute(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            await self.open()
        try:
            cur = await self._conn.execute(sql, {"now": self._now(), "me": self.replica_id, "ttl": self.ttl_s, **params})
            return await cur.fetchall() if cur.description else []
        except BaseException:
            # Broken, or cancelled mid-statement (a hung tick): a fresh connection next call.
            with contextlib.suppress(Exception):
                await self.close()
            self._conn = None
            raise

    async def register(self, names: Iterable[str]) -> None:
        """Insert the lease rows of ``names`` (kept if present) and this replica's row."""
        self._names = sorted(set(names))
        digest = hashlib.sha256("\n".join(self._names).encode()).hexdigest()[:16]
        await self._execute(REGISTER_NAMES, {"names": self._names})
        await self._execute(REGISTER_REPLICA, {"host": socket.gethostname(), "pid": os.getpid(), "hash": digest})
        await self._execute(PRUNE_REPLICAS, {})

    def set_budget(self, name: str, timestamps: Sequence[float]) -> None:
        """The request timestamps spent on ``name`` lately: stored with the next renewal (or
        release) so the next holder's rate limiter knows them."""
        self._budgets[name] = json.dumps([round(t, 3) for t in timestamps])

    async def tick(self) -> Changes:
        started = self.local_time()
        await self._execute(HEARTBEAT, {})
        lost = await self._renew(started)
        holdings = {r[0]: int(r[1]) for r in await self._execute(LIVE, {"names": self._names})}
        free = [r[0] for r in await self._execute(FREE, {"names": self._names})]
        todo = plan(self._names, self._held, free, list(holdings), self.replica_id, holdings)
        if todo.release:
            lost |= await self._release(todo.release)
        gained: dict[str, int] = {}
        previous: dict[str, PreviousHolder] = {}
        if todo.claim:
            started = self.local_time()
            rows = await self._execute(CLAIM, {"names": todo.claim, "limit": len(todo.claim)})
            for name, gen, holder, renewed_at, budget_json, claimed_at in rows:
                gained[name] = gen
                self._held[name] = gen
                self._deadline[name] = started + self.ttl_s
                self._budgets.pop(name, None)
                if holder is not None or budget_json is not None:
                    previous[name] = PreviousHolder(holder, renewed_at, json.loads(budget_json or "[]"), claimed_at)
                if holder is not None and holder != self.replica_id:
                    self.counters.taken_over += 1
            self.counters.gained += len(gained)
        return Changes(gained=gained, lost=lost, held=dict(self._held), previous=previous)

    async def _renew(self, started: float) -> set[str]:
        if not self._held:
            return set()
        names = sorted(self._held)
        gens = [self._held[n] for n in names]
        budgets = [self._budgets.get(n) for n in names]
        renewed = {r[0] for r in await self._execute(RENEW, {"names": names, "gens": gens, "budgets": budgets})}
        for name in renewed:
            self._deadline[name] = started + self.ttl_s
            self._budgets.pop(name, None)
        missing = [n for n in names if n not in renewed]
        if not missing:
            return set()
        params = {"names": missing, "gens": [self._held[n] for n in missing]}
        skipped = {r[0] for r in await self._execute(STILL_MINE, params)}
        lost = set(missing) - skipped
        self._forget(lost)
        self.counters.lost += len(lost)
        return lost

    async def _release(self, names: Sequence[str]) -> set[str]:
        names = sorted(names)
        budgets = [self._budgets.get(n) for n in names]
        params = {"names": names, "budgets": budgets}
        released = {r[0] for r in await self._execute(RELEASE_SKIPPING, params)}
        missing = [n for n in names if n not in released]
        kept: set[str] = set()
        if missing:  # skipped (a write in flight holds it): ours until the next tick
            params = {"names": missing, "gens": [self._held[n] for n in missing]}
            kept = {r[0] for r in await self._execute(STILL_MINE, params)}
        gone = set(names) - kept
        self._forget(gone)
        self.counters.released += len(released)
        self.counters.lost += len(gone - released)
        return gone

    def _forget(self, names: Iterable[str]) -> None:
        for name in names:
            self._held.pop(name, None)
            self._deadline.pop(name, None)
            self._budgets.pop(name, None)

    def lapse(self) -> Changes:
        """Drop the names whose local deadline passed (the database could not renew them):
        the database may have given them to someone else already."""
        now = self.local_time()
        lost = {n for n, deadline in self._deadline.items() if deadline <= now}
        self._forget(lost)
        self.counters.lost += len(lost)
        return Changes(lost=lost, held=dict(self._held))

    async def save_budget(self, name: str, timestamps: Sequence[float]) -> None:
        """Store ``name``'s request times now, not with the next renewal: what a taker seeded
        its limiter with must survive it dying before that renewal."""
        lease = self.lease(name)
        if lease is None:
            return
        await self._execute(
            "UPDATE leases SET budget_json = %(budget)s WHERE name = %(name)s AND holder = %(me)s "
            "AND generation = %(gen)s",
            {"budget": json.dumps([round(t, 3) for t in timestamps]), "name": name, "gen": lease.generation},
        )

    async def release_all(self) -> set[str]:
        """SIGTERM: hand every lease over at once (after the last shielded write) and leave
        the live set, so the others' fair share grows without waiting for the TTL."""
        held = sorted(self._held)
        budgets = [self._budgets.get(n) for n in held]
        rows = await self._execute(RELEASE_WAITING, {"names": held, "budgets": budgets})
        # Anything still recorded as ours (a claim whose answer was lost) goes too.
        rows += await self._execute(
            f"UPDATE leases SET holder = NULL, expires_at = {NOW} WHERE holder = %(me)s RETURNING name", {}
        )
        await self._execute("DELETE FROM replicas WHERE id = %(me)s", {})
        self._forget(held)
        self.counters.released += len(held)
        return {r[0] for r in rows}

    async def holders(self) -> dict[str, tuple[str | None, int, float | None]]:
        """Every lease: ``name -> (holder, generation, expires_at)``, for /healthz and status."""
        return {name: (holder, gen, exp) for name, holder, gen, exp in await self._execute(HOLDERS, {})}

    async def replicas(self) -> list[dict[str, Any]]:
        """Known replicas (live or recently dead), for /healthz: differing ``names_hash``
        values mean replicas run with different organization lists."""
        rows = await self._execute(
            "SELECT id, host, pid, started_at, heartbeat_at, names_hash FROM replicas ORDER BY id", {}
        )
        keys = ("id", "host", "pid", "started_at", "heartbeat_at", "names_hash")
        return [dict(zip(keys, row, strict=True)) for row in rows]


# ------------------------------------------------------------------------------ loop


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def run(
    manager: LeaseManager,
    on_change: Callable[[Changes], Any],
    stop_event: asyncio.Event,
    interval: float | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    tick_timeout_s: float | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Tick every ``interval`` (default ttl/3) until ``stop_event`` is set; call
    ``on_change(changes)`` (sync or async) when something was gained or lost, and
    ``on_tick()`` after every tick that succeeded (every held lease was renewed then).

    A failed tick (database unreachable, connection lost, statement hung past ``interval``)
    is logged once and retried with backoff; once a held name's local deadline passes (ttl
    after its last renewal was sent) it is reported lost without the database's word. Does
    not release on exit: the caller calls ``release_all`` after its last write. ``sleep``:
    injectable for tests (default: wait on ``stop_event``, real seconds); a tick is cut
    after ``tick_timeout_s`` real seconds (default ``interval``): a partitioned network
    hangs rather than fails."""
    interval = manager.ttl_s / 3 if interval is None else interval
    tick_timeout_s = interval if tick_timeout_s is None else tick_timeout_s
    failures = 0

    async def notify(changes: Changes) -> None:
        if changes:
            result = on_change(changes)
            if inspect.isawaitable(result):
                await result

    while not stop_event.is_set():
        try:
            changes = await asyncio.wait_for(manager.tick(), timeout=tick_timeout_s)
        except (OSError, TimeoutError, psycopg.Error) as exc:
            if failures == 0:
                log.warning("lease renewal failed, retrying (leases lapse after %.0f s): %s", manager.ttl_s, exc)
            failures += 1
            with contextlib.suppress(Exception):  # already broken: nothing to do about it
                await manager.close()
            await notify(manager.lapse())
            delay = min(interval, RETRY_FIRST_S * 2 ** (failures - 1))
        else:
            if failures:
                log.info("lease renewal works again after %d failed attempts", failures)
            failures = 0
            if on_tick is not None:
                on_tick()
            await notify(changes)
            delay = interval
        await (sleep(delay) if sleep else _wait(stop_event, delay))

