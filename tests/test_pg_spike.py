"""Spike for issue 18 (docs/replicas-plan.md): the two risky parts, on a real PostgreSQL.

(a) Organization leases: claimed, renewed and released with conditional ``UPDATE …
    RETURNING``; the generation is a fencing token checked in the same transaction as the
    cursor/event writes, under a ``FOR SHARE`` row lock, so a takeover cannot slip between the
    check and the commit.
(b) Notices claimed once: outbox rows inserted with ``ON CONFLICT (dedup_key) DO NOTHING``,
    drained by concurrent replicas with ``FOR UPDATE SKIP LOCKED`` and a claim that expires;
    decisions serialised by a transaction-scoped advisory lock; digests claim their period
    with ``INSERT … ON CONFLICT DO NOTHING RETURNING``.

Time is injected: every statement takes ``now`` (epoch seconds, as the store's columns);
production passes NULL and the SQL uses the database's clock, one clock for every replica.
The SQL here is what the PostgreSQL engine will carry; only the schema is cut down.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

psycopg = pytest.importorskip("psycopg", reason="psycopg is in the [test] extra")

pytestmark = pytest.mark.postgres

TTL_S = 30.0
T0 = 1_800_000_000.0

# The database's clock unless a test injects one: no skew between replicas' clocks.
NOW = "COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp()))"

SCHEMA = """
CREATE TABLE leases (
    name        text PRIMARY KEY,           -- 'org:<id>', 'alerts', ...
    holder      text,                       -- replica id; NULL: free
    generation  bigint NOT NULL DEFAULT 0,  -- +1 at every claim: the fencing token
    expires_at  double precision NOT NULL DEFAULT 0
);
CREATE TABLE cursors (
    scenario_id bigint NOT NULL, stream text NOT NULL, last_imt_id text, last_ts_ms bigint,
    updated_at double precision, PRIMARY KEY (scenario_id, stream)
);
CREATE TABLE events (
    id bigserial PRIMARY KEY, key text NOT NULL UNIQUE, org_id bigint, processed_at double precision
);
CREATE TABLE outbox (
    id bigserial PRIMARY KEY, dedup_key text NOT NULL UNIQUE, channel text NOT NULL,
    status text NOT NULL DEFAULT 'pending',  -- pending | sending | sent | parked
    attempts int NOT NULL DEFAULT 0, next_attempt_at double precision NOT NULL DEFAULT 0,
    claimed_by text, claimed_until double precision, sent_at double precision
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE TABLE digests (
    recipient text NOT NULL, period_start double precision NOT NULL, claimed_by text,
    sent_at double precision, PRIMARY KEY (recipient, period_start)
);
"""

CLAIM = f"""
UPDATE leases SET holder = %(me)s, generation = generation + 1, expires_at = {NOW} + %(ttl)s
 WHERE name = %(name)s AND (holder IS NULL OR expires_at <= {NOW})
RETURNING generation
"""
# Renewal only by the holder of this very generation, and only while it is still valid:
# a lease that expired is lost even if nobody took it yet (claim it again, new generation).
RENEW = f"""
UPDATE leases SET expires_at = {NOW} + %(ttl)s
 WHERE name = %(name)s AND holder = %(me)s AND generation = %(gen)s AND expires_at > {NOW}
RETURNING expires_at
"""
RELEASE = """
UPDATE leases SET holder = NULL, expires_at = 0
 WHERE name = %(name)s AND holder = %(me)s AND generation = %(gen)s
RETURNING generation
"""
# The fence, first statement of every write made under a lease. FOR SHARE holds the row until
# COMMIT: a concurrent claim (an UPDATE of that row) waits for this transaction, so the lease
# cannot change hands between this check and the commit of the writes after it.
FENCE = f"""
SELECT generation FROM leases
 WHERE name = %(name)s AND holder = %(me)s AND generation = %(gen)s AND expires_at > {NOW}
   FOR SHARE
"""


class LeaseLost(Exception):
    """The write's lease is no longer this replica's: nothing of the write was committed."""


async def connect(url: str) -> Any:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


@pytest.fixture
async def db(pg_url: str) -> Any:  # noqa: F811 - fixture
    conn = await connect(pg_url)
    await conn.execute(SCHEMA)
    yield conn
    await conn.close()


async def claim(conn: Any, name: str, me: str, now: float | None, ttl: float = TTL_S) -> int | None:
    cur = await conn.execute(CLAIM, {"name": name, "me": me, "now": now, "ttl": ttl})
    row = await cur.fetchone()
    return None if row is None else row[0]


async def renew(conn: Any, name: str, me: str, gen: int, now: float | None) -> bool:
    cur = await conn.execute(RENEW, {"name": name, "me": me, "gen": gen, "now": now, "ttl": TTL_S})
    return await cur.fetchone() is not None


async def release(conn: Any, name: str, me: str, gen: int) -> bool:
    cur = await conn.execute(RELEASE, {"name": name, "me": me, "gen": gen})
    return await cur.fetchone() is not None


async def record_progress(
    conn: Any, org_id: int, me: str, gen: int, now: float | None, events: list[str], cursor_ts_ms: int,
) -> int:
    """The shape of store.record_progress under a lease: fence, events, cursor, one transaction."""
    async with conn.transaction():
        cur = await conn.execute(FENCE, {"name": f"org:{org_id}", "me": me, "gen": gen, "now": now})
        if await cur.fetchone() is None:
            raise LeaseLost(f"org:{org_id} generation {gen} is no longer held by {me}")
        cur = await conn.execute(
            "INSERT INTO events (key, org_id) SELECT k, %s FROM unnest(%s::text[]) AS k ORDER BY k "
            "ON CONFLICT (key) DO NOTHING RETURNING id",
            [org_id, events],
        )
        inserted = len(await cur.fetchall())
        await conn.execute(
            "INSERT INTO cursors (scenario_id, stream, last_ts_ms, updated_at) VALUES (%s, 'logs', %s, %s) "
            "ON CONFLICT (scenario_id, stream) DO UPDATE SET last_ts_ms = excluded.last_ts_ms, "
            "updated_at = excluded.updated_at",
            [org_id * 1000, cursor_ts_ms, now],
        )
    return inserted


async def wait_until_blocked(observer: Any, pid: int) -> None:
    """Until backend ``pid`` waits on a lock (a condition polled, not a timed sleep)."""
    for _ in range(2000):
        cur = await observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = await cur.fetchone()
        if row and row[0] == "Lock":
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"backend {pid} never waited on a lock")


# ------------------------------------------------------------------------ (a) leases


async def test_two_replicas_claiming_at_once_never_both_hold_an_organization(db: Any, pg_url: str) -> None:  # noqa: F811
    orgs = [f"org:{i}" for i in range(40)]
    await db.execute("INSERT INTO leases (name) SELECT unnest(%s::text[])", [orgs])
    a, b = await connect(pg_url), await connect(pg_url)
    try:
        for round_ in range(5):  # free, then expired, five times over: every claim a race
            now = T0 + round_ * (TTL_S + 1)
            got_a, got_b = await asyncio.gather(
                asyncio.gather(*[claim(a, o, "replica-a", now) for o in orgs]),
                asyncio.gather(*[claim(b, o, "replica-b", now) for o in reversed(orgs)]),
            )
            won_a = {o for o, g in zip(orgs, got_a, strict=True) if g is not None}
            won_b = {o for o, g in zip(reversed(orgs), got_b, strict=True) if g is not None}
            assert won_a.isdisjoint(won_b)
            assert won_a | won_b == set(orgs)
            cur = await db.execute("SELECT count(*), min(generation), max(generation) FROM leases")
            assert await cur.fetchone() == (40, round_ + 1, round_ + 1)  # one claim per lease
    finally:
        await a.close()
        await b.close()


async def test_a_lease_is_renewed_by_its_holder_only_and_taken_over_once_expired(db: Any) -> None:
    await db.execute("INSERT INTO leases (name) VALUES ('org:1')")
    gen = await claim(db, "org:1", "a", T0)
    assert gen == 1
    assert await claim(db, "org:1", "b", T0 + 1) is None  # held
    assert await renew(db, "org:1", "b", gen, T0 + 1) is False  # not b's
    assert await renew(db, "org:1", "a", gen, T0 + 20) is True  # now valid until T0 + 50
    assert await claim(db, "org:1", "b", T0 + 49) is None
    assert await claim(db, "org:1", "b", T0 + 50) == 2  # expired: taken over, new generation
    assert await renew(db, "org:1", "a", gen, T0 + 51) is False  # a paused past its lease


async def test_a_released_lease_is_claimed_at_once_and_a_stale_release_is_a_no_op(db: Any) -> None:
    await db.execute("INSERT INTO leases (name) VALUES ('org:1')")
    gen = await claim(db, "org:1", "a", T0)
    assert await release(db, "org:1", "a", gen) is True  # SIGTERM: hand it over
    assert await claim(db, "org:1", "b", T0 + 1) == gen + 1  # no wait for the TTL
    assert await release(db, "org:1", "a", gen) is False  # a's old token releases nothing


async def test_a_stale_generation_cannot_commit_cursors_or_events(db: Any) -> None:
    await db.execute("INSERT INTO leases (name) VALUES ('org:7')")
    old = await claim(db, "org:7", "a", T0)
    assert await record_progress(db, 7, "a", old, T0 + 1, ["e1"], 100) == 1
    # a freezes (SIGSTOP) past its TTL; b takes the organization over and polls.
    new = await claim(db, "org:7", "b", T0 + TTL_S + 1)
    assert new == old + 1
    assert await record_progress(db, 7, "b", new, T0 + TTL_S + 2, ["e2"], 200) == 1
    # a wakes and commits what it read before it froze: refused, and nothing of it is kept.
    with pytest.raises(LeaseLost):
        await record_progress(db, 7, "a", old, T0 + TTL_S + 3, ["e-stale"], 150)
    cur = await db.execute("SELECT last_ts_ms FROM cursors WHERE scenario_id = 7000")
    assert await cur.fetchone() == (200,)
    cur = await db.execute("SELECT key FROM events ORDER BY id")
    assert [r[0] for r in await cur.fetchall()] == ["e1", "e2"]


async def test_an_expired_lease_is_refused_even_before_anyone_takes_it(db: Any) -> None:
    await db.execute("INSERT INTO leases (name) VALUES ('org:7')")
    gen = await claim(db, "org:7", "a", T0)
    with pytest.raises(LeaseLost):
        await record_progress(db, 7, "a", gen, T0 + TTL_S, ["e1"], 100)


async def test_a_takeover_waits_for_the_write_in_flight_under_the_old_lease(db: Any, pg_url: str) -> None:  # noqa: F811
    """The fence and the writes commit together: a claim racing an open write transaction
    blocks on the FOR SHARE lock until that write has committed, then wins with gen + 1."""
    await db.execute("INSERT INTO leases (name) VALUES ('org:7')")
    old = await claim(db, "org:7", "a", T0)
    a, b = await connect(pg_url), await connect(pg_url)
    try:
        async with a.transaction():
            cur = await a.execute(FENCE, {"name": "org:7", "me": "a", "gen": old, "now": T0 + TTL_S - 1})
            assert await cur.fetchone() is not None
            await a.execute("INSERT INTO events (key, org_id) VALUES ('in-flight', 7)")
            takeover = asyncio.create_task(claim(b, "org:7", "b", T0 + TTL_S + 1))
            await wait_until_blocked(db, b.info.backend_pid)
            assert not takeover.done()
        assert await takeover == old + 1
        cur = await db.execute("SELECT count(*) FROM events WHERE key = 'in-flight'")
        assert await cur.fetchone() == (1,)
    finally:
        await a.close()
        await b.close()


async def test_leases_run_on_the_database_clock_when_none_is_injected(db: Any) -> None:
    """Production passes now=None: one clock (the server's) for every replica. The only test
    that waits real time, for a one-second lease."""
    await db.execute("INSERT INTO leases (name) VALUES ('org:1')")
    gen = await claim(db, "org:1", "a", None, ttl=1.0)
    assert gen == 1
    assert await claim(db, "org:1", "b", None, ttl=1.0) is None
    await asyncio.sleep(1.1)
    assert await claim(db, "org:1", "b", None, ttl=1.0) == 2


# ------------------------------------------------------------------------ (b) outbox

# ORDER BY: two transactions inserting the same keys in different orders deadlock (each
# waits on the other's uncommitted index tuple: seen in this spike, 3 runs in 5); in one
# order the second simply waits, then skips. The same holds for events' keys.
INSERT_OUTBOX = (
    "INSERT INTO outbox (dedup_key, channel) SELECT k, 'slack' FROM unnest(%s::text[]) AS k "
    "ORDER BY k ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
)
# Claim a batch of due rows: rows another drainer is claiming right now are skipped, not
# waited for; a claim whose holder died (claimed_until passed) is due again. The send happens
# after this commits (no transaction is held open across a Slack call); the claim is the lease.
CLAIM_OUTBOX = f"""
UPDATE outbox SET status = 'sending', claimed_by = %(me)s, claimed_until = {NOW} + %(claim_s)s,
       attempts = attempts + 1
 WHERE id IN (SELECT id FROM outbox
               WHERE (status = 'pending' AND next_attempt_at <= {NOW})
                  OR (status = 'sending' AND claimed_until <= {NOW})
               ORDER BY id LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED)
RETURNING id
"""
# Only the claim's holder may confirm it (a drainer that lost its claim records nothing).
MARK_SENT = """
UPDATE outbox SET status = 'sent', sent_at = %(now)s, claimed_by = NULL, claimed_until = NULL
 WHERE id = ANY(%(ids)s) AND status = 'sending' AND claimed_by = %(me)s
RETURNING id
"""


async def drain(conn: Any, me: str, now: float, sent: list[tuple[int, str]], limit: int = 7) -> None:
    """A replica's delivery loop: claim, "send" (the receiver records it), confirm."""
    while True:
        async with conn.transaction():
            cur = await conn.execute(CLAIM_OUTBOX, {"me": me, "now": now, "claim_s": 60.0, "limit": limit})
            ids = sorted(r[0] for r in await cur.fetchall())
        if not ids:
            return
        for outbox_id in ids:
            sent.append((outbox_id, me))
            await asyncio.sleep(0)  # the other drainer runs meanwhile
        cur = await conn.execute(MARK_SENT, {"me": me, "now": now, "ids": ids})
        assert len(await cur.fetchall()) == len(ids)


async def test_two_deciders_queue_one_outbox_row_per_dedup_key_in_any_order(db: Any, pg_url: str) -> None:  # noqa: F811
    keys = [f"fp{i}|slack|1|firing|1" for i in range(300)]
    a, b = await connect(pg_url), await connect(pg_url)
    try:
        ids_a, ids_b = await asyncio.gather(
            *[c.execute(INSERT_OUTBOX, [ks]) for c, ks in ((a, keys), (b, list(reversed(keys))))]
        )
        inserted = len(await ids_a.fetchall()) + len(await ids_b.fetchall())
    finally:
        await a.close()
        await b.close()
    assert inserted == 300
    cur = await db.execute("SELECT count(*), count(DISTINCT dedup_key) FROM outbox")
    assert await cur.fetchone() == (300, 300)


async def test_two_drainers_never_send_a_row_twice(db: Any, pg_url: str) -> None:  # noqa: F811
    await db.execute(INSERT_OUTBOX, [[f"k{i}" for i in range(500)]])
    a, b = await connect(pg_url), await connect(pg_url)
    sent: list[tuple[int, str]] = []
    try:
        await asyncio.gather(drain(a, "a", T0, sent), drain(b, "b", T0, sent))
    finally:
        await a.close()
        await b.close()
    ids = [i for i, _ in sent]
    assert len(ids) == len(set(ids)) == 500
    assert {who for _, who in sent} == {"a", "b"}  # both did work
    cur = await db.execute("SELECT status, count(*), max(attempts) FROM outbox GROUP BY status")
    assert await cur.fetchall() == [("sent", 500, 1)]


async def test_skip_locked_hands_a_second_drainer_other_rows_without_waiting(db: Any, pg_url: str) -> None:  # noqa: F811
    await db.execute(INSERT_OUTBOX, [[f"k{i}" for i in range(20)]])
    a, b = await connect(pg_url), await connect(pg_url)
    try:
        async with a.transaction():  # a's claim is open (uncommitted): its rows are locked
            cur = await a.execute(CLAIM_OUTBOX, {"me": "a", "now": T0, "claim_s": 60.0, "limit": 10})
            mine = {r[0] for r in await cur.fetchall()}
            async with b.transaction():
                cur = await b.execute(CLAIM_OUTBOX, {"me": "b", "now": T0, "claim_s": 60.0, "limit": 10})
                theirs = {r[0] for r in await cur.fetchall()}
        assert len(mine) == len(theirs) == 10 and mine.isdisjoint(theirs)
    finally:
        await a.close()
        await b.close()


async def test_a_claim_whose_drainer_died_is_delivered_again_and_the_dead_one_confirms_nothing(
    db: Any,
) -> None:
    await db.execute(INSERT_OUTBOX, [["k1"]])
    cur = await db.execute(CLAIM_OUTBOX, {"me": "a", "now": T0, "claim_s": 60.0, "limit": 10})
    (row_id,) = (r[0] for r in await cur.fetchall())
    # a is SIGKILLed before confirming: within the claim nobody else sends it ...
    cur = await db.execute(CLAIM_OUTBOX, {"me": "b", "now": T0 + 59, "claim_s": 60.0, "limit": 10})
    assert await cur.fetchall() == []
    # ... after it, b does (at least once, as on SQLite: the receiver dedups by dedup_key).
    cur = await db.execute(CLAIM_OUTBOX, {"me": "b", "now": T0 + 60, "claim_s": 60.0, "limit": 10})
    assert [r[0] for r in await cur.fetchall()] == [row_id]
    cur = await db.execute(MARK_SENT, {"me": "a", "now": T0 + 61, "ids": [row_id]})
    assert await cur.fetchall() == []  # a, back from the dead, confirms nothing
    cur = await db.execute(MARK_SENT, {"me": "b", "now": T0 + 61, "ids": [row_id]})
    assert [r[0] for r in await cur.fetchall()] == [row_id]
    cur = await db.execute("SELECT status, attempts FROM outbox")
    assert await cur.fetchone() == ("sent", 2)


DECIDE_LOCK = 0x6D77_0001  # pg_advisory_xact_lock key of the alert decision ("mw", 1)


async def decide_once(conn: Any, now: float) -> int:
    """The shape of alerts.pipeline.process_batch on PostgreSQL: what BEGIN IMMEDIATE gives
    on SQLite (one decision at a time), a transaction-scoped advisory lock gives here; it
    dies with the transaction or the connection, so a killed replica never holds it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [DECIDE_LOCK])
        cur = await conn.execute("SELECT id, key FROM events WHERE processed_at IS NULL ORDER BY id LIMIT 2000")
        events = await cur.fetchall()
        await asyncio.sleep(0)  # the other replica's decision runs meanwhile (and waits)
        if events:
            await conn.execute(INSERT_OUTBOX, [[f"{key}|slack" for _, key in events]])
            await conn.execute(
                "UPDATE events SET processed_at = %s WHERE id = ANY(%s)", [now, [i for i, _ in events]]
            )
    return len(events)


async def test_two_replicas_deciding_at_once_decide_each_event_once(db: Any, pg_url: str) -> None:  # noqa: F811
    await db.execute("INSERT INTO events (key) SELECT 'e' || g FROM generate_series(1, 100) AS g")
    a, b = await connect(pg_url), await connect(pg_url)
    try:
        decided = await asyncio.gather(decide_once(a, T0), decide_once(b, T0))
    finally:
        await a.close()
        await b.close()
    assert sorted(decided) == [0, 100]
    cur = await db.execute("SELECT count(*) FROM outbox")
    assert await cur.fetchone() == (100,)


CLAIM_DIGEST = (
    "INSERT INTO digests (recipient, period_start, claimed_by) VALUES (%s, %s, %s) "
    "ON CONFLICT (recipient, period_start) DO NOTHING RETURNING claimed_by"
)


async def test_a_digest_period_is_claimed_by_one_replica(db: Any, pg_url: str) -> None:  # noqa: F811
    conns = [await connect(pg_url) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *[c.execute(CLAIM_DIGEST, ["ops@example.com", T0, f"r{i}"]) for i, c in enumerate(conns)]
        )
        winners = [row for cur in results for row in await cur.fetchall()]
    finally:
        for c in conns:
            await c.close()
    assert len(winners) == 1
