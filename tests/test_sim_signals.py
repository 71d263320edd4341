"""The simulator's cheap signals (analytics, notifications, operations per run) and their
imperfections, over real sockets on 127.0.0.1, on a ManualClock. Statistical claims use fixed
seeds: the figures are deterministic, the bounds say what the knob promises."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from watcher.clock import ManualClock
from watcher.simulator import World, create_app
from watcher.simulator.api import FORBIDDEN
from watcher.simulator.world import iso_ms, to_ms

T0 = 1_782_993_600.0  # 2026-07-02T12:00:00Z: noon, so an hour either side stays in the day


class Sim:
    def __init__(self, world: World, clock: ManualClock, client: Any) -> None:
        self.world, self.clock, self.client = world, clock, client
        self.org = next(iter(world.organizations.values()))
        self.token = world.tokens_by_org[self.org.id]

    async def get(self, path: str, token: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Token {token or self.token}"}
        return await self.client.get("/api/v2" + path, params=params, headers=headers)

    async def json(self, path: str, **params: Any) -> Any:
        resp = await self.get(path, **params)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def knobs(self, **changes: Any) -> dict[str, Any]:
        resp = await self.client.post("/_sim/signals", json=changes)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.world.advance()


def signals_world(clock: ManualClock, plan: str = "enterprise", seed: int = 5) -> World:
    world = World(seed=seed, clock=clock)
    org = world.add_organization("Initech", plan=plan)
    ops = world.add_team(org.id, name="Ops")
    sales = world.add_team(org.id, name="Sales")
    for i, (team, rate) in enumerate([(ops, 0.3), (ops, 0.0), (sales, 0.1), (sales, 0.5)]):
        world.add_scenario(team.id, name=f"Flow {i}", interval_s=120, error_rate=rate,
                           check_run_rate=0.3, operations_per_run=4, max_errors=0)  # fmt: skip
    world.add_token([org.id])
    return world


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def sim(aiohttp_client: Any, clock: ManualClock) -> Sim:
    world = signals_world(clock)
    return Sim(world, clock, await aiohttp_client(create_app(world)))


def analytics_path(sim: Sim) -> str:
    return f"/analytics/{sim.org.id}"


# ------------------------------------------------------------------ analytics: access


async def test_analytics_needs_the_analytics_scope(sim: Sim) -> None:
    narrow = sim.world.add_token([sim.org.id], scopes=["scenarios:read", "organizations:read"])
    resp = await sim.get(analytics_path(sim), token=narrow)
    assert resp.status == 403 and await resp.json() == FORBIDDEN


async def test_analytics_is_for_enterprise_organizations_only(
    aiohttp_client: Any, clock: ManualClock
) -> None:
    world = signals_world(clock, plan="teams")
    s = Sim(world, clock, await aiohttp_client(create_app(world)))
    first = await s.get(analytics_path(s))
    second = await s.get(analytics_path(s))
    assert (first.status, second.status) == (403, 403) and await first.json() == FORBIDDEN
    # A refused call spends no budget (like the scope check before it).
    assert (
        first.headers["x-ratelimit-remaining"] == second.headers["x-ratelimit-remaining"] == "240"
    )
    org = (await s.json(f"/organizations/{s.org.id}"))["organization"]
    assert "analyticsAccess" not in org["license"]
    await s.knobs(analytics_org_ids=[s.org.id])  # a knob grants it without the plan
    assert (await s.get(analytics_path(s))).status == 200
    assert (await s.json(f"/organizations/{s.org.id}"))["organization"]["license"][
        "analyticsAccess"
    ] is True


async def test_analytics_of_an_unknown_or_foreign_organization_is_refused(sim: Sim) -> None:
    assert (await sim.get("/analytics/1")).status == 404
    other = sim.world.add_organization("Other", plan="enterprise")
    assert (await sim.get(f"/analytics/{other.id}")).status == 403


async def test_analytics_counts_against_the_organization_budget(sim: Sim) -> None:
    first = await sim.get(analytics_path(sim))
    second = await sim.get(analytics_path(sim))
    assert first.headers["x-ratelimit-limit"] == "1000"
    assert (
        int(first.headers["x-ratelimit-remaining"]) - int(second.headers["x-ratelimit-remaining"])
        == 1
    )
    assert [r.org_id for r in sim.world.requests] == [sim.org.id, sim.org.id]


# ------------------------------------------------------------------ analytics: counts


def truth(world: World, sid: int, start_ms: int, end_ms: int) -> tuple[int, int, int]:
    """(executions, errors, operations) of a scenario in [start_ms, end_ms], from its logs
    and the ground-truth ledger."""
    runs = [
        e for e in world.logs(sid) if "status" in e and start_ms <= int(e["imtId"][:13]) <= end_ms
    ]
    errors = [e for e in world.ledger if e.kind == "error" and e.scenario_id == sid
              and start_ms <= to_ms(e.t) <= end_ms]  # fmt: skip
    assert len(errors) == sum(1 for e in runs if e["status"] == 3)
    return len(runs), len(errors), sum(e["operations"] for e in runs)


async def test_analytics_counts_equal_the_worlds_ledger_for_an_exact_timeframe(sim: Sim) -> None:
    await sim.knobs(analytics_lag_s=0, analytics_whole_days=False)
    sim.tick(3 * 3600)
    start_ms, end_ms = to_ms(T0 + 1800), to_ms(T0 + 2 * 3600 + 600)
    body = await sim.json(analytics_path(sim), **{"timeframe[dateFrom]": iso_ms(start_ms),
                                                  "timeframe[dateTo]": iso_ms(end_ms)})  # fmt: skip
    rows = {r["scenarioId"]: r for r in body["analytics"]}
    assert sorted(rows) == sorted(sim.world.scenarios)
    total_errors = 0
    for sid, row in rows.items():
        executions, errors, operations = truth(sim.world, sid, start_ms, end_ms)
        assert (row["executions"], row["errors"], row["operations"]) == (
            executions,
            errors,
            operations,
        )
        assert row["errorRate"] == round(errors / executions * 100, 2)
        total_errors += errors
    assert total_errors > 20  # the comparison had something to compare


async def test_analytics_count_whole_days_and_only_runs_older_than_the_lag(sim: Sim) -> None:
    sim.tick(2 * 3600)
    now_ms = to_ms(sim.clock.time())
    lag_ms = 300_000
    # Bounds inside the day: the default counts the whole UTC day, up to now minus the lag.
    body = await sim.json(analytics_path(sim), **{"timeframe[dateFrom]": iso_ms(now_ms - 60_000),
                                                  "timeframe[dateTo]": iso_ms(now_ms)})  # fmt: skip
    day_start = to_ms(T0) - to_ms(T0) % 86_400_000
    for row in body["analytics"]:
        assert row["executions"], row
        assert (row["executions"], row["errors"], row["operations"]) == truth(
            sim.world, row["scenarioId"], day_start, now_ms - lag_ms
        )
    before = {r["scenarioId"]: r["executions"] for r in body["analytics"]}
    sim.tick(300)  # the runs of the last five minutes now count, and no newer ones
    later = await sim.json(analytics_path(sim), **{"timeframe[dateFrom]": "2026-07-02",
                                                   "timeframe[dateTo]": "2026-07-02"})  # fmt: skip
    for row in later["analytics"]:
        sid = row["scenarioId"]
        assert row["executions"] == truth(sim.world, sid, day_start, now_ms)[0] > before[sid]


async def test_analytics_change_compares_with_the_period_before(sim: Sim) -> None:
    await sim.knobs(
        analytics_lag_s=0, analytics_whole_days=False, analytics_error_rate_unit="fraction"
    )
    sim.tick(2 * 3600)
    mid, end = to_ms(T0 + 3600), to_ms(T0 + 2 * 3600) - 1
    body = await sim.json(analytics_path(sim), **{"timeframe[dateFrom]": iso_ms(mid),
                                                  "timeframe[dateTo]": iso_ms(end)})  # fmt: skip
    for row in body["analytics"]:
        now, before = (
            truth(sim.world, row["scenarioId"], mid, end),
            truth(sim.world, row["scenarioId"], mid - (end + 1 - mid), mid - 1),
        )
        assert row["executionsChange"] == round((now[0] - before[0]) / before[0] * 100, 2)
        assert row["errorRate"] == round(now[1] / now[0], 4) <= 1
        assert row["errorsChange"] == (
            None if before[1] == 0 else round((now[1] - before[1]) / before[1] * 100, 2)
        )


async def test_analytics_pages_filter_and_sort(sim: Sim) -> None:
    team = sim.world.teams[sim.org.team_ids[1]]
    for i in range(9):
        sim.world.add_scenario(team.id, name=f"Extra {i:02}", interval_s=600)
    sim.tick(3600)
    path = analytics_path(sim)
    seen: list[int] = []
    for offset in range(0, 15, 5):
        page = await sim.json(path, **{"pg[offset]": offset, "pg[limit]": 5, "pg[sortBy]": "name"})
        assert page["pg"] == {"sortBy": "name", "sortDir": "asc", "limit": 5, "offset": offset,
                              "returnTotalCount": False}  # fmt: skip
        seen += [r["scenarioId"] for r in page["analytics"]]
    assert len(seen) == len(set(seen)) == 13
    default = (await sim.json(path))["analytics"]
    assert [r["operations"] for r in default] == sorted(
        r["operations"] for r in default
    )  # operations asc
    by_errors = (await sim.json(path, sortBy="errors", sortDir="desc"))["analytics"]
    assert [r["errors"] for r in by_errors] == sorted(
        (r["errors"] for r in by_errors), reverse=True
    )
    for params in ({"teamId": team.id}, {"teamId[]": team.id}, {"teamId": f"[{team.id}]"}):
        rows = (await sim.json(path, **params))["analytics"]
        assert len(rows) == 11 and {r["teamName"] for r in rows} == {"Sales"}
    sim.world.set_active(seen[0], False)
    inactive = (await sim.json(path, status="inactive"))["analytics"]
    assert [(r["scenarioId"], r["status"]) for r in inactive] == [(seen[0], "inactive")]
    counted = await sim.json(path, **{"pg[limit]": 2, "pg[returnTotalCount]": "true"})
    assert counted["pg"]["count"] == 13 and len(counted["analytics"]) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"pg[sortBy]": "id"},
        {"status": "broken"},
        {"teamId": "abc"},
        {"timeframe[dateFrom]": "2025-06-01"},  # more than a year ago
        {"timeframe[dateFrom]": "2026-07-02", "timeframe[dateTo]": "2026-07-01"},
        {"timeframe[dateTo]": "yesterday"},
    ],
)
async def test_analytics_refuses_bad_parameters_with_400(sim: Sim, params: dict[str, str]) -> None:
    resp = await sim.get(analytics_path(sim), **params)
    assert resp.status == 400 and (await resp.json())["code"] == "SC400"


# ------------------------------------------------------------------ notifications


def failing_world(clock: ManualClock, n: int = 3, error_rate: float = 0.5, seed: int = 9) -> World:
    world = World(seed=seed, clock=clock)
    org = world.add_organization("Hooli", plan="pro")
    team = world.add_team(org.id, name="Ops")
    for i in range(n):
        world.add_scenario(
            team.id, name=f"Sync {i}", interval_s=300, error_rate=error_rate, max_errors=0
        )
    world.add_token([org.id])
    return world


@pytest.fixture
async def fsim(aiohttp_client: Any, clock: ManualClock) -> Sim:
    world = failing_world(clock)
    return Sim(world, clock, await aiohttp_client(create_app(world)))


async def test_notifications_need_their_scope(fsim: Sim) -> None:
    narrow = fsim.world.add_token([fsim.org.id], scopes=["scenarios:read"])
    resp = await fsim.get("/notifications", token=narrow)
    assert resp.status == 403 and await resp.json() == FORBIDDEN


async def test_notifications_have_the_docs_shape_newest_first(fsim: Sim) -> None:
    fsim.tick(4 * 3600)
    body = await fsim.json("/notifications", imtZoneId=2)
    assert set(body) == {"notifications", "userUnreadNotifications", "userZoneNotifications", "pg"}
    items = body["notifications"]
    assert len(items) >= 5
    for n in items:
        assert set(n) == {"id", "subject", "read", "created", "type"}
        assert (
            isinstance(n["id"], str) and n["id"].isdigit() and n["read"] is None and n["type"] == 1
        )
        assert n["subject"].startswith("Encountered error in Sync ") and n["subject"].endswith(
            " scenario"
        )
    ids = [int(n["id"]) for n in items]
    assert ids == sorted(ids, reverse=True)
    created = [n["created"] for n in items]
    assert created == sorted(created, reverse=True)  # ids follow the order of appearance
    assert body["pg"] == {"sortBy": "id", "limit": 10000, "sortDir": "desc", "offset": 0}
    assert body["userUnreadNotifications"] == len(items)
    assert body["userZoneNotifications"] == [{"imtZoneId": 1, "unreadNotifications": len(items)}]

    resp = await fsim.client.post(
        "/_sim/notifications/read", json={"ids": [items[0]["id"], items[2]["id"]]}
    )
    assert (await resp.json()) == {"read": 2}
    unread = await fsim.json("/notifications", unreadOnly="true")
    assert [n["id"] for n in unread["notifications"]] == [
        items[1]["id"],
        *[n["id"] for n in items[3:]],
    ]
    assert unread["userUnreadNotifications"] == len(items) - 2
    everything = (await fsim.json("/notifications", **{"pg[sortDir]": "asc"}))["notifications"]
    assert [n["id"] for n in everything] == [n["id"] for n in reversed(items)]
    assert everything[-1]["read"] == iso_ms(to_ms(fsim.clock.time()))
    assert (await fsim.get("/notifications", **{"pg[sortBy]": "created"})).status == 400


async def test_notifications_page_with_offset_and_limit(fsim: Sim) -> None:
    fsim.tick(6 * 3600)
    everything = [n["id"] for n in (await fsim.json("/notifications"))["notifications"]]
    paged: list[str] = []
    for offset in range(0, len(everything) + 7, 7):
        page = await fsim.json("/notifications", **{"pg[offset]": offset, "pg[limit]": 7})
        paged += [n["id"] for n in page["notifications"]]
    assert paged == everything and len(everything) > 14


async def notices(sim: Sim) -> list[dict[str, Any]]:
    return (await (await sim.client.get("/_sim/notices")).json())["notices"]


async def test_a_share_of_failed_runs_never_gets_a_notice(fsim: Sim) -> None:
    await fsim.knobs(notification_period_s=0)  # one notice per failure: only the loss remains
    fsim.tick(36 * 3600)
    decided = await notices(fsim)
    failures = [e for e in fsim.world.ledger if e.kind == "error"]
    assert len(decided) == len(failures) > 500
    assert [d["executionId"] for d in decided] == [e.execution_id for e in failures]
    shown = [d for d in decided if d["fate"] == "shown"]
    assert 0.76 <= len(shown) / len(decided) <= 0.84  # default notification_missing_share 0.2
    feed = (await fsim.json("/notifications"))["notifications"]
    assert len(feed) == sum(1 for d in shown if d["createdT"] <= fsim.clock.time())
    await fsim.knobs(notification_missing_share=0.5)
    fsim.tick(36 * 3600)
    later = (await notices(fsim))[len(decided) :]
    assert 0.44 <= sum(d["fate"] == "shown" for d in later) / len(later) <= 0.56


async def test_a_notice_appears_30_to_120_seconds_after_its_run(fsim: Sim) -> None:
    await fsim.knobs(notification_period_s=0, notification_missing_share=0)
    fsim.tick(12 * 3600)
    lags = [d["createdT"] - d["runT"] for d in await notices(fsim)]
    assert len(lags) > 150 and 30 <= min(lags) and max(lags) <= 120
    assert 70 <= statistics.mean(lags) <= 80  # uniform over 30-120 s
    # The newest failure is in the ledger at once, in the feed only after its lag.
    sc = next(iter(fsim.world.scenarios.values()))
    run = fsim.world.inject_run(sc.id, status=3)
    index = len(await notices(fsim)) - 1
    decided = (await notices(fsim))[index]
    assert decided["executionId"] == run["id"] and decided["id"] is None  # not shown yet
    before = {n["id"] for n in (await fsim.json("/notifications"))["notifications"]}
    fsim.tick(decided["createdT"] - decided["runT"] + 0.001)
    shown = (await notices(fsim))[index]
    assert shown["id"] is not None and shown["id"] not in before
    feed = {n["id"]: n for n in (await fsim.json("/notifications"))["notifications"]}
    assert feed[shown["id"]]["subject"] == f"Encountered error in {sc.name} scenario"


async def test_a_scenario_gets_one_notice_per_period_however_often_it_fails(
    aiohttp_client: Any, clock: ManualClock
) -> None:
    world = World(seed=2, clock=clock)
    org = world.add_organization("Hooli", plan="pro")
    team = world.add_team(org.id)
    sc = world.add_scenario(
        team.id, name="Always failing", interval_s=60, error_rate=1.0, max_errors=0
    )
    world.add_token([org.id])
    sim = Sim(world, clock, await aiohttp_client(create_app(world)))
    sim.tick(3600)
    decided = await notices(sim)
    assert len(decided) == 60  # every run failed
    made = [d for d in decided if d["fate"] != "throttled"]
    assert len(made) == 12  # one in every five minutes (notification_period_s 300)
    assert all(b["runT"] - a["runT"] >= 300 for a, b in zip(made, made[1:], strict=False))
    assert {d["scenarioId"] for d in decided} == {sc.id}


async def test_two_scenarios_of_one_name_get_the_same_subject(
    aiohttp_client: Any, clock: ManualClock
) -> None:
    world = World(seed=4, clock=clock)
    org = world.add_organization("Hooli", plan="pro")
    team = world.add_team(org.id)
    a = world.add_scenario(team.id, name="Sync", interval_s=600, max_errors=0)
    b = world.add_scenario(team.id, name="Sync", interval_s=600, max_errors=0)
    world.add_token([org.id])
    world.signals.knobs.update({"notification_missing_share": 0})
    sim = Sim(world, clock, await aiohttp_client(create_app(world)))
    world.inject_run(a.id, status=3)
    world.inject_run(b.id, status=3)
    sim.tick(200)
    feed = (await sim.json("/notifications"))["notifications"]
    assert [n["subject"] for n in feed] == ["Encountered error in Sync scenario"] * 2
    assert all(
        set(n) == {"id", "subject", "read", "created", "type"} for n in feed
    )  # no scenario id


async def test_a_token_sees_the_notices_of_its_organizations_and_pays_for_them(fsim: Sim) -> None:
    other = fsim.world.add_organization("Elsewhere", plan="core")
    team = fsim.world.add_team(other.id)
    fsim.world.add_scenario(team.id, name="Theirs", interval_s=300, error_rate=0.8, max_errors=0)
    theirs = fsim.world.add_token([other.id])
    fsim.tick(6 * 3600)
    mine = (await fsim.json("/notifications"))["notifications"]
    resp = await fsim.get("/notifications", token=theirs)
    their_feed = (await resp.json())["notifications"]
    assert mine and their_feed
    assert all("Theirs" not in n["subject"] for n in mine)
    assert {n["subject"] for n in their_feed} == {"Encountered error in Theirs scenario"}
    assert resp.headers["x-ratelimit-limit"] == "60"  # the Core organization's budget
    assert fsim.world.requests[-1].org_id == other.id


# ------------------------------------------------------------------ operations per run


def ops_world(clock: ManualClock, **scenario: Any) -> tuple[World, int]:
    world = World(seed=13, clock=clock)
    org = world.add_organization("Ops", plan="pro", operations_limit=10**9)
    team = world.add_team(org.id)
    kwargs: dict[str, Any] = {
        "interval_s": 60,
        "error_rate": 0.2,
        "operations_per_run": 10,
        "max_errors": 0,
    }
    sc = world.add_scenario(team.id, name="Counted", **{**kwargs, **scenario})
    clock.advance(3 * 86_400)
    world.advance()
    return world, sc.id


def runs(world: World, sid: int) -> list[dict[str, Any]]:
    return [e for e in world.logs(sid) if "status" in e]


def test_operations_are_unchanged_by_default_and_with_the_knobs_at_zero() -> None:
    default, sid = ops_world(ManualClock(T0))
    zero, _ = ops_world(ManualClock(T0), ops_spread=0.0, late_failure_share=0.0)
    assert runs(default, sid) == runs(zero, sid)
    full = [e["operations"] for e in runs(default, sid) if e["status"] != 3]
    assert set(full) == {10}  # a constant per scenario, as before
    assert all(e["operations"] < 10 for e in runs(default, sid) if e["status"] == 3)


def test_ops_spread_varies_each_full_run_around_the_scenarios_mean() -> None:
    world, sid = ops_world(ManualClock(T0), ops_spread=0.3)
    full = [e["operations"] for e in runs(world, sid) if e["status"] != 3]
    assert len(full) > 3000
    assert 9.5 <= statistics.mean(full) <= 10.5
    assert 0.25 <= statistics.pstdev(full) / statistics.mean(full) <= 0.35
    baseline, _ = ops_world(ManualClock(T0))
    # Only the operations (and what scales with them) change: the same runs, the same outcomes.
    assert [(e["id"], e["status"]) for e in runs(world, sid)] == [
        (e["id"], e["status"]) for e in runs(baseline, sid)
    ]


def test_late_failures_consume_a_full_runs_operations() -> None:
    world, sid = ops_world(ManualClock(T0), late_failure_share=0.4)
    failed = [e["operations"] for e in runs(world, sid) if e["status"] == 3]
    assert len(failed) > 600
    assert 0.36 <= failed.count(10) / len(failed) <= 0.44
    assert all(o < 10 for o in failed if o != 10)


def test_a_step_smaller_than_usual_is_an_imperfect_hint() -> None:
    """With spread and late failures, "fewer operations than usual" finds some failures and
    flags some good runs: its precision and recall are both measurable, both below 1."""
    world, sid = ops_world(ManualClock(T0), ops_spread=0.3, late_failure_share=0.3)
    entries = runs(world, sid)
    usual = statistics.median(e["operations"] for e in entries)
    flagged = [e for e in entries if e["operations"] < 0.7 * usual]
    failed = [e for e in entries if e["status"] == 3]
    precision = sum(e["status"] == 3 for e in flagged) / len(flagged)
    recall = sum(e["operations"] < 0.7 * usual for e in failed) / len(failed)
    assert 0.3 < precision < 0.9 and 0.3 < recall < 0.9


# ------------------------------------------------------------------ admin knobs


async def test_signal_knobs_are_read_set_and_reset_over_http(sim: Sim) -> None:
    state = await (await sim.client.get("/_sim/signals")).json()
    assert state == {
        "analytics_lag_s": 300.0, "analytics_whole_days": True, "analytics_error_rate_unit": "percent",
        "analytics_org_ids": [], "notification_missing_share": 0.2, "notification_lag_min_s": 30.0,
        "notification_lag_max_s": 120.0, "notification_period_s": 300.0, "ops_spread": 0.0,
        "late_failure_share": 0.0,
    }  # fmt: skip
    changed = await sim.knobs(notification_missing_share=0.5, ops_spread=0.2)
    assert (
        changed["notification_missing_share"] == 0.5 and sim.world.signals.knobs.ops_spread == 0.2
    )
    for bad in ({"nonsense": 1}, {"notification_missing_share": 1.5}, {"analytics_lag_s": -1},
                {"analytics_whole_days": "yes"}, {"notification_lag_min_s": 200}, {"ops_spread": "x"}):  # fmt: skip
        resp = await sim.client.post("/_sim/signals", json=bad)
        assert resp.status == 400, bad
    assert (
        sim.world.signals.knobs.notification_missing_share == 0.5
    )  # a refused update changes nothing
    reset = await sim.knobs(reset=True)
    assert reset == state
    resp = await sim.client.post("/_sim/notifications/read", json={"nothing": 1})
    assert resp.status == 400


async def test_operation_behaviours_are_set_per_scenario_over_http(sim: Sim) -> None:
    sid = next(iter(sim.world.scenarios))
    resp = await sim.client.post(
        f"/_sim/scenarios/{sid}/behaviour", json={"ops_spread": 0.3, "late_failure_share": 0.5}
    )
    assert resp.status == 200
    sc = sim.world.scenarios[sid]
    assert (sc.ops_spread, sc.late_failure_share) == (0.3, 0.5)
    for bad in ({"ops_spread": -1}, {"late_failure_share": 2}, {"ops_spread": "x"}):
        assert (await sim.client.post(f"/_sim/scenarios/{sid}/behaviour", json=bad)).status == 400
