"""Tests of alerts.render: every kind renders, untrusted text is escaped, limits hold."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest

from alerts.notify.base import Notification
from alerts.render import KIND_TITLES, Renderer, cut, mrkdwn_escape, sample_notification

KINDS = [k for k in KIND_TITLES if k != "summary"]
PHASES = ["firing", "repeat", "resolved"]
EVIL_NAME = "<!channel> & <https://evil.example|click> <script>alert(1)</script>"


def notification(
    kind: str = "execution_error",
    phase: str = "firing",
    *,
    payload: dict[str, Any] | None = None,
    **alert: Any,
) -> Notification:
    base = sample_notification(kind, "slack", phase=phase)
    merged = {**base.alert, **alert}
    merged["payload"] = {**base.alert["payload"], **(payload or {})}
    return dataclasses.replace(base, alert=merged)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def every_text(node: Any) -> list[str]:
    """Every string under a "text" key of a Block Kit message."""
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            out += [value] if key == "text" and isinstance(value, str) else every_text(value)
        return out
    if isinstance(node, list):
        return [t for item in node for t in every_text(item)]
    return []


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """The fallback text and every mrkdwn text object: what Slack parses for mentions."""
    out = [message["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message["blocks"])
    return out


# --- every kind renders -----------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_for_slack_within_limits(renderer: Renderer, kind: str, phase: str):
    message = renderer.render_slack(sample_notification(kind, "slack", phase=phase))

    assert message["text"].strip()
    assert message["blocks"][0]["type"] == "header"
    assert KIND_TITLES[kind] in message["blocks"][0]["text"]["text"]
    assert len(message["blocks"]) <= 50
    json.dumps(message)  # plain JSON all the way down


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_for_email(renderer: Renderer, kind: str, phase: str):
    subject, text, html = renderer.render_email(sample_notification(kind, "email", phase=phase))

    assert "\n" not in subject and KIND_TITLES[kind] in subject
    assert KIND_TITLES[kind] in text
    assert html.lstrip().startswith("<!DOCTYPE html>") and "</html>" in html


def test_the_flood_cap_summary_lists_what_was_held_back(renderer: Renderer):
    n = sample_notification("summary", "slack")

    message = renderer.render_slack(n)
    subject, text, html = renderer.render_email(n)

    assert "7 alerts held back" in message["blocks"][0]["text"]["text"]
    assert "Scenario 7 (×7)" in "\n".join(every_text(message))
    assert subject.startswith("[makewatch]") and "7 alerts held back" in subject
    assert "Scenario 7 (x7)" in text and "Scenario 7 (&times;7)" in html


def test_a_repeat_shows_the_count_since_the_last_notice(renderer: Renderer):
    n = notification(phase="repeat", count=40, count_since_notice=12)

    texts = "\n".join(every_text(renderer.render_slack(n)))
    _, text, _ = renderer.render_email(n)

    assert "*Occurrences*\n40" in texts and "*Since last notice*\n12" in texts
    assert re.search(r"Since last notice:\s+12", text)


def test_first_and_last_seen_are_shown_in_utc(renderer: Renderer):
    n = notification(first_seen=1_790_000_000, last_seen=1_790_003_600)

    texts = "\n".join(every_text(renderer.render_slack(n)))

    assert "2026-09-21 14:13:20 UTC" in texts and "2026-09-21 15:13:20 UTC" in texts


def test_buttons_link_to_the_run_and_to_incomplete_executions(renderer: Renderer):
    n = notification(payload={"dlq_url": "https://eu1.make.com/812/scenarios/4211/dlqs"})

    actions = [b for b in renderer.render_slack(n)["blocks"] if b["type"] == "actions"][0]
    urls = {e["text"]["text"]: e["url"] for e in actions["elements"]}

    assert urls["Open run in Make"] == n.alert["payload"]["run_url"]
    assert urls["Incomplete executions"] == "https://eu1.make.com/812/scenarios/4211/dlqs"


def test_a_link_that_is_not_http_gets_no_button(renderer: Renderer):
    n = notification(
        payload={"run_url": "javascript:alert(1)", "scenario_url": None, "history_url": None}
    )

    message = renderer.render_slack(n)

    assert not [b for b in message["blocks"] if b["type"] == "actions"]


def test_the_resolved_variant_says_resolved(renderer: Renderer):
    n = notification(phase="resolved")

    message = renderer.render_slack(n)
    reply = renderer.render_slack(n, part="reply")

    assert message["blocks"][0]["text"]["text"].startswith("✅ Resolved: ")
    assert "is resolved" in reply["blocks"][0]["text"]["text"]


# --- escaping -----------------------------------------------------------------------------


def test_mrkdwn_escape_escapes_slacks_three_characters():
    assert mrkdwn_escape("<!here> & <@U1>") == "&lt;!here&gt; &amp; &lt;@U1&gt;"


@pytest.mark.parametrize("kind", KINDS)
def test_untrusted_text_cannot_ping_or_link_in_slack(renderer: Renderer, kind: str):
    n = notification(
        kind,
        payload={
            "scenario_name": EVIL_NAME,
            "organization": "Acme <!everyone>",
            "error_name": "<!here>",
            "error_message": "see <https://evil.example|here> & <@U123>",
            "hook_name": EVIL_NAME,
            "reason": EVIL_NAME,
            "message": EVIL_NAME,
        },
    )

    message = renderer.render_slack(n)

    for text in mrkdwn_texts(message):
        assert "<!" not in text and "<http" not in text and "<@" not in text
        assert re.search(r"&(?!amp;|lt;|gt;)", text) is None, text
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in "\n".join(
        mrkdwn_texts(message)
    )


def test_the_header_keeps_the_name_as_plain_text(renderer: Renderer):
    # plain_text objects are not parsed by Slack: escaping there would show "&lt;".
    message = renderer.render_slack(notification(payload={"scenario_name": "A <b> & C"}))

    assert message["blocks"][0]["text"]["text"].endswith("Execution error: A <b> & C")


def test_untrusted_text_is_escaped_in_html_but_not_in_text(renderer: Renderer):
    n = notification(
        payload={"scenario_name": EVIL_NAME, "error_message": "<img src=x onerror=alert(1)>"}
    )

    subject, text, html = renderer.render_email(n)

    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert EVIL_NAME in text and EVIL_NAME in subject


def test_a_scenario_name_with_newlines_cannot_add_email_headers(renderer: Renderer):
    n = notification(payload={"scenario_name": "x\r\nBcc: victim@example.com"})

    subject, _, _ = renderer.render_email(n)

    assert "\n" not in subject and "\r" not in subject


def test_backticks_cannot_close_the_error_code_block(renderer: Renderer):
    n = notification(payload={"error_message": "a ``` b"})

    section = renderer.render_slack(n)["blocks"][2]["text"]["text"]

    assert section.count("```") == 2


# --- limits -------------------------------------------------------------------------------


def test_a_10_kb_error_message_is_cut_to_slacks_limits(renderer: Renderer):
    n = notification(payload={"error_message": "<x>" * 3400, "scenario_name": "S" * 400})

    message = renderer.render_slack(n)

    error = message["blocks"][2]["text"]["text"]
    assert len(error) <= 3000 and "…" in error and error.endswith("```")
    assert re.search(r"&[a-z]{0,3}…", error) is None  # no half entity before the cut
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    assert len(message["text"]) <= 40_000
    assert all(len(t) <= 3000 for t in every_text(message))


def test_the_email_keeps_a_long_message_but_cuts_it_eventually(renderer: Renderer):
    n = notification(payload={"error_message": "e" * 50_000})

    _, text, html = renderer.render_email(n)

    assert "e" * 9_000 in text and "e" * 10_001 not in text and "…" in text
    assert "e" * 10_001 not in html


def test_hundreds_of_held_back_alerts_stay_within_the_block_limits(renderer: Renderer):
    n = sample_notification("summary", "slack")
    held = [{"kind": "quota", "severity": "warning", "organization": "O" * 200, "count": 3}] * 500
    n = dataclasses.replace(n, alert={**n.alert, "held_back": held})

    message = renderer.render_slack(n)

    assert all(len(t) <= 3000 for t in every_text(message))


def test_cut_adds_an_ellipsis_only_when_it_cuts():
    assert cut("abc", 3) == "abc"
    assert cut("abcdef", 4) == "abc…"
    assert cut("ab &amp; c", 6) == "ab …"


# --- user templates -----------------------------------------------------------------------


def test_a_user_template_overrides_the_bundled_one(tmp_path: Path):
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "alert.subject.j2").write_text("ALERT {{ title }}")

    subject, text, _ = Renderer(tmp_path).render_email(notification())

    assert subject == "ALERT Execution error: Sync HubSpot contacts → Google Sheets"
    assert "RuntimeError" in text  # the other templates still come from the bundle


def test_a_user_can_add_a_template_for_one_kind(tmp_path: Path):
    (tmp_path / "slack").mkdir()
    (tmp_path / "slack" / "quota.json.j2").write_text(
        '{"text": {{ ("Quota: " ~ organization) | mrkdwn | tojson }}, "blocks": []}'
    )
    renderer = Renderer(tmp_path)

    assert renderer.render_slack(sample_notification("quota", "slack"))["text"] == "Quota: Acme Ops"
    assert renderer.render_slack(notification())["blocks"]  # other kinds: bundled


def test_a_typo_in_a_user_template_is_an_error_not_an_empty_string(tmp_path: Path):
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "alert.subject.j2").write_text("{{ titel }}")

    with pytest.raises(jinja2.UndefinedError):
        Renderer(tmp_path).render_email(notification())


def test_a_user_slack_template_that_is_not_json_is_reported(tmp_path: Path):
    (tmp_path / "slack").mkdir()
    (tmp_path / "slack" / "alert.json.j2").write_text('{"text": {{ title }}}')

    with pytest.raises(ValueError, match="invalid JSON"):
        Renderer(tmp_path).render_slack(notification())


def test_a_kind_added_later_renders_with_the_shared_templates(renderer: Renderer):
    n = dataclasses.replace(notification(), kind="scenario_overdue")

    message = renderer.render_slack(n)
    subject, _, _ = renderer.render_email(n)

    assert "Scenario overdue: Sync HubSpot" in message["blocks"][0]["text"]["text"]
    assert "Scenario overdue: Sync HubSpot" in subject


def test_samples_exist_for_every_kind_and_channel_type():
    for kind in KIND_TITLES:
        for channel_type in ("slack", "email"):
            n = sample_notification(kind, channel_type)
            assert n.kind == kind and n.alert["payload"]
    with pytest.raises(ValueError, match="unknown kind"):
        sample_notification("nope", "slack")


# --- recent occurrences ------------------------------------------------------------------------


def with_samples(kind: str, phase: str, samples: list[dict[str, Any]]) -> Notification:
    base = sample_notification(kind, "slack", phase=phase)
    return dataclasses.replace(base, alert={**base.alert, "count": 3, "samples": samples})


def rendered_texts(renderer: Renderer, n: Notification) -> list[str]:
    """Every text a person reads: Slack's (both parts) and the e-mail's three."""
    out = every_text(renderer.render_slack(n)) + every_text(renderer.render_slack(n, part="reply"))
    return out + list(renderer.render_email(n))


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", KINDS)
def test_recent_occurrences_never_show_an_empty_item(renderer: Renderer, kind: str, phase: str):
    payload = sample_notification(kind, "slack").alert["payload"]
    n = with_samples(kind, phase, [payload, {}, {"organization": "Acme Ops"}, payload])
    for text in rendered_texts(renderer, n):
        assert " : " not in text
        assert not re.search(r"^\s*-\s*$", text, re.MULTILINE)  # an empty text list item
        assert not re.search(r"<li>\s*</li>", text)
        assert "· :" not in text and not re.search(r"·\s*$", text, re.MULTILINE)


def test_incomplete_execution_samples_show_when_why_and_which(renderer: Renderer):
    samples = [
        {"dlq_id": "d1e2f3a4", "reason": "Connection expired", "created": "2026-09-21T14:00:00+00:00"},
        {"dlq_id": "b5c6d7e8", "reason": "Timed out <b>", "created": "2026-09-21T14:05:00+00:00"},
    ]
    n = with_samples("incomplete_executions", "repeat", samples)
    message = renderer.render_slack(n)
    texts = "\n".join(every_text(message))
    assert "2026-09-21T14:00:00+00:00 · Incomplete execution d1e2f3a4: Connection expired" in texts
    assert "Incomplete execution b5c6d7e8: Timed out &lt;b&gt;" in texts  # still escaped
    _, text, html = renderer.render_email(n)
    assert "- 2026-09-21T14:05:00+00:00 · Incomplete execution b5c6d7e8: Timed out <b>" in text
    assert "<li>2026-09-21T14:05:00+00:00 · Incomplete execution b5c6d7e8: Timed out &lt;b&gt;</li>" in html


def test_execution_error_samples_keep_time_name_and_message(renderer: Renderer):
    n = with_samples(
        "execution_error",
        "repeat",
        [
            {"timestamp": "2026-09-21T14:12:58+00:00", "error_name": "DataError", "error_message": "row 7"},
            {"timestamp": "2026-09-21T14:13:00+00:00", "error_message": "no name"},
        ],
    )
    _, text, _ = renderer.render_email(n)
    assert "- 2026-09-21T14:12:58+00:00 · DataError: row 7" in text
    assert "- 2026-09-21T14:13:00+00:00 · no name" in text


def test_a_held_back_item_without_kind_or_subject_is_no_empty_line(renderer: Renderer):
    base = sample_notification("summary", "slack")
    n = dataclasses.replace(base, alert={**base.alert, "held_back": [{}, {"kind": "quota"}]})
    for text in rendered_texts(renderer, n):
        assert " : " not in text and not re.search(r"<li>\s*[•]?\s*:", text)
        assert not re.search(r"^\s*-\s*:", text, re.MULTILINE)


def test_a_dlq_event_payload_carries_its_creation_time_into_the_samples(renderer: Renderer):
    from watcher.events import dlq_event
    from watcher.make.models import Dlq, Scenario

    fixtures = Path(__file__).parent / "fixtures"
    dlq = Dlq.parse(json.loads((fixtures / "dlqs.json").read_text())["dlqs"][0])
    scenario = Scenario.parse(json.loads((fixtures / "scenarios.json").read_text())["scenarios"][0])
    payload = dlq_event(1001, "Acme", "https://eu1.make.com", scenario, dlq).payload
    n = with_samples("incomplete_executions", "repeat", [payload, payload])
    _, text, _ = renderer.render_email(n)
    assert (
        "- 2026-09-21T13:00:02.118000+00:00 · Incomplete execution 9a8b7c6d5e4f30211203f4e5d6c7b8a9: "
        "Connection refused by api.xero.com"
    ) in text
