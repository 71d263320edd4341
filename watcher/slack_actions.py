"""What a press of an alert's button does (issue 17), whatever brought it (Socket Mode or
HTTP: watcher.slack_interactions).

For one click: find the alert by the fingerprint in the button's value; decide who may act
from the config (``routes[].actors``: user ids, and user groups resolved with
``usergroups.users.list``); record the press in the ``actions`` table whatever the outcome;
act (acknowledge, silence, or the Make action through watcher.actions, at most once per
click: the dedup key is the click's ``action_ts``); then say what happened where people look:
a reply in the alert's thread ("Reactivated by @ana at 02:14 UTC: scenario 42 is now
active"), the original message updated to show it, and an ephemeral answer to a refused
user. A double click (two presses of the same action on the same alert within
:data:`DOUBLE_CLICK_S`) acts once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from alerts.buttons import ACTION_BLOCK_ID, ACTION_PREFIX, describe_silence, parse_action
from alerts.policy import Policy
from alerts.routing import route_actors

if TYPE_CHECKING:
    import aiohttp
    from slack_sdk.web.async_client import AsyncWebClient

    from alerts.channels import SlackBotChannel
    from watcher.clock import Clock
    from watcher.config import Settings
    from watcher.slack_interactions import Interaction
    from watcher.store import Store

log = logging.getLogger(__name__)

__all__ = ["DOUBLE_CLICK_S", "SlackActions"]

#: A second press of the same action on the same alert this soon after the first is the same
#: intent (a double click, two people at once): it is answered, not performed again.
DOUBLE_CLICK_S = 60.0
#: How long the members of a user group are trusted before being read again.
GROUP_TTL_S = 300.0
DONE_BLOCK_ID = "makewatch.done"

_VERBS = {
    "ack": "Acknowledged",
    "silence": "Silenced",
    "start": "Reactivated",
    "replay": "Replayed the failed run",
    "retry": "Retried the incomplete executions",
}
_ASKED = {
    "ack": "acknowledge",
    "silence": "silence",
    "start": "reactivate the scenario",
    "replay": "replay the failed run",
    "retry": "retry the incomplete executions",
}

_ALERT_COLUMNS = (
    "id", "fingerprint", "kind", "severity", "state", "org_id", "team_id", "scenario_id",
    "payload_json", "thread_ref_json", "acked_at", "acked_by",
)


@dataclass(frozen=True)
class Outcome:
    """What a click came to, for the thread reply and the tests."""

    action: str
    status: str  # done | already | refused | failed | not_allowed | duplicate | unknown_alert
    text: str
    action_id: int | None = None


class SlackActions:
    """The handler for :class:`watcher.slack_interactions.Interaction` clicks."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.session = session
        self.clock = clock
        self.policy = Policy.from_settings(settings)
        self.on_outcome = on_outcome
        self._clients: dict[str, AsyncWebClient] = {}
        self._groups: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}

    # -- Slack -------------------------------------------------------------------------

    def _bot(self, name: str) -> AsyncWebClient:
        from slack_sdk.web.async_client import AsyncWebClient

        client = self._clients.get(name)
        if client is None:
            channel: SlackBotChannel = self.settings.channels[name]  # type: ignore[assignment]
            client = AsyncWebClient(
                token=channel.token.reveal(), base_url=channel.base_url, session=self.session,
                timeout=max(1, round(channel.timeout_s)), retry_handlers=[],
            )
            self._clients[name] = client
        return client

    def _channel_of(self, alert: Mapping[str, Any], it: Interaction) -> str | None:
        """The configured ``slack_bot`` channel the clicked message belongs to: the one whose
        thread_ref for this alert is that message; else one posting to that Slack channel."""
        refs = json.loads(alert.get("thread_ref_json") or "{}")
        bots = {n: c for n, c in self.settings.channels.items() if getattr(c, "type", "") == "slack_bot"}
        for name, ref in refs.items():
            if name in bots and isinstance(ref, dict) and ref.get("ts") == it.message_ts:
                return name
        for name, c in bots.items():
            if c.channel == it.channel_id:  # type: ignore[union-attr]
                return name
        return None

    async def _members(self, channel: str, group: str) -> frozenset[str]:
        now = self.clock.time()
        cached = self._groups.get((channel, group))
        if cached is not None and now - cached[0] < GROUP_TTL_S:
            return cached[1]
        try:
            data = (await self._bot(channel).usergroups_users_list(usergroup=group)).data
        except Exception as exc:  # noqa: BLE001 - a group we cannot read grants nothing
            log.warning("channel %s: cannot read the members of user group %s (%s)", channel, group,
                        type(exc).__name__)
            return frozenset()
        users = data.get("users") if isinstance(data, dict) else None
        members = frozenset(u for u in users or () if isinstance(u, str))
        self._groups[(channel, group)] = (now, members)
        return members

    async def _allowed(self, channel: str, alert: Mapping[str, Any], user_id: str) -> bool:
        payload = json.loads(alert.get("payload_json") or "{}")
        labels = {
            "kind": alert["kind"], "severity": alert["severity"], "org_id": alert["org_id"],
            "org": payload.get("organization"), "team_id": alert["team_id"],
            "scenario_id": alert["scenario_id"], "scenario": payload.get("scenario_name"),
        }
        actors = route_actors(labels, self.policy, channel)
        if user_id in actors:
            return True
        for group in sorted(a for a in actors if a.startswith("S")):
            if user_id in await self._members(channel, group):
                return True
        return False

    async def _say(self, channel: str, it: Interaction, *, thread: str | None, ephemeral: str | None,
                   done_line: str | None, drop_ack: bool = False) -> None:
        """Thread reply, ephemeral answer and message update; each failure is logged only:
        the action itself is done and recorded."""
        bot = self._bot(channel)
        calls: list[tuple[str, dict[str, Any]]] = []
        if ephemeral and it.channel_id:
            calls.append(("chat_postEphemeral", {"channel": it.channel_id, "user": it.user_id, "text": ephemeral}))
        if thread and it.channel_id and it.message_ts:
            calls.append(("chat_postMessage", {"channel": it.channel_id, "thread_ts": it.message_ts, "text": thread}))
        message = it.payload.get("message") if isinstance(it.payload, dict) else None
        if done_line and it.channel_id and it.message_ts and isinstance(message, dict):
            blocks = _updated_blocks(message.get("blocks"), done_line, drop_ack=drop_ack)
            if blocks is not None:
                calls.append(("chat_update", {
                    "channel": it.channel_id, "ts": it.message_ts, "blocks": blocks,
                    "text": str(message.get("text") or "makewatch alert"),
                }))
        for method, kwargs in calls:
            try:
                await getattr(bot, method)(**kwargs)
            except Exception as exc:  # noqa: BLE001 - never let the reply undo the action
                log.warning("channel %s: Slack %s failed (%s)", channel, method.replace("_", ".", 1),
                            type(exc).__name__)

    # -- the click --------------------------------------------------------------------

    async def handle(self, it: Interaction) -> Outcome | None:
        """Act on one click; returns what it came to (None: not a makewatch button)."""
        parsed = parse_action(it.action_id, it.value)
        if parsed is None:
            if it.action_id.startswith(ACTION_PREFIX):
                log.warning("a makewatch button with a malformed value was pressed; ignored")
            return None
        action, seconds, value = parsed
        outcome = await self._handle(it, action, seconds, value)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    __call__ = handle

    async def _handle(self, it: Interaction, action: str, seconds: float | None, value: dict[str, Any]) -> Outcome:
        from watcher.actions import ActionRequest, record_local

        now = self.clock.time()
        alert = await self.store.read(lambda db: _alert_by_fingerprint(db, value["fp"]))
        who = f"<@{it.user_id}>"
        if alert is None:
            channel = self._channel_of({}, it)
            if channel is not None:
                await self._say(channel, it, thread=None, ephemeral="This alert is no longer known to makewatch.",
                                done_line=None)
            return Outcome(action, "unknown_alert", "alert unknown")
        channel = self._channel_of(alert, it)
        tz = ZoneInfo(getattr(self.settings.channels.get(channel or ""), "timezone", "UTC") or "UTC")
        at = datetime.fromtimestamp(now, tz=UTC).astimezone(tz).strftime("%H:%M %Z")
        dedup = f"slack:{_action_ts(it)}:{it.user_id}:{it.action_id}"
        base = ActionRequest(
            action, str(alert["org_id"] or ""), scenario_id=alert["scenario_id"], alert_id=alert["id"],
            actor=f"@{it.user_name or it.user_id}", actor_id=it.user_id, source=it.transport, dedup_key=dedup,
            execution_id=value.get("x") if action == "replay" else None,
            all_items=action == "retry",
            extra={"silence_s": seconds} if seconds else {},
        )
        if channel is None or not await self._allowed(channel, alert, it.user_id):
            rec = await record_local(self.store, base, now, status="not_allowed",
                                     message="not allowed to act on this alert", org_id=alert["org_id"])
            if channel is not None and not rec.duplicate:
                await self._say(
                    channel, it, done_line=None,
                    ephemeral=f"You are not allowed to {_ASKED[action]} on this alert. "
                    "Ask whoever runs makewatch to add you to the route's actors.",
                    thread=f"{who} tried to {_ASKED[action]} at {at}: not allowed.",
                )
            return Outcome(action, "not_allowed", "not allowed", rec.id)

        recent = await self.store.read(lambda db: _recent_same(db, alert["id"], action, now - DOUBLE_CLICK_S))
        if recent is not None and recent["dedup_key"] != dedup:
            await self._say(channel, it, thread=None, done_line=None,
                            ephemeral=f"Already done by {recent['actor']} a moment ago ({recent['status']}).")
            return Outcome(action, "duplicate", "double click", recent["id"])

        if action in ("ack", "silence"):
            return await self._local(channel, it, base, alert, seconds, now, who, at)
        return await self._make(channel, it, base, who, at)

    async def _local(self, channel: str, it: Interaction, req: Any, alert: Mapping[str, Any],
                     seconds: float | None, now: float, who: str, at: str) -> Outcome:
        from watcher.acks import acknowledge
        from watcher.actions import record_local
        from watcher.silences import add_silence

        if req.action == "ack":
            ok = await acknowledge(self.store, alert["id"], req.actor, now)
            status, message = ("done", "acknowledged") if ok else ("refused", "already acknowledged or resolved")
        else:
            assert seconds is not None
            matchers: dict[str, Any] = {"kind": alert["kind"]}
            if alert["scenario_id"] is not None:
                matchers["scenario_id"] = alert["scenario_id"]
            else:
                matchers["org"] = str(alert["org_id"])
            await asyncio.to_thread(
                add_silence, self.store, now=now, duration_s=seconds, created_by=req.actor,
                reason=f"silenced from Slack by {req.actor}", **matchers,
            )
            status, message = "done", f"silenced for {describe_silence(seconds)}"
        rec = await record_local(self.store, req, now, status=status, message=message, org_id=alert["org_id"])
        if rec.duplicate:
            return Outcome(req.action, "duplicate", "redelivered", rec.id)
        if status == "done":
            line = (f"✅ Acknowledged by {who} {at}: no more repeats until it resolves"
                    if req.action == "ack" else f"🔕 Silenced for {describe_silence(seconds or 0)} by {who} {at}")
            await self._say(channel, it, thread=line, ephemeral=None, done_line=line, drop_ack=True)
        else:
            await self._say(channel, it, thread=None, done_line=None, ephemeral=f"Not done: {message}.")
        return Outcome(req.action, status, message, rec.id)

    async def _make(self, channel: str, it: Interaction, req: Any, who: str, at: str) -> Outcome:
        from watcher.actions import ActionsDisabled, perform

        try:
            rec = await perform(self.settings, self.store, req, session=self.session, clock=self.clock)
        except ActionsDisabled:
            await self._say(channel, it, thread=None, done_line=None,
                            ephemeral="Actions are off in makewatch's config ([actions] enabled = false).")
            return Outcome(req.action, "refused", "actions off")
        if rec.duplicate:
            return Outcome(req.action, "duplicate", "redelivered", rec.id)
        if rec.ok:
            line = f"✅ {_VERBS[req.action]} by {who} {at}: {rec.message}"
            if req.action == "start":
                from watcher.action_confirm import start_awaiting

                line += " (the next poll confirms whether it runs)"
                slack = {"name": channel, "channel_id": it.channel_id, "ts": it.message_ts}
                await self.store.write(lambda db: start_awaiting(db, rec.id, slack))
            await self._say(channel, it, thread=line, ephemeral=None, done_line=line)
        else:
            line = f"⚠️ {who} asked to {_ASKED[req.action]} at {at}: {rec.message}"
            await self._say(channel, it, thread=line, ephemeral=None, done_line=None)
        return Outcome(req.action, rec.status, rec.message, rec.id)


