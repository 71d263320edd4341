"""Normalised detection events.

Every event has a stable unique ``key``: inserting the same event twice (after a crash and a
re-read, or an overlapping read) is a no-op in the store. Keys are built only from Make's
own identifiers (execution ids, DLQ ids) or from the transition that produced them, never
from the time we happened to look.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from watcher.make.models import Dlq, Hook, LogEntry, Scenario

if TYPE_CHECKING:  # (watcher.silent reads the settings, which read the kinds here)
    from watcher.silent import OverdueStep, VolumeVerdict

# Kinds and their default severities (DESIGN.md, "Alert kinds").
SEVERITY = {
    "execution_error": "error",
    "execution_warning": "warning",
    "execution_recovered": "info",
    "scenario_deactivated": "critical",
    "scenario_reactivated": "info",
    "scenario_paused": "critical",
    "scenario_unpaused": "info",
    "incomplete_executions": "warning",
    "quota": "warning",
    "hook_backlog": "warning",
    "scenario_overdue": "error",
    "scenario_idle": "warning",
    "volume_anomaly": "warning",
    "watcher_health": "critical",
}
KINDS = tuple(SEVERITY)


@dataclass(frozen=True)
class Event:
    kind: str
    key: str
    org_id: int
    occurred_at: float
    payload: dict[str, Any] = field(default_factory=dict)
    severity: str = ""
    team_id: int | None = None
    scenario_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SEVERITY:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if not self.severity:
            object.__setattr__(self, "severity", SEVERITY[self.kind])

    def row(self, detected_at: float) -> dict[str, Any]:
        """The dict shape ``Store.record_progress`` takes."""
        return {
            "key": self.key,
            "kind": self.kind,
            "severity": self.severity,
            "org_id": self.org_id,
            "team_id": self.team_id,
            "scenario_id": self.scenario_id,
            "occurred_at": self.occurred_at,
            "detected_at": detected_at,
            "payload": self.payload,
        }


# --- links into Make's web app -----------------------------------------------------------


def ui_base(api_base_url: str) -> str:
    """``https://eu1.make.com/api/v2`` -> ``https://eu1.make.com`` (Make's web app host).

    Make's UI paths below are taken from links the web app itself produces; they are not
    part of the API contract (a guess, reported in the issue notes).
    """
    parts = urlsplit(api_base_url)
    path = re.sub(r"/api/v\d+/?$", "", parts.path)
    return f"{parts.scheme}://{parts.netloc}{path}"


def scenario_link(ui: str, team_id: int | None, scenario_id: int) -> str:
    return f"{ui}/{team_id or 0}/scenarios/{scenario_id}/edit"


def run_link(ui: str, team_id: int | None, scenario_id: int, execution_id: str) -> str:
    return f"{ui}/{team_id or 0}/scenarios/{scenario_id}/logs/{execution_id}?showCheckRuns=true"


def history_link(ui: str, team_id: int | None, scenario_id: int) -> str:
    return f"{ui}/{team_id or 0}/scenarios/{scenario_id}/logs"


def dlq_link(ui: str, team_id: int | None, scenario_id: int) -> str:
    return f"{ui}/{team_id or 0}/scenarios/{scenario_id}/dlqs"


def usage_link(ui: str, org_id: int) -> str:
    """The organization's dashboard in Make, where its operations usage is shown."""
    return f"{ui}/organization/{org_id}/dashboard"


# --- constructors ---------------------------------------------------------------------


def _scenario_payload(org_name: str, sc: Scenario | None, name: str | None, ui: str) -> dict[str, Any]:
    team_id = sc.team_id if sc else None
    sid = sc.id if sc else None
    out: dict[str, Any] = {"organization": org_name, "scenario_name": sc.name if sc else name}
    if sid is not None:
        out["scenario_url"] = scenario_link(ui, team_id, sid)
        out["history_url"] = history_link(ui, team_id, sid)
    return out


