"""Slack notifiers against the Slack stand-in on 127.0.0.1, through slack-sdk itself."""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import TypeAdapter, ValidationError

from alerts.channels import (
    ChannelSettings,
    SlackBotChannel,
    SlackWebhookChannel,
    channel_settings_keys,
)
from alerts.notify import (
    DeliveryError,
    Notification,
    Notifier,
    build_notifier,
    classify_http_status,
)
from alerts.notify.base import parse_retry_after
from alerts.notify.slack import SlackBotNotifier, SlackWebhookNotifier
from alerts.render import Renderer, sample_notification
from watcher.testing import DEFAULT_TOKEN, SlackState, create_slack_app

WEBHOOK_PATH = "T0000/B0000/s3cr3tW3bh00kP4th"
CHANNELS: Any = TypeAdapter(ChannelSettings)


@dataclass
class Standin:
    state: SlackState
    url: str  # http://127.0.0.1:<port>/


@pytest.fixture
async def slack(aiohttp_server) -> Standin:
    state = SlackState()
    server = await aiohttp_server(create_slack_app(state))
    return Standin(state, str(server.make_url("/")))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def bot_settings(base_url: str, token: str = DEFAULT_TOKEN, **extra: Any) -> SlackBotChannel:
    return CHANNELS.validate_python(
        {
            "type": "slack_bot",
            "token_env": "SLACK_BOT_TOKEN",
            "channel": "#alerts",
            "base_url": base_url,
            **extra,
        },
        context={"env": {"SLACK_BOT_TOKEN": token}},
    )


def webhook_settings(url: str, **extra: Any) -> SlackWebhookChannel:
    return CHANNELS.validate_python(
        {"type": "slack_webhook", "webhook_url_env": "SLACK_WEBHOOK", **extra},
        context={"env": {"SLACK_WEBHOOK": url}},
    )


@pytest.fixture
def bot(slack: Standin, session: aiohttp.ClientSession, renderer: Renderer) -> Notifier:
    return build_notifier(
        "ops", bot_settings(slack.url + "api/"), session=session, renderer=renderer
    )


@pytest.fixture
def webhook(slack: Standin, session: aiohttp.ClientSession, renderer: Renderer) -> Notifier:
    settings = webhook_settings(slack.url + "webhook/" + WEBHOOK_PATH)
    return build_notifier("ops-hook", settings, session=session, renderer=renderer)


def notice(phase: str = "firing", thread_ref: dict | None = None, **payload: Any) -> Notification:
    base = sample_notification("execution_error", "slack", phase=phase)
    alert = {**base.alert, "payload": {**base.alert["payload"], **payload}}
    return dataclasses.replace(base, alert=alert, thread_ref=thread_ref)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the bot: post, thread, update ----------------------------------------------------------


async def test_the_bot_posts_a_first_notice_as_a_new_message(bot: Notifier, slack: Standin):
    ref = await bot.send(notice())

    [message] = slack.state.messages
    assert ref == {"channel": "C0ALERTS", "ts": message.ts}  # the id, not "#alerts"
    assert message.thread_ts is None
    assert message.text.startswith("🔴 Sync HubSpot contacts → Google Sheets failed")
    assert message.metadata["event_payload"]["outbox_id"] == 42
    assert slack.state.requests[0].headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}"


async def test_the_bot_replies_in_the_thread_for_a_repeat(bot: Notifier, slack: Standin):
    ref = await bot.send(notice())

    again = await bot.send(notice("repeat", thread_ref=ref))

    assert again == ref
    [reply] = slack.state.replies(ref["ts"])
    assert reply.channel == "C0ALERTS"
    assert reply.text.startswith("🔴 Still happening: Sync HubSpot") and "failed again, 3 more" in reply.text


async def test_the_bot_marks_the_original_resolved_and_replies_in_its_thread(
    bot: Notifier, slack: Standin
):
    ref = await bot.send(notice())

    after = await bot.send(notice("resolved", thread_ref=ref))

    assert after == ref
    original = slack.state.find("C0ALERTS", ref["ts"])
    assert original.edits and original.text.startswith("✅ Resolved: Sync HubSpot contacts → Google Sheets ran fine again")
    [reply] = slack.state.replies(ref["ts"])
    assert "ran fine again after failing 4 times" in reply.all_text()
    assert [r.method for r in slack.state.requests] == [
        "chat.postMessage",
        "chat.update",
        "chat.postMessage",
    ]