def _action_ts(it: Interaction) -> str:
    actions = it.payload.get("actions") if isinstance(it.payload, dict) else None
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        ts = actions[0].get("action_ts")
        if isinstance(ts, str) and ts:
            return ts
    return it.envelope_id or f"{time.time():.6f}"


def _alert_by_fingerprint(db: Any, fingerprint: str) -> dict[str, Any] | None:
    row = db.execute(
        f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts WHERE fingerprint = ?", [fingerprint]
    ).fetchone()
    return dict(zip(_ALERT_COLUMNS, row, strict=True)) if row else None


def _recent_same(db: Any, alert_id: int, action: str, since: float) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT id, dedup_key, actor, status FROM actions WHERE alert_id = ? AND action = ? "
        "AND created_at >= ? AND status IN ('pending', 'done', 'already') ORDER BY id DESC LIMIT 1",
        [alert_id, action, since],
    ).fetchone()
    return dict(zip(("id", "dedup_key", "actor", "status"), row, strict=True)) if row else None


def _updated_blocks(blocks: Any, line: str, *, drop_ack: bool) -> list[dict[str, Any]] | None:
    """The message's blocks with ``line`` shown under it (replacing an earlier one), and
    without the Acknowledge button once acknowledged (or silenced)."""
    if not isinstance(blocks, list):
        return None
    out: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict) or block.get("block_id") == DONE_BLOCK_ID:
            continue
        if drop_ack and block.get("block_id") == ACTION_BLOCK_ID:
            elements = [e for e in block.get("elements") or ()
                        if isinstance(e, dict) and e.get("action_id") != f"{ACTION_PREFIX}ack"]
            block = {**block, "elements": elements}
            if not elements:
                continue
        out.append(block)
    out.append({"type": "context", "block_id": DONE_BLOCK_ID,
                "elements": [{"type": "mrkdwn", "text": line[:2900]}]})
    return out
