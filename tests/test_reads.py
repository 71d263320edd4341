"""Which pending scenarios a cycle reads (watcher.reads) and what a counter step says
(watcher.steps): pure functions, clock injected as plain numbers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.reads import DEACTIVATED, choose_reads, priority, read_cost, round_robin_s, signals_of
from watcher.steps import WARMUP_STEPS, StepProfile

NOW = 1_790_000_000.0


def row(sid: int, reason: str = "counters", last: float | None = NOW - 600, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "is_active": 1,
        "pending_since": NOW - 60,
        "pending_reason": reason,
        "last_checked_at": last,
        "scheduling": {"interval": 900},
        **extra,
    }


def ids(chosen: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [r["id"] for _, r in chosen]


def test_signals_come_first_then_the_floor_oldest_first_then_likelihood():
    rows = [
        row(1, last=NOW - 100),  # read lately: likelihood only
        row(2, last=NOW - 5000),  # overdue on the floor (round robin 2000 s)
        row(3, reason="partial", last=NOW - 50),
        row(4, last=NOW - 9000),  # longest unread: first of the floor
        row(5, reason="counters,state", last=NOW - 10),
        row(6, last=NOW - 200, runs_seen=10, errors_seen=9),  # flaky: high likelihood
    ]
    chosen = choose_reads(rows, NOW, allowance=10, round_robin=2000.0, interval_s=60.0)
    assert ids(chosen) == [5, 3, 4, 2, 6, 1]
    assert [band for band, _ in chosen] == ["signals", "signals", "floor", "floor", "likelihood", "likelihood"]


def test_the_floor_takes_what_is_due_by_the_next_cycle():
    # Round robin 2000 s: read 1950 s ago is due before the next cycle (60 s), 1900 s is not.
    rows = [row(1, last=NOW - 1900), row(2, last=NOW - 1950)]
    chosen = choose_reads(rows, NOW, allowance=1, round_robin=2000.0, interval_s=60.0)
    assert [(b, r["id"]) for b, r in chosen] == [("floor", 2)]


def test_the_allowance_holds_except_for_a_deactivation():
    rows = [row(i) for i in range(10)] + [row(99, reason=f"{DEACTIVATED}1")]
    chosen = choose_reads(rows, NOW, allowance=3)
    assert ids(chosen)[0] == 99 and len(chosen) == 3  # it counts against the allowance...
    assert ids(choose_reads(rows, NOW, allowance=0)) == [99]  # ...and is read without one


def test_a_dlq_read_costs_two_and_is_skipped_when_only_one_request_is_left():
    rows = [row(1, reason="partial"), row(2, reason="dlq"), row(3, last=NOW - 9000)]
    # The DLQ read goes first (an incomplete execution was stored), then the unusual step.
    assert ids(choose_reads(rows, NOW, allowance=3, round_robin=2000.0)) == [2, 1]
    # With one request left the DLQ read does not fit, the others still do.
    assert ids(choose_reads(rows, NOW, allowance=2 - 1, round_robin=2000.0)) == [1]
    assert read_cost(row(2, reason="dlq")) == 2 and read_cost(row(1)) == 1


def test_signals_of_a_row():
    assert signals_of(row(1, reason="counters,dlq,partial")) == ["dlq", "partial"]
    assert signals_of(row(1, reason=f"counters,{DEACTIVATED}3")) == ["state"]
    assert signals_of(row(1)) == []


def test_a_newstep_is_the_last_signal():
    newstep = priority(row(1, reason="counters,newstep"), NOW)
    assert 1.0 < newstep < priority(row(2, reason="counters,partial"), NOW)


def test_priority_ranks_signals_above_any_likelihood():
    base = row(1, last=NOW - 10**7, runs_seen=10, errors_seen=10)
    assert priority(base, NOW) <= 1.0
    ranks = [priority(row(1, reason=r), NOW) for r in ("partial", "dlq", "state")]
    assert min(ranks) > 1.0 and ranks == sorted(ranks)


def test_round_robin_period():
    assert round_robin_s(1000, 30) == pytest.approx(2000.0)
    assert round_robin_s(10, 0) == 600.0  # a budget of 0 counts as 1


def simulate(n: int, reads_per_cycle: int, cycles: int, hinted_every: int) -> tuple[float, float]:
    """n scenarios that all move every cycle, read reads_per_cycle at a time, a hint now and
    then; returns the longest gap between two reads of one scenario, and round robin's."""
    period = round_robin_s(n, reads_per_cycle)  # one cycle a minute: reads per minute
    last = {i: NOW - 60.0 * (i % (n // reads_per_cycle + 1)) for i in range(n)}
    longest = 0.0
    for c in range(cycles):
        now = NOW + 60.0 * c
        pend = [
            row(i, reason="counters,partial" if hinted_every and (i * 7 + c) % hinted_every == 0 else "counters", last=last[i])
            for i in range(n)
        ]
        for _, r in choose_reads(pend, now, reads_per_cycle, round_robin=period, interval_s=60.0):
            longest = max(longest, now - last[r["id"]])
            last[r["id"]] = now
    return longest, period


def test_with_every_scenario_pending_the_floor_is_a_round_robin():
    longest, period = simulate(200, 10, 200, hinted_every=0)
    assert longest <= period + 60.0


def test_hints_lengthen_the_floor_only_by_the_reads_they_take():
    # About one hint in 200 rows a cycle: a few reads a cycle go to signals.
    longest, period = simulate(200, 10, 300, hinted_every=97)
    assert longest <= period * 10 / (10 - 3) + 60.0


def test_first_step_hints_cannot_starve_the_floor():
    # At 10,000 scenarios the hints alone outnumber the allowance every cycle; uncapped they
    # took it all and a scenario that never gave one was never read (bench/detect.py -c).
    from watcher.reads import HINT_SHARE

    hints = [row(i, reason="newstep", last=NOW - 100) for i in range(100, 140)]
    overdue = [row(i, last=NOW - 9000 - i) for i in range(1, 21)]
    exact = [row(200, reason="partial", last=NOW - 50)]
    chosen = choose_reads([*hints, *overdue, *exact], NOW, 20, round_robin=2000.0)
    bands = [band for band, _ in chosen]
    cap = int(20 * HINT_SHARE)
    assert ids(chosen)[0] == 200  # an exact signal still goes first
    assert bands.count("signals") == 1 + cap
    assert bands.count("floor") == 20 - 1 - cap
    # With nothing due on the floor the hints take what is left, as before.
    chosen = choose_reads([*hints, *exact], NOW, 20, round_robin=2000.0)
    assert [band for band, _ in chosen] == ["signals"] * 20


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["counters", "partial", "dlq", "counters,state", "new"]),
            st.floats(min_value=0, max_value=20_000),
        ),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=20),
)
def test_no_likelihood_read_is_chosen_while_a_due_floor_row_waits(spec: list[tuple[str, float]], allowance: int):
    rows = [row(i, reason=reason, last=NOW - ago) for i, (reason, ago) in enumerate(spec)]
    chosen = choose_reads(rows, NOW, allowance, round_robin=2000.0, interval_s=60.0)
    assert sum(read_cost(r) for _, r in chosen) <= allowance
    assert len({r["id"] for _, r in chosen}) == len(chosen)
    picked = {r["id"] for _, r in chosen}
    due = [r for r in rows if priority(r, NOW) < 1.5 and r["last_checked_at"] <= NOW + 60 - 2000]
    if any(band == "likelihood" for band, _ in chosen):
        assert all(r["id"] in picked for r in due)


