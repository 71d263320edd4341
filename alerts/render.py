"""Render a :class:`Notification` for Slack (Block Kit) and e-mail (subject, text, HTML).

One renderer, templates per medium (STYLE habit 9). Python gathers *what* to say about an
alert (:func:`describe`: a title, label/value facts, the error, links), raw and unescaped;
the templates decide *how* it looks and do all the escaping for their medium:

- ``slack/<kind>.json.j2``, falling back to ``slack/alert.json.j2``: Block Kit JSON. Every
  value goes through ``|tojson`` (never string-built JSON), and every untrusted text through
  ``|mrkdwn`` (``&``, ``<``, ``>`` escaped, so a scenario named ``<!channel>`` pings nobody).
  After rendering, :func:`enforce_slack_limits` cuts anything still over Slack's limits.
- ``email/<kind>.{subject,txt,html}.j2``, falling back to ``email/alert.*``: HTML is
  autoescaped (by file name), text is plain, the subject is forced onto one line.

A user ``templates_dir`` is searched before the bundled templates, so a file there with the
same name (``slack/alert.json.j2``) or a per-kind one (``email/quota.html.j2``) wins.
Templates use StrictUndefined: a typo in a template is an error, not an empty string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from alerts.notify.base import Notification
from watcher.events import SEVERITY
from watcher.resources import templates_dir as bundled_templates_dir
from watcher.settings_base import zone

__all__ = [
    "KIND_TITLES",
    "Renderer",
    "cut",
    "describe",
    "enforce_slack_limits",
    "mrkdwn_escape",
    "sample_notification",
]

# Slack's documented limits (https://api.slack.com/reference/block-kit/blocks and
# https://api.slack.com/methods/chat.postMessage#truncating).
SLACK_TEXT_MAX = 40_000
SLACK_BLOCKS_MAX = 50
SLACK_HEADER_MAX = 150
SLACK_SECTION_TEXT_MAX = 3_000
SLACK_FIELD_MAX = 2_000
SLACK_FIELDS_MAX = 10
SLACK_CONTEXT_ELEMENTS_MAX = 10
SLACK_BUTTON_TEXT_MAX = 75
SLACK_URL_MAX = 3_000
SLACK_ACTIONS_MAX = 25
EMAIL_SUBJECT_MAX = 250
ELLIPSIS = "…"

KIND_TITLES: dict[str, str] = {
    "execution_error": "Execution error",
    "execution_warning": "Execution warning",
    "execution_recovered": "Scenario recovered",
    "scenario_deactivated": "Scenario deactivated",
    "scenario_reactivated": "Scenario reactivated",
    "scenario_paused": "Scenario paused",
    "scenario_unpaused": "Scenario resumed",
    "incomplete_executions": "Incomplete executions",
    "quota": "Operations quota",
    "hook_backlog": "Webhook queue backlog",
    "scenario_overdue": "Scheduled run overdue",
    "scenario_idle": "Webhook scenario idle",
    "volume_anomaly": "Volume anomaly",
    "watcher_health": "makewatch health",
    "summary": "Alerts held back",
}

SEVERITY_STYLE: dict[str, tuple[str, str]] = {
    "critical": ("🚨", "Critical"),
    "error": ("🔴", "Error"),
    "warning": ("⚠️", "Warning"),
    "info": ("ℹ️", "Info"),  # noqa: RUF001 (the information emoji)
}
RESOLVED_STYLE = ("✅", "Resolved")
PHASE_LABELS = {"firing": "", "repeat": "Still happening", "resolved": "Resolved", "summary": ""}


# --- escaping and cutting ---------------------------------------------------------------

_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with "…" when cut.

    Never leaves half an ``&amp;``-style entity behind (it would show as text).
    """
    if len(text) <= limit:
        return text
    head = text[: max(0, limit - len(ELLIPSIS))]
    head = _ENTITY_TAIL.sub("", head)
    return head + ELLIPSIS


# Slack mrkdwn has no escape for its formatting characters (no backslash, no entities:
# https://api.slack.com/reference/surfaces/formatting#escaping lists only &, <, >), so in
# untrusted text they become look-alikes a reader takes for the same character: a scenario
# called "*bold*" shows as written, not in bold. "_" only at a word's edge: Slack formats
# "_it_" but leaves snake_case alone, so "sync_orders_v2" keeps its real underscores.
_LOOKALIKES = str.maketrans({"*": "\u2217", "~": "\u223c", "`": "\u02cb"})
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_FULLWIDTH_LOW_LINE = "\uff3f"


def mrkdwn_escape(text: Any, limit: int | None = None, *, formatting: bool = True) -> str:
    """Make untrusted text inert in Slack mrkdwn.

    ``&``, ``<``, ``>`` are escaped (Slack's three: no mention, no link), and, unless
    ``formatting=False`` (text inside a code block, where Slack formats nothing), ``*``,
    ``~``, backticks and word-edge ``_`` become look-alikes (∗ ∼ ˋ ＿) so the text shows as
    written, without bold, strike-through or code. With ``limit``, the *escaped* text is
    cut to that many characters.
    https://api.slack.com/reference/surfaces/formatting#escaping
    """
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if formatting:
        out = _EDGE_UNDERSCORE.sub(_FULLWIDTH_LOW_LINE, out.translate(_LOOKALIKES))
    return cut(out, limit) if limit is not None else out


def _mrkdwn_code(text: Any, limit: int | None = None) -> str:
    """:func:`mrkdwn_escape` for text inside a code block: ``&<>`` only."""
    return mrkdwn_escape(text, limit, formatting=False)


def _codeblock(text: Any) -> str:
    # A ``` inside untrusted text would close our code block early.
    return str(text).replace("```", "`\u200b`\u200b`")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def safe_url(url: Any) -> str | None:
    """An http(s) URL fit for a Slack button or an e-mail link, else None."""
    if not isinstance(url, str) or len(url) > SLACK_URL_MAX:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if any(c in url for c in "<>|\"' \n\r\t"):
        return None
    return url


def _local(epoch: Any, tz: tzinfo) -> datetime | None:
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return None
    return datetime.fromtimestamp(epoch, tz)


def _iso(epoch: Any, tz: tzinfo = UTC) -> str:
    t = _local(epoch, tz)
    return t.strftime("%Y-%m-%d %H:%M:%S %Z") if t else ""


# --- what to say about an alert -------------------------------------------------------


def _subject_of(kind: str, p: dict[str, Any], alert: dict[str, Any]) -> str:
    if kind == "hook_backlog":
        return str(p.get("hook_name") or f"webhook {p.get('hook_id', '?')}")
    if kind in ("quota", "watcher_health"):
        return str(p.get("organization") or p.get("component") or "")
    name = p.get("scenario_name")
    if name:
        return str(name)
    sid = alert.get("scenario_id")
    return f"scenario {sid}" if sid is not None else str(p.get("organization") or "")


