"""Silent failures: the runs that should have happened and did not (issue 15).

Errors Make logs are found by reading logs. The failures that log nothing are found here,
from what makewatch already reads each cycle, at no extra API call:

* **overdue**: an active scheduled scenario (``scheduling.type`` indefinitely, daily,
  weekly or monthly) whose scheduled run is late by more than
  ``max(grace_s, interval x grace_factor)`` while its run counters did not move.

The detectors are pure functions of the stored snapshot, the scenario as just listed, the
time and a rule; the poller stores what they return with the snapshot, in the same
transaction as their events (so a crash repeats nothing and loses nothing).

Make facts this leans on (make-api.md §2.3, §2.4): there is no last-run field, but every run
moves ``operations``/``centicredits`` of the scenario in the listing (a polling trigger
that finds nothing still costs one operation); ``nextExec`` is the next scheduled run, and
null for instant, on-demand or inactive scenarios. What Make shows in ``nextExec`` for a run
that is stuck (it keeps the missed time, or moves on without a run) is not documented: the
detector does not depend on it, it remembers the *earliest* scheduled time it saw that has
not been followed by a counter move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watcher.make.models import Scenario

__all__ = ["SCHEDULED_TYPES", "OverdueRule", "OverdueStep", "last_edit_iso", "overdue_step", "ran_since"]

#: Scheduling types with a time at which a run is expected. ``immediately`` (webhooks),
#: ``on-demand``, ``once`` and ``yearly`` never become overdue (a yearly run is too rare to
#: expect by default, a once run is over once it ran).
SCHEDULED_TYPES = frozenset({"indefinitely", "daily", "weekly", "monthly"})


@dataclass(frozen=True)
class OverdueRule:
    """How late a scheduled run may be before it is overdue (one scenario's settings)."""

    enabled: bool = True
    grace_s: float = 300.0
    grace_factor: float = 1.5

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> OverdueRule:
        """From one scenario's effective ``[polling.silent]`` values (``SilentSettings.effective``)."""
        return cls(bool(values["overdue"]), float(values["grace_s"]), float(values["grace_factor"]))

    def allowance_s(self, scheduling_type: str | None, interval_s: float | None) -> float:
        """``max(grace_s, interval x grace_factor)``. The interval counts only for
        ``indefinitely`` (every N seconds): for daily, weekly and monthly it is not the run's
        period (1.5 days of grace would make a missed nightly run news the next evening)."""
        if scheduling_type == "indefinitely" and interval_s:
            return max(self.grace_s, float(interval_s) * self.grace_factor)
        return self.grace_s


@dataclass(frozen=True)
class OverdueStep:
    """What :func:`overdue_step` decided for one scenario at one listing.

    ``due_at``: the earliest scheduled run not yet followed by a run (stored);
    ``overdue_at``: the ``due_at`` of the open overdue episode, or None (stored);
    ``fire``: the episode opens now; ``resolved``: why an open episode ended ("ran", or
    "not expected": switched off, paused, unscheduled or excluded); ``late_s``: how late
    the due run is; ``allowance_s``: how late it may be.
    """

    due_at: float | None
    overdue_at: float | None
    fire: bool = False
    resolved: str | None = None
    late_s: float = 0.0
    allowance_s: float = 0.0


def ran_since(prev: Mapping[str, Any], sc: Scenario) -> bool:
    """Did the scenario run since the stored snapshot ``prev``? Its counters moved.

    Counters that fell to zero are a new billing period, not a run; fallen but not to zero,
    it ran after the reset.
    """
    moved = prev.get("operations") != sc.operations or prev.get("centicredits") != sc.centicredits
    return moved and (sc.operations > 0 or sc.centicredits > 0)


def last_edit_iso(sc: Scenario) -> str | None:
    """``lastEdit`` as the snapshot row keeps it (an edit may move the schedule)."""
    return sc.last_edit.isoformat() if sc.last_edit else None


def overdue_step(
    prev: Mapping[str, Any] | None,
    sc: Scenario,
    now: float,
    *,
    org_paused: bool,
    rule: OverdueRule,
) -> OverdueStep:
    """Is ``sc`` (as just listed) overdue, given its stored snapshot ``prev`` (None at first
    sight)? A scenario that is switched off (``isActive`` false: stopped by hand or
    deactivated by Make), paused, in a paused organization (one organization-level alert
    says that), not scheduled, or excluded by ``rule`` is never overdue.
    """
    next_exec = sc.next_exec.timestamp() if sc.next_exec else None
    expected = (
        rule.enabled
        and sc.is_active
        and not sc.is_invalid
        and not sc.is_paused
        and not org_paused
        and sc.scheduling_type in SCHEDULED_TYPES
    )
    open_at = prev.get("overdue_at") if prev else None
    ran = prev is not None and ran_since(prev, sc)
    if not expected or ran:
        resolved = None if open_at is None else ("ran" if ran and expected else "not expected")
        return OverdueStep(next_exec if expected else None, None, resolved=resolved)

    due = prev.get("due_at") if prev else None
    edited = prev is not None and prev.get("last_edit") != last_edit_iso(sc)
    if due is None or edited or (next_exec is not None and next_exec < due):
        # First sight, a schedule edited (its old slot is not expected any more), or a slot
        # earlier than the one remembered: the run expected is nextExec. A nextExec that
        # moved *later* without a run keeps the missed slot.
        due = next_exec
    if due is None:
        return OverdueStep(None, None, resolved=None if open_at is None else "not expected")
    allowance = rule.allowance_s(sc.scheduling_type, sc.interval_s)
    late = now - due
    if open_at is not None:
        if due != open_at and late <= allowance:
            # Edited to a later slot while overdue: this episode is over.
            return OverdueStep(due, None, resolved="not expected", late_s=late, allowance_s=allowance)
        return OverdueStep(due, open_at, late_s=late, allowance_s=allowance)
    if late > allowance:
        return OverdueStep(due, due, fire=True, late_s=late, allowance_s=allowance)
    return OverdueStep(due, None, late_s=late, allowance_s=allowance)