async def test_a_resolution_whose_original_is_gone_is_posted_as_a_new_message(
    bot: Notifier, slack: Standin
):
    ref = await bot.send(notice())
    slack.state.messages.clear()  # someone deleted it

    after = await bot.send(notice("resolved", thread_ref=ref))

    [message] = slack.state.messages
    assert after == {"channel": "C0ALERTS", "ts": message.ts} != ref
    assert message.thread_ts is None and message.text.startswith("✅ Resolved")


async def test_a_repeat_without_a_thread_ref_starts_a_new_thread(bot: Notifier, slack: Standin):
    ref = await bot.send(notice("repeat", thread_ref=None))

    [message] = slack.state.messages
    assert ref == {"channel": "C0ALERTS", "ts": message.ts} and message.thread_ts is None


async def test_in_a_session_each_send_returns_with_slacks_answer(bot: Notifier, slack: Standin):
    async with bot.session() as s:
        ref = await s.send(notice())
        [message] = slack.state.messages  # posted and answered: the caller may record it now
        await s.send(notice("repeat", thread_ref=ref))

    assert ref == {"channel": "C0ALERTS", "ts": message.ts}
    assert [m.thread_ts for m in slack.state.messages] == [None, message.ts]


async def test_the_bot_checks_its_token_with_auth_test(bot: SlackBotNotifier):
    assert (await bot.verify())["bot_id"] == "B0BOT"


# --- the webhook ----------------------------------------------------------------------------


async def test_the_webhook_posts_every_phase_as_a_new_message(
    slack: Standin, session: aiohttp.ClientSession, renderer: Renderer
):
    settings = webhook_settings(
        slack.url + "webhook/" + WEBHOOK_PATH, username="makewatch", icon_emoji=":rotating_light:"
    )
    hook = build_notifier("ops-hook", settings, session=session, renderer=renderer)

    refs = [await hook.send(notice(phase)) for phase in ("firing", "repeat", "resolved")]

    assert refs == [None, None, None]
    assert [m.webhook for m in slack.state.messages] == [WEBHOOK_PATH] * 3
    assert all(m.thread_ts is None for m in slack.state.messages)
    assert slack.state.messages[2].text.startswith("✅ Resolved")
    assert slack.state.messages[0].username == "makewatch"
    assert slack.state.messages[0].icon_emoji == ":rotating_light:"


# --- escaping and limits, as Slack receives them ------------------------------------------------


@pytest.mark.parametrize("which", ["bot", "webhook"])
async def test_an_evil_scenario_name_pings_nobody_and_links_nowhere(
    which: str, bot: Notifier, webhook: Notifier, slack: Standin
):
    notifier = bot if which == "bot" else webhook
    n = notice(
        scenario_name="<!channel> <https://evil.example|click here>",
        organization="<!here> & co",
        error_message="<@U0ADMIN> please <https://evil.example|log in>",
    )

    await notifier.send(n)

    [message] = slack.state.messages
    text = message.all_text()
    assert "&lt;!channel&gt; &lt;https://evil.example|click here&gt;" in text
    assert "&lt;!here&gt; &amp; co" in text
    # Outside plain_text headers, no "<" survives: no mention, no link.
    mrkdwn = text.replace(message.blocks[0]["text"]["text"], "")
    assert "<" not in mrkdwn and ">" not in mrkdwn.replace("&gt;", "")
    assert all(url.startswith("https://eu1.make.com/") for url in message.urls())


async def test_a_10_kb_error_message_is_cut_and_slack_accepts_it(bot: Notifier, slack: Standin):
    await bot.send(notice(error_message="x" * 10_000, scenario_name="S" * 300))

    [message] = slack.state.messages  # the stand-in refuses what is over Slack's limits
    assert "…" in message.all_text()
    assert "x" * 2600 in message.all_text() and "x" * 3000 not in message.all_text()


# --- error mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "permanent", "retry_after_s"),
    [
        ({"error": "channel_not_found"}, True, None),
        ({"error": "invalid_auth"}, True, None),
        ({"error": "not_authed"}, True, None),
        ({"error": "account_inactive"}, True, None),
        ({"error": "token_revoked"}, True, None),
        ({"error": "no_permission"}, True, None),
        ({"error": "is_archived"}, True, None),
        ({"error": "a_code_slack_invents_tomorrow"}, True, None),
        ({"error": "internal_error"}, False, None),
        ({"status": 429, "retry_after": 7}, False, 7.0),
        ({"status": 500}, False, None),
        ({"status": 503}, False, None),
        ({"status": 404, "error": "unknown_method"}, True, None),
    ],
)
async def test_the_bot_maps_slack_errors(
    bot: Notifier, slack: Standin, failure: dict, permanent: bool, retry_after_s: float | None
):
    slack.state.fail_next(**failure)

    with pytest.raises(DeliveryError) as info:
        await bot.send(notice())

    assert info.value.permanent is permanent
    assert info.value.retry_after_s == retry_after_s
    assert len(slack.state.requests) == 1  # slack-sdk did not retry by itself


