"""Alert fingerprints: which events are "the same problem" (Sentry-style grouping).

A fingerprint is ``<readable prefix>:<12 hex digits>``, for example
``exec:42:9001:3f9a0c1b2d4e``. The prefix names the kind of problem, the organization and
(where there is one) the scenario, so a fingerprint in a log line or the ``alerts`` table can
be read without decoding; the hash covers everything that tells two problems apart. Both
are stable across releases as long as :func:`normalize_message` is: changing it re-opens
every execution alert once, so change it deliberately.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_GROUP_BY",
    "EXECUTION_KINDS",
    "GROUP_BY_LABELS",
    "STATE_KINDS",
    "fingerprint",
    "normalize_message",
    "resolve_kinds",
]

EXECUTION_KINDS = frozenset({"execution_error", "execution_warning"})
STATE_KINDS = frozenset(
    {"scenario_deactivated", "scenario_paused", "scenario_reactivated", "scenario_unpaused"}
)

#: The labels an execution alert may be grouped by (``[alerts] group_by``): an execution
#: alert always belongs to one organization and one scenario (a success of that scenario
#: resolves it), so those two are always part of it; the error's name and its normalised
#: message may be added.
GROUP_BY_LABELS = ("org", "scenario", "error_name", "error_message")
DEFAULT_GROUP_BY: tuple[str, ...] = ("org", "scenario", "error_name")

# Order matters: a URL contains numbers and may contain an e-mail address or a UUID, a
# timestamp contains numbers, a quoted value may contain anything.
_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\bwww\.\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:z|[+-]\d{2}:?\d{2})?)?\b",
            re.IGNORECASE,
        ),
        "<ts>",
    ),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<id>",
    ),
    # Quoted values: "x", `x`, “x”, «x», and 'x' when the quotes are not apostrophes.
    (re.compile(r'"[^"]*"|`[^`]*`|“[^”]*”|«[^»]*»|(?<!\w)\'[^\']*\'(?!\w)'), "<q>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<hex>"),
    # Hex ids (Mongo object ids, hashes, Make's execution ids): 8+ hex digits with a digit
    # in them, so that an English word made of a-f letters ("deadbeef" aside) survives.
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalize_message(message: str | None) -> str:
    """``message`` with its variable parts replaced by placeholders, for grouping.

    URLs → ``<url>``, e-mail addresses → ``<email>``, ISO dates/timestamps → ``<ts>``,
    UUIDs → ``<id>``, quoted values → ``<q>``, hex ids → ``<hex>``, numbers → ``<n>``;
    whitespace folded, case folded. "Validation failed for 2 parameter(s)." and
    "Validation failed for 3 parameter(s)." both become
    "validation failed for <n> parameter(s)."
    """
    text = message or ""
    for pattern, placeholder in _SUBSTITUTIONS:
        text = pattern.sub(placeholder, text)
    return text.strip().casefold()


def _digest(*parts: Any) -> str:
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:12]


def _id(value: Any) -> str:
    return "-" if value is None else str(value)


def fingerprint(event: Mapping[str, Any], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> str:
    """The fingerprint of the alert ``event`` belongs to (or resolves).

    ``event`` is a row of the ``events`` table as a dict (``key``, ``kind``, ``severity``,
    ``org_id``, ``team_id``, ``scenario_id``, ``occurred_at``, ``detected_at``, ``payload``).

    * ``execution_error`` / ``execution_warning``: organization + scenario + kind + the
      labels of ``group_by`` (by default ``error_name``; ``error_message`` adds the
      :func:`normalize_message` of the message) → ``exec:<org>:<scn>:<h>``. One
      ``ConnectionError`` worded three ways is one alert by default.
    * ``scenario_deactivated`` / ``_paused`` / ``_reactivated`` / ``_unpaused``: one state
      alert per scenario → ``state:<org>:<scn>:<h>``
    * ``incomplete_executions``: ``dlq:<org>:<scn>:<h>``; ``quota``: ``quota:<org>:<h>``;
      ``hook_backlog``: ``hook:<org>:<hook id>:<h>``; ``watcher_health``: organization +
      ``payload["problem"]`` (+ ``payload["channel"]`` when set) → ``health:<org>:<h>``
    * ``execution_recovered`` is not an alert: it returns the pattern ``exec:<org>:<scn>:*``
      naming every execution alert of that scenario, all of which it resolves.
    * any other kind: ``<kind>:<org>:<scn>:<h>``.
    """
    kind = str(event.get("kind") or "")
    payload: Mapping[str, Any] = event.get("payload") or {}
    org = _id(event.get("org_id"))
    scenario = _id(event.get("scenario_id"))
    if kind in EXECUTION_KINDS:
        parts: list[Any] = [kind, org, scenario]
        if "error_name" in group_by:
            parts.append(str(payload.get("error_name") or "").strip())
        if "error_message" in group_by:
            parts.append(normalize_message(payload.get("error_message")))
        return f"exec:{org}:{scenario}:{_digest(*parts)}"
    if kind == "execution_recovered":
        return f"exec:{org}:{scenario}:*"
    if kind in STATE_KINDS:
        return f"state:{org}:{scenario}:{_digest('state', org, scenario)}"
    if kind == "incomplete_executions":
        return f"dlq:{org}:{scenario}:{_digest('dlq', org, scenario)}"
    if kind == "quota":
        return f"quota:{org}:{_digest('quota', org)}"
    if kind == "hook_backlog":
        hook = _id(payload.get("hook_id"))
        return f"hook:{org}:{hook}:{_digest('hook', org, hook)}"
    if kind == "watcher_health":
        problem = str(payload.get("problem") or "")
        channel = payload.get("channel")
        if channel:  # a failing channel is its own problem: one recovering resolves only it
            return f"health:{org}:{_digest('health', org, problem, channel)}"
        return f"health:{org}:{_digest('health', org, problem)}"
    return f"{kind}:{org}:{scenario}:{_digest(kind, org, scenario)}"


def resolve_kinds(event: Mapping[str, Any]) -> frozenset[str] | None:
    """The alert kinds ``event`` resolves, or None when it is an occurrence of a problem.

    * ``execution_recovered`` → the scenario's ``execution_error``/``execution_warning``
    * ``scenario_reactivated`` → ``scenario_deactivated``/``scenario_paused``;
      ``scenario_unpaused`` → ``scenario_paused``
    * ``incomplete_executions`` with ``payload["dlq_count"] == 0`` → the DLQ alert
    * any event with ``payload["recovered"] is True`` (``watcher_health`` first of all) →
      the alert of its own fingerprint and kind
    """
    kind = str(event.get("kind") or "")
    payload: Mapping[str, Any] = event.get("payload") or {}
    if kind == "execution_recovered":
        return EXECUTION_KINDS
    if kind == "scenario_reactivated":
        return frozenset({"scenario_deactivated", "scenario_paused"})
    if kind == "scenario_unpaused":
        return frozenset({"scenario_paused"})
    dlq_count = payload.get("dlq_count")
    if kind == "incomplete_executions" and dlq_count == 0 and not isinstance(dlq_count, bool):
        return frozenset({kind})
    if payload.get("recovered") is True:
        return frozenset({kind})
    return None
