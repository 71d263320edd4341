"""The CLI against a real `makewatch simulate` process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher.cli import main
from watcher.config import load_config
from watcher.orgs import calibrate, make_client
from watcher.simulator import World

LINE = re.compile(r"organization (\d+) '([^']+)' plan=(\w+) .* token=([0-9a-f-]+)")


@pytest.fixture(scope="module")
def simulator():
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher.cli", "simulate", "--port", "0", "--slack-port", "0", "--smtp-port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        base_url = re.search(r"(http://\S+/api/v2)", first).group(1)
        orgs = {}
        while len(orgs) < 3:
            m = LINE.search(proc.stdout.readline())
            if m:
                orgs[m.group(2)] = {"id": int(m.group(1)), "plan": m.group(3), "token": m.group(4)}
        yield base_url, orgs
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def write_config(tmp_path: Path, base_url: str, org_id: int, extra: str = "") -> Path:
    path = tmp_path / "makewatch.toml"
    path.write_text(
        f"""
[[organizations]]
name = "Acme"
base_url = "{base_url}"
organization_id = {org_id}
token_env = "MAKE_TOKEN_ACME"
{extra}
"""
    )
    return path


def test_simulate_serves_the_api(simulator):
    base_url, orgs = simulator
    acme = orgs["Acme Agency"]
    req = urllib.request.Request(
        f"{base_url}/organizations/{acme['id']}",
        headers={"Authorization": f"Token {acme['token']}", "User-Agent": "test"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = json.load(resp)
    assert body["organization"]["license"]["apiLimit"] == 60


def test_check_reports_plan_budget_and_scopes(simulator, tmp_path):
    base_url, orgs = simulator
    acme = orgs["Acme Agency"]
    cfg = write_config(tmp_path, base_url, acme["id"], 'plan = "free"')
    result = CliRunner().invoke(
        main, ["check", "--config", str(cfg)], env={"MAKE_TOKEN_ACME": acme["token"]}
    )
    assert result.exit_code == 0, result.output
    # Make's license (Core, 60/min) wins over the configured plan (free, 30/min).
    assert "API limit 60/min, makewatch budget 30/min" in result.output
    assert "all needed read scopes present" in result.output
    assert acme["token"] not in result.output


def test_check_fails_on_a_rejected_token_without_echoing_it(simulator, tmp_path):
    base_url, orgs = simulator
    cfg = write_config(tmp_path, base_url, orgs["Acme Agency"]["id"])
    wrong = "99999999-8888-4777-8666-555555555555"
    result = CliRunner().invoke(main, ["check", "--config", str(cfg)], env={"MAKE_TOKEN_ACME": wrong})
    assert result.exit_code == 1
    assert "FAILED: Make API 401" in result.output
    assert wrong not in result.output


def test_a_bad_config_exits_2_naming_file_and_key(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text('[[organizations]]\nname = "Acme"\nzone = "eu1.make.com"\ntoken_env = "X"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(cfg)], env={"X": "t"})
    assert result.exit_code == 2
    assert "broken.toml: organizations[0].organization_id:" in result.output


def test_a_missing_config_file_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml" in result.output


async def test_calibrate_sizes_the_budget_from_make_license(start_sim, fast_clock, tmp_path):
    world = World(seed=2, clock=fast_clock)
    org = world.add_organization(name="Globex", plan="pro")
    token = world.add_token(org_ids=[org.id])
    sim = await start_sim(world)
    cfg = write_config(tmp_path, sim.base_url, org.id, 'plan = "free"\nbudget_share = 0.25')
    settings = load_config(cfg, env={"MAKE_TOKEN_ACME": token})
    client = make_client(sim.session, settings.organizations[0], settings.http, fast_clock)
    assert client.limiter.per_window == 7  # free 30 x 0.25 until Make tells us more
    info = await calibrate(client, settings.organizations[0])
    assert info.license.api_limit == 120
    assert client.limiter.per_window == 30  # pro 120 x 0.25


def test_once_prints_requests_and_events_by_kind(simulator, tmp_path):
    base_url, orgs = simulator
    acme = orgs["Acme Agency"]
    cfg = write_config(tmp_path, base_url, acme["id"], f'\n[state]\ndb_path = "{tmp_path / "s.db"}"')
    env = {"MAKE_TOKEN_ACME": acme["token"]}
    first = CliRunner().invoke(main, ["once", "--config", str(cfg)], env=env)
    assert first.exit_code == 0, first.output
    # The demo world's Acme has a scenario Make already switched off: reported once, at start.
    assert "Acme: ok; requests " in first.output
    assert "scenario_deactivated 1" in first.output
    second = CliRunner().invoke(main, ["once", "--config", str(cfg)], env=env)
    assert second.exit_code == 0
    assert "scenario_deactivated" not in second.output
    assert (tmp_path / "s.db").stat().st_mode & 0o077 == 0


def test_silence_add_list_expire(tmp_path):
    cfg = write_config(tmp_path, "https://eu1.make.com/api/v2", 1, f'\n[state]\ndb_path = "{tmp_path / "s.db"}"')
    env = {"MAKE_TOKEN_ACME": "t"}
    run = CliRunner().invoke
    nothing = run(main, ["silence", "add", "--config", str(cfg), "--for", "2h", "--reason", "x"], env=env)
    assert nothing.exit_code == 2 and "--scenario, --org or --kind" in nothing.output
    bad = run(main, ["silence", "add", "--config", str(cfg), "--kind", "quota", "--for", "soon", "--reason", "x"], env=env)
    assert bad.exit_code == 2 and "duration" in bad.output
    added = run(
        main,
        ["silence", "add", "--config", str(cfg), "--scenario", "42", "--error-contains", "timeout", "--for", "2h", "--reason", "vendor outage"],
        env=env,
    )
    assert added.exit_code == 0, added.output
    listed = run(main, ["silence", "list", "--config", str(cfg)], env=env)
    assert "scenario_id=42, error_contains=timeout" in listed.output and "vendor outage" in listed.output
    sid = added.output.split()[1]
    assert run(main, ["silence", "expire", "--config", str(cfg), sid], env=env).exit_code == 0
    assert run(main, ["silence", "list", "--config", str(cfg)], env=env).output.strip() == "no silences"
    assert "(expired)" in run(main, ["silence", "list", "--all", "--config", str(cfg)], env=env).output
    assert run(main, ["silence", "expire", "--config", str(cfg), sid], env=env).exit_code == 1


@pytest.mark.parametrize("kind", ["execution_error", "scenario_deactivated", "quota", "summary"])
def test_render_previews_slack_and_email(kind):
    slack = CliRunner().invoke(main, ["render", "--kind", kind, "--channel", "slack"])
    assert slack.exit_code == 0, slack.output
    assert json.loads(slack.output)["blocks"]
    mail = CliRunner().invoke(main, ["render", "--kind", kind, "--channel", "email"])
    assert mail.exit_code == 0 and mail.output.startswith("Subject: ") and "<html" in mail.output.lower()


def test_render_rejects_an_unknown_kind():
    result = CliRunner().invoke(main, ["render", "--kind", "nope", "--channel", "slack"])
    assert result.exit_code == 2 and "unknown kind" in result.output


def test_digest_prints_writes_and_sends(tmp_path):
    from watcher.testing.mail_sink import MailSink, start_mail_sink

    sink = MailSink()
    controller = start_mail_sink(sink)
    try:
        extra = f"""
