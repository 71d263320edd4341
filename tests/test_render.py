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
from alerts.policy import ALERT_KINDS
from alerts.render import KIND_TITLES, Renderer, cut, describe, mrkdwn_escape, sample_notification

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
    assert len(message["blocks"]) <= 50
    json.dumps(message)  # plain JSON all the way down


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_for_email(renderer: Renderer, kind: str, phase: str):
    n = sample_notification(kind, "email", phase=phase)
    subject, text, html = renderer.render_email(n)
    headline = describe(n)["headline"]

    assert "\n" not in subject and re.match(r"(Re: )?\[makewatch\] \w", subject)
    # The first line says what happened, in words; the footer has no engine jargon.
    assert headline and text.splitlines()[0].endswith(": " + headline)
    assert "<h1" in html and headline.replace("&", "&amp;") in html
    assert kind not in text and n.reason not in text.split("-- ")[-1]
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

    assert "failed again, 12 more (40 times since" in texts and "40 occurrences" in texts
    # Which notice this is, in words, with the time of the previous one.
    assert "Repeat: 12 more since 13:43 UTC" in texts
    assert "Repeat: 12 more since 13:43 UTC" in text.split("-- ")[-1]


def test_first_and_last_seen_are_shown_in_utc(renderer: Renderer):
    n = notification(first_seen=1_790_000_000, last_seen=1_790_003_600)

    texts = "\n".join(every_text(renderer.render_slack(n)))

    assert "Mon 21 Sep 14:13–15:13 UTC" in texts


def test_buttons_link_to_the_run_and_to_incomplete_executions(renderer: Renderer):
    n = notification(payload={"dlq_url": "https://eu1.make.com/812/scenarios/4211/dlqs"})

    actions = [b for b in renderer.render_slack(n)["blocks"] if b["type"] == "actions"][0]
    urls = {e["text"]["text"]: e["url"] for e in actions["elements"]}

    assert urls["Open the failed run in Make"] == n.alert["payload"]["run_url"]
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
    assert "ran fine again after failing 4 times" in reply["blocks"][0]["text"]["text"]


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
    # Quota and health notices are about an organization, not a scenario: it is the name shown.
    shown = (
        "Acme &lt;!everyone&gt;"
        if kind in ("quota", "watcher_health")
        else "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    )
    assert shown in "\n".join(mrkdwn_texts(message))


def test_the_header_keeps_the_name_as_plain_text(renderer: Renderer):
    # plain_text objects are not parsed by Slack: escaping there would show "&lt;".
    message = renderer.render_slack(notification(payload={"scenario_name": "A <b> & C"}))

    assert message["blocks"][0]["text"]["text"].startswith("🔴 A <b> & C failed 4 times")


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

    [section] = [t for t in every_text(renderer.render_slack(n)) if "```" in t]

    assert section.count("```") == 2 and "a `\u200b`\u200b` b" in section


# --- limits -------------------------------------------------------------------------------


def test_a_10_kb_error_message_is_cut_to_slacks_limits(renderer: Renderer):
    n = notification(payload={"error_message": "<x>" * 3400, "scenario_name": "S" * 400})

    message = renderer.render_slack(n)

    [error] = [t for t in every_text(message) if "```" in t]
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
    # (scenario_overdue was this test's example until it became a kind of its own.)
    n = dataclasses.replace(notification(), kind="scenario_flooded")

    message = renderer.render_slack(n)
    subject, _, _ = renderer.render_email(n)

    assert "Scenario flooded: Sync HubSpot" in message["blocks"][0]["text"]["text"]
    assert "Scenario flooded: Sync HubSpot" in subject


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
    assert "14:00 UTC · Incomplete execution d1e2f3a4: Connection expired" in texts
    assert "Incomplete execution b5c6d7e8: Timed out &lt;b&gt;" in texts  # still escaped
    _, text, html = renderer.render_email(n)
    assert "- 14:05 UTC · Incomplete execution b5c6d7e8: Timed out <b>" in text
    assert "<li>14:05 UTC · Incomplete execution b5c6d7e8: Timed out &lt;b&gt;</li>" in html


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
    assert "- 14:12 UTC · DataError: row 7" in text
    assert "- 14:13 UTC · no name" in text


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
        "- 13:00 UTC · Incomplete execution 9a8b7c6d5e4f30211203f4e5d6c7b8a9: "
        "Connection refused by api.xero.com"
    ) in text


