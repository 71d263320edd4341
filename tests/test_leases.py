"""Leases (watcher/leases.py): the fair-share planner alone, then the lease SQL on a real
PostgreSQL with an injected clock (no test waits for a timeout)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlite_utils
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

from watcher.leases import (
    Changes,
    Lease,
    LeaseLost,
    LeaseManager,
    Plan,
    fair_share,
    fence,
    m016_leases,
    plan,
    run,
)

psycopg = pytest.importorskip("psycopg", reason="psycopg is in the [test] extra")

TTL_S = 30.0
T0 = 1_800_000_000.0
NAMES = [f"org:{i:02d}" for i in range(30)]


class Clock:
    """Epoch seconds, moved by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# ------------------------------------------------------------------------------ planner


@pytest.mark.parametrize(
    ("total", "live", "share"), [(30, 1, 30), (30, 2, 15), (30, 3, 10), (31, 2, 16), (30, 4, 8), (0, 3, 0), (5, 0, 5)]
)
def test_the_fair_share_is_the_ceiling_of_names_over_live_replicas(total: int, live: int, share: int) -> None:
    assert fair_share(total, live) == share


N6 = ["a", "b", "c", "d", "e", "f"]


@pytest.mark.parametrize(
    ("why", "held", "free", "live", "me", "expected"),
    [
        ("alone: claim everything, in order", [], N6, ["r1"], "r1", Plan(claim=N6, release=[])),
        ("the first of two starts at the front", [], N6, ["r1", "r2"], "r1", Plan(["a", "b", "c"], [])),
        ("the second of two starts half way", [], N6, ["r1", "r2"], "r2", Plan(["d", "e", "f"], [])),
        ("a rotation wraps around", [], ["a", "b", "f"], ["r1", "r2"], "r2", Plan(["f", "a", "b"], [])),
        ("me counts as live even before my heartbeat", [], N6, ["r2"], "r1", Plan(["a", "b", "c"], [])),
        ("at the share: nothing to do", ["a", "b", "c"], ["d", "e", "f"], ["r1", "r2"], "r1", Plan([], [])),
        ("one above the share is tolerated", ["a", "b", "c", "d"], [], ["r1", "r2"], "r1", Plan([], [])),
        ("two above: back down to the share", ["a", "b", "c", "d", "e"], [], ["r1", "r2"], "r1", Plan([], ["d", "e"])),
        ("a newcomer gets the far half", N6, [], ["r1", "r2"], "r1", Plan([], ["d", "e", "f"])),
        ("below the share: top up only", ["a"], ["b", "c", "f"], ["r1", "r2"], "r1", Plan(["b", "c"], [])),
        ("held names are never claimed again", ["a"], ["a", "b"], ["r1"], "r1", Plan(["b"], [])),
        ("a name no longer configured is released", ["a", "zz"], ["b"], ["r1", "r2", "r3"], "r1", Plan(["b"], ["zz"])),
        ("unknown free names are ignored", [], ["zz"], ["r1"], "r1", Plan([], [])),
    ],
)
def test_the_planner(why: str, held: list[str], free: list[str], live: list[str], me: str, expected: Plan) -> None:
    assert plan(N6, held, free, live, me) == expected, why


def test_with_no_names_everything_held_is_released() -> None:
    assert plan([], ["a"], [], ["r1"], "r1") == Plan(claim=[], release=["a"])


