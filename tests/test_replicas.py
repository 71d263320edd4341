"""watcher.replicas: several ``makewatch run`` on one PostgreSQL (issue 18)."""

from __future__ import annotations

import pytest

from watcher.leases import PreviousHolder
from watcher.replicas import takeover_budget


def test_a_released_lease_hands_over_exactly_the_requests_it_reported() -> None:
    previous = PreviousHolder(holder=None, renewed_at=1000.0, budget=[950.0, 990.0, 999.0])
    assert takeover_budget(previous, now=1005.0, ttl_s=30.0) == [950.0, 990.0, 999.0]


def test_a_dead_holder_is_assumed_to_have_gone_on_at_its_pace_until_its_lease_expired() -> None:
    # 6 requests in the minute before its last renewal: 0.1 per second; it may have gone on
    # for the 30 s its lease still ran: 3 more, spread over them.
    budget = [945.0, 955.0, 965.0, 975.0, 985.0, 995.0]
    previous = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=budget)
    seeded = takeover_budget(previous, now=1031.0, ttl_s=30.0)
    # What fell out of the window since (945-965) is left out.
    assert seeded == pytest.approx([975.0, 985.0, 995.0, 1010.0, 1020.0, 1030.0])
    # Taken over before the lease ran out (a release lost in transit): only until now.
    assert takeover_budget(previous, now=1015.0, ttl_s=30.0) == pytest.approx([965.0, 975.0, 985.0, 995.0, 1015.0])


def test_requests_older_than_the_window_are_not_seeded() -> None:
    previous = PreviousHolder(holder="a:1:x", renewed_at=1000.0, budget=[900.0, 990.0])
    # One request in the last minute before the renewal (990): 0.5 more over 30 s, none
    # added; the reported ones are over a minute old by now.
    assert takeover_budget(previous, now=1100.0, ttl_s=30.0) == []
    assert takeover_budget(None, now=1100.0, ttl_s=30.0) == []