# --- the Slack layout (issue 13.2): what happened first, compact, no red buttons --------------

#: The kinds makewatch sends (issue 13); the others render through the shared fallback.
SENT_KINDS = list(ALERT_KINDS)
EVERY_PHASE = [(k, p) for k in SENT_KINDS for p in PHASES] + [("summary", "summary")]
FORMATTING_NAME = "*bold* _it_ ~x~ `code`"
#: Slack's formatting: a bare pair of *, _ or ~ (or backticks) around text, at word edges.
FORMATTED = re.compile(r"(?:^|[\s(])([*_~`])[^\s*_~`](?:[^\n]*?[^\s])?\1(?=$|[\s.,:;)!?])", re.M)

#: (kind, phase) -> what the header must say: what happened, in words.
HEADLINES = {
    ("execution_error", "firing"): "🔴 Sync HubSpot contacts → Google Sheets failed 4 times since 13:13 UTC: RuntimeError",
    ("execution_error", "repeat"): "Still happening: Sync HubSpot contacts → Google Sheets failed again, 3 more",
    ("execution_error", "resolved"): "✅ Resolved: Sync HubSpot contacts → Google Sheets ran fine again",
    ("execution_warning", "firing"): "Sync HubSpot contacts → Google Sheets ran with warnings 4 times since 13:13 UTC",
    ("execution_warning", "repeat"): "Still happening: Sync HubSpot contacts → Google Sheets ran with warnings again",
    ("execution_warning", "resolved"): "Resolved: Sync HubSpot contacts → Google Sheets ran without warnings again",
    ("scenario_deactivated", "firing"): "Make switched off Sync HubSpot contacts → Google Sheets after 2 errors: ConnectionError",
    ("scenario_deactivated", "repeat"): "Still happening: Sync HubSpot contacts → Google Sheets is still switched off",
    ("scenario_deactivated", "resolved"): "Resolved: Sync HubSpot contacts → Google Sheets is switched on again",
    ("scenario_paused", "firing"): "Sync HubSpot contacts → Google Sheets was paused",
    ("scenario_paused", "repeat"): "Sync HubSpot contacts → Google Sheets is still paused",
    ("scenario_paused", "resolved"): "Resolved: Sync HubSpot contacts → Google Sheets runs again",
    ("incomplete_executions", "firing"): "Google Sheets has 7 incomplete executions waiting: Connection to Google",
    ("incomplete_executions", "repeat"): "has 7 incomplete executions waiting, new ones since the last notice",
    ("incomplete_executions", "resolved"): "Resolved: Sync HubSpot contacts → Google Sheets has no incomplete",
    ("quota", "firing"): "Acme Ops runs out of Make operations around Thu 24 Sep 09:25 UTC, before the reset "
    "on Wed 30 Sep: every scenario will stop",
    ("quota", "repeat"): "Still happening: Acme Ops runs out of Make operations around Thu 24 Sep",
    ("quota", "resolved"): "Resolved: Acme Ops is back under 90 % of its operations",
    ("hook_backlog", "firing"): "Webhook queue of Shopify orders for Sync HubSpot contacts → Google Sheets is at 8,600 / 10,000 (86%)",
    ("hook_backlog", "repeat"): "Still happening: Webhook queue of Shopify orders for Sync HubSpot contacts → Google Sheets is still at",
    ("hook_backlog", "resolved"): "Resolved: Webhook queue of Shopify orders for Sync HubSpot contacts → Google Sheets is down to",
    ("scenario_overdue", "firing"): "Nightly export is overdue: its 13:03 UTC run has not happened (due 1 h 10 min ago)",
    ("scenario_overdue", "repeat"): "Still happening: Nightly export is still overdue: its 13:03 UTC run has not happened",
    ("scenario_overdue", "resolved"): "Resolved: Nightly export ran again",
    ("scenario_idle", "firing"): "Typeform leads → HubSpot has not run since 11:03 UTC (3 h 10 min; it usually runs about 38 times in that time)",
    ("scenario_idle", "repeat"): "Still happening: Typeform leads → HubSpot still has not run since 11:03 UTC",
    ("scenario_idle", "resolved"): "Resolved: Typeform leads → HubSpot runs again",
    ("volume_anomaly", "firing"): "Sync HubSpot contacts → Google Sheets used 42 operations on Sun 20 Sep: 91 % below its usual Sunday (median 480)",
    ("volume_anomaly", "repeat"): "Still happening: Sync HubSpot contacts → Google Sheets is still far from its usual volume",
    ("volume_anomaly", "resolved"): "Resolved: Sync HubSpot contacts → Google Sheets is back to its usual volume",
    ("watcher_health", "firing"): "makewatch health: Make rejected the API token (401) for Acme Ops",
    ("watcher_health", "repeat"): "Still happening: makewatch health: Make rejected the API token",
    ("watcher_health", "resolved"): "Resolved: makewatch health: back to normal for Acme Ops",
    ("summary", "summary"): "7 alerts held back by the flood cap",
}