def _fmt_number(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{int(value):,}"
    return str(value)


def _fmt_epoch(value: Any, tz: tzinfo = UTC) -> str:
    """Epoch seconds as date and time in ``tz`` (with the zone); anything else as it is."""
    t = _local(value, tz)
    return t.strftime("%Y-%m-%d %H:%M %Z") if t else str(value)


def _kind_facts(kind: str, p: dict[str, Any], tz: tzinfo = UTC) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []

    def add(label: str, key: str, fmt: Any = str) -> None:
        value = p.get(key)
        if value is not None and value != "":
            facts.append((label, fmt(value)))

    if kind in ("execution_error", "execution_warning", "execution_recovered"):
        add("Execution", "execution_id")
        add("Run type", "run_type")
        add("Operations", "operations", _fmt_number)
        add("Duration", "duration_ms", lambda ms: f"{ms / 1000:.1f} s")
        # Failed, then ran fine again before the first notice (alerts.engine): say so.
        add("Ran fine again", "recovered_at", lambda v: _fmt_epoch(v, tz))
    elif kind in ("scenario_deactivated", "scenario_reactivated"):
        add("Invalid", "is_invalid", lambda v: "yes" if v else "no")
        add("Incomplete executions", "dlq_count", _fmt_number)
        # Keys of watcher.poller's deactivation payload: the runs that made Make switch it off.
        causes = [e for e in p.get("errors") or () if isinstance(e, dict)]
        if causes:
            facts.append(
                (
                    "Why Make switched it off",
                    "; ".join(
                        f"{e.get('timestamp') or ''} {e.get('error_name') or 'Error'}: "
                        f"{cut(_one_line(e.get('error_message') or ''), 200)}".strip()
                        for e in causes
                    ),
                )
            )
        if kind == "scenario_deactivated":
            facts.append(
                (
                    "What to do",
                    "Fix the cause of the error, then turn the scenario back on in Make "
                    "(open it, switch scheduling ON); stored incomplete executions can then "
                    "be retried.",
                )
            )
    elif kind in ("scenario_paused", "scenario_unpaused"):
        add("Incomplete executions", "dlq_count", _fmt_number)
    elif kind == "incomplete_executions":
        add("Incomplete executions", "dlq_count", _fmt_number)
        add("Reason", "reason")
        if p.get("reasons") and not p.get("reason"):
            facts.append(("Reasons", "; ".join(str(r) for r in p["reasons"][:5])))
        add("Attempts", "attempts", _fmt_number)
    elif kind == "quota":
        # Keys of watcher.poller.quota_event's payload.
        pct = lambda v: f"{v:.0f} %" if isinstance(v, int | float) else str(v)  # noqa: E731
        add("Used", "used_pct", pct)
        add("Threshold crossed", "threshold_pct", pct)
        add("Operations used", "used", _fmt_number)
        add("Operations in the plan", "limit", _fmt_number)
        add("Average per day (7 days)", "daily_rate", _fmt_number)
        add("Quota resets", "next_reset", lambda v: _fmt_epoch(v, tz))
        if p.get("forecast_exhausted_at"):
            when = _fmt_epoch(p["forecast_exhausted_at"], tz)
            if p.get("exhausts_before_reset"):
                when += " (before the reset: scenarios will stop)"
            facts.append(("Forecast exhaustion", when))
    elif kind == "hook_backlog":
        if p.get("queue_count") is not None:
            ratio = p.get("ratio")
            pct = f" ({ratio:.0%})" if isinstance(ratio, int | float) else ""
            facts.append(
                (
                    "Queue",
                    f"{_fmt_number(p['queue_count'])} / {_fmt_number(p.get('queue_limit', '?'))}{pct}",
                )
            )
        add(
            "Alert threshold", "threshold", lambda v: f"{v:.0%}" if isinstance(v, float) else str(v)
        )
    elif kind in ("scenario_overdue", "scenario_idle", "volume_anomaly"):
        facts += [f for f in _key_facts(kind, "firing", p, tz) if f[0] != "What to do"]
    elif kind == "watcher_health":
        # Keys of the watcher_health events (watcher.poller, alerts.delivery).
        problems = {
            "token_rejected": "The API token was rejected (401): makewatch cannot see this organization.",
            "access_denied": "Access denied (403): wrong zone, or the token lacks a scope.",
            "scope_missing": "The token lacks a read scope; part of the monitoring is blind.",
            "unreachable": "Make could not be reached for several cycles in a row.",
            "rate_limited": "Make has answered 429 (too many requests) for over 2 minutes: polling of "
            "this organization waits; other integrations may be using its API budget.",
            "channel_failed": "A notification channel refused a message for good; it is parked.",
            "channel_failing": "A notification channel has failed every delivery for 10 minutes; "
            "its messages wait and are retried.",
        }
        if p.get("problem"):
            facts.append(("Problem", problems.get(str(p["problem"]), str(p["problem"]))))
        add("Missing scope", "scope")
        add("Channel", "channel")
        add("Failed cycles", "failures", _fmt_number)
        add("Failing since", "failing_since", lambda v: _fmt_epoch(v, tz))
        add("Last error", "error")
    return facts


def _sample(kind: str, s: dict[str, Any], ref: Any = None, tz: tzinfo = UTC) -> dict[str, str]:
    """One "recent occurrence" (an event payload) for the templates: ``text`` is the line to
    show, built only from the parts that are there (empty when there is nothing to say, and
    then the sample is left out); ``when``, ``error_name``, ``error_message``,
    ``execution_id``, ``dlq_id``, ``reason`` are the parts, for user templates."""
    raw_when = s.get("timestamp") or s.get("created") or ""
    when = _clock(_epoch_of(raw_when), ref, tz) or str(raw_when)
    name = _one_line(s.get("error_name") or "")
    message = cut(_one_line(s.get("error_message") or ""), 300)
    reason = cut(_one_line(s.get("reason") or ""), 300)
    dlq_id = str(s.get("dlq_id") or "")
    if kind == "incomplete_executions":
        what = f"Incomplete execution {dlq_id}" if dlq_id else "Incomplete execution"
        if not reason and s.get("reasons"):
            reason = cut(_one_line("; ".join(str(r) for r in s["reasons"][:5])), 300)
        headline = f"{what}: {reason}" if reason else (what if dlq_id else "")
    else:
        headline = ": ".join(part for part in (name, message) if part)
        if not headline and kind == "watcher_health":
            headline = cut(_one_line(s.get("error") or ""), 300)
    text = " · ".join(part for part in (_one_line(when), headline) if part) if headline else ""
    return {
        "text": text,
        "when": str(when),
        "error_name": name,
        "error_message": message,
        "execution_id": str(s.get("execution_id") or ""),
        "dlq_id": dlq_id,
        "reason": reason,
    }


# --- what Slack says first ---------------------------------------------------------------
# Slack gets a sentence, not a grid: "In 10 seconds a reader must know what broke, where,
# how bad, since when, what to do" (issue 13). These keys are Slack's; e-mail keeps `facts`.


def _clock(epoch: Any, ref: Any = None, tz: tzinfo = UTC) -> str:
    """``07:02 CET``, with the day in front (``Fri 25 Sep 07:02 CEST``) unless it is the day
    of ``ref``: a reader at 2 a.m. wants a time, not a timestamp."""
    t = _local(epoch, tz)
    if t is None:
        return ""
    r = _local(ref, tz)
    if r is not None and r.date() == t.date():
        return t.strftime("%H:%M %Z")
    return t.strftime("%a %d %b %H:%M %Z")


def _day(epoch: Any, tz: tzinfo = UTC) -> str:
    """``Wed 30 Sep``."""
    t = _local(epoch, tz)
    return t.strftime("%a %d %b") if t else ""


def _span(first: Any, last: Any, tz: tzinfo = UTC) -> str:
    """When an alert happened, compactly: one time, or first–last."""
    one, two = _local(first, tz), _local(last, tz)
    if one is None or two is None or one.strftime("%Y%m%d%H%M") == two.strftime("%Y%m%d%H%M"):
        return _clock(first if one is not None else last, None, tz)
    if one.date() == two.date():
        return f"{one:%a %d %b %H:%M}–{two:%H:%M %Z}"
    return f"{_clock(first, None, tz)} – {_clock(last, None, tz)}"


def _times(count: Any) -> str:
    return "once" if count == 1 else f"{_fmt_number(count)} times"


def _pct(value: Any) -> str:
    return f"{value:.0f} %" if isinstance(value, int | float) and not isinstance(value, bool) else ""


_HEALTH_HEADLINES = {
    "token_rejected": "Make rejected the API token (401)",
    "access_denied": "Make denied access (403)",
    "scope_missing": "the API token lacks a read scope",
    "unreachable": "Make is unreachable",
    "rate_limited": "Make keeps answering 429, polling waits",
    "channel_failed": "a notification channel refused a message for good",
    "channel_failing": "a notification channel keeps failing",
}


def _headline(
    kind: str, phase: str, p: dict[str, Any], alert: dict[str, Any], subject: str, tz: tzinfo = UTC
) -> str:
    """What happened, in words, without the emoji and the phase label."""
    count = alert.get("count") or 1
    since = alert.get("count_since_notice")
    first, last = alert.get("first_seen"), alert.get("last_seen")
    name = str(p.get("error_name") or "")
    tail = f": {name}" if name else ""
    s = subject or "A scenario"
    if kind in ("execution_error", "execution_warning"):
        failed, fine = (
            ("failed", "ran fine again")
            if kind == "execution_error"
            else ("ran with warnings", "ran without warnings again")
        )
        if phase == "resolved":
            at = _clock(p.get("resolved_at"), last, tz)
            return f"{s} {fine}" + (f" at {at}" if at else "") + (
                f" after failing {_times(count)}" if count > 1 and kind == "execution_error" else ""
            )
        if p.get("recovered_at") is not None:  # failed, then ran fine before the first notice
            return f"{s} {failed} {_times(count)}, {fine} at {_clock(p['recovered_at'], last, tz)}{tail}"
        if phase == "repeat":
            more = f", {_fmt_number(since)} more" if since else ""
            return f"{s} {failed} again{more} ({_times(count)} since {_clock(first, last, tz)}){tail}"
        if count > 1:
            return f"{s} {failed} {_times(count)} since {_clock(first, last, tz)}{tail}"
        return f"{s} {failed} at {_clock(last or first, last or first, tz)}{tail}" if (last or first) else f"{s} {failed}{tail}"
    if kind == "test":
        where = f" on channel {p['channel']}" if p.get("channel") else ""
        return f"makewatch test message{where}: alerts will reach you here (nothing is wrong)"
    if kind == "execution_recovered":
        at = _clock(_epoch_of(p.get("timestamp")) or last, last, tz)
        return f"{s} ran fine again" + (f" at {at}" if at else "")
    if kind == "scenario_reactivated":
        return f"{s} is switched on again"
    if kind == "scenario_unpaused":
        return f"{s} runs again"
    if kind == "scenario_deactivated":
        if phase == "resolved":
            return f"{s} is switched on again"
        if phase == "repeat":
            return f"{s} is still switched off"
        causes = [e for e in p.get("errors") or () if isinstance(e, dict)]
        n_err = f" after {len(causes)} errors" if len(causes) > 1 else ""
        return f"Make switched off {s}{n_err}{tail}"
    if kind == "scenario_paused":
        return {"resolved": f"{s} runs again", "repeat": f"{s} is still paused"}.get(phase, f"{s} was paused")
    if kind == "incomplete_executions":
        if phase == "resolved":
            return f"{s} has no incomplete executions waiting"
        waiting = p.get("dlq_count")
        what = (
            f"{_fmt_number(waiting)} incomplete executions"
            if isinstance(waiting, int) and waiting != 1
            else "an incomplete execution"
        )
        reason = _one_line(p.get("reason") or "")
        new = ", new ones since the last notice" if phase == "repeat" else ""
        return f"{s} has {what} waiting{new}" + (f": {reason}" if reason else "")
    if kind == "quota":
        org = subject or "The organization"
        if phase == "resolved":
            used = _pct(p.get("used_pct"))
            return f"{org} is back under {_pct(p.get('threshold_pct')) or 'the threshold'} of its operations" + (
                f" ({used} used)" if used else ""
            )
        if p.get("forecast_exhausted_at") and p.get("exhausts_before_reset"):
            # The key sentence first (issue 13): when it stops, and that it is before the reset.
            reset = _day(p.get("next_reset"), tz)
            return (
                f"{org} runs out of Make operations around {_clock(p['forecast_exhausted_at'], None, tz)}"
                + (f", before the reset on {reset}" if reset else ", before the quota resets")
                + ": every scenario will stop"
            )
        line = f"{org} has used {_pct(p.get('used_pct')) or 'most'} of its Make operations"
        if p.get("next_reset"):
            return line + f"; the quota resets on {_day(p['next_reset'], tz)}"
        return line
    if kind == "hook_backlog":
        queue = ""
        if p.get("queue_count") is not None:
            queue = f"{_fmt_number(p['queue_count'])} / {_fmt_number(p.get('queue_limit', '?'))}"
            ratio = p.get("ratio")
            if isinstance(ratio, int | float) and phase != "resolved":
                queue += f" ({ratio:.0%})"
        scenario = f" for {p['scenario_name']}" if p.get("scenario_name") else ""
        if phase == "resolved":
            return f"Webhook queue of {s}{scenario} is down" + (f" to {queue}" if queue else "")
        still = "still " if phase == "repeat" else ""
        rising = " and rising while its scenario does not run" if p.get("rising") else ""
        return f"Webhook queue of {s}{scenario} is {still}" + (f"at {queue}" if queue else "long") + rising
    if kind == "scenario_overdue":
        return _overdue_headline(phase, p, s, tz)
    if kind == "scenario_idle":
        return _idle_headline(phase, p, s, tz)
    if kind == "volume_anomaly":
        return _volume_headline(phase, p, s)
    if kind == "watcher_health":
        where = f" for {subject}" if subject else ""
        if phase == "resolved":
            return f"makewatch health: back to normal{where}"
        problem = _HEALTH_HEADLINES.get(str(p.get("problem") or ""), str(p.get("problem") or "a problem"))
        return f"makewatch health: {problem}{where}"
    return ""


def _duration(seconds: Any) -> str:
    """``45 s``, ``25 min``, ``1 h 10 min``, ``2 d 3 h``: how late, for a reader."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m = round(s / 60)
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h" + (f" {m} min" if m else "")
    d, h = divmod(h, 24)
    return f"{d} d" + (f" {h} h" if h else "")


_SCHEDULE_WORDS = {"daily": "every day", "weekly": "every week", "monthly": "every month"}


def _overdue_headline(phase: str, p: dict[str, Any], s: str, tz: tzinfo) -> str:
    """Keys of watcher.events.overdue_event's payload."""
    due = _clock(p.get("due_at"), p.get("resolved_at") or p.get("due_at"), tz)
    run = f"its {due} run" if due else "its scheduled run"
    if phase == "resolved":
        if p.get("resolution") == "not expected":
            return f"{s} is no longer expected to run at {due or 'its scheduled time'} (switched off, paused or rescheduled)"
        return f"{s} ran again" + (f" at {_clock(p['resolved_at'], p.get('due_at'), tz)}" if p.get("resolved_at") else "")
    if phase == "repeat":
        return f"{s} is still overdue: {run} has not happened"
    late = _duration(p.get("late_s"))
    return f"{s} is overdue: {run} has not happened" + (f" (due {late} ago)" if late else "")


def _idle_headline(phase: str, p: dict[str, Any], s: str, tz: tzinfo) -> str:
    """Keys of the scenario_idle payload (watcher.poller._silent)."""
    if phase == "resolved":
        if p.get("resolution") == "not expected":
            return f"{s} is no longer watched for silence (switched off or paused)"
        return f"{s} runs again" + (f" since {_clock(p['resolved_at'], p['resolved_at'], tz)}" if p.get("resolved_at") else "")
    last = p.get("last_run_at")
    ref = p.get("resolved_at") or (last + p["silent_s"] if isinstance(last, int | float) and isinstance(p.get("silent_s"), int | float) else None)
    since = _clock(last, ref, tz) if last else ""
    head = f"{s} {'still ' if phase == 'repeat' else ''}has not run" + (f" since {since}" if since else "")
    if phase == "repeat":
        return head
    silent = _duration(p.get("silent_s"))
    if p.get("basis") == "expect_every":
        every = _duration(p.get("expect_every_s"))
        hours = " of business hours" if p.get("business_hours") else ""
        return head + (f" ({silent}{hours}; expected at least every {every})" if silent else "")
    usual = p.get("expected_runs")
    told = f"; it usually runs about {_fmt_number(round(usual))} times in that time" if isinstance(usual, int | float) else ""
    return head + (f" ({silent}{told})" if silent else "")


def _weekday_of(day: Any) -> str:
    try:
        return date.fromisoformat(str(day)).strftime("%A")
    except ValueError:
        return "day"


def _volume_headline(phase: str, p: dict[str, Any], s: str) -> str:
    """Keys of watcher.events.volume_facts (a scenario's, or an organization's, day)."""
    day = p.get("day")
    when = f" on {date.fromisoformat(day):%a %d %b}" if isinstance(day, str) and day[:4].isdigit() else ""
    ops = f"{_fmt_number(p['operations'])} operations" if p.get("operations") is not None else "its operations"
    if phase == "resolved":
        return f"{s} is back to its usual volume" + (f" ({ops}{when})" if p.get("operations") is not None else "")
    if phase == "repeat":
        return f"{s} is still far from its usual volume ({ops}{when})"
    usual = f"its usual {_weekday_of(day)} (median {_fmt_number(p.get('median', '?'))})"
    ratio = p.get("ratio")
    if p.get("direction") == "spike":
        times = f"{ratio:.0f}×" if isinstance(ratio, int | float) else "far above"
        return f"{s} used {ops}{when}: {times} {usual}"
    below = f"{(1 - ratio) * 100:.0f} % below" if isinstance(ratio, int | float) else "far below"
    return f"{s} used {ops}{when}: {below} {usual}"


def _volume_facts(phase: str, p: dict[str, Any]) -> list[tuple[str, str]]:
    if phase == "resolved":
        return []
    facts = []
    if p.get("baseline"):
        same = ", ".join(_fmt_number(x) for x in p["baseline"])
        weeks = len(p["baseline"])
        facts.append(("Same weekday before", f"{same} (the {weeks} previous weeks; spread {_fmt_number(p.get('mad', 0))})"))
    days = [d for d in p.get("days") or () if isinstance(d, list | tuple) and len(d) == 2]
    if days:
        facts.append(("Last two weeks", " ".join(_fmt_number(v) for _, v in days)))
    return facts


def _idle_facts(phase: str, p: dict[str, Any], tz: tzinfo) -> list[tuple[str, str]]:
    if phase == "resolved":
        return []
    facts = [("Last run seen", _fmt_epoch(p["last_run_at"], tz))] if p.get("last_run_at") else []
    if p.get("business_hours"):
        facts.append(("Business hours", str(p["business_hours"])))
    facts.append(
        (
            "What to do",
            "Check what feeds its webhook (a form, an app's webhook settings, a connection): "
            "Make logs nothing when no data arrives.",
        )
    )
    return facts


def _overdue_facts(phase: str, p: dict[str, Any], tz: tzinfo) -> list[tuple[str, str]]:
    if phase == "resolved":
        return []
    facts = [("Due", _fmt_epoch(p["due_at"], tz))] if p.get("due_at") is not None else []
    kind, interval = p.get("scheduling_type"), p.get("interval_s")
    if kind == "indefinitely" and interval:
        facts.append(("Schedule", f"every {_duration(interval)}"))
    elif kind in _SCHEDULE_WORDS:
        facts.append(("Schedule", _SCHEDULE_WORDS[str(kind)]))
    if p.get("allowance_s"):
        facts.append(("Alert after", f"{_duration(p['allowance_s'])} late, with no run"))
    if p.get("is_waiting"):
        facts.append(("Make says", "waiting (iswaiting): the run may be stuck in Make's queue"))
    facts.append(
        (
            "What to do",
            "Open the scenario's history in Make: a run stuck in the queue, a trigger that no "
            "longer fires or a connection that needs re-authorising all look like this.",
        )
    )
    return facts


def headline(kind: str, payload: dict[str, Any], subject: str, tz: tzinfo = UTC) -> str:
    """What a firing notice of ``kind`` says first, in words (the digest lists the same)."""
    return _headline(kind, "firing", payload, {}, subject, tz)


def _key_facts(kind: str, phase: str, p: dict[str, Any], tz: tzinfo = UTC) -> list[tuple[str, str]]:
    """The few label/value lines a kind needs beyond its headline. A resolved notice keeps
    only what is still true (no forecast of an exhaustion that is no longer coming)."""
    if kind == "quota":
        facts = []
        if p.get("used") is not None:
            used = f"{_fmt_number(p['used'])} of {_fmt_number(p.get('limit', '?'))} operations"
            if p.get("daily_rate") is not None:
                used += f", about {_fmt_number(round(p['daily_rate']))} a day"
            facts.append(("Used", used))
        if phase == "resolved":
            return facts
        if p.get("forecast_exhausted_at") and not p.get("exhausts_before_reset"):
            # (When it runs out before the reset, the headline says so already.)
            facts.append(("Forecast", f"runs out around {_fmt_epoch(p['forecast_exhausted_at'], tz)}, after the reset"))
        if p.get("next_reset"):
            facts.append(("Quota resets", _fmt_epoch(p["next_reset"], tz)))
        return facts
    if kind == "hook_backlog":
        return [f for f in _kind_facts(kind, p, tz) if phase != "resolved" or f[0] == "Queue"] + (
            [("Scenario", str(p["scenario_name"]))] if p.get("scenario_name") else []
        )
    if kind in ("watcher_health", "incomplete_executions", "scenario_paused"):
        return [] if phase == "resolved" else _kind_facts(kind, p, tz)
    if kind == "scenario_overdue":
        return _overdue_facts(phase, p, tz)
    if kind == "scenario_idle":
        return _idle_facts(phase, p, tz)
    if kind == "volume_anomaly":
        return _volume_facts(phase, p)
    return []


def _notice(n: Notification, p: dict[str, Any], tz: tzinfo) -> str:
    """Which notice this is, in words: "First notice", "Repeat: 4 more since 09:00 UTC",
    "Resolved at 10:12 UTC" (never the engine's reason codes)."""
    alert = n.alert
    if n.phase == "summary":
        return "Summary of the alerts held back: too many came at once"
    if n.phase == "resolved":
        at = _clock(p.get("resolved_at") or alert.get("last_seen"), alert.get("last_seen"), tz)
        return f"Resolved at {at}" if at else "Resolved"
    if n.phase == "repeat":
        since = alert.get("count_since_notice")
        prev = _clock(alert.get("previous_notice_at"), alert.get("last_seen"), tz)
        more = f"{_fmt_number(since)} more" if since else "still going on"
        return f"Repeat: {more}" + (f" since {prev}" if prev else "")
    return {
        "reopened": "First notice since it was resolved",
        "escalated": "New notice: it got worse",
        "silence ended": "Held back by a silence until now",
    }.get(
        n.reason, "First notice"
    )


def _details(n: Notification, p: dict[str, Any]) -> list[str]:
    """The compact footer: where it ran and the run's own figures, each short."""
    alert = n.alert
    out = []
    if p.get("organization"):
        out.append(str(p["organization"]))
    if alert.get("team_id") is not None:
        out.append(f"Team {p['team_name']} ({alert['team_id']})" if p.get("team_name") else f"Team {alert['team_id']}")
    if p.get("execution_id"):
        out.append(f"Execution {p['execution_id']}")
    if isinstance(p.get("operations"), int | float) and not isinstance(p.get("operations"), bool):
        ops = p["operations"]
        out.append(f"{_fmt_number(ops)} operation{'' if ops == 1 else 's'}")
    if isinstance(p.get("duration_ms"), int | float) and not isinstance(p.get("duration_ms"), bool):
        out.append(f"{p['duration_ms'] / 1000:.1f} s")
    if p.get("run_type"):
        out.append(f"run type {p['run_type']}")
    return [x for x in out if x.strip()]


def _summary_context(n: Notification, p: dict[str, Any], subject: str, tz: tzinfo) -> dict[str, Any]:
    """The reader-first keys both media use: a headline in words, the few facts that
    matter, the causes and what to do, one context line, which notice this is."""
    alert = n.alert
    headline = _headline(n.kind, n.phase, p, alert, subject, tz)
    ended = silence_ended_text(p.get("silence_ended"))
    if ended and n.phase != "resolved":
        headline = f"Still failing after {ended} ended: {headline}"
    causes = []
    if n.kind == "scenario_deactivated" and n.phase != "resolved":
        for e in p.get("errors") or ():
            if isinstance(e, dict):
                line = ": ".join(
                    x
                    for x in (
                        _one_line(e.get("error_name") or ""),
                        cut(_one_line(e.get("error_message") or ""), 300),
                    )
                    if x
                )
                if line:
                    when = _clock(_epoch_of(e.get("timestamp")), alert.get("last_seen"), tz)
                    causes.append(f"{when} · {line}" if when else line)
    todo = ""
    if n.kind == "scenario_deactivated" and n.phase != "resolved":
        dlq = p.get("dlq_count")
        todo = "Fix the cause of the error, then turn the scenario back on in Make (open it, switch scheduling ON)" + (
            f"; its {_fmt_number(dlq)} stored incomplete executions can then be retried." if dlq else "."
        )
    where = []
    if p.get("organization") and n.kind != "quota":
        where.append(str(p["organization"]))
    if alert.get("team_id") is not None:
        where.append(f"{p['team_name']} ({alert['team_id']})" if p.get("team_name") else f"Team {alert['team_id']}")
    when = []
    if n.kind != "summary":
        span = _span(alert.get("first_seen"), alert.get("last_seen"), tz)
        if span:
            when.append(span)
        count = alert.get("count")
        if isinstance(count, int) and count > 1:
            when.append(f"{_fmt_number(count)} occurrences")
    notice = _notice(n, p, tz)
    return {
        "headline": headline,
        "key_facts": _key_facts(n.kind, n.phase, p, tz),
        "causes": causes,
        "todo": todo,
        "context_parts": [x for x in where + when if x.strip()],
        "notice": notice,
        "footer": [x for x in [notice, *when] if x.strip()],
        "details": _details(n, p),
    }


def silence_ended_text(silence: Any) -> str:
    """``the maintenance window 'Kontor nightly maintenance'`` / ``silence 12 (deploy)``
    for the ``silence_ended`` of a notice (alerts.engine): raw text, escaped where shown."""
    if not isinstance(silence, Mapping):
        return ""
    name = cut(_one_line(silence.get("name") or ""), 120)
    reason = cut(_one_line(silence.get("reason") or ""), 120)
    if silence.get("window"):
        return f"the maintenance window '{name or reason or silence.get('id')}'"
    sid = str(silence.get("id") or "")
    return f"silence {sid}" + (f" ({reason})" if reason else "") if sid else "a silence"


def _epoch_of(value: Any) -> float | None:
    """An ISO 8601 timestamp (as Make's payloads carry them) as epoch seconds, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


_PRIMARY_LINK = {
    "execution_error": "run_url",
    "execution_warning": "run_url",
    "scenario_deactivated": "scenario_url",
    "scenario_paused": "scenario_url",
    "incomplete_executions": "dlq_url",
    "quota": "usage_url",
    "hook_backlog": "scenario_url",
    "scenario_overdue": "history_url",
    "scenario_idle": "history_url",
    "volume_anomaly": "history_url",
}
_LINKS = (
    ("run_url", "Open the failed run in Make"),
    ("scenario_url", "Open the scenario in Make"),
    ("dlq_url", "Incomplete executions"),
    ("usage_url", "Operations usage in Make"),
    ("history_url", "Run history"),
)


def payload_links(p: Mapping[str, Any], kind: str = "") -> list[dict[str, Any]]:
    """``[{label, url, primary}]`` for every safe link in an alert's payload, the kind's one
    primary link first (the button), then the rest (notices and the status page show the
    same ones)."""
    primary = _PRIMARY_LINK.get(kind, "run_url")
    links = [
        {"label": label, "url": url, "primary": key == primary}
        for key, label in _LINKS
        if (url := safe_url(p.get(key)))
    ]
    if links and not any(link["primary"] for link in links):
        links[0]["primary"] = True
    return sorted(links, key=lambda link: not link["primary"])


def _topic(kind: str, p: dict[str, Any], title: str, subject: str) -> str:
    """What an e-mail subject names: stable across the notices of one alert (they thread),
    and with the error's name, so two different failures of one scenario differ in an inbox."""
    name = _one_line(p.get("error_name") or "")
    if kind in ("execution_error", "execution_warning") and subject:
        verb = "failed" if kind == "execution_error" else "ran with warnings"
        return f"{subject} {verb}" + (f": {name}" if name else "")
    return title


def describe(n: Notification, tz: str | tzinfo = "UTC") -> dict[str, Any]:
    """The template context for ``n``: raw (unescaped) text, picked per kind, with times in
    ``tz`` (the channel's zone; its abbreviation is shown beside every time).

    Keys: kind, kind_title, phase, phase_label, severity, sev {emoji, label}, base_sev,
    reason, title, topic (what the subject names), organization, team_id, scenario_name,
    scenario_id, count, count_since_notice, first_seen, last_seen (text in the zone),
    headline (what happened, in words), error {name, message} or None (None once resolved:
    the error is no longer the news), causes, todo, key_facts [(label, value)], notice
    ("First notice", "Repeat: 4 more since 09:00 UTC", "Resolved at 10:12 UTC"), footer
    (the notice, when, how often), details (where and the run's figures), context_parts
    (Slack's one context line), links [{label, url, primary}] (the primary
    one first), primary (that link or None), secondary (the others), tz_name, facts (every
    label/value, for user templates), samples, held_back, p (the payload), alert, n.
    """
    zone_ = zone(tz) if isinstance(tz, str) else tz
    alert = n.alert
    p: dict[str, Any] = dict(alert.get("payload") or {})
    kind_title = KIND_TITLES.get(n.kind, n.kind.replace("_", " ").capitalize())
    subject = _subject_of(n.kind, p, alert)
    if n.kind == "summary":
        title = f"{len(alert.get('held_back') or [])} alerts held back by the flood cap"
    else:
        title = f"{kind_title}: {subject}" if subject else kind_title
    base_sev = SEVERITY_STYLE.get(n.severity, ("•", n.severity.capitalize()))
    sev = RESOLVED_STYLE if n.phase == "resolved" else base_sev

    facts: list[tuple[str, str]] = []
    if p.get("organization"):
        facts.append(("Organization", str(p["organization"])))
    if alert.get("team_id") is not None:
        team = f"{p['team_name']} ({alert['team_id']})" if p.get("team_name") else str(alert["team_id"])
        facts.append(("Team", team))
    if p.get("scenario_name") and n.kind not in ("summary",):
        facts.append(("Scenario", str(p["scenario_name"])))
    facts += _kind_facts(n.kind, p, zone_)
    count = alert.get("count")
    since = alert.get("count_since_notice")
    if count is not None and n.kind != "summary":
        facts.append(("Occurrences", _fmt_number(count)))
    if n.phase == "repeat" and since is not None:
        facts.append(("Since last notice", _fmt_number(since)))
    if n.phase == "resolved" and p.get("resolved_at") is not None:
        facts.append(("Resolved at", _fmt_epoch(p["resolved_at"], zone_)))
    first_seen, last_seen = _iso(alert.get("first_seen"), zone_), _iso(alert.get("last_seen"), zone_)
    if first_seen:
        facts.append(("First seen", first_seen))
    if last_seen:
        facts.append(("Last seen", last_seen))

    error = None
    if (p.get("error_name") or p.get("error_message")) and n.phase != "resolved":
        error = {
            "name": str(p.get("error_name") or "Error"),
            "message": str(p.get("error_message") or ""),
        }

    links = payload_links(p, n.kind)

    samples = []
    if (count or 0) > 1:
        for s in (alert.get("samples") or [])[:5]:
            if isinstance(s, dict):
                sample = _sample(n.kind, s, alert.get("last_seen"), zone_)
                if sample["text"]:
                    samples.append(sample)

    held_back = []
    for h in alert.get("held_back") or []:
        if isinstance(h, dict):
            hk = str(h.get("kind") or "")
            h_sev = SEVERITY_STYLE.get(str(h.get("severity") or ""), ("•", ""))
            held_back.append(
                {
                    "emoji": h_sev[0],
                    "kind_title": KIND_TITLES.get(hk, hk.replace("_", " ")) or "Alert",
                    "subject": str(
                        h.get("scenario") or h.get("scenario_name") or h.get("org") or h.get("organization") or ""
                    ),
                    "count": h.get("count") or 1,
                }
            )

    return _summary_context(n, p, subject, zone_) | {
        "n": n,
        "alert": alert,
        "p": p,
        "kind": n.kind,
        "kind_title": kind_title,
        "phase": n.phase,
        "phase_label": PHASE_LABELS.get(n.phase, ""),
        "severity": n.severity,
        "sev": {"emoji": sev[0], "label": sev[1]},
        "base_sev": {"emoji": base_sev[0], "label": base_sev[1]},
        "reason": n.reason,
        "title": title,
        "topic": _topic(n.kind, p, title, subject),
        "organization": str(p.get("organization") or ""),
        "team_id": alert.get("team_id"),
        "scenario_name": str(p.get("scenario_name") or ""),
        "scenario_id": alert.get("scenario_id"),
        "count": count,
        "count_since_notice": since,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "facts": facts,
        "error": error,
        "links": links,
        "primary": next((link for link in links if link["primary"]), None),
        "secondary": [link for link in links if not link["primary"]],
        "tz_name": str(getattr(zone_, "key", None) or zone_),
        "samples": samples,
        "held_back": held_back,
    }


# --- Slack limits -----------------------------------------------------------------------


def _cut_text_obj(obj: Any, limit: int) -> None:
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        obj["text"] = cut(obj["text"], limit)


def enforce_slack_limits(message: dict[str, Any]) -> dict[str, Any]:
    """Cut a rendered message to Slack's limits (in place, and returned).

    The templates already cut long values; this is the net under user templates and
    unforeseen inputs: Slack rejects the whole message (``invalid_blocks``,
    ``msg_too_long``) when one limit is crossed.
    """
    if isinstance(message.get("text"), str):
        message["text"] = cut(message["text"], SLACK_TEXT_MAX)
    blocks = message.get("blocks")
    if not isinstance(blocks, list):
        return message
    if len(blocks) > SLACK_BLOCKS_MAX:
        dropped = len(blocks) - (SLACK_BLOCKS_MAX - 1)
        blocks[:] = blocks[: SLACK_BLOCKS_MAX - 1] + [
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"{ELLIPSIS} {dropped} more blocks not shown"}
                ],
            }
        ]
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "header":
            _cut_text_obj(block.get("text"), SLACK_HEADER_MAX)
        elif kind == "section":
            _cut_text_obj(block.get("text"), SLACK_SECTION_TEXT_MAX)
            fields = block.get("fields")
            if isinstance(fields, list):
                del fields[SLACK_FIELDS_MAX:]
                for f in fields:
                    _cut_text_obj(f, SLACK_FIELD_MAX)
        elif kind == "context":
            elements = block.get("elements")
            if isinstance(elements, list):
                del elements[SLACK_CONTEXT_ELEMENTS_MAX:]
                for e in elements:
                    _cut_text_obj(e, SLACK_SECTION_TEXT_MAX)
        elif kind == "actions":
            elements = block.get("elements")
            if isinstance(elements, list):
                del elements[SLACK_ACTIONS_MAX:]
                for e in elements:
                    if isinstance(e, dict):
                        _cut_text_obj(e.get("text"), SLACK_BUTTON_TEXT_MAX)
    return message


