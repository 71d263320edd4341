"""The action buttons of a Slack bot alert (issue 17): Acknowledge, Silence, and the action
on Make its kind calls for (Reactivate, Replay, Retry), each destructive one behind a
confirmation dialog.

Added in code after the template rendered the message (a user's template override keeps its
buttons), only on ``slack_bot`` channels that can receive clicks (an ``app_token`` or a
``signing_secret``) and only while ``[actions] enabled``. A button's ``value`` names the alert
by fingerprint and carries what the action needs; the handler (watcher.slack_actions) trusts
none of it beyond looking the alert up: who may act is decided from the config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from alerts.notify.base import Notification

__all__ = ["ACTION_BLOCK_ID", "ACTION_PREFIX", "action_block", "describe_silence", "parse_action"]

ACTION_PREFIX = "makewatch:"
ACTION_BLOCK_ID = "makewatch.actions"
_VALUE_MAX = 2000  # Slack's limit for a button value

#: Which Make action an alert kind offers, and its button's words.
_MAKE_ACTION: dict[str, tuple[str, str, str]] = {
    # kind: (action, button label, confirmation text)
    "scenario_deactivated": (
        "start", "Reactivate scenario",
        "Reactivate {scenario} in Make now? It runs again on its schedule (Make may start a run at once).",
    ),
    "scenario_paused": (
        "start", "Reactivate scenario", "Reactivate {scenario} in Make now?",
    ),
    "execution_error": (  # only for runs a webhook started (see action_block)
        "replay", "Replay the failed run",
        "Replay the failed run of {scenario} with its original input? It consumes operations like any run.",
    ),
    "incomplete_executions": (
        "retry", "Retry incomplete executions",
        "Retry every incomplete execution of {scenario} in Make? Each runs again from where it stopped.",
    ),
}


def describe_silence(seconds: float) -> str:
    """``3600`` -> ``"1 h"``, ``5400`` -> ``"90 min"``, ``86400*2`` -> ``"2 d"``."""
    if seconds % 86400 == 0:
        return f"{int(seconds // 86400)} d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{max(1, round(seconds / 60))} min"


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def action_block(n: Notification, silence_choices_s: Sequence[float]) -> dict[str, Any] | None:
    """The ``actions`` block for ``n``, or None (a resolved notice, a summary, a test, an
    alert whose value would not fit)."""
    if n.phase not in ("firing", "repeat") or n.kind in ("summary", "test"):
        return None
    alert = n.alert
    fingerprint = str(alert.get("fingerprint") or "")
    if not fingerprint:
        return None
    payload = alert.get("payload") or {}
    value: dict[str, Any] = {"fp": fingerprint}
    if alert.get("org_id") is not None:
        value["o"] = alert["org_id"]
    if alert.get("scenario_id") is not None:
        value["s"] = alert["scenario_id"]
    make = _MAKE_ACTION.get(n.kind)
    if make is not None and make[0] == "replay":
        # Make replays a run with its stored input, which it keeps for runs a webhook started
        # (a scheduled run had isReplayable false in the recordings; make-api.md §11.4): the
        # button is offered for those, and Make's own refusal, if any, is told in the thread.
        if payload.get("execution_id") and payload.get("instant"):
            value["x"] = str(payload["execution_id"])
        else:
            make = None
    if make is not None and alert.get("scenario_id") is None:
        make = None
    encoded = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(encoded) > _VALUE_MAX:
        return None
    elements: list[dict[str, Any]] = [
        {"type": "button", "action_id": f"{ACTION_PREFIX}ack", "text": _plain("Acknowledge"), "value": encoded},
    ]
    for seconds in silence_choices_s:
        elements.append({
            "type": "button",
            "action_id": f"{ACTION_PREFIX}silence:{int(seconds)}",
            "text": _plain(f"Silence {describe_silence(seconds)}"),
            "value": encoded,
        })
    if make is not None:
        action, label, question = make
        scenario = str(payload.get("scenario_name") or f"scenario {alert.get('scenario_id')}")
        elements.append({
            "type": "button",
            "action_id": f"{ACTION_PREFIX}{action}",
            "text": _plain(label),
            "value": encoded,
            # plain_text is shown as is: the scenario name needs no mrkdwn escaping here.
            "confirm": {
                "title": _plain("Are you sure?", 100),
                "text": {"type": "plain_text", "text": question.format(scenario=scenario)[:300]},
                "confirm": _plain(label, 30),
                "deny": _plain("Cancel", 30),
            },
        })
    return {"type": "actions", "block_id": ACTION_BLOCK_ID, "elements": elements}


def parse_action(action_id: str, value: str) -> tuple[str, float | None, dict[str, Any]] | None:
    """``("silence", 3600.0, {"fp": ..., "s": 42})`` from a click, or None if it is not ours
    or malformed (never raises: the click comes from outside)."""
    if not action_id.startswith(ACTION_PREFIX):
        return None
    name, _, arg = action_id[len(ACTION_PREFIX):].partition(":")
    seconds: float | None = None
    if name == "silence":
        try:
            seconds = float(arg)
        except ValueError:
            return None
        if not 0 < seconds <= 30 * 86400:
            return None
    elif name not in ("ack", "start", "replay", "retry") or arg:
        return None
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("fp"), str) or not data["fp"]:
        return None
    for key in ("o", "s"):
        if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
            return None
    if "x" in data and not isinstance(data["x"], str):
        return None
    return name, seconds, data