def slack(renderer: Renderer, kind: str, phase: str, **payload: Any) -> dict[str, Any]:
    base = sample_notification(kind, "slack", phase=phase)
    alert = {**base.alert, "payload": {**base.alert["payload"], **payload}}
    return renderer.render_slack(dataclasses.replace(base, alert=alert))


def header(message: dict[str, Any]) -> str:
    assert message["blocks"][0]["type"] == "header"
    return message["blocks"][0]["text"]["text"]


@pytest.mark.parametrize(("kind", "phase"), EVERY_PHASE)
def test_the_header_says_what_happened_in_words(renderer: Renderer, kind: str, phase: str):
    message = slack(renderer, kind, phase)

    assert HEADLINES[kind, phase] in header(message)
    assert message["text"].startswith(header(message).removesuffix("…"))  # the notification too


@pytest.mark.parametrize(("kind", "phase"), EVERY_PHASE)
def test_a_slack_message_is_compact_and_has_no_red_button(renderer: Renderer, kind: str, phase: str):
    message = slack(renderer, kind, phase)
    n = sample_notification(kind, "slack", phase=phase)
    blocks = message["blocks"]

    assert all(len(b.get("fields") or []) <= 3 for b in blocks)  # no grid of ten fields
    contexts = [b for b in blocks if b["type"] == "context"]
    assert len(contexts) == 1 and len(contexts[0]["elements"]) == 1  # one line, one item
    # The kind and the engine's reason travel in the block_id, which Slack does not show
    # (bench/e2e.py reads them); the line itself says which notice it is, in words.
    assert contexts[0]["block_id"] == f"makewatch.{kind}.{n.reason.replace(' ', '_')}"
    line = contexts[0]["elements"][0]["text"]
    assert kind not in line and n.reason not in line
    assert re.search(r"(First notice|Repeat: |Resolved at |Summary of)", line)
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert all(e.get("style") != "danger" for e in buttons)
    assert all(e.get("style") in (None, "primary") for e in buttons)
    # One primary button at most, and first: the one thing to do (issue 13).
    assert len([e for e in buttons if e.get("style")]) <= 1
    assert not buttons or buttons[0].get("style") == "primary"


