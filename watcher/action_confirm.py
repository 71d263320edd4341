"""The next poll confirms or contradicts a reactivation (issue 17, "the message follows the
action").

A ``start`` that Make accepted is only a promise: the scenario may fail again on its next run,
or be switched off again. After each poll the service calls :func:`confirm_reactivations`,
which reads what the poller stored since the action (the scenario's row from the latest
listing, its events) and moves each reactivation along:

``awaiting`` -> ``active`` ("Make shows it active; next run 02:15") -> one of
``ran_ok`` (a run without error after it: the poller's ``execution_recovered``),
``failed_again`` (an ``execution_error`` or a new deactivation after it),
``inactive_again`` (a listing shows it inactive again), or ``no_run`` (nothing within
:data:`CONFIRM_WINDOW_S`). Each step is returned once, to be told in the alert's thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONFIRM_WINDOW_S", "Verdict", "confirm_reactivations", "start_awaiting"]

#: How long after a reactivation the poll's verdict is awaited before "no run seen".
CONFIRM_WINDOW_S = 3600.0
_FINAL = ("ran_ok", "failed_again", "inactive_again", "no_run")


@dataclass(frozen=True)
class Verdict:
    """One step of a reactivation, to be told where the action was asked."""

    action_id: int
    scenario_id: int
    state: str
    note: str
    slack: dict[str, Any] | None


def start_awaiting(db: Any, action_id: int, slack: dict[str, Any] | None) -> None:
    """Mark a successful ``start`` as awaiting the poll's verdict (in the caller's transaction)."""
    db.execute(
        "UPDATE actions SET confirm_state = 'awaiting', slack_json = ? WHERE id = ?",
        [json.dumps(slack) if slack else None, action_id],
    )


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M UTC")


def confirm_reactivations(db: Any, now: float) -> list[Verdict]:
    """Advance every reactivation still awaiting a verdict; return the new steps (inside the
    caller's write transaction, so a step is recorded and returned once)."""
    out: list[Verdict] = []
    rows = db.execute(
        "SELECT id, scenario_id, created_at, confirm_state, slack_json FROM actions "
        "WHERE confirm_state IN ('awaiting', 'active')"
    ).fetchall()
    for action_id, sid, at, state, slack_json in rows:
        slack = json.loads(slack_json) if slack_json else None
        step = _step(db, sid, at, state, now)
        if step is None:
            continue
        new_state, note = step
        db.execute(
            "UPDATE actions SET confirm_state = ?, confirm_note = ?, confirmed_at = ? WHERE id = ?",
            [new_state, note, now, action_id],
        )
        out.append(Verdict(action_id, sid, new_state, note, slack))
    return out


def _step(db: Any, sid: int, at: float, state: str, now: float) -> tuple[str, str] | None:
    bad = db.execute(
        # Strictly after: the deactivation that prompted the click may carry the same second.
        "SELECT kind, occurred_at, payload_json FROM events WHERE scenario_id = ? AND occurred_at > ? "
        "AND kind IN ('execution_error', 'scenario_deactivated') ORDER BY occurred_at LIMIT 1",
        [sid, at],
    ).fetchone()
    if bad is not None:
        kind, when, payload_json = bad
        payload = json.loads(payload_json or "{}")
        if kind == "execution_error":
            name = payload.get("error_name") or "an error"
            return "failed_again", f"reactivated, but failed again at {_hhmm(when)} ({name})"
        return "failed_again", f"reactivated, but Make switched it off again at {_hhmm(when)}"
    good = db.execute(
        "SELECT occurred_at FROM events WHERE scenario_id = ? AND occurred_at > ? "
        "AND kind = 'execution_recovered' ORDER BY occurred_at LIMIT 1",
        [sid, at],
    ).fetchone()
    if good is not None:
        return "ran_ok", f"confirmed: it ran without error at {_hhmm(good[0])}"
    row = db.execute(
        "SELECT is_active, next_exec, updated_at FROM scenarios WHERE id = ?", [sid]
    ).fetchone()
    if row is not None and row[2] is not None and row[2] >= at:
        is_active, next_exec, _ = row
        if not is_active:
            return "inactive_again", "Make shows it inactive again"
        if state == "awaiting":
            nxt = ""
            if next_exec:
                try:
                    nxt = f"; next run {_hhmm(datetime.fromisoformat(next_exec).timestamp())}"
                except ValueError:
                    nxt = ""
            return "active", f"Make shows it active{nxt}"
    if now - at >= CONFIRM_WINDOW_S:
        return "no_run", f"no run seen in the {int(CONFIRM_WINDOW_S // 60)} minutes after the reactivation"
    return None
