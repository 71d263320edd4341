"""Button clicks in: slack-sdk's real Socket Mode client and the HTTP route, against the Slack
stand-in on 127.0.0.1. The watchdog runs on an injected clock; nothing waits on real time
except for events, each with a generous timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from watcher.slack_interactions import (
    Interaction,
    SlackInteractionsError,
    SocketModeReceiver,
    http_interactions_route,
)
from watcher.testing.slack_standin import (
    ACK_DEADLINE_S,
    DEFAULT_APP_TOKEN,
    DEFAULT_TOKEN,
    SlackState,
    create_slack_app,
)

WAIT_S = 15.0  # bounds a test on a loaded machine; never what is asserted
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_790_000_000.0
# Long enough that slack-sdk's own pings, heartbeat and stale check never act during a test:
# the watchdog is what is under test (and a test must not race the sdk's monitor).
QUIET_PING_S = 3600.0
BUTTONS = [
    {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "*Sync* failed"}},
    {
        "type": "actions",
        "block_id": "alert-actions",
        "elements": [
            {"type": "button", "action_id": "ack", "text": {"type": "plain_text", "text": "Acknowledge"}, "value": "alert:42"},
            {"type": "button", "action_id": "silence", "text": {"type": "plain_text", "text": "Silence 1 h"}, "value": "alert:42"},
        ],
    },
]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Clicks:
    """The handler: records each interaction, lets a test await the next one."""

    def __init__(self, fail: bool = False) -> None:
        self.got: list[Interaction] = []
        self.fail = fail
        self._queue: asyncio.Queue[Interaction] = asyncio.Queue()

    async def __call__(self, interaction: Interaction) -> None:
        self.got.append(interaction)
        self._queue.put_nowait(interaction)
        if self.fail:
            raise RuntimeError(f"boom with {DEFAULT_APP_TOKEN} and {interaction.response_url}")

    async def next(self) -> Interaction:
        return await asyncio.wait_for(self._queue.get(), WAIT_S)


@dataclass
class Standin:
    state: SlackState
    url: str  # http://127.0.0.1:<port>

    def web(self, token: str = DEFAULT_TOKEN) -> AsyncWebClient:
        return AsyncWebClient(token=token, base_url=self.url + "/api/")


@pytest.fixture
async def slack(aiohttp_server) -> Standin:
    state = SlackState(usergroups={"S0ONCALL": ["U0ALICE", "U0BOB"]})
    server = await aiohttp_server(create_slack_app(state))
    url = str(server.make_url("")).rstrip("/")
    state.url = url
    return Standin(state, url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def receivers() -> AsyncIterator[list[SocketModeReceiver]]:
    started: list[SocketModeReceiver] = []
    yield started
    for r in started:
        await r.stop()


@pytest.fixture
def start(
    slack: Standin, clock: FakeClock, receivers: list[SocketModeReceiver]
) -> Callable[..., Awaitable[SocketModeReceiver]]:
    async def start(handler: Any, **kw: Any) -> SocketModeReceiver:
        options: dict[str, Any] = {
            "app_token": DEFAULT_APP_TOKEN,
            "base_url": slack.url + "/api/",
            "clock": clock,
            "ping_interval_s": QUIET_PING_S,
            "retry_delay_s": 0.01,
            **kw,
        }
        receiver = SocketModeReceiver(handler=handler, **options)
        receivers.append(receiver)
        await receiver.start()
        return receiver

    return start


async def alert_message(slack: Standin) -> str:
    answer = await slack.web().chat_postMessage(channel="#alerts", text="Sync failed", blocks=BUTTONS)
    return answer["ts"]


async def ready(slack: Standin, n: int = 1) -> None:
    """Connection ``n`` is open and the client's first ping was answered: whatever the stand-in
    sends next arrives after that pong, so an ack proves the client saw everything before it."""
    conn = await slack.state.wait_connections(n, WAIT_S)
    await slack.state.wait_for(lambda: conn.pings >= 1, WAIT_S, "first ping")


# --- Socket Mode: clicks and acks --------------------------------------------------------


async def test_a_click_reaches_the_handler_with_its_fields_and_is_acked_within_three_seconds(
    slack: Standin, start
):
    ts = await alert_message(slack)
    clicks = Clicks()
    await start(clicks)
    await ready(slack)

    envelope = await slack.state.click(
        user_id="U0ALICE", action_id="ack", value="alert:42", message_ts=ts
    )

    assert await envelope.wait_ack(WAIT_S) < ACK_DEADLINE_S
    got = await clicks.next()
    assert (got.envelope_id, got.retry_attempt, got.transport) == (envelope.envelope_id, 0, "socket")
    assert (got.user_id, got.user_name, got.team_id) == ("U0ALICE", "alice", "T0STANDIN")
    assert (got.channel_id, got.message_ts) == ("C0ALERTS", ts)
    assert (got.action_id, got.value) == ("ack", "alert:42")
    assert got.response_url and got.response_url.startswith(slack.url + "/actions/T0STANDIN/")
    assert got.payload["message"]["blocks"] == BUTTONS  # the original message, as recorded
    assert got.payload["actions"][0]["block_id"] == "alert-actions"
    assert got.payload["actions"][0]["text"]["text"] == "Acknowledge"
    assert slack.state.acks == [{"envelope_id": envelope.envelope_id}]


async def test_the_ack_does_not_wait_for_a_slow_handler(slack: Standin, start):
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(_: Interaction) -> None:
        started.set()
        await release.wait()

    await start(slow)
    await ready(slack)
    envelope = await slack.state.click(user_id="U0ALICE", action_id="ack")

    await envelope.wait_ack(WAIT_S)
    await asyncio.wait_for(started.wait(), WAIT_S)
    assert not release.is_set()  # acked while the handler still runs
    release.set()


async def test_a_redelivered_envelope_is_acked_again_but_not_handled_twice(slack: Standin, start):
    clicks = Clicks()
    receiver = await start(clicks)
    await ready(slack)

    first = await slack.state.click(user_id="U0BOB", action_id="silence", value="alert:42")
    await first.wait_ack(WAIT_S)
    again = await slack.state.redeliver(first)
    await again.wait_ack(WAIT_S)
    other = await slack.state.click(user_id="U0BOB", action_id="ack", value="alert:42")
    await other.wait_ack(WAIT_S)

    assert [(await clicks.next()).action_id, (await clicks.next()).action_id] == ["silence", "ack"]
    assert again.envelope_id == first.envelope_id and again.retry_attempt == 1
    assert len(clicks.got) == 2 and receiver.duplicates == 1


async def test_click_with_redelivery_sends_the_envelope_twice(slack: Standin, start):
    clicks = Clicks()
    await start(clicks)
    await ready(slack)

    again = await slack.state.click(user_id="U0BOB", action_id="ack", redelivery=True)
    await again.wait_ack(WAIT_S)

    assert [e.retry_attempt for e in slack.state.envelopes] == [0, 1]
    assert (await clicks.next()).retry_attempt == 0
    assert len(clicks.got) == 1


async def test_other_envelope_types_are_acked_and_ignored(slack: Standin, start):
    clicks = Clicks()
    await start(clicks)
    await ready(slack)

    event = await slack.state.send_envelope("events_api", {"event": {"type": "app_mention"}})
    await event.wait_ack(WAIT_S)
    modal = await slack.state.send_envelope("interactive", {"type": "view_submission", "view": {}})
    await modal.wait_ack(WAIT_S)
    click = await slack.state.click(user_id="U0ALICE", action_id="ack")
    await click.wait_ack(WAIT_S)

    assert (await clicks.next()).envelope_id == click.envelope_id
    assert len(clicks.got) == 1


async def test_a_failing_handler_is_logged_without_secrets_and_the_next_click_still_arrives(
    slack: Standin, start, caplog
):
    caplog.set_level(logging.DEBUG)
    clicks = Clicks(fail=True)
    await start(clicks)
    await ready(slack)

    for action in ("ack", "silence"):
        await (await slack.state.click(user_id="U0ALICE", action_id=action)).wait_ack(WAIT_S)
        await clicks.next()  # the handler raised, and it was logged, in the same step

    assert [c.action_id for c in clicks.got] == ["ack", "silence"]
    failures = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert failures and "RuntimeError" in failures[0] and "action ack" in failures[0]
    assert all(DEFAULT_APP_TOKEN not in r.getMessage() for r in caplog.records)
    assert all("/actions/" not in m for m in failures)


async def test_a_bot_token_on_connections_open_fails_clearly(slack: Standin, start, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SlackInteractionsError) as refused:
        await start(Clicks(), app_token=DEFAULT_TOKEN)

    assert not refused.value.retryable
    assert "not_allowed_token_type" in str(refused.value) and "xapp-" in str(refused.value)
    assert DEFAULT_TOKEN not in str(refused.value)
    assert all(DEFAULT_TOKEN not in r.getMessage() for r in caplog.records)
    assert len(slack.state.calls("apps.connections.open")) == 1  # not retried
    assert slack.state.connections == []


async def test_an_app_token_is_refused_by_the_web_api_like_slack_does(slack: Standin):
    with pytest.raises(SlackApiError) as refused:
        await slack.web(DEFAULT_APP_TOKEN).chat_postMessage(channel="#alerts", text="hi")
    assert refused.value.response["error"] == "not_allowed_token_type"


# --- Socket Mode: the watchdog and faults --------------------------------------------


async def test_the_watchdog_replaces_a_silent_connection_and_the_next_click_arrives(
    slack: Standin, start, clock: FakeClock
):
    clicks = Clicks()
    receiver = await start(clicks, stale_after_s=120, check_every_s=3600)
    await ready(slack)
    await (await slack.state.click(user_id="U0ALICE", action_id="ack")).wait_ack(WAIT_S)
    await clicks.next()

    slack.state.go_silent()
    clock.advance(119)
    assert await receiver.check_staleness() is None  # not yet
    clock.advance(2)
    lost = await slack.state.click(user_id="U0ALICE", action_id="silence")  # swallowed
    reason = await receiver.check_staleness()

    assert reason == "silent for 121 s"
    assert receiver.reconnects == 1
    await ready(slack, 2)
    after = await slack.state.click(user_id="U0BOB", action_id="ack", value="again")
    await after.wait_ack(WAIT_S)
    assert (await clicks.next()).value == "again"
    assert not lost.delivered and len(clicks.got) == 2
    assert receiver.health() == {"connected": True, "last_seen_age_s": 0.0, "reconnects": 1}
    assert len(slack.state.calls("apps.connections.open")) == 2


async def test_an_abrupt_drop_is_noticed_and_reconnected_without_waiting_for_the_check(
    slack: Standin, start
):
    clicks = Clicks()
    # check_every_s an hour: only the socket's own close report can wake the watchdog.
    receiver = await start(clicks, check_every_s=3600)
    await ready(slack)

    await slack.state.drop_connections()
    await ready(slack, 2)
    envelope = await slack.state.click(user_id="U0ALICE", action_id="ack", value="after-drop")
    await envelope.wait_ack(WAIT_S)

    assert (await clicks.next()).value == "after-drop"
    assert receiver.reconnects == 1 and receiver.connected
    assert slack.state.connections[0].closed


async def test_refused_connections_open_is_retried_at_start(slack: Standin, start):
    slack.state.refuse_connections_open(2)
    clicks = Clicks()

    receiver = await start(clicks)
    await ready(slack)
    await (await slack.state.click(user_id="U0ALICE", action_id="ack")).wait_ack(WAIT_S)

    assert [r.status for r in slack.state.calls("apps.connections.open")] == [503, 503, 200]
    assert (await clicks.next()).action_id == "ack"
    assert receiver.reconnects == 0


async def test_refused_connections_open_is_retried_when_reconnecting(slack: Standin, start):
    clicks = Clicks()
    receiver = await start(clicks, check_every_s=3600)
    await ready(slack)
    slack.state.refuse_connections_open(3)

    await slack.state.drop_connections()
    await ready(slack, 2)
    await (await slack.state.click(user_id="U0ALICE", action_id="ack")).wait_ack(WAIT_S)

    assert [r.status for r in slack.state.calls("apps.connections.open")] == [200, 503, 503, 503, 200]
    assert (await clicks.next()).action_id == "ack"
    assert receiver.reconnects == 1


async def test_slacks_disconnect_message_is_followed_by_a_new_connection(slack: Standin, start):
    clicks = Clicks()
    receiver = await start(clicks, check_every_s=3600)
    await ready(slack)

    await slack.state.send_disconnect("refresh_requested")
    await ready(slack, 2)
    await (await slack.state.click(user_id="U0ALICE", action_id="ack")).wait_ack(WAIT_S)

    assert (await clicks.next()).action_id == "ack"
    assert receiver.reconnects == 0  # slack-sdk's own reconnect, not the watchdog's


async def test_health_says_how_long_since_anything_arrived(slack: Standin, start, clock: FakeClock):
    receiver = await start(Clicks(), check_every_s=3600)
    await ready(slack)
    await (await slack.state.click(user_id="U0ALICE", action_id="ack")).wait_ack(WAIT_S)

    clock.advance(30)

    assert receiver.health() == {"connected": True, "last_seen_age_s": 30.0, "reconnects": 0}
    await receiver.stop()
    assert receiver.health()["connected"] is False
    assert await receiver.check_staleness() is None  # stopped: nothing to do


# --- HTTP (Request URL) -------------------------------------------------------------


@pytest.fixture
async def http_app(aiohttp_server, slack: Standin) -> tuple[str, Clicks]:
    clicks = Clicks()
    app = web.Application()
    app.router.add_routes(
        [
            http_interactions_route(
                path="/slack/interactions",
                signing_secret=SIGNING_SECRET,
                handler=clicks,
                clock=lambda: NOW,
            )
        ]
    )
    server = await aiohttp_server(app)
    return str(server.make_url("/slack/interactions")), clicks


async def test_a_validly_signed_http_interaction_reaches_the_handler(slack: Standin, http_app):
    url, clicks = http_app
    ts = await alert_message(slack)
    payload = slack.state.block_actions_payload(user_id="U0BOB", action_id="silence", value="alert:42", message_ts=ts)

    status, body = await slack.state.post_interaction(url, payload, SIGNING_SECRET, timestamp=NOW - 10)

    assert (status, body) == (200, "")
    got = await clicks.next()
    assert (got.transport, got.envelope_id, got.user_id, got.action_id) == ("http", None, "U0BOB", "silence")
    assert (got.channel_id, got.message_ts, got.value) == ("C0ALERTS", ts, "alert:42")


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("forged signature", {"forge": True, "timestamp": NOW}),
        ("stale timestamp", {"timestamp": NOW - 301}),
        ("from the future", {"timestamp": NOW + 301}),
    ],
)
async def test_an_http_interaction_that_fails_verification_is_401_and_not_handled(
    slack: Standin, http_app, case: str, options: dict, caplog
):
    caplog.set_level(logging.DEBUG)
    url, clicks = http_app
    payload = slack.state.block_actions_payload(user_id="U0BOB", action_id="ack")
    _, headers = slack.state.interaction_request(payload, SIGNING_SECRET, **options)

    status, _ = await slack.state.post_interaction(url, payload, SIGNING_SECRET, **options)

    assert status == 401, case
    assert clicks.got == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SIGNING_SECRET not in logged and headers["X-Slack-Signature"] not in logged


async def test_an_http_interaction_without_signature_headers_is_401(http_app):
    url, clicks = http_app
    async with aiohttp.ClientSession() as s, s.post(url, data={"payload": "{}"}) as resp:
        assert resp.status == 401
    assert clicks.got == []


# --- the stand-in's Web API methods for the handlers -----------------------------------


async def test_chat_update_replaces_the_recorded_message(slack: Standin):
    ts = await alert_message(slack)

    answer = await slack.web().chat_update(channel="C0ALERTS", ts=ts, text="Acknowledged by alice", blocks=[])

    assert (answer["channel"], answer["ts"]) == ("C0ALERTS", ts)
    message = slack.state.find("C0ALERTS", ts)
    assert message.text == "Acknowledged by alice" and message.edits[0]["blocks"] == BUTTONS


async def test_a_thread_reply_is_recorded_under_its_parent_with_a_ts_and_channel(slack: Standin):
    ts = await alert_message(slack)

    answer = await slack.web().chat_postMessage(channel="C0ALERTS", thread_ts=ts, text="alice acknowledged")

    [reply] = slack.state.replies(ts)
    assert (answer["channel"], answer["ts"]) == ("C0ALERTS", reply.ts) and reply.ts != ts
    assert reply.text == "alice acknowledged"


async def test_post_ephemeral_is_recorded_for_its_user(slack: Standin):
    answer = await slack.web().chat_postEphemeral(channel="C0ALERTS", user="U0BOB", text="Only on-call can silence")

    assert answer["ok"] and answer["message_ts"]
    [note] = slack.state.ephemerals_for("U0BOB")
    assert (note.channel, note.text, note.via) == ("C0ALERTS", "Only on-call can silence", "chat.postEphemeral")
    with pytest.raises(SlackApiError) as refused:
        await slack.web().chat_postEphemeral(channel="C0ALERTS", user="U0NOBODY", text="x")
    assert refused.value.response["error"] == "user_not_in_channel"


async def test_usergroups_users_list_and_users_info_answer_from_the_state(slack: Standin):
    web_client = slack.web()
    slack.state.usergroups["S0EMPTY"] = []

    members = await web_client.usergroups_users_list(usergroup="S0ONCALL")
    empty = await web_client.usergroups_users_list(usergroup="S0EMPTY")
    user = await web_client.users_info(user="U0ALICE")

    assert members["users"] == ["U0ALICE", "U0BOB"] and empty["users"] == []
    assert user["user"]["name"] == "alice" and user["user"]["id"] == "U0ALICE"
    for call, error in (
        (web_client.usergroups_users_list(usergroup="S0NONE"), "no_such_subteam"),
        (web_client.users_info(user="U0NONE"), "user_not_found"),
    ):
        with pytest.raises(SlackApiError) as refused:
            await call
        assert refused.value.response["error"] == error
    assert [r.method for r in slack.state.requests][-4:] == [
        "usergroups.users.list",
        "users.info",
        "usergroups.users.list",
        "users.info",
    ]


async def test_the_response_url_records_ephemeral_answers_and_replaces_the_original(slack: Standin):
    ts = await alert_message(slack)
    payload = slack.state.block_actions_payload(user_id="U0ALICE", action_id="ack", message_ts=ts)
    url = payload["response_url"]

    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"response_type": "ephemeral", "text": "Acknowledged"}) as r1:
            assert r1.status == 200
        async with s.post(url, json={"replace_original": True, "text": "Acked by alice", "blocks": []}) as r2:
            assert r2.status == 200
        async with s.post(slack.url + "/actions/T0STANDIN/9/unknown", json={"text": "x"}) as r3:
            assert r3.status == 404

    assert [r.body.get("text") for r in slack.state.responses] == ["Acknowledged", "Acked by alice", "x"]
    assert slack.state.responses[0].user == "U0ALICE" and slack.state.responses[0].message_ts == ts
    [note] = slack.state.ephemerals_for("U0ALICE")
    assert (note.text, note.via) == ("Acknowledged", "response_url")
    assert slack.state.find("C0ALERTS", ts).text == "Acked by alice"