@pytest.mark.parametrize(("kind", "phase"), EVERY_PHASE)
def test_a_slack_message_has_no_empty_item(renderer: Renderer, kind: str, phase: str):
    # Samples with nothing to say, and a payload without the optional parts.
    base = sample_notification(kind, "slack", phase=phase)
    thin = {k: v for k, v in base.alert["payload"].items() if k not in ("error_message", "reason")}
    alert = {**base.alert, "count": 3, "payload": thin, "samples": [thin, {}, {"organization": "Acme"}]}
    message = renderer.render_slack(dataclasses.replace(base, alert=alert))

    for text in every_text(message):
        assert " · : " not in text and ": ·" not in text and "·  ·" not in text and " ·  " not in text
        assert not re.search(r"(^|·)\s*(·|$)", text, re.M), text  # an empty context item
        assert not re.search(r"^\s*•\s*$", text, re.M), text  # an empty list item
        assert not text.rstrip().endswith((":", "·")), text


@pytest.mark.parametrize(("kind", "phase"), EVERY_PHASE)
def test_a_name_full_of_formatting_characters_shows_as_written(renderer: Renderer, kind: str, phase: str):
    untrusted = {
        "scenario_name": FORMATTING_NAME,
        "hook_name": FORMATTING_NAME,
        "organization": FORMATTING_NAME,
        "team_name": FORMATTING_NAME,
        "error_name": FORMATTING_NAME,
        "reason": FORMATTING_NAME,
        "error": FORMATTING_NAME,
    }
    base = sample_notification(kind, "slack", phase=phase)
    samples = [{"timestamp": "2026-09-21T14:00:00+00:00", "error_name": FORMATTING_NAME, "reason": FORMATTING_NAME}]
    held = [{"kind": "quota", "severity": "warning", "organization": FORMATTING_NAME, "count": 2}]
    alert = {
        **base.alert,
        "count": 3,
        "payload": {**base.alert["payload"], **untrusted},
        "samples": samples * 2,
        **({"held_back": held} if kind == "summary" else {}),
    }
    message = renderer.render_slack(dataclasses.replace(base, alert=alert))

    texts = mrkdwn_texts(message)
    for text in texts:
        for pair in ("*bold*", "_it_", "~x~", "`code`"):
            assert pair not in text, text
    # What Slack parses still reads as the name: look-alikes, in the same places.
    assert "\u2217bold\u2217 \uff3fit\uff3f \u223cx\u223c \u02cbcode\u02cb" in "\n".join(texts)
    assert not any(FORMATTING_NAME in t for t in texts)


def test_formatting_neutralisation_keeps_snake_case_and_code_blocks(renderer: Renderer):
    assert mrkdwn_escape("sync_orders_v2") == "sync_orders_v2"  # Slack formats no inner _
    assert mrkdwn_escape("_x_ a*b") == "\uff3fx\uff3f a\u2217b"
    assert mrkdwn_escape("<*>", formatting=False) == "&lt;*&gt;"

    message = slack(renderer, "execution_error", "firing", error_message="SELECT * FROM t WHERE a_b = '_'")
    [code] = [t for t in every_text(message) if "```" in t]

    assert "SELECT * FROM t WHERE a_b = '_'" in code  # inside ``` Slack formats nothing


def test_the_formatting_check_would_see_slack_formatting():
    # The check above is only worth something if it catches what Slack would format.
    assert FORMATTED.search("x *bold* y") and FORMATTED.search("_it_") and FORMATTED.search("a ~x~.")
    assert not FORMATTED.search("snake_case_name") and not FORMATTED.search("2 * 3 * 4")


@pytest.mark.parametrize(("kind", "phase"), EVERY_PHASE)
def test_untrusted_names_trigger_no_slack_formatting(renderer: Renderer, kind: str, phase: str):
    message = slack(renderer, kind, phase, scenario_name=FORMATTING_NAME, organization=FORMATTING_NAME)

    for text in mrkdwn_texts(message):
        bare = re.sub(r"\*[A-Z][A-Za-z ]*:?\*", "", text)  # our own bold labels, e.g. *What to do:*
        assert not FORMATTED.search(bare), text


def test_a_notice_that_already_recovered_says_so_first(renderer: Renderer):
    base = sample_notification("execution_error", "slack")
    alert = {**base.alert, "count": 2, "payload": {**base.alert["payload"], "recovered_at": 1_790_000_300}}
    message = renderer.render_slack(dataclasses.replace(base, alert=alert))

    assert "Google Sheets failed 2 times, ran fine again at 14:18 UTC: RuntimeError" in header(message)