def test_replicas_ticking_in_turn_converge_and_never_share_a_name() -> None:
    """A table in memory and the pure planner: 3 replicas tick in turn, one dies (its leases
    expire), a fourth joins. Each replica believes it holds a name until its own expiry;
    no two beliefs ever overlap, and the split converges to the fair share."""
    table: dict[str, tuple[str | None, float]] = {n: (None, 0.0) for n in NAMES}
    beats: dict[str, float] = {}
    beliefs: dict[str, dict[str, float]] = {}  # replica -> name -> expires_at
    now = T0

    def tick(me: str) -> None:
        beats[me] = now
        mine = beliefs.setdefault(me, {})
        for name in list(mine):  # renew
            holder, expires = table[name]
            if holder == me and expires > now:
                table[name] = (me, now + TTL_S)
                mine[name] = now + TTL_S
            else:
                del mine[name]
        live = [r for r, beat in beats.items() if beat > now - TTL_S]
        free = [n for n, (holder, expires) in table.items() if holder is None or expires <= now]
        todo = plan(NAMES, set(mine), free, live, me)
        for name in todo.release:
            table[name] = (None, now)
            del mine[name]
        for name in todo.claim:
            table[name] = (me, now + TTL_S)
            mine[name] = now + TTL_S

    def check() -> None:
        seen: dict[str, str] = {}
        for replica, names in beliefs.items():
            for name, expires in names.items():
                if expires > now:
                    assert name not in seen, f"{name} held by {seen[name]} and {replica}"
                    seen[name] = replica

    def rounds(replicas: list[str], count: int) -> None:
        nonlocal now
        for _ in range(count):
            for replica in replicas:
                tick(replica)
                check()
                now += 1.0
            now += TTL_S / 3 - len(replicas)

    def split(replicas: list[str]) -> list[int]:
        return sorted(len(beliefs[r]) for r in replicas)

    rounds(["r1", "r2", "r3"], 4)
    assert split(["r1", "r2", "r3"]) == [10, 10, 10]
    rounds(["r1", "r2"], 6)  # r3 died: after its TTL the others take its names
    assert split(["r1", "r2"]) == [15, 15]
    rounds(["r1", "r2", "r4"], 4)  # r4 joins
    assert split(["r1", "r2", "r4"]) == [10, 10, 10]
    owners = {n for r in ("r1", "r2", "r4") for n in beliefs[r]}
    assert owners == set(NAMES)


# ------------------------------------------------------------------------------ schema


def test_m016_runs_on_sqlite() -> None:
    db = sqlite_utils.Database(memory=True)
    m016_leases(db)
    assert set(db.table_names()) >= {"leases", "replicas"}
    db.execute("INSERT INTO leases (name) VALUES ('org:1')")
    assert db.execute("SELECT name, holder, generation FROM leases").fetchall() == [("org:1", None, 0)]
    assert set(db["replicas"].columns_dict) == {"id", "host", "pid", "started_at", "heartbeat_at", "names_hash"}


def test_the_fence_is_a_no_op_on_sqlite() -> None:
    db = sqlite_utils.Database(memory=True)
    fence(db, Lease("org:1", "r1", 7))
    fence(sqlite3.connect(":memory:"), Lease("org:1", "r1", 7))


# ------------------------------------------------------------------------------ PostgreSQL

pg = pytest.mark.postgres


@pytest.fixture
def lease_db(pg_url: str) -> str:  # noqa: F811 - fixture
    with psycopg.connect(pg_url, autocommit=True) as conn:
        m016_leases(conn)
    return pg_url


