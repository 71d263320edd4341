"""``makewatch demo``: the whole worker on embedded defaults, no config, token or network.

It starts, on 127.0.0.1, the bundled Make simulator (its clock runs fast), a Slack API
stand-in and a local SMTP sink; points a watcher at every simulated organization with a
temporary SQLite file; runs the first cycle (the baseline: problems that already stand), lets
simulated time pass, runs another cycle, and shows what was detected and what Slack (each
message as a person reads it) and the mailbox received, plus the daily digest. What the
reader may want to open afterwards is written to ``--out`` (``./demo-out``): the digest as
HTML and text, each alert e-mail, the Slack messages.

While it runs, a progress line on stderr shows the simulated clock, the cycles, the events
stored and the messages received: rewritten in place on a terminal, else one line per step
and per ``PROGRESS_STEP_MIN`` simulated minutes (the same lines at any speed or load: the
steps are taken on the simulated clock).

The demo sends one digest, its own, covering exactly the simulated time it ran: the watcher
runs without the digest schedule, so what the demo shows never depends on the hour it is
started at (a run across 08:00 Europe/Paris used to send the scheduled digest too).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import jinja2

from alerts.digest_send import compose, email_channel_for, render_for
from alerts.notify.email import EmailNotifier
from watcher.clock import Clock, ScaledClock
from watcher.config import Settings, load_config
from watcher.resources import templates_dir
from watcher.service import Watcher, format_reports
from watcher.simulator import World, create_app
from watcher.store import Store
from watcher.testing import SlackState, create_slack_app
from watcher.testing.mail_sink import MailSink, start_mail_sink, subject_of
from watcher.testing.slack_text import message_text
from watcher.testing.standins import serve_local, simulator_config

DEMO_SPEED = 600.0  # ten simulated minutes per real second
DEMO_RECIPIENT = "team-lead@agency.example"
DEFAULT_OUT = Path("demo-out")
PROGRESS_STEP_MIN = 10  # a plain progress line every this many simulated minutes of the wait
TTY_STEP_MIN = 1  # the terminal's line is rewritten every simulated minute (0.1 s real)


def demo_settings(
    world: World, base_url: str, slack_url: str, smtp_port: int, db_path: Path, workdir: Path
) -> Settings:
    """A config for every simulated organization, validated like a user's file."""
    config = simulator_config(world, base_url, slack_url=slack_url, smtp_port=smtp_port, alerts="group_wait_s = 0")
    path = workdir / "makewatch-demo.toml"
    path.write_text(
        f"""{config.toml}
[state]
db_path = {json.dumps(str(db_path))}

[[digests]]
recipients = ["{DEMO_RECIPIENT}"]
at = "08:00"
timezone = "Europe/Paris"
channel = "mail"
"""
    )
    return load_config(path, env=config.env)


class Progress:
    """The demo's progress line on ``stream``: ``\\r``-rewritten on a terminal, else one line a step.

    ``tty`` defaults to ``stream.isatty()``; ``None`` as the stream shows nothing.
    """

    def __init__(self, stream: TextIO | None, clock: Clock, tty: bool | None = None) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = bool(stream is not None and (stream.isatty() if tty is None else tty))
        self.step_min = TTY_STEP_MIN if self.tty else PROGRESS_STEP_MIN
        self._width = 0

    def show(self, what: str, *, cycles: int, events: int, slack: int, mails: int) -> None:
        if self.stream is None:
            return
        now = datetime.fromtimestamp(self.clock.time(), tz=UTC).strftime("%H:%M")
        line = f"[{now} simulated] {what} · cycles {cycles}/2 · events {events} · Slack {slack} · e-mails {mails}"
        if self.tty:
            # A line wider than the terminal wraps, and \r then rewrites only its last row.
            line = line[: shutil.get_terminal_size().columns - 1]
            # Pad over the longer line it replaces; \x1b[K would leave a dumb terminal's junk.
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class _Figures:
    """What the progress line counts, read from the stand-ins and the store."""

    store: Store
    slack: SlackState
    sink: MailSink
    cycles: int = 0

    async def show(self, progress: Progress, what: str) -> None:
        events = await self.store.read(lambda d: d["events"].count)
        progress.show(what, cycles=self.cycles, events=events, slack=len(self.slack.messages), mails=len(self.sink.messages))


