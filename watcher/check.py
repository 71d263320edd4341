"""``makewatch check``: can makewatch read every configured organization?"""

from __future__ import annotations

import asyncio

import aiohttp

from alerts.notify.base import Notification
from watcher.clock import Clock, SystemClock
from watcher.config import OrganizationSettings, Settings
from watcher.make import MakeApiError
from watcher.orgs import calibrate, make_client

# What the read-only poller calls, by scope (make-api.md §1.3).
REQUIRED_SCOPES = ("organizations:read", "teams:read", "scenarios:read", "dlqs:read", "hooks:read")


async def check_org(
    session: aiohttp.ClientSession, settings: Settings, org: OrganizationSettings, clock: Clock
) -> tuple[bool, list[str]]:
    client = make_client(session, org, settings.http, clock)
    lines = [f"{org.name} (organization {org.organization_id} at {org.api_base_url})"]
    try:
        user = await client.me()
        lines.append(f"  token: accepted (user {user.name or user.id})")
        info = await calibrate(client, org)
    except MakeApiError as exc:
        hint = ""
        if exc.status == 401:
            hint = " (is the token right, and created in this zone?)"
        elif exc.status == 403:
            hint = " (does the token have organizations:read, and is the organization in this zone?)"
        lines.append(f"  FAILED: {exc}{hint}")
        return False, lines
    api_limit = info.license.api_limit if info.license else None
    lines.append(
        f"  plan: {info.plan or 'unknown'}, API limit {api_limit or 'unknown'}/min, "
        f"makewatch budget {client.limiter.per_window}/min (budget_share {org.budget_share:g})"
    )
    try:
        auth = await client.current_authorization()
    except MakeApiError as exc:
        lines.append(f"  scopes: could not be read ({exc})")
        return True, lines
    if auth.scopes:
        missing = [s for s in REQUIRED_SCOPES if s not in auth.scopes]
        if missing:
            lines.append(f"  scopes: MISSING {', '.join(missing)}")
            return False, lines
        lines.append("  scopes: all needed read scopes present")
    lines.append(await actions_line(session, settings, org, clock, auth.scopes or None))
    return True, lines


async def actions_line(
    session: aiohttp.ClientSession,
    settings: Settings,
    org: OrganizationSettings,
    clock: Clock,
    polling_scopes: tuple[str, ...] | None,
) -> str:
    """Which actions (watcher.actions) the organization's tokens allow, from their scopes."""
    from watcher.actions import ACTIONS, allowed_actions, write_client

    which = "write token" if org.has_write_token else "polling token"
    scopes: tuple[str, ...] | None = polling_scopes
    if org.has_write_token:
        try:
            scopes = (await write_client(session, settings, org, clock).current_authorization()).scopes or None
        except MakeApiError as exc:
            return f"  actions: the write token's scopes could not be read ({exc})"
    state = "on" if settings.actions.enabled else "off ([actions] enabled = false)"
    allowed = allowed_actions(scopes)
    if scopes is None:
        return (
            f"  actions ({state}): unknown with the {which} (its scopes cannot be read); "
            "an action that lacks one says which"
        )
    parts = [
        f"{name} {'yes' if ok else 'no, needs ' + ACTIONS[name].scope}" for name, ok in allowed.items()
    ]
    return f"  actions ({state}) with the {which}: {', '.join(parts)}"


def test_notification(channel: str, now: float) -> Notification:
    """The message ``makewatch check --send-test`` posts: says what it is, alarms nobody."""
    return Notification(
        outbox_id=0,
        channel=channel,
        kind="test",
        phase="firing",
        severity="info",
        reason="test",
        alert={
            "fingerprint": f"test:{channel}",
            "org_id": None,
            "team_id": None,
            "scenario_id": None,
            "count": 1,
            "count_since_notice": 1,
            "first_seen": now,
            "last_seen": now,
            "payload": {"channel": channel},
            "samples": [],
        },
    )


async def check_channels(
    settings: Settings, session: aiohttp.ClientSession, *, send_test: bool = False, now: float = 0.0
) -> tuple[bool, list[str]]:
    """Each channel reached without sending anything (Slack bot ``auth.test``, SMTP login),
    or, with ``send_test``, by posting a test message: an incoming webhook can only be
    verified that way."""
    from alerts.notify import DeliveryError, build_notifier
    from alerts.render import Renderer

    if not settings.channels:
        return True, ["channels: none configured (alerts are recorded, not sent)"]
    lines: list[str] = []
    ok = True
    renderer = Renderer(settings.alerts.templates_dir)
    for name, channel in settings.channels.items():
        notifier = build_notifier(name, channel, session=session, renderer=renderer)
        verify = getattr(notifier, "verify", None)
        try:
            if send_test:
                await notifier.send(test_notification(name, now))
                lines.append(f"channel {name} ({channel.type}): test message sent")
                continue
            if verify is None:
                lines.append(
                    f"channel {name} ({channel.type}): not checked (a webhook can only be tested "
                    "by posting: makewatch check --send-test)"
                )
                continue
            info = await verify()
            detail = ", ".join(f"{k} {v}" for k, v in info.items() if v not in (None, ""))
            lines.append(f"channel {name} ({channel.type}): ok ({detail})")
        except DeliveryError as exc:
            ok = False
            lines.append(f"channel {name} ({channel.type}): FAILED: {exc.message}")
        finally:
            await notifier.aclose()
    return ok, lines


async def run_check(settings: Settings, clock: Clock | None = None, *, send_test: bool = False) -> tuple[bool, str]:
    clock = clock or SystemClock()
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(check_org(session, settings, org, clock) for org in settings.organizations)
        )
        channels_ok, channel_lines = await check_channels(
            settings, session, send_test=send_test, now=clock.time()
        )
    ok = all(r[0] for r in results) and channels_ok
    text = "\n".join([*(line for _, lines in results for line in lines), *channel_lines])
    return ok, text