def execution_event(
    org_id: int, org_name: str, ui: str, sc: Scenario | None, entry: LogEntry
) -> Event | None:
    """An error (status 3) or warning (status 2) run; None for a success."""
    if entry.status == 3:
        kind = "execution_error"
    elif entry.status == 2:
        kind = "execution_warning"
    else:
        return None
    sid = entry.scenario_id or (sc.id if sc else None)
    team_id = entry.team_id or (sc.team_id if sc else None)
    payload = _scenario_payload(org_name, sc, entry.scenario_name, ui)
    payload.update(
        {
            "execution_id": entry.id,
            "imt_id": entry.imt_id,
            "error_name": entry.error_name,
            "error_message": entry.error_message,
            "duration_ms": entry.duration_ms,
            "operations": entry.operations,
            "centicredits": entry.centicredits,
            "run_type": entry.type,
            # A run a webhook started: Make keeps its input, so it may be replayable
            # (alerts.buttons offers Replay only for those).
            "instant": entry.instant,
            "timestamp": entry.timestamp.isoformat(),
            "run_url": run_link(ui, team_id, sid or 0, entry.id),
        }
    )
    return Event(
        kind,
        f"{kind}:{org_id}:{sid}:{entry.id}",
        org_id,
        entry.timestamp.timestamp(),
        payload,
        team_id=team_id,
        scenario_id=sid,
    )


def recovered_event(org_id: int, org_name: str, ui: str, sc: Scenario, entry: LogEntry) -> Event:
    """A successful run after a failed one: resolves the scenario's open error alert."""
    payload = _scenario_payload(org_name, sc, entry.scenario_name, ui)
    payload.update({"execution_id": entry.id, "timestamp": entry.timestamp.isoformat()})
    return Event(
        "execution_recovered",
        f"execution_recovered:{org_id}:{sc.id}:{entry.id}",
        org_id,
        entry.timestamp.timestamp(),
        payload,
        team_id=sc.team_id,
        scenario_id=sc.id,
    )


def state_event(
    kind: str, org_id: int, org_name: str, ui: str, sc: Scenario, now: float, *, standing: bool, seq: int
) -> Event:
    """A scenario state transition; ``seq`` numbers the transitions of that scenario."""
    payload = _scenario_payload(org_name, sc, None, ui)
    payload.update(
        {
            "is_active": sc.is_active,
            "is_invalid": sc.is_invalid,
            "is_paused": sc.is_paused,
            "dlq_count": sc.dlq_count,
            "standing": standing,
        }
    )
    return Event(kind, f"{kind}:{org_id}:{sc.id}:{seq}", org_id, now, payload, team_id=sc.team_id, scenario_id=sc.id)


def dlq_event(org_id: int, org_name: str, ui: str, sc: Scenario, dlq: Dlq) -> Event:
    payload = _scenario_payload(org_name, sc, None, ui)
    payload.update(
        {
            "dlq_id": dlq.id,
            "reason": dlq.reason,
            "created": dlq.created.isoformat() if dlq.created else None,  # a sample's "when"
            "attempts": dlq.attempts,
            "size": dlq.size,
            "dlq_count": sc.dlq_count,
            "dlq_url": dlq_link(ui, sc.team_id, sc.id),
        }
    )
    occurred = dlq.created.timestamp() if dlq.created else 0.0
    return Event(
        "incomplete_executions",
        f"incomplete_executions:{org_id}:{sc.id}:{dlq.id}",
        org_id,
        occurred,
        payload,
        team_id=sc.team_id,
        scenario_id=sc.id,
    )


def dlq_backlog_event(org_id: int, org_name: str, ui: str, sc: Scenario, now: float, reasons: list[str]) -> Event:
    """A backlog that already stood when makewatch first saw the scenario: reported once."""
    payload = _scenario_payload(org_name, sc, None, ui)
    payload.update(
        {
            "dlq_count": sc.dlq_count,
            "reasons": reasons[:10],
            "standing": True,
            "dlq_url": dlq_link(ui, sc.team_id, sc.id),
        }
    )
    return Event(
        "incomplete_executions",
        f"incomplete_executions:{org_id}:{sc.id}:baseline",
        org_id,
        now,
        payload,
        team_id=sc.team_id,
        scenario_id=sc.id,
    )