async def run_demo(
    *,
    seed: int = 1,
    minutes: float = 60.0,
    db_path: Path | None = None,
    clock: Clock | None = None,
    out_dir: Path | None = None,
    progress: TextIO | None = None,
    tty: bool | None = None,
) -> str:
    """Run the demo and return its report (text).

    ``clock`` drives the simulator and the watcher alike; by default it starts now and runs
    ``DEMO_SPEED`` times faster than real time. ``out_dir``: where the digest, the alert
    e-mails and the Slack messages are written (nothing is written without it).
    ``progress``: the stream of the progress line (see :class:`Progress`).
    """
    clock = clock or ScaledClock(speed=DEMO_SPEED)
    line = Progress(progress, clock, tty)
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
                figures = _Figures(store, slack, sink)
                async with aiohttp.ClientSession() as session:
                    # No digest schedule in the watcher: the demo sends its own digest below.
                    watching = settings.model_copy(update={"digests": ()})
                    watcher = Watcher(watching, store, session, clock)
                    try:
                        started = clock.time()
                        await figures.show(line, "first cycle")
                        first, first_alerts = await watcher.cycle()
                        figures.cycles = 1
                        after_first = await store.read(lambda d: d["events"].count)
                        await _wait(clock, minutes, line, figures)
                        await figures.show(line, "second cycle")
                        second, second_alerts = await watcher.cycle()
                        figures.cycles = 2
                        await figures.show(line, "daily digest")
                        digest = await _send_digest(settings, store, watcher, started, clock.time())
                        await figures.show(line, "done")
                    finally:
                        line.done()
                        await watcher.aclose()
                events = await store.read(lambda d: [dict(r) for r in d["events"].rows_where(order_by="id")])
    finally:
        await sim_runner.cleanup()
        await slack_runner.cleanup()
        smtp.stop()
    alert_mails = [(to, m) for to, m in sink.messages if m["X-Makewatch-Kind"] != "digest"]
    written = _write_out(out_dir, digest, alert_mails, slack) if out_dir is not None else None
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
        slack=[message_text(m, indent="    ") for m in slack.messages],
        mails=sink.subjects(),
        digest_subject=digest[0],
        out=written,
    )


async def _wait(clock: Clock, minutes: float, line: Progress, figures: _Figures) -> None:
    """Let ``minutes`` simulated minutes pass, showing progress at the steps of the simulated
    clock (deadlines from the start of the wait, so the steps do not drift)."""
    begin = clock.time()
    end = begin + minutes * 60
    step = line.step_min * 60
    k = 1
    while begin + k * step < end:
        await clock.sleep(begin + k * step - clock.time())
        await figures.show(line, f"waiting {k * line.step_min}/{minutes:g} min")
        k += 1
    await clock.sleep(end - clock.time())


@dataclass
class Written:
    """What the demo wrote for the reader to open, relative to the directory given."""

    directory: Path
    mails: list[str]


def _write_out(
    out: Path, digest: tuple[str, str, str], mails: list[tuple[list[str], EmailMessage]], slack: SlackState
) -> Written:
    """Write the digest, each alert e-mail (.eml, and its HTML part) and the Slack messages."""
    mail_dir = out / "mail"
    mail_dir.mkdir(parents=True, exist_ok=True)
    for old in [*mail_dir.glob("*.eml"), *mail_dir.glob("*.html")]:
        old.unlink()  # a previous run's: what is here should be this run's mailbox
    subject, text, html = digest
    (out / "digest.html").write_text(html, encoding="utf-8")
    (out / "digest.txt").write_text(f"Subject: {subject}\n\n{text}", encoding="utf-8")
    (out / "slack.txt").write_text("\n\n".join(message_text(m) for m in slack.messages) + "\n", encoding="utf-8")
    names = []
    for i, (_, message) in enumerate(mails, 1):
        title = subject_of(message).removeprefix("Re: ").removeprefix("[makewatch] ")
        stem = f"{i:02d}-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].rstrip("-")
        (mail_dir / f"{stem}.eml").write_bytes(message.as_bytes())
        part = message.get_body(preferencelist=("html",))
        if part is not None:
            (mail_dir / f"{stem}.html").write_text(part.get_content(), encoding="utf-8")
        names.append(stem)
    return Written(out, names)


async def _send_digest(
    settings: Settings, store: Store, watcher: Watcher, start: float, end: float
) -> tuple[str, str, str]:
    """The team lead's digest of the demo's own run, ``[start, end)``: its (subject, text, html)."""
    (digest,) = settings.digests
    notifier = watcher.alerter.notifiers[email_channel_for(settings, digest)]
    if not isinstance(notifier, EmailNotifier):
        raise TypeError(f"the demo's digest channel is not an e-mail channel: {type(notifier).__name__}")
    _, parts = await render_for(store, watcher.alerter.renderer, digest, start, end, end)
    await notifier.send_message(compose(notifier.settings, DEMO_RECIPIENT, parts, start), [DEMO_RECIPIENT])
    return parts


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
