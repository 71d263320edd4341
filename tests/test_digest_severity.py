"""What the digest puts first and what it leaves out (alerts.digest, digest templates).

Small stores seeded per test, in Europe/Paris, a daily period 08:00 to 08:00 and a fixed
``now``: which organization comes first, which warning keeps "All quiet" away, which rows of
zeros are dropped, what an average is based on, where webhook backlogs go.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.digest import Digest, build_digest
from alerts.render import Renderer
from watcher.store import Store, insert_events

PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 11, 9, 8, tzinfo=PARIS).timestamp()
END = datetime(2026, 11, 10, 8, tzinfo=PARIS).timestamp()
NOW = END + 60
UI = "https://eu1.make.com"


def organization(org_id: int, name: str, **usage: Any) -> dict[str, Any]:
    return {"id": org_id, "name": name, "base_url": f"{UI}/api/v2", "usage_json": json.dumps(usage), "updated_at": NOW}


def polled(db: Any, org_id: int) -> None:
    db["cycles"].insert_all(
        [{"org_id": org_id, "started_at": START + h * 3600, "requests": 2, "budget_per_minute": 30, "ok": 1} for h in range(24)]
    )


def scenario(sid: int, org_id: int, name: str, **columns: Any) -> dict[str, Any]:
    return {"id": sid, "org_id": org_id, "team_id": 7, "name": name, "is_active": 1, "is_invalid": 0, "dlq_count": 0} | columns


def event(key: str, kind: str, org_id: int, sid: int | None, at: float, **payload: Any) -> dict[str, Any]:
    return {"key": key, "kind": kind, "org_id": org_id, "team_id": 7, "scenario_id": sid, "occurred_at": at, "payload": payload}


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[[Callable[[Any], None]], Store]]:
    opened: list[Store] = []

    def make(seed: Callable[[Any], None]) -> Store:
        store = Store.open(tmp_path / f"s{len(opened)}.db")
        opened.append(store)
        store.write_sync(seed)
        return store

    yield make
    for store in opened:
        store.close()


def digest_of(store: Store) -> Digest:
    return store.read_sync(
        lambda db: build_digest(
            db, period_start=START, period_end=END, timezone="Europe/Paris", organizations=None, now=NOW
        )
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def flat(text: str) -> str:
    return " ".join(text.split())


def visible(source: str) -> str:
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.parts.append(" ")

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    page = Text()
    page.feed(source)
    return flat("".join(page.parts))


def test_organizations_come_worst_first_not_by_name(make_store: Any, renderer: Renderer) -> None:
    def seed(db: Any) -> None:
        db["organizations"].insert_all(
            [organization(1, "Alpha"), organization(2, "Beta"), organization(3, "Zulu")]
        )
        for org_id in (1, 2, 3):
            polled(db, org_id)
        # Alpha: one error. Zulu: a scenario Make switched off (worse). Beta: nothing.
        db["scenarios"].insert_all(
            [scenario(11, 1, "A1"), scenario(31, 3, "Z1", is_active=0, is_invalid=1)]
        )
        insert_events(db, [event("e1", "execution_error", 1, 11, START + 60, error_name="DataError")])

    d = digest_of(make_store(seed))
    assert [o.name for o in d.organizations] == ["Zulu", "Alpha", "Beta"]
    assert d.worst_problem is not None and (d.worst_problem.org, d.worst_problem.text) == (
        "Zulu",
        "1 scenario switched off by Make",
    )
    _, text, source = renderer.render_digest(d)
    for part in (flat(text), visible(source)):
        assert part.index("Zulu") < part.index("Alpha") < part.index("Beta")


def test_a_forecast_that_runs_out_before_the_reset_is_a_warning_at_40_percent(
    make_store: Any, renderer: Renderer
) -> None:
    def seed(db: Any) -> None:
        db["organizations"].insert(
            organization(
                1, "Acme", operations_used=400, operations_limit=1000, used_pct=40.0, daily_rate=100.0,
                forecast_exhausted_at=NOW + 6 * 86400, next_reset=NOW + 20 * 86400,
            )
        )
        polled(db, 1)

    d = digest_of(make_store(seed))
    acme = d.organizations[0]
    assert acme.quota is not None and acme.quota.level == "warning" and acme.quota.exhausts_before_reset
    assert not d.quiet and not acme.quiet
    subject, text, source = renderer.render_digest(d)
    assert "all quiet" not in subject.lower()
    assert "quota 40 %, runs out before the reset (Acme)" in subject
    for part in (flat(text), visible(source)):
        assert "All quiet" not in part
        assert "WARNING: the quota runs out before the reset" in part


def test_averages_use_complete_days_only_and_say_how_many(make_store: Any, renderer: Renderer) -> None:
    today = datetime.fromtimestamp(NOW, ZoneInfo("UTC")).date()
    days = [
        {"date": f"2026-11-0{n}", "operations": 300, "centicredits": 0} for n in range(4, 10)
    ] + [{"date": today.isoformat(), "operations": 20, "centicredits": 0}]  # today: running

    def seed(db: Any) -> None:
        db["organizations"].insert(
            organization(
                1, "Acme", operations_used=4000, operations_limit=10000, used_pct=40.0,
                daily_rate=260.0, days=days, forecast_exhausted_at=NOW + 23 * 86400, next_reset=NOW + 25 * 86400,
                updated_at=NOW,
            )
        )
        polled(db, 1)

    d = digest_of(make_store(seed))
    q = d.organizations[0].quota
    assert q is not None
    # 6 complete days at 300; the poller's 260 counted today's 20.
    assert (q.daily_rate, q.rate_days) == (300.0, 6)
    # The forecast follows: 6,000 left at 300 a day is 20 days, before the reset in 25.
    assert q.forecast_exhausted_at is not None and q.forecast_exhausted_at.epoch == NOW + 20 * 86400
    assert q.exhausts_before_reset
    _, text, source = renderer.render_digest(d)
    for part in (flat(text), visible(source)):
        assert "300 a day on average over 6 complete days" in part


def test_rows_of_zeros_are_left_out(make_store: Any, renderer: Renderer) -> None:
    def seed(db: Any) -> None:
        db["organizations"].insert_all([organization(1, "Acme"), organization(2, "Calm")])
        polled(db, 1)
        polled(db, 2)
        db["scenarios"].insert(scenario(11, 1, "Orders", is_active=0, is_invalid=1))

    d = digest_of(make_store(seed))
    _, text, source = renderer.render_digest(d)
    for part in (flat(text), visible(source)):
        assert "Switched off" not in part or "Still off now: 1 scenario" in part
        assert "Notifications:" not in part  # nothing sent, nothing held back
        assert "0 grouped" not in part and "0 silenced" not in part
        assert "Errors: none" not in part
        assert "Errors per digest period" not in part  # every bar would be 0


def test_zero_counts_are_left_out_of_a_row_that_has_some(make_store: Any, renderer: Renderer) -> None:
    def seed(db: Any) -> None:
        db["organizations"].insert(organization(1, "Acme"))
        polled(db, 1)
        insert_events(db, [event("e1", "execution_error", 1, None, START + 5, error_name="DataError")])
        db["outbox"].insert(
            {"channel": "mail", "kind": "firing", "status": "sent", "attempts": 1, "created_at": START,
             "sent_at": START + 10, "payload_json": json.dumps({"alert": {"org_id": 1}})}
        )

    _, text, source = renderer.render_digest(digest_of(make_store(seed)))
    for part in (flat(text), visible(source)):
        assert "Notifications: 1 sent (mail 1)" in part
        assert "held back" not in part and "inhibited" not in part


def test_webhook_backlogs_and_incomplete_executions_have_their_own_sections(
    make_store: Any, renderer: Renderer
) -> None:
    def seed(db: Any) -> None:
        db["organizations"].insert(organization(1, "Acme"))
        polled(db, 1)
        db["scenarios"].insert_all([scenario(11, 1, "Orders", dlq_count=2), scenario(12, 1, "Leads")])
        insert_events(
            db,
            [
                event("h1", "hook_backlog", 1, 12, START + 600, hook_id=5, hook_name="Leads hook", queue_count=900, queue_limit=1000),
                event("h2", "hook_backlog", 1, None, START - 86400, hook_id=6, hook_name="Old hook", queue_count=50, queue_limit=100, recovered=True),
                event("d1", "incomplete_executions", 1, 11, START + 700, reason="Timeout"),
            ],
        )

    d = digest_of(make_store(seed))
    acme = d.organizations[0]
    assert [(h.hook_name, h.queue_count, h.queue_limit, h.backlogged_now) for h in acme.hooks] == [
        ("Leads hook", 900, 1000, True)
    ]
    assert d.hooks_backlogged == 1
    assert [p.text for p in acme.problems if "webhook" in p.text] == ["1 webhook queue backlogged"]
    _, text, source = renderer.render_digest(d)
    for part in (flat(text), visible(source)):
        hooks = part.index("Webhook backlogs: 1 webhook queue backlogged now")
        dlq = part.index("Incomplete executions: 2 waiting in 1 scenario")
        assert "Leads hook (Leads): 900 of 1,000 queued at 2026-11-09 08:10 CET" in part
        assert "Old hook" not in part  # recovered before the period
        assert hooks != dlq
