"""Actions (issue 17): the settings, `makewatch ack` / `makewatch alerts`, and the guarantees
of watcher.actions that hold before Make is called (read-only by default, the audit row)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TEST_ENGINE

from watcher.actions import ActionRequest, ActionsDisabled, list_actions, perform, record_local
from watcher.cli import main
from watcher.config import ConfigError, load_config
from watcher.store import Store

BASE = """
[[organizations]]
name = "Acme"
base_url = "http://127.0.0.1:9/api/v2"
organization_id = 7
token_env = "MAKE_TOKEN"
{org_extra}

[state]
db_path = "{db}"
{extra}
"""
ENV = {"MAKE_TOKEN": "read-token", "MAKE_WRITE": "write-token", "APP": "xapp-1-A1-secret", "BOT": "xoxb-1"}


def config(tmp_path: Path, org_extra: str = "", extra: str = "") -> Path:
    path = tmp_path / "makewatch.toml"
    path.write_text(BASE.format(org_extra=org_extra, extra=extra, db=tmp_path / "state.db"))
    return path


def test_actions_are_off_unless_enabled_and_the_write_token_defaults_to_the_polling_one(tmp_path):
    settings = load_config(config(tmp_path), env=ENV)
    assert settings.actions.enabled is False
    org = settings.organizations[0]
    assert not org.has_write_token and org.write_token.reveal() == "read-token"
    settings = load_config(config(tmp_path, 'write_token_env = "MAKE_WRITE"', "[actions]\nenabled = true"), env=ENV)
    org = settings.organizations[0]
    assert settings.actions.enabled and org.has_write_token
    assert org.write_token.reveal() == "write-token" and org.token.reveal() == "read-token"


@pytest.mark.parametrize(
    ("org_extra", "extra", "key", "problem"),
    [
        ('write_token_env = "NOPE"', "", "organizations[0].write_token_env", "NOPE is not set"),
        ('write_token_env = "12345678-12ef-abcd-1234-1234567890ab"', "", "organizations[0].write_token_env",
         "name of an environment variable"),
        ("", '[channels.s]\ntype = "slack_bot"\ntoken_env = "BOT"\nchannel = "C1"\napp_token_env = "BOT"',
         "channels.s.app_token_env", "app-level token"),
        ("", '[[routes]]\nchannels = ["m"]\nactors = ["ana"]\n[channels.m]\ntype = "email"\n'
         'smtp_host = "h"\nfrom_addr = "a@b.c"\nto = ["d@e.f"]', "routes[0].actors[0]", "pattern"),
        ("", "[actions]\nstale_after_s = 1.0", "actions.stale_after_s", "10"),
    ],
)
def test_a_bad_action_setting_names_its_key_and_never_the_secret(tmp_path, org_extra, extra, key, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(config(tmp_path, org_extra, extra), env=ENV)
    assert caught.value.key == key, str(caught.value)
    assert problem in str(caught.value)
    assert "xoxb-1" not in str(caught.value)


def test_a_slack_bot_channel_takes_an_app_token_and_a_signing_secret(tmp_path):
    extra = (
        '[channels.s]\ntype = "slack_bot"\ntoken_env = "BOT"\nchannel = "C1"\n'
        'app_token_env = "APP"\nsigning_secret = "shh"'
    )
    settings = load_config(config(tmp_path, "", extra), env=ENV)
    ch = settings.channels["s"]
    assert ch.app_token.reveal() == "xapp-1-A1-secret" and ch.signing_secret.reveal() == "shh"
    assert "shh" not in repr(ch) and "xapp-1-A1-secret" not in repr(ch)


async def test_perform_refuses_while_actions_are_off_and_records_nothing(tmp_path):
    import aiohttp

    from watcher.clock import SystemClock

    settings = load_config(config(tmp_path), env=ENV)
    with Store.open(settings.state.db_path) as store:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ActionsDisabled):
                await perform(settings, store, ActionRequest("start", "Acme", scenario_id=1),
                              session=session, clock=SystemClock())
        assert await list_actions(store) == []


async def test_a_repeated_dedup_key_returns_the_first_record(tmp_path):
    with Store.open(tmp_path / "s.db") as store:
        req = ActionRequest("ack", "", alert_id=3, actor="ana", source="slack", dedup_key="env-1")
        first = await record_local(store, req, 100.0, status="done", message="acknowledged")
        again = await record_local(store, req, 105.0, status="refused", message="already")
        assert not first.duplicate and again.duplicate
        assert again.id == first.id and again.status == "done" and again.created_at == 100.0
        assert [a.id for a in await list_actions(store, alert_id=3)] == [first.id]


def seed_alerts(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.write_sync(lambda db: [
            db["alerts"].insert(row) for row in (
                {"id": 1, "fingerprint": "a", "kind": "execution_error", "severity": "error", "state": "firing",
                 "org_id": 7, "scenario_id": 42, "count": 3, "first_seen": 1000.0, "last_seen": 2000.0,
                 "reason": "DataError: row 5"},
                {"id": 2, "fingerprint": "b", "kind": "scenario_deactivated", "severity": "critical",
                 "state": "resolved", "org_id": 7, "scenario_id": 43, "count": 1, "first_seen": 500.0,
                 "last_seen": 600.0},
            )
        ])


@pytest.mark.skipif(TEST_ENGINE == "postgres", reason="the CLI opens the state file its config names")
def test_ack_acknowledges_once_and_alerts_shows_who_and_the_audit_trail(tmp_path):
    cfg = config(tmp_path)
    seed_alerts(tmp_path / "state.db")
    run = CliRunner().invoke
    listed = run(main, ["alerts", "--firing", "--config", str(cfg)], env=ENV)
    assert listed.exit_code == 0, listed.output
    assert "1: firing error execution_error (scenario 42), 3x" in listed.output
    assert "scenario 43" not in listed.output  # resolved: not --firing

    done = run(main, ["ack", "1", "--by", "ana", "--config", str(cfg)], env=ENV)
    assert done.exit_code == 0, done.output
    assert "alert 1 acknowledged by ana" in done.output
    again = run(main, ["ack", "1", "--by", "bob", "--config", str(cfg)], env=ENV)
    assert again.exit_code == 1 and "already acknowledged by ana" in again.output
    resolved = run(main, ["ack", "2", "--config", str(cfg)], env=ENV)
    assert resolved.exit_code == 1 and "already resolved" in resolved.output
    unknown = run(main, ["ack", "99", "--config", str(cfg)], env=ENV)
    assert unknown.exit_code == 1 and "no alert 99" in unknown.output

    listed = run(main, ["alerts", "--config", str(cfg)], env=ENV)
    assert ", acknowledged by ana" in listed.output
    assert "ana: ack -> done: acknowledged" in listed.output
    assert "bob: ack -> refused: already acknowledged by ana" in listed.output
    assert "scenario 43" in listed.output  # every alert without --firing
    with Store.open(tmp_path / "state.db") as store:
        trail = asyncio.run(list_actions(store))
    assert [(a.action, a.status, a.alert_id, a.scenario_id) for a in trail] == [
        ("ack", "refused", 2, 43), ("ack", "refused", 1, 42), ("ack", "done", 1, 42),
    ]
    # Without --by, the user name (or "cli" where there is none) stands for who acted.
    assert [a.actor for a in trail][1:] == ["bob", "ana"]
    assert trail[0].actor == "cli" or trail[0].actor.endswith(" (cli)")


def test_a_scenario_action_exits_2_while_actions_are_off(tmp_path):
    cfg = config(tmp_path)
    result = CliRunner().invoke(main, ["scenario", "start", "42", "--org", "Acme", "--config", str(cfg)], env=ENV)
    assert result.exit_code == 2
    assert "actions are off: set [actions] enabled = true" in result.output
    assert "read-token" not in result.output


def test_an_unknown_organization_exits_2_naming_the_configured_ones(tmp_path):
    cfg = config(tmp_path, extra="[actions]\nenabled = true")
    result = CliRunner().invoke(main, ["scenario", "stop", "42", "--org", "Nope", "--config", str(cfg)], env=ENV)
    assert result.exit_code == 2
    assert "no organization 'Nope' in the config (configured: Acme)" in result.output


def test_the_new_secrets_are_redacted_from_logs(tmp_path):
    from watcher.logs import secrets_of

    extra = (
        '[channels.s]\ntype = "slack_bot"\ntoken_env = "BOT"\nchannel = "C1"\n'
        'app_token_env = "APP"\nsigning_secret = "shh-signing"'
    )
    settings = load_config(config(tmp_path, 'write_token_env = "MAKE_WRITE"', extra), env=ENV)
    found = secrets_of(settings)
    assert {"write-token", "xapp-1-A1-secret", "shh-signing", "read-token", "xoxb-1"} <= set(found)
