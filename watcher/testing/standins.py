"""The stand-ins served together: ``makewatch simulate`` and the config that points at them.

``makewatch simulate`` serves, on ports of their own, the Make API simulator (the demo world
of :meth:`World.generate`, or with ``--orgs``/``--scenarios`` the scale world of
:func:`~watcher.simulator.scale.build_scale_world`), the Slack stand-in (Web API and incoming
webhooks) and the mail sink, prints the exact configuration that watches them
(:func:`simulator_config`: one ``[[organizations]]`` table per simulated organization with its
real id and a token variable, a Slack bot channel and an e-mail channel) and then prints every
Slack message and e-mail they receive, as a person would read it.

The same :func:`simulator_config` builds the demo's configuration and is what
``makewatch.example.toml``'s simulator block holds (a test keeps them equal), so the
organization ids and tokens a user pastes are the ones the simulator has.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TextIO

from aiohttp import web

from watcher.clock import Clock, ScaledClock
from watcher.simulator import World, create_app
from watcher.simulator.scale import build_scale_world
from watcher.testing.mail_sink import MailSink, start_mail_sink, subject_of
from watcher.testing.slack_standin import DEFAULT_TOKEN, SlackState, create_slack_app
from watcher.testing.slack_text import message_text

DEFAULT_PORT = 8080
DEFAULT_SLACK_PORT = 8081
# Not 25 (privileged) nor 1025 (Mailpit's, which docker/compose.yaml runs).
DEFAULT_SMTP_PORT = 2525
SLACK_TOKEN_ENV = "MAKEWATCH_SIM_SLACK_TOKEN"
SLACK_WEBHOOK_ENV = "MAKEWATCH_SIM_SLACK_WEBHOOK"
SLACK_CHANNEL = "#alerts"
MAIL_FROM = "makewatch@agency.example"
MAIL_TO = "ops@agency.example"
# The lines around the config ``simulate`` prints, and around makewatch.example.toml's copy.
BLOCK_BEGIN = "# >>> makewatch simulate"
BLOCK_END = "# <<< makewatch simulate"


def token_env_name(org_name: str) -> str:
    """The environment variable holding a simulated organization's token."""
    return "MAKE_SIM_TOKEN_" + re.sub(r"[^A-Z0-9]+", "_", org_name.upper()).strip("_")


@dataclass(frozen=True)
class SimulatorConfig:
    """A configuration for the stand-ins: the TOML text and the variables it names."""

    toml: str
    env: dict[str, str]

    def exports(self) -> str:
        """``export NAME=value`` lines, for a shell."""
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.env.items())


def simulator_config(
    world: World,
    make_url: str,
    *,
    slack_url: str | None = None,
    smtp_port: int | None = None,
    smtp_host: str = "127.0.0.1",
    alerts: str = "",
) -> SimulatorConfig:
    """The config that watches every organization of ``world`` at ``make_url`` (…/api/v2).

    With ``slack_url`` (the stand-in's root URL) a ``slack`` bot channel, with ``smtp_port``
    a ``mail`` channel, and ``[alerts] default_channels`` naming them (``alerts`` adds lines
    to that table); the demo appends its own ``[state]`` and ``[[digests]]``.
    """
    env: dict[str, str] = {}
    parts: list[str] = []
    for org in sorted(world.organizations.values(), key=lambda o: o.id):
        var = token_env_name(org.name)
        env[var] = world.tokens_by_org[org.id]
        parts.append(
            f"[[organizations]]\nname = {json.dumps(org.name)}\nbase_url = {json.dumps(make_url)}\n"
            f"organization_id = {org.id}\ntoken_env = {json.dumps(var)}\n"
        )
    channels = []
    if slack_url is not None:
        channels.append("slack")
        env[SLACK_TOKEN_ENV] = DEFAULT_TOKEN
        env[SLACK_WEBHOOK_ENV] = f"{slack_url}/webhook/makewatch"
        parts.append(
            f'[channels.slack]\ntype = "slack_bot"\ntoken_env = "{SLACK_TOKEN_ENV}"\n'
            f'channel = "{SLACK_CHANNEL}"\nbase_url = "{slack_url}/api/"\n'
            "# For the stand-in's incoming webhook instead (no threads, no updates), the four\n"
            "# lines above become:\n"
            f'# type = "slack_webhook"\n# webhook_url_env = "{SLACK_WEBHOOK_ENV}"\n'
        )
    if smtp_port is not None:
        channels.append("mail")
        parts.append(
            f'[channels.mail]\ntype = "email"\nsmtp_host = "{smtp_host}"\nsmtp_port = {smtp_port}\n'
            f'security = "none"\nfrom_addr = "{MAIL_FROM}"\nto = ["{MAIL_TO}"]\n'
        )
    if channels:
        extra = alerts.strip() + "\n" if alerts.strip() else ""
        parts.append(f"[alerts]\ndefault_channels = {json.dumps(channels)}\n{extra}")
    return SimulatorConfig("\n".join(parts), env)


