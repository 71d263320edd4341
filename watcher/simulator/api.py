"""What the simulator's route modules share: Make-style errors, query parsing, the route table row.

:mod:`watcher.simulator.app` serves the core Make resources and runs the request pipeline;
:mod:`watcher.simulator.signal_routes` adds ``/analytics`` and ``/notifications``. Both build
their answers from these helpers, so that a parameter is parsed (and refused) the same way
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from watcher.simulator.world import Token, World


class ApiError(Exception):
    """A Make-style JSON error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: str,
        suberrors: list[dict[str, str]] | None = None,
        org_id: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"detail": detail, "message": message, "code": code}
        if suberrors:
            self.body["suberrors"] = suberrors
        self.org_id = org_id


def bad_request(detail: str) -> ApiError:
    # Make's 400s carry SC400 and suberrors (make-api.md §7.1); the exact texts for our
    # own validation messages are guesses.
    return ApiError(400, "SC400", "Bad Request", detail, [{"message": detail, "name": "Error"}])


def not_found(what: str, org_id: int | None = None) -> ApiError:
    return ApiError(404, "SC404", "Not Found", f"{what} not found.", org_id=org_id)


FORBIDDEN = {"detail": "Access denied.", "message": "Permission denied", "code": "SC403"}


def forbidden() -> ApiError:
    """Make's documented 403 body (make-api.md §7.1), for checks beyond the scope."""
    return ApiError(403, FORBIDDEN["code"], FORBIDDEN["message"], FORBIDDEN["detail"])


#: Where an application built by :func:`watcher.simulator.app.create_app` keeps its world.
WORLD_KEY = web.AppKey("world", World)


# ------------------------------------------------------------------ query helpers


def query_int(request: web.Request, key: str, default: int | None = None) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"Invalid value of parameter '{key}'.") from None


def query_bool(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    return raw.lower() in ("true", "1", "yes")


def query_sort_dir(request: web.Request, default: str, key: str = "pg[sortDir]") -> str:
    value = request.query.get(key, default)
    if value not in ("asc", "desc"):
        raise bad_request(f"Invalid value of parameter '{key}'.")
    return value


def query_page(request: web.Request, default_limit: int, max_limit: int) -> tuple[int, int]:
    offset = query_int(request, "pg[offset]", 0) or 0
    limit = query_int(request, "pg[limit]", default_limit) or default_limit
    if offset < 0 or limit < 1:
        raise bad_request("Invalid paging parameters.")
    # Guess: values over the maximum are clamped rather than rejected.
    return offset, min(limit, max_limit)


def pg_json(sort_by: str, limit: int, sort_dir: str, offset: int) -> dict[str, Any]:
    return {
        "sortBy": sort_by,
        "limit": limit,
        "sortDir": sort_dir,
        "offset": offset,
        "returnTotalCount": False,
    }


def query_cols(request: web.Request) -> list[str]:
    return request.query.getall("cols[]", [])


def query_list(request: web.Request, key: str) -> list[str]:
    """A parameter that may be one value or several: ``k=1``, ``k=1&k=2``, ``k[]=1&k[]=2``,
    ``k=1,2`` or ``k=[1,2]`` (the docs write arrays as ``[1,2,3]`` without saying how they
    are encoded, make-api.md §11.2)."""
    raw = [*request.query.getall(key, []), *request.query.getall(key + "[]", [])]
    out: list[str] = []
    for value in raw:
        out += [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
    return out


def query_dict(request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in request.query:
        if key in out:
            continue
        values = request.query.getall(key)
        out[key] = values if len(values) > 1 or key.endswith("[]") else values[0]
    return out


def path_int(request: web.Request, name: str = "id") -> int:
    return int(request.match_info[name])


def token_of(world: World, request: web.Request) -> Token | None:
    """The token the request authenticates with, or None (unknown, or the wrong scheme)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    tok = world.tokens.get(value.strip())
    if tok is None:
        return None
    # API tokens use "Token"; OAuth access tokens use "Bearer" (make-api.md §1.2).
    if (scheme == "Token" and not tok.oauth) or (scheme == "Bearer" and tok.oauth):
        return tok
    return None


# ------------------------------------------------------------------ the route table

#: What a resolver finds: the organization whose budget the request uses (None: the
#: user-level bucket) and the target handed to the renderer.
Resolved = tuple[int | None, Any]


@dataclass(frozen=True)
class Answer:
    """What a renderer returns for an answer other than ``200`` with a JSON body:
    ``Answer(202)`` is "202 Accepted, no content"."""

    status: int
    body: Any = None


#: Where the pipeline keeps the decoded JSON body of a write request (None: no body).
BODY_KEY = web.RequestKey("json_body", object)


def json_body(request: web.Request) -> dict[str, Any]:
    """The decoded JSON object a write request carried (``{}`` when it had none)."""
    body = request.get(BODY_KEY)
    return body if isinstance(body, dict) else {}


@dataclass(frozen=True)
class Route:
    """One ``/api/v2`` route (``GET`` unless ``method`` says otherwise).

    ``resolve`` finds the target (404/400 before the auth checks), ``authorize`` refuses a
    request that passed the scope and organization checks (403 for a plan without the
    feature; it does not consume rate-limit budget), ``render`` builds the JSON body (or an
    :class:`Answer`). ``bucket_limit``: the route has a bucket of its own of this many
    requests a minute per organization instead of the organization's ``apiLimit`` (``/run``,
    make-api.md §11.6).
    """

    path: str
    scope: str | None
    resolve: Callable[[World, web.Request], Resolved]
    render: Callable[[World, web.Request, Any, Token], Any]
    user_level: bool = False  # rate limited in the per-user bucket, not the org's
    authorize: Callable[[World, Any, Token], None] | None = None
    method: str = "GET"
    bucket_limit: int | None = None


def resolve_scenario(world: World, request: web.Request) -> Resolved:
    """The scenario of ``/scenarios/{id}...`` and its organization (404 if unknown)."""
    sc = world.scenarios.get(path_int(request))
    if sc is None:
        raise not_found("Scenario")
    return sc.org_id, sc


def resolve_dlq(world: World, request: web.Request) -> Resolved:
    """The incomplete execution of ``/dlqs/{dlq_id}...`` and its organization (404 if unknown)."""
    item = world.dlqs.get(request.match_info["dlq_id"])
    if item is None or item.deleted:
        raise not_found("Incomplete execution")
    return world.scenarios[item.scenario_id].org_id, item