@pytest.mark.parametrize(
    ("failure", "permanent", "retry_after_s"),
    [
        ({"error": "no_service"}, True, None),  # 404
        ({"error": "invalid_token"}, True, None),  # 403
        ({"error": "channel_is_archived"}, True, None),  # 410
        ({"error": "invalid_payload"}, True, None),  # 400
        ({"error": "action_prohibited"}, True, None),  # 403
        ({"status": 429, "retry_after": 3}, False, 3.0),
        ({"status": 500, "error": "rollup_error"}, False, None),
        ({"status": 503}, False, None),
    ],
)
async def test_the_webhook_maps_slack_errors(
    webhook: Notifier, slack: Standin, failure: dict, permanent: bool, retry_after_s: float | None
):
    slack.state.fail_next(**failure)

    with pytest.raises(DeliveryError) as info:
        await webhook.send(notice())

    assert info.value.permanent is permanent
    assert info.value.retry_after_s == retry_after_s
    assert len(slack.state.requests) == 1


async def test_a_wrong_token_and_an_unknown_channel_are_permanent(
    slack: Standin, session: aiohttp.ClientSession, renderer: Renderer
):
    wrong = build_notifier(
        "a",
        bot_settings(slack.url + "api/", token="xoxb-wrong"),
        session=session,
        renderer=renderer,
    )
    lost = build_notifier(
        "b",
        bot_settings(slack.url + "api/", channel="#nowhere"),
        session=session,
        renderer=renderer,
    )

    with pytest.raises(DeliveryError, match="invalid_auth") as bad_token:
        await wrong.send(notice())
    with pytest.raises(DeliveryError, match="channel_not_found") as bad_channel:
        await lost.send(notice())

    assert bad_token.value.permanent and bad_channel.value.permanent


async def test_an_outage_is_retryable(bot: Notifier, slack: Standin):
    slack.state.down = True

    with pytest.raises(DeliveryError) as info:
        await bot.send(notice())

    assert info.value.retryable and "503" in str(info.value)


@pytest.mark.parametrize("which", ["bot", "webhook"])
async def test_an_unreachable_slack_is_retryable(
    which: str, session: aiohttp.ClientSession, renderer: Renderer
):
    url = f"http://127.0.0.1:{free_port()}/"
    settings = bot_settings(url + "api/") if which == "bot" else webhook_settings(url + "webhook/x")
    notifier = build_notifier("ops", settings, session=session, renderer=renderer)

    with pytest.raises(DeliveryError, match="network error") as info:
        await notifier.send(notice())

    assert info.value.retryable


async def test_a_slow_slack_times_out_as_retryable(
    slack: Standin, session: aiohttp.ClientSession, renderer: Renderer
):
    slack.state.delay_s = 0.2
    settings = bot_settings(slack.url + "api/", timeout_s=0.02)
    notifier = build_notifier("ops", settings, session=session, renderer=renderer)

    with pytest.raises(DeliveryError, match="no answer within 0.02 s") as info:
        await notifier.send(notice())

    assert info.value.retryable


async def test_no_secret_reaches_an_error_or_a_log_record(
    slack: Standin, session: aiohttp.ClientSession, renderer: Renderer, caplog
):
    caplog.set_level(logging.DEBUG)
    token = "xoxb-111-222-s3cr3tT0k3n"
    slack.state.tokens.add(token)
    hook = build_notifier(
        "h",
        webhook_settings(slack.url + "webhook/" + WEBHOOK_PATH),
        session=session,
        renderer=renderer,
    )
    dead_hook = build_notifier(
        "d",
        webhook_settings(f"http://127.0.0.1:{free_port()}/webhook/{WEBHOOK_PATH}"),
        session=session,
        renderer=renderer,
    )
    bot = build_notifier(
        "b", bot_settings(slack.url + "api/", token=token), session=session, renderer=renderer
    )
    errors: list[DeliveryError] = []
    for notifier, failure in [
        (hook, {"error": "invalid_token"}),
        (hook, {"status": 429, "retry_after": 1}),
        (hook, {"status": 503}),
        (dead_hook, None),
        (bot, {"error": "invalid_auth"}),
        (bot, {"status": 503}),
    ]:
        if failure:
            slack.state.fail_next(**failure)
        with pytest.raises(DeliveryError) as info:
            await notifier.send(notice())
        errors.append(info.value)
    await bot.send(notice())  # and a success, logged at DEBUG by slack-sdk if we let it

    # The stand-in's own access log sees the path, as Slack's would: not ours to judge.
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp.")]
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [r.getMessage() for r in ours] + [r.exc_text or "" for r in ours]
    for text in texts:
        assert "s3cr3tW3bh00kP4th" not in text and "s3cr3tT0k3n" not in text, text