@pytest.fixture
async def new_manager(lease_db: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[LeaseManager] = []

    async def make(replica_id: str, clock: Clock, names: list[str] = NAMES, ttl_s: float = TTL_S) -> LeaseManager:
        manager = LeaseManager(lease_db, replica_id, ttl_s=ttl_s, clock=clock)
        await manager.open()
        await manager.register(names)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()


def table(url: str) -> dict[str, tuple[str | None, int, float | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, holder, generation, expires_at FROM leases").fetchall()
    return {name: (holder, gen, exp) for name, holder, gen, exp in rows}


def assert_consistent(url: str, managers: list[LeaseManager], now: float) -> None:
    """What every manager believes it holds is so in the table, and nobody shares a name."""
    rows = table(url)
    seen: dict[str, str] = {}
    for manager in managers:
        for name, gen in manager.held.items():
            assert name not in seen, f"{name} believed held by {seen[name]} and {manager.replica_id}"
            seen[name] = manager.replica_id
            holder, row_gen, expires = rows[name]
            assert (holder, row_gen) == (manager.replica_id, gen)
            assert expires is not None and expires > now


async def settle(managers: list[LeaseManager], clock: Clock, rounds: int) -> None:
    for _ in range(rounds):
        for manager in managers:
            await manager.tick()
        clock.advance(TTL_S / 3)


@pg
async def test_two_managers_share_thirty_names_fifteen_each(new_manager: Any, lease_db: str) -> None:
    clock = Clock()
    a = await new_manager("a", clock)
    first = await a.tick()  # alone for now: takes everything
    assert len(first.gained) == 30 and set(first.gained.values()) == {1}
    b = await new_manager("b", clock)
    await settle([a, b], clock, 3)
    assert sorted([len(a.held), len(b.held)]) == [15, 15]
    assert_consistent(lease_db, [a, b], clock())
    assert a.counters.released == 15 and b.counters.gained == 15


@pg
async def test_three_managers_share_thirty_names_ten_each(new_manager: Any, lease_db: str) -> None:
    clock = Clock()
    managers = [await new_manager(r, clock) for r in ("a", "b", "c")]
    await settle(managers, clock, 3)
    assert [len(m.held) for m in managers] == [10, 10, 10]
    assert_consistent(lease_db, managers, clock())
    holders = await managers[0].holders()
    assert {h for h, _, _ in holders.values()} == {"a", "b", "c"}


@pg
async def test_a_killed_replicas_names_are_taken_over_after_the_ttl_with_its_budget(new_manager: Any, lease_db: str) -> None:
    clock = Clock()
    a, b = await new_manager("a", clock), await new_manager("b", clock)
    await settle([a, b], clock, 3)
    a_names = set(a.held)
    for name in a_names:
        a.set_budget(name, [clock() - 5, clock() - 1])
    await a.tick()  # the renewal stores the budget
    last_renewal = clock()
    old = dict(a.held)
    await a.close()  # SIGKILL: no release

    for step in (10, 10, 9):  # b keeps renewing its own; a's are still a's (a counts as live)
        clock.advance(step)
        assert (await b.tick()).gained == {}
    clock.advance(1)  # TTL_S after a's last renewal
    changes = await b.tick()
    assert set(changes.gained) == a_names
    assert all(changes.gained[n] == old[n] + 1 for n in a_names)
    prev = changes.previous[min(a_names)]
    assert prev.holder == "a" and prev.renewed_at == last_renewal
    assert prev.budget == [last_renewal - 5, last_renewal - 1]
    assert b.counters.taken_over == 15 and len(b.held) == 30


@pg
async def test_a_holder_killed_before_its_first_renewal_passes_on_its_predecessors_budget(
    new_manager: Any, lease_db: str
) -> None:
    """Found by bench/replicas.py: a claim used to clear the stored budget, so a holder killed
    before its first renewal handed the next one nothing, and the requests of both were
    forgotten (41 in one window against 30)."""
    clock = Clock()
    names = ["org:1"]
    a = await new_manager("a", clock, names)
    await a.tick()
    a.set_budget("org:1", [clock() - 3, clock() - 2])
    await a.tick()
    await a.close()  # SIGKILL
    clock.advance(TTL_S + 1)
    b = await new_manager("b", clock, names)
    assert set((await b.tick()).gained) == {"org:1"}
    await b.close()  # killed before it renewed: it never stored a budget of its own
    clock.advance(TTL_S + 1)
    c = await new_manager("c", clock, names)
    changes = await c.tick()
    prev = changes.previous["org:1"]
    assert prev.holder == "b"  # the dead one: the taker assumes it spent up to its expiry
    assert prev.budget == [clock() - 2 * (TTL_S + 1) - 3, clock() - 2 * (TTL_S + 1) - 2]  # a's, kept


@pg
async def test_release_all_hands_everything_over_at_once(new_manager: Any, lease_db: str) -> None:
    clock = Clock()
    a, b = await new_manager("a", clock), await new_manager("b", clock)
    await settle([a, b], clock, 3)
    a_names = set(a.held)
    a.set_budget(min(a_names), [clock() - 2])
    assert await a.release_all() == a_names
    assert a.held == {}
    changes = await b.tick()  # same instant: no wait for the TTL
    assert set(changes.gained) == a_names and len(b.held) == 30
    assert changes.previous[min(a_names)].holder is None
    assert changes.previous[min(a_names)].budget == [clock() - 2]
    assert b.counters.taken_over == 0


@pg
async def test_a_stale_generation_or_an_expired_lease_cannot_pass_the_fence(new_manager: Any, lease_db: str) -> None:
    clock = Clock()
    a = await new_manager("a", clock, names=["org:7"])
    await a.tick()
    lease = a.lease("org:7")
    assert lease == Lease("org:7", "a", 1)
    with psycopg.connect(lease_db) as conn:
        with conn.transaction():
            fence(conn, lease, now=clock() + TTL_S - 1)
        with pytest.raises(LeaseLost), conn.transaction():
            fence(conn, lease, now=clock() + TTL_S)  # expired, nobody took it yet
        clock.advance(TTL_S)
        b = await new_manager("b", clock, names=["org:7"])
        assert (await b.tick()).gained == {"org:7": 2}
        with pytest.raises(LeaseLost) as lost, conn.transaction():
            fence(conn, lease, now=clock())
        assert lost.value.name == "org:7"
        with conn.cursor() as cur, cur.connection.transaction():
            fence(cur, b.lease("org:7"), now=clock())  # a cursor works as well


@pg
async def test_a_takeover_waits_for_the_write_in_flight_and_renewal_does_not(new_manager: Any, lease_db: str) -> None:
    """The fence's share lock: while a's write is open, b's claim skips the row (no wait,
    no takeover) and a's own renewal does not wait either; after the commit b wins with
    generation + 1, and the write made under the old lease is kept whole."""
    clock = Clock()
    a = await new_manager("a", clock, names=["org:7"])
    b = await new_manager("b", clock, names=["org:7"])
    await a.tick()
    lease = a.lease("org:7")
    with psycopg.connect(lease_db) as conn:
        conn.execute("CREATE TABLE events (key text PRIMARY KEY)")
        conn.commit()
        with conn.transaction():
            fence(conn, lease, now=clock() + 1)
            conn.execute("INSERT INTO events VALUES ('in-flight')")
            renewal = await asyncio.wait_for(a.tick(), timeout=5)
            assert renewal.held == {"org:7": 1} and not renewal.lost  # skipped, still a's
            clock.advance(TTL_S + 1)  # a froze past its lease with the write open
            assert (await asyncio.wait_for(b.tick(), timeout=5)).gained == {}
        assert (await b.tick()).gained == {"org:7": 2}
        assert conn.execute("SELECT key FROM events").fetchall() == [("in-flight",)]
    assert (await a.tick()).lost == {"org:7"}


@pg
async def test_concurrent_ticks_never_give_a_name_to_two_managers(new_manager: Any, lease_db: str) -> None:
    clock = Clock()
    managers = [await new_manager(r, clock) for r in ("a", "b", "c")]
    for round_ in range(12):
        if round_ == 5:
            await managers[2].close()  # c dies mid-run
            alive = managers[:2]
        elif round_ < 5:
            alive = managers
        await asyncio.gather(*[m.tick() for m in alive])
        assert_consistent(lease_db, alive, clock())
        clock.advance(TTL_S / 3)
    assert sorted(len(m.held) for m in alive) == [15, 15]


@pg
async def test_a_replica_that_cannot_reach_the_database_drops_its_leases_after_the_ttl(
    new_manager: Any, lease_db: str, pg_server: Any, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    clock = Clock()
    a = await new_manager("a", clock, names=NAMES[:4])
    stop = asyncio.Event()
    seen: list[Changes] = []
    steps = 0
    admin = psycopg.connect(pg_server.base_url, autocommit=True)
    dbname = lease_db.rsplit("/", 1)[1]

    async def sleep(seconds: float) -> None:
        nonlocal steps
        steps += 1
        clock.advance(seconds)
        if steps == 1:  # the database goes away after the first tick
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [dbname])
        if any(c.lost for c in seen) and steps < 100:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        if len(seen) == 3 or steps >= 100:
            stop.set()
        await asyncio.sleep(0)

    try:
        with caplog.at_level(logging.INFO, logger="watcher.leases"):
            await run(a, seen.append, stop, sleep=sleep)
    finally:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        admin.close()
    gained, lost, regained = seen
    assert set(gained.gained) == set(NAMES[:4])
    assert lost.lost == set(NAMES[:4]) and lost.held == {}
    assert set(regained.gained) == set(NAMES[:4])
    assert set(regained.gained.values()) == {2}  # a new generation: the old lease had expired
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # logged once, however many retries
    assert a.counters.lost == 4


@pg
async def test_rebalancing_skips_a_name_under_a_write_in_flight_instead_of_waiting(
    new_manager: Any, lease_db: str
) -> None:
    clock = Clock()
    a = await new_manager("a", clock)
    await a.tick()  # alone: all 30
    b = await new_manager("b", clock)
    far = NAMES[-1]  # a keeps the front half, releases the back half
    with psycopg.connect(lease_db) as conn:
        with conn.transaction():
            fence(conn, a.lease(far), now=clock())
            changes = await asyncio.wait_for(a.tick(), timeout=5)
            assert far not in changes.lost and far in a.held  # skipped, not waited for
            assert changes.lost == set(NAMES[15:29])
        changes = await a.tick()
    # 16 is within share + 1, but b (live) still holds none of its 15: the band gives way
    # and the skipped name goes now that the write is over.
    assert changes.lost == {far} and len(a.held) == 15 and far not in a.held
    await b.tick()
    assert set(b.held) == set(NAMES[15:30])
    assert a.counters.released == 15 and a.counters.lost == 0
    assert_consistent(lease_db, [a, b], clock())


@pg
async def test_without_an_injected_clock_the_database_server_keeps_time(pg_url: str) -> None:  # noqa: F811
    with psycopg.connect(pg_url, autocommit=True) as conn:
        m016_leases(conn)
        a, b = LeaseManager(pg_url, "a"), LeaseManager(pg_url, "b")
        try:
            for manager in (a, b):
                await manager.open()
                await manager.register(NAMES[:2])
            assert set((await a.tick()).gained) == {NAMES[0]}  # b is live: half each
            assert set((await b.tick()).gained) == {NAMES[1]}
            (server_now,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
            holder, gen, expires_at = (await a.holders())[NAMES[0]]
            assert (holder, gen) == ("a", 1)
            assert server_now < expires_at <= server_now + TTL_S
            with conn.transaction():
                fence(conn, a.lease(NAMES[0]))
            with pytest.raises(LeaseLost), conn.transaction():
                fence(conn, Lease(NAMES[0], "b", 1))
            assert [r["id"] for r in await a.replicas()] == ["a", "b"]
            await a.release_all()
            assert [r["id"] for r in await b.replicas()] == ["b"]
        finally:
            await a.close()
            await b.close()


@pg
async def test_a_tick_hung_on_a_lock_is_cut_short_and_the_leases_lapse(
    new_manager: Any, lease_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A partition hangs rather than fails: the heartbeat waits on a row lock held by
    another session; every tick is cut after tick_timeout_s and after the TTL the names are
    dropped. Once the lock goes, the manager claims them again under a new generation."""
    clock = Clock()
    a = await new_manager("a", clock, names=NAMES[:3])
    stop = asyncio.Event()
    seen: list[Changes] = []
    blocker = psycopg.connect(lease_db)
    steps = 0

    async def sleep(seconds: float) -> None:
        nonlocal steps
        steps += 1
        clock.advance(seconds)
        if steps == 1:
            blocker.execute("SELECT * FROM replicas WHERE id = 'a' FOR UPDATE")
        if any(c.lost for c in seen):
            blocker.rollback()
        if len(seen) == 3 or steps >= 50:
            stop.set()
        await asyncio.sleep(0)

    try:
        with caplog.at_level(logging.WARNING, logger="watcher.leases"):
            await run(a, seen.append, stop, sleep=sleep, tick_timeout_s=0.2)
    finally:
        blocker.close()
    assert [set(c.gained) for c in seen] == [set(NAMES[:3]), set(), set(NAMES[:3])]
    assert seen[1].lost == set(NAMES[:3])
    assert set(seen[2].gained.values()) == {2}
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@pg
async def test_a_claim_whose_answer_was_lost_is_claimed_again_under_a_new_generation(
    new_manager: Any, lease_db: str
) -> None:
    """A tick cut short after the server committed a claim: the table says a holds the name,
    a does not know it. The next tick claims it again rather than leaving it idle for a TTL."""
    clock = Clock()
    a = await new_manager("a", clock, names=NAMES[:2])
    with psycopg.connect(lease_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE leases SET holder = 'a', generation = 1, expires_at = %s WHERE name = %s",
            [clock() + TTL_S, NAMES[0]],
        )
    changes = await a.tick()
    assert changes.gained == {NAMES[0]: 2, NAMES[1]: 1}
    assert a.counters.taken_over == 0
    assert_consistent(lease_db, [a], clock())


def test_the_band_gives_way_to_a_replica_left_with_nothing() -> None:
    """Found by tests/test_replicas_e2e.py under load: 3 replicas on 5 names settled at
    3/2/0 (3 is within the share of 2 + 1), one replica idle for good."""
    names = [f"org:{i}" for i in range(5)]
    held = names[:3]
    live = ["a", "b", "c"]
    calm = plan(names, held, [], live, "a", {"a": 3, "b": 2, "c": 1})
    assert calm.release == []  # 3/2/... with nobody under 5 // 3 = 1: the band holds
    starving = plan(names, held, [], live, "a", {"a": 3, "b": 2, "c": 0})
    assert len(starving.release) == 1 and set(starving.release) <= set(held)
    assert plan(names, [], [starving.release[0]], live, "c", {"a": 2, "b": 2, "c": 0}).claim == starving.release