def example_block(config: SimulatorConfig) -> str:
    """``config`` as makewatch.example.toml holds it: TOML lines behind ``#> ``, the exports
    behind ``#$ ``, so that ``sed -n 's/^#> \\{0,1\\}//p'`` and ``sed -n 's/^#\\$ //p'``
    get each out; ``#`` lines in between are comments for the reader."""
    toml = [f"#> {line}".rstrip() for line in config.toml.splitlines()]
    exports = [f"#$ {line}" for line in config.exports().splitlines()]
    return "\n".join([BLOCK_BEGIN, *exports, *toml, BLOCK_END])


def parse_example_block(text: str) -> SimulatorConfig:
    """What :func:`example_block` put in ``text`` (a whole file holding one such block)."""
    start, end = text.index(BLOCK_BEGIN), text.index(BLOCK_END)
    lines = text[start:end].splitlines()[1:]
    toml = [re.sub(r"^#> ?", "", line) for line in lines if line.startswith("#>")]
    env = {}
    for line in lines:
        if line.startswith("#$ export "):
            name, _, value = line[len("#$ export ") :].partition("=")
            env[name] = shlex.split(value)[0]
    return SimulatorConfig("\n".join(toml) + "\n", env)


async def serve_local(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host`` (default 127.0.0.1) at ``port`` (0: a free one): (runner, port)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]


def mail_text(recipients: list[str], message: EmailMessage, *, indent: str = "  ") -> str:
    """One received e-mail as a reader sees it: who it went to, its subject, its text part."""
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else "(no text part)"
    lines = [indent + line if line else "" for line in text.rstrip().splitlines()]
    return "\n".join([f"── e-mail to {', '.join(recipients)} · {subject_of(message)}", *lines])


async def serve_standins(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    slack_port: int = DEFAULT_SLACK_PORT,
    smtp_port: int = DEFAULT_SMTP_PORT,
    seed: int = 1,
    speed: float = 1.0,
    clock: Clock | None = None,
    out: TextIO | None = None,
    orgs: int | None = None,
    scenarios: int | None = None,
    plan: str = "core",
) -> None:
    """Serve the simulator (and the Slack stand-in and mail sink unless their port is 0)
    until cancelled; print where they are, the config to paste, then what they receive.

    With ``orgs`` or ``scenarios``, the world is ``orgs`` (default 1) organizations on
    ``plan`` with ``scenarios`` (default 100) scheduled scenarios each, instead of the demo's.
    """
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    clock = clock or ScaledClock(speed)
    if orgs is None and scenarios is None:
        world = World.generate(seed=seed, clock=clock)
    else:
        per_org = 100 if scenarios is None else scenarios
        world = build_scale_world(seed, orgs or 1, per_org, clock, plan)
    runners = []
    smtp = None
    try:
        sim_runner, bound = await serve_local(create_app(world), host, port)
        runners.append(sim_runner)
        root = f"http://{host}:{bound}"
        say(f"Make API v2 simulator: {root}/api/v2 (seed {seed}, speed x{speed:g})")
        if orgs is not None or scenarios is not None:
            n_orgs, n_scenarios = len(world.organizations), len(world.scenarios)
            say(f"  scale world: {n_orgs} organizations, {n_scenarios} scenarios")
        for org in world.organizations.values():
            say(
                f"  organization {org.id} {org.name!r} plan={org.plan} apiLimit={org.api_limit} "
                f"zone={org.zone} token={world.tokens_by_org.get(org.id)}"
            )
        say(f"  fault knobs: POST {root}/_sim/faults (see README, \"The simulator\")")
        slack_url = None
        if slack_port:
            slack = SlackState()
            slack.listeners.append(lambda m: say(message_text(m) + "\n"))
            slack_runner, slack_bound = await serve_local(create_slack_app(slack), host, slack_port)
            runners.append(slack_runner)
            slack_url = f"http://{host}:{slack_bound}"
            say(
                f"Slack stand-in: {slack_url}/api/ (bot token {DEFAULT_TOKEN}, channel "
                f"{SLACK_CHANNEL}); incoming webhooks: {slack_url}/webhook/<any path>"
            )
        if smtp_port:
            sink = MailSink()
            sink.listeners.append(lambda rcpt, m: say(mail_text(rcpt, m) + "\n"))
            smtp = start_mail_sink(sink, smtp_port, host)
            say(f"Mail sink: SMTP on {host}:{smtp_port} (no TLS, no login; keeps nothing on disk)")
        config = simulator_config(
            world, f"{root}/api/v2", slack_url=slack_url, smtp_port=smtp_port or None, smtp_host=host
        )
        say("\nIn the shell that runs makewatch:\n" + config.exports())
        say("\nand in makewatch.toml (then `makewatch check`, `makewatch run`):")
        say(BLOCK_BEGIN)
        say(config.toml.rstrip())
        say(BLOCK_END)
        say("\nWhat Slack and the mail sink receive is printed below as it arrives; Ctrl-C stops.")
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()
        if smtp is not None:
            smtp.stop()
