"""The sliding-window budget, driven by a manual clock (no real waiting)."""

import asyncio
import random

import pytest

from watcher.clock import ManualClock
from watcher.make.ratelimit import SlidingWindowLimiter


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_it_grants_the_budget_then_waits_for_the_window():
    clock = ManualClock(start=1000.0)
    lim = SlidingWindowLimiter(3, window_s=60, margin_s=1, clock=clock)
    for _ in range(3):
        await lim.acquire()
    fourth = asyncio.create_task(lim.acquire())
    await settle()
    assert not fourth.done()
    clock.advance(60.5)
    await settle()
    assert not fourth.done()  # the margin keeps it waiting past 60 s
    clock.advance(0.6)
    await settle()
    assert fourth.done()
    assert lim.granted == 4


async def test_grants_never_exceed_budget_in_any_window_with_concurrent_callers():
    clock = ManualClock(start=0.0)
    lim = SlidingWindowLimiter(5, window_s=60, margin_s=0, clock=clock)
    times: list[float] = []

    async def caller() -> None:
        for _ in range(4):
            await lim.acquire()
            times.append(clock.time())

    tasks = [asyncio.create_task(caller()) for _ in range(6)]
    while not all(t.done() for t in tasks):
        await settle()
        clock.advance(1.0)
    assert len(times) == 24
    for t in times:
        in_window = [u for u in times if t <= u < t + 60]
        assert len(in_window) <= 5


async def test_pause_blocks_until_the_given_time():
    clock = ManualClock(start=100.0)
    lim = SlidingWindowLimiter(10, clock=clock)
    lim.pause_until(130.0)
    task = asyncio.create_task(lim.acquire())
    await settle()
    clock.advance(29)
    await settle()
    assert not task.done()
    clock.advance(1)
    await settle()
    assert task.done()


async def test_limit_learnt_from_headers_only_lowers():
    lim = SlidingWindowLimiter(30, clock=ManualClock())
    lim.lower_limit(100)
    assert lim.per_window == 30
    lim.lower_limit(15)
    assert lim.per_window == 15


async def test_a_slot_counts_while_in_flight_and_for_a_window_after_its_response():
    clock = ManualClock(start=0.0)
    lim = SlidingWindowLimiter(2, window_s=60, margin_s=1, clock=clock)
    release = asyncio.Event()

    async def request() -> None:
        async with lim.slot():
            await release.wait()

    held = [asyncio.create_task(request()) for _ in range(2)]
    await settle()
    third = asyncio.create_task(lim.acquire())
    clock.advance(1000)  # long past a window after they were granted: still in flight
    await settle()
    assert not third.done() and lim.in_flight == 2 and lim.used() == 2
    release.set()  # both responses are in at t=1000
    await settle()
    assert all(t.done() for t in held) and not third.done()
    clock.advance(60.5)
    await settle()
    assert not third.done()
    clock.advance(0.6)
    await settle()
    assert third.done() and lim.used() == 1


async def test_a_slot_is_given_back_when_its_request_fails():
    clock = ManualClock(start=0.0)
    lim = SlidingWindowLimiter(1, window_s=60, margin_s=0, clock=clock)
    try:
        async with lim.slot():
            raise ConnectionResetError
    except ConnectionResetError:
        pass
    assert lim.in_flight == 0 and lim.used() == 1
    clock.advance(60)
    assert lim.used() == 0


@pytest.mark.parametrize("seed", range(5))
async def test_arrivals_never_exceed_the_budget_in_any_window_however_late_requests_arrive(seed):
    """What Make sees: each request arrives some time after it was granted (a busy machine,
    a connection pool, a slow handshake) and is answered some time after that."""
    rng = random.Random(seed)
    clock = ManualClock(start=0.0)
    lim = SlidingWindowLimiter(5, window_s=60, margin_s=0, clock=clock)
    arrivals: list[float] = []

    async def caller() -> None:
        for _ in range(4):
            async with lim.slot():
                await clock.sleep(rng.choice([0.0, 0.5, 3.0, 15.0, 40.0]))  # on its way
                arrivals.append(clock.time())
                await clock.sleep(rng.choice([0.0, 0.5, 2.0, 20.0]))  # being answered

    tasks = [asyncio.create_task(caller()) for _ in range(6)]
    while not all(t.done() for t in tasks):
        await settle()
        clock.advance(0.5)
    assert len(arrivals) == 24
    worst = max(sum(1 for u in arrivals if t <= u < t + 60) for t in arrivals)
    assert worst <= 5


async def test_requests_seeded_from_a_previous_holder_count_against_the_budget():
    # A replica taking an organization's lease seeds its limiter with the requests the
    # previous holder made (watcher.replicas): together they never exceed the budget.
    clock = ManualClock(start=1000.0)
    lim = SlidingWindowLimiter(3, window_s=60, margin_s=1, clock=clock)
    lim.seed([950.0, 990.0])
    assert lim.recent() == [950.0, 990.0]
    await lim.acquire()  # 2 seeded + 1 = the budget
    blocked = asyncio.create_task(lim.acquire())
    await settle()
    assert not blocked.done()
    clock.advance(11.5)  # 950 + 61 s: the oldest seeded request leaves the window
    await settle()
    assert blocked.done()
    assert lim.recent() == [990.0, 1000.0, 1011.5]
    lim.seed([900.0])  # older than the window: forgotten at once
    assert lim.recent() == [990.0, 1000.0, 1011.5]


async def test_what_a_replica_hands_over_counts_the_requests_in_flight():
    clock = ManualClock(start=1000.0)
    lim = SlidingWindowLimiter(5, clock=clock)
    await lim.acquire()
    clock.advance(1)
    async with lim.slot():
        assert lim.recent() == [1000.0, 1001.0]  # the one in flight reaches Make after now
    assert lim.recent() == [1000.0, 1001.0]
