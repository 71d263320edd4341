"""The HTTP endpoint of ``makewatch run``: ``/healthz``, ``/metrics`` and the status page.

URLs (all on ``web.listen``):

* ``GET /healthz``: 200 or 503 with JSON (watcher.web.health). Always open, so a container's
  HEALTHCHECK needs no secret; while a token is configured, a caller without it gets only
  ``{"status": ...}``, no names and no error texts.
* ``GET /metrics``: the Prometheus text format (watcher.web.metrics).
* ``GET /``: the status page (watcher.web.status_page).
* ``POST /silences``, ``POST /silences/{id}/expire``, ``POST /alerts/{id}/ack``: the page's
  forms; only with ``web.allow_write`` (else 403), each with the page's CSRF token (else 403).
* ``POST /login``: trade the access token for a cookie (the login form is the 401 page).

Access: when ``web.token_env`` names a token (required for a non-loopback ``listen``), every
URL but ``/healthz`` and ``/login`` answers 401 unless the request carries
``Authorization: Bearer <token>`` or the cookie ``/login`` set. The cookie holds an HMAC of
the token under a key made at start, never the token, and dies with the process. Tokens are
compared in constant time and never logged (aiohttp's access log is off).

CSRF: a write form carries ``csrf``, an HMAC of a fixed label under the same per-process
key; another site cannot read it (same-origin policy), so it cannot forge a write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from watcher.clock import Clock
from watcher.store import Store
from watcher.web import status_page
from watcher.web.health import Health, OrgRuntime, assess
from watcher.web.metrics import CONTENT_TYPE, ChannelGauges, OrgGauges, ScrapeState

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.service import Watcher

__all__ = ["WebServer", "WebServerError", "create_app", "serve_web", "start_web"]

log = logging.getLogger(__name__)

COOKIE = "makewatch_session"
OPEN_PATHS = frozenset({"/healthz", "/login"})
#: More open paths of one app (the Slack interactions route, checked by its signature).
OPEN_EXTRA: web.AppKey[frozenset[str]] = web.AppKey("open_extra", frozenset)
SECURITY_HEADERS = {
    # No script at all; inline styles only (the page has one <style> block).
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServerError(Exception):
    """The endpoint cannot be served (the address is taken, not ours...); the text says what
    to do and names no secret."""


class WebContext:
    """What the handlers share: the service's parts and this process's secrets."""

    def __init__(self, settings: Settings, store: Store, watcher: Watcher, clock: Clock) -> None:
        self.settings = settings
        self.web = settings.web
        self.store = store
        self.watcher = watcher
        self.clock = clock
        self.started_at = clock.time()
        self._key = secrets.token_bytes(32)  # per process: cookies and CSRF tokens end with it

    # --- auth ---------------------------------------------------------------------------

    @property
    def token_required(self) -> bool:
        return self.web.token is not None

    def _mac(self, label: bytes) -> str:
        return hmac.new(self._key, label, hashlib.sha256).hexdigest()

    def session_cookie(self) -> str:
        assert self.web.token is not None
        return self._mac(b"session:" + self.web.token.reveal().encode())

    def token_matches(self, given: str) -> bool:
        token = self.web.token
        return token is not None and hmac.compare_digest(given.encode(), token.reveal().encode())

    def authenticated(self, request: web.Request) -> bool:
        if not self.token_required:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given and self.token_matches(given.strip()):
            return True
        cookie = request.cookies.get(COOKIE)
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.session_cookie().encode())

    @property
    def csrf_token(self) -> str:
        return self._mac(b"csrf")

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf_token.encode())

    # --- what the pages show ------------------------------------------------------------

    def runtime(self) -> list[OrgRuntime]:
        out = []
        for poller in self.watcher.pollers:
            limiter = poller.client.limiter
            out.append(
                OrgRuntime(
                    org_id=poller.org.organization_id,
                    name=poller.org.name,
                    interval_s=poller.interval_s,
                    budget_used=limiter.used(),
                    budget_allowed=limiter.per_window,
                    rate_limited_since=poller.client.rate_limited_since,
                )
            )
        return out

    async def snapshot(self, now: float) -> status_page.Snapshot:
        """One consistent read of the store, and the health it implies."""
        snap = await self.store.read(lambda db: status_page.read_snapshot(db, now, self.settings))
        http = self.settings.http
        snap.health = assess(
            self.runtime(),
            snap.orgs,
            snap.channels,
            self.settings.channels.keys(),
            started_at=self.started_at,
            now=now,
            grace=self.web.health_grace_factor,
            in_flight_s=http.timeout_s * http.max_attempts,
        )
        return snap


def _ctx(request: web.Request) -> WebContext:
    return request.app[CTX]


CTX: web.AppKey[WebContext] = web.AppKey("makewatch", WebContext)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = _ctx(request)
    if (
        request.path not in OPEN_PATHS
        and request.path not in request.app.get(OPEN_EXTRA, frozenset())
        and not ctx.authenticated(request)
    ):
        response: web.StreamResponse = _login_page(ctx, status=401)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects and refusals: raised, not returned
            exc.headers.update(SECURITY_HEADERS)
            raise
    response.headers.update(SECURITY_HEADERS)
    if response.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="makewatch"'
    return response


def _login_page(ctx: WebContext, *, status: int, message: str = "") -> web.Response:
    html = status_page.render("login.html.j2", message=message)
    return web.Response(status=status, text=html, content_type="text/html")


# --- handlers -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    now = ctx.clock.time()
    snap = await ctx.snapshot(now)
    health: Health = snap.health  # type: ignore[assignment]
    body = health.to_json(detailed=ctx.authenticated(request))
    replica = getattr(ctx.watcher, "replica", None)
    if replica is not None:
        # Which replica this is and what it polls; the whole table on `makewatch status`.
        body["replica"] = {"id": replica.id, "holds": sorted(replica.manager.held), "of": len(replica.names)}
    interactions = getattr(ctx.watcher, "interactions", None)
    if interactions is not None and interactions.receivers:
        # Buttons are a convenience: a lost Socket Mode link is shown, not a 503.
        body["slack_socket_mode"] = interactions.health()
    return web.json_response(body, status=200 if health.ok else 503, dumps=lambda o: json.dumps(o, indent=1))


async def metrics(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    now = ctx.clock.time()
    snap = await ctx.snapshot(now)
    health: Health = snap.health  # type: ignore[assignment]
    state = ScrapeState(
        orgs=[
            OrgGauges(
                org=o.name,
                budget_used=o.budget_used,
                budget_allowed=o.budget_allowed,
                poll_lag_s=o.lag_s,
                pending_reads=o.pending_reads,
                rate_limited=o.rate_limited_since is not None,
            )
            for o in health.orgs
        ],
        channels=[
            ChannelGauges(
                channel=c.name,
                outbox_pending=c.status.pending,
                outbox_oldest_age_s=c.status.oldest_age_s(now) or 0.0,
                failing=c.status.failing_since is not None,
            )
            for c in health.channels
        ],
        open_alerts=snap.open_by_severity(),
    )
    replica = getattr(ctx.watcher, "replica", None)
    if replica is not None:
        state.leases_held = len(replica.manager.held)
        state.lease_changes = dataclasses.asdict(replica.counters)
    body = ctx.watcher.metrics.exposition(state)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def index(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    return await _page(ctx, request)


async def _page(ctx: WebContext, request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    now = ctx.clock.time()
    snap = await ctx.snapshot(now)
    html = status_page.render_status(
        snap,
        settings=ctx.settings,
        now=now,
        allow_write=ctx.web.allow_write,
        csrf=ctx.csrf_token,
        notice=status_page.NOTICES.get(request.query.get("done", ""), ""),
        error=error,
        logout=ctx.token_required,
    )
    return web.Response(status=status, text=html, content_type="text/html")


async def login(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    if not ctx.token_required:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    if not ctx.token_matches(str(form.get("token", "")).strip()):
        return _login_page(ctx, status=401, message="That is not the access token.")
    response = web.HTTPSeeOther("/")
    response.set_cookie(COOKIE, ctx.session_cookie(), httponly=True, samesite="Strict", path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await _writable_form(request, need_write=False)
    response = web.HTTPSeeOther("/")
    response.del_cookie(COOKIE, path="/")
    raise response


async def _writable_form(request: web.Request, *, need_write: bool = True) -> Any:
    """The POSTed form, once write access and the CSRF token are checked (else 403)."""
    ctx = _ctx(request)
    if need_write and not ctx.web.allow_write:
        raise web.HTTPForbidden(text="the status page is read-only: set web.allow_write = true to change state\n")
    form = await request.post()
    expected_ok = ctx.csrf_ok(form.get("csrf")) if need_write else (
        not ctx.token_required or ctx.csrf_ok(form.get("csrf"))
    )
    if not expected_ok:
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again\n")
    return form


async def add_silence(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    form = await _writable_form(request)
    try:
        args = status_page.silence_from_form(form, ctx.settings)
    except ValueError as exc:
        return await _page(ctx, request, status=400, error=f"Silence not added: {exc}")
    from watcher.silences import add_silence as store_silence

    await asyncio.to_thread(store_silence, ctx.store, now=ctx.clock.time(), **args)
    raise web.HTTPSeeOther("/?done=silenced#silences")


async def expire_silence(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    await _writable_form(request)
    from watcher.silences import expire_silence as store_expire

    silence_id = _int_segment(request, "id")
    found = await asyncio.to_thread(store_expire, ctx.store, silence_id, ctx.clock.time())
    if not found:
        return await _page(ctx, request, status=404, error=f"No silence {silence_id} in force.")
    raise web.HTTPSeeOther("/?done=expired#silences")


async def acknowledge(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    form = await _writable_form(request)
    from watcher.acks import acknowledge as store_ack

    alert_id = _int_segment(request, "id")
    by = str(form.get("by") or "").strip() or "status page"
    if not await store_ack(ctx.store, alert_id, by, ctx.clock.time()):
        return await _page(ctx, request, status=409, error=f"Alert {alert_id} is not open or is already acknowledged.")
    raise web.HTTPSeeOther("/?done=acked#alerts")


def _int_segment(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isdigit() or len(text) > 18:
        raise web.HTTPNotFound()
    return int(text)


def create_app(settings: Settings, store: Store, watcher: Watcher, clock: Clock | None = None) -> web.Application:
    """The aiohttp application (tests may serve it themselves; the service uses
    :func:`serve_web`)."""
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    app[CTX] = WebContext(settings, store, watcher, clock or watcher.clock)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/silences", add_silence)
    app.router.add_post("/silences/{id}/expire", expire_silence)
    app.router.add_post("/alerts/{id}/ack", acknowledge)
    interactions = getattr(watcher, "interactions", None)
    route = interactions.http_route() if interactions is not None else None
    if route is not None:
        # Slack's signature is this route's credential, not the web token: it is open.
        app.router.add_routes([route])
        app[OPEN_EXTRA] = frozenset({settings.actions.http_path})
    return app


@dataclass
class WebServer:
    """A running endpoint: ``port`` is the bound one (useful with ``listen = "...:0"``)."""

    host: str
    port: int
    runner: web.AppRunner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        await self.runner.cleanup()


async def start_web(
    settings: Settings, store: Store, watcher: Watcher, clock: Clock | None = None
) -> WebServer | None:
    """Start serving ``settings.web`` (None when ``web.enabled`` is false); close it with
    :meth:`WebServer.aclose`. Raises :class:`WebServerError` if the address cannot be bound."""
    if not settings.web.enabled:
        return None
    host, port = settings.web.host, settings.web.port
    runner = web.AppRunner(create_app(settings, store, watcher, clock), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise WebServerError(
            f"cannot listen on {settings.web.listen} (web.listen): {exc.strerror or exc}; "
            "choose another address or set web.enabled = false"
        ) from None
    bound = runner.addresses[0][1] if runner.addresses else port
    server = WebServer(host, bound, runner)
    log.info(
        "web: status page, /healthz and /metrics on %s/ (%s%s)",
        server.url,
        "token required" if settings.web.token is not None else "no token",
        ", writes allowed" if settings.web.allow_write else ", read-only",
    )
    return server


@asynccontextmanager
async def serve_web(
    settings: Settings, store: Store, watcher: Watcher, clock: Clock | None = None
) -> AsyncIterator[WebServer | None]:
    """``async with serve_web(...) as server:`` the endpoint runs inside the block."""
    server = await start_web(settings, store, watcher, clock)
    try:
        yield server
    finally:
        if server is not None:
            await server.aclose()