[state]
db_path = "{tmp_path / "s.db"}"

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {controller.port}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]

[[digests]]
recipients = ["lead@agency.example"]
at = "08:00"
timezone = "Europe/Paris"
"""
        cfg = write_config(tmp_path, "https://eu1.make.com/api/v2", 1, extra)
        env = {"MAKE_TOKEN_ACME": "t"}
        run = CliRunner().invoke
        unknown = run(main, ["digest", "--config", str(cfg), "--recipient", "who@x.example"], env=env)
        assert unknown.exit_code == 2 and "not a recipient" in unknown.output
        printed = run(main, ["digest", "--config", str(cfg), "--recipient", "lead@agency.example"], env=env)
        assert printed.exit_code == 0 and printed.output.startswith("Subject: [makewatch] Daily digest")
        html = tmp_path / "d.html"
        wrote = run(main, ["digest", "--config", str(cfg), "--recipient", "lead@agency.example", "--html", str(html)], env=env)
        assert wrote.exit_code == 0 and "<table" in html.read_text()
        assert run(main, ["digest", "--config", str(cfg), "--recipient", "lead@agency.example", "--record"], env=env).exit_code == 2
        sent = run(main, ["digest", "--config", str(cfg), "--recipient", "lead@agency.example", "--send", "--record"], env=env)
        assert sent.exit_code == 0, sent.output
        assert [rcpt for rcpt, _ in sink.messages] == [["lead@agency.example"]]
        again = run(main, ["digest", "--config", str(cfg), "--recipient", "lead@agency.example", "--send", "--record"], env=env)
        assert again.exit_code == 1 and "already claimed" in again.output  # recorded: never twice
        assert len(sink.messages) == 1
    finally:
        controller.stop()


def test_check_reaches_each_channel_without_sending(simulator, tmp_path):
    import threading

    from aiohttp import web

    from watcher.testing import SlackState, create_slack_app
    from watcher.testing.mail_sink import MailSink, free_port, start_mail_sink

    base_url, orgs = simulator
    acme = orgs["Acme Agency"]
    slack = SlackState()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_slack_app(slack))
    loop.run_until_complete(runner.setup())
    port = free_port()
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sink = MailSink()
    smtp = start_mail_sink(sink)
    try:
        extra = f"""
