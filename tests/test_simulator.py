"""The Make API v2 simulator, exercised over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from aiohttp import ClientResponse

from watcher.clock import Clock, ManualClock, ScaledClock
from watcher.simulator import ALL_READ_SCOPES, FaultScope, RequestRecord, World, create_app
from watcher.simulator.world import iso_ms, to_ms

T0 = 1_782_984_000.0  # 2026-07-02T09:20:00Z, a window boundary (divisible by 60)
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Sim:
    """A small world (one Core organization) served on a real socket, with helpers."""

    def __init__(self, world: World, clock: ManualClock, client: Any) -> None:
        self.world = world
        self.clock = clock
        self.client = client
        self.org = next(iter(world.organizations.values()))
        self.team = world.teams[self.org.team_ids[0]]
        self.token = world.tokens_by_org[self.org.id]

    async def get(self, path: str, token: str | None = None, **params: Any) -> ClientResponse:
        headers = {"Authorization": f"Token {token or self.token}"}
        return await self.client.get("/api/v2" + path, params=params, headers=headers)

    async def json(self, path: str, **params: Any) -> Any:
        resp = await self.get(path, **params)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)


def small_world(clock: Clock, seed: int = 7) -> World:
    world = World(seed=seed, clock=clock)
    org = world.add_organization("Acme", plan="core", operations_limit=10_000)
    team = world.add_team(org.id, name="Ops")
    world.add_team(org.id, name="Sales")
    world.add_scenario(
        team.id, name="Polling CRM", interval_s=60, check_run_rate=0.7, operations_per_run=5
    )
    world.add_token([org.id])
    return world


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def sim(aiohttp_client: Any, clock: ManualClock) -> Sim:
    world = small_world(clock)
    client = await aiohttp_client(create_app(world))
    return Sim(world, clock, client)


def first_scenario(sim: Sim) -> Any:
    return sim.world.scenarios[sim.team.scenario_ids[0]]


# ------------------------------------------------------------------ shapes


async def test_users_me_and_current_authorization_have_their_wrappers(sim: Sim) -> None:
    me = await sim.json("/users/me")
    assert set(me) == {"authUser"}
    assert {"id", "name", "email", "language", "timezoneId"} <= set(me["authUser"])
    auth = await sim.json("/users/me/current-authorization")
    assert auth == {"authorization": {"authUsed": "token", "scope": list(ALL_READ_SCOPES)}}


async def test_organization_list_has_default_columns_and_a_user_level_budget(sim: Sim) -> None:
    resp = await sim.get("/organizations")
    body = await resp.json()
    assert body["organizations"] == [
        {"id": sim.org.id, "name": "Acme", "timezoneId": 168, "zone": "eu1.make.com"}
    ]
    assert body["pg"] == {
        "sortBy": "name",
        "limit": 10000,
        "sortDir": "asc",
        "offset": 0,
        "returnTotalCount": False,
    }
    assert resp.headers["x-ratelimit-limit"] == "10000"
    wide = await sim.json("/organizations", **{"cols[]": "license"})
    assert set(wide["organizations"][0]) == {"license"}


@pytest.mark.parametrize(
    ("plan", "api_limit", "service"),
    [("free", 30, "Free"), ("core", 60, "Core"), ("pro", 120, "Pro"), ("teams", 240, "Teams"),
     ("enterprise", 1000, "Enterprise")],
)  # fmt: skip
async def test_organization_detail_has_string_counters_and_the_plan_api_limit(
    aiohttp_client: Any, clock: ManualClock, plan: str, api_limit: int, service: str
) -> None:
    world = World(seed=1, clock=clock)
    org = world.add_organization("X", plan=plan, operations_limit=1000, operations_used=18)
    world.add_team(org.id, "T")
    token = world.add_token([org.id])
    client = await aiohttp_client(create_app(world))
    resp = await client.get(
        f"/api/v2/organizations/{org.id}", headers={"Authorization": f"Token {token}"}
    )
    o = (await resp.json())["organization"]
    assert resp.headers["x-ratelimit-limit"] == str(api_limit)
    assert o["license"]["apiLimit"] == api_limit and o["license"]["operations"] == 1000
    assert {"retention", "interval", "executionTime", "transfer"} <= set(o["license"])
    assert o["serviceName"] == o["productName"] == service
    assert o["isPaused"] is False
    assert ISO_MS.match(o["lastReset"]) and ISO_MS.match(o["nextReset"])
    for key in (
        "operations",
        "centicreditsConsumed",
        "unusedOperations",
        "unusedCenticredits",
        "transfer",
    ):
        assert isinstance(o[key], str), key
    assert (o["operations"], o["centicreditsConsumed"], o["unusedOperations"]) == (
        "18",
        "1800",
        "982",
    )
    assert o["teams"] == [{"id": world.organizations[org.id].team_ids[0], "name": "T"}]


async def test_usage_endpoints_return_data_with_dd_mm_yyyy_dates(sim: Sim) -> None:
    sim.tick(600)
    sc = first_scenario(sim)
    for path in (
        f"/organizations/{sim.org.id}/usage",
        f"/teams/{sim.team.id}/usage",
        f"/scenarios/{sc.id}/usage",
    ):
        body = await sim.json(path)
        assert list(body) == ["data"]
        (day,) = body["data"]
        assert day["date"] == "02-07-2026"
        assert set(day) == {"date", "operations", "dataTransfer", "centicredits"}
        assert day["centicredits"] == day["operations"] * 100 and day["operations"] > 0


async def test_teams_list_and_detail_have_their_wrappers(sim: Sim) -> None:
    body = await sim.json("/teams", organizationId=sim.org.id)
    assert [t["name"] for t in body["teams"]] == ["Ops", "Sales"]
    assert body["teams"][0] == {
        "id": sim.team.id,
        "name": "Ops",
        "organizationId": sim.org.id,
        "globalAgentsEnabled": False,
    }
    assert body["pg"]["limit"] == 10000
    detail = await sim.json(f"/teams/{sim.team.id}")
    assert detail == {"team": body["teams"][0]}


async def test_scenario_list_has_live_fields_and_integer_counters(sim: Sim) -> None:
    sim.tick(120)
    body = await sim.json("/scenarios", teamId=sim.team.id)
    assert body["pg"] == {
        "sortBy": "proprietal",
        "limit": 50,
        "sortDir": "desc",
        "offset": 0,
        "returnTotalCount": False,
    }
    (sc,) = body["scenarios"]
    for key in ("operations", "centicredits", "transfer", "dlqCount", "allDlqCount"):
        assert type(sc[key]) is int, key
    assert sc["centicredits"] == sc["operations"] * 100 > 0
    assert sc["scheduling"] == {"type": "indefinitely", "interval": 60}
    assert ISO_MS.match(sc["nextExec"]) and sc["isActive"] is True and sc["isinvalid"] is False
    assert {
        "hookId",
        "usedPackages",
        "usedModules",
        "createdByUser",
        "lastEdit",
        "created",
        "isPaused",
    } <= set(sc)
    single = (await sim.json(f"/scenarios/{sc['id']}"))["scenario"]
    # As recorded live, the single scenario has no counters.
    assert "operations" not in single and single["id"] == sc["id"]
    assert (await sim.json("/scenarios", organizationId=sim.org.id))["scenarios"] == [sc]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({}, "Missing required parameter teamId or organizationId"),
        ({"teamId": 1, "organizationId": 2}, "teamId and organizationId cannot be used together"),
    ],
)
async def test_scenarios_need_exactly_one_of_team_or_organization(
    sim: Sim, params: dict[str, int], detail: str
) -> None:
    for path in ("/scenarios", "/scenarios/consumptions"):
        resp = await sim.get(path, **params)
        assert resp.status == 400
        body = await resp.json()
        assert (body["code"], body["message"], body["detail"]) == ("SC400", "Bad Request", detail)


async def test_scenario_paging_visits_each_scenario_once(sim: Sim) -> None:
    for i in range(11):
        sim.world.add_scenario(sim.team.id, name=f"S{i:02}", interval_s=3600)
    seen: list[int] = []
    for offset in range(0, 12, 5):
        page = await sim.json(
            "/scenarios", teamId=sim.team.id, **{"pg[offset]": offset, "pg[limit]": 5}
        )
        seen += [s["id"] for s in page["scenarios"]]
    assert len(seen) == 12 and len(set(seen)) == 12
    assert seen == sorted(seen, reverse=True)  # default: id descending
    big = await sim.json("/scenarios", teamId=sim.team.id, **{"pg[limit]": 50_000})
    assert big["pg"]["limit"] == 10000
    some = await sim.json("/scenarios", teamId=sim.team.id, **{"id[]": [seen[0], seen[3]]})
    assert sorted(s["id"] for s in some["scenarios"]) == sorted([seen[0], seen[3]])


async def test_consumptions_list_only_scenarios_that_consumed(sim: Sim) -> None:
    idle = sim.world.add_scenario(sim.team.id, name="Idle", interval_s=86_400)
    sim.tick(180)
    body = await sim.json("/scenarios/consumptions", teamId=sim.team.id)
    assert set(body) == {"scenarioConsumptions", "lastReset"}
    ids = [c["scenarioId"] for c in body["scenarioConsumptions"]]
    assert ids == [first_scenario(sim).id] and idle.id not in ids
    assert set(body["scenarioConsumptions"][0]) == {
        "scenarioId",
        "operations",
        "transfer",
        "centicredits",
    }


# ------------------------------------------------------------------ logs


def is_execution(entry: dict[str, Any]) -> bool:
    return "status" in entry


async def test_log_entries_have_the_live_execution_shape(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.tick(90)
    sim.world.inject_run(sc.id, status=3, error_name="BundleValidationError",
                         error_message="Validation failed for 2 parameter(s).")  # fmt: skip
    body = await sim.json(f"/scenarios/{sc.id}/logs", showCheckRuns="true")
    assert body["pg"] == {
        "sortBy": "imtId",
        "limit": 50,
        "sortDir": "desc",
        "offset": 0,
        "returnTotalCount": False,
    }
    newest = body["scenarioLogs"][0]
    assert re.match(r"^\d{13}_[0-9a-f]{32}$", newest["imtId"]) and HEX32.match(newest["id"])
    assert newest["imtId"] == f"{int(T0 * 1000) + 90_000}_{newest['id']}"
    assert newest["timestamp"] == "2026-07-02T09:21:30.000Z"
    assert (newest["eventType"], newest["type"], newest["instant"], newest["status"]) == (
        "EXECUTION_END",
        "auto",
        False,
        3,
    )
    assert newest["error"] == {
        "name": "BundleValidationError",
        "message": "Validation failed for 2 parameter(s).",
    }
    assert (newest["scenarioId"], newest["scenarioName"], newest["teamId"], newest["organizationId"]) == (
        sc.id, "Polling CRM", sim.team.id, sim.org.id)  # fmt: skip
    assert newest["authorId"] is None and newest["authorName"] is None
    assert newest["centicredits"] == newest["operations"] * 100
    assert newest["operations"] < sc.operations_per_run  # a failed run stops early
    for key in ("replayOfExecutionId", "replayOfExecutionName", "replayOfExecutionTimestamp"):
        assert newest[key] is None
    successes = [e for e in body["scenarioLogs"] if e.get("status") == 1]
    assert successes and all("error" not in e for e in successes)


async def test_it_hides_check_runs_unless_asked_but_counts_them(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.tick(60 * 40)
    everything = (await sim.json(f"/scenarios/{sc.id}/logs", showCheckRuns="true"))["scenarioLogs"]
    default = (await sim.json(f"/scenarios/{sc.id}/logs"))["scenarioLogs"]
    checks = [e for e in everything if (e["operations"], e["transfer"]) == (1, 0)]
    assert len(everything) == 40 and 0 < len(checks) < 40
    assert len(default) == 40 - len(checks)
    assert {e["id"] for e in checks}.isdisjoint(e["id"] for e in default)
    listed = (await sim.json("/scenarios", teamId=sim.team.id))["scenarios"][0]
    assert listed["operations"] == sum(e["operations"] for e in everything)


async def test_audit_rows_appear_without_a_status_filter_and_not_with_status_3(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.tick(30)
    sim.world.set_active(sc.id, False, author="Jane Ops")
    sim.tick(30)
    sim.world.set_active(sc.id, True, author="Jane Ops")
    sim.world.inject_run(sc.id, status=3)
    sim.world.modify(sc.id)
    entries = (await sim.json(f"/scenarios/{sc.id}/logs"))["scenarioLogs"]
    audits = [e for e in entries if not is_execution(e)]
    assert [a["type"] for a in audits] == ["modify", "start", "stop"]
    stop = audits[-1]
    assert re.match(r"^\d{13}_\d+$", stop["imtId"]) and stop["id"].isdigit()
    assert stop["authorName"] == "Jane Ops" and stop["detail"] == {
        "author": {"name": "Jane Ops", "staff": False}
    }
    assert set(stop) == {"imtId", "id", "type", "authorId", "authorName", "detail", "timestamp"}
    errors = (await sim.json(f"/scenarios/{sc.id}/logs", status=3))["scenarioLogs"]
    assert errors and all(e.get("status") == 3 for e in errors)


async def test_offset_and_keyset_paging_have_no_gap_and_no_duplicate(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.tick(60 * 130)
    path = f"/scenarios/{sc.id}/logs"
    everything = (await sim.json(path, showCheckRuns="true", **{"pg[limit]": 100}))["scenarioLogs"]
    assert len(everything) == 100  # max page size
    by_offset: list[str] = []
    for offset in range(0, 140, 40):
        page = await sim.json(path, showCheckRuns="true", **{"pg[offset]": offset, "pg[limit]": 40})
        by_offset += [e["imtId"] for e in page["scenarioLogs"]]
    by_key: list[str] = []
    params: dict[str, Any] = {"showCheckRuns": "true", "pg[limit]": 40}
    while True:
        page = await sim.json(path, **params)
        ids = [e["imtId"] for e in page["scenarioLogs"]]
        if not ids:
            break
        if "pg[last]" in params:
            assert page["pg"]["last"] == params["pg[last]"] and page["pg"]["showLast"] is False
        by_key += ids
        params["pg[last]"] = ids[-1]
    assert by_offset == by_key == sorted(by_key, reverse=True) and len(set(by_key)) == 130
    asc = await sim.json(
        path,
        showCheckRuns="true",
        **{"pg[sortDir]": "asc", "pg[last]": by_key[-3], "pg[showLast]": "true"},
    )
    assert [e["imtId"] for e in asc["scenarioLogs"]] == by_key[-3::-1][:50]


async def test_from_and_to_are_inclusive_milliseconds(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.tick(600)
    start_ms = int(T0 * 1000)
    body = await sim.json(f"/scenarios/{sc.id}/logs", showCheckRuns="true",
                          **{"from": start_ms + 120_000, "to": start_ms + 240_000})  # fmt: skip
    assert sorted(e["timestamp"][11:19] for e in body["scenarioLogs"]) == [
        "09:22:00",
        "09:23:00",
        "09:24:00",
    ]


async def test_log_detail_and_execution_result_describe_one_run(sim: Sim) -> None:
    sc = first_scenario(sim)
    run = sim.world.inject_run(sc.id, status=3, error_name="ConnectionError", error_message="Boom.")
    detail = (await sim.json(f"/scenarios/{sc.id}/logs/{run['id']}"))["scenarioLog"]
    assert (
        detail["isReplayable"] is False
        and detail["@scenarioId"] == sc.id
        and detail["id"] == run["id"]
    )
    result = await sim.json(f"/scenarios/{sc.id}/executions/{run['id']}")
    assert result == {"status": "ERROR", "error": {"name": "ConnectionError", "message": "Boom."}}
    ok = sim.world.inject_run(sc.id, status=1)
    assert await sim.json(f"/scenarios/{sc.id}/executions/{ok['id']}") == {"status": "SUCCESS"}
    missing = await sim.get(f"/scenarios/{sc.id}/executions/{'0' * 32}")
    assert missing.status == 404


# ------------------------------------------------------------------ run side effects


async def test_it_deactivates_a_scenario_after_max_errors_consecutive_errors(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.world.inject_run(sc.id, status=3)
    sim.world.inject_run(sc.id, status=3)
    sim.world.inject_run(sc.id, status=1)  # a success resets the streak
    sim.world.inject_run(sc.id, status=3)
    sim.world.inject_run(sc.id, status=3)
    listed = (await sim.json(f"/scenarios/{sc.id}"))["scenario"]
    assert listed["isActive"] is True
    sim.world.inject_run(sc.id, status=3)
    listed = (await sim.json(f"/scenarios/{sc.id}"))["scenario"]
    assert (listed["isActive"], listed["isinvalid"], listed["nextExec"]) == (False, True, None)
    runs_before = len(sim.world.logs(sc.id))
    sim.tick(3600)
    sim.world.advance()
    assert len(sim.world.logs(sc.id)) == runs_before  # no more scheduled runs


async def test_a_webhook_scenario_is_deactivated_by_its_first_error(sim: Sim) -> None:
    sc = sim.world.add_scenario(sim.team.id, name="Hooked", interval_s=600, webhook=True)
    hook = sim.world.add_hook(sim.team.id, scenario_id=sc.id, queue_limit=50)
    entry = sim.world.inject_run(sc.id, status=3, error_name="AccountValidationError")
    assert entry["instant"] is True
    h = (await sim.json(f"/hooks/{hook.id}"))["hook"]
    assert h["scenarioIsActive"] is False
    s = (await sim.json(f"/scenarios/{sc.id}"))["scenario"]
    assert (s["isActive"], s["isinvalid"], s["scheduling"]) == (
        False,
        True,
        {"type": "immediately"},
    )


async def test_store_incomplete_turns_errors_into_dlq_items(sim: Sim) -> None:
    sc = sim.world.add_scenario(
        sim.team.id, name="ERP", interval_s=3600, store_incomplete=True, max_errors=0
    )
    run = sim.world.inject_run(
        sc.id, status=3, error_name="ConnectionError", error_message="Timed out."
    )
    sim.world.inject_run(sc.id, status=3, error_name="DataError", error_message="Bad date.")
    listed = (await sim.json("/scenarios", teamId=sim.team.id, **{"id[]": sc.id}))["scenarios"][0]
    assert (listed["dlqCount"], listed["allDlqCount"], listed["isActive"]) == (2, 2, True)
    body = await sim.json("/dlqs", scenarioId=sc.id)
    assert body["pg"] == {
        "sortBy": "",
        "limit": 50,
        "sortDir": "asc",
        "offset": 0,
        "returnTotalCount": False,
    }
    first, second = body["dlqs"]
    assert set(first) == {"id", "reason", "created", "size", "resolved", "retry", "attempts"}
    assert (
        HEX32.match(first["id"])
        and first["reason"] == "Timed out."
        and ISO_MS.match(first["created"])
    )
    assert (first["resolved"], first["retry"], first["attempts"]) == (False, True, 0)
    assert second["retry"] is False  # DataError is not retried automatically
    dlq = (await sim.json(f"/dlqs/{first['id']}"))["dlq"]
    assert (dlq["scenarioId"], dlq["scenarioName"], dlq["companyId"], dlq["companyName"]) == (
        sc.id, "ERP", sim.team.id, "Ops")  # fmt: skip
    assert dlq["executionId"] == run["id"] and dlq["deleted"] is False and dlq["index"] == 0
    resp = await sim.get("/dlqs")
    assert resp.status == 400 and (await resp.json())["code"] == "SC400"


async def test_hooks_list_shows_queue_and_scenario(sim: Sim) -> None:
    sc = sim.world.add_scenario(sim.team.id, name="Leads", interval_s=600, webhook=True)
    hook = sim.world.add_hook(
        sim.team.id, scenario_id=sc.id, queue_limit=50, queue_count=45, name="leads"
    )
    body = await sim.json("/hooks", teamId=sim.team.id)
    (h,) = body["hooks"]
    assert (h["id"], h["name"], h["queueCount"], h["queueLimit"], h["type"], h["enabled"], h["gone"]) == (
        hook.id, "leads", 45, 50, "web", True, False)  # fmt: skip
    assert (h["scenarioId"], h["scenarioName"], h["scenarioIsActive"]) == (sc.id, "Leads", True)
    assert h["url"] == f"https://hook.eu1.make.com/{h['udid']}" and len(h["udid"]) == 32
    assert (await sim.json(f"/hooks/{hook.id}")) == {"hook": h}
    assert (await sim.get("/hooks")).status == 400


async def test_exhausting_operations_pauses_the_organization_and_its_scenarios(sim: Sim) -> None:
    sim.org.operations_limit = 40
    sim.tick(60 * 60)
    org = (await sim.json(f"/organizations/{sim.org.id}"))["organization"]
    assert org["isPaused"] is True and int(org["operations"]) >= 40
    sc = (await sim.json("/scenarios", teamId=sim.team.id))["scenarios"][0]
    assert sc["isPaused"] is True
    used = sim.org.operations_used
    sim.tick(3600)
    await sim.json(f"/organizations/{sim.org.id}")
    assert sim.org.operations_used == used  # nothing runs while paused


# ------------------------------------------------------------------ errors and auth


async def test_it_rejects_missing_or_unknown_tokens_with_401(sim: Sim) -> None:
    for headers in ({}, {"Authorization": "Token 00000000-0000-4000-8000-000000000000"},
                    {"Authorization": f"Bearer {sim.token}"}):  # fmt: skip
        resp = await sim.client.get("/api/v2/users/me", headers=headers)
        assert resp.status == 401
        assert await resp.json() == {
            "detail": "Invalid credentials.",
            "message": "Unauthorized",
            "code": "IM102",
        }
    assert sim.world.requests[-1].token_ok is False


async def test_oauth_tokens_are_accepted_as_bearer(sim: Sim) -> None:
    oauth = sim.world.add_token([sim.org.id], oauth=True)
    resp = await sim.client.get("/api/v2/users/me", headers={"Authorization": f"Bearer {oauth}"})
    assert resp.status == 200
    resp = await sim.client.get("/api/v2/users/me", headers={"Authorization": f"Token {oauth}"})
    assert resp.status == 401


async def test_it_answers_403_without_scope_or_organization_access(sim: Sim) -> None:
    narrow = sim.world.add_token([sim.org.id], scopes=["organizations:read"])
    other_org = sim.world.add_organization("Other", plan="pro")
    other_team = sim.world.add_team(other_org.id)
    forbidden = {"detail": "Access denied.", "message": "Permission denied", "code": "SC403"}
    sc = first_scenario(sim)
    for path, token in (
        (f"/scenarios/{sc.id}/logs", narrow),
        (f"/dlqs?scenarioId={sc.id}", narrow),
        (f"/hooks?teamId={sim.team.id}", narrow),
        (f"/teams/{sim.team.id}", narrow),
        (f"/organizations/{other_org.id}", sim.token),
        (f"/scenarios?teamId={other_team.id}", sim.token),
    ):
        resp = await sim.client.get("/api/v2" + path, headers={"Authorization": f"Token {token}"})
        assert resp.status == 403, path
        assert await resp.json() == forbidden
    assert (await sim.get(f"/organizations/{sim.org.id}", token=narrow)).status == 200


@pytest.mark.parametrize(
    "path",
    ["/scenarios/1", "/scenarios/1/logs", "/organizations/1", "/teams/1", "/hooks/1", "/dlqs/abc", "/Scenarios",
     "/nothing/here"],
)  # fmt: skip
async def test_unknown_ids_and_paths_answer_404(sim: Sim, path: str) -> None:
    resp = await sim.get(path)
    assert resp.status == 404
    body = await resp.json()
    assert (body["message"], body["code"]) == ("Not Found", "SC404") and body["detail"]


# ------------------------------------------------------------------ rate limits


async def test_it_answers_429_after_api_limit_requests_and_resets_next_window(sim: Sim) -> None:
    path = f"/organizations/{sim.org.id}"
    for i in range(60):
        resp = await sim.get(path)
        assert resp.status == 200
        assert resp.headers["x-ratelimit-remaining"] == str(59 - i)
        assert resp.headers["x-ratelimit-reset"] == str(int(T0) + 60)
    resp = await sim.get(path)
    assert resp.status == 429
    assert await resp.json() == {
        "message": "Requests limit for organization exceeded, please try again later.",
        "code": "SC429",
    }
    assert (resp.headers["x-ratelimit-limit"], resp.headers["x-ratelimit-remaining"]) == ("60", "0")
    assert "Retry-After" not in resp.headers
    # the user-level bucket is separate
    assert (await sim.get("/users/me")).status == 200
    sim.tick(60)
    resp = await sim.get(path)
    assert resp.status == 200 and resp.headers["x-ratelimit-remaining"] == "59"
    per_org = [r for r in sim.world.requests if r.org_id == sim.org.id]
    assert [r.status for r in per_org].count(429) == 1 and len(per_org) == 62
    assert all(isinstance(r, RequestRecord) for r in per_org)


async def test_a_scaled_clock_lets_a_window_pass_quickly(aiohttp_client: Any) -> None:
    clock = ScaledClock(speed=600.0)
    world = small_world(clock)
    client = await aiohttp_client(create_app(world))
    token = world.tokens_by_org[next(iter(world.organizations))]
    headers = {"Authorization": f"Token {token}"}
    first = await client.get("/api/v2/users/me", headers=headers)
    reset = int(first.headers["x-ratelimit-reset"])
    await asyncio.sleep((reset - clock.time()) / clock.speed + 0.01)  # at most 0.11 s
    later = await client.get("/api/v2/users/me", headers=headers)
    # A later window, 0.1 s of real time on: the next one, or (a loaded machine can stall
    # that long) one after it, but always a whole number of windows on.
    passed = int(later.headers["x-ratelimit-reset"]) - reset
    assert passed >= 60 and passed % 60 == 0


# ------------------------------------------------------------------ faults


async def test_5xx_fault_fails_the_next_n_requests(sim: Sim) -> None:
    sim.world.faults.error_5xx_count = 3
    statuses = [(await sim.get("/users/me")).status for _ in range(4)]
    assert statuses == [500, 502, 503, 200]
    assert [r.status for r in sim.world.requests] == statuses


async def test_latency_fault_waits_in_clock_time(sim: Sim) -> None:
    sim.world.faults.latency_s = 5
    task = asyncio.create_task(sim.get("/users/me"))
    for _ in range(200):
        if sim.clock.sleepers:
            break
        await asyncio.sleep(0.005)
    assert sim.clock.sleepers == 1 and not task.done()
    assert sim.world.requests[-1].status == 0  # recorded on arrival, still in flight
    sim.tick(5)
    assert (await task).status == 200
    assert sim.world.requests[-1].status == 200


async def test_malformed_json_fault_truncates_a_200_body(sim: Sim) -> None:
    sim.world.faults.malformed_json_count = 1
    resp = await sim.get("/users/me")
    assert resp.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await resp.text())
    assert (await sim.get("/users/me")).status == 200


async def test_html_fault_answers_a_cloudflare_1010_page(sim: Sim) -> None:
    sim.world.faults.html_error_count = 1
    resp = await sim.get("/users/me")
    assert resp.status == 403 and resp.content_type == "text/html"
    assert "error code: 1010" in await resp.text()


async def test_429_storm_with_plain_text_and_retry_after(sim: Sim) -> None:
    sim.world.faults.storm_429_count = 2
    sim.world.faults.plain_text_429 = True
    sim.world.faults.retry_after_s = 7
    resp = await sim.get(f"/organizations/{sim.org.id}")
    assert resp.status == 429 and resp.content_type == "text/plain"
    assert await resp.text() == "Requests limit for organization exceeded, please try again later."
    assert resp.headers["Retry-After"] == "7" and resp.headers["x-ratelimit-remaining"] == "0"
    assert (await sim.get("/users/me")).status == 429
    assert (await sim.get("/users/me")).status == 200


async def test_ratelimit_headers_can_be_omitted(sim: Sim) -> None:
    sim.world.faults.omit_ratelimit_headers = True
    resp = await sim.get(f"/organizations/{sim.org.id}")
    assert resp.status == 200 and not any(h.lower().startswith("x-ratelimit") for h in resp.headers)


async def test_faults_can_be_scoped_to_an_org_and_a_path(sim: Sim) -> None:
    sc = first_scenario(sim)
    sim.world.faults.error_5xx_count = 5
    sim.world.faults.scopes["error_5xx_count"] = FaultScope(org_id=sim.org.id, path_regex=r"/logs$")
    assert (await sim.get("/users/me")).status == 200
    assert (await sim.get(f"/scenarios/{sc.id}")).status == 200
    assert (await sim.get(f"/scenarios/{sc.id}/logs")).status == 500
    other = sim.world.add_organization("Other")
    sim.world.faults.scopes["error_5xx_count"] = FaultScope(org_id=other.id)
    assert (await sim.get(f"/scenarios/{sc.id}/logs")).status == 200


async def test_set_faults_takes_knobs_by_name_and_last_headers_show_the_client(sim: Sim) -> None:
    sim.world.set_faults(error_5xx_count=1, error_5xx_status=503)
    resp = await sim.client.get(
        "/api/v2/users/me",
        headers={"Authorization": f"Token {sim.token}", "User-Agent": "makewatch/0.1"},
    )
    assert resp.status == 503
    assert sim.world.last_headers["user-agent"] == "makewatch/0.1"
    with pytest.raises(ValueError):
        sim.world.set_faults(no_such_knob=1)


async def test_faults_are_set_and_read_over_http(sim: Sim) -> None:
    resp = await sim.client.post(
        "/_sim/faults", json={"storm_429_count": 1, "path_regex": "/users/"}
    )
    assert resp.status == 200 and (await resp.json())["storm_429_count"] == 1
    assert (await sim.get(f"/organizations/{sim.org.id}")).status == 200
    assert (await sim.get("/users/me")).status == 429
    state = await (await sim.client.get("/_sim/faults")).json()
    assert state["storm_429_count"] == 0 and state["path_regex"] == "/users/"
    await sim.client.post("/_sim/faults", json={"reset": True})
    assert sim.world.faults.path_regex is None
    assert (await sim.client.post("/_sim/faults", json={"nonsense": 1})).status == 400


# ------------------------------------------------------------------ admin routes


async def test_admin_routes_inject_runs_move_the_clock_and_show_requests(sim: Sim) -> None:
    sc = first_scenario(sim)
    await sim.get("/users/me")
    resp = await sim.client.post("/_sim/runs", json={"scenarioId": sc.id, "status": 3,
                                                     "errorName": "DataError", "errorMessage": "Bad."})  # fmt: skip
    run = (await resp.json())["scenarioLog"]
    assert run["error"] == {"name": "DataError", "message": "Bad."}
    resp = await sim.client.post("/_sim/clock/advance", json={"seconds": 120})
    assert (await resp.json())["time"] == T0 + 120
    log = await (await sim.client.get("/_sim/requests", params={"since": 0})).json()
    assert [r["path"] for r in log["requests"]] == ["/api/v2/users/me"] and log["next"] == 1
    assert log["requests"][0]["t"] == T0 and log["requests"][0]["status"] == 200
    world = await (await sim.client.get("/_sim/world")).json()
    assert world["organizations"][0]["token"] == sim.token
    assert any(s["id"] == sc.id and s["runs"] >= 3 for s in world["scenarios"])
    assert len(sim.world.requests) == 1  # admin routes are not recorded


# ------------------------------------------------------------------ the ground-truth ledger


async def test_the_ledger_lists_exactly_the_errors_that_logs_serve(sim: Sim) -> None:
    sc = first_scenario(sim)
    sc.error_rate = 0.3  # scheduled runs fail too, not only injected ones
    sc.max_errors = 0
    sim.world.inject_run(sc.id, status=3, error_name="DataError", error_message="Bad date.")
    for _ in range(40):
        sim.tick(60)
    sim.world.inject_run(sc.id, status=3)
    served = (await sim.json(f"/scenarios/{sc.id}/logs", status=3, **{"pg[limit]": 100}))[
        "scenarioLogs"
    ]
    assert len(served) >= 3, "the world produced too few errors to compare"
    ledger = (await (await sim.client.get("/_sim/ledger")).json())["ledger"]
    errors = [e for e in ledger if e["kind"] == "error"]
    by_id = {e["executionId"]: e for e in errors}
    assert sorted(by_id) == sorted(entry["id"] for entry in served)
    for entry in served:
        truth = by_id[entry["id"]]
        assert iso_ms_of(truth["t"]) == entry["timestamp"]
        assert (truth["errorName"], truth["errorMessage"]) == (
            entry["error"]["name"],
            entry["error"]["message"],
        )
        assert truth["scenarioId"] == sc.id and truth["organizationId"] == sim.org.id
    assert [e["injected"] for e in errors].count(True) == 2
    assert [e.to_json() for e in sim.world.ledger] == ledger  # the attribute and the route agree


def iso_ms_of(t: float) -> str:
    return iso_ms(to_ms(t))


async def test_the_ledger_records_deactivations_dlq_items_and_recoveries(sim: Sim) -> None:
    sc = first_scenario(sim)
    erp = sim.world.add_scenario(
        sim.team.id, name="ERP", interval_s=3600, store_incomplete=True, max_errors=0
    )
    sim.world.inject_run(sc.id, status=3)
    sim.world.inject_run(sc.id, status=1, check=True)  # a check run is not a recovery
    sim.world.inject_run(sc.id, status=1)
    for _ in range(3):
        sim.world.inject_run(sc.id, status=3)
    sim.world.inject_run(erp.id, status=3, error_name="ConnectionError")
    sim.world.set_active(sc.id, True)

    kinds = [(e.kind, e.scenario_id) for e in sim.world.ledger]
    assert kinds == [
        ("error", sc.id),
        ("recovery", sc.id),
        ("error", sc.id),
        ("error", sc.id),
        ("error", sc.id),
        ("deactivation", sc.id),
        ("error", erp.id),
        ("dlq", erp.id),
        ("reactivation", sc.id),
    ]
    # What the API shows agrees: the deactivation, the DLQ item, the recovery's run.
    listed = (await sim.json(f"/scenarios/{sc.id}"))["scenario"]
    assert listed["isActive"] is True  # reactivated since
    dlqs = (await sim.json("/dlqs", scenarioId=erp.id))["dlqs"]
    assert [d["id"] for d in dlqs] == [e.dlq_id for e in sim.world.ledger if e.kind == "dlq"]
    recovery = next(e for e in sim.world.ledger if e.kind == "recovery")
    run = (await sim.json(f"/scenarios/{sc.id}/logs/{recovery.execution_id}"))["scenarioLog"]
    assert run["status"] == 1
    deactivation = next(e for e in sim.world.ledger if e.kind == "deactivation")
    assert (
        deactivation.execution_id
        == [e for e in sim.world.ledger if e.kind == "error"][3].execution_id
    )
    page = await (await sim.client.get("/_sim/ledger", params={"since": 7})).json()
    assert [e["kind"] for e in page["ledger"]] == ["dlq", "reactivation"] and page["next"] == 9


# ------------------------------------------------------------------ determinism and the demo world


async def test_the_same_seed_and_times_give_the_same_logs_whatever_the_requests(
    aiohttp_client: Any,
) -> None:
    async def run(order: list[int], poll_every: float) -> list[Any]:
        clock = ManualClock(T0)
        world = World(seed=3, clock=clock)
        org = world.add_organization("A")
        team = world.add_team(org.id)
        ids = [
            world.add_scenario(team.id, name=f"S{i}", interval_s=60 * (i + 1), error_rate=0.3,
                               check_run_rate=0.3, max_errors=0).id
            for i in range(3)
        ]  # fmt: skip
        token = world.add_token([org.id])
        client = await aiohttp_client(create_app(world))
        elapsed = 0.0
        while elapsed < 1800:
            clock.advance(poll_every)
            elapsed += poll_every
            for i in order:
                await client.get(
                    f"/api/v2/scenarios/{ids[i]}", headers={"Authorization": f"Token {token}"}
                )
        return [world.logs(sid) for sid in ids] + [world.scenarios[s].operations for s in ids]

    assert await run([0, 1, 2], 60) == await run([2, 0], 450)


def test_generate_builds_the_demo_world_deterministically(clock: ManualClock) -> None:
    world = World.generate(seed=1, clock=clock)
    again = World.generate(seed=1, clock=ManualClock(T0))
    assert [world.logs(s) for s in world.scenarios] == [again.logs(s) for s in again.scenarios]
    assert world.tokens_by_org == again.tokens_by_org
    plans = {o.name: (o.plan, o.api_limit) for o in world.organizations.values()}
    assert plans == {
        "Northwind Traders": ("free", 30),
        "Acme Agency": ("core", 60),
        "Globex Ops": ("pro", 120),
    }
    for org in world.organizations.values():
        assert len(org.team_ids) == 2 and 8 <= len(world.scenarios_of_org(org.id)) <= 22
        assert world.tokens[world.tokens_by_org[org.id]].scopes == list(ALL_READ_SCOPES)
    scenarios = list(world.scenarios.values())
    assert any(s.webhook for s in scenarios) and any(
        not s.webhook and s.check_run_rate > 0 for s in scenarios
    )
    assert any(s.error_rate >= 0.1 for s in scenarios)
    assert [s.name for s in scenarios if not s.is_active and s.is_invalid] == [
        "Invoice export to Xero"
    ]
    assert any(s.dlq_count >= 3 for s in scenarios)
    assert any(h.queue_count > 0.8 * h.queue_limit for h in world.hooks.values())
    ratios = sorted(o.operations_used / o.operations_limit for o in world.organizations.values())
    assert 0.9 <= ratios[-1] < 1.0
    assert sum(len(s.logs) for s in scenarios) > 100  # some history already
