"""HTTP face of the simulator: Make API v2 routes under ``/api/v2`` and admin routes under ``/_sim``.

Request pipeline for every ``/api/v2`` request (the order matters for what tests see):

1. materialise due runs (:meth:`World.advance`);
2. fault knobs: latency, Cloudflare HTML 403, 5xx, 429 storm (scoped by org and path);
3. auth: missing/unknown token -> 401;
4. unknown resource / bad parameters -> 404 / 400;
5. scope or organization not granted to the token, or a feature the organization's plan
   lacks (``Route.authorize``: Enterprise analytics) -> 403;
6. rate limit per organization (or per user for user-level routes), fixed 60 s windows -> 429;
7. the JSON body (possibly truncated by the ``malformed_json_count`` fault, or its first list
   entries without their ids by ``corrupt_entries``).

Write routes (``POST``, :mod:`watcher.simulator.action_routes`) go through the same steps; a
render may answer another status than 200 (:class:`~watcher.simulator.api.Answer`), and the
``lost_answer_count`` action knob answers a 5xx *after* step 7 did its work.

Every request, whatever its outcome, is appended to ``world.requests``. Only requests that pass
steps 2-5 consume rate-limit budget (guess: Make's accounting of rejected calls is unknown).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from watcher.clock import ManualClock
from watcher.simulator.action_routes import ACTION_ROUTES, add_action_admin_routes
from watcher.simulator.api import (
    BODY_KEY,
    FORBIDDEN,
    WORLD_KEY,
    Answer,
    ApiError,
    Resolved,
    Route,
    bad_request,
    not_found,
    path_int,
    pg_json,
    query_bool,
    query_cols,
    query_dict,
    query_int,
    query_page,
    query_sort_dir,
    resolve_dlq,
    resolve_scenario,
    token_of,
)
from watcher.simulator.signal_routes import SIGNAL_ROUTES, add_signal_admin_routes, license_extra
from watcher.simulator.world import (
    DAY_S,
    STATUS_NAMES,
    TIMEZONE_IDS,
    Hook,
    Organization,
    RequestRecord,
    Scenario,
    Team,
    Token,
    World,
    iso_ms,
    to_ms,
)

USER_BUCKET_LIMIT = 10_000  # observed x-ratelimit-limit of GET /organizations (make-api.md §6.1)
IN_FLIGHT = 0  # RequestRecord.status of a request still being answered
CLIENT_CLOSED = 499  # ... and of one whose handler was cancelled (nginx's "client closed request")
RATE_LIMIT_MESSAGE = "Requests limit for organization exceeded, please try again later."
SCENARIO_SORT_KEYS = {
    "proprietal": lambda s: s.id,  # Make's own order is undocumented: we use the id.
    "id": lambda s: s.id,
    "name": lambda s: s.name.lower(),
    "teamId": lambda s: s.team_id,
    "folderId": lambda s: 0,
    "isActive": lambda s: s.is_active,
    "islinked": lambda s: s.is_active,
    "isinvalid": lambda s: s.is_invalid,
    "islocked": lambda s: False,
    "lastEdit": lambda s: s.last_edit_ms,
    "created": lambda s: s.created_ms,
    "createdByUserName": lambda s: 0,
    "updatedByUserName": lambda s: 0,
}
ORG_COLUMNS = (
    "id", "name", "countryId", "timezoneId", "license", "zone", "serviceName", "teams",
    "isPaused", "externalId", "productName", "tfaEnforced",
)  # fmt: skip


UNAUTHORIZED = {"detail": "Invalid credentials.", "message": "Unauthorized", "code": "IM102"}
SERVER_ERRORS = {
    500: {"detail": "Internal Server Error", "message": "Internal Server Error", "code": "SC500"},
    502: {"detail": "Bad Gateway", "message": "Bad Gateway", "code": "SC502"},
    503: {"detail": "Service Unavailable", "message": "Service Unavailable", "code": "SC503"},
}
CLOUDFLARE_1010 = """<!DOCTYPE html>
<html lang="en-US"><head><title>Access denied | hook.make.com used Cloudflare to restrict access</title></head>
<body><div id="cf-wrapper"><h1>Access denied</h1>
<p>error code: 1010</p>
<p>The owner of this website has banned your access based on your browser's signature.</p>
<p>Cloudflare Ray ID: 8f0c0ffee0c0ffee</p></div></body></html>
"""


# ------------------------------------------------------------------ JSON shapes


def org_json(world: World, org: Organization) -> dict[str, Any]:
    lic = org.license
    return {
        "id": org.id,
        "name": org.name,
        "timezoneId": TIMEZONE_IDS.get(org.timezone, 113),
        "zone": org.zone,
        "countryId": 109,
        "license": {
            "teams": 1 if org.plan == "free" else 100,
            "dslimit": 1 if org.plan == "free" else 100,
            "fslimit": 5_242_880,
            "iolimit": 50,
            "apiLimit": org.api_limit,
            "dsslimit": 1_048_576,
            "fulltext": org.plan != "free",
            "interval": lic.interval_min,
            "priority": lic.priority,
            "transfer": lic.transfer,
            "retention": lic.retention_days,
            "scenarios": 2 if org.plan == "free" else -1,
            "dlqStorage": 1_048_576 if org.plan == "free" else 104_857_600,
            "operations": org.operations_limit,
            "executionTime": lic.execution_time_min,
            "restartPeriod": "1 month",
            "webhookLogRetentionDays": 3 if org.plan == "free" else 30,
            **license_extra(world, org),
        },
        "serviceName": lic.service_name,
        "isPaused": org.is_paused,
        "externalId": None,
        "productName": lic.service_name,
        "tfaEnforced": False,
        "createdAt": iso_ms(org.created_at_ms),
        "lastReset": iso_ms(org.last_reset_ms),
        "nextReset": iso_ms(org.next_reset_ms),
        # Org-level counters are strings (big integers) in the live API (make-api.md §5.2).
        "operations": str(org.operations_used),
        "transfer": str(org.transfer_used),
        "centicreditsConsumed": str(org.centicredits_used),
        "operationsExt": "0",
        "centicreditsExtra": "0",
        "transferExt": "0",
        "features": {},
        "activeApps": 0,
        "activeScenarios": sum(1 for s in world.scenarios_of_org(org.id) if s.is_active),
        "unusedOperations": str(max(0, org.operations_limit - org.operations_used)),
        "unusedTransfer": str(max(0, lic.transfer - org.transfer_used)),
        "unusedCenticredits": str(max(0, org.operations_limit * 100 - org.centicredits_used)),
        "featureControls": [],
        "teams": [{"id": t, "name": world.teams[t].name} for t in org.team_ids],
    }


def team_json(world: World, team: Team, cols: list[str]) -> dict[str, Any]:
    base = {
        "id": team.id,
        "name": team.name,
        "organizationId": team.org_id,
        "globalAgentsEnabled": False,
    }
    if not cols:
        return base
    org = world.organizations[team.org_id]
    scs = [world.scenarios[s] for s in team.scenario_ids]
    ops = sum(s.operations for s in scs)
    transfer = sum(s.transfer for s in scs)
    cc = sum(s.centicredits for s in scs)
    # Types of the team consumption columns are undocumented; strings like the org's (guess).
    extra = {
        "operations": str(ops),
        "transfer": str(transfer),
        "centicredits": str(cc),
        "consumedOperations": str(ops),
        "consumedTransfer": str(transfer),
        "consumedCenticredits": str(cc),
        "operationsLimit": None,
        "transferLimit": None,
        "isPaused": org.is_paused,
        "activeScenarios": sum(1 for s in scs if s.is_active),
        "activeApps": 0,
    }
    full = {**base, **extra}
    return {k: full[k] for k in cols if k in full}


def _scheduling(sc: Scenario) -> dict[str, Any]:
    """``scheduling`` as Make lists it: ``{"type": "indefinitely", "interval": 900}`` is
    recorded live; the ``time`` of daily/weekly/monthly schedules is a guess of its shape."""
    if sc.webhook:
        return {"type": "immediately"}
    if sc.schedule == "indefinitely":
        return {"type": "indefinitely", "interval": int(sc.interval_s)}
    if sc.schedule == "on-demand" or sc.next_run_at is None:
        return {"type": sc.schedule}
    return {"type": sc.schedule, "time": time.strftime("%H:%M", time.gmtime(sc.next_run_at))}


def scenario_json(world: World, sc: Scenario, listing: bool) -> dict[str, Any]:
    """A scenario as GET /scenarios (``listing``) or GET /scenarios/{id} shows it.

    As recorded live, only the list carries ``operations``/``centicredits``/``transfer`` and
    ``usedModules``.
    """
    org = world.organizations[sc.org_id]
    user = dict(world.user)
    scheduling = _scheduling(sc)
    next_exec = (
        iso_ms(to_ms(sc.next_run_at))
        if sc.is_active and not sc.webhook and sc.next_run_at is not None
        else None
    )
    body: dict[str, Any] = {
        "id": sc.id,
        "name": sc.name,
        "teamId": sc.team_id,
        "hookId": sc.hook_id,
        "devices": [],
        "deviceId": None,
        "deviceScope": None,
        "concept": False,
        "description": "",
        "folderId": None,
        "slots": None,
        "isinvalid": sc.is_invalid,
        "islinked": sc.is_active,
        "islocked": False,
        "isPaused": org.is_paused,
        "usedPackages": sorted({m["packageName"] for m in sc.used_modules}),
        "lastEdit": iso_ms(sc.last_edit_ms),
        "scheduling": scheduling,
        # Guess (iswaiting is undocumented): a stalled scenario is "waiting" in Make's queue.
        "iswaiting": sc.stalled and sc.is_active,
        "dlqCount": sc.dlq_count,
        "allDlqCount": sc.all_dlq_count,
        "createdByUser": user,
        "updatedByUser": dict(user),
        "nextExec": next_exec,
        "created": iso_ms(sc.created_ms),
        "chainingRole": "none",
        "type": "scenario",
        "isShared": False,
    }
    if listing:
        body.update(
            operations=sc.operations,
            centicredits=sc.centicredits,
            transfer=sc.transfer,
            usedModules=[dict(m) for m in sc.used_modules],
        )
    body["isActive"] = sc.is_active
    return body


def hook_json(world: World, hook: Hook) -> dict[str, Any]:
    sc = world.scenarios.get(hook.scenario_id) if hook.scenario_id else None
    zone = world.organizations[hook.org_id].zone
    return {
        "id": hook.id,
        "name": hook.name,
        "teamId": hook.team_id,
        "organizationId": hook.org_id,
        "udid": hook.udid,
        "type": "web",
        "packageName": None,
        "theme": "#c73a63",
        "editable": True,
        "flags": {},
        "queueCount": hook.queue_count,
        "queueLimit": hook.queue_limit,
        "enabled": hook.enabled,
        "gone": False,
        "typeName": "gateway-webhook",
        "typeAppName": None,
        "data": {"teamId": hook.team_id, "method": False, "headers": False, "stringify": False},
        "scenarioId": sc.id if sc else None,
        "scenarioName": sc.name if sc else None,
        "scenarioIsActive": sc.is_active if sc else None,
        "relay": None,
        "url": f"https://hook.{zone}/{hook.udid}",
    }


# ------------------------------------------------------------------ resolvers


def _no_target(world: World, request: web.Request) -> Resolved:
    return None, None


def _org(world: World, request: web.Request) -> Resolved:
    org = world.organizations.get(path_int(request))
    if org is None:
        raise not_found("Organization")
    return org.id, org


def _team(world: World, request: web.Request) -> Resolved:
    team = world.teams.get(path_int(request))
    if team is None:
        raise not_found("Team")
    return team.org_id, team



def _hook(world: World, request: web.Request) -> Resolved:
    hook = world.hooks.get(path_int(request))
    if hook is None:
        raise not_found("Hook")
    return hook.org_id, hook



def _team_or_org_query(world: World, request: web.Request) -> Resolved:
    """``?teamId=`` xor ``?organizationId=`` (GET /scenarios, /scenarios/consumptions)."""
    team_id = query_int(request, "teamId")
    org_id = query_int(request, "organizationId")
    if team_id is not None and org_id is not None:
        raise bad_request("teamId and organizationId cannot be used together")
    if team_id is None and org_id is None:
        raise bad_request("Missing required parameter teamId or organizationId")
    if team_id is not None:
        team = world.teams.get(team_id)
        if team is None:
            raise not_found("Team")
        return team.org_id, [world.scenarios[s] for s in team.scenario_ids]
    assert org_id is not None
    if org_id not in world.organizations:
        raise not_found("Organization")
    return org_id, world.scenarios_of_org(org_id)


def _teams_query(world: World, request: web.Request) -> Resolved:
    org_id = query_int(request, "organizationId")
    if org_id is None:
        raise bad_request("Missing required parameter organizationId")
    org = world.organizations.get(org_id)
    if org is None:
        raise not_found("Organization")
    return org.id, org


def _dlqs_query(world: World, request: web.Request) -> Resolved:
    sid = query_int(request, "scenarioId")
    if sid is None:
        raise bad_request("Missing required parameter scenarioId")
    sc = world.scenarios.get(sid)
    if sc is None:
        raise not_found("Scenario")
    return sc.org_id, sc


def _hooks_query(world: World, request: web.Request) -> Resolved:
    team_id = query_int(request, "teamId")
    if team_id is None:
        raise bad_request("Missing required parameter teamId")
    team = world.teams.get(team_id)
    if team is None:
        raise not_found("Team")
    return team.org_id, team


def _execution(world: World, request: web.Request) -> Resolved:
    org_id, sc = resolve_scenario(world, request)
    row = sc.executions.get(request.match_info["execution_id"])
    if row is None:
        raise not_found("Execution", org_id)
    return org_id, (sc, row)


# ------------------------------------------------------------------ renderers


def _users_me(world: World, request: web.Request, target: Any, token: Token) -> Any:
    return {
        "authUser": {
            **world.user,
            "language": "en",
            "timezoneId": 168,
            "localeId": 1,
            "countryId": 109,
            "features": {},
            "avatar": f"https://secure.gravatar.com/avatar/{world.user['id']}",
            "lastLogin": iso_ms(to_ms(world.clock.time()) - 3_600_000),
        }
    }


def _current_authorization(world: World, request: web.Request, target: Any, token: Token) -> Any:
    return {
        "authorization": {
            "authUsed": "oauth" if token.oauth else "token",
            "scope": list(token.scopes),
        }
    }


def _organizations(world: World, request: web.Request, target: Any, token: Token) -> Any:
    offset, limit = query_page(request, 10_000, 10_000)
    sort_dir = query_sort_dir(request, "asc")
    orgs = sorted(
        (world.organizations[o] for o in token.org_ids if o in world.organizations),
        key=lambda o: (o.name.lower(), o.id),
        reverse=sort_dir == "desc",
    )
    cols = [c for c in query_cols(request) if c in ORG_COLUMNS] or [
        "id",
        "name",
        "timezoneId",
        "zone",
    ]
    items = []
    for org in orgs[offset : offset + limit]:
        full = org_json(world, org)
        items.append({c: full[c] for c in cols})
    return {"organizations": items, "pg": pg_json("name", limit, sort_dir, offset)}


def _organization(world: World, request: web.Request, org: Organization, token: Token) -> Any:
    return {"organization": org_json(world, org)}


def _org_usage(world: World, request: web.Request, org: Organization, token: Token) -> Any:
    # organizationTimezone=true is accepted but days are always cut in UTC (guess).
    return {"data": org.usage.last_30_days(world.clock.time())}


def _teams(world: World, request: web.Request, org: Organization, token: Token) -> Any:
    offset, limit = query_page(request, 10_000, 10_000)
    sort_dir = query_sort_dir(request, "asc")
    teams = sorted(
        (world.teams[t] for t in org.team_ids),
        key=lambda t: (t.name.lower(), t.id),
        reverse=sort_dir == "desc",
    )
    cols = query_cols(request)
    return {
        "teams": [team_json(world, t, cols) for t in teams[offset : offset + limit]],
        "pg": pg_json("name", limit, sort_dir, offset),
    }


def _team_detail(world: World, request: web.Request, team: Team, token: Token) -> Any:
    return {"team": team_json(world, team, query_cols(request))}


def _team_usage(world: World, request: web.Request, team: Team, token: Token) -> Any:
    return {"data": team.usage.last_30_days(world.clock.time())}


def _scenarios(world: World, request: web.Request, scenarios: list[Scenario], token: Token) -> Any:
    offset, limit = query_page(request, 50, 10_000)
    sort_by = request.query.get("pg[sortBy]", "proprietal")
    if sort_by not in SCENARIO_SORT_KEYS:
        raise bad_request("Invalid value of parameter 'pg[sortBy]'.")
    sort_dir = query_sort_dir(request, "desc")
    ids = request.query.getall("id[]", [])
    if ids:
        try:
            wanted = {int(i) for i in ids}
        except ValueError:
            raise bad_request("Invalid value of parameter 'id[]'.") from None
        scenarios = [s for s in scenarios if s.id in wanted]
    is_active = query_bool(request, "isActive")
    if is_active is not None:
        scenarios = [s for s in scenarios if s.is_active == is_active]
    key = SCENARIO_SORT_KEYS[sort_by]
    # Stable order: ties broken by id in the same direction.
    ordered = sorted(scenarios, key=lambda s: (key(s), s.id), reverse=sort_dir == "desc")
    cols = query_cols(request)
    items = []
    for sc in ordered[offset : offset + limit]:
        body = scenario_json(world, sc, listing=True)
        items.append({c: body[c] for c in cols if c in body} if cols else body)
    return {"scenarios": items, "pg": pg_json(sort_by, limit, sort_dir, offset)}


def _consumptions(
    world: World, request: web.Request, scenarios: list[Scenario], token: Token
) -> Any:
    org = world.organizations[scenarios[0].org_id] if scenarios else None
    if org is None:
        org_id = query_int(request, "organizationId")
        if org_id is None:
            org_id = world.teams[query_int(request, "teamId") or 0].org_id
        org = world.organizations[org_id]
    return {
        # Only scenarios with at least one operation in the period are listed (make-api.md §2.4).
        "scenarioConsumptions": [
            {
                "scenarioId": s.id,
                "operations": s.operations,
                "transfer": s.transfer,
                "centicredits": s.centicredits,
            }
            for s in sorted(scenarios, key=lambda s: s.id)
            if s.centicredits >= 100
        ],
        "lastReset": iso_ms(org.last_reset_ms),
    }


def _scenario_detail(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    return {"scenario": scenario_json(world, sc, listing=False)}


def _scenario_usage(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    return {"data": sc.usage.last_30_days(world.clock.time())}


_RANGE_FILTERS = (
    ("durationFrom", "duration", 1),
    ("durationTo", "duration", -1),
    ("operationsFrom", "operations", 1),
    ("operationsTo", "operations", -1),
    ("transferFrom", "transfer", 1),
    ("transferTo", "transfer", -1),
)


def _scenario_logs(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    """GET /scenarios/{id}/logs; see make-api.md §3.1 for the parameters."""
    offset, limit = query_page(request, 50, 100)
    sort_dir = query_sort_dir(request, "desc")
    status = query_int(request, "status")
    if status is not None and status not in (1, 2, 3):
        raise bad_request("Invalid value of parameter 'status'.")
    from_ms = query_int(request, "from")  # milliseconds, inclusive
    to_ms_ = query_int(request, "to")
    # showCheckRuns: practice (not the docs) says check runs are hidden unless it is true.
    show_check = bool(query_bool(request, "showCheckRuns"))
    if world.faults.check_runs_listed and world.faults.applies(
        "check_runs_listed", sc.org_id, request.path
    ):
        show_check = True  # the docs' reading of the parameter, to test clients against both
    ranges = [(field, sign, query_int(request, key)) for key, field, sign in _RANGE_FILTERS]
    ranges = [(f, s, v) for f, s, v in ranges if v is not None]
    org = world.organizations[sc.org_id]
    cutoff = to_ms(world.clock.time()) - org.license.retention_days * DAY_S * 1000

    def keep(row: Any) -> bool:
        if row.ts_ms < cutoff or (row.check and not show_check):
            return False
        if status is not None and row.status != status:
            return False  # also drops audit rows, which have no status
        if (from_ms is not None and row.ts_ms < from_ms) or (
            to_ms_ is not None and row.ts_ms > to_ms_
        ):
            return False
        for field, sign, value in ranges:
            if row.status is None:
                return False  # guess: range filters drop audit rows, which lack the fields
            if (row.body[field] - value) * sign < 0:
                return False
        return True

    rows = [r for r in sc.logs if keep(r)]
    if sort_dir == "desc":
        rows.reverse()
    last = request.query.get("pg[last]")
    show_last = bool(query_bool(request, "pg[showLast]"))
    if last:
        # Keyset paging: only rows strictly after ``last`` in the sort direction
        # (``showLast`` also keeps the ``last`` row itself).
        if sort_dir == "desc":
            rows = [r for r in rows if r.imt_id < last or (show_last and r.imt_id == last)]
        else:
            rows = [r for r in rows if r.imt_id > last or (show_last and r.imt_id == last)]
    pg = pg_json("imtId", limit, sort_dir, offset)
    if last:
        pg.update(last=last, showLast=show_last)
    return {"scenarioLogs": [dict(r.body) for r in rows[offset : offset + limit]], "pg": pg}


def _scenario_log(world: World, request: web.Request, target: Any, token: Token) -> Any:
    sc, row = target
    body = dict(row.body)
    replayable = world.actions.is_replayable(row)
    body.update({"@kindId": sc.id, "@scenarioId": sc.id, "isReplayable": replayable})
    return {"scenarioLog": body}


def _scenario_execution(world: World, request: web.Request, target: Any, token: Token) -> Any:
    _, row = target
    out: dict[str, Any] = {"status": STATUS_NAMES[row.status]}
    if "error" in row.body:
        out["error"] = dict(row.body["error"])
    return out


def _dlqs(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    offset, limit = query_page(request, 50, 10_000)
    items = [d for d in sc.dlqs if not d.deleted]
    return {
        "dlqs": [
            {
                "id": d.id,
                "reason": d.reason,
                "created": iso_ms(d.created_ms),
                "size": d.size,
                "resolved": d.resolved,
                "retry": d.retry,
                "attempts": d.attempts,
            }
            for d in items[offset : offset + limit]
        ],
        # As recorded live: empty sortBy, ascending (oldest first).
        "pg": pg_json("", limit, "asc", offset),
    }


def _dlq_detail(world: World, request: web.Request, item: Any, token: Token) -> Any:
    sc = world.scenarios[item.scenario_id]
    team = world.teams[sc.team_id]
    return {
        "dlq": {
            "id": item.id,
            "scenarioId": sc.id,
            "scenarioName": sc.name,
            "companyId": team.id,  # legacy naming: "company" is the team
            "companyName": team.name,
            "resolved": item.resolved,
            "deleted": item.deleted,
            "index": item.index,
            "created": iso_ms(item.created_ms),
            "executionId": item.execution_id,
            "retry": item.retry,
            "attempts": item.attempts,
            "size": item.size,
        }
    }


def _hooks(world: World, request: web.Request, team: Team, token: Token) -> Any:
    # Default page size of /hooks is undocumented; 50 like /scenarios (guess).
    offset, limit = query_page(request, 50, 10_000)
    hooks = sorted((h for h in world.hooks.values() if h.team_id == team.id), key=lambda h: h.id)
    return {
        "hooks": [hook_json(world, h) for h in hooks[offset : offset + limit]],
        "pg": pg_json("id", limit, "asc", offset),
    }


def _hook_detail(world: World, request: web.Request, hook: Hook, token: Token) -> Any:
    return {"hook": hook_json(world, hook)}


# ------------------------------------------------------------------ pipeline


ROUTES: tuple[Route, ...] = (
    Route("/users/me", None, _no_target, _users_me, user_level=True),
    # Scope of current-authorization is unclear (make-api.md §0 "(?)"): none required here.
    Route(
        "/users/me/current-authorization", None, _no_target, _current_authorization, user_level=True
    ),
    Route("/organizations", "organizations:read", _no_target, _organizations, user_level=True),
    Route(r"/organizations/{id:\d+}", "organizations:read", _org, _organization),
    Route(r"/organizations/{id:\d+}/usage", "organizations:read", _org, _org_usage),
    Route("/teams", "teams:read", _teams_query, _teams),
    Route(r"/teams/{id:\d+}", "teams:read", _team, _team_detail),
    Route(r"/teams/{id:\d+}/usage", "teams:read", _team, _team_usage),
    Route("/scenarios", "scenarios:read", _team_or_org_query, _scenarios),
    Route("/scenarios/consumptions", "scenarios:read", _team_or_org_query, _consumptions),
    Route(r"/scenarios/{id:\d+}", "scenarios:read", resolve_scenario, _scenario_detail),
    Route(r"/scenarios/{id:\d+}/usage", "scenarios:read", resolve_scenario, _scenario_usage),
    Route(r"/scenarios/{id:\d+}/logs", "scenarios:read", resolve_scenario, _scenario_logs),
    Route(r"/scenarios/{id:\d+}/logs/{execution_id}", "scenarios:read", _execution, _scenario_log),
    Route(
        r"/scenarios/{id:\d+}/executions/{execution_id}",
        "scenarios:read",
        _execution,
        _scenario_execution,
    ),
    Route("/dlqs", "dlqs:read", _dlqs_query, _dlqs),
    Route("/dlqs/{dlq_id}", "dlqs:read", resolve_dlq, _dlq_detail),
    Route("/hooks", "hooks:read", _hooks_query, _hooks),
    Route(r"/hooks/{id:\d+}", "hooks:read", _hook, _hook_detail),
    *SIGNAL_ROUTES,  # /analytics/{organizationId}, /notifications
    *ACTION_ROUTES,  # POST start, stop, run, replay, DLQ retry
)


class RateLimiter:
    """Fixed 60-second windows per bucket (an organization, or a user for user-level routes)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Any, int], int] = {}

    @staticmethod
    def window(t: float) -> int:
        return int(t // 60) * 60

    def count(self, bucket: Any, t: float) -> int:
        return self._counts.get((bucket, self.window(t)), 0)

    def admit(self, bucket: Any, limit: int, t: float) -> bool:
        w = self.window(t)
        n = self._counts.get((bucket, w), 0)
        if n >= limit:
            return False
        if len(self._counts) > 10_000:  # forget old windows
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= w - 60}
        self._counts[(bucket, w)] = n + 1
        return True


