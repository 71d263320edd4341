"""HTTP face of the simulated signals: ``GET /analytics/{organizationId}``, ``GET /notifications``
and their admin routes under ``/_sim``. The state and its imperfections are in
:mod:`watcher.simulator.signals`; the request pipeline (auth, scopes, rate limits, faults) is
:mod:`watcher.simulator.app`'s, which serves :data:`SIGNAL_ROUTES` with its own.

**The analytics answer is a guess.** Make documents neither a response example nor a schema
(make-api.md §11.2): only the sortable names (``name, teamName, status, operations,
executions, errors, errorRate`` and the ``*Change`` of the last four). We serve::

    {"analytics": [{"scenarioId": 6410001, "name": "...", "teamId": 2060001,
                    "teamName": "...", "folderId": null, "status": "active",
                    "operations": 120, "executions": 40, "errors": 3, "errorRate": 7.5,
                    "operationsChange": 20.0, "executionsChange": 0.0,
                    "errorsChange": null, "errorRateChange": null}],
     "pg": {"sortBy": "operations", "sortDir": "asc", "limit": 50, "offset": 0,
            "returnTotalCount": false}}

with these guesses: the wrapper key ``analytics``; ``scenarioId`` and ``teamId`` beside the
names; ``status`` ∈ active | inactive | invalid, the scenario's state now (the filter's
values); ``errorRate`` in percent with two decimals (``analytics_error_rate_unit`` switches to
a fraction); each ``*Change`` the relative change in percent against the period of the same
length just before the timeframe, null when that period had none; every scenario of the
organization listed, idle ones with zeros; ``pg[offset]``/``pg[limit]`` paging (default 50,
at most 10000), ``pg[sortBy]``/``pg[sortDir]`` (or bare ``sortBy``/``sortDir``), ties broken by
scenario id; ``pg[returnTotalCount]=true`` adds ``pg.count``. ``timeframe[dateFrom]`` and
``timeframe[dateTo]`` are ISO dates or datetimes (a date means the whole UTC day), default one
year ago to today; a start older than a year, an end before the start, or anything unparsable
is a 400. The Owner-role requirement is not modelled: every token with ``analytics:read``
and the organization may read it.

**The notification answer follows the docs' example** (§11.1), with these guesses: a token
sees the notices of the scenarios of its organizations; ``type`` is always 1; ``imtZoneId``
is accepted and ignored, and ``userZoneNotifications`` lists one zone; ``pg[limit]`` defaults
to 10000 (the example's ``pg``); the call is counted in the budget of the token's first
organization (make-api.md §11.6: no exemption is stated).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from watcher.simulator.api import (
    WORLD_KEY,
    Resolved,
    Route,
    bad_request,
    forbidden,
    not_found,
    path_int,
    query_bool,
    query_list,
    query_page,
    query_sort_dir,
    token_of,
)
from watcher.simulator.signals import Notice
from watcher.simulator.world import Organization, Scenario, Token, World, iso_ms, to_ms

DAY_MS = 86_400_000
YEAR_MS = 366 * DAY_MS  # "a date older than one year is refused"; a day of slack for leap years
ANALYTICS_SORT_KEYS = (
    "name", "teamName", "status", "operations", "executions", "errors", "errorRate",
    "executionsChange", "operationsChange", "errorsChange", "errorRateChange",
)  # fmt: skip
ANALYTICS_STATUSES = ("active", "inactive", "invalid")


# ------------------------------------------------------------------ analytics


def _analytics_org(world: World, request: web.Request) -> Resolved:
    org = world.organizations.get(path_int(request))
    if org is None:
        raise not_found("Organization")
    return org.id, org


def _authorize_analytics(world: World, org: Organization, token: Token) -> None:
    # Enterprise only (license.analyticsAccess); others get Make's plain 403 (make-api.md §11.2).
    if not world.signals.analytics_access(org):
        raise forbidden()


def _parse_when(raw: str, key: str) -> tuple[int, bool]:
    """(epoch ms, whether it was a bare date) of an ISO date or datetime."""
    s = raw.strip()
    try:
        if len(s) == 10:
            d = date.fromisoformat(s)
            return to_ms(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()), True
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"Invalid value of parameter '{key}'.") from None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return to_ms(dt.timestamp()), False


def _day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def timeframe_ms(world: World, request: web.Request) -> tuple[int, int]:
    """The ``[start, end)`` in ms that a request's timeframe covers (before the lag)."""
    now_ms = to_ms(world.clock.time())
    today = _day_start(now_ms)
    raw_from = request.query.get("timeframe[dateFrom]")
    raw_to = request.query.get("timeframe[dateTo]")
    from_ms, from_date = (
        _parse_when(raw_from, "timeframe[dateFrom]") if raw_from else (today - 365 * DAY_MS, True)
    )
    to_ms_, to_date = _parse_when(raw_to, "timeframe[dateTo]") if raw_to else (today, True)
    if from_ms < now_ms - YEAR_MS:
        raise bad_request("The timeframe cannot start more than one year ago.")
    whole = world.signals.knobs.analytics_whole_days
    start = _day_start(from_ms) if whole or from_date else from_ms
    end = _day_start(to_ms_) + DAY_MS if whole or to_date else to_ms_ + 1
    if end <= start:  # a bare date as the end means the end of that day
        raise bad_request("timeframe[dateTo] is before timeframe[dateFrom].")
    return start, end


