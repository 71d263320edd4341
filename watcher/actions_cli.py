"""``makewatch scenario …``, ``makewatch dlq …``, ``makewatch ack``, ``makewatch alerts``.

Acting on Make (watcher.actions) and on alerts from the command line. Exit codes follow the
rest of the CLI: 0 done (or already so), 1 Make refused or gave no usable answer (the line
says what it answered), 2 a configuration problem (actions off, unknown organization).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from watcher.cli_common import CONFIG_OPTION, load_config_or_exit, state_guard

if TYPE_CHECKING:
    from watcher.actions import ActionRecord, ActionRequest
    from watcher.config import Settings

__all__ = ["COMMANDS"]

ScenarioId = click.IntRange(1, 2**63 - 1)


def _actor(by: str | None) -> str:
    if by:
        return " ".join(by.split())[:100]
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _act(settings: Settings, req: ActionRequest) -> ActionRecord:
    """Perform ``req`` (recorded in the state file) and return its record; exit 2 on a
    configuration problem."""
    import aiohttp

    from watcher.actions import ActionsDisabled, UnknownOrganization, perform
    from watcher.clock import SystemClock
    from watcher.store import BaseStore, open_state

    async def go(store: BaseStore) -> ActionRecord:
        async with aiohttp.ClientSession() as session:
            return await perform(settings, store, req, session=session, clock=SystemClock())

    try:
        with state_guard(settings.state), open_state(settings.state) as store:
            return asyncio.run(go(store))
    except (ActionsDisabled, UnknownOrganization) as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(2)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _report(rec: ActionRecord, what: str) -> None:
    """One line: what was asked, how it ended and what Make answered; the exit code."""
    active = "" if rec.is_active is None else f" (isActive: {str(rec.is_active).lower()})"
    line = f"{what}: {rec.status}: {rec.message}{active} [action {rec.id}]"
    if rec.ok:
        click.echo(line)
        sys.exit(0)
    click.echo(line, err=True)
    sys.exit(1)


@click.group()
def scenario() -> None:
    """Act on a scenario in Make: start (reactivate), stop, run once, replay a run."""


def _scenario_command(action: str, help_text: str) -> click.Command:
    @CONFIG_OPTION
    @click.option("--org", required=True, help="The organization (its name in the config, or its id).")
    @click.option("--by", help="Who acts, for the audit trail (default: your user name).")
    @click.argument("scenario_id", type=ScenarioId)
    def command(config_path: Path, org: str, by: str | None, scenario_id: int) -> None:
        from watcher.actions import ActionRequest

        settings = load_config_or_exit(config_path)
        rec = _act(settings, ActionRequest(action, org, scenario_id=scenario_id, actor=_actor(by)))
        _report(rec, f"{action} scenario {scenario_id}")

    command.__doc__ = help_text
    return scenario.command(action)(command)


_scenario_command("start", "Activate (reactivate) a scenario: POST /scenarios/{id}/start (scope scenarios:write).")
_scenario_command("stop", "Deactivate a scenario: POST /scenarios/{id}/stop (scope scenarios:write).")
_scenario_command("run", "Run an active scenario once now: POST /scenarios/{id}/run (scope scenarios:run).")


@scenario.command("replay")
@CONFIG_OPTION
@click.option("--org", required=True, help="The organization (its name in the config, or its id).")
@click.option("--execution", "execution_id", required=True, help="The execution id of the run to replay.")
@click.option("--by", help="Who acts, for the audit trail (default: your user name).")
@click.argument("scenario_id", type=ScenarioId)
def scenario_replay(config_path: Path, org: str, execution_id: str, by: str | None, scenario_id: int) -> None:
    """Replay a past run with its input (Make must mark it replayable; scope scenarios:run)."""
    from watcher.actions import ActionRequest

    settings = load_config_or_exit(config_path)
    rec = _act(settings, ActionRequest(
        "replay", org, scenario_id=scenario_id, execution_id=execution_id.strip(), actor=_actor(by)
    ))
    _report(rec, f"replay of {execution_id.strip()} in scenario {scenario_id}")


@click.group()
def dlq() -> None:
    """Incomplete executions of a scenario: list them, retry them."""


@dlq.command("list")
@CONFIG_OPTION
@click.option("--org", required=True, help="The organization (its name in the config, or its id).")
@click.option("--scenario", "scenario_id", required=True, type=ScenarioId, help="The scenario id.")
def dlq_list(config_path: Path, org: str, scenario_id: int) -> None:
    """List a scenario's incomplete executions (read with the polling token)."""
    import aiohttp

    from watcher.actions import UnknownOrganization, find_org
    from watcher.clock import SystemClock
    from watcher.make import MakeApiError
    from watcher.orgs import make_client

    settings = load_config_or_exit(config_path)
    try:
        org_settings = find_org(settings, org)
    except UnknownOrganization as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(2)

    async def go() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            client = make_client(session, org_settings, settings.http, SystemClock())
            return await client.list_dlqs(scenario_id)

    try:
        items = asyncio.run(go())
    except MakeApiError as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(1)
    if not items:
        click.echo(f"scenario {scenario_id}: no incomplete executions")
        return
    click.echo(f"scenario {scenario_id}: {len(items)} incomplete execution(s)")
    for d in items:
        created = d.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if d.created else "-"
        reason = " ".join((d.reason or "").split())[:120]
        click.echo(f"  {d.id}  {created}  attempts {d.attempts}  {reason}")


