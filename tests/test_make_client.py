"""MakeClient against the bundled simulator over real sockets on 127.0.0.1.

Attempts and timing are asserted from the simulator's own request log.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import aiohttp
import pytest
from conftest import START, limiter

from watcher.clock import ScaledClock
from watcher.make import MakeApiError, MakeClient
from watcher.simulator import World, create_app


def small_world(clock, plan: str = "core") -> tuple[World, dict]:
    world = World(seed=7, clock=clock)
    org = world.add_organization(name="Acme Agency", plan=plan)
    team = world.add_team(org.id, name="Finance")
    other = world.add_team(org.id, name="Marketing")
    token = world.add_token(org_ids=[org.id])
    return world, {"org": org, "team": team, "other": other, "token": token}


# --- every method against the simulator ---------------------------------------------------


async def test_users_and_authorization(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    me = await client.me()
    assert me.id > 0
    auth = await client.current_authorization()
    assert "scenarios:read" in auth.scopes


async def test_it_sends_token_auth_and_an_explicit_user_agent(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    await sim.client(ids["token"]).get_organization(ids["org"].id)
    rec = sim.requests(path_prefix="/api/v2/organizations")[-1]
    assert rec.token_ok and rec.status == 200
    assert sim.world.last_headers["User-Agent"].startswith("makewatch/")
    assert sim.world.last_headers["Authorization"] == f"Token {ids['token']}"


async def test_organizations_teams_and_license(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    orgs = await client.list_organizations()
    assert [o.id for o in orgs] == [ids["org"].id]
    org = await client.get_organization(ids["org"].id)
    assert org.license is not None and org.license.api_limit == 60
    assert isinstance(org.operations_used, int)
    assert org.plan == "Core"
    teams = await client.list_teams(ids["org"].id)
    assert sorted(t.id for t in teams) == sorted([ids["team"].id, ids["other"].id])
    team = await client.get_team(ids["team"].id)
    assert team.name == "Finance" and team.organization_id == ids["org"].id


async def test_usage_of_organization_team_and_scenario(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Sync", interval_s=900)
    for _ in range(3):
        world.inject_run(sc.id, status=1, operations=4)
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    org_days = await client.organization_usage(ids["org"].id)
    team_days = await client.team_usage(ids["team"].id)
    sc_days = await client.scenario_usage(sc.id)
    for days in (org_days, team_days, sc_days):
        assert sum(d.operations for d in days) == 12
        assert sum(d.centicredits for d in days) == 1200


async def test_scenarios_across_pages_have_no_gap_and_no_duplicate(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    made = {world.add_scenario(ids["team"].id, name=f"s{i}").id for i in range(130)}
    made |= {world.add_scenario(ids["other"].id, name=f"m{i}").id for i in range(101)}
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    listed = await client.list_scenarios(organization_id=ids["org"].id, page_size=100)
    assert len(listed) == 231 and {s.id for s in listed} == made
    pages = sim.requests(path_prefix="/api/v2/scenarios")
    assert len(pages) == 3  # 100 + 100 + 31
    by_team = await client.list_scenarios(team_id=ids["other"].id, page_size=100)
    assert len(by_team) == 101 and all(s.team_id == ids["other"].id for s in by_team)
    one = await client.get_scenario(listed[0].id)
    assert one.id == listed[0].id and one.name == listed[0].name


async def test_scenario_consumptions(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Busy")
    world.add_scenario(ids["team"].id, name="Idle")
    world.inject_run(sc.id, status=1, operations=3)
    sim = await start_sim(world)
    rows = await sim.client(ids["token"]).scenario_consumptions(organization_id=ids["org"].id)
    assert [(r.scenario_id, r.operations) for r in rows] == [(sc.id, 3)]


async def test_logs_page_with_keyset_and_filter_audit_rows(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Busy", interval_s=3600)
    injected = []
    for i in range(120):
        injected.append(world.inject_run(sc.id, status=3 if i % 3 == 0 else 1, at=START + i))
        if i == 60:
            world.set_active(sc.id, False)
            world.set_active(sc.id, True)
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    entries = await client.list_scenario_logs(sc.id, since_ms=0)
    assert [e.imt_id for e in entries] == [r["imtId"] for r in injected]
    reqs = sim.requests(path_prefix=f"/api/v2/scenarios/{sc.id}/logs")
    assert len(reqs) == 3  # 122 rows (120 runs + start + stop) in pages of 50
    assert "pg[last]" not in reqs[0].query and "pg[last]" in reqs[1].query

    errors = await client.list_scenario_logs(sc.id, status=3, since_ms=0)
    assert [e.imt_id for e in errors] == [r["imtId"] for r in injected if r["status"] == 3]
    assert all(e.error_name for e in errors)


async def test_logs_after_a_cursor_return_only_newer_entries(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Busy", interval_s=3600)
    runs = [world.inject_run(sc.id, status=1, at=START + i) for i in range(80)]
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    newer = await client.list_scenario_logs(sc.id, after_imt_id=runs[69]["imtId"])
    assert [e.imt_id for e in newer] == [r["imtId"] for r in runs[70:]]
    assert len(sim.requests(path_prefix=f"/api/v2/scenarios/{sc.id}/logs")) == 1
    assert await client.list_scenario_logs(sc.id, after_imt_id=runs[-1]["imtId"]) == []


async def test_one_log_entry_and_its_execution(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Flaky")
    run = world.inject_run(sc.id, status=3, error_name="DataError", error_message="bad date")
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    entry = await client.get_scenario_log(sc.id, run["id"])
    assert entry.error_name == "DataError" and entry.error_message == "bad date"
    result = await client.get_execution(sc.id, run["id"])
    assert result.status == "ERROR" and result.error_name == "DataError"


async def test_incomplete_executions(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Orders", store_incomplete=True, max_errors=10)
    for _ in range(3):
        world.inject_run(sc.id, status=3, error_name="ConnectionError", error_message="refused")
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    dlqs = await client.list_dlqs(sc.id)
    assert len(dlqs) == 3 and all(d.reason == "refused" for d in dlqs)
    detail = await client.get_dlq(dlqs[0].id)
    assert detail.scenario_id == sc.id and detail.team_id == ids["team"].id


async def test_hooks_with_queue_counts(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sc = world.add_scenario(ids["team"].id, name="Inbound", webhook=True)
    hook = world.add_hook(ids["team"].id, scenario_id=sc.id, queue_limit=50, queue_count=45)
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    hooks = await client.list_hooks(ids["team"].id)
    assert [(h.id, h.queue_count, h.queue_limit) for h in hooks] == [(hook.id, 45, 50)]
    assert (await client.get_hook(hook.id)).queue_ratio == pytest.approx(0.9)


# --- errors and retries ---------------------------------------------------------------


def attempts(sim, org_id: int) -> int:
    return len(sim.requests(org_id=org_id, path_prefix="/api/v2/organizations/"))


@pytest.mark.parametrize(
    ("fault", "expect_ok", "expect_attempts"),
    [
        ({"error_5xx_count": 1}, True, 2),
        ({"error_5xx_count": 2}, True, 3),
        ({"error_5xx_count": 10}, False, 3),
        ({"malformed_json_count": 1}, True, 2),
        ({"storm_429_count": 1}, True, 2),
        ({"html_error_count": 1}, False, 1),
    ],
)
async def test_fault_table_retries_what_can_recover(start_sim, fast_clock, fault, expect_ok, expect_attempts):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    world.set_faults(**fault)
    client = sim.client(ids["token"], max_attempts=3)
    if expect_ok:
        await client.get_organization(ids["org"].id)
    else:
        with pytest.raises(MakeApiError):
            await client.get_organization(ids["org"].id)
    assert attempts(sim, ids["org"].id) == expect_attempts


@pytest.mark.parametrize(
    ("case", "status"),
    [("bad_token", 401), ("missing_scope", 403), ("unknown_id", 404)],
)
async def test_client_errors_are_not_retried(start_sim, fast_clock, case, status):
    world, ids = small_world(fast_clock)
    token = ids["token"]
    org_id = ids["org"].id
    if case == "bad_token":
        token = "00000000-0000-4000-8000-000000000000"
    elif case == "missing_scope":
        token = world.add_token(org_ids=[org_id], scopes=["scenarios:read"])
    sim = await start_sim(world)
    client = sim.client(token, max_attempts=5)
    target = org_id if case != "unknown_id" else 999_999_999
    with pytest.raises(MakeApiError) as info:
        await client.get_organization(target)
    assert info.value.status == status and not info.value.retryable
    assert len(sim.requests(path_prefix="/api/v2/organizations/")) == 1


async def test_bad_parameters_give_400_not_retried(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    client = sim.client(ids["token"])
    with pytest.raises(MakeApiError) as info:
        await client.get_json("/scenarios", [("teamId", "1"), ("organizationId", "2")])
    assert info.value.status == 400 and info.value.code == "SC400"
    assert len(sim.requests(path_prefix="/api/v2/scenarios")) == 1


async def test_timeouts_are_retried(start_sim):
    clock = ScaledClock(speed=1.0, start=START)
    world, ids = small_world(clock)
    sim = await start_sim(world)
    world.set_faults(latency_s=0.5)
    client = sim.client(ids["token"], timeout_s=0.1, max_attempts=2)
    with pytest.raises(MakeApiError) as info:
        await client.get_organization(ids["org"].id)
    assert info.value.code == "TIMEOUT" and info.value.status is None
    assert attempts(sim, ids["org"].id) == 2


async def test_a_closed_port_is_a_retryable_network_error(fast_clock, unused_tcp_port):
    import aiohttp

    from watcher.make import MakeClient

    async with aiohttp.ClientSession() as session:
        client = MakeClient(
            session, f"http://127.0.0.1:{unused_tcp_port}/api/v2", "tok", clock=fast_clock, max_attempts=2
        )
        with pytest.raises(MakeApiError) as info:
            await client.me()
    assert info.value.code == "NETWORK" and info.value.retryable
    assert client.requests_sent == 2


# --- 429 ----------------------------------------------------------------------------


async def test_it_waits_for_x_ratelimit_reset_after_429(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    world.set_faults(storm_429_count=1)
    await sim.client(ids["token"]).get_organization(ids["org"].id)
    first, second = sim.requests(path_prefix="/api/v2/organizations/")
    assert first.status == 429 and second.status == 200
    window_end = (first.t // 60 + 1) * 60
    assert second.t >= window_end - 0.05


async def test_it_waits_sixty_seconds_after_429_without_headers(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    world.set_faults(storm_429_count=1, omit_ratelimit_headers=True, plain_text_429=True)
    await sim.client(ids["token"]).get_organization(ids["org"].id)
    first, second = sim.requests(path_prefix="/api/v2/organizations/")
    assert first.status == 429 and second.status == 200
    assert second.t - first.t >= 59.9


async def test_it_honours_retry_after(start_sim, fast_clock):
    world, ids = small_world(fast_clock)
    sim = await start_sim(world)
    world.set_faults(storm_429_count=1, retry_after_s=5, omit_ratelimit_headers=True)
    await sim.client(ids["token"]).get_organization(ids["org"].id)
    first, second = sim.requests(path_prefix="/api/v2/organizations/")
    assert 4.9 <= second.t - first.t < 30


async def test_it_pauses_when_make_reports_no_requests_remaining(start_sim, fast_clock):
    """The user's own integrations share the limit: remaining 0 means wait for the reset."""
    world, ids = small_world(fast_clock, plan="free")
    sim = await start_sim(world)
    client = sim.client(ids["token"], limiter=limiter(1000, fast_clock))
    for _ in range(31):
        await client.get_organization(ids["org"].id)
    statuses = [r.status for r in sim.requests(org_id=ids["org"].id)]
    assert statuses == [200] * 31  # never ran into a 429