def _change(now: float, before: float) -> float | None:
    return None if before == 0 else round((now - before) / before * 100, 2)


def _status(sc: Scenario) -> str:
    return "invalid" if sc.is_invalid else "active" if sc.is_active else "inactive"


def analytics_entry(
    world: World, sc: Scenario, start: int, end: int, cutoff: int
) -> dict[str, Any]:
    """One scenario's row: runs in ``[start, end)`` counted up to ``cutoff`` (the lag)."""
    sig = world.signals
    cur = sig.counts(sc.id, start, min(end, cutoff))
    prev = sig.counts(sc.id, start - (end - start), min(start, cutoff))
    rate = cur.errors / cur.executions if cur.executions else 0.0
    prev_rate = prev.errors / prev.executions if prev.executions else 0.0
    percent = sig.knobs.analytics_error_rate_unit == "percent"
    return {
        "scenarioId": sc.id,
        "name": sc.name,
        "teamId": sc.team_id,
        "teamName": world.teams[sc.team_id].name,
        "folderId": None,
        "status": _status(sc),
        "operations": cur.operations,
        "executions": cur.executions,
        "errors": cur.errors,
        "errorRate": round(rate * 100, 2) if percent else round(rate, 4),
        "operationsChange": _change(cur.operations, prev.operations),
        "executionsChange": _change(cur.executions, prev.executions),
        "errorsChange": _change(cur.errors, prev.errors),
        "errorRateChange": _change(rate, prev_rate),
    }


def _sort_value(entry: dict[str, Any], key: str) -> tuple[int, Any]:
    value = entry[key]
    if value is None:
        return (0, 0)  # nulls first in ascending order (guess)
    return (1, value.lower() if isinstance(value, str) else value)


def _analytics(world: World, request: web.Request, org: Organization, token: Token) -> Any:
    offset, limit = query_page(request, 50, 10_000)
    sort_key = "pg[sortBy]" if "pg[sortBy]" in request.query else "sortBy"
    sort_by = request.query.get(sort_key, "operations")
    if sort_by not in ANALYTICS_SORT_KEYS:
        raise bad_request(f"Invalid value of parameter '{sort_key}'.")
    dir_key = "pg[sortDir]" if "pg[sortDir]" in request.query else "sortDir"
    sort_dir = query_sort_dir(request, "asc", dir_key)
    try:
        team_ids = {int(t) for t in query_list(request, "teamId")}
        folder_ids = {int(f) for f in query_list(request, "folderId")}
    except ValueError:
        raise bad_request("Invalid value of parameter 'teamId'.") from None
    statuses = set(query_list(request, "status"))
    if statuses - set(ANALYTICS_STATUSES):
        raise bad_request("Invalid value of parameter 'status'.")
    start, end = timeframe_ms(world, request)
    cutoff = to_ms(world.clock.time() - world.signals.knobs.analytics_lag_s) + 1
    scenarios = [
        sc
        for sc in world.scenarios_of_org(org.id)
        if (not team_ids or sc.team_id in team_ids)
        and not folder_ids  # the simulator's scenarios are in no folder
        and (not statuses or _status(sc) in statuses)
    ]
    rows = [analytics_entry(world, sc, start, end, cutoff) for sc in scenarios]
    rows.sort(key=lambda r: (_sort_value(r, sort_by), r["scenarioId"]), reverse=sort_dir == "desc")
    pg: dict[str, Any] = {
        "sortBy": sort_by,
        "sortDir": sort_dir,
        "limit": limit,
        "offset": offset,
        "returnTotalCount": bool(query_bool(request, "pg[returnTotalCount]")),
    }
    if pg["returnTotalCount"]:
        pg["count"] = len(rows)
    return {"analytics": rows[offset : offset + limit], "pg": pg}


