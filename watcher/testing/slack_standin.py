"""A local stand-in for Slack: the Web API methods makewatch uses, and incoming webhooks.

Run it on 127.0.0.1 (``aiohttp_server(create_slack_app(state))`` in tests, or an
``aiohttp.web.AppRunner`` in the demo) and point slack-sdk at it: a bot channel's
``base_url = "http://127.0.0.1:<port>/api/"``, a webhook channel's URL at
``http://127.0.0.1:<port>/webhook/<anything>``.

It answers the way Slack does, as far as makewatch relies on it:

- Web API (``POST /api/chat.postMessage``, ``/api/chat.update``, ``/api/auth.test``): JSON or
  form bodies; the token from ``Authorization: Bearer`` (or a ``token`` field); success
  ``{"ok": true, "channel": "C…", "ts": "1700000000.000100", "message": {…}}``; errors as
  ``{"ok": false, "error": "channel_not_found"}`` with HTTP 200; rate limits as HTTP 429 with
  ``Retry-After``.
- Incoming webhooks (``POST /webhook/<path>``): ``ok`` as text/plain; errors as a text code
  with a 4xx status (``invalid_payload`` 400, ``invalid_token`` 403, ``no_service`` 404,
  ``channel_is_archived`` 410).
- It checks Slack's Block Kit limits (text 40,000, 50 blocks, header 150, section text 3,000,
  10 fields of 2,000, button text 75) and refuses like Slack (``msg_too_long``,
  ``invalid_blocks``), so a test passing here does not hide a message Slack would reject.

- More Web API methods, for the buttons' handlers: ``chat.postEphemeral`` (recorded in
  ``ephemerals``), ``usergroups.users.list`` (members from ``usergroups``), ``users.info``
  (from ``users``). An app-level token (``xapp-…``) on any of them, or a bot token on
  ``apps.connections.open``, is ``not_allowed_token_type``, as Slack answers.
- Socket Mode: ``apps.connections.open`` (an app token from ``app_tokens``) answers a
  single-use ``ws://…/link/?ticket=…`` URL; the WebSocket there sends ``hello``, answers pings
  and carries envelopes. :meth:`SlackState.click` sends a ``block_actions`` envelope as
  Slack does when someone clicks a button and lets the test await the ack;
  :meth:`SlackState.post_interaction` delivers the same payload as a signed HTTP POST (the
  Request URL mode). ``response_url`` points back at the stand-in (``/actions/…``), which
  records what is posted there in ``responses`` and applies ``replace_original`` /
  ``delete_original`` / ephemeral replies to the clicked message.
- Connection faults for a client's watchdog: :meth:`SlackState.drop_connections` (TCP reset,
  no close frame), :meth:`SlackState.go_silent` (the socket stays open, nothing answers,
  nothing arrives), :meth:`SlackState.refuse_connections_open`,
  :meth:`SlackState.send_disconnect` (Slack's ``disconnect`` message before a refresh).

Everything is recorded in a :class:`SlackState` for tests to assert on, and its knobs
(:meth:`SlackState.fail_next`, ``down``, ``delay_s``) simulate outages.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

__all__ = [
    "DEFAULT_APP_TOKEN",
    "DEFAULT_TOKEN",
    "Envelope",
    "SlackEphemeral",
    "SlackMessage",
    "SlackRequest",
    "SlackResponsePost",
    "SlackState",
    "SocketConnection",
    "create_slack_app",
    "slack_signature",
]

DEFAULT_TOKEN = "xoxb-standin-token"
# An app-level token (Socket Mode's apps.connections.open takes nothing else).
DEFAULT_APP_TOKEN = "xapp-1-A0STANDIN-1-standin"
TEAM_ID = "T0STANDIN"
APP_ID = "A0STANDIN"
# Slack's own bound: an interactive envelope not acked within 3 s is an error for the user
# (https://docs.slack.dev/apis/events-api/using-socket-mode/#acknowledge).
ACK_DEADLINE_S = 3.0
DEFAULT_USERS = {"U0ALICE": "alice", "U0BOB": "bob"}

# The HTTP status Slack uses for each incoming-webhook error code.
WEBHOOK_ERROR_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "too_many_attachments": 400,
    "invalid_blocks": 400,
    "invalid_token": 403,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "no_service": 404,
    "no_service_id": 404,
    "no_team": 404,
    "user_not_found": 404,
    "channel_not_found": 404,
    "channel_is_archived": 410,
    "team_disabled": 410,
    "rollup_error": 500,
}


@dataclass
class SlackRequest:
    """One request the stand-in received, and how it answered."""

    method: str  # "chat.postMessage", "auth.test", ... or "webhook"
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON or form body (dict), or the raw text
    status: int = 0
    answer: Any = None
    # When it arrived (epoch seconds, wall clock): what delivery-latency scorers measure.
    at: float = field(default_factory=time.time)


@dataclass
class SlackMessage:
    """A message as Slack would store it."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    metadata: dict[str, Any] | None = None
    webhook: str | None = None  # the webhook path it came through, None for the Web API
    edits: list[dict[str, Any]] = field(default_factory=list)  # earlier versions, oldest first

    def all_text(self) -> str:
        """The fallback text and every text string inside the blocks, one per line."""
        parts = [self.text]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "text" and isinstance(value, str):
                        parts.append(value)
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(self.blocks)
        return "\n".join(parts)

    def urls(self) -> list[str]:
        """The URLs of every button."""
        out = []
        for block in self.blocks:
            for element in block.get("elements", []) if isinstance(block, dict) else []:
                if isinstance(element, dict) and "url" in element:
                    out.append(element["url"])
        return out


