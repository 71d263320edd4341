"""Slack notifiers: an incoming webhook, or a bot token (threads and updates).

Both go through slack-sdk's async clients on the application's aiohttp session, with the
SDK's own retry handlers switched off (``retry_handlers=[]``): the delivery loop owns
retries, backoff and the attempt count, and a second, hidden retry layer would multiply
attempts and hide the ``Retry-After`` we must honour.

slack-sdk logs request URLs and bodies at DEBUG level, and an incoming webhook's URL *is*
its credential; the clients therefore log to ``alerts.notify.slack.sdk``, pinned at WARNING.
Error texts carry only an HTTP status and Slack's short error code, never the URL or token.

A send returns as soon as Slack answered its last request (the session is keep-alive, there is
no close-down to wait for), so the delivery loop records the row right after Slack's answer:
:func:`~alerts.notify.base.request_per_send` is the whole of a Slack session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from alerts.channels import SlackBotChannel, SlackWebhookChannel
from alerts.notify.base import (
    DeliveryError,
    Notification,
    NotifierSession,
    classify_http_status,
    parse_retry_after,
    register,
    request_per_send,
)

if TYPE_CHECKING:  # (alerts.render imports this package: no import at run time)
    from alerts.render import Renderer

__all__ = [
    "PERMANENT_ERRORS",
    "RETRYABLE_ERRORS",
    "SlackBotNotifier",
    "SlackDeliveryError",
    "SlackWebhookNotifier",
    "slack_delivery_error",
]

log = logging.getLogger(__name__)
_sdk_log = logging.getLogger("alerts.notify.slack.sdk")
_sdk_log.setLevel(logging.WARNING)

# Slack error codes after which the same request can never succeed: configuration is wrong
# (token, scopes, channel) until a human fixes it. Web API codes come with HTTP 200
# (https://api.slack.com/web#evaluating_responses); incoming webhooks answer with the code
# as a text body and a 4xx status (https://api.slack.com/messaging/webhooks#handling_errors).
PERMANENT_ERRORS = frozenset(
    {
        # Web API
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "ekm_access_denied",
        "restricted_action",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "too_many_attachments",
        "invalid_arguments",
        # incoming webhooks
        "invalid_payload",
        "user_not_found",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "invalid_token",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "channel_is_archived",
    }
)
# Codes that say "not now": retry.
RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
        "rollup_error",
    }
)
# An update of the original message that cannot happen: fall back to a new message.
_UPDATE_IMPOSSIBLE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_CODE = re.compile(r"[a-z0-9_]{1,64}")


class SlackDeliveryError(DeliveryError):
    """A :class:`DeliveryError` from Slack, with the HTTP status and Slack's error code."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry_after_s: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent, retry_after_s=retry_after_s)
        self.status = status
        self.code = code


def slack_delivery_error(
    what: str, status: int, error: str | None, headers: Mapping[str, str] | None = None
) -> SlackDeliveryError:
    """Map a Slack answer (HTTP status, error code, headers) to a :class:`DeliveryError`.

    429 (any code) waits for ``Retry-After``; known codes decide first; otherwise the HTTP
    status does (:func:`classify_http_status`), and an unknown code on HTTP 200 is permanent:
    Slack understood the request and refused it, so sending it again gives the same answer.
    """
    # Only a short error code from the body reaches the message (a body could be anything).
    code = error.strip() if error and _CODE.fullmatch(error.strip()) else None
    retry_after_s = parse_retry_after((headers or {}).get("Retry-After"))
    label = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    if status == 429 or code in ("ratelimited", "rate_limited"):
        return SlackDeliveryError(
            f"{label} (rate limited)",
            permanent=False,
            retry_after_s=retry_after_s,
            status=status,
            code=code,
        )
    if code in PERMANENT_ERRORS:
        permanent = True
    elif code in RETRYABLE_ERRORS:
        permanent = False
    else:
        retryable, _ = classify_http_status(status)
        permanent = not retryable
    return SlackDeliveryError(
        label,
        permanent=permanent,
        retry_after_s=None if permanent else retry_after_s,
        status=status,
        code=code,
    )


