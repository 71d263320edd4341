"""The ``makewatch`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watcher import __version__
from watcher.cli_common import CONFIG_OPTION, load_config_or_exit, state_guard

if TYPE_CHECKING:
    from watcher.config import StateSettings


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(__version__, prog_name="makewatch")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
def main(verbose: bool) -> None:
    """makewatch: watch Make.com organizations and alert people when scenarios break."""
    _setup_logging(verbose)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port of the Make API (0: any free port).")
@click.option("--slack-port", default=8081, show_default=True, type=int, help="TCP port of the Slack stand-in (0: none).")
@click.option("--smtp-port", default=2525, show_default=True, type=int, help="TCP port of the mail sink (0: none).")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the generated world.")
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=float,
    help="How many simulated seconds pass per real second.",
)
@click.option(
    "--orgs",
    type=click.IntRange(min=1),
    help="Serve this many organizations of generated scenarios, not the demo world (default 1).",
)
@click.option(
    "--scenarios",
    type=click.IntRange(min=0),
    help="Scenarios per organization of that world (default 100): every 15 min, ~2 % errors.",
)
@click.option(
    "--plan",
    type=click.Choice(["free", "core", "pro", "teams", "enterprise"]),
    default="core",
    show_default=True,
    help="With --orgs/--scenarios: the organizations' Make plan (their API limit).",
)
def simulate(
    host: str, port: int, slack_port: int, smtp_port: int, seed: int, speed: float,
    orgs: int | None, scenarios: int | None, plan: str,
) -> None:  # fmt: skip
    """Serve the Make API v2 simulator, a Slack stand-in and a mail sink; print the config to use.

    The Make API is at http://HOST:PORT/api/v2. Prints each organization's id and token, the
    makewatch.toml lines that watch them, then each Slack message and e-mail received.
    With --orgs/--scenarios the world is ORGS x SCENARIOS generated scheduled scenarios
    (the scale benchmark's, bench/scale.py) instead of the demo's three organizations.
    """
    from watcher.testing.standins import serve_standins

    try:
        asyncio.run(
            serve_standins(
                host=host, port=port, slack_port=slack_port, smtp_port=smtp_port,
                seed=seed, speed=speed, orgs=orgs, scenarios=scenarios, plan=plan,
            )  # fmt: skip
        )
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the simulated world.")
@click.option(
    "--minutes",
    default=60.0,
    show_default=True,
    type=float,
    help="Simulated minutes between the first and the second cycle.",
)
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write the digest, the alert e-mails and the Slack messages.",
)
@click.pass_context
def demo(ctx: click.Context, seed: int, minutes: float, out_dir: Path) -> None:
    """Run makewatch on embedded defaults: the bundled Make simulator, a temporary SQLite file.

    Needs no configuration, token or network: everything runs on 127.0.0.1, and the
    simulator's clock runs 600 times faster than real time. Progress goes to stderr.
    """
    from watcher.demo import run_demo

    if not ctx.find_root().params.get("verbose"):
        # The progress line is what to watch; INFO logs (migrations, budgets) would break it.
        logging.getLogger().setLevel(logging.WARNING)
    click.echo(asyncio.run(run_demo(seed=seed, minutes=minutes, out_dir=out_dir, progress=sys.stderr)))


PNG_OPTION = click.option(
    "--png",
    "png_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a screenshot of the HTML part to FILE (needs makewatch[browser] and Chromium).",
)
WIDTH_OPTION = click.option(
    "--width",
    type=click.IntRange(min=200, max=4000),
    default=800,
    show_default=True,
    help="With --png: the viewport width in CSS px (390 for a phone).",
)



@main.command()
@CONFIG_OPTION
@click.option(
    "--send-test",
    is_flag=True,
    help="Post a test message to every channel (the only way to verify an incoming webhook).",
)
def check(config_path: Path, send_test: bool) -> None:
    """Validate the config, then check each organization's token, plan, budget and scopes,
    and each channel (or, with --send-test, post a test message to it).

    Exits 2 on a configuration error, 1 when an organization cannot be read or a channel
    failed (the line says why), else 0.
    """
    from watcher.check import run_check

    settings = load_config_or_exit(config_path)
    ok, report = asyncio.run(run_check(settings, send_test=send_test))
    click.echo(report)
    sys.exit(0 if ok else 1)


@main.command()
@CONFIG_OPTION
def once(config_path: Path) -> None:
    """Run one polling cycle of every organization and print what it found.

    Prints, per organization, the requests spent and the new events by kind. Exits 1 if an
    organization could not be polled, 2 on a configuration error.
    """
    from watcher.runner import run_once

    settings = load_config_or_exit(config_path)
    with state_guard(settings.state), single_writer(settings.state):
        ok, text = asyncio.run(run_once(settings))
    click.echo(text)
    sys.exit(0 if ok else 1)


@main.command()
@CONFIG_OPTION
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines for a person (text) or one JSON object a line; default: logging.format.",
)
def run(config_path: Path, log_format: str | None) -> None:
    """Poll every organization at its pace and alert, until SIGTERM or Ctrl-C (exit 0).

    On the signal, polling stops and deliveries in flight get service.shutdown_timeout_s to
    finish. Exits 1 if another makewatch runs on the same state file, when the state file
    becomes unusable (read-only, corrupt, deleted) or the web port is taken; 2 on a
    configuration error.
    """
    from watcher.logs import configure, secrets_of
    from watcher.runner import run_forever

    settings = load_config_or_exit(config_path)
    level = logging.DEBUG if logging.getLogger().level == logging.DEBUG else settings.logging.level
    configure(level, log_format or settings.logging.format, secrets_of(settings))
    from watcher.web.app import WebServerError

    with state_guard(settings.state), single_writer(settings.state):
        try:
            asyncio.run(run_forever(settings))
        except WebServerError as exc:
            click.echo(f"makewatch run: {exc}", err=True)
            sys.exit(1)


def _parse_for(value: str) -> float:
    from watcher.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_silence(settings, seconds: float, org: str | None, kind: str | None, reason: str) -> None:  # noqa: ANN001
    """Refuse a silence that would do nothing, or not what was meant, before it is stored."""
    from watcher.silences import silence_problem

    problem = silence_problem(settings, seconds=seconds, org=org, kind=kind, reason=reason)
    if problem is not None:
        option, message = problem
        raise click.BadParameter(message, param_hint=f"--{option}")


@main.group()
def silence() -> None:
    """Silence alerts for a while: recorded (the digest shows them) but not sent."""


@silence.command("add")
@CONFIG_OPTION
@click.option("--scenario", "scenario_id", type=click.IntRange(1, 2**63 - 1), help="Scenario id to silence.")
@click.option("--org", help="Organization name (globs) or id to silence.")
@click.option("--kind", help="Alert kind to silence, e.g. execution_error.")
@click.option("--error-contains", help="Only alerts whose error name or message contains this.")
@click.option("--for", "duration", help="How long: 30m, 2h, 7d (with --every: how long the window recurs, default 365d).")
@click.option("--reason", required=True, help="Why (shown in the digest and `silence list`).")
@click.option("--every", "weekdays", help="A maintenance window on these weekdays: sun, or mon,tue,... (or 'day').")
@click.option("--from", "start", help="With --every: the window's start, HH:MM.")
@click.option("--to", "end", help="With --every: the window's end, HH:MM (before --from: the next day).")
@click.option("--tz", "timezone", default="UTC", show_default=True, help="With --every: the time zone of --from/--to.")
@click.option("--name", default="", help="With --every: the window's name (shown when it ends).")
@click.option("--notify-resolved", is_flag=True, help="With --every: tell alerts that resolve inside the window.")
def silence_add(
    config_path: Path,
    scenario_id: int | None,
    org: str | None,
    kind: str | None,
    error_contains: str | None,
    duration: str | None,
    reason: str,
    weekdays: str | None,
    start: str | None,
    end: str | None,
    timezone: str,
    name: str,
    notify_resolved: bool,
) -> None:
    """Add a silence matching a scenario, an organization or a kind (and optionally a text):
    for a while (--for), or as a maintenance window that recurs (--every --from --to --tz)."""
    import getpass
    import time

    from watcher.silences import add_silence
    from watcher.store import open_state

    if scenario_id is None and not org and not kind:
        raise click.UsageError("give --scenario, --org or --kind (a silence must match something)")
    if weekdays is None and (start or end):
        raise click.UsageError("--from and --to belong to a maintenance window: give --every too")
    if weekdays is None and duration is None:
        raise click.UsageError("give --for (a silence for a while) or --every/--from/--to (a window)")
    settings = load_config_or_exit(config_path)
    if weekdays is not None:
        _add_window(settings, weekdays, start, end, timezone, name, notify_resolved, duration,
                    scenario_id=scenario_id, org=org, kind=kind, error_contains=error_contains, reason=reason)
        return
    assert duration is not None
    seconds = _parse_for(duration)
    _check_silence(settings, seconds, org, kind, reason)
    with state_guard(settings.state), open_state(settings.state) as store:
        sid = add_silence(
            store,
            now=time.time(),
            duration_s=seconds,
            reason=reason,
            scenario_id=scenario_id,
            org=org,
            kind=kind,
            error_contains=error_contains,
            created_by=getpass.getuser(),
        )
    click.echo(f"silence {sid} added for {duration}")


def _add_window(  # noqa: PLR0913 - the options of `silence add --every`
    settings,  # noqa: ANN001
    weekdays: str,
    start: str | None,
    end: str | None,
    timezone: str,
    name: str,
    notify_resolved: bool,
    duration: str | None,
    **matchers: object,
) -> None:
    """``silence add --every``: check every option (naming it), store, say when it next runs."""
    import getpass
    import time
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from alerts.silences import parse_clock, parse_weekdays
    from watcher.silences import add_window, next_windows
    from watcher.store import open_state

    every = ",".join(("mon", "tue", "wed", "thu", "fri", "sat", "sun")) if weekdays.strip() == "day" else weekdays
    for option, value, check in (("--every", every, parse_weekdays), ("--from", start, parse_clock), ("--to", end, parse_clock)):
        if value is None:
            raise click.BadParameter("is required with --every", param_hint=option)
        try:
            check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None
    if parse_clock(start) == parse_clock(end):  # type: ignore[arg-type]
        raise click.BadParameter("must differ from --from", param_hint="--to")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {timezone!r}; use an IANA name such as Europe/Berlin", param_hint="--tz") from None
    seconds = _parse_for(duration) if duration is not None else 365 * 86400.0
    reason = str(matchers.pop("reason"))
    _check_silence(settings, seconds, matchers.get("org"), matchers.get("kind"), reason)  # type: ignore[arg-type]
    now = time.time()
    with state_guard(settings.state), open_state(settings.state) as store:
        wid = add_window(
            store, now=now, weekdays=every, start=start, end=end, timezone=timezone,  # type: ignore[arg-type]
            reason=reason, name=name, duration_s=seconds, notify_resolved=notify_resolved,
            created_by=getpass.getuser(), **matchers,  # type: ignore[arg-type]
        )
        found = next((s for w, s, cfg in next_windows(store, None, now) if not cfg and str(w.id) == str(wid)), None)
    nxt = f"; next: {_window_times(found.starts_at, found.ends_at, timezone)}" if found else ""
    click.echo(f"silence {wid} added: {every} {start}-{end} {timezone}{nxt}")


def _window_times(starts_at: float, ends_at: float, timezone: str) -> str:
    """``2026-09-27 02:00-04:00 Europe/Berlin (00:00-02:00 UTC)``: both, as a person checks."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    a, b = datetime.fromtimestamp(starts_at, zone), datetime.fromtimestamp(ends_at, zone)
    ua, ub = datetime.fromtimestamp(starts_at, UTC), datetime.fromtimestamp(ends_at, UTC)
    local = f"{a:%Y-%m-%d %H:%M}-{b:%H:%M} {timezone}" if a.date() == b.date() else f"{a:%Y-%m-%d %H:%M}-{b:%Y-%m-%d %H:%M} {timezone}"
    utc = f"{ua:%Y-%m-%d %H:%M}-{ub:%H:%M} UTC" if ua.date() == ub.date() else f"{ua:%Y-%m-%d %H:%M}-{ub:%Y-%m-%d %H:%M} UTC"
    return local if timezone == "UTC" else f"{local} ({utc})"


@silence.command("list")
@CONFIG_OPTION
@click.option("--all", "include_ended", is_flag=True, help="Include ended and expired silences.")
def silence_list(config_path: Path, include_ended: bool) -> None:
    """List the silences in force (or all of them), and the maintenance windows with their
    next occurrence (those of the configuration file marked "from config")."""
    import time
    from datetime import UTC, datetime

    from watcher.silences import list_silences, next_windows
    from watcher.store import open_state

    settings = load_config_or_exit(config_path)
    now = time.time()
    with state_guard(settings.state), open_state(settings.state) as store:
        rows = list_silences(store, now, include_ended=include_ended)
        windows = next_windows(store, settings, now)
    rows = [r for r in rows if not r.get("timezone")]
    if not rows and not windows:
        click.echo("no silences")
    for row in rows:
        until = datetime.fromtimestamp(row["ends_at"], tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        matchers = ", ".join(f"{k}={v}" for k, v in row["matchers"].items())
        state = " (expired)" if row.get("expired_at") else ""
        click.echo(f"{row['id']}: {matchers} until {until}{state}: {row['reason']}")
    for window, found, from_config in windows:
        matchers = ", ".join(f"{k}={v}" for k, v in window.matchers.items())
        label = "from config" if from_config else str(window.id)
        state = "now" if found.is_active(now) else "next"
        name = f" {window.name!r}" if window.name else ""
        times = _window_times(found.starts_at, found.ends_at, window.timezone)
        why = f": {window.reason}" if window.reason else ""
        click.echo(f"{label}: window{name} {window.describe()}; {matchers}; {state} {times}{why}")


@silence.command("expire")
@CONFIG_OPTION
@click.argument("silence_id", type=int)
def silence_expire(config_path: Path, silence_id: int) -> None:
    """End a silence now."""
    import time

    from watcher.silences import expire_silence
    from watcher.store import open_state

    settings = load_config_or_exit(config_path)
    with state_guard(settings.state), open_state(settings.state) as store:
        ok = expire_silence(store, silence_id, time.time())
    if not ok:
        click.echo(f"no silence {silence_id} in force", err=True)
        sys.exit(1)
    click.echo(f"silence {silence_id} expired")


@main.command()
@click.option("--kind", required=True, help="Alert kind, e.g. execution_error, quota, summary.")
@click.option("--channel", "channel_type", type=click.Choice(["slack", "email"]), required=True)
@click.option(
    "--phase",
    type=click.Choice(["firing", "repeat", "resolved"]),
    default="firing",
    show_default=True,
    help="Which notice of the alert.",
)
@click.option(
    "--templates-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Preview your own templates (same names as the bundled ones).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="E-mail only: write the HTML part to FILE (instead of printing it).",
)
@PNG_OPTION
@WIDTH_OPTION
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="Show the times in this zone, as a channel with `timezone` set would.",
)
def render(
    kind: str,
    channel_type: str,
    phase: str,
    templates_dir: Path | None,
    html_path: Path | None,
    png_path: Path | None,
    width: int,
    timezone: str,
) -> None:
    """Preview a notification with sample data: Slack Block Kit JSON, or the e-mail parts."""
    import json

    from alerts.render import Renderer, sample_notification

    if channel_type == "slack" and (html_path or png_path):
        raise click.UsageError("--html and --png are for --channel email")
    try:
        n = sample_notification(kind, channel_type, phase=phase)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kind") from None
    from watcher.settings_base import zone

    try:
        tz = zone(timezone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timezone") from None
    renderer = Renderer(templates_dir)
    if channel_type == "slack":
        click.echo(json.dumps(renderer.render_slack(n, tz=tz), indent=2, ensure_ascii=False))
        return
    subject, text, html = renderer.render_email(n, tz)
    if html_path is None:
        click.echo(f"Subject: {subject}\n\n{text}\n\n--- HTML ---\n{html}")
    else:
        click.echo(f"Subject: {subject}\n\n{text}")
        html_path.write_text(html, encoding="utf-8")
        click.echo(f"HTML written to {html_path}", err=True)
    if png_path is not None:
        _write_png(html, png_path, width)


def _write_png(html: str, png_path: Path, width: int) -> None:
    """A screenshot of ``html`` through the system Chromium, or exit 1 saying why not."""
    from watcher.browser import BrowserUnavailable, screenshot_html

    try:
        screenshot_html(html, png_path, width=width)
    except BrowserUnavailable as exc:
        click.echo(f"cannot write {png_path}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"screenshot ({width} px wide) written to {png_path}", err=True)


@main.command()
@CONFIG_OPTION
@click.option("--recipient", required=True, help="A recipient of a [[digests]] table.")
@click.option("--dry-run", is_flag=True, help="Print the text part (the default).")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="Write the HTML part to FILE.")
@PNG_OPTION
@WIDTH_OPTION
@click.option("--send", is_flag=True, help="Send it now by e-mail.")
@click.option("--record", is_flag=True, help="With --send: record it like a scheduled digest (it will not be sent again).")
def digest(
    config_path: Path,
    recipient: str,
    dry_run: bool,
    html_path: Path | None,
    png_path: Path | None,
    width: int,
    send: bool,
    record: bool,
) -> None:
    """Build the digest of the latest ended period for a recipient: print, write or send it."""
    import time

    from watcher.digest_cli import run_digest_command

    if record and not send:
        raise click.UsageError("--record goes with --send")
    settings = load_config_or_exit(config_path)
    try:
        with state_guard(settings.state):
            text, html, run = asyncio.run(
                run_digest_command(settings, recipient, time.time(), send=send, record=record)
            )
    except LookupError as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(2)
    if dry_run or not (send or html_path or png_path):
        click.echo(text)
    if html_path:
        html_path.write_text(html, encoding="utf-8")
        click.echo(f"HTML part written to {html_path}", err=True)
    if png_path is not None:
        _write_png(html, png_path, width)
    if run is not None:
        if run.sent:
            click.echo(f"digest sent to {recipient}" + (" and recorded" if record else ""))
        else:
            click.echo(f"digest not sent: {run.error}", err=True)
            sys.exit(1)


@main.command()
@CONFIG_OPTION
def status(config_path: Path) -> None:
    """Show what makewatch knows now: each organization's last cycle, open alerts, the outbox."""
    import time

    from watcher.status import status_report
    from watcher.store import open_state

    settings = load_config_or_exit(config_path)
    if settings.state.url is None and not Path(settings.state.db_path).exists():
        click.echo(f"No state yet at {settings.state.db_path} (run `makewatch once` or `makewatch run`).")
        return
    with state_guard(settings.state), open_state(settings.state) as store:
        click.echo(store.read_sync(lambda db: status_report(db, time.time())))


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:9464/healthz",
    show_default=True,
    help="The health endpoint of a running `makewatch run`.",
)
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, type=float, help="Seconds to wait.")
def health(url: str, timeout_s: float) -> None:
    """Ask a running makewatch whether it is healthy: print its answer, exit 0 if it is (HTTP 200).

    Exits 1 on any other status, or when nothing answers (the container's HEALTHCHECK).
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - the user's URL
            click.echo(resp.read().decode("utf-8", "replace"))
            sys.exit(0 if resp.status == 200 else 1)
    except urllib.error.HTTPError as exc:
        click.echo(exc.read().decode("utf-8", "replace"))
        click.echo(f"makewatch: {url} answered HTTP {exc.code}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        click.echo(f"makewatch: cannot reach {url}: {reason}", err=True)
        sys.exit(1)


@contextmanager
def single_writer(state: StateSettings) -> Iterator[None]:
    """Hold the state file's lock (see watcher.lock) around ``run`` and ``once``; exit 1 if
    another makewatch holds it. On PostgreSQL several replicas share the database (they
    lease the organizations): there is no file to lock."""
    from watcher.lock import AlreadyRunningError, StateLock
    from watcher.store import state_file_error

    if state.url is not None:
        yield
        return
    db_path = state.db_path
    lock = StateLock(db_path)
    try:
        lock.acquire()
    except AlreadyRunningError as exc:
        click.echo(f"makewatch: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        problem = state_file_error(db_path, exc)
        click.echo(f"makewatch: {problem or f'cannot lock {lock.path}: {exc.strerror}'}", err=True)
        sys.exit(1)
    try:
        yield
    finally:
        lock.release()


def _add_action_commands() -> None:
    """``scenario``, ``dlq``, ``ack`` and ``alerts`` live in watcher.actions_cli."""
    from watcher.actions_cli import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


def _add_state_commands() -> None:
    """``migrate-state`` lives in watcher.migrate_state."""
    from watcher.migrate_state import COMMAND

    main.add_command(COMMAND)


_add_action_commands()
_add_state_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
