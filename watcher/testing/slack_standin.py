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

Everything is recorded in a :class:`SlackState` for tests to assert on, and its knobs
(:meth:`SlackState.fail_next`, ``down``, ``delay_s``) simulate outages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["SlackMessage", "SlackRequest", "SlackState", "create_slack_app"]

DEFAULT_TOKEN = "xoxb-standin-token"

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
        channels: dict[str, str] | None = None,
        webhooks: dict[str, str] | None = None,
    ) -> None:
        self.tokens = set(tokens)
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

    # --- internals ------------------------------------------------------------------

    def _received(self, message: SlackMessage, *, new: bool = True) -> None:
        if new:
            self.messages.append(message)
        for listener in self.listeners:
            listener(message)

    def _next_ts(self) -> str:
        self._seq += 100
        return f"1700000000.{self._seq:06d}"

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
        if state.delay_s:
            await asyncio.sleep(state.delay_s)

        def answer(
            payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
        ):
            record.status, record.answer = status, payload
            return web.json_response(payload, status=status, headers=headers)

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
        if token not in state.tokens:
            return answer({"ok": False, "error": "invalid_auth"})

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
        if method not in ("chat.postMessage", "chat.update"):
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

    app = web.Application()
    app.router.add_post("/api/{method}", api)
    app.router.add_post("/webhook/{path:.+}", webhook)
    return app
