"""Acting on Make from an alert: start, stop, run, replay, retry incomplete executions.

Behind ``makewatch scenario …`` / ``makewatch dlq retry`` and the Slack buttons. Three rules:

* **Read-only by default.** Nothing here calls a write endpoint unless ``[actions] enabled =
  true``; each organization may have its own ``write_token`` so the polling token can stay
  read-only (:func:`write_client`).
* **Every action is recorded**, allowed or refused, with who, what, when and Make's answer
  (table ``actions``), before and after the call: a row is inserted as ``pending`` first, so a
  crash between Make's answer and the record leaves a visible trace, never a silent repeat.
* **At most once per intent.** An action carrying a ``dedup_key`` (a Slack envelope or
  action id) is performed once: a second request with the same key gets the first one's row
  back (``duplicate=True``) and Make is not called again. A key whose first attempt is still
  ``pending`` (in flight, or lost to a crash) is not retried either: starting a scenario twice
  is worse than asking a person to press again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watcher.make import MakeApiError

if TYPE_CHECKING:
    import aiohttp

    from watcher.clock import Clock
    from watcher.config import OrganizationSettings, Settings
    from watcher.make.client import MakeClient
    from watcher.store import Store

__all__ = [
    "ACTIONS",
    "ActionRecord",
    "ActionRequest",
    "ActionSpec",
    "ActionsDisabled",
    "UnknownOrganization",
    "allowed_actions",
    "find_org",
    "list_actions",
    "perform",
    "record_local",
    "write_client",
]


@dataclass(frozen=True)
class ActionSpec:
    """One kind of action on Make: the scope its call needs and how a person names it."""

    name: str
    scope: str
    label: str
    destructive: bool = True


#: The actions on Make (make-api.md §11.4). ``ack`` and ``silence`` are makewatch's own and
#: need no token; they are recorded through :func:`record_local`.
ACTIONS: dict[str, ActionSpec] = {
    "start": ActionSpec("start", "scenarios:write", "reactivate (start) the scenario"),
    "stop": ActionSpec("stop", "scenarios:write", "deactivate (stop) the scenario"),
    "run": ActionSpec("run", "scenarios:run", "run the scenario once now"),
    "replay": ActionSpec("replay", "scenarios:run", "replay a failed run with its input"),
    "retry": ActionSpec("retry", "dlqs:write", "retry incomplete executions"),
}


class ActionsDisabled(Exception):
    """``[actions] enabled`` is false: makewatch is read-only."""

    def __init__(self) -> None:
        super().__init__("actions are off: set [actions] enabled = true in the config to allow them")


class UnknownOrganization(Exception):
    """No configured organization has that name or id."""


@dataclass(frozen=True)
class ActionRequest:
    """What someone asked for. ``org`` is a configured organization's name or id."""

    action: str
    org: str
    scenario_id: int | None = None
    execution_id: str | None = None
    dlq_ids: tuple[str, ...] = ()
    all_items: bool = False
    alert_id: int | None = None
    actor: str = "cli"
    actor_id: str | None = None
    source: str = "cli"
    dedup_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionRecord:
    """An ``actions`` row: what was asked, by whom, and how it ended.

    ``status``: ``pending`` (asked, no answer recorded yet), ``done``, ``already`` (Make said
    it was already so: counted as success), ``refused`` (Make refused: scope, not replayable,
    inactive), ``failed`` (no usable answer: network, 5xx), ``not_allowed`` (the person may not
    act; Make was not called).
    """

    id: int
    action: str
    status: str
    message: str
    created_at: float
    actor: str
    source: str
    org_id: int | None = None
    scenario_id: int | None = None
    alert_id: int | None = None
    is_active: bool | None = None
    execution_id: str | None = None
    http_status: int | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status in ("done", "already")

    @classmethod
    def from_row(cls, row: dict[str, Any], *, duplicate: bool = False) -> ActionRecord:
        active = row.get("is_active")
        return cls(
            id=int(row["id"]),
            action=str(row["action"]),
            status=str(row["status"]),
            message=str(row.get("message") or ""),
            created_at=float(row["created_at"]),
            actor=str(row.get("actor") or ""),
            source=str(row.get("source") or ""),
            org_id=row.get("org_id"),
            scenario_id=row.get("scenario_id"),
            alert_id=row.get("alert_id"),
            is_active=None if active is None else bool(active),
            execution_id=row.get("execution_id"),
            http_status=row.get("http_status"),
            duplicate=duplicate,
        )


