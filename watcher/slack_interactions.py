"""Button clicks on Slack alerts coming in, over Socket Mode or over HTTP, as :class:`Interaction`.

::

    Slack ──WebSocket (apps.connections.open)──> SocketModeReceiver ──┐
    Slack ──HTTPS POST, signed──────────────────> http_interactions_route ┴─> Interaction ─> handler

The contract for the handler (what the buttons do lives there, not here):

- **Ack first, work after.** Slack wants the ack within 3 s or shows the user an error
  (https://docs.slack.dev/apis/events-api/using-socket-mode/#acknowledge). Both transports ack
  (the ``{"envelope_id"}`` frame, or HTTP 200 with an empty body) before the handler starts;
  the handler runs in a background task and answers the user through Web API calls or the
  ``response_url``, never through the ack.
- **At least once.** A redelivered Socket Mode envelope (same ``envelope_id``, higher
  ``retry_attempt``) is dropped here from an in-memory LRU of recent ids; anything that
  survives that (a restart, two instances, an HTTP retry) reaches the handler again, which
  must be idempotent on the action itself.
- **A failing handler is logged and forgotten**: its exception type and the action id, its text
  with anything token-like redacted; it never stops the receiver.

Socket Mode is slack-sdk's ``slack_sdk.socket_mode.aiohttp.SocketModeClient``. It pings every
``ping_interval_s`` and reconnects by itself when it notices a closed socket or missing pongs,
but it has been seen to stay silently disconnected (its monitor task dies, or the socket half
dies while aiohttp still thinks it open). So the receiver keeps its own watchdog:
:meth:`SocketModeReceiver.check_staleness` reconnects (a fresh ``apps.connections.open``) when
nothing at all (hello, envelope, ping, pong) arrived for ``stale_after_s`` by the injected
clock, or when the socket is closed. The loop calls it every ``check_every_s`` and at once when
the socket reports a close; tests call it directly after moving the clock.

Frames are observed through a ``ClientWebSocketResponse`` subclass handed to the client's
aiohttp session: slack-sdk's own ``on_message_listeners`` see only text frames, and its
``last_ping_pong_time`` is wall-clock time written from the pong's echo, not our clock.

The app token, the signing secret and signatures are never logged nor put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import ClientWebSocketResponse, WSMsgType, web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

__all__ = [
    "Handler",
    "Interaction",
    "SlackInteractionsError",
    "SocketModeReceiver",
    "http_interactions_route",
    "interactions_from_payload",
]

log = logging.getLogger(__name__)
# slack-sdk logs every frame it receives at DEBUG (payloads with user names and response
# URLs) and each reconnect at INFO; the receiver logs what matters itself.
_sdk_log = logging.getLogger("watcher.slack_interactions.sdk")
_sdk_log.setLevel(logging.WARNING)

# Slack's own bound on a request's age (the signature docs say 5 minutes): replays older than
# that are refused even with a valid signature.
MAX_REQUEST_AGE_S = 5 * 60
# Envelope ids remembered for redelivery dedup. Slack redelivers within seconds to minutes;
# a thousand covers any burst of clicks between two redeliveries many times over.
DEDUP_SIZE = 1024
# apps.connections.open answers after which only a human can help (the token is wrong).
PERMANENT_OPEN_ERRORS = frozenset(
    {
        "not_allowed_token_type",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
    }
)
# How long stop() lets running handlers finish before cancelling them.
STOP_GRACE_S = 5.0

Handler = Callable[["Interaction"], Awaitable[None]]

_SECRET_LIKE = re.compile(r"(xox[a-z]-|xapp-)[A-Za-z0-9-]+|https?://hooks\.slack\.com/\S+")


def _redact(text: str) -> str:
    """``text`` with Slack tokens and hooks URLs (webhooks, response_urls) blanked."""
    return _SECRET_LIKE.sub("[redacted]", text)


class SlackInteractionsError(Exception):
    """The receiver cannot run; ``retryable`` says whether trying again later can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Interaction:
    """One button click, whatever the transport."""

    envelope_id: str | None  # Socket Mode envelope id (None over HTTP)
    retry_attempt: int
    user_id: str
    user_name: str
    team_id: str | None
    channel_id: str | None
    message_ts: str | None
    action_id: str
    value: str
    response_url: str | None
    transport: str  # "socket" or "http"
    payload: dict[str, Any]  # the whole block_actions payload