@dlq.command("retry")
@CONFIG_OPTION
@click.option("--org", required=True, help="The organization (its name in the config, or its id).")
@click.option("--scenario", "scenario_id", required=True, type=ScenarioId, help="The scenario id.")
@click.option("--all", "all_items", is_flag=True, help="Retry every incomplete execution of the scenario.")
@click.option("--id", "ids", multiple=True, help="An incomplete execution id (repeat for several).")
@click.option("--by", help="Who acts, for the audit trail (default: your user name).")
def dlq_retry(
    config_path: Path, org: str, scenario_id: int, all_items: bool, ids: tuple[str, ...], by: str | None
) -> None:
    """Retry incomplete executions (scope dlqs:write): --all, or one --id per item."""
    from watcher.actions import ActionRequest

    if all_items == bool(ids):
        raise click.UsageError("give either --all or at least one --id (not both)")
    settings = load_config_or_exit(config_path)
    rec = _act(settings, ActionRequest(
        "retry", org, scenario_id=scenario_id, dlq_ids=tuple(i.strip() for i in ids),
        all_items=all_items, actor=_actor(by),
    ))
    what = "all incomplete executions" if all_items else f"{len(ids)} incomplete execution(s)"
    _report(rec, f"retry of {what} of scenario {scenario_id}")


@click.command("ack")
@CONFIG_OPTION
@click.option(
    "--until-resolved", is_flag=True, default=True,
    help="No more notices until the alert resolves (the default; its resolution is still told).",
)
@click.option("--by", help="Who acknowledges (default: your user name).")
@click.argument("alert_id", type=click.IntRange(1, 2**63 - 1))
def ack(config_path: Path, until_resolved: bool, by: str | None, alert_id: int) -> None:
    """Acknowledge an open alert: someone is on it, no more repeats until it resolves."""
    from watcher.acks import acknowledge
    from watcher.actions import ActionRequest, record_local
    from watcher.store import BaseStore, open_state

    settings = load_config_or_exit(config_path)
    who = _actor(by)
    now = time.time()

    async def go(store: BaseStore) -> tuple[bool, dict[str, Any] | None]:
        ok = await acknowledge(store, alert_id, who, now)
        row = await store.read(lambda db: _alert_row(db, alert_id))
        if row is not None:
            await record_local(
                store, ActionRequest("ack", "", alert_id=alert_id, actor=who, scenario_id=row["scenario_id"]),
                now, status="done" if ok else "refused",
                message="acknowledged" if ok else _why_not_acked(row), org_id=row["org_id"],
            )
        return ok, row

    with state_guard(settings.state), open_state(settings.state) as store:
        ok, row = asyncio.run(go(store))
    if row is None:
        click.echo(f"makewatch: no alert {alert_id} (see `makewatch alerts`)", err=True)
        sys.exit(1)
    if not ok:
        click.echo(f"alert {alert_id}: {_why_not_acked(row)}", err=True)
        sys.exit(1)
    click.echo(f"alert {alert_id} acknowledged by {who}: no more notices until it resolves")