def find_org(settings: Settings, text: str) -> OrganizationSettings:
    """The configured organization named ``text`` (case-insensitive) or with that id."""
    wanted = text.strip()
    for org in settings.organizations:
        if org.name.casefold() == wanted.casefold() or str(org.organization_id) == wanted:
            return org
    names = ", ".join(o.name for o in settings.organizations)
    raise UnknownOrganization(f"no organization {wanted!r} in the config (configured: {names})")


def write_client(
    session: aiohttp.ClientSession, settings: Settings, org: OrganizationSettings, clock: Clock
) -> MakeClient:
    """A client that acts with the organization's write token (or its polling token)."""
    from watcher.orgs import make_client

    return make_client(session, org, settings.http, clock, token=org.write_token)


def allowed_actions(scopes: Sequence[str] | None) -> dict[str, bool | None]:
    """Per action: True/False from the token's scopes, None when the scopes are unknown."""
    return {name: (None if scopes is None else spec.scope in scopes) for name, spec in ACTIONS.items()}


_COLUMNS = (
    "id", "dedup_key", "created_at", "finished_at", "source", "actor", "actor_id", "action",
    "org_id", "scenario_id", "alert_id", "target_json", "status", "message", "http_status",
    "is_active", "execution_id",
)


async def _insert(
    store: Store, req: ActionRequest, org_id: int | None, now: float, status: str, message: str
) -> tuple[dict[str, Any], bool]:
    """Insert the request's row; (the existing row, True) when its dedup_key is known."""
    target: dict[str, Any] = dict(req.extra)
    if req.execution_id is not None:
        target["execution_id"] = req.execution_id
    if req.dlq_ids:
        target["dlq_ids"] = list(req.dlq_ids)
    if req.all_items:
        target["all"] = True

    def tx(db: Any) -> tuple[dict[str, Any], bool]:
        if req.dedup_key is not None:
            old = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM actions WHERE dedup_key = ?", [req.dedup_key]
            ).fetchone()
            if old is not None:
                return dict(zip(_COLUMNS, old, strict=True)), True
        inserted = db.execute(
            "INSERT INTO actions (dedup_key, created_at, source, actor, actor_id, action, "
            "org_id, scenario_id, alert_id, target_json, status, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
            [req.dedup_key, now, req.source, req.actor, req.actor_id, req.action, org_id,
             req.scenario_id, req.alert_id, json.dumps(target, sort_keys=True), status, message],
        ).fetchone()
        if inserted is None:  # another writer (a replica, a CLI) recorded the same key first
            old = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM actions WHERE dedup_key = ?", [req.dedup_key]
            ).fetchone()
            return dict(zip(_COLUMNS, old, strict=True)), True
        row = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM actions WHERE id = ?", [inserted[0]]
        ).fetchone()
        return dict(zip(_COLUMNS, row, strict=True)), False

    return await store.write(tx)


async def _finish(store: Store, action_id: int, now: float, **values: Any) -> dict[str, Any]:
    sets = ", ".join(f"{k} = ?" for k in values)

    def tx(db: Any) -> dict[str, Any]:
        db.execute(f"UPDATE actions SET finished_at = ?, {sets} WHERE id = ?",
                   [now, *values.values(), action_id])
        row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM actions WHERE id = ?", [action_id]).fetchone()
        return dict(zip(_COLUMNS, row, strict=True))

    return await store.write(tx)


async def record_local(
    store: Store, req: ActionRequest, now: float, *, status: str, message: str,
    org_id: int | None = None,
) -> ActionRecord:
    """Record an action that does not call Make (acknowledge, silence) or one refused before
    any call (``not_allowed``): the audit trail holds every press of a button."""
    row, duplicate = await _insert(store, req, org_id, now, status, message)
    if not duplicate:
        row = await _finish(store, int(row["id"]), now, status=status)
    return ActionRecord.from_row(row, duplicate=duplicate)