def interactions_from_payload(
    payload: Any, *, envelope_id: str | None, retry_attempt: int, transport: str
) -> list[Interaction]:
    """One :class:`Interaction` per action of a ``block_actions`` payload (a button click
    carries exactly one); nothing for any other payload type (shortcuts, view submissions)."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return []
    user = payload.get("user") or {}
    team = payload.get("team") or {}
    container = payload.get("container") or {}
    channel = payload.get("channel") or {}
    message = payload.get("message") or {}
    out = []
    for action in payload.get("actions") or []:
        if not isinstance(action, dict) or not action.get("action_id"):
            continue
        out.append(
            Interaction(
                envelope_id=envelope_id,
                retry_attempt=retry_attempt,
                user_id=str(user.get("id", "")),
                user_name=str(user.get("username") or user.get("name") or ""),
                team_id=team.get("id") or user.get("team_id"),
                channel_id=channel.get("id") or container.get("channel_id"),
                message_ts=container.get("message_ts") or message.get("ts"),
                action_id=str(action["action_id"]),
                value=str(action.get("value") or ""),
                response_url=payload.get("response_url"),
                transport=transport,
                payload=payload,
            )
        )
    return out


class _Tasks:
    """Background handler runs: held (so they are not collected), their failures logged."""

    def __init__(self, handler: Handler, logger: logging.Logger) -> None:
        self.handler = handler
        self.logger = logger
        self.running: set[asyncio.Task[None]] = set()

    def spawn(self, interaction: Interaction) -> None:
        task = asyncio.create_task(self._run(interaction))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, interaction: Interaction) -> None:
        try:
            await self.handler(interaction)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = str(exc)
            if interaction.response_url:  # a bearer credential for 30 minutes
                text = text.replace(interaction.response_url, "[response_url]")
            self.logger.error(
                "Slack interaction handler failed for action %s by %s (%s): %s",
                interaction.action_id,
                interaction.user_id,
                type(exc).__name__,
                _redact(text)[:300],
            )

    async def drain(self, grace_s: float) -> None:
        """Let running handlers finish for ``grace_s``, then cancel the rest."""
        if not self.running:
            return
        _, pending = await asyncio.wait(set(self.running), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _observed_ws_class(
    on_frame: Callable[[ClientWebSocketResponse, WSMsgType], None],
) -> type[ClientWebSocketResponse]:
    """A ``ClientWebSocketResponse`` that reports the type of each frame it returns: pings and
    pongs included, which slack-sdk consumes without telling anyone (autoping is off)."""

    class ObservedWebSocket(ClientWebSocketResponse):
        # (aiohttp's own signature, hence the timeout parameter)
        async def receive(self, timeout: float | None = None) -> Any:  # type: ignore[override]  # noqa: ASYNC109
            msg = await super().receive(timeout)
            on_frame(self, msg.type)
            return msg

    return ObservedWebSocket


_ALIVE = frozenset({WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG})
_GONE = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


class SocketModeReceiver:
    """Receives button clicks over Socket Mode and hands them to ``handler``.

    ``start()`` opens the first connection and raises :class:`SlackInteractionsError`
    (``retryable=False``) if Slack refuses the app token; transient refusals are retried with
    backoff (``retry_delay_s`` doubling up to ``max_retry_delay_s``). ``stop()`` closes the
    connection and gives running handlers ``STOP_GRACE_S`` to finish.

    ``ping_interval_s`` is slack-sdk's (its pings, aiohttp's heartbeat, its own stale check at
    four intervals, and its pause before retrying a failed WebSocket handshake).
    """

    def __init__(
        self,
        *,
        app_token: str,
        handler: Handler,
        base_url: str = "https://slack.com/api/",
        clock: Callable[[], float] = time.monotonic,
        stale_after_s: float = 120.0,
        check_every_s: float = 10.0,
        logger: logging.Logger | None = None,
        session: aiohttp.ClientSession | None = None,
        ping_interval_s: float = 5.0,
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 60.0,
        dedup_size: int = DEDUP_SIZE,
    ) -> None:
        self._app_token = app_token
        self._base_url = base_url
        self._clock = clock
        self.stale_after_s = stale_after_s
        self.check_every_s = check_every_s
        self._log = logger or log
        self._session = session
        self.ping_interval_s = ping_interval_s
        self.retry_delay_s = retry_delay_s
        self.max_retry_delay_s = max_retry_delay_s
        self._tasks = _Tasks(handler, self._log)
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._dedup_size = dedup_size
        self._client: SocketModeClient | None = None
        self._web: AsyncWebClient | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._check_lock = asyncio.Lock()
        self._stopping = False
        self.reconnects = 0  # watchdog reconnects (slack-sdk's own are not counted)
        self.duplicates = 0  # redelivered envelopes dropped
        self.last_seen: float | None = None  # clock value of the last frame of any kind

    def __repr__(self) -> str:  # no token in a repr that ends up in a log
        return f"<SocketModeReceiver base_url={self._base_url!r} connected={self.connected}>"

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (raising if the token is refused) and start the watchdog."""
        self._stopping = False
        self._web = AsyncWebClient(base_url=self._base_url, session=self._session, logger=_sdk_log)
        client = SocketModeClient(
            app_token=self._app_token,
            logger=_sdk_log,
            web_client=self._web,
            ping_interval=self.ping_interval_s,
        )
        # Replace the client's own aiohttp session by one whose WebSockets report every frame.
        await client.aiohttp_client_session.close()
        client.aiohttp_client_session = aiohttp.ClientSession(
            ws_response_class=_observed_ws_class(self._on_frame)
        )
        client.socket_mode_request_listeners.append(self._on_request)
        self._client = client
        try:
            await self._connect()
        except BaseException:
            await self._close_client()
            raise
        self._watchdog = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop the watchdog, close the connection, give running handlers a grace period."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        await self._close_client()
        await self._tasks.drain(STOP_GRACE_S)

    async def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # --- state ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        client = self._client
        session = client.current_session if client is not None else None
        return bool(
            client is not None
            and not client.closed
            and not client.stale
            and session is not None
            and not session.closed
        )

    def health(self) -> dict[str, Any]:
        """For /healthz: whether a socket is open, how long since anything arrived, reconnects."""
        age = None if self.last_seen is None else max(0.0, self._clock() - self.last_seen)
        return {"connected": self.connected, "last_seen_age_s": age, "reconnects": self.reconnects}

    # --- the watchdog -----------------------------------------------------------------

    def stale_reason(self) -> str | None:
        """Why the connection needs replacing (``"disconnected"``, ``"silent for 121 s"``),
        or None while it is fine."""
        if not self.connected:
            return "disconnected"
        if self.last_seen is not None:
            age = self._clock() - self.last_seen
            if age >= self.stale_after_s:
                return f"silent for {age:.0f} s"
        return None

    async def check_staleness(self) -> str | None:
        """Reconnect if :meth:`stale_reason` says so; the reason, or None if nothing was done."""
        async with self._check_lock:
            client = self._client
            if client is None or self._stopping or self.stale_reason() is None:
                return None
            # slack-sdk's own reconnects hold this lock: wait for one in progress, then look again.
            async with client.connect_operation_lock:
                reason = self.stale_reason()
                if reason is None or self._stopping:
                    return None
                self._log.warning("Slack Socket Mode connection %s; reconnecting", reason)
                await self._connect(reconnect=True)
            return reason

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self.check_every_s)
            except TimeoutError:
                pass
            self._lost.clear()
            try:
                await self.check_staleness()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. the token was revoked meanwhile; try again later
                self._log.error(
                    "Slack Socket Mode reconnect failed (%s): %s", type(exc).__name__, _redact(str(exc))
                )

    def _on_frame(self, ws: ClientWebSocketResponse, kind: WSMsgType) -> None:
        if kind in _ALIVE:
            self.last_seen = self._clock()
        elif kind in _GONE and self._client is not None and ws is self._client.current_session:
            self._lost.set()

    # --- connecting ---------------------------------------------------------------------

    async def _connect(self, *, reconnect: bool = False) -> None:
        """A fresh URL from apps.connections.open (retrying what can be retried), then the
        WebSocket. ``client.connect()`` closes the old socket first."""
        client = self._client
        assert client is not None
        delay = self.retry_delay_s
        while True:
            try:
                url = await self._open_url()
                break
            except SlackInteractionsError as exc:
                if not exc.retryable:
                    raise
                self._log.warning("%s; retrying in %.3g s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay_s)
        client.wss_uri = url
        await client.connect()
        # No await between connect() returning and the count: once the new socket's first
        # frame is handled, ``reconnects`` already says so.
        self.last_seen = self._clock()
        if reconnect:
            self.reconnects += 1
            self._log.info("Slack Socket Mode reconnected (%d watchdog reconnects)", self.reconnects)
        else:
            self._log.info("Slack Socket Mode connected")

    async def _open_url(self) -> str:
        assert self._web is not None
        try:
            response = await self._web.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            code = str(exc.response.get("error") or "unknown_error")
            status = exc.response.status_code
            if code in PERMANENT_OPEN_ERRORS:
                hint = ""
                if code == "not_allowed_token_type" or not self._app_token.startswith("xapp-"):
                    hint = " (Socket Mode needs an app-level token, xapp-…, with connections:write)"
                raise SlackInteractionsError(
                    f"Slack apps.connections.open refused the app token: {code}{hint}",
                    retryable=False,
                ) from None
            raise SlackInteractionsError(
                f"Slack apps.connections.open failed: HTTP {status} {code}", retryable=True
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SlackInteractionsError(
                f"Slack apps.connections.open unreachable ({type(exc).__name__})", retryable=True
            ) from None
        url = response.get("url")
        if not isinstance(url, str) or not url:
            raise SlackInteractionsError("Slack apps.connections.open answered no url", retryable=True)
        return url

    # --- envelopes --------------------------------------------------------------------

    def _first_time(self, envelope_id: str) -> bool:
        if envelope_id in self._seen_ids:
            self._seen_ids.move_to_end(envelope_id)
            return False
        self._seen_ids[envelope_id] = None
        if len(self._seen_ids) > self._dedup_size:
            self._seen_ids.popitem(last=False)
        return True

    async def _on_request(self, client: Any, req: SocketModeRequest) -> None:
        # Ack before anything else: Slack's 3 s run from when it sent the envelope.
        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        except Exception as exc:  # Slack will redeliver; the dedup below copes
            self._log.warning(
                "Slack Socket Mode ack of envelope %s failed (%s)", req.envelope_id, type(exc).__name__
            )
        if req.type != "interactive":
            return
        if not self._first_time(req.envelope_id):
            self.duplicates += 1
            self._log.info(
                "Slack redelivered envelope %s (attempt %s); already handled",
                req.envelope_id,
                req.retry_attempt,
            )
            return
        for interaction in interactions_from_payload(
            req.payload,
            envelope_id=req.envelope_id,
            retry_attempt=int(req.retry_attempt or 0),
            transport="socket",
        ):
            self._tasks.spawn(interaction)


class _InjectedClock(Clock):
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


def http_interactions_route(
    *,
    path: str,
    signing_secret: str,
    handler: Handler,
    clock: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
) -> web.RouteDef:
    """``POST path`` for Slack's Interactivity Request URL: verify the signature and age
    (``clock`` is wall-clock epoch seconds), answer 200 with an empty body at once, run
    ``handler`` in the background. A bad or stale signature is 401 and calls nothing.
    https://docs.slack.dev/authentication/verifying-requests-from-slack/"""
    verifier = SignatureVerifier(signing_secret, clock=_InjectedClock(clock))
    the_log = logger or log
    tasks = _Tasks(handler, the_log)

    async def interactions(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            valid = verifier.is_valid_request(body, dict(request.headers))
        except (ValueError, UnicodeDecodeError):  # a timestamp that is not a number
            valid = False
        if not valid:
            the_log.warning("Slack interaction refused: bad signature or stale timestamp")
            return web.Response(status=401)
        try:
            form = urllib.parse.parse_qs(body.decode())
            payload = json.loads(form["payload"][0])
        except (KeyError, IndexError, ValueError, UnicodeDecodeError):
            return web.Response(status=400)
        try:
            retry = int(request.headers.get("X-Slack-Retry-Num", "0"))
        except ValueError:
            retry = 0
        for interaction in interactions_from_payload(
            payload, envelope_id=None, retry_attempt=retry, transport="http"
        ):
            tasks.spawn(interaction)
        return web.Response(status=200)

    return web.post(path, interactions)