@dataclass
class SlackEphemeral:
    """A message only ``user`` sees (``chat.postEphemeral``, or an ephemeral response_url
    answer); Slack keeps no copy, the stand-in does for tests."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    via: str = "chat.postEphemeral"  # or "response_url"


@dataclass
class SlackResponsePost:
    """One POST to a ``response_url`` the stand-in handed out in a click."""

    path: str
    body: Any  # the parsed JSON body (``{"response_type": "ephemeral", "text": ...}``)
    channel: str | None
    message_ts: str | None
    user: str | None
    status: int = 200


@dataclass
class Envelope:
    """One delivery of an envelope over Socket Mode, and the ack it got (if any).

    A redelivery (:meth:`SlackState.redeliver`) is another :class:`Envelope` with the same
    ``envelope_id`` and ``retry_attempt`` + 1.
    """

    envelope_id: str
    type: str
    payload: dict[str, Any]
    retry_attempt: int = 0
    retry_reason: str = ""
    accepts_response_payload: bool = False
    delivered: bool = False  # False: no open connection would carry it (all silent, none open)
    sent_at: float = 0.0  # time.monotonic() when it was written to the socket
    ack: dict[str, Any] | None = None
    ack_after_s: float | None = None  # how long the client took to ack
    _acked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
        }

    async def wait_ack(self, timeout_s: float = 10.0) -> float:
        """Wait for the client's ``{"envelope_id": ...}``; the seconds it took.

        Raises AssertionError if none came within ``timeout_s`` (generous by default: this
        bounds the test, :data:`ACK_DEADLINE_S` is what a test asserts against)."""
        try:
            await asyncio.wait_for(self._acked.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"envelope {self.envelope_id} (attempt {self.retry_attempt}) not acked "
                f"within {timeout_s:g} s"
            ) from None
        assert self.ack_after_s is not None
        return self.ack_after_s


@dataclass
class SocketConnection:
    """One Socket Mode WebSocket a client opened with a ticket."""

    ticket: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    origin: str  # http://127.0.0.1:<port>, for the response_urls of the envelopes it carries
    silent: bool = False  # go_silent(): answers nothing, sends nothing
    closed: bool = False
    pings: int = 0  # pings the client sent (answered unless silent)
    received: list[Any] = field(default_factory=list)  # text frames from the client, parsed


def slack_signature(signing_secret: str, timestamp: str, body: str | bytes) -> str:
    """``X-Slack-Signature`` for ``body`` sent at ``timestamp``: ``v0=`` + HMAC-SHA256 of
    ``v0:<timestamp>:<body>`` (https://docs.slack.dev/authentication/verifying-requests-from-slack/)."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256)
    return "v0=" + digest.hexdigest()


@dataclass
class _Failure:
    status: int | None
    error: str | None
    retry_after: float | None


class SlackState:
    """What the stand-in knows and has seen; tests read it and turn its knobs.

    ``channels`` maps names to ids (``{"alerts": "C0ALERTS"}``); messages to an id not in
    it, or to an unknown ``#name``, get ``channel_not_found``. ``webhooks`` maps webhook
    paths to channel ids; when it is None every path is a valid webhook posting to
    ``C0WEBHOOK``.
    """

    def __init__(
        self,
        *,
        tokens: tuple[str, ...] = (DEFAULT_TOKEN,),
        app_tokens: tuple[str, ...] = (DEFAULT_APP_TOKEN,),
        channels: dict[str, str] | None = None,
        webhooks: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        usergroups: dict[str, list[str]] | None = None,
    ) -> None:
        self.tokens = set(tokens)
        self.app_tokens = set(app_tokens)
        # users.info: user id -> name; usergroups.users.list: "S…" -> member ids.
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.usergroups = dict(usergroups or {})
        self.ephemerals: list[SlackEphemeral] = []
        self.responses: list[SlackResponsePost] = []
        # Socket Mode: every connection opened (hello sent), every envelope delivery, acks.
        self.connections: list[SocketConnection] = []
        self.envelopes: list[Envelope] = []
        self.acks: list[dict[str, Any]] = []
        # Where the stand-in is served (http://127.0.0.1:<port>): learnt from the requests it
        # receives, or set by the test; response_urls point here.
        self.url: str | None = None
        self._tickets: set[str] = set()
        self._refuse_open: deque[int] = deque()
        self._ids = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._response_targets: dict[str, tuple[str | None, str | None, str]] = {}
        self.channels = dict(channels or {"alerts": "C0ALERTS", "webhook": "C0WEBHOOK"})
        self.webhooks = webhooks
        self.archived: set[str] = set()
        self.requests: list[SlackRequest] = []
        self.messages: list[SlackMessage] = []
        self.down = False
        self.delay_s = 0.0
        self._failures: deque[_Failure] = deque()
        self._seq = 0
        # Called with each message posted and each message updated (``makewatch simulate``
        # prints them as they arrive); an update passes the same, now edited, message.
        self.listeners: list[Callable[[SlackMessage], None]] = []

    # --- knobs ----------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``n`` requests with a failure instead of handling them.

        ``status=503``: that HTTP status. ``error="channel_not_found"``: Slack's error
        (HTTP 200 from the Web API, the webhook's own 4xx status for a webhook).
        ``status=429, retry_after=N``: rate limited, with ``Retry-After: N``.
        """
        if status is None and error is None:
            raise ValueError("give a status, an error, or both")
        for _ in range(n):
            self._failures.append(_Failure(status, error, retry_after))

    def refuse_connections_open(self, n: int = 1, *, status: int = 503) -> None:
        """Answer the next ``n`` ``apps.connections.open`` calls with HTTP ``status`` and
        ``{"ok": false, "error": "service_unavailable"}`` (other methods are unaffected)."""
        self._refuse_open.extend([status] * n)

    def go_silent(self) -> None:
        """Every open connection goes quiet: the TCP and WebSocket stay open but pings get no
        pong, acks are ignored and nothing more is sent on it. A half-dead path (a NAT or load
        balancer that lost the flow) looks like this to a client; connections opened later
        behave normally."""
        for conn in self.connections:
            conn.silent = True

    async def drop_connections(self) -> None:
        """Reset every open connection at the TCP level: no close frame, no goodbye."""
        for conn in self.connections:
            if not conn.closed and conn.transport is not None:
                conn.closed = True
                conn.transport.abort()
        await self._notify()

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Send Slack's ``{"type": "disconnect"}`` on every live connection, as Slack does
        before it refreshes a connection (the client is expected to open a new one)."""
        for conn in self._live():
            await conn.ws.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}}
            )

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds; it is looked at whenever a Socket Mode connection
        opens or closes, a ping is answered or an ack arrives. AssertionError on timeout."""

        async def until() -> None:
            cond = self._condition()
            async with cond:
                await cond.wait_for(predicate)

        try:
            await asyncio.wait_for(until(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"stand-in: no {what} within {timeout_s:g} s") from None

    async def wait_connections(self, n: int, timeout_s: float = 10.0) -> SocketConnection:
        """Wait until ``n`` connections have been opened in all; the newest."""
        await self.wait_for(
            lambda: len(self.connections) >= n, timeout_s, f"Socket Mode connection #{n}"
        )
        return self.connections[-1]

    async def send_envelope(self, type: str, payload: dict[str, Any]) -> Envelope:
        """Any other envelope (``events_api``, ``slash_commands``, ...) on the newest connection."""
        envelope = Envelope(envelope_id=secrets.token_hex(16), type=type, payload=payload)
        await self._deliver(envelope)
        return envelope

    # --- interactions: what Slack sends when someone clicks a button ------------------

    def block_actions_payload(
        self,
        *,
        user_id: str,
        action_id: str,
        value: str = "",
        channel: str = "C0ALERTS",
        message_ts: str | None = None,
        team_id: str = TEAM_ID,
        user_name: str | None = None,
        block_id: str | None = None,
        origin: str | None = None,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends for a click on button ``action_id`` of the
        recorded message ``channel``/``message_ts``: the message as the stand-in holds it, the
        button's block and label from its blocks, a ``response_url`` back to the stand-in.
        Shape: https://docs.slack.dev/reference/interaction-payloads/block_actions-payload"""
        message = self.find(channel, message_ts) if message_ts else None
        label, found_block = action_id, None
        for block in message.blocks if message else []:
            for element in block.get("elements", []) if isinstance(block, dict) else []:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    found_block = block.get("block_id")
                    label = (element.get("text") or {}).get("text", action_id)
        block_id = block_id or found_block or f"b{next(self._ids)}"
        name = user_name or self.users.get(user_id, user_id.lower())
        now = time.time()
        action_ts = f"{now:.6f}"
        hook = f"{next(self._ids)}/{secrets.token_hex(12)}"
        self._response_targets[hook] = (channel, message_ts, user_id)
        base = origin or self.url or "http://127.0.0.1"
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user_id, "username": name, "name": name, "team_id": team_id},
            "api_app_id": APP_ID,
            "token": "standin-verification-token",  # legacy, Slack still sends it
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": f"{int(now)}.{next(self._ids)}.{secrets.token_hex(8)}",
            "team": {"id": team_id, "domain": "standin"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self._channel_name(channel)},
            "state": {"values": {}},
            "response_url": f"{base}/actions/{team_id}/{hook}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": label, "emoji": True},
                    "value": value,
                    "type": "button",
                    "action_ts": action_ts,
                }
            ],
        }
        if message is not None:
            payload["message"] = _message_json(message)
        return payload

    async def click(
        self,
        *,
        user_id: str,
        action_id: str,
        value: str = "",
        channel: str = "C0ALERTS",
        message_ts: str | None = None,
        team_id: str = TEAM_ID,
        redelivery: bool = False,
        **extra: Any,
    ) -> Envelope:
        """Someone clicks a button: send the ``interactive`` envelope on the newest open
        connection and return it (``await envelope.wait_ack()`` for the ack).

        ``redelivery=True`` also sends it again at once with ``retry_attempt`` 1, as Slack
        does when no ack arrived in time, and returns that second delivery."""
        conn = self._newest()
        payload = self.block_actions_payload(
            user_id=user_id,
            action_id=action_id,
            value=value,
            channel=channel,
            message_ts=message_ts,
            team_id=team_id,
            origin=conn.origin if conn else None,
            **extra,
        )
        envelope = Envelope(envelope_id=secrets.token_hex(16), type="interactive", payload=payload)
        await self._deliver(envelope)
        if redelivery:
            return await self.redeliver(envelope)
        return envelope

    async def redeliver(self, envelope: Envelope, reason: str = "timeout") -> Envelope:
        """Send ``envelope`` again, same id and payload, ``retry_attempt`` + 1."""
        again = Envelope(
            envelope_id=envelope.envelope_id,
            type=envelope.type,
            payload=envelope.payload,
            retry_attempt=envelope.retry_attempt + 1,
            retry_reason=reason,
            accepts_response_payload=envelope.accepts_response_payload,
        )
        await self._deliver(again)
        return again

    def interaction_request(
        self,
        payload: dict[str, Any],
        signing_secret: str,
        *,
        timestamp: float | None = None,
        forge: bool = False,
    ) -> tuple[str, dict[str, str]]:
        """The body and headers of Slack's HTTP delivery of ``payload`` (Request URL mode):
        form-encoded ``payload=<json>``, signed with ``signing_secret`` at ``timestamp``
        (default now; older than 5 minutes is stale). ``forge=True`` signs with a wrong secret."""
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        ts = str(int(time.time() if timestamp is None else timestamp))
        secret = "not-" + signing_secret if forge else signing_secret
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(secret, ts, body),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        return body, headers

    async def post_interaction(
        self,
        url: str,
        payload: dict[str, Any],
        signing_secret: str,
        *,
        timestamp: float | None = None,
        forge: bool = False,
    ) -> tuple[int, str]:
        """POST ``payload`` to ``url`` as Slack does (see :meth:`interaction_request`);
        the status and body of the answer."""
        body, headers = self.interaction_request(
            payload, signing_secret, timestamp=timestamp, forge=forge
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body.encode(), headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    # --- reading --------------------------------------------------------------------

    def find(self, channel: str, ts: str) -> SlackMessage | None:
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        return None

    def replies(self, ts: str) -> list[SlackMessage]:
        """The messages posted in the thread of ``ts``."""
        return [m for m in self.messages if m.thread_ts == ts]

    def calls(self, method: str) -> list[SlackRequest]:
        return [r for r in self.requests if r.method == method]

    def ephemerals_for(self, user: str) -> list[SlackEphemeral]:
        return [e for e in self.ephemerals if e.user == user]

    # --- internals ------------------------------------------------------------------

    def _received(self, message: SlackMessage, *, new: bool = True) -> None:
        if new:
            self.messages.append(message)
        for listener in self.listeners:
            listener(message)

    def _next_ts(self) -> str:
        self._seq += 100
        return f"1700000000.{self._seq:06d}"

    def _channel_name(self, channel_id: str) -> str:
        for name, cid in self.channels.items():
            if cid == channel_id:
                return name
        return channel_id.lower()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    def _live(self) -> list[SocketConnection]:
        return [c for c in self.connections if not c.closed and not c.silent]

    def _newest(self) -> SocketConnection | None:
        """The connection Slack would use: the newest still open (a silent one included:
        Slack does not know it is dead, which is the point of that fault)."""
        open_ = [c for c in self.connections if not c.closed]
        return open_[-1] if open_ else None

    async def _deliver(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        conn = self._newest()
        if conn is None or conn.silent:
            return
        envelope.sent_at = time.monotonic()
        envelope.delivered = True
        await conn.ws.send_json(envelope.to_json())

    def _ack_received(self, message: dict[str, Any]) -> None:
        self.acks.append(message)
        for envelope in self.envelopes:
            if envelope.envelope_id == message.get("envelope_id") and envelope.ack is None:
                if not envelope.delivered:
                    continue
                envelope.ack = message
                envelope.ack_after_s = time.monotonic() - envelope.sent_at
                envelope._acked.set()
                return

    def _resolve_channel(self, channel: Any) -> str | None:
        if not isinstance(channel, str) or not channel:
            return None
        name = channel.lstrip("#")
        if name in self.channels:
            return self.channels[name]
        if channel in self.channels.values():
            return channel
        return None


def _limit_problem(text: Any, blocks: Any) -> str | None:
    """Slack's refusal code for a message over its limits, or None."""
    if not (isinstance(text, str) and text.strip()) and not blocks:
        return "no_text"
    if isinstance(text, str) and len(text) > 40_000:
        return "msg_too_long"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or "type" not in block:
            return "invalid_blocks"
        text_obj = block.get("text")
        text_len = len(text_obj.get("text", "")) if isinstance(text_obj, dict) else 0
        if block["type"] == "header" and text_len > 150:
            return "invalid_blocks"
        if block["type"] == "section":
            fields = block.get("fields") or []
            if text_len > 3000 or len(fields) > 10:
                return "invalid_blocks"
            if any(len(f.get("text", "")) > 2000 for f in fields):
                return "invalid_blocks"
        if block["type"] in ("context", "actions"):
            elements = block.get("elements") or []
            if len(elements) > (10 if block["type"] == "context" else 25):
                return "invalid_blocks"
            for element in elements:
                label = element.get("text") if isinstance(element, dict) else None
                if element.get("type") == "button" and len((label or {}).get("text", "")) > 75:
                    return "invalid_blocks"
    return None


def _message_json(m: SlackMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "message",
        "user": "U0BOT",
        "bot_id": "B0BOT",
        "text": m.text,
        "ts": m.ts,
        "blocks": m.blocks,
    }
    if m.thread_ts:
        out["thread_ts"] = m.thread_ts
    if m.edits:
        out["edited"] = {"user": "U0BOT", "ts": m.ts}
    return out


async def _read_body(request: web.Request) -> Any:
    if request.content_type == "application/json":
        try:
            return await request.json()
        except ValueError:
            return await request.text()
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = dict(await request.post())
        # Form-encoded calls send blocks and metadata as JSON strings.
        for key in ("blocks", "attachments", "metadata"):
            if isinstance(form.get(key), str):
                try:
                    form[key] = json.loads(form[key])
                except ValueError:
                    pass
        return form
    return await request.text()


def create_slack_app(state: SlackState) -> web.Application:
    """The stand-in as an aiohttp application recording into ``state``."""

    async def api(request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        body = await _read_body(request)
        params: dict[str, Any] = dict(request.query)
        if isinstance(body, dict):
            params.update(body)
        record = SlackRequest(method, request.path, dict(request.headers), body)
        state.requests.append(record)
        state.url = state.url or str(request.url.origin())
        if state.delay_s:
            await asyncio.sleep(state.delay_s)

        def answer(
            payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
        ):
            record.status, record.answer = status, payload
            return web.json_response(payload, status=status, headers=headers)

        if method == "apps.connections.open" and state._refuse_open:
            return answer({"ok": False, "error": "service_unavailable"}, state._refuse_open.popleft())
        if state.down:
            return answer({"ok": False, "error": "service_unavailable"}, 503)
        if state._failures:
            f = state._failures.popleft()
            status = f.status or 200
            headers = {}
            if status == 429:
                headers["Retry-After"] = f"{f.retry_after if f.retry_after is not None else 1:g}"
            error = f.error or ("ratelimited" if status == 429 else "service_unavailable")
            return answer({"ok": False, "error": error}, status, headers)

        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else params.get("token")
        if not token:
            return answer({"ok": False, "error": "not_authed"})
        # Socket Mode takes an app-level token and nothing else; every other method refuses one.
        app_level = method == "apps.connections.open"
        if app_level:
            wrong_type = token in state.tokens or token.startswith(("xoxb-", "xoxp-"))
        else:
            wrong_type = token in state.app_tokens or token.startswith("xapp-")
        if wrong_type:
            return answer({"ok": False, "error": "not_allowed_token_type"})
        if token not in (state.app_tokens if app_level else state.tokens):
            return answer({"ok": False, "error": "invalid_auth"})

        if app_level:
            ticket = secrets.token_hex(16)
            state._tickets.add(ticket)
            ws_origin = str(request.url.origin()).replace("http", "ws", 1)
            return answer({"ok": True, "url": f"{ws_origin}/link/?ticket={ticket}&app_id={APP_ID}"})
        if method == "users.info":
            user = str(params.get("user", ""))
            if user not in state.users:
                return answer({"ok": False, "error": "user_not_found"})
            name = state.users[user]
            return answer(
                {
                    "ok": True,
                    "user": {
                        "id": user,
                        "team_id": TEAM_ID,
                        "name": name,
                        "real_name": name.title(),
                        "deleted": False,
                        "is_bot": False,
                        "profile": {"real_name": name.title(), "display_name": name},
                    },
                }
            )
        if method == "usergroups.users.list":
            group = str(params.get("usergroup", ""))
            if group not in state.usergroups:
                return answer({"ok": False, "error": "no_such_subteam"})
            return answer({"ok": True, "users": list(state.usergroups[group])})

        if method == "auth.test":
            return answer(
                {
                    "ok": True,
                    "url": "https://standin.slack.com/",
                    "team": "Stand-in",
                    "user": "makewatch",
                    "team_id": "T0STANDIN",
                    "user_id": "U0BOT",
                    "bot_id": "B0BOT",
                }
            )
        if method not in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            return answer({"ok": False, "error": "unknown_method"})

        channel = state._resolve_channel(params.get("channel"))
        if channel is None:
            return answer({"ok": False, "error": "channel_not_found"})
        if channel in state.archived:
            return answer({"ok": False, "error": "is_archived"})
        text, blocks = params.get("text"), params.get("blocks")
        problem = _limit_problem(text, blocks)
        if problem:
            return answer({"ok": False, "error": problem})

        if method == "chat.update":
            message = state.find(channel, str(params.get("ts")))
            if message is None:
                return answer({"ok": False, "error": "message_not_found"})
            message.edits.append({"text": message.text, "blocks": message.blocks})
            message.text, message.blocks = text or "", blocks or []
            state._received(message, new=False)
            return answer(
                {
                    "ok": True,
                    "channel": channel,
                    "ts": message.ts,
                    "text": message.text,
                    "message": _message_json(message),
                }
            )

        if method == "chat.postEphemeral":
            user = params.get("user")
            if not isinstance(user, str) or user not in state.users:
                return answer({"ok": False, "error": "user_not_in_channel"})
            state.ephemerals.append(
                SlackEphemeral(channel, user, text or "", blocks or [], params.get("thread_ts"))
            )
            return answer({"ok": True, "message_ts": state._next_ts()})

        message = SlackMessage(
            channel=channel,
            ts=state._next_ts(),
            text=text or "",
            blocks=blocks or [],
            thread_ts=params.get("thread_ts"),
            username=params.get("username"),
            icon_emoji=params.get("icon_emoji"),
            metadata=params.get("metadata"),
        )
        state._received(message)
        return answer(
            {"ok": True, "channel": channel, "ts": message.ts, "message": _message_json(message)}
        )

    async def webhook(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        body = await _read_body(request)
        record = SlackRequest("webhook", request.path, dict(request.headers), body)
        state.requests.append(record)
        if state.delay_s:
            await asyncio.sleep(state.delay_s)

        def answer(text: str, status: int = 200, headers: dict[str, str] | None = None):
            record.status, record.answer = status, text
            return web.Response(text=text, status=status, headers=headers)

        if state.down:
            return answer("service_unavailable", 503)
        if state._failures:
            f = state._failures.popleft()
            status = f.status or WEBHOOK_ERROR_STATUS.get(f.error or "", 400)
            headers = {}
            if status == 429:
                headers["Retry-After"] = f"{f.retry_after if f.retry_after is not None else 1:g}"
            error = f.error or ("rate_limited" if status == 429 else "service_unavailable")
            return answer(error, status, headers)

        if state.webhooks is None:
            channel = state.channels.get("webhook", "C0WEBHOOK")
        elif path in state.webhooks:
            channel = state.webhooks[path]
        else:
            return answer("no_service", 404)
        if channel in state.archived:
            return answer("channel_is_archived", 410)
        if not isinstance(body, dict):
            return answer("invalid_payload", 400)
        problem = _limit_problem(body.get("text"), body.get("blocks"))
        if problem:
            return answer(problem if problem == "no_text" else "invalid_blocks", 400)
        state._received(
            SlackMessage(
                channel=channel,
                ts=state._next_ts(),
                text=body.get("text") or "",
                blocks=body.get("blocks") or [],
                username=body.get("username"),
                icon_emoji=body.get("icon_emoji"),
                webhook=path,
            )
        )
        return answer("ok")

    async def socket(request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in state._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        state._tickets.discard(ticket)  # single use, as Slack's
        # autoping off: the stand-in answers pings itself, so that go_silent() can stop.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        origin = str(request.url.origin())
        state.url = state.url or origin
        conn = SocketConnection(ticket, ws, request.transport, origin)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": sum(1 for c in state.connections if not c.closed) + 1,
                "debug_info": {
                    "host": "applink-standin",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": APP_ID},
            }
        )
        state.connections.append(conn)
        await state._notify()
        try:
            async for msg in ws:
                if conn.silent:
                    continue
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                    conn.pings += 1  # after the pong is written: what is sent next follows it
                    await state._notify()
                elif msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        data = msg.data
                    conn.received.append(data)
                    if isinstance(data, dict) and "envelope_id" in data:
                        state._ack_received(data)
                        await state._notify()
        finally:
            conn.closed = True
            await state._notify()
        return ws

    async def response_url(request: web.Request) -> web.StreamResponse:
        hook = request.match_info["hook"]
        try:
            body = await request.json()
        except ValueError:
            body = await request.text()
        target = state._response_targets.get(hook)
        channel, ts, user = target if target else (None, None, None)
        record = SlackResponsePost(request.path, body, channel, ts, user)
        state.responses.append(record)
        if target is None or not isinstance(body, dict):
            record.status = 404 if target is None else 400
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=record.status)
        message = state.find(channel, ts) if channel and ts else None
        if body.get("delete_original") and message is not None:
            state.messages.remove(message)
        elif body.get("replace_original") and message is not None:
            message.edits.append({"text": message.text, "blocks": message.blocks})
            message.text, message.blocks = body.get("text") or "", body.get("blocks") or []
            state._received(message, new=False)
        elif body.get("response_type") == "in_channel" and channel:
            thread = ts if body.get("thread_ts") else None
            state._received(
                SlackMessage(channel, state._next_ts(), body.get("text") or "", body.get("blocks") or [], thread)
            )
        elif channel and user:  # ephemeral is the default response_type
            state.ephemerals.append(
                SlackEphemeral(channel, user, body.get("text") or "", body.get("blocks") or [], via="response_url")
            )
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/api/{method}", api)
    app.router.add_get("/api/{method}", api)  # slack-sdk GETs users.info, usergroups.users.list
    app.router.add_post("/webhook/{path:.+}", webhook)
    app.router.add_get("/link/", socket)
    app.router.add_post("/actions/{team}/{hook:.+}", response_url)
    return app
