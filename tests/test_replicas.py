"""watcher.replicas: several ``makewatch run`` on one PostgreSQL (issue 18)."""

from __future__ import annotations

import asyncio

import pytest

from watcher.clock import ManualClock
from watcher.leases import LeaseLost, PreviousHolder
from watcher.make.ratelimit import SlidingWindowLimiter
from watcher.replicas import takeover_budget, tick_quota


def test_a_released_lease_hands_over_exactly_the_requests_it_reported() -> None:
    previous = PreviousHolder(holder=None, renewed_at=1000.0, budget=[950.0, 990.0, 999.0])
    assert takeover_budget(previous, now=1005.0, ttl_s=30.0, per_window=30) == [950.0, 990.0, 999.0]


def test_a_dead_holder_is_assumed_to_have_spent_its_quota_at_its_lease_expiry() -> None:
    # It reported 6 requests at its last renewal (1000); after it, its gate let it make at
    # most tick_quota(30, 30 s) = 10 more: counted at its lease's expiry (1030), the latest
    # moment they could have been made.
    assert tick_quota(30, 30.0) == 10
    budget = [945.0, 955.0, 965.0, 975.0, 985.0, 995.0]
    previous = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=budget)
    seeded = takeover_budget(previous, now=1040.0, ttl_s=30.0, per_window=30)
    assert seeded == [985.0, 995.0] + [1030.0] * 10  # 945-975 are out of the window by now
    # ... and never more than its window's budget allowed.
    full = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=[971.0 + i for i in range(25)])
    assert takeover_budget(full, now=1031.0, ttl_s=30.0, per_window=30).count(1030.0) == 5


def test_requests_older_than_the_window_are_not_seeded() -> None:
    previous = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=[900.0, 990.0])
    assert takeover_budget(previous, now=1100.0, ttl_s=30.0, per_window=30) == []
    assert takeover_budget(None, now=1100.0, ttl_s=30.0, per_window=30) == []


async def test_budget_of_two_holders_never_exceeds_the_window_after_a_death() -> None:
    """The dead holder spent 20 of 30 before its renewal and, unknown to anyone, its whole
    quota (10) right before its lease expired; the taker, seeded with that quota at the
    expiry, keeps every 60 s window of the two together at 30 or fewer."""
    clock = ManualClock(start=1000.0)
    dead = [940.0 + 2 * i for i in range(20)] + [1025.0 + 0.5 * i for i in range(tick_quota(30, 30.0))]
    previous = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=[t for t in dead if t <= 1000.0])
    clock.set(1041.0)  # taken over after the expiry (1030) and a lease tick
    taker = SlidingWindowLimiter(30, window_s=60, margin_s=1, clock=clock)
    taker.seed(takeover_budget(previous, clock.time(), 30.0, 30))
    sent: list[float] = []

    async def spend() -> None:
        while clock.time() < 1200.0:
            await taker.acquire()
            sent.append(clock.time())

    task = asyncio.create_task(spend())
    while clock.time() < 1200.0:
        await asyncio.sleep(0)
        clock.advance(0.25)
    task.cancel()
    everything = sorted(dead + sent)
    worst = max(sum(1 for t in everything if start <= t < start + 60.0) for start in everything)
    assert worst <= 30 and len(sent) > 60  # held, and the taker still polls


def test_the_gate_refuses_a_request_once_the_lease_lapsed() -> None:
    clock = ManualClock(start=1000.0)
    limiter = SlidingWindowLimiter(5, clock=clock)
    held = {"ok": True}

    def gate() -> None:
        if not held["ok"]:
            raise LeaseLost("org:1")
        return None

    limiter.gate = gate
    asyncio.run(limiter.acquire())
    held["ok"] = False
    with pytest.raises(LeaseLost):
        asyncio.run(limiter.acquire())
    assert limiter.used() == 1  # the refused request counts nothing

    async def in_slot() -> None:
        async with limiter.slot():
            pytest.fail("a refused slot must not run its request")

    with pytest.raises(LeaseLost):
        asyncio.run(in_slot())
    assert limiter.in_flight == 0


async def test_the_gate_holds_a_request_until_the_time_it_names() -> None:
    """The replica's quota between two renewals: the gate names when to look again."""
    clock = ManualClock(start=1000.0)
    limiter = SlidingWindowLimiter(10, clock=clock)
    limiter.gate = lambda: 1005.0 if clock.time() < 1005.0 else None
    task = asyncio.create_task(limiter.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()
    clock.advance(5.0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert task.done() and limiter.recent() == [1005.0]


def test_the_expiry_is_moved_onto_the_takers_clock() -> None:
    """The lease's times are the database server's; the limiter's are the replica's. Found
    by the suite at a faked hour: ten hours apart, every seeded request fell outside the
    window and the budget was overrun."""
    skew = 36_000.0  # this replica's clock runs 10 h ahead of the server's
    previous = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=[skew + 995.0], claimed_at=1040.0)
    seeded = takeover_budget(previous, now=skew + 1040.0, ttl_s=30.0, per_window=30)
    assert seeded == [skew + 995.0] + [skew + 1030.0] * 10
