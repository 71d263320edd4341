"""Async client for Make's REST API v2.

One client per organization configuration (a token is per zone and an organization's rate
limit is shared by every token of it). The app owns the ``aiohttp.ClientSession`` and passes
it in; the client never closes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.make.errors import (
    MakeActionRefused,
    MakeApiError,
    MakeScopeError,
    error_from_response,
    make_reason,
)
from watcher.make.models import (
    ActionAnswer,
    AnalyticsEntry,
    Authorization,
    Dlq,
    ExecutionResult,
    Hook,
    LogEntry,
    MalformedEntry,
    Notification,
    Organization,
    Scenario,
    ScenarioConsumption,
    Team,
    UsageDay,
    User,
    find_entries,
    imt_sort_key,
    is_execution_row,
    notification_id_key,
)
from watcher.make.ratelimit import SlidingWindowLimiter
from watcher.settings_base import Secret

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[tuple[str, str]]

DEFAULT_USER_AGENT = f"makewatch/{__version__}"
DEFAULT_429_PAUSE_S = 60.0  # Make's docs: "wait for one minute for the limit period to reset"
# Make's window is 60 s: a reset (or Retry-After) further away than this is not trusted (a
# clock skew, a bogus header); the pause is cut to it. Longer trouble shows as watcher_health.
MAX_PAUSE_S = 120.0
# Make's observed default page size is 50 and the maximum is undocumented (make-api.md §10.2).
# Lists are asked for 100 at a time, logs for 50 (what every known client uses). Scenarios
# are asked for 1,000 a page, as Make's own MCP server does: a 10,000-scenario inventory is
# then 10 requests instead of 100 (a third of a Core plan's minute). Should Make cap a page
# below what was asked, the ``pg.limit`` it echoes says so and paging goes on (a guess).
LIST_PAGE_SIZE = 100
SCENARIO_PAGE_SIZE = 1000
LOG_PAGE_SIZE = 50
# A server that ignores pg[offset] would hand back the same page for ever: reads of the
# signal endpoints (whose paging is a guess) stop after this many pages, or at a page that
# brings nothing new.
MAX_SIGNAL_PAGES = 100


def _never_sent(exc: BaseException) -> bool:
    """The request certainly did not reach Make: no connection could be opened."""
    return (
        isinstance(exc, MakeApiError)
        and exc.status is None
        and exc.code == "NETWORK"
        and isinstance(exc.__cause__, aiohttp.ClientConnectorError)
    )


def _write_retryable(exc: BaseException) -> bool:
    """Whether a write may be repeated (see MakeClient._write): never sent, or a 429 of the
    organization's bucket (not IM310, the organization paused for its quota)."""
    if _never_sent(exc):
        return True
    return isinstance(exc, MakeApiError) and exc.status == 429 and exc.code != "IM310"


def _write_error(exc: MakeApiError, scope: str) -> MakeApiError:
    """The error a write raises for what ``_send_once`` raised."""
    if _never_sent(exc) or exc.status == 429:
        return exc
    if exc.status in (401, 403) and exc.code != "HTML":
        return MakeScopeError(exc.status, exc.code, scope, path=exc.path)
    if exc.status is not None and 400 <= exc.status < 500 and exc.code != "HTML":
        code, reason = make_reason(exc.body or "")
        return MakeActionRefused(exc.status, code or exc.code, reason or exc.message, path=exc.path)
    if exc.status is not None and 400 <= exc.status < 500:
        return exc
    # A 5xx, a timeout, a dropped connection: Make may have acted. Not to be repeated blindly.
    return MakeApiError(
        exc.status,
        exc.code,
        f"{exc.message} (the action may have been carried out: check before repeating it)",
        retryable=False,
        path=exc.path,
    )


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, MakeApiError) and exc.retryable