# --- steps -----------------------------------------------------------------------------------


def learnt(*steps: int) -> StepProfile:
    p = StepProfile()
    for s in steps:
        p.observe(s, 60.0, 900.0)
    return p


def test_a_step_no_usual_run_makes_hints_at_a_failure():
    p = learnt(1, 6, 1, 1, 6, 1)  # check runs (1 operation) and full runs (6)
    assert p.usual() == [1, 6]
    assert p.observe(3, 60.0, 900.0) == "partial"  # stopped at module 3
    assert p.observe(6, 60.0, 900.0) is None
    assert p.observe(1, 60.0, 900.0) is None  # a check run, or a failure at the trigger: unseen


def test_a_bigger_step_is_a_bigger_run_not_a_failure():
    p = learnt(1, 6, 1, 6)
    assert p.observe(9, 60.0, 900.0) is None
    assert 9 in p.usual()


def test_the_first_step_bigger_than_a_check_run_is_a_weak_hint():
    p = learnt(1, 1, 1, 1)  # only check runs so far
    assert p.observe(6, 60.0, 900.0) == "newstep"  # a first full run, or a failed one
    assert 6 not in p.usual()  # not learnt until its read finds no failure
    p.learn(6)
    assert p.observe(3, 60.0, 900.0) == "partial"


def test_several_runs_between_listings_make_one_step():
    p = learnt(1, 5, 1, 5, 1)
    # 12 minutes between listings of a 5-minute schedule: up to 3 runs (5 + 5 + 1 = 11)
    assert p.observe(11, 720.0, 300.0) is None
    # 1 minute: one run at most, so 2 (= 1 + 1) is no usual single run
    assert p.observe(2, 60.0, 300.0) == "partial"


def test_no_hint_before_a_few_steps_are_known():
    p = StepProfile()
    assert [p.observe(s, 60.0, 900.0) for s in [5] * WARMUP_STEPS] == [None] * WARMUP_STEPS
    assert p.observe(2, 60.0, 900.0) == "partial"


def test_a_false_hint_teaches_its_value():
    p = learnt(1, 8, 1, 8, 1)
    assert p.observe(4, 60.0, 900.0) == "partial"
    p.learn(4)  # the read found no failure
    assert p.observe(4, 60.0, 900.0) is None


def test_the_profile_survives_json_and_stays_small():
    p = learnt(*range(1, 60))
    data = p.to_json()
    again = StepProfile.from_json(data)
    assert again.usual() == p.usual() and again.seen == p.seen
    assert len(again.weights) <= 24
    assert StepProfile.from_json({"w": {"x": "y", "3": 1.0}, "n": "bad"}).weights == {3: 1.0}
    assert StepProfile.from_json(None).seen == 0