# --- the budget ---------------------------------------------------------------------


async def test_budget_holds_in_every_window_with_20_concurrent_callers(start_sim):
    clock = ScaledClock(speed=30.0, start=START)
    world, ids = small_world(clock, plan="free")  # apiLimit 30
    sim = await start_sim(world)
    budget = 15  # 30 x budget_share 0.5
    client = sim.client(ids["token"], limiter=limiter(budget, clock), budget_share=0.5)

    async def caller() -> None:
        for _ in range(2):
            await client.get_organization(ids["org"].id)

    await asyncio.gather(*(caller() for _ in range(20)))
    times = sorted(r.t for r in sim.requests(org_id=ids["org"].id))
    assert len(times) == 40
    worst = max(sum(1 for u in times if t <= u < t + 60) for t in times)
    assert worst <= budget
    assert all(r.status == 200 for r in sim.requests(org_id=ids["org"].id))
    assert times[-1] - times[0] >= 120  # 40 requests at 15/min need two full windows


async def test_budget_holds_as_the_server_sees_it_when_requests_reach_it_late(aiohttp_server):
    """The first burst reaches Make late (a busy machine, fifteen connections to open): it
    must not bunch up with the next window's requests in Make's count."""
    clock = ScaledClock(speed=30.0, start=START)
    world, ids = small_world(clock, plan="free")
    server = await aiohttp_server(create_app(world))
    sent = itertools.count()
    budget = 15

    async def late(session, ctx, params) -> None:  # noqa: ANN001 - aiohttp's trace signature
        if next(sent) < budget:
            await clock.sleep(10.0)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(late)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = MakeClient(session, str(server.make_url("/api/v2")), ids["token"], clock=clock,
                            limiter=limiter(budget, clock), budget_share=0.5)

        async def caller() -> None:
            for _ in range(2):
                await client.get_organization(ids["org"].id)

        await asyncio.gather(*(caller() for _ in range(20)))
    times = sorted(r.t for r in world.requests if r.org_id == ids["org"].id)
    assert len(times) == 40
    assert max(sum(1 for u in times if t <= u < t + 60) for t in times) <= budget
    assert all(r.status == 200 for r in world.requests if r.org_id == ids["org"].id)


