"""MakeClient's signal reads (analytics, notifications) against the simulator on a real socket,
and their tolerant parsers fed the shapes Make might send (the real ones are unknown)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from watcher.clock import ManualClock
from watcher.make import (
    AnalyticsEntry,
    MakeApiError,
    MakeClient,
    Notification,
    scenario_name_from_subject,
)
from watcher.make.models import MalformedEntry, error_rate_fraction, find_entries
from watcher.simulator import World
from watcher.simulator.signal_routes import analytics_entry
from watcher.simulator.world import to_ms

T0 = 1_782_993_600.0  # 2026-07-02T12:00:00Z
FIXTURES = Path(__file__).parent / "fixtures"


def enterprise(clock: ManualClock, n: int = 6, plan: str = "enterprise") -> tuple[World, str]:
    world = World(seed=21, clock=clock)
    org = world.add_organization("Umbrella", plan=plan)
    ops, sales = world.add_team(org.id, name="Ops"), world.add_team(org.id, name="Sales")
    for i in range(n):
        world.add_scenario((ops, sales)[i % 2].id, name=f"Flow {i:03}", interval_s=300,
                           error_rate=0.4, max_errors=0)  # fmt: skip
    return world, world.add_token([org.id])


def org_id(world: World) -> int:
    return next(iter(world.organizations))


# ------------------------------------------------------------------ analytics


async def test_organization_analytics_reads_every_page_as_the_simulator_counts(start_sim) -> None:
    clock = ManualClock(T0)
    world, token = enterprise(clock, n=130)
    clock.advance(3600)
    world.advance()
    sim = await start_sim(world)
    client = sim.client(token)
    entries = await client.organization_analytics(
        org_id(world), date_from=date(2026, 7, 2), date_to=date(2026, 7, 2)
    )
    assert sorted(e.scenario_id for e in entries) == sorted(world.scenarios)
    day = to_ms(T0) - to_ms(T0) % 86_400_000
    cutoff = to_ms(clock.time() - world.signals.knobs.analytics_lag_s) + 1
    for e in entries:
        want = analytics_entry(world, world.scenarios[e.scenario_id], day, day + 86_400_000, cutoff)
        assert (e.executions, e.errors, e.operations, e.name, e.team_name, e.status) == (
            want["executions"], want["errors"], want["operations"], want["name"], want["teamName"], "active")  # fmt: skip
        assert e.error_rate == pytest.approx(want["errorRate"] / 100)
    assert sum(e.errors or 0 for e in entries) > 100
    reqs = sim.requests(path_prefix="/api/v2/analytics/")
    assert len(reqs) == 2 and client.requests_sent == 2  # 100 + 30, through the limiter
    assert (
        reqs[0].query["timeframe[dateFrom]"] == "2026-07-02"
        and reqs[1].query["pg[offset]"] == "100"
    )
    assert client.limiter.used() == 2


async def test_organization_analytics_filters_teams_and_sends_datetimes_in_utc(start_sim) -> None:
    clock = ManualClock(T0)
    world, token = enterprise(clock)
    sim = await start_sim(world)
    sales = world.organizations[org_id(world)].team_ids[1]
    since = datetime(2026, 7, 2, 14, 0, tzinfo=UTC)
    entries = await sim.client(token).organization_analytics(
        org_id(world), date_from=since, date_to="2026-07-02", team_ids=[sales]
    )
    assert {e.team_name for e in entries} == {"Sales"} and len(entries) == 3
    (req,) = sim.requests(path_prefix="/api/v2/analytics/")
    assert (
        req.query["teamId[]"] == [str(sales)]
        and req.query["timeframe[dateFrom]"] == "2026-07-02T14:00:00.000Z"
    )


async def test_organization_analytics_of_a_plan_without_it_is_a_403_not_retried(start_sim) -> None:
    clock = ManualClock(T0)
    world, token = enterprise(clock, plan="teams")
    sim = await start_sim(world)
    client = sim.client(token, max_attempts=4)
    with pytest.raises(MakeApiError) as info:
        await client.organization_analytics(
            org_id(world), date_from=date(2026, 7, 1), date_to=date(2026, 7, 2)
        )
    assert info.value.status == 403 and info.value.is_auth_error and not info.value.retryable
    assert client.requests_sent == 1


# ------------------------------------------------------------------ notifications


async def test_notifications_return_the_newest_oldest_first_and_stop_at_since_id(start_sim) -> None:
    clock = ManualClock(T0)
    world, token = enterprise(clock)
    world.signals.knobs.update({"notification_missing_share": 0})
    clock.advance(6 * 3600)
    world.advance()
    sim = await start_sim(world)
    client = sim.client(token)
    everything = await client.notifications(limit=1000)
    assert len(everything) > 30
    ids = [int(n.id) for n in everything]
    assert ids == sorted(ids)
    assert all(n.scenario_name in {s.name for s in world.scenarios.values()} for n in everything)
    assert all(not n.read and n.type == 1 and n.created is not None for n in everything)

    before = len(sim.requests(path_prefix="/api/v2/notifications"))
    newest = await client.notifications(limit=5, page_size=2)
    assert [n.id for n in newest] == [n.id for n in everything[-5:]]
    assert (
        len(sim.requests(path_prefix="/api/v2/notifications")) == before + 3
    )  # pages of 2 until 5

    before = len(sim.requests(path_prefix="/api/v2/notifications"))
    newer = await client.notifications(since_id=everything[-3].id, page_size=10)
    assert [n.id for n in newer] == [n.id for n in everything[-2:]]
    assert len(sim.requests(path_prefix="/api/v2/notifications")) == before + 1

    world.signals.mark_read(clock.time(), [everything[-1].id])
    unread = await client.notifications(unread_only=True, limit=1000)
    assert [n.id for n in unread] == [n.id for n in everything[:-1]]
    assert sim.requests(path_prefix="/api/v2/notifications")[-1].query["unreadOnly"] == "true"
    read = (await client.notifications(limit=1))[0]
    assert read.read and read.read_at == datetime.fromtimestamp(clock.time(), tz=UTC)


async def test_notifications_need_their_scope(start_sim) -> None:
    clock = ManualClock(T0)
    world, _ = enterprise(clock)
    narrow = world.add_token([org_id(world)], scopes=["scenarios:read"])
    sim = await start_sim(world)
    with pytest.raises(MakeApiError) as info:
        await sim.client(narrow).notifications()
    assert info.value.status == 403 and not info.value.retryable


# ------------------------------------------------------------------ odd answers, from a server


async def serve(aiohttp_server, answers: list[Any]) -> str:
    """A server answering successive GETs with ``answers`` (the last one repeated)."""

    async def handler(request: web.Request) -> web.Response:
        body = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return str((await aiohttp_server(app)).make_url("/api/v2"))


async def test_unknown_wrappers_and_malformed_entries_are_read_skipped_and_counted(
    aiohttp_server, caplog
) -> None:
    analytics = json.loads((FIXTURES / "analytics.json").read_text())["analytics"]
    notices = json.loads((FIXTURES / "notifications.json").read_text())
    url = await serve(aiohttp_server, [{"rows": analytics, "pg": {}}])
    caplog.set_level(logging.WARNING, logger="watcher.make.client")
    async with aiohttp.ClientSession() as session:
        client = MakeClient(session, url, "t", clock=ManualClock(T0), max_attempts=1)
        entries = await client.organization_analytics(
            1, date_from="2026-07-01", date_to="2026-07-02"
        )
        assert [e.scenario_id for e in entries] == [410001, 410002, 410003]
        assert client.entries_skipped == 1
        renamed = {
            "items": notices["notifications"],
            "userZoneNotifications": notices["userZoneNotifications"],
        }
        client2 = MakeClient(
            session,
            await serve(aiohttp_server, [renamed]),
            "t",
            clock=ManualClock(T0),
            max_attempts=1,
        )
        got = await client2.notifications()
        assert [n.id for n in got] == ["41000009", "41000010", "41000011", "41000012"]
        assert client2.entries_skipped == 1
        client3 = MakeClient(
            session,
            await serve(aiohttp_server, [{"nothing": 1}]),
            "t",
            clock=ManualClock(T0),
            max_attempts=1,
        )
        with pytest.raises(MakeApiError) as info:
            await client3.notifications()
        assert info.value.code == "MALFORMED" and not info.value.retryable
    assert sum("skipping malformed" in r.getMessage() for r in caplog.records) == 2


async def test_a_server_that_ignores_the_offset_does_not_loop_for_ever(aiohttp_server) -> None:
    page = {"analytics": [{"scenarioId": i, "executions": 1} for i in range(100)]}
    feed = {"notifications": [{"id": str(1000 - i), "subject": "x"} for i in range(100)]}
    async with aiohttp.ClientSession() as session:
        client = MakeClient(
            session, await serve(aiohttp_server, [page]), "t", clock=ManualClock(T0), max_attempts=1
        )
        assert (
            len(
                await client.organization_analytics(1, date_from="2026-07-01", date_to="2026-07-02")
            )
            == 100
        )
        assert client.requests_sent == 2  # the second page brought nothing new
        client = MakeClient(
            session, await serve(aiohttp_server, [feed]), "t", clock=ManualClock(T0), max_attempts=1
        )
        assert len(await client.notifications(limit=500)) == 100 and client.requests_sent == 2


# ------------------------------------------------------------------ the parsers


def test_the_fixture_analytics_entries_parse_with_their_guessed_units() -> None:
    rows = json.loads((FIXTURES / "analytics.json").read_text())["analytics"]
    first, second, third = (AnalyticsEntry.parse(r) for r in rows[:3])
    assert (first.scenario_id, first.executions, first.errors, first.error_rate) == (
        410001,
        310,
        31,
        pytest.approx(0.1),
    )
    assert (first.operations_change, first.error_rate_change, first.team_id) == (12.5, None, 88001)
    assert (second.scenario_id, second.operations, second.error_rate, second.status) == (
        410002,
        96,
        1.0,
        "invalid",
    )
    assert (third.scenario_id, third.name, third.error_rate, third.team_id) == (
        410003,
        "Nightly export",
        0.125,
        None,
    )
    with pytest.raises(MalformedEntry):
        AnalyticsEntry.parse(rows[3])


@pytest.mark.parametrize(
    ("value", "errors", "executions", "fraction"),
    [
        (10.0, 31, 310, 0.1),  # percent
        (0.1, 31, 310, 0.1),  # fraction
        (0.1, 1, 1000, 0.001),  # 0.1 % is closer to 1/1000 than 10 % is
        ("12.5%", None, None, 0.125),
        ("0.25", None, None, 0.25),  # ambiguous, no counts: a fraction
        (50, None, None, 0.5),
        (None, 2, 8, 0.25),  # missing: from the counts
        ("n/a", 0, 0, None),
        (float("nan"), None, None, None),
        (250, None, None, None),  # neither a fraction nor a percent
        (-3, 1, 4, 0.25),
    ],
)
def test_error_rate_is_a_fraction_whatever_the_unit(value, errors, executions, fraction) -> None:
    got = error_rate_fraction(value, errors, executions)
    assert got == (None if fraction is None else pytest.approx(fraction))


@pytest.mark.parametrize(
    ("read", "is_read", "read_at"),
    [
        (None, False, None),
        ("false", False, None),
        ("", False, None),
        (False, False, None),
        ("2021-05-14T11:35:22.837Z", True, datetime(2021, 5, 14, 11, 35, 22, 837000, tzinfo=UTC)),
        ("true", True, None),
        (True, True, None),
        (1_620_991_522_837, True, datetime(2021, 5, 14, 11, 25, 22, 837000, tzinfo=UTC)),
        ({"at": 1}, True, None),
    ],
)
def test_read_is_null_false_or_a_time(read, is_read, read_at) -> None:
    n = Notification.parse({"id": "3", "subject": "s", "read": read})
    assert (n.read, n.read_at) == (is_read, read_at)


def test_notification_ids_may_be_text_or_numbers_but_not_missing() -> None:
    assert Notification.parse({"id": 41}).id == "41"
    assert Notification.parse({"id": " 42 "}).id == "42"
    for bad in ({"id": None}, {"id": True}, {"id": ""}, {"id": [1]}, {"subject": "x"}, "x", None):
        with pytest.raises(MalformedEntry):
            Notification.parse(bad)


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("Encountered error in Integration HTTP scenario", "Integration HTTP"),
        ("Encountered error in My scenario scenario", "My scenario"),
        ("encountered an error in   Orders  to ERP scenario.", "Orders to ERP"),
        ('Encountered errors in "Leads to CRM" scenario', "Leads to CRM"),
        ("Encountered error in the scenario Nightly export", "Nightly export"),
        ("Encountered error in scenario: Nightly export", "Nightly export"),
        ("Encountered error in “Sync” scenario", "Sync"),
        ("Your organization has used 90% of its credits", None),
        ("Encountered error in  scenario", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_scenario_name_from_subject(subject, name) -> None:
    assert scenario_name_from_subject(subject) == name


def test_find_entries_takes_the_key_else_the_first_list_of_objects() -> None:
    assert find_entries({"analytics": [1]}, "analytics") == [1]
    assert find_entries([{"a": 1}], "analytics") == [{"a": 1}]
    assert find_entries({"pg": [{"x": 1}], "tags": ["a"], "rows": [{"a": 1}]}, "analytics") == [
        {"a": 1}
    ]
    assert find_entries({"data": {"scenarios": [{"a": 1}]}}, "analytics") == [{"a": 1}]
    assert find_entries({"rows": []}, "analytics") == []
    assert (
        find_entries({"count": 3}, "analytics") is None and find_entries("x", "analytics") is None
    )