def _why_not_acked(row: dict[str, Any]) -> str:
    if row["state"] == "resolved":
        return "already resolved"
    if row.get("acked_at"):
        return f"already acknowledged by {row.get('acked_by') or 'someone'} at {_when(row['acked_at'])}"
    return "cannot be acknowledged"


_ALERT_COLUMNS = (
    "id", "kind", "severity", "state", "org_id", "scenario_id", "count", "first_seen", "last_seen",
    "acked_at", "acked_by", "reason",
)


def _alert_row(db: Any, alert_id: int) -> dict[str, Any] | None:
    row = db.execute(
        f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts WHERE id = ?", [alert_id]
    ).fetchone()
    return dict(zip(_ALERT_COLUMNS, row, strict=True)) if row else None


@click.command("alerts")
@CONFIG_OPTION
@click.option("--firing", is_flag=True, help="Only alerts still open (firing).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
def alerts_command(config_path: Path, firing: bool, limit: int) -> None:
    """List alerts (newest first) with who acknowledged them and the actions taken on them."""
    from watcher.store import open_state

    settings = load_config_or_exit(config_path)
    if settings.state.url is None and not Path(settings.state.db_path).exists():
        click.echo(f"No state yet at {settings.state.db_path} (run `makewatch once` or `makewatch run`).")
        return
    with state_guard(settings.state), open_state(settings.state) as store:
        text = store.read_sync(lambda db: alerts_report(db, firing=firing, limit=limit))
    click.echo(text)


def alerts_report(db: Any, *, firing: bool = False, limit: int = 50) -> str:
    """The text of ``makewatch alerts``: one block per alert, its actions indented below."""
    where = "WHERE state != 'resolved'" if firing else ""
    rows = [
        dict(zip(_ALERT_COLUMNS, r, strict=True))
        for r in db.execute(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts {where} ORDER BY last_seen DESC, id DESC LIMIT ?",
            [limit],
        ).fetchall()
    ]
    if not rows:
        return "no open alerts" if firing else "no alerts"
    actions: dict[int, list[tuple[Any, ...]]] = {}
    if db["actions"].exists():
        ids = [r["id"] for r in rows]
        for a in db.execute(
            f"SELECT alert_id, created_at, actor, action, status, message FROM actions "
            f"WHERE alert_id IN ({', '.join('?' * len(ids))}) ORDER BY id",
            ids,
        ).fetchall():
            actions.setdefault(a[0], []).append(a[1:])
    lines = []
    for r in rows:
        where_ = f"scenario {r['scenario_id']}" if r["scenario_id"] else f"organization {r['org_id']}"
        acked = f", acknowledged by {r['acked_by']} {_when(r['acked_at'])}" if r["acked_at"] else ""
        lines.append(
            f"{r['id']}: {r['state']} {r['severity']} {r['kind']} ({where_}), {r['count']}x, "
            f"last {_when(r['last_seen'])}{acked}"
        )
        if r["reason"]:
            lines.append(f"    {' '.join(str(r['reason']).split())[:160]}")
        for at, actor, action, status, message in actions.get(r["id"], []):
            lines.append(f"    {_when(at)} {actor}: {action} -> {status}: {message}")
    return "\n".join(lines)


COMMANDS: tuple[click.Command, ...] = (scenario, dlq, ack, alerts_command)
