"""HTTP face of Make's write endpoints (make-api.md §8.1, §11.4-11.6) and their admin routes.

The request pipeline (auth, scopes, organization, rate limits, faults, the request log) is
:mod:`watcher.simulator.app`'s, which serves :data:`ACTION_ROUTES` with its own; what the
calls do to the world is :mod:`watcher.simulator.actions`.

| Call | Scope | Answer |
|---|---|---|
| ``POST /scenarios/{id}/start`` | ``scenarios:write`` | ``{"scenario": {"id", "islinked", "isActive"}}`` |
| ``POST /scenarios/{id}/stop`` | ``scenarios:write`` | the same |
| ``POST /scenarios/{id}/run`` | ``scenarios:run`` | ``{"executionId", "statusUrl"}`` |
| ``POST /scenarios/{id}/replay`` | ``scenarios:run`` | 202 no content, or ``{"executionId"}`` |
| ``POST /dlqs/{dlqId}/retry`` | ``dlqs:write`` | ``{"dlq": "<dlqId>"}`` |
| ``POST /dlqs/retry?scenarioId=`` | ``dlqs:write`` | ``{"dlqs": ["<dlqId>", ...]}`` (a guess) |

Refusals are Make's error bodies (``{detail, message, code}``): "Scenario is already running"
and "Scenario is not running" as 400 ``SC400`` (status and code are guesses), "Scenario is not
activated" as 422 ``IM325`` (``/run`` and ``/replay`` of an inactive scenario), "Execution is
not replayable" as 422 ``SC422`` (the code is a guess), an unknown execution as 404, an
organization paused for its quota as 429 ``IM310``. A token without the scope gets Make's
plain 403 "Access denied." before anything changes. ``/run`` is counted in a bucket of its own
(5,000 a minute per organization, the ``x-ratelimit-limit`` of the live recording), every
other call here in the organization's. The answer of ``POST /dlqs/retry`` is undocumented
(the SDK discards it): we answer the ids queued.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from watcher.simulator.actions import ActionRefused
from watcher.simulator.api import (
    WORLD_KEY,
    Answer,
    ApiError,
    Resolved,
    Route,
    bad_request,
    json_body,
    not_found,
    query_int,
    resolve_dlq,
    resolve_scenario,
)
from watcher.simulator.world import Scenario, Token, World

#: The x-ratelimit-limit recorded on a live /run answer (make-api.md §11.6).
RUN_BUCKET_LIMIT = 5000


def _refused(exc: ActionRefused, org_id: int | None = None) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.detail, org_id=org_id)


# ------------------------------------------------------------------ resolvers




def _dlqs_query(world: World, request: web.Request) -> Resolved:
    sid = query_int(request, "scenarioId")
    if sid is None:
        raise bad_request("Missing required parameter scenarioId")
    sc = world.scenarios.get(sid)
    if sc is None:
        raise not_found("Scenario")
    return sc.org_id, sc


# ------------------------------------------------------------------ renderers


def _scenario_answer(sc: Scenario) -> dict[str, Any]:
    return {"scenario": {"id": sc.id, "islinked": sc.is_active, "isActive": sc.is_active}}


def _start(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    try:
        return _scenario_answer(world.actions.start(sc.id))
    except ActionRefused as exc:
        raise _refused(exc, sc.org_id) from None


def _stop(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    try:
        return _scenario_answer(world.actions.stop(sc.id))
    except ActionRefused as exc:
        raise _refused(exc, sc.org_id) from None


def _status_url(request: web.Request, sc: Scenario, execution_id: str) -> str:
    return f"{request.url.origin()}/api/v2/scenarios/{sc.id}/executions/{execution_id}"


def _run(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    body = json_body(request)
    if "data" in body and not isinstance(body["data"], dict):
        raise bad_request("Invalid value of parameter 'data'.")
    if body.get("responsive") is True:
        # A responsive run waits for the end (up to 40 s) and adds status and outputs; our
        # runs end at once, so we could answer it, but makewatch never asks for it.
        raise bad_request("responsive runs are not simulated; send responsive: false.")
    try:
        row = world.actions.run(sc.id)
    except ActionRefused as exc:
        raise _refused(exc, sc.org_id) from None
    eid = row.body["id"]
    return {"executionId": eid, "statusUrl": _status_url(request, sc, eid)}


def _replay(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    ids = json_body(request).get("executionIds")
    if not isinstance(ids, list) or not ids or not isinstance(ids[0], str):
        raise bad_request("Missing value of required parameter 'executionIds'.")
    try:
        # Only the first id is replayed (make-api.md §11.4).
        row = world.actions.replay(sc.id, ids[0])
    except ActionRefused as exc:
        raise _refused(exc, sc.org_id) from None
    if world.actions.knobs.replay_answer == "execution_id":
        return Answer(200, {"executionId": row.body["id"]})
    return Answer(202)


def _retry_one(world: World, request: web.Request, item: Any, token: Token) -> Any:
    try:
        items = world.actions.dlq_items(item.scenario_id, [item.id])
    except ActionRefused as exc:
        raise _refused(exc) from None
    world.actions.retry_dlqs(items)
    return {"dlq": item.id}


def _retry_many(world: World, request: web.Request, sc: Scenario, token: Token) -> Any:
    body = json_body(request)
    ids, every, exceptions = body.get("ids"), body.get("all"), body.get("exceptIds") or []
    if every is True:
        if ids is not None:
            raise bad_request("ids and all cannot be used together")
        if not isinstance(exceptions, list) or not all(isinstance(i, str) for i in exceptions):
            raise bad_request("Invalid value of parameter 'exceptIds'.")
        wanted = None
    elif isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids):
        wanted = ids
    else:
        raise bad_request("Missing value of required parameter 'ids' or 'all'.")
    try:
        items = world.actions.dlq_items(sc.id, wanted, exceptions)
    except ActionRefused as exc:
        raise _refused(exc, sc.org_id) from None
    world.actions.retry_dlqs(items)
    return {"dlqs": [d.id for d in items]}


ACTION_ROUTES: tuple[Route, ...] = (
    Route(r"/scenarios/{id:\d+}/start", "scenarios:write", resolve_scenario, _start, method="POST"),
    Route(r"/scenarios/{id:\d+}/stop", "scenarios:write", resolve_scenario, _stop, method="POST"),
    Route(
        r"/scenarios/{id:\d+}/run",
        "scenarios:run",
        resolve_scenario,
        _run,
        method="POST",
        bucket_limit=RUN_BUCKET_LIMIT,
    ),
    Route(r"/scenarios/{id:\d+}/replay", "scenarios:run", resolve_scenario, _replay, method="POST"),
    Route("/dlqs/retry", "dlqs:write", _dlqs_query, _retry_many, method="POST"),
    Route("/dlqs/{dlq_id}/retry", "dlqs:write", resolve_dlq, _retry_one, method="POST"),
)


# ------------------------------------------------------------------ admin routes


async def _admin_actions(request: web.Request) -> web.Response:
    """``GET``: the action knobs; ``POST``: a partial update (``{"replay_answer":
    "execution_id"}``, ``{"replay_window_s": 3600}``, ``{"reset": true}``)."""
    world = request.app[WORLD_KEY]
    if request.method == "POST":
        try:
            world.actions.knobs.update(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(world.actions.knobs.to_json())


async def _admin_outcomes(request: web.Request) -> web.Response:
    """Queue outcomes of a scenario's next API-started runs: ``{"scenarioId": 1, "status": 3,
    "errorName": "...", "errorMessage": "...", "count": 1}``."""
    world = request.app[WORLD_KEY]
    data = await request.json()
    try:
        world.actions.queue_outcome(
            int(data["scenarioId"]),
            status=int(data.get("status", 3)),
            error_name=data.get("errorName"),
            error_message=data.get("errorMessage"),
            count=int(data.get("count", 1)),
        )
    except KeyError:
        return web.json_response({"error": "unknown scenario"}, status=404)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"queued": True})


async def _admin_replayable(request: web.Request) -> web.Response:
    """Force ``isReplayable`` of an execution: ``{"executionId": "...", "replayable": true}``
    (``null`` restores the default rule)."""
    world = request.app[WORLD_KEY]
    data = await request.json()
    world.actions.set_replayable(str(data["executionId"]), data.get("replayable"))
    return web.json_response({"executionId": data["executionId"]})


def add_action_admin_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/actions", _admin_actions)
    app.router.add_post("/_sim/actions", _admin_actions)
    app.router.add_post("/_sim/actions/outcomes", _admin_outcomes)
    app.router.add_post("/_sim/actions/replayable", _admin_replayable)