# --- the renderer -----------------------------------------------------------------------


def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith((".html.j2", ".html"))


class Renderer:
    """Jinja environment over a user ``templates_dir`` (first) and the bundled templates."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        search = [str(templates_dir)] if templates_dir is not None else []
        search.append(str(bundled_templates_dir()))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["mrkdwn"] = mrkdwn_escape
        self.env.filters["mrkdwn_code"] = _mrkdwn_code
        self.env.filters["tojson"] = _tojson
        self.env.filters["cut"] = cut
        self.env.filters["codeblock"] = _codeblock
        self.env.filters["one_line"] = _one_line

    def _template(self, medium: str, kind: str, suffix: str) -> jinja2.Template:
        return self.env.select_template([f"{medium}/{kind}.{suffix}", f"{medium}/alert.{suffix}"])

    def render_slack(self, n: Notification, *, part: str = "message", tz: str | tzinfo = "UTC") -> dict[str, Any]:
        """Block Kit for ``n``: ``{"text": fallback, "blocks": [...]}`` within Slack's limits,
        times in the zone ``tz``.

        ``part="reply"`` is the short thread reply that accompanies the update of the
        original message when an alert resolves.
        """
        template = self._template("slack", n.kind, "json.j2")
        source = template.render(**describe(n, tz), part=part)
        try:
            message = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"template {template.name} rendered invalid JSON (line {exc.lineno}): {exc.msg}"
            ) from None
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            raise ValueError(f"template {template.name} must render an object with a text key")
        return enforce_slack_limits(message)

    def render_email(self, n: Notification, tz: str | tzinfo = "UTC") -> tuple[str, str, str]:
        """``(subject, text, html)`` for ``n``, times in the zone ``tz``; the subject is one line."""
        ctx = describe(n, tz)
        subject = self._template("email", n.kind, "subject.j2").render(**ctx)
        text = self._template("email", n.kind, "txt.j2").render(**ctx)
        html = self._template("email", n.kind, "html.j2").render(**ctx)
        return cut(_one_line(subject), EMAIL_SUBJECT_MAX), text.strip() + "\n", html

    def render_digest(self, digest: Any, *, max_rows: int = 20) -> tuple[str, str, str]:
        """``(subject, text, html)`` of a daily digest (:class:`alerts.digest.Digest`).

        Templates ``email/digest.{subject,txt,html}.j2`` (a user ``templates_dir`` may
        override them) get ``d`` (the digest), ``max_rows`` (rows listed per section; the
        counts always cover everything), ``plural(n, word[, words])``, ``num(x)`` and
        ``pct(x)``. The subject is forced onto one line.
        """

        def plural(n: Any, word: str, words: str | None = None) -> str:
            return f"{_fmt_number(n)} {word if n == 1 else (words or word + 's')}"

        def pct(value: Any) -> str:
            if not isinstance(value, int | float) or isinstance(value, bool):
                return "?"
            return f"{value:.0f} %" if float(value).is_integer() else f"{value:.1f} %"

        ctx = {"d": digest, "max_rows": max_rows, "plural": plural, "num": _fmt_number, "pct": pct}
        subject = self.env.get_template("email/digest.subject.j2").render(**ctx)
        text = self.env.get_template("email/digest.txt.j2").render(**ctx)
        html = self.env.get_template("email/digest.html.j2").render(**ctx)
        return cut(_one_line(subject), EMAIL_SUBJECT_MAX), text.strip() + "\n", html


# --- samples for `makewatch render` -------------------------------------------------------

_SAMPLE_NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
_UI = "https://eu1.make.com"


def _sample_payload(kind: str) -> dict[str, Any]:
    scenario = {
        "organization": "Acme Ops",
        "scenario_name": "Sync HubSpot contacts → Google Sheets",
        "scenario_url": f"{_UI}/812/scenarios/4211/edit",
        "history_url": f"{_UI}/812/scenarios/4211/logs",
    }
    if kind in ("execution_error", "execution_warning"):
        return scenario | {
            "execution_id": "a4c5d0e1b2f34c56a7b8c9d0e1f2a3b4",
            "error_name": "RuntimeError" if kind == "execution_error" else "Warning",
            "error_message": "[429] Rate limit exceeded for HubSpot API (daily limit reached).",
            "duration_ms": 4210,
            "operations": 3,
            "run_type": "auto",
            "timestamp": "2026-09-21T14:12:58+00:00",
            "run_url": f"{_UI}/812/scenarios/4211/logs/a4c5d0e1b2f34c56a7b8c9d0e1f2a3b4?showCheckRuns=true",
        }
    if kind == "execution_recovered":
        return scenario | {"execution_id": "b5d6e1f2", "timestamp": "2026-09-21T14:30:02+00:00"}
    if kind in (
        "scenario_deactivated",
        "scenario_reactivated",
        "scenario_paused",
        "scenario_unpaused",
    ):
        return scenario | {
            "is_active": kind in ("scenario_reactivated", "scenario_unpaused"),
            "is_invalid": kind == "scenario_deactivated",
            "is_paused": kind == "scenario_paused",
            "dlq_count": 2,
            "standing": False,
        } | (
            {
                "error_name": "ConnectionError",
                "error_message": "Connection refused by api.hubapi.com",
                "errors": [
                    {
                        "error_name": "ConnectionError",
                        "error_message": "Connection refused by api.hubapi.com",
                        "timestamp": f"2026-09-21T14:1{i}:00+00:00",
                    }
                    for i in (0, 2)
                ],
            }
            if kind == "scenario_deactivated"
            else {}
        )
    if kind == "incomplete_executions":
        return scenario | {
            "dlq_id": "d1e2f3a4",
            "reason": "Connection to Google Sheets expired",
            "attempts": 3,
            "size": 2048,
            "dlq_count": 7,
            "dlq_url": f"{_UI}/812/scenarios/4211/dlqs",
        }
    if kind == "quota":
        return {
            "organization": "Acme Ops",
            "usage_url": f"{_UI}/organization/1001/dashboard",
            "threshold_pct": 90,
            "used": 9140,
            "limit": 10000,
            "used_pct": 91.4,
            "daily_rate": 310.5,
            "forecast_exhausted_at": _SAMPLE_NOW + 2.8 * 86400,
            "next_reset": _SAMPLE_NOW + 9 * 86400,
            "exhausts_before_reset": True,
        }
    if kind == "hook_backlog":
        return {
            "organization": "Acme Ops",
            "hook_id": 93,
            "hook_name": "Shopify orders",
            "queue_count": 8600,
            "queue_limit": 10000,
            "ratio": 0.86,
            "threshold": 0.8,
            "scenario_id": 4211,
            "scenario_name": "Sync HubSpot contacts → Google Sheets",
            "scenario_url": f"{_UI}/812/scenarios/4211/edit",
        }
    if kind == "scenario_overdue":
        due = _SAMPLE_NOW - 4200  # 13:03 UTC, 1 h 10 min before the sample's "now"
        return scenario | {
            "scenario_name": "Nightly export",
            "due_at": due,
            "scheduling_type": "daily",
            "interval_s": None,
            "late_s": 4200,
            "allowance_s": 300,
            "is_waiting": False,
            "standing": False,
        }
    if kind == "scenario_idle":
        return scenario | {
            "scenario_name": "Typeform leads → HubSpot",
            "last_run_at": _SAMPLE_NOW - 11400,  # 11:03 UTC, 3 h 10 min before
            "silent_s": 11400,
            "expected_runs": 38.2,
            "basis": "learnt",
            "hook_id": 93,
        }
    if kind == "volume_anomaly":
        return scenario | {
            "scope": "scenario",
            "day": "2026-09-20",
            "direction": "drop",
            "operations": 42,
            "median": 480,
            "mad": 25,
            "baseline": [455, 480, 505, 470],
            "ratio": 0.0875,
            "days": [[f"2026-09-{d:02d}", 480 if d < 20 else 42] for d in range(7, 21)],
        }
    if kind == "watcher_health":
        return {
            "organization": "Acme Ops",
            "problem": "token_rejected",
            "status": 401,
            "failures": 1,
            "error": "Make API 401 IM102 on /organizations/1001: Unauthorized: Invalid credentials.",
        }
    return {"organization": "Acme Ops"}


def sample_notification(kind: str, channel_type: str, *, phase: str = "firing") -> Notification:
    """A realistic :class:`Notification` of ``kind`` for previews (``makewatch render``).

    ``channel_type`` is ``slack`` or ``email`` (it only shapes the sample thread_ref);
    ``phase`` may be firing, repeat or resolved ("summary" for kind "summary").
    """
    if kind not in KIND_TITLES:
        raise ValueError(f"unknown kind {kind!r}; expected one of: {', '.join(KIND_TITLES)}")
    if channel_type not in ("slack", "email"):
        raise ValueError("channel_type must be 'slack' or 'email'")
    payload = _sample_payload(kind)
    alert: dict[str, Any] = {
        "fingerprint": f"{kind}:1001:4211",
        "org_id": 1001,
        "team_id": 812,
        "scenario_id": None if kind in ("quota", "watcher_health", "summary") else 4211,
        "count": 4 if kind.startswith("execution_") else 1,
        "count_since_notice": 3 if phase == "repeat" else 0,
        "first_seen": _SAMPLE_NOW - 3600,
        "last_seen": _SAMPLE_NOW,
        "payload": payload,
        "samples": [payload] * (4 if kind.startswith("execution_") else 1),
        "previous_notice_at": _SAMPLE_NOW - 1800 if phase == "repeat" else None,
    }
    if kind == "summary":
        phase = "summary"
        alert["held_back"] = [
            {
                "kind": "execution_error",
                "severity": "error",
                "org": "Acme Ops",
                "scenario": f"Scenario {i}",
                "count": i,
            }
            for i in range(1, 8)
        ]
    thread_ref = None
    if phase in ("repeat", "resolved"):
        thread_ref = (
            {"channel": "C0ALERTS", "ts": "1790000000.000100"}
            if channel_type == "slack"
            else {"message_id": "<makewatch.0123456789abcdef.41@makewatch>"}
        )
    return Notification(
        outbox_id=42,
        channel="ops-slack" if channel_type == "slack" else "ops-email",
        kind=kind,
        phase=phase,
        severity=SEVERITY.get(kind, "warning"),
        reason={"firing": "first", "repeat": "repeat interval elapsed", "resolved": "resolved"}.get(
            phase, "flood cap"
        ),
        alert=alert,
        thread_ref=thread_ref,
    )
