"""``makewatch demo``: the whole worker on embedded defaults, no config, token or network.

It starts, on 127.0.0.1, the bundled Make simulator (its clock runs fast), a Slack API
stand-in and a local SMTP sink; points a watcher at every simulated organization with a
temporary SQLite file; runs the first cycle (the baseline: problems that already stand), lets
simulated time pass, runs another cycle, and shows what was detected and what Slack and the
mailbox received, plus the daily digest.

The demo sends one digest, its own, covering exactly the simulated time it ran: the watcher
runs without the digest schedule, so what the demo shows never depends on the hour it is
started at (a run across 08:00 Europe/Paris used to send the scheduled digest too).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from alerts.digest_send import compose, email_channel_for, render_for
from alerts.notify.email import EmailNotifier
from watcher.clock import Clock, ScaledClock
from watcher.config import Settings, load_config
from watcher.resources import templates_dir
from watcher.service import Watcher, format_reports
from watcher.simulator import World, create_app
from watcher.store import Store
from watcher.testing import DEFAULT_TOKEN, SlackState, create_slack_app
from watcher.testing.mail_sink import MailSink, start_mail_sink

DEMO_SPEED = 600.0  # ten simulated minutes per real second
DEMO_RECIPIENT = "team-lead@agency.example"


def demo_settings(
    world: World, base_url: str, slack_url: str, smtp_port: int, db_path: Path, workdir: Path
) -> Settings:
    """A config for every simulated organization, validated like a user's file."""
    env: dict[str, str] = {"MAKEWATCH_DEMO_SLACK_TOKEN": DEFAULT_TOKEN}
    parts = []
    for i, org in enumerate(sorted(world.organizations.values(), key=lambda o: o.id)):
        env[f"MAKEWATCH_DEMO_TOKEN_{i}"] = world.tokens_by_org[org.id]
        parts.append(
            f"[[organizations]]\nname = {json.dumps(org.name)}\nbase_url = {json.dumps(base_url)}\n"
            f'organization_id = {org.id}\ntoken_env = "MAKEWATCH_DEMO_TOKEN_{i}"\n'
        )
    parts.append(
        f"""[state]
db_path = {json.dumps(str(db_path))}

[alerts]
group_wait_s = 0
default_channels = ["slack", "mail"]

[channels.slack]
type = "slack_bot"
token_env = "MAKEWATCH_DEMO_SLACK_TOKEN"
channel = "#alerts"
base_url = "{slack_url}/api/"

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]

[[digests]]
recipients = ["{DEMO_RECIPIENT}"]
at = "08:00"
timezone = "Europe/Paris"
channel = "mail"
"""
    )
    path = workdir / "makewatch-demo.toml"
    path.write_text("\n".join(parts))
    return load_config(path, env=env)


async def serve_local(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 at a free port: (runner to clean up, port)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def run_demo(
    *, seed: int = 1, minutes: float = 60.0, db_path: Path | None = None, clock: Clock | None = None
) -> str:
    """Run the demo and return its report (text).

    ``clock`` drives the simulator and the watcher alike; by default it starts now and runs
    ``DEMO_SPEED`` times faster than real time.
    """
    clock = clock or ScaledClock(speed=DEMO_SPEED)
    world = World.generate(seed=seed, clock=clock)
    slack = SlackState()
    sink = MailSink()
    smtp = start_mail_sink(sink)
    sim_runner, sim_port = await serve_local(create_app(world))
    slack_runner, slack_port = await serve_local(create_slack_app(slack))
    try:
        base_url = f"http://127.0.0.1:{sim_port}/api/v2"
        with tempfile.TemporaryDirectory(prefix="makewatch-demo-") as tmp:
            db = db_path or Path(tmp) / "makewatch.db"
            settings = demo_settings(world, base_url, f"http://127.0.0.1:{slack_port}", smtp.port, db, Path(tmp))
            with Store.open(db) as store:
                async with aiohttp.ClientSession() as session:
                    # No digest schedule in the watcher: the demo sends its own digest below.
                    watching = settings.model_copy(update={"digests": ()})
                    watcher = Watcher(watching, store, session, clock)
                    try:
                        started = clock.time()
                        first, first_alerts = await watcher.cycle()
                        after_first = await store.read(lambda d: d["events"].count)
                        await clock.sleep(minutes * 60)
                        second, second_alerts = await watcher.cycle()
                        subject = await _send_digest(settings, store, watcher, started, clock.time())
                    finally:
                        await watcher.aclose()
                events = await store.read(lambda d: [dict(r) for r in d["events"].rows_where(order_by="id")])
    finally:
        await sim_runner.cleanup()
        await slack_runner.cleanup()
        smtp.stop()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("cli/demo.txt.j2").render(
        base_url=base_url,
        seed=seed,
        minutes=minutes,
        first=format_reports(first) + "\n" + first_alerts.summary(),
        second=format_reports(second) + "\n" + second_alerts.summary(),
        baseline=[_row(e) for e in events[:after_first]],
        detected=[_row(e) for e in events[after_first:]],
        slack=[_slack_line(m) for m in slack.messages],
        mails=sink.subjects(),
        digest_subject=subject,
    )


async def _send_digest(settings: Settings, store: Store, watcher: Watcher, start: float, end: float) -> str:
    """The team lead's digest of the demo's own run, ``[start, end)``; returns its subject."""
    (digest,) = settings.digests
    notifier = watcher.alerter.notifiers[email_channel_for(settings, digest)]
    if not isinstance(notifier, EmailNotifier):
        raise TypeError(f"the demo's digest channel is not an e-mail channel: {type(notifier).__name__}")
    _, parts = await render_for(store, watcher.alerter.renderer, digest, start, end, end)
    await notifier.send_message(compose(notifier.settings, DEMO_RECIPIENT, parts, start), [DEMO_RECIPIENT])
    return parts[0]


def _slack_line(message: Any) -> str:
    first = next((line for line in message.text.splitlines() if line.strip()), "")
    where = f"reply in thread {message.thread_ts}" if message.thread_ts else "message"
    return f"{message.channel} {where}: {first[:140]}"


def _row(event: dict[str, Any]) -> dict[str, Any]:
    payload = json.loads(event["payload_json"] or "{}")
    what = payload.get("scenario_name") or payload.get("hook_name") or ""
    detail = ""
    if event["kind"] in ("execution_error", "execution_warning"):
        detail = f"{payload.get('error_name')}: {payload.get('error_message')}"
    elif event["kind"] == "quota":
        detail = f"{payload.get('used_pct')} % of {payload.get('limit')} operations used"
    elif event["kind"] == "incomplete_executions":
        detail = payload.get("reason") or f"{payload.get('dlq_count')} waiting"
    elif event["kind"] == "hook_backlog":
        detail = f"queue {payload.get('queue_count')}/{payload.get('queue_limit')}"
    return {
        "kind": event["kind"],
        "severity": event["severity"],
        "organization": payload.get("organization", ""),
        "what": what,
        "detail": detail,
        "reason": event.get("reason") or "",
    }