def test_a_resolved_execution_alert_says_when(renderer: Renderer):
    message = slack(renderer, "execution_error", "resolved", resolved_at=1_790_000_300)

    assert "ran fine again at 14:18 UTC after failing 4 times" in header(message)
    assert "Resolved at 14:18 UTC" in message["blocks"][-1]["elements"][0]["text"]


def test_a_deactivation_shows_the_errors_that_caused_it_and_what_to_do(renderer: Renderer):
    message = slack(renderer, "scenario_deactivated", "firing")
    texts = "\n".join(every_text(message))

    assert "*Why Make switched it off*\n• 14:10 UTC · ConnectionError: Connection refused by api.hubapi.com\n• 14:12 UTC" in texts
    assert "*What to do:* Fix the cause" in texts and "turn the scenario back on" in texts
    assert "2 stored incomplete executions can then be retried" in texts


def test_a_backlog_shows_the_queue_and_the_scenario(renderer: Renderer):
    message = slack(renderer, "hook_backlog", "firing", queue_count=45, queue_limit=50, ratio=0.9, scenario_name="Orders")
    texts = "\n".join(every_text(message))

    assert "Webhook queue of Shopify orders for Orders is at 45 / 50 (90%)" in header(message)
    assert "*Queue:* 45 / 50 (90%)" in texts and "*Scenario:* Orders" in texts


def test_quota_facts_are_a_short_section_not_a_grid(renderer: Renderer):
    message = slack(renderer, "quota", "firing")
    [facts] = [b["text"]["text"] for b in message["blocks"] if "*Used:*" in b.get("text", {}).get("text", "")]

    assert facts.splitlines() == [
        "*Used:* 9,140 of 10,000 operations, about 310 a day",
        "*Quota resets:* 2026-09-30 14:13 UTC",
    ]


def test_recent_occurrences_are_one_list_not_side_by_side_items(renderer: Renderer):
    n = with_samples(
        "execution_error",
        "repeat",
        [
            {"timestamp": "2026-09-21T14:12:58+00:00", "error_name": "DataError", "error_message": "row 7"},
            {"timestamp": "2026-09-21T14:13:00+00:00", "error_message": "no name"},
        ],
    )
    message = renderer.render_slack(n)
    [listing] = [b for b in message["blocks"] if "Recent occurrences" in json.dumps(b)]

    assert listing["type"] == "section"
    assert listing["text"]["text"] == (
        "*Recent occurrences*\n• 14:12 UTC · DataError: row 7\n• 14:13 UTC · no name"
    )


def test_the_team_and_organization_are_on_the_context_line(renderer: Renderer):
    message = slack(renderer, "execution_error", "firing", team_name="Ops")

    assert message["blocks"][-1]["elements"][0]["text"] == (
        "Acme Ops · Ops (812) · Mon 21 Sep 13:13–14:13 UTC · 4 occurrences · First notice"
    )


def _emitted_health_problems() -> set[str]:
    """Every watcher_health ``problem`` the poller and the delivery loop can emit (read from
    their source, so a new one cannot be added without words for it)."""
    root = Path(__file__).resolve().parent.parent
    text = "".join((root / p).read_text() for p in ("watcher/poller.py", "alerts/delivery.py"))
    return {a or b for a, b in re.findall(r'"problem": "([a-z_]+)"|problem = "([a-z_]+)"', text)}


@pytest.mark.parametrize("problem", sorted(_emitted_health_problems()))
def test_every_health_problem_is_told_in_words(renderer: Renderer, problem: str):
    n = notification("watcher_health", payload={"problem": problem})
    head = header(renderer.render_slack(n))
    _, text, _ = renderer.render_email(n)
    # Without words of its own the code itself would show: "makewatch health: rate_limited".
    assert f"health: {problem}" not in head and f"Problem: {problem}" not in text, (head, text)
    assert len(_emitted_health_problems()) >= 7  # the source scan finds them all