async def test_a_notifier_without_a_session_makes_and_closes_its_own(
    slack: Standin, renderer: Renderer
):
    notifier = build_notifier("ops", bot_settings(slack.url + "api/"), renderer=renderer)

    await notifier.send(notice())
    await notifier.aclose()

    assert len(slack.state.messages) == 1


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, (False, False)),
        (204, (False, False)),
        (301, (False, True)),
        (400, (False, True)),
        (401, (False, True)),
        (403, (False, True)),
        (404, (False, True)),
        (408, (True, False)),
        (410, (False, True)),
        (429, (True, False)),
        (500, (True, False)),
        (502, (True, False)),
        (503, (True, False)),
        (504, (True, False)),
    ],
)
def test_classify_http_status(status: int, expected: tuple[bool, bool]):
    assert classify_http_status(status) == expected


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_build_notifier_picks_the_class_by_channel_type(renderer: Renderer):
    bot = build_notifier("b", bot_settings("https://slack.com/api/"), renderer=renderer)
    hook = build_notifier(
        "h", webhook_settings("https://hooks.slack.com/services/T/B/x"), renderer=renderer
    )

    assert isinstance(bot, SlackBotNotifier) and isinstance(hook, SlackWebhookNotifier)
    assert isinstance(bot, Notifier) and bot.name == "b"


# --- settings -----------------------------------------------------------------------------------


def test_a_bot_token_comes_from_a_file(tmp_path: Path):
    (tmp_path / "slack.token").write_text("xoxb-from-file\n")

    settings = CHANNELS.validate_python(
        {"type": "slack_bot", "token_file": "slack.token", "channel": "C0ALERTS"},
        context={"config_dir": tmp_path},
    )

    assert settings.token.reveal() == "xoxb-from-file"
    assert settings.base_url == "https://slack.com/api/"
    assert "xoxb" not in repr(settings)


def test_an_inline_webhook_url_works_but_is_flagged():
    settings = CHANNELS.validate_python(
        {"type": "slack_webhook", "webhook_url": "https://hooks.slack.com/services/T/B/" + "x" * 24}
    )

    [warning] = settings.risky_choices("ops")
    assert "channels.ops.webhook_url is inline" in warning and "xxxx" not in warning


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "slack_webhook"}, "set exactly one of webhook_url_env"),
        (
            {"type": "slack_webhook", "webhook_url_env": "NOPE"},
            "environment variable NOPE is not set",
        ),
        (
            {"type": "slack_webhook", "webhook_url": "hooks.slack.com/services/SECRETPART"},
            "https://",
        ),
        (
            {"type": "slack_bot", "token": "xoxb-1", "token_env": "X", "channel": "C1"},
            "keep exactly one",
        ),
        ({"type": "slack_bot", "token": "xoxb-1", "channel": "alerts"}, "String should match"),
        (
            {"type": "slack_bot", "token": "xoxb-1", "channel": "C1", "colour": "red"},
            "Extra inputs",
        ),
    ],
)
def test_bad_slack_settings_say_what_is_wrong_without_the_secret(data: dict, message: str):
    with pytest.raises(ValidationError) as info:
        CHANNELS.validate_python(data, context={"env": {"X": "xoxb-2"}})

    errors = info.value.errors(include_url=False)
    text = " ".join(str(e["msg"]) for e in errors) + " ".join(str(e.get("ctx")) for e in errors)
    assert message in text
    assert "SECRETPART" not in text


def test_channel_settings_keys_lists_every_key_once():
    keys = channel_settings_keys()

    for key in (
        "channels[].type",
        "channels[].webhook_url_env",
        "channels[].webhook_url_file",
        "channels[].token_env",
        "channels[].base_url",
        "channels[].smtp_host",
        "channels[].password_file",
        "channels[].to",
    ):
        assert key in keys
    assert len(keys) == len(set(keys))
    assert all(re.fullmatch(r"channels\[\]\.[a-z_]+", k) for k in keys)
