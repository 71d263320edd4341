"""Block Kit rendered as a person reads it in Slack (watcher.testing.slack_text)."""

from __future__ import annotations

import pytest

from alerts.render import Renderer, sample_notification
from watcher.testing import SlackMessage
from watcher.testing.slack_text import blocks_text, message_text, mrkdwn_text


@pytest.mark.parametrize(
    ("mrkdwn", "shown"),
    [
        ("*RuntimeError*", "RuntimeError"),
        ("a *bold* word", "a bold word"),
        ("2*3*4 stays", "2*3*4 stays"),  # not bold: inside a word
        ("kind execution_error_x", "kind execution_error_x"),  # underscores are text
        ("`code` span", "code span"),
        ("```line one\nline two```", "    line one\n    line two"),
        ("<https://eu1.make.com/1/scenarios/2|Open run>", "Open run <https://eu1.make.com/1/scenarios/2>"),
        ("see <https://x.example/a>", "see https://x.example/a"),
        ("&lt;script&gt; &amp; co", "<script> & co"),
        ("&lt;https://x.example|not a link&gt;", "<https://x.example|not a link>"),
        ("<!here> look", "@here look"),
        ("~gone~", "gone"),
    ],
)
def test_mrkdwn_markup_is_undone_and_text_kept(mrkdwn: str, shown: str) -> None:
    assert mrkdwn_text(mrkdwn) == shown


def test_an_alert_reads_header_first_then_text_buttons_and_context() -> None:
    n = sample_notification("execution_error", "slack")
    blocks = Renderer().render_slack(n)["blocks"]
    lines = blocks_text(blocks).splitlines()
    header = next(b for b in blocks if b["type"] == "header")["text"]["text"]
    assert lines[0] == header and set(lines[1]) == {"═"}
    buttons = [line for line in lines if line.startswith("[")]
    assert buttons and all("] [" in line or line.count("[") == 1 for line in buttons)
    assert "[Open the failed run in Make]" in buttons[0]
    context = next(b for b in blocks if b["type"] == "context")["elements"][0]["text"]
    assert lines[-1] == mrkdwn_text(context)
    assert not any(s in line for line in lines for s in ('"type"', "*", "```", "<http"))


def test_fields_dividers_images_and_unknown_blocks_all_show() -> None:
    blocks = [
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Queue:* 42"}, {"type": "plain_text", "text": "*raw*"}]},
        {"type": "divider"},
        {"type": "image", "image_url": "https://x.example/i.png", "alt_text": "chart"},
        {"type": "rich_text", "elements": []},
        {"type": "section", "text": {"type": "mrkdwn", "text": "go"},
         "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": "https://x.example"}},
    ]  # fmt: skip
    assert blocks_text(blocks).splitlines() == [
        "Queue: 42",
        "*raw*",  # plain_text is shown as sent
        "─" * 40,
        "[image: chart]",
        "[rich_text block]",
        "go",
        "[Open]",
    ]


def test_a_message_without_blocks_shows_its_text() -> None:
    assert blocks_text([], "*hello* &amp; bye") == "hello & bye"


def test_a_message_says_where_it_went_and_whether_it_was_edited() -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "first\nsecond"}}]
    posted = SlackMessage(channel="C0ALERTS", ts="1700000000.000100", text="x", blocks=blocks)
    assert message_text(posted) == "── C0ALERTS · message 1700000000.000100\n  first\n  second"
    reply = SlackMessage("C0ALERTS", "1700000000.000200", "still failing", [], thread_ts="1700000000.000100")
    assert message_text(reply, indent="> ").splitlines() == [
        "── C0ALERTS · reply in the thread of 1700000000.000100",
        "> still failing",
    ]
    posted.edits.append({"text": "old", "blocks": []})
    hooked = SlackMessage("C0WEBHOOK", "1700000000.000300", "hi", [], webhook="T0/B0/secret")
    assert "edited 1×, as it reads now" in message_text(posted).splitlines()[0]
    assert "via webhook /T0/B0/secret" in message_text(hooked)