[channels.bot]
type = "slack_bot"
token_env = "BOT"
channel = "#alerts"
base_url = "http://127.0.0.1:{port}/api/"

[channels.hook]
type = "slack_webhook"
webhook_url_env = "HOOK"

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]

[channels.deadmail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {free_port()}
security = "none"
from_addr = "makewatch@agency.example"
to = ["ops@agency.example"]
"""
        cfg = write_config(tmp_path, base_url, acme["id"], extra)
        env = {"MAKE_TOKEN_ACME": acme["token"], "BOT": "xoxb-standin-token", "HOOK": f"http://127.0.0.1:{port}/webhook/x"}
        result = CliRunner().invoke(main, ["check", "--config", str(cfg)], env=env)
        assert result.exit_code == 1, result.output  # the dead SMTP server fails the check
        assert "channel bot (slack_bot): ok" in result.output
        assert "channel hook (slack_webhook): not checked" in result.output
        assert "channel mail (email): ok" in result.output
        assert "channel deadmail (email): FAILED: " in result.output and "cannot connect" in result.output
        assert [r.method for r in slack.requests] == ["auth.test"] and sink.messages == []

        # --send-test posts to every channel, the webhook included, and says which failed.
        slack.webhooks = {"x": "C0WEBHOOK"}
        sent = CliRunner().invoke(main, ["check", "--config", str(cfg), "--send-test"], env=env)
        assert sent.exit_code == 1, sent.output
        for name in ("bot (slack_bot)", "hook (slack_webhook)", "mail (email)"):
            assert f"channel {name}: test message sent" in sent.output
        assert "channel deadmail (email): FAILED: " in sent.output and "cannot connect" in sent.output
        posted = {m.channel: m.all_text() for m in slack.messages}
        assert set(posted) == {"C0ALERTS", "C0WEBHOOK"}
        assert all("makewatch test message" in t and "nothing is wrong" in t for t in posted.values())
        [(_, mail)] = sink.messages
        assert "makewatch test message on channel mail" in str(mail["Subject"]) + mail.get_body(("plain",)).get_content()
        slack.webhooks = {}  # the webhook is gone: Slack answers 404 no_service
        gone = CliRunner().invoke(main, ["check", "--config", str(cfg), "--send-test"], env=env)
        assert "channel hook (slack_webhook): FAILED: " in gone.output and "no_service" in gone.output
        assert env["HOOK"] not in sent.output + gone.output  # the webhook URL is the secret
    finally:
        smtp.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_status_shows_organizations_alerts_and_outbox(simulator, tmp_path):
    base_url, orgs = simulator
    acme = orgs["Acme Agency"]
    cfg = write_config(tmp_path, base_url, acme["id"], f'\n[state]\ndb_path = "{tmp_path / "s.db"}"')
    env = {"MAKE_TOKEN_ACME": acme["token"]}
    before = CliRunner().invoke(main, ["status", "--config", str(cfg)], env=env)
    assert before.exit_code == 0 and "No state yet" in before.output
    assert CliRunner().invoke(main, ["once", "--config", str(cfg)], env=env).exit_code == 0
    shown = CliRunner().invoke(main, ["status", "--config", str(cfg)], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"Acme (organization {acme['id']}, plan Core)" in shown.output
    assert "last cycle" in shown.output and ": ok;" in shown.output
    assert "1 switched off by errors" in shown.output
    assert "scenario_deactivated" in shown.output and "Invoice export to Xero" in shown.output
    assert "outbox: 0 pending" in shown.output


BAD_INPUTS = [
    # (what, extra TOML, key named in the message, problem)
    ("ca_file that does not exist", '\n[channels.mail]\ntype = "email"\nsmtp_host = "smtp.example.com"\nfrom_addr = "a@example.com"\nto = ["b@example.com"]\nca_file = "nope.pem"', "channels.mail.ca_file", "does not exist"),
    ("arrays nested 5,000 deep", "\n[polling]\nquota_thresholds = " + "[" * 5000 + "]" * 5000, "polling.quota_thresholds", "nested too deeply"),
    ("poll_interval_s = inf", "\n[polling]\npoll_interval_s = inf", "polling.poll_interval_s", "must be a finite number"),
    ("db_path a directory", '\n[state]\ndb_path = "{tmp}"', "state.db_path", "is a directory"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["check", "once", "run"])
@pytest.mark.parametrize(("extra", "key", "problem"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_2_naming_file_and_key_without_a_traceback(tmp_path, command, extra, key, problem):
    cfg = write_config(tmp_path, "http://127.0.0.1:9/api/v2", 1, extra.replace("{tmp}", str(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "watcher.cli", command, "--config", str(cfg)],
        env={**os.environ, "MAKE_TOKEN_ACME": "t"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"makewatch: configuration error: {cfg}: {key}: " in done.stderr and problem in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_organization_id_beyond_64_bits_fails_once_as_it_fails_check(tmp_path):
    # It used to pass `check` (whose requests fail like any unknown organization's) and crash
    # `once` at the first SQLite write.
    cfg = write_config(tmp_path, "http://127.0.0.1:9/api/v2", 99999999999999999999999)
    for command in ("check", "once"):
        result = CliRunner().invoke(main, [command, "--config", str(cfg)], env={"MAKE_TOKEN_ACME": "t"})
        assert result.exit_code == 2, result.output
        assert "organizations[0].organization_id: integer out of range" in result.output


@pytest.mark.parametrize(
    ("args", "option", "problem"),
    [
        (["--kind", "quota", "--for", "0m", "--reason", "x"], "--for", "must be longer than 0"),
        (["--kind", "quota", "--for", "400d", "--reason", "x"], "--for", "must be at most 365d"),
        (["--kind", "bogus", "--for", "1h", "--reason", "x"], "--kind", "unknown kind 'bogus'; expected one of: execution_error"),
        (["--org", "NoSuchOrg", "--for", "1h", "--reason", "x"], "--org", "'NoSuchOrg' matches no configured organization; configured: Acme (1)"),
        (["--org", "2", "--for", "1h", "--reason", "x"], "--org", "matches no configured organization"),
        (["--kind", "quota", "--for", "1h", "--reason", ""], "--reason", "must not be empty"),
        (["--kind", "quota", "--for", "1h", "--reason", "   "], "--reason", "must not be empty"),
        (["--scenario", "0", "--for", "1h", "--reason", "x"], "--scenario", "not in the range"),
    ],
)
def test_silence_add_refuses_what_would_silence_nothing_or_not_what_was_meant(tmp_path, args, option, problem):
    db = tmp_path / "s.db"
    cfg = write_config(tmp_path, "https://eu1.make.com/api/v2", 1, f'\n[state]\ndb_path = "{db}"')
    result = CliRunner().invoke(main, ["silence", "add", "--config", str(cfg), *args], env={"MAKE_TOKEN_ACME": "t"})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not a crash caught by the runner
    assert option in result.output and problem in result.output
    assert not db.exists()  # refused before the state file is touched


@pytest.mark.parametrize("org", ["Acme", "acme", "Ac*", "1"])
def test_silence_add_accepts_an_organization_by_name_glob_or_id(tmp_path, org):
    cfg = write_config(tmp_path, "https://eu1.make.com/api/v2", 1, f'\n[state]\ndb_path = "{tmp_path / "s.db"}"')
    args = ["silence", "add", "--config", str(cfg), "--org", org, "--for", "30m", "--reason", "x"]
    result = CliRunner().invoke(main, args, env={"MAKE_TOKEN_ACME": "t"})
    assert result.exit_code == 0, result.output