def hook_event(
    org_id: int,
    org_name: str,
    hook: Hook,
    now: float,
    period_key: str,
    threshold: float,
    *,
    cleared: bool = False,
    ui: str | None = None,
    scenario_name: str | None = None,
    rising: bool = False,
) -> Event:
    """A webhook queue over ``threshold`` of its limit (or, ``cleared``, back under it), or
    (``rising``) one that keeps rising while its scenario does not run.

    With ``ui`` it links to the scenario behind the hook, which ``scenario_name`` names:
    a reader fixes the scenario, not the hook."""
    payload: dict[str, Any] = {
        "organization": org_name,
        "hook_id": hook.id,
        "hook_name": hook.name,
        "queue_count": hook.queue_count,
        "queue_limit": hook.queue_limit,
        "ratio": hook.queue_ratio,
        "threshold": threshold,
        "scenario_id": hook.scenario_id,
    }
    if scenario_name:
        payload["scenario_name"] = scenario_name
    if ui and hook.scenario_id:
        payload["scenario_url"] = scenario_link(ui, hook.team_id, hook.scenario_id)
    if rising:
        payload["rising"] = True
    if cleared:
        payload["recovered"] = True  # resolves the backlog alert
    return Event(
        "hook_backlog",
        f"hook_backlog:{org_id}:{hook.id}:{period_key}",
        org_id,
        now,
        payload,
        severity="info" if cleared else "",
        team_id=hook.team_id,
        scenario_id=hook.scenario_id,
    )


def silent_event(
    kind: str,
    org_id: int,
    org_name: str,
    ui: str,
    sc: Scenario,
    episode_at: float,
    now: float,
    facts: dict[str, Any],
    *,
    resolved: str | None = None,
) -> Event:
    """A silent failure (``scenario_overdue``, ``scenario_idle``) of ``sc``, or with
    ``resolved`` ("ran", "not expected") the end of it. ``episode_at`` names the episode
    (the missed run's scheduled time, the last run before the silence): its key."""
    payload = _scenario_payload(org_name, sc, None, ui) | facts
    key = f"{kind}:{org_id}:{sc.id}:{int(episode_at)}"
    if resolved:
        payload |= {"recovered": True, "resolution": resolved, "resolved_at": now}
        return Event(kind, f"{key}:{resolved}", org_id, now, payload, severity="info", team_id=sc.team_id, scenario_id=sc.id)
    return Event(kind, key, org_id, now, payload, team_id=sc.team_id, scenario_id=sc.id)


def overdue_event(
    org_id: int, org_name: str, ui: str, sc: Scenario, step: OverdueStep, due_at: float, now: float, *, standing: bool
) -> Event:
    """A scheduled run that did not happen (``step.fire``), or the end of that episode
    (``step.resolved``: it ran, or it is no longer expected)."""
    facts: dict[str, Any] = {
        "due_at": due_at,
        "scheduling_type": sc.scheduling_type,
        "interval_s": sc.interval_s,
        "next_exec": sc.next_exec.isoformat() if sc.next_exec else None,
        "is_waiting": sc.is_waiting,
    }
    if not step.resolved:
        facts |= {"late_s": round(step.late_s), "allowance_s": round(step.allowance_s), "standing": standing}
    return silent_event("scenario_overdue", org_id, org_name, ui, sc, due_at, now, facts, resolved=step.resolved)


def volume_facts(verdict: VolumeVerdict, day: str, days: dict[str, float]) -> dict[str, Any]:
    """The figures of a day judged by watcher.silent.volume_verdict, and the 14 days up to
    it (the digest's bar chart ends there too). Not the day still running: its few hours
    would read as a second, deeper drop after the one the notice is about."""
    last = sorted(d for d in days if d <= day)[-14:]
    return {
        "day": day,
        "direction": verdict.direction,
        "operations": round(verdict.value),
        "median": round(verdict.median),
        "mad": round(verdict.mad),
        "baseline": [round(x) for x in verdict.baseline],
        "ratio": round(verdict.value / verdict.median, 3) if verdict.median else None,
        "days": [[d, round(days[d])] for d in last],
    }


def org_volume_event(org_id: int, org_name: str, ui: str, day: str, now: float, facts: dict[str, Any], *, resolved: bool = False) -> Event:
    """An organization's day of operations far from its usual (or, ``resolved``, back to it)."""
    payload = {"organization": org_name, "scope": "organization", "usage_url": usage_link(ui, org_id)} | facts
    key = f"volume_anomaly:{org_id}:org:{day}"
    if resolved:
        payload |= {"recovered": True, "resolved_at": now}
        return Event("volume_anomaly", f"{key}:normal", org_id, now, payload, severity="info")
    return Event("volume_anomaly", key, org_id, now, payload)
