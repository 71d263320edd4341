"""The status page: what is firing, what is silenced, how each organization and channel is.

Server-rendered from ``templates/web/`` (Jinja, autoescaped: every name and error text on
the page comes from Make or from users and is shown as text). No JavaScript: the forms are
plain POSTs (watcher.web.app checks write access and the CSRF token).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2
from sqlite_utils import Database

from alerts.policy import ALERT_KINDS
from alerts.render import KIND_TITLES, payload_links, safe_url
from watcher.actions import recent_actions
from watcher.events import scenario_link, ui_base
from watcher.resources import templates_dir
from watcher.status import (
    ChannelStatus,
    OrgStatus,
    age,
    channel_statuses,
    open_alerts,
    org_statuses,
    outbox_counts,
    silences_in_force,
    when,
    windows_ahead,
)

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.web.health import Health

__all__ = ["NOTICES", "Snapshot", "read_snapshot", "render", "render_status", "silence_from_form"]

#: Messages after a successful write (``/?done=...``): fixed texts, nothing from the request.
NOTICES = {
    "silenced": "Silence added. Matching alerts are recorded but not sent until it ends.",
    "expired": "Silence expired.",
    "acked": "Alert acknowledged: no more notices until it resolves.",
}
#: The durations offered by each alert's quick "Silence" form.
QUICK_DURATIONS = (("1h", "1 hour"), ("2h", "2 hours"), ("8h", "8 hours"), ("24h", "1 day"), ("7d", "7 days"))
MAX_FIELD = 500


@dataclass
class Snapshot:
    """One consistent read of the store (and, once assessed, the health)."""

    orgs: list[OrgStatus]
    channels: list[ChannelStatus]
    alerts: list[dict[str, Any]]
    silences: list[dict[str, Any]]
    outbox: dict[str, int]
    health: Health | None = field(default=None)
    actions: list[dict[str, Any]] = field(default_factory=list)
    windows: list[tuple[Any, Any, bool]] = field(default_factory=list)

    def open_by_severity(self) -> dict[str, int]:
        return dict(Counter(a["severity"] or "unknown" for a in self.alerts))


def read_snapshot(db: Database, now: float, settings: Settings | None = None) -> Snapshot:
    return Snapshot(
        orgs=org_statuses(db),
        channels=channel_statuses(db),
        alerts=open_alerts(db, limit=200),
        silences=silences_in_force(db, now),
        outbox=outbox_counts(db),
        actions=recent_actions(db, limit=20),
        windows=windows_ahead(db, settings, now),
    )


@functools.cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "web"),
        autoescape=True,  # every template here is HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["age"] = age
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def _alert_view(a: Mapping[str, Any], settings: Settings, now: float) -> dict[str, Any]:
    p = a["payload"] or {}
    links = [(link["label"], link["url"]) for link in payload_links(p, str(a.get("kind") or ""))]
    org = next((o for o in settings.organizations if o.organization_id == a["org_id"]), None)
    if a["scenario_id"] and org and not safe_url(p.get("scenario_url")):
        links.append(("Scenario", scenario_link(ui_base(org.api_base_url), a["team_id"], a["scenario_id"])))
    error = " ".join(str(p.get(k) or "") for k in ("error_name", "error_message")).strip() or p.get("error") or ""
    # The quick silence matches this alert's scenario, else its organization and kind.
    matcher = (
        {"scenario_id": str(a["scenario_id"])}
        if a["scenario_id"]
        else {"org": str(a["org_id"]), "kind": a["kind"]}
        if a["org_id"]
        else {"kind": a["kind"]}
    )
    opened = a.get("opened_at") or a.get("first_seen") or now
    return {
        "id": a["id"],
        "kind": a["kind"],
        "kind_title": KIND_TITLES.get(a["kind"], a["kind"]),
        "severity": a["severity"],
        "state": a["state"],
        "reason": a["reason"] or "",
        "count": a["count"] or 0,
        "age": age(now - opened),
        "opened_at": opened,
        "last_seen": a["last_seen"],
        "org": p.get("organization") or (org.name if org else ""),
        "what": p.get("scenario_name") or p.get("hook_name") or p.get("problem") or "",
        "error": str(error)[:MAX_FIELD],
        "links": links,
        "acked_at": a.get("acked_at"),
        "acked_by": a.get("acked_by"),
        "matcher": matcher,
    }


def _silence_view(s: Mapping[str, Any], now: float) -> dict[str, Any]:
    matchers = ", ".join(f"{k} = {v}" for k, v in sorted(s["matchers"].items()))
    return {
        "id": s["id"],
        "matchers": matchers,
        "reason": s["reason"] or "",
        "created_by": s["created_by"] or "",
        "ends_at": s["ends_at"],
        "left": age(s["ends_at"] - now),
    }


def _window_view(window: Any, found: Any, from_config: bool, now: float) -> dict[str, Any]:
    return {
        "id": None if from_config else window.id,
        "name": window.name or "",
        "describe": window.describe(),
        "matchers": ", ".join(f"{k} = {v}" for k, v in sorted(window.matchers.items())),
        "reason": window.reason or "",
        "now": found.is_active(now),
        "starts_at": found.starts_at,
        "ends_at": found.ends_at,
        "from_config": from_config,
    }


#: How an action's outcome reads on the page.
ACTION_OUTCOMES = {
    "done": "done", "already": "already so", "refused": "refused by Make", "failed": "no answer from Make",
    "not_allowed": "not allowed", "pending": "in flight",
}
ACTION_NAMES = {
    "ack": "acknowledged", "silence": "silenced", "start": "reactivated (start)", "stop": "deactivated (stop)",
    "run": "ran once", "replay": "replayed a run", "retry": "retried incomplete executions",
}


def _action_view(a: Mapping[str, Any]) -> dict[str, Any]:
    target = f"scenario {a['scenario_id']}" if a["scenario_id"] else ""
    if a["alert_id"]:
        target = f"{target} (alert {a['alert_id']})".strip()
    return {
        "id": a["id"],
        "at": a["created_at"],
        "who": a["actor"] or "",
        "source": a["source"] or "",
        "what": ACTION_NAMES.get(a["action"], a["action"]),
        "target": target,
        "ok": a["status"] in ("done", "already"),
        "outcome": ACTION_OUTCOMES.get(a["status"], a["status"]),
        "message": str(a["message"] or "")[:MAX_FIELD],
        "verdict": str(a["confirm_note"] or "")[:MAX_FIELD],
    }


def render_status(
    snap: Snapshot,
    *,
    settings: Settings,
    now: float,
    allow_write: bool,
    csrf: str,
    notice: str = "",
    error: str = "",
    logout: bool = False,
) -> str:
    assert snap.health is not None
    health = snap.health
    stored = {o.id: o for o in snap.orgs}
    orgs = [
        {
            "h": h,
            "plan": (stored[h.org_id].plan if h.org_id in stored else None) or "?",
            "last_cycle": stored[h.org_id].last_cycle if h.org_id in stored else None,
        }
        for h in health.orgs
    ]
    return render(
        "status.html.j2",
        now=now,
        ok=health.ok,
        alerts=[_alert_view(a, settings, now) for a in snap.alerts],
        silences=[_silence_view(s, now) for s in snap.silences],
        actions=[_action_view(a) for a in snap.actions],
        windows=[_window_view(w, found, from_config, now) for w, found, from_config in snap.windows],
        orgs=orgs,
        channels=health.channels,
        outbox=snap.outbox,
        allow_write=allow_write,
        csrf=csrf,
        notice=notice,
        error=error,
        logout=logout,
        kinds=ALERT_KINDS,
        durations=QUICK_DURATIONS,
    )


def silence_from_form(form: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The keyword arguments of :func:`watcher.silences.add_silence` from a POSTed form,
    checked like ``makewatch silence add``; ValueError says what is wrong (no input echoed
    beyond the field's name, the page escapes it anyway)."""
    from watcher.config import parse_duration
    from watcher.silences import silence_problem

    def text(name: str) -> str | None:
        value = str(form.get(name) or "").strip()
        if len(value) > MAX_FIELD:
            raise ValueError(f"{name} is longer than {MAX_FIELD} characters")
        return value or None

    scenario = text("scenario_id")
    if scenario is not None and (not scenario.isdigit() or len(scenario) > 18 or int(scenario) < 1):
        raise ValueError("scenario id must be a positive whole number")
    org, kind, contains = text("org"), text("kind"), text("error_contains")
    if scenario is None and org is None and kind is None:
        raise ValueError("give a scenario id, an organization or a kind: a silence must match something")
    try:
        seconds = parse_duration(text("for") or "")
    except ValueError:
        raise ValueError("for: not a duration like 30m, 2h or 7d") from None
    reason = text("reason") or ""
    problem = silence_problem(settings, seconds=seconds, org=org, kind=kind, reason=reason)
    if problem is not None:
        raise ValueError(f"{problem[0]}: {problem[1]}")
    return {
        "duration_s": seconds,
        "reason": reason,
        "scenario_id": int(scenario) if scenario else None,
        "org": org,
        "kind": kind,
        "error_contains": contains,
        "created_by": text("by") or "status page",
    }