class MakeClient:
    """Typed access to the Make API for one organization's token.

    Every request (retries included) holds a slot of ``limiter`` from before it is sent until
    its response is in, so the organization's budget holds across retries and concurrent
    tasks, as Make counts it. A 429 pauses the limiter
    until Make's ``x-ratelimit-reset`` (or ``Retry-After``, or 60 s), then the call retries.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str | Secret,
        *,
        auth_scheme: str = "token",
        limiter: SlidingWindowLimiter | None = None,
        clock: Clock | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 5,
        user_agent: str = DEFAULT_USER_AGENT,
        budget_share: float = 1.0,
        on_response: Callable[[str, int | None], None] | None = None,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        if auth_scheme not in ("token", "bearer"):
            raise ValueError("auth_scheme must be 'token' or 'bearer'")
        self._session = session
        self.base_url = base_url.rstrip("/")
        scheme = "Token" if auth_scheme == "token" else "Bearer"
        raw = token.reveal() if isinstance(token, Secret) else token
        # Kept wrapped so that no repr, vars() dump or traceback local shows the token.
        self._auth = Secret(f"{scheme} {raw}")
        self.clock = clock or SystemClock()
        self.limiter = limiter or SlidingWindowLimiter(30, clock=self.clock)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_attempts = max_attempts
        self.user_agent = user_agent
        self.budget_share = budget_share
        self.requests_sent = 0
        self.last_ratelimit: dict[str, int] = {}
        # When Make started answering 429 (None once a request passes again).
        self.rate_limited_since: float | None = None
        self._malformed_logged: set[str] = set()
        # Told of every attempt's outcome: (path without query, HTTP status or None when no
        # response came). The service counts requests with it (watcher.web.metrics).
        self._on_response = on_response
        # Entries of list answers skipped as malformed (each logged); ``on_skip`` is told the
        # path of each (the service counts them, watcher.web.metrics).
        self.entries_skipped = 0
        self._on_skip = on_skip

    def __repr__(self) -> str:
        return f"MakeClient(base_url={self.base_url!r}, token='***')"

    # --- transport --------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, MakeApiError) and exc.status == 429:
            return 0.0  # the limiter is paused until Make's window resets
        return wait_random_exponential(multiplier=0.5, max=30)(state)

    async def get_json(self, path: str, params: Params = ()) -> Any:
        """GET ``path`` with retries; returns the decoded JSON body or raises MakeApiError."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            sleep=self.clock.sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(path, params)
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("retrying %s (attempt %d): %s", self._path_of(state), state.attempt_number, exc)

    @staticmethod
    def _path_of(state: RetryCallState) -> str:
        exc = state.outcome.exception() if state.outcome else None
        return getattr(exc, "path", None) or "request"

    async def _get_once(self, path: str, params: Params) -> Any:
        status, body = await self._send_once("GET", path, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise MakeApiError(
                status, "MALFORMED", "response is not valid JSON", retryable=True, path=path
            ) from exc

    async def _send_once(
        self,
        method: str,
        path: str,
        params: Params = (),
        json_body: Any = None,
        *,
        org_budget: bool = True,
    ) -> tuple[int, str]:
        """One request: (status, body text) of a 2xx/3xx answer, else MakeApiError.

        ``org_budget=False`` (``POST /run``, which Make does not count against the
        organization's limit) sends without a limiter slot and leaves the limiter alone: its
        answers carry the headers of another bucket (make-api.md §11.6).
        """
        headers = {
            "Authorization": self._auth.reveal(),
            "User-Agent": self.user_agent,
            "Accept": "application/json",
        }
        url = self.base_url + path
        try:
            # The slot is held until the response is in: Make counts the request when it
            # arrives, which can be long after we start sending it (see watcher.make.ratelimit).
            async with self.limiter.slot() if org_budget else contextlib.nullcontext():
                self.requests_sent += 1
                async with self._session.request(
                    method,
                    url,
                    params=list(params),
                    json=json_body,
                    headers=headers,
                    timeout=self.timeout,
                ) as resp:
                    body = await resp.text(errors="replace")
                    if org_budget:
                        self._note_ratelimit(resp)
                    status = resp.status
        except TimeoutError as exc:
            self._observe(path, None)
            raise MakeApiError(None, "TIMEOUT", "request timed out", path=path) from exc
        except aiohttp.ClientError as exc:
            self._observe(path, None)
            # str(exc) names host and port at most; the token is only in a header.
            raise MakeApiError(
                None, "NETWORK", f"{type(exc).__name__}: {exc}"[:300], path=path
            ) from exc

        self._observe(path, status)
        if not org_budget:
            pass  # a 429 here is not the organization's bucket (IM310: paused)
        elif status == 429:
            self._pause_after_429(resp)
            if self.rate_limited_since is None:
                self.rate_limited_since = self.clock.time()
        else:
            self.rate_limited_since = None
        if status >= 400:
            raise error_from_response(status, body, path)
        return status, body

    def _observe(self, path: str, status: int | None) -> None:
        if self._on_response is not None:
            self._on_response(path, status)

    def _note_ratelimit(self, resp: aiohttp.ClientResponse) -> None:
        """Read Make's undocumented ``x-ratelimit-*`` headers when they are present."""
        seen: dict[str, int] = {}
        for name in ("limit", "remaining", "reset"):
            raw = resp.headers.get(f"x-ratelimit-{name}")
            if raw is not None:
                try:
                    seen[name] = int(float(raw))
                except ValueError:
                    continue
        if not seen:
            return
        self.last_ratelimit = seen
        limit = seen.get("limit")
        # User-level endpoints report a separate, large bucket (10000): only ever lower.
        if limit and limit < 10000:
            self.limiter.lower_limit(max(1, int(limit * self.budget_share)))
        if seen.get("remaining") == 0 and "reset" in seen and resp.status != 429:
            # Someone else (the user's own integrations) used up this window: wait it out.
            self.limiter.pause_until(min(float(seen["reset"]), self.clock.time() + MAX_PAUSE_S))

    def _pause_after_429(self, resp: aiohttp.ClientResponse) -> None:
        now = self.clock.time()
        until = now + DEFAULT_429_PAUSE_S
        retry_after = resp.headers.get("Retry-After")
        reset = resp.headers.get("x-ratelimit-reset")
        if retry_after is not None:
            try:
                until = now + float(retry_after)
            except ValueError:
                pass
        elif reset is not None:
            try:
                until = max(float(reset), now + 0.5)
            except ValueError:
                pass
        until = min(until, now + MAX_PAUSE_S)
        log.warning("Make answered 429 for %s; pausing %.0f s", self.base_url, until - now)
        self.limiter.pause_until(until)

    # --- paging helpers ---------------------------------------------------------------

    def _skip_malformed(
        self, what: str, context: str, item: Any, exc: Exception, path: str
    ) -> None:
        """Count a malformed entry of the answer to ``path`` and log it once (at WARNING);
        later sightings of it only at DEBUG.

        A malformed newest log entry is seen again at every read until a newer one arrives.
        """
        self.entries_skipped += 1
        if self._on_skip is not None:
            self._on_skip(path)
        ident = f"{what}{context}:{str(item)[:200]}"
        level = logging.DEBUG if ident in self._malformed_logged else logging.WARNING
        self._malformed_logged.add(ident)
        log.log(level, "skipping malformed %s%s: %s", what, context, exc)

    def _parse_list(
        self, items: Any, parse: Callable[[Any], T], what: str, path: str, context: str = ""
    ) -> list[T]:
        if not isinstance(items, list):
            raise MakeApiError(200, "MALFORMED", f"{what}: expected a list", retryable=False)
        out: list[T] = []
        for item in items:
            try:
                out.append(parse(item))
            except MalformedEntry as exc:
                self._skip_malformed(what, context, item, exc, path)
        return out

    async def _get_all_pages(
        self, path: str, key: str, params: Params, page_size: int = LIST_PAGE_SIZE
    ) -> list[Any]:
        """Offset paging until a page comes back short; raw items, de-duplicated by id."""
        raw: list[Any] = []
        async for items in self._pages(path, key, params, page_size):
            raw += items
        return raw

    async def _pages(
        self, path: str, key: str, params: Params, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[list[Any]]:
        """Offset paging until a page comes back short: each page's raw items, de-duplicated
        by id across pages. A caller that reduces each page before the next one arrives holds
        one page's JSON at a time, not every page's."""
        seen: set[Any] = set()
        offset = 0
        while True:
            body = await self.get_json(
                path,
                [*params, ("pg[offset]", str(offset)), ("pg[limit]", str(page_size))],
            )
            items = _wrapped(body, key, path)
            limit = _echoed_limit(body, page_size)
            del body
            page: list[Any] = []
            for item in items:
                ident = item.get("id") if isinstance(item, dict) else None
                if isinstance(ident, bool) or not isinstance(ident, str | int):
                    ident = None  # an object or a list is no id (and cannot be hashed)
                if ident is not None and ident in seen:
                    continue
                if ident is not None:
                    seen.add(ident)
                page.append(item)
            yield page
            if not items or len(items) < limit:
                return
            offset += len(items)

    # --- users ------------------------------------------------------------------------

    async def me(self) -> User:
        body = await self.get_json("/users/me")
        return User.parse(_wrapped(body, "authUser", "/users/me", dict))

    async def current_authorization(self) -> Authorization:
        path = "/users/me/current-authorization"
        return Authorization.parse(_wrapped(await self.get_json(path), "authorization", path, dict))

    # --- organizations and teams --------------------------------------------------------

    async def list_organizations(self) -> list[Organization]:
        items = await self._get_all_pages("/organizations", "organizations", ())
        return self._parse_list(items, Organization.parse, "organization", "/organizations")

    async def get_organization(self, organization_id: int) -> Organization:
        path = f"/organizations/{int(organization_id)}"
        return Organization.parse(_wrapped(await self.get_json(path), "organization", path, dict))

    async def organization_usage(
        self, organization_id: int, *, organization_timezone: bool = True
    ) -> list[UsageDay]:
        """Daily usage of the last 30 days; days cut in the organization's time zone."""
        path = f"/organizations/{int(organization_id)}/usage"
        params = [("organizationTimezone", "true")] if organization_timezone else []
        body = await self.get_json(path, params)
        return self._parse_list(_wrapped(body, "data", path), UsageDay.parse, "usage day", path)

    async def list_teams(self, organization_id: int) -> list[Team]:
        items = await self._get_all_pages(
            "/teams", "teams", [("organizationId", str(int(organization_id)))]
        )
        return self._parse_list(items, Team.parse, "team", "/teams")

    async def get_team(self, team_id: int) -> Team:
        path = f"/teams/{int(team_id)}"
        return Team.parse(_wrapped(await self.get_json(path), "team", path, dict))

    async def team_usage(
        self, team_id: int, *, organization_timezone: bool = True
    ) -> list[UsageDay]:
        path = f"/teams/{int(team_id)}/usage"
        params = [("organizationTimezone", "true")] if organization_timezone else []
        body = await self.get_json(path, params)
        return self._parse_list(_wrapped(body, "data", path), UsageDay.parse, "usage day", path)

    # --- scenarios --------------------------------------------------------------------

    async def list_scenarios(
        self,
        *,
        organization_id: int | None = None,
        team_id: int | None = None,
        page_size: int = SCENARIO_PAGE_SIZE,
    ) -> list[Scenario]:
        """Every scenario of an organization or a team (exactly one), all pages.

        Sorted by id ascending so that offset paging is stable while scenarios are added.
        """
        if (organization_id is None) == (team_id is None):
            raise ValueError("give exactly one of organization_id or team_id")
        scope = (
            ("organizationId", str(int(organization_id)))
            if organization_id is not None
            else ("teamId", str(int(team_id)))  # type: ignore[arg-type]
        )
        params = [scope, ("pg[sortBy]", "id"), ("pg[sortDir]", "asc")]
        out: list[Scenario] = []
        # Parsed and slimmed page by page: a 10,000-scenario listing held all ten pages' whole
        # JSON at once (about 30 MB of the cycle's peak, issue 16).
        async for items in self._pages("/scenarios", "scenarios", params, page_size):
            out += [sc.slim() for sc in self._parse_list(items, Scenario.parse, "scenario", "/scenarios")]
        return out

    async def get_scenario(self, scenario_id: int) -> Scenario:
        path = f"/scenarios/{int(scenario_id)}"
        return Scenario.parse(_wrapped(await self.get_json(path), "scenario", path, dict))

    async def scenario_consumptions(
        self, *, organization_id: int | None = None, team_id: int | None = None
    ) -> list[ScenarioConsumption]:
        if (organization_id is None) == (team_id is None):
            raise ValueError("give exactly one of organization_id or team_id")
        param = (
            ("organizationId", str(organization_id))
            if organization_id is not None
            else ("teamId", str(team_id))
        )
        path = "/scenarios/consumptions"
        body = await self.get_json(path, [param])
        return self._parse_list(
            _wrapped(body, "scenarioConsumptions", path),
            ScenarioConsumption.parse,
            "consumption",
            path,
        )

    async def scenario_usage(self, scenario_id: int) -> list[UsageDay]:
        path = f"/scenarios/{int(scenario_id)}/usage"
        body = await self.get_json(path)
        return self._parse_list(_wrapped(body, "data", path), UsageDay.parse, "usage day", path)

    async def list_scenario_logs(
        self,
        scenario_id: int,
        *,
        status: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        after_imt_id: str | None = None,
        show_check_runs: bool = False,
        page_size: int = LOG_PAGE_SIZE,
        max_pages: int | None = None,
    ) -> list[LogEntry]:
        """Executions of a scenario, oldest first, audit rows (start/stop/modify) left out.

        Pages newest first with keyset paging (``pg[last]`` = the last imtId of the previous
        page) and stops at the first page that is short or that reaches ``after_imt_id``
        (exclusive) or ``since_ms`` (inclusive, sent as ``from``). With neither, it reads
        the whole retained history, so pass a cursor.
        """
        path = f"/scenarios/{int(scenario_id)}/logs"
        base: list[tuple[str, str]] = [("pg[sortDir]", "desc"), ("pg[limit]", str(page_size))]
        if status is not None:
            base.append(("status", str(int(status))))
        floor_ms = since_ms
        if after_imt_id is not None:
            cursor_ms = imt_sort_key(after_imt_id)[0]
            floor_ms = cursor_ms if floor_ms is None else max(floor_ms, cursor_ms)
        if floor_ms is not None:
            base.append(("from", str(int(floor_ms))))
        if until_ms is not None:
            base.append(("to", str(int(until_ms))))
        if show_check_runs:
            base.append(("showCheckRuns", "true"))
        cursor_key = imt_sort_key(after_imt_id) if after_imt_id else None

        entries: dict[str, LogEntry] = {}
        last: str | None = None
        pages = 0
        while True:
            params = list(base)
            if last is not None:
                params.append(("pg[last]", last))
            body = await self.get_json(path, params)
            rows = _wrapped(body, "scenarioLogs", path)
            pages += 1
            reached_cursor = False
            for row in rows:
                if not isinstance(row, dict):
                    self._skip_malformed(
                        "log entry",
                        f" of scenario {scenario_id}",
                        row,
                        MalformedEntry("not an object"),
                        path,
                    )
                    continue
                imt = row.get("imtId")
                if isinstance(imt, str):
                    last = imt
                try:
                    key = imt_sort_key(imt) if isinstance(imt, str) else None
                except ValueError:
                    key = None
                if key is not None and cursor_key is not None and key <= cursor_key:
                    reached_cursor = True
                    continue
                if not is_execution_row(row):
                    continue
                try:
                    entry = LogEntry.parse(row)
                except MalformedEntry as exc:
                    self._skip_malformed("log entry", f" of scenario {scenario_id}", row, exc, path)
                    continue
                entries[entry.imt_id] = entry
            if len(rows) < page_size or reached_cursor or last is None:
                break
            if max_pages is not None and pages >= max_pages:
                break
        return sorted(entries.values(), key=lambda e: imt_sort_key(e.imt_id))

    async def get_scenario_log(self, scenario_id: int, execution_id: str) -> LogEntry:
        path = f"/scenarios/{int(scenario_id)}/logs/{_seg(execution_id)}"
        return LogEntry.parse(_wrapped(await self.get_json(path), "scenarioLog", path, dict))

    async def get_execution(self, scenario_id: int, execution_id: str) -> ExecutionResult:
        path = f"/scenarios/{int(scenario_id)}/executions/{_seg(execution_id)}"
        return ExecutionResult.parse(await self.get_json(path))

    # --- incomplete executions ----------------------------------------------------------

    async def list_dlqs(self, scenario_id: int) -> list[Dlq]:
        """Incomplete executions of one scenario (Make has no team-wide listing)."""
        items = await self._get_all_pages("/dlqs", "dlqs", [("scenarioId", str(int(scenario_id)))])
        return self._parse_list(
            items, Dlq.parse, "incomplete execution", "/dlqs", f" of scenario {scenario_id}"
        )

    async def get_dlq(self, dlq_id: str) -> Dlq:
        path = f"/dlqs/{_seg(dlq_id)}"
        return Dlq.parse(_wrapped(await self.get_json(path), "dlq", path, dict))

    # --- hooks ------------------------------------------------------------------------

    async def list_hooks(self, team_id: int) -> list[Hook]:
        items = await self._get_all_pages("/hooks", "hooks", [("teamId", str(int(team_id)))])
        return self._parse_list(items, Hook.parse, "hook", "/hooks")

    async def get_hook(self, hook_id: int) -> Hook:
        path = f"/hooks/{int(hook_id)}"
        return Hook.parse(_wrapped(await self.get_json(path), "hook", path, dict))

    # --- signals: analytics and notifications -------------------------------------------

    def _entries(
        self, body: Any, key: str, path: str, exclude: tuple[str, ...] = ("pg",)
    ) -> list[Any]:
        """The entries of an answer whose wrapper is a guess (models.find_entries); an answer
        with no list at all is malformed (not retried)."""
        items = find_entries(body, key, exclude)
        if items is None:
            raise MakeApiError(
                200, "MALFORMED", f"expected a list of {key}", retryable=False, path=path
            )
        return items

    async def organization_analytics(
        self,
        organization_id: int,
        *,
        date_from: date | datetime | str,
        date_to: date | datetime | str,
        team_ids: Sequence[int] | None = None,
        page_size: int = LIST_PAGE_SIZE,
    ) -> list[AnalyticsEntry]:
        """Per-scenario executions, errors and operations of an Enterprise organization over a
        timeframe (``GET /analytics/{organizationId}``, scope ``analytics:read``), all pages.

        Make answers 403 for other plans and for a token without the scope or the Owner role
        (raised as a non-retryable MakeApiError). The answer's shape is a guess (make-api.md
        §11.2): entries are looked for under ``analytics``, else in the first list of objects;
        paging is ``pg[offset]``/``pg[limit]``, sorted by name so that pages stay put while
        counts move; rows are de-duplicated by scenario id. ``date_from``/``date_to`` go out
        as ISO dates (or datetimes, in UTC) in ``timeframe[dateFrom]``/``timeframe[dateTo]``;
        ``team_ids`` as ``teamId[]``. Make's counts may lag the logs and cover whole days.
        """
        path = f"/analytics/{int(organization_id)}"
        base: list[tuple[str, str]] = [
            ("timeframe[dateFrom]", _iso_when(date_from)),
            ("timeframe[dateTo]", _iso_when(date_to)),
            ("pg[sortBy]", "name"),
            ("pg[sortDir]", "asc"),
        ]
        base += [("teamId[]", str(int(t))) for t in team_ids or ()]
        found: dict[int, AnalyticsEntry] = {}
        offset = 0
        for _ in range(MAX_SIGNAL_PAGES):
            body = await self.get_json(
                path, [*base, ("pg[offset]", str(offset)), ("pg[limit]", str(page_size))]
            )
            items = self._entries(body, "analytics", path)
            fresh = 0
            for entry in self._parse_list(items, AnalyticsEntry.parse, "analytics entry", path):
                if entry.scenario_id not in found:
                    found[entry.scenario_id] = entry
                    fresh += 1
            if len(items) < page_size or not fresh:
                break
            offset += len(items)
        return list(found.values())

    async def notifications(
        self,
        *,
        unread_only: bool = False,
        limit: int = 100,
        since_id: str | int | None = None,
        page_size: int = LIST_PAGE_SIZE,
    ) -> list[Notification]:
        """The newest ``limit`` notices of the token owner's in-app feed (``GET /notifications``,
        scope ``notifications:read``), newer than ``since_id`` when given, oldest first.

        Pages newest first (``pg[sortBy]=id``, ``pg[sortDir]=desc``) and stops at a page that is
        short, that reaches ``since_id`` (exclusive; ids compare as numbers), or once it has
        ``limit``. The feed is per user, names scenarios only by name in ``subject``
        (``Notification.scenario_name``), and misses or delays some failures: a hint, never
        the record. Make numbers notices when it creates them, which may be later than the
        failure: a caller that reads "since the last id" should still expect stragglers in the
        logs. Entries are looked for under ``notifications``, else in the first list of
        objects (``userZoneNotifications`` excluded); de-duplicated by id.
        """
        if limit < 1:
            return []
        path = "/notifications"
        base: list[tuple[str, str]] = [("pg[sortBy]", "id"), ("pg[sortDir]", "desc")]
        if unread_only:
            base.append(("unreadOnly", "true"))
        size = max(1, min(page_size, limit))
        floor = notification_id_key(str(since_id)) if since_id is not None else None
        found: dict[str, Notification] = {}
        offset = 0
        for _ in range(MAX_SIGNAL_PAGES):
            body = await self.get_json(
                path, [*base, ("pg[offset]", str(offset)), ("pg[limit]", str(size))]
            )
            items = self._entries(body, "notifications", path, ("pg", "userZoneNotifications"))
            fresh = 0
            reached = False
            for notice in self._parse_list(items, Notification.parse, "notification", path):
                if floor is not None and notification_id_key(notice.id) <= floor:
                    reached = True
                elif notice.id not in found:
                    found[notice.id] = notice
                    fresh += 1
            if len(items) < size or reached or not fresh or len(found) >= limit:
                break
            offset += len(items)
        ordered = sorted(found.values(), key=lambda n: notification_id_key(n.id))
        return ordered[-limit:]

    # --- actions: the write calls (make-api.md §8.1, §11.4-11.6) -----------------------

    async def current_scopes(self) -> list[str] | None:
        """The token's scopes (``GET /users/me/current-authorization``), or None when Make
        answers 404 or 403 (the endpoint absent on a private instance, or the
        ``organization:read`` the docs list for it, make-api.md §11.5): callers then fall
        back to trying the action and reading its 403."""
        try:
            auth = await self.current_authorization()
        except MakeApiError as exc:
            if exc.status in (403, 404):
                return None
            raise
        return list(auth.scopes)

    async def start_scenario(self, scenario_id: int) -> ActionAnswer:
        """Turn a scenario's scheduling on (``POST /scenarios/{id}/start``, ``scenarios:write``).

        "Scenario is already running" comes back as ``already=True``, not as an error.
        Whether Make clears ``isinvalid`` of a scenario it had switched off is unknown: re-read
        the scenario when it matters.
        """
        return await self._switch(scenario_id, "start")

    async def stop_scenario(self, scenario_id: int) -> ActionAnswer:
        """Turn a scenario's scheduling off (``POST /scenarios/{id}/stop``, ``scenarios:write``).

        "Scenario is not running" comes back as ``already=True``. A run in progress may still
        finish (make-api.md §11.4).
        """
        return await self._switch(scenario_id, "stop")

    async def run_scenario(self, scenario_id: int, data: dict | None = None) -> ActionAnswer:
        """Run an active scenario once now (``POST /scenarios/{id}/run``, ``scenarios:run``).

        Always sends ``responsive: false``: Make answers at once with the new execution's id
        instead of waiting up to 40 s for the end. Not counted against the organization's
        rate limit, so it takes no slot of the limiter. An inactive scenario is refused with
        422 ``IM325`` (:class:`MakeActionRefused`).
        """
        path = f"/scenarios/{int(scenario_id)}/run"
        payload = {"data": dict(data or {}), "responsive": False}
        status, body = await self._write(path, payload, "scenarios:run", org_budget=False)
        eid = body.get("executionId")
        return ActionAnswer(
            status,
            execution_id=eid if isinstance(eid, str) and eid else None,
            body=body,
            action="run",
            scenario_id=int(scenario_id),
        )

    async def replay_execution(self, scenario_id: int, execution_id: str) -> ActionAnswer:
        """Re-run a past execution with its input (``POST /scenarios/{id}/replay``,
        ``scenarios:run``). Make's docs answer 202 with no content, its SDK ``{executionId}``:
        both are accepted (``execution_id`` is None for the first). 422 "Execution is not
        replayable" (input expired or never stored; ``log_entry(...)["isReplayable"]`` says
        so beforehand) and 404 (unknown execution) raise :class:`MakeActionRefused`.
        """
        path = f"/scenarios/{int(scenario_id)}/replay"
        payload = {"executionIds": [_seg(execution_id)]}
        status, body = await self._write(path, payload, "scenarios:run")
        eid = body.get("executionId")
        return ActionAnswer(
            status,
            execution_id=eid if isinstance(eid, str) and eid else None,
            body=body,
            action="replay",
            scenario_id=int(scenario_id),
        )

    async def retry_dlqs(
        self, scenario_id: int, ids: Sequence[str] | None = None, *, all_items: bool = False
    ) -> ActionAnswer:
        """Queue incomplete executions of a scenario for retry (``POST /dlqs/retry``,
        ``dlqs:write``): the ``ids`` given (all of the scenario's, or Make refuses the call),
        or every one with ``all_items=True`` (give one or the other). ``count`` is the number
        queued when known: the ids given, or the list Make answers for ``all`` (its answer
        is undocumented; None when it names none).
        """
        if all_items == bool(ids):
            raise ValueError("give either ids or all_items=True")
        path = "/dlqs/retry"
        payload: dict[str, Any] = (
            {"all": True} if all_items else {"ids": [_seg(i) for i in ids or ()]}
        )
        params = [("scenarioId", str(int(scenario_id)))]
        status, body = await self._write(path, payload, "dlqs:write", params=params)
        count: int | None = None if all_items else len(payload["ids"])
        if count is None:
            listed = find_entries(body, "dlqs", ("pg",)) if body else None
            count = len(listed) if listed is not None else None
        return ActionAnswer(
            status, body=body, action="retry_dlqs", scenario_id=int(scenario_id), count=count
        )

    async def retry_dlq(self, dlq_id: str) -> ActionAnswer:
        """Queue one incomplete execution for retry (``POST /dlqs/{dlqId}/retry``,
        ``dlqs:write``); Make answers ``{"dlq": "<dlqId>"}``."""
        path = f"/dlqs/{_seg(dlq_id)}/retry"
        status, body = await self._write(path, None, "dlqs:write")
        return ActionAnswer(status, body=body, action="retry_dlq", dlq_id=str(dlq_id), count=1)

    async def log_entry(self, scenario_id: int, execution_id: str) -> dict:
        """The single-entry log (``GET /scenarios/{id}/logs/{executionId}``) as Make sent it:
        the only answer that carries ``isReplayable`` (make-api.md §11.4).
        :meth:`get_scenario_log` parses the same answer into a LogEntry."""
        path = f"/scenarios/{int(scenario_id)}/logs/{_seg(execution_id)}"
        return dict(_wrapped(await self.get_json(path), "scenarioLog", path, dict))

    async def _switch(self, scenario_id: int, action: str) -> ActionAnswer:
        path = f"/scenarios/{int(scenario_id)}/{action}"
        try:
            status, body = await self._write(path, None, "scenarios:write")
        except MakeActionRefused as exc:
            # Make's texts; their status and code are undocumented (make-api.md §11.4).
            said = exc.reason.lower()
            if ("already running" if action == "start" else "not running") in said:
                return ActionAnswer(
                    exc.status or 400,
                    is_active=action == "start",
                    already=True,
                    body={"detail": exc.reason, "code": exc.code},
                    action=action,
                    scenario_id=int(scenario_id),
                )
            raise
        scenario = body.get("scenario") if isinstance(body.get("scenario"), dict) else {}
        active = scenario.get("isActive")
        return ActionAnswer(
            status,
            is_active=active if isinstance(active, bool) else None,
            body=body,
            action=action,
            scenario_id=int(scenario_id),
        )

    async def _write(
        self,
        path: str,
        payload: Any,
        scope: str,
        *,
        params: Params = (),
        org_budget: bool = True,
    ) -> tuple[int, dict[str, Any]]:
        """POST a write call: (status, the JSON object answered, ``{}`` for no content).

        Retry policy, stricter than reads': a write is repeated only when it certainly did
        not reach Make (the connection was refused or could not be opened) or when Make
        answered 429 for the organization's bucket (the limiter then waits for the window,
        as for reads). Never on a 4xx, and not on a 5xx, a timeout or a dropped connection
        either: Make may have done the work before the answer was lost, and a repeated
        ``/run`` starts a second run. Such failures raise a non-retryable MakeApiError whose
        message says to check before trying again. 401/403 raise :class:`MakeScopeError`
        naming ``scope``; other 4xx :class:`MakeActionRefused` with Make's text.
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_write_retryable if org_budget else _never_sent),
            sleep=self.clock.sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self._write_once(path, payload, scope, params, org_budget)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_once(
        self, path: str, payload: Any, scope: str, params: Params, org_budget: bool
    ) -> tuple[int, dict[str, Any]]:
        try:
            status, text = await self._send_once(
                "POST", path, params, payload, org_budget=org_budget
            )
        except MakeApiError as exc:
            converted = _write_error(exc, scope)
            if converted is exc:
                raise  # keeps its cause, which says whether the request was ever sent
            raise converted from exc
        if not text.strip():
            return status, {}
        try:
            body = json.loads(text)
        except ValueError as exc:
            # The action was taken (2xx); only its answer is unreadable. Not retried.
            raise MakeApiError(
                status, "MALFORMED", "answer is not valid JSON", retryable=False, path=path
            ) from exc
        return status, body if isinstance(body, dict) else {}


def _iso_when(value: date | datetime | str) -> str:
    """A timeframe bound as Make's ISO 8601: a date as ``YYYY-MM-DD``, a datetime in UTC."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _seg(value: str) -> str:
    """A path segment from an id we did not mint: hex ids only, nothing that moves the path."""
    s = str(value)
    if not s or any(c in s for c in "/?#%") or s in (".", ".."):
        raise ValueError(f"not a valid id: {s[:40]!r}")
    return s


def _echoed_limit(body: Any, asked: int) -> int:
    """The page size Make says it used (``pg.limit``), when smaller than ``asked``."""
    pg = body.get("pg") if isinstance(body, dict) else None
    limit = pg.get("limit") if isinstance(pg, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < asked:
        return limit
    return asked


def _wrapped(body: Any, key: str, path: str, kind: type = list) -> Any:
    """Unwrap ``{key: ...}``; a body without it is a malformed answer (not retried)."""
    if not isinstance(body, dict) or not isinstance(body.get(key), kind):
        raise MakeApiError(
            200, "MALFORMED", f"expected an object with {key!r}", retryable=False, path=path
        )
    return body[key]