# ------------------------------------------------------------------ notifications


def _notifications_owner(world: World, request: web.Request) -> Resolved:
    """The feed is the token owner's; its calls use the budget of the token's first org."""
    tok = token_of(world, request)
    return (tok.org_ids[0] if tok is not None and tok.org_ids else None), None


def notification_json(notice: Notice) -> dict[str, Any]:
    return {
        "id": notice.id,
        "subject": notice.subject,
        "read": iso_ms(to_ms(notice.read_t)) if notice.read_t is not None else None,
        "created": iso_ms(to_ms(notice.created_t)),
        "type": 1,
    }


def _notifications(world: World, request: web.Request, target: Any, token: Token) -> Any:
    offset, limit = query_page(request, 10_000, 10_000)
    sort_dir = query_sort_dir(request, "desc")
    if request.query.get("pg[sortBy]", "id") != "id":
        raise bad_request("Invalid value of parameter 'pg[sortBy]'.")  # only id is accepted (§11.1)
    feed = world.signals.feed_for(token.org_ids, world.clock.time())
    unread = sum(1 for n in feed if n.read_t is None)
    if query_bool(request, "unreadOnly"):
        feed = [n for n in feed if n.read_t is None]
    if sort_dir == "desc":
        feed = feed[::-1]
    return {
        "notifications": [notification_json(n) for n in feed[offset : offset + limit]],
        "userUnreadNotifications": unread,
        "userZoneNotifications": [{"imtZoneId": 1, "unreadNotifications": unread}],
        "pg": {"sortBy": "id", "limit": limit, "sortDir": sort_dir, "offset": offset},
    }


SIGNAL_ROUTES: tuple[Route, ...] = (
    Route(
        r"/analytics/{id:\d+}",
        "analytics:read",
        _analytics_org,
        _analytics,
        authorize=_authorize_analytics,
    ),
    Route("/notifications", "notifications:read", _notifications_owner, _notifications),
)


def license_extra(world: World, org: Organization) -> dict[str, Any]:
    """``license.analyticsAccess`` (SDK type of GET /organizations/{id}); absent where the
    organization has no analytics, as in the Free-plan recording (guess for other plans)."""
    return {"analyticsAccess": True} if world.signals.analytics_access(org) else {}


# ------------------------------------------------------------------ admin routes


async def _admin_signals(request: web.Request) -> web.Response:
    """``GET``: the signal knobs; ``POST``: a partial update, ``{"reset": true}`` restores the
    defaults (see SignalKnobs); 400 for an unknown knob or a bad value."""
    world = request.app[WORLD_KEY]
    if request.method == "POST":
        try:
            world.signals.knobs.update(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(world.signals.knobs.to_json())


async def _admin_notices(request: web.Request) -> web.Response:
    """The ground truth: every failed run's notice decision (shown, missing, throttled) from
    index ``since`` on, with when it appears (``createdT``) and its id once it has."""
    world = request.app[WORLD_KEY]
    world.advance()
    world.signals.flush(world.clock.time())
    since = int(request.query.get("since", "0"))
    notices = world.signals.notices
    return web.json_response(
        {"notices": [n.to_json() for n in notices[since:]], "next": len(notices)}
    )


async def _admin_read(request: web.Request) -> web.Response:
    """The user reads notices in Make's UI: ``{"ids": ["41000001"]}`` or ``{"all": true}``."""
    world = request.app[WORLD_KEY]
    data = await request.json()
    if not isinstance(data, dict) or not (
        data.get("all") is True or isinstance(data.get("ids"), list)
    ):
        return web.json_response({"error": 'give {"all": true} or {"ids": [...]}'}, status=400)
    world.advance()
    ids = None if data.get("all") is True else [str(i) for i in data["ids"]]
    return web.json_response({"read": world.signals.mark_read(world.clock.time(), ids)})


def add_signal_admin_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/signals", _admin_signals)
    app.router.add_post("/_sim/signals", _admin_signals)
    app.router.add_get("/_sim/notices", _admin_notices)
    app.router.add_post("/_sim/notifications/read", _admin_read)