async def perform(
    settings: Settings,
    store: Store,
    req: ActionRequest,
    *,
    session: aiohttp.ClientSession,
    clock: Clock,
) -> ActionRecord:
    """Do ``req`` on Make once and record it; see the module docstring for the guarantees.

    Raises :class:`ActionsDisabled`, :class:`UnknownOrganization` or ``ValueError`` (a
    request missing what its action needs) before anything is recorded or sent.
    """
    spec = ACTIONS.get(req.action)
    if spec is None:
        raise ValueError(f"unknown action {req.action!r} (known: {', '.join(ACTIONS)})")
    if not settings.actions.enabled:
        raise ActionsDisabled()
    org = find_org(settings, req.org)
    if req.action != "retry" and req.scenario_id is None:
        raise ValueError(f"{req.action} needs a scenario id")
    if req.action == "replay" and not req.execution_id:
        raise ValueError("replay needs the execution id of the run to replay")
    if req.action == "retry" and not (req.all_items or req.dlq_ids):
        raise ValueError("retry needs --all or at least one incomplete execution id")

    row, duplicate = await _insert(
        store, req, org.organization_id, clock.time(), "pending", f"asked: {spec.label}"
    )
    if duplicate:
        return ActionRecord.from_row(row, duplicate=True)
    action_id = int(row["id"])
    client = write_client(session, settings, org, clock)
    try:
        answer = await _call(client, req)
    except MakeApiError as exc:
        # 4xx: Make refused and nothing changed; no answer / 5xx: unknown, said so.
        refused = exc.status is not None and 400 <= exc.status < 500
        row = await _finish(
            store, action_id, clock.time(),
            status="refused" if refused else "failed",
            message=_refusal_text(spec, exc),
            http_status=exc.status,
        )
        return ActionRecord.from_row(row)
    row = await _finish(
        store, action_id, clock.time(),
        status="already" if answer.already else "done",
        message=answer.summary(),
        http_status=answer.status,
        is_active=None if answer.is_active is None else int(answer.is_active),
        execution_id=answer.execution_id,
    )
    return ActionRecord.from_row(row)


async def _call(client: MakeClient, req: ActionRequest) -> Any:
    sid = req.scenario_id
    if req.action == "start":
        return await client.start_scenario(sid)  # type: ignore[arg-type]
    if req.action == "stop":
        return await client.stop_scenario(sid)  # type: ignore[arg-type]
    if req.action == "run":
        return await client.run_scenario(sid)  # type: ignore[arg-type]
    if req.action == "replay":
        return await client.replay_execution(sid, req.execution_id)  # type: ignore[arg-type]
    if len(req.dlq_ids) == 1 and not req.all_items and sid is None:
        return await client.retry_dlq(req.dlq_ids[0])
    return await client.retry_dlqs(sid, list(req.dlq_ids) or None, all_items=req.all_items)  # type: ignore[arg-type]


def _refusal_text(spec: ActionSpec, exc: MakeApiError) -> str:
    from watcher.make.errors import MakeScopeError

    if isinstance(exc, MakeScopeError) or exc.status in (401, 403):
        return (
            f"Make refused: the token lacks scope {spec.scope} (needed to {spec.label}); "
            "give the organization a write_token with it"
        )
    if exc.status is None or exc.status >= 500:
        return f"no usable answer from Make ({exc}); the action may or may not have happened: check before repeating"
    return f"Make refused: {exc.message}" + (f" ({exc.code})" if exc.code else "")


async def list_actions(
    store: Store, *, alert_id: int | None = None, limit: int = 50
) -> list[ActionRecord]:
    """The newest actions first (of one alert, or all)."""

    def tx(db: Any) -> list[ActionRecord]:
        where, args = ("WHERE alert_id = ?", [alert_id]) if alert_id is not None else ("", [])
        rows = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM actions {where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [ActionRecord.from_row(dict(zip(_COLUMNS, r, strict=True))) for r in rows]

    return await store.read(tx)


_RECENT_COLUMNS = (
    "id", "created_at", "source", "actor", "action", "org_id", "scenario_id", "alert_id",
    "status", "message", "confirm_state", "confirm_note",
)


def recent_actions(db: Any, *, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
    """The newest actions (inside the caller's transaction), for the status page and the
    digest: who did what, how it ended, and the poll's verdict on a reactivation."""
    if not db["actions"].exists():
        return []
    where, args = ("WHERE created_at >= ?", [since]) if since is not None else ("", [])
    rows = db.execute(
        f"SELECT {', '.join(_RECENT_COLUMNS)} FROM actions {where} ORDER BY id DESC LIMIT ?",
        [*args, limit],
    ).fetchall()
    return [dict(zip(_RECENT_COLUMNS, r, strict=True)) for r in rows]
