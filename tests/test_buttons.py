"""The action buttons of a Slack bot alert (alerts.buttons) and their parsing on a click."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from alerts.buttons import ACTION_BLOCK_ID, action_block, describe_silence, parse_action
from alerts.notify.base import Notification

CHOICES = (3600.0, 14400.0, 86400.0)


def notification(kind: str, phase: str = "firing", **payload) -> Notification:
    return Notification(
        outbox_id=1, channel="bot", kind=kind, phase=phase, severity="error", reason="new",
        alert={"fingerprint": f"{kind}:7:42", "org_id": 7, "scenario_id": 42,
               "payload": {"scenario_name": "Sync <!channel> *now*", **payload}},
    )


def buttons(n: Notification) -> dict[str, dict]:
    block = action_block(n, CHOICES)
    assert block is not None and block["block_id"] == ACTION_BLOCK_ID
    return {e["action_id"]: e for e in block["elements"]}


def test_every_firing_alert_can_be_acknowledged_and_silenced_for_each_configured_length():
    got = buttons(notification("quota"))
    assert list(got) == ["makewatch:ack", "makewatch:silence:3600", "makewatch:silence:14400", "makewatch:silence:86400"]
    assert [e["text"]["text"] for e in got.values()] == ["Acknowledge", "Silence 1 h", "Silence 4 h", "Silence 1 d"]
    assert all("confirm" not in e for e in got.values())  # nothing destructive
    assert json.loads(got["makewatch:ack"]["value"]) == {"fp": "quota:7:42", "o": 7, "s": 42}


def test_each_kind_offers_its_make_action_behind_a_confirmation():
    start = buttons(notification("scenario_deactivated"))["makewatch:start"]
    assert start["text"]["text"] == "Reactivate scenario"
    assert start["confirm"]["confirm"]["text"] == "Reactivate scenario"
    # plain_text: Slack shows the name as typed, so it is not mrkdwn-escaped (nor parsed).
    assert "Sync <!channel> *now*" in start["confirm"]["text"]["text"]
    assert start["confirm"]["text"]["type"] == "plain_text"
    replay = buttons(notification("execution_error", execution_id="abc123", instant=True))["makewatch:replay"]
    assert json.loads(replay["value"])["x"] == "abc123"
    assert "makewatch:retry" in buttons(notification("incomplete_executions"))


def test_no_replay_without_an_execution_or_for_a_scheduled_run_and_no_buttons_on_a_resolved_notice():
    assert "makewatch:replay" not in buttons(notification("execution_error"))
    # A scheduled run: Make keeps no input to replay it with.
    assert "makewatch:replay" not in buttons(notification("execution_error", execution_id="e", instant=False))
    assert action_block(notification("execution_error", "resolved", execution_id="x"), CHOICES) is None
    assert action_block(notification("summary"), CHOICES) is None


def test_a_click_parses_back_to_the_action_and_what_it_needs():
    for action_id, element in buttons(notification("execution_error", execution_id="e1", instant=True)).items():
        parsed = parse_action(action_id, element["value"])
        assert parsed is not None
        name, seconds, value = parsed
        assert value["fp"] == "execution_error:7:42"
        assert (seconds is not None) == (name == "silence")
    assert parse_action("makewatch:silence:3600", '{"fp":"a"}') == ("silence", 3600.0, {"fp": "a"})


def test_a_foreign_or_malformed_click_is_refused_not_raised():
    for action_id, value in [
        ("other:ack", '{"fp":"a"}'), ("makewatch:delete", '{"fp":"a"}'), ("makewatch:silence:0", '{"fp":"a"}'),
        ("makewatch:silence:x", '{"fp":"a"}'), ("makewatch:ack:1", '{"fp":"a"}'), ("makewatch:ack", "not json"),
        ("makewatch:ack", '{"fp":""}'), ("makewatch:ack", '{"fp":"a","s":"42"}'), ("makewatch:ack", '{"fp":"a","o":true}'),
        ("makewatch:replay", '{"fp":"a","x":5}'), ("makewatch:ack", "[1]"),
        ("makewatch:silence:99999999", '{"fp":"a"}'),
    ]:
        assert parse_action(action_id, value) is None, (action_id, value)


@given(st.text(max_size=40), st.text(max_size=200))
def test_parse_action_never_raises(action_id, value):
    parse_action(action_id, value)


def test_silence_lengths_read_as_a_person_says_them():
    assert [describe_silence(s) for s in (3600, 5400, 86400, 172800, 60, 30)] == [
        "1 h", "90 min", "1 d", "2 d", "1 min", "1 min",
    ]