def _network_error(what: str, exc: BaseException, timeout_s: float) -> SlackDeliveryError:
    # The exception's own text may contain the URL (aiohttp.InvalidURL does): name its type.
    if isinstance(exc, TimeoutError):
        return SlackDeliveryError(f"{what}: no answer within {timeout_s:g} s", permanent=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return SlackDeliveryError(f"{what}: the configured URL is invalid", permanent=True)
    return SlackDeliveryError(f"{what}: network error ({type(exc).__name__})", permanent=False)


class _SlackBase:
    """Session handling shared by both notifiers: use the app's, or own one and close it."""

    name: str

    def __init__(
        self,
        name: str,
        settings: SlackWebhookChannel | SlackBotChannel,
        *,
        session: aiohttp.ClientSession | None,
        renderer: Renderer,
    ) -> None:
        self.name = name
        self.settings = settings
        self.renderer = renderer
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        if self._own_session is None or self._own_session.closed:
            self._own_session = aiohttp.ClientSession()
        return self._own_session

    def session(self) -> contextlib.AbstractAsyncContextManager[NotifierSession]:
        """Each send is a request of its own on the (keep-alive) HTTP session."""
        return request_per_send(self)  # type: ignore[arg-type] - the subclasses define send

    def _decorate(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.settings.username:
            message["username"] = self.settings.username
        if self.settings.icon_emoji:
            message["icon_emoji"] = self.settings.icon_emoji
        return message

    async def aclose(self) -> None:
        """Close the session this notifier created (never the one it was given)."""
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None


@register("slack_webhook")
class SlackWebhookNotifier(_SlackBase):
    """Posts every notice as a new message: a webhook can neither thread nor update."""

    settings: SlackWebhookChannel

    async def send(self, n: Notification) -> dict[str, Any] | None:
        """Post ``n``; returns None (there is nothing to thread on). Raises DeliveryError."""
        message = self._decorate(self.renderer.render_slack(n, tz=self.settings.timezone))
        client = AsyncWebhookClient(
            self.settings.webhook_url.reveal(),
            session=self._get_session(),
            timeout=max(1, round(self.settings.timeout_s)),
            retry_handlers=[],
            logger=_sdk_log,
        )
        what = f"Slack webhook (channel {self.name})"
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                response = await client.send_dict(message)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _network_error(what, exc, self.settings.timeout_s) from None
        if 200 <= response.status_code < 300:
            return None
        raise slack_delivery_error(what, response.status_code, response.body, response.headers)


@register("slack_bot")
class SlackBotNotifier(_SlackBase):
    """A bot token: first notice posts, repeats reply in the thread, resolution updates.

    - firing / summary (or any phase without a usable thread_ref): ``chat.postMessage``;
      returns ``{"channel": <id from the response>, "ts": <ts>}``.
    - repeat: ``chat.update`` of the original message (the alert as it is now: count, newest
      error), then a reply in its thread saying what is new; returns the same thread_ref.
    - resolved: ``chat.update`` of the original message (now the resolved variant), then a
      short reply in its thread. chat.update is idempotent, so a retry after the reply
      failed repeats it harmlessly. If the original is gone, a new message is posted.
    """

    settings: SlackBotChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: AsyncWebClient | None = None
        #: The Silence buttons' lengths when the alert's first message carries action
        #: buttons (``[actions] enabled`` and this channel can receive clicks); else None.
        self.button_silences: tuple[float, ...] | None = None

    def _with_buttons(self, message: dict[str, Any], n: Notification) -> dict[str, Any]:
        if self.button_silences is None:
            return message
        from alerts.buttons import action_block

        block = action_block(n, self.button_silences)
        blocks = message.get("blocks")
        if block is not None and isinstance(blocks, list):
            # Above the context line, which stays last.
            at = len(blocks) - 1 if blocks and blocks[-1].get("type") == "context" else len(blocks)
            blocks.insert(at, block)
        return message

    def _web(self) -> AsyncWebClient:
        session = self._get_session()
        if self._client is None or self._client.session is not session:
            self._client = AsyncWebClient(
                token=self.settings.token.reveal(),
                base_url=self.settings.base_url,
                session=session,
                timeout=max(1, round(self.settings.timeout_s)),
                retry_handlers=[],
                logger=_sdk_log,
            )
        return self._client

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        what = f"Slack {method} (channel {self.name})"
        client = self._web()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                # chat.postMessage -> client.chat_postMessage(...), as slack-sdk users call it.
                response = await getattr(client, method.replace(".", "_"))(**kwargs)
        except SlackApiError as exc:
            resp = exc.response
            status = getattr(resp, "status_code", None) or getattr(resp, "status", 0)
            data = getattr(resp, "data", None)
            error = data.get("error") if isinstance(data, dict) else None
            headers = getattr(resp, "headers", None) or {}
            raise slack_delivery_error(what, status, error, headers) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _network_error(what, exc, self.settings.timeout_s) from None
        data = response.data
        return data if isinstance(data, dict) else {}

    async def _post(
        self, n: Notification, channel: str, thread_ts: str | None = None, *, part: str = "message"
    ) -> dict[str, Any]:
        message = self._decorate(self.renderer.render_slack(n, part=part, tz=self.settings.timezone))
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        elif part == "message":
            message = self._with_buttons(message, n)
        # Slack keeps message metadata with the message: it makes a notice traceable to its
        # outbox row (and a duplicate detectable) from Slack's side.
        message["metadata"] = {
            "event_type": "makewatch_alert",
            "event_payload": {
                "outbox_id": n.outbox_id,
                "fingerprint": str(n.alert.get("fingerprint", "")),
                "phase": n.phase,
            },
        }
        return await self._call("chat.postMessage", channel=channel, **message)

    async def send(self, n: Notification) -> dict[str, Any] | None:
        """Deliver ``n`` and return the alert's thread_ref. Raises DeliveryError."""
        ref = _thread_ref(n.thread_ref)
        if ref is not None and n.phase == "repeat":
            # The first message shows the alert as it is now (the count, the newest error);
            # the reply says what is new. Update first: it is idempotent, so a retry after a
            # failed reply repeats it harmlessly, and the reply is posted once.
            if not await self._update(n, ref, dataclasses.replace(n, phase="firing")):
                return await self._first(n)
            await self._post(n, ref["channel"], ref["ts"])
            return ref
        if ref is not None and n.phase == "resolved":
            if not await self._update(n, ref, n):
                return await self._first(n)
            await self._post(n, ref["channel"], ref["ts"], part="reply")
            return ref
        return await self._first(n)

    async def _update(self, n: Notification, ref: dict[str, str], shown: Notification) -> bool:
        """``chat.update`` of the alert's first message to show ``shown``; False when that
        message cannot be updated any more (deleted, too old): then a new one is posted."""
        try:
            await self._call(
                "chat.update",
                channel=ref["channel"],
                ts=ref["ts"],
                **self._with_buttons(
                    self._decorate(self.renderer.render_slack(shown, tz=self.settings.timezone)), shown
                ),
            )
        except SlackDeliveryError as exc:
            if exc.code not in _UPDATE_IMPOSSIBLE:
                raise
            log.warning(
                "channel %s: cannot update the original message (%s); posting a new one",
                self.name,
                exc.code,
            )
            return False
        return True

    async def _first(self, n: Notification) -> dict[str, Any]:
        data = await self._post(n, self.settings.channel)
        channel, ts = data.get("channel"), data.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            raise SlackDeliveryError(
                f"Slack chat.postMessage (channel {self.name}): answer without channel and ts",
                permanent=False,
            )
        return {"channel": channel, "ts": ts}

    async def verify(self) -> dict[str, Any]:
        """``auth.test``: who the token is (team, user, bot_id), for ``makewatch check``."""
        data = await self._call("auth.test")
        return {k: data.get(k) for k in ("team", "team_id", "user", "user_id", "bot_id")}


def _thread_ref(ref: dict[str, Any] | None) -> dict[str, str] | None:
    if not isinstance(ref, dict):
        return None
    channel, ts = ref.get("channel"), ref.get("ts")
    if isinstance(channel, str) and channel and isinstance(ts, str) and ts:
        return {"channel": channel, "ts": ts}
    return None