LIMITER_KEY = web.AppKey("limiter", RateLimiter)


def _json(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


async def _respond(
    request: web.Request,
    route: Route,
    token: Token | None,
    resolved: Resolved,
    error: ApiError | None,
) -> web.Response:
    world = request.app[WORLD_KEY]
    limiter = request.app[LIMITER_KEY]
    faults = world.faults
    path = request.path
    org_id = resolved[0]

    def fault(knob: str) -> bool:
        value = getattr(faults, knob)
        return bool(value) and faults.applies(knob, org_id, path)

    if fault("latency_s"):
        await world.clock.sleep(float(faults.latency_s))
        world.advance()
    # Cloudflare and 5xx faults come from in front of Make's API: no x-ratelimit-* headers.
    if fault("html_error_count"):
        faults.html_error_count -= 1
        return web.Response(status=403, text=CLOUDFLARE_1010, content_type="text/html")
    if fault("error_5xx_count"):
        faults.error_5xx_count -= 1
        status = faults.error_5xx_status or next(request.app[_CYCLE_KEY])
        return _json(status, SERVER_ERRORS.get(status, SERVER_ERRORS[500]), {})

    t = world.clock.time()
    if route.user_level or org_id is None:
        bucket: Any = ("user", token.token if token else "anonymous")
        limit = USER_BUCKET_LIMIT
    elif route.bucket_limit is not None:
        bucket = (route.path, org_id)
        limit = route.bucket_limit
    else:
        bucket = ("org", org_id)
        limit = world.organizations[org_id].api_limit

    def rl_headers(remaining: int | None = None) -> dict[str, str]:
        if fault("omit_ratelimit_headers"):
            return {}
        left = limit - limiter.count(bucket, t) if remaining is None else remaining
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, left)),
            "x-ratelimit-reset": str(limiter.window(t) + 60),
        }

    def too_many() -> web.Response:
        headers = rl_headers(0)
        if fault("retry_after_s"):
            headers["Retry-After"] = str(math.ceil(float(faults.retry_after_s or 0)))
        if fault("plain_text_429"):
            return web.Response(
                status=429, text=RATE_LIMIT_MESSAGE, content_type="text/plain", headers=headers
            )
        return _json(429, {"message": RATE_LIMIT_MESSAGE, "code": "SC429"}, headers)

    if fault("storm_429_count"):
        faults.storm_429_count -= 1
        return too_many()
    if token is None:
        return _json(401, UNAUTHORIZED, rl_headers())
    if error is not None:
        return _json(error.status, error.body, rl_headers())
    if route.scope is not None and route.scope not in token.scopes:
        return _json(403, FORBIDDEN, rl_headers())
    if org_id is not None and org_id not in token.org_ids:
        return _json(403, FORBIDDEN, rl_headers())
    if route.authorize is not None:
        try:
            route.authorize(world, resolved[1], token)
        except ApiError as exc:
            return _json(exc.status, exc.body, rl_headers())
    if not limiter.admit(bucket, limit, t):
        return too_many()
    try:
        body = route.render(world, request, resolved[1], token)
    except ApiError as exc:
        return _json(exc.status, exc.body, rl_headers())
    if route.method != "GET" and world.actions.lose_answer(path):
        # Make did the work, then the answer was lost in front of it (a gateway timeout).
        status = world.actions.knobs.lost_answer_status
        return _json(status, SERVER_ERRORS.get(status, SERVER_ERRORS[500]), {})
    if isinstance(body, Answer):
        if body.body is None:
            return web.Response(status=body.status, headers=rl_headers())
        return _json(body.status, body.body, rl_headers())
    if fault("corrupt_entries"):
        _corrupt_entries(body, int(faults.corrupt_entries))
    text = json.dumps(body)
    if fault("malformed_json_count"):
        faults.malformed_json_count -= 1
        text = text[: max(1, len(text) // 2)]
    return web.Response(
        status=200, text=text, content_type="application/json", headers=rl_headers()
    )


def _corrupt_entries(body: Any, n: int) -> None:
    """Drop the ids of the first ``n`` entries of the list in ``body`` (the corrupt_entries fault)."""
    items = (
        next((v for v in body.values() if isinstance(v, list)), [])
        if isinstance(body, dict)
        else []
    )
    for i, item in enumerate(items[:n]):
        if isinstance(item, dict):
            items[i] = {k: v for k, v in item.items() if k not in ("id", "imtId")}


def _api_handler(route: Route) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        world = request.app[WORLD_KEY]
        world.advance()
        world.last_headers = CIMultiDict(request.headers)
        t = world.clock.time()
        token = token_of(world, request)
        error: ApiError | None = None
        try:
            resolved = route.resolve(world, request)
        except ApiError as exc:
            resolved, error = (exc.org_id, None), exc
        if route.method != "GET":
            raw = await request.read()
            try:
                request[BODY_KEY] = json.loads(raw) if raw.strip() else None
            except ValueError:
                request[BODY_KEY] = None
                error = error or bad_request("The request body is not valid JSON.")
        # Recorded on arrival (status 0 while in flight) so that requests a client gave up on
        # (timeouts during a latency fault) are still counted; 499 if the handler is cancelled.
        record = RequestRecord(
            t=t,
            method=request.method,
            path=request.path,
            query=query_dict(request),
            org_id=resolved[0],
            status=IN_FLIGHT,
            token_ok=token is not None,
        )
        index = len(world.requests)
        world.requests.append(record)
        status = CLIENT_CLOSED
        try:
            response = await _respond(request, route, token, resolved, error)
            status = response.status
        finally:
            world.requests[index] = replace(record, status=status)
        return response

    return handle


async def _unknown_api_path(request: web.Request) -> web.Response:
    """Anything else under /api/v2 (wrong case included: paths are case-sensitive)."""
    world = request.app[WORLD_KEY]
    world.advance()
    world.requests.append(
        RequestRecord(
            world.clock.time(),
            request.method,
            request.path,
            query_dict(request),
            None,
            404,
            token_of(world, request) is not None,
        )
    )
    return _json(
        404,
        {
            "detail": "The requested resource was not found.",
            "message": "Not Found",
            "code": "SC404",
        },
        {},
    )


# ------------------------------------------------------------------ admin routes


async def _admin_requests(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    since = int(request.query.get("since", "0"))
    rows = [asdict(r) for r in world.requests[since:]]
    return web.json_response({"requests": rows, "next": len(world.requests)})


async def _admin_ledger(request: web.Request) -> web.Response:
    """The ground truth: every error, deactivation, DLQ item and recovery (``World.ledger``)."""
    world = request.app[WORLD_KEY]
    world.advance()
    since = int(request.query.get("since", "0"))
    return web.json_response({"ledger": world.ledger_json(since), "next": len(world.ledger)})


async def _admin_faults(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    if request.method == "POST":
        try:
            world.faults.update(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(world.faults.to_json())


async def _admin_runs(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    data = await request.json()
    sid = int(data["scenarioId"])
    if sid not in world.scenarios:
        return web.json_response({"error": "unknown scenario"}, status=404)
    entry = world.inject_run(
        sid,
        status=int(data.get("status", 3)),
        error_name=data.get("errorName"),
        error_message=data.get("errorMessage"),
        operations=data.get("operations"),
        at=data.get("at"),
        manual=bool(data.get("manual", False)),
    )
    return web.json_response({"scenarioLog": entry})


async def _admin_active(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    sid = path_int(request)
    if sid not in world.scenarios:
        return web.json_response({"error": "unknown scenario"}, status=404)
    data = await request.json()
    world.set_active(sid, bool(data.get("active", True)), author=data.get("author"))
    return web.json_response({"scenario": scenario_json(world, world.scenarios[sid], listing=True)})


BEHAVIOURS = frozenset({"stalled", "traffic", "volume", "ops_spread", "late_failure_share"})


async def _admin_behaviour(request: web.Request) -> web.Response:
    """Silent failures of one scenario (World.set_behaviour): ``{"stalled": true}``,
    ``{"traffic": 0}``, ``{"volume": 0.1}``; how its operations vary: ``{"ops_spread": 0.3,
    "late_failure_share": 0.2}``."""
    world = request.app[WORLD_KEY]
    sid = path_int(request)
    if sid not in world.scenarios:
        return web.json_response({"error": "unknown scenario"}, status=404)
    data = await request.json()
    unknown = set(data) - BEHAVIOURS
    if unknown:
        return web.json_response({"error": f"unknown behaviour {sorted(unknown)[0]!r}"}, status=400)
    try:
        sc = world.set_behaviour(sid, **{k: data.get(k) for k in BEHAVIOURS})
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"scenario": scenario_json(world, sc, listing=True)})


async def _admin_clock(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    if not isinstance(world.clock, ManualClock):
        return web.json_response({"error": "the world's clock is not a ManualClock"}, status=400)
    data = await request.json()
    world.clock.advance(float(data.get("seconds", 0)))
    world.advance()
    return web.json_response({"time": world.clock.time()})


async def _admin_world(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    world.advance()
    return web.json_response(world.summary())


_CYCLE_KEY = web.AppKey("5xx_cycle", itertools.cycle)


def create_app(world: World) -> web.Application:
    """The aiohttp application serving ``world`` under /api/v2 and admin routes under /_sim."""
    app = web.Application()
    app[WORLD_KEY] = world
    app[LIMITER_KEY] = RateLimiter()
    app[_CYCLE_KEY] = itertools.cycle((500, 502, 503))
    app.router.add_get("/_sim/requests", _admin_requests)
    app.router.add_get("/_sim/ledger", _admin_ledger)
    app.router.add_get("/_sim/faults", _admin_faults)
    app.router.add_post("/_sim/faults", _admin_faults)
    app.router.add_post("/_sim/runs", _admin_runs)
    app.router.add_post(r"/_sim/scenarios/{id:\d+}/active", _admin_active)
    app.router.add_post(r"/_sim/scenarios/{id:\d+}/behaviour", _admin_behaviour)
    app.router.add_post("/_sim/clock/advance", _admin_clock)
    app.router.add_get("/_sim/world", _admin_world)
    add_signal_admin_routes(app)
    add_action_admin_routes(app)
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get("/api/v2" + route.path, _api_handler(route), allow_head=False)
        else:
            app.router.add_route(route.method, "/api/v2" + route.path, _api_handler(route))
    app.router.add_route("*", "/api/v2/{tail:.*}", _unknown_api_path)
    return app