# --- secrets --------------------------------------------------------------------------


async def test_no_token_in_logs_exceptions_or_reprs(start_sim, fast_clock, caplog):
    caplog.set_level(logging.DEBUG)
    world, ids = small_world(fast_clock)
    secret = ids["token"]
    sim = await start_sim(world)
    client = sim.client(secret, max_attempts=2)
    texts: list[str] = [repr(client), str(vars(client))]
    world.set_faults(error_5xx_count=5)
    for call in (client.get_organization(ids["org"].id),):
        with pytest.raises(MakeApiError) as info:
            await call
        texts += [str(info.value), repr(info.value)]
    bad = sim.client("11111111-2222-4333-8444-555555555555")
    with pytest.raises(MakeApiError) as info:
        await bad.me()
    texts += [str(info.value), repr(info.value)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [caplog.text]
    assert texts and not any(secret in t for t in texts)
    assert not any("11111111-2222-4333-8444-555555555555" in t for t in texts)


async def test_a_malformed_entry_is_skipped_and_logged_once_with_its_scenario(aiohttp_server, fast_clock, caplog):
    from aiohttp import web

    from watcher.make import MakeClient

    rows = [
        {"imtId": "NaN_scenario.42.auto.deadbeef", "status": 3, "type": "auto"},
        {"imtId": "1790000000000_" + "a" * 32, "id": "a" * 32, "status": 3, "type": "auto",
         "timestamp": "2026-09-21T14:13:20.000Z", "error": {"name": "DataError", "message": "x"}},
        "not an object",
    ]

    async def logs(request: web.Request) -> web.Response:
        return web.json_response({"scenarioLogs": rows, "pg": {"limit": 50}})

    app = web.Application()
    app.router.add_get("/api/v2/scenarios/42/logs", logs)
    server = await aiohttp_server(app)
    caplog.set_level(logging.DEBUG, logger="watcher.make.client")
    async with aiohttp.ClientSession() as session:
        client = MakeClient(session, str(server.make_url("/api/v2")), "t", clock=fast_clock)
        for _ in range(3):
            entries = await client.list_scenario_logs(42, since_ms=0)
            assert [e.id for e in entries] == ["a" * 32]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the bad imtId and the non-object, once each
    assert all("of scenario 42" in w for w in warnings)
