"""The HTTP endpoint of `makewatch run`: /healthz, /metrics, the status page and its forms.

Real parts: the Make simulator and the Slack stand-in on 127.0.0.1, the endpoint served by
watcher.web.app.start_web on a free port, requests over real sockets; time is a ManualClock.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from conftest import START
from prometheus_client.parser import text_string_to_metric_families

from watcher.cli import main
from watcher.clock import ManualClock
from watcher.config import load_config
from watcher.service import Watcher
from watcher.simulator import World
from watcher.store import Store
from watcher.testing import SlackState, create_slack_app
from watcher.web.app import WebServerError, start_web

TOKEN = "web-token-0123456789abcdef"
BOT = "xoxb-standin-token"
EVIL = "<script>alert(1)</script>"


class Rig:
    """A simulated organization, a Slack channel, the Watcher and its web endpoint."""

    def __init__(self, world: World, ids: dict[str, Any], slack: SlackState, watcher: Watcher, store: Store, url: str):
        self.world, self.ids, self.slack, self.watcher, self.store = world, ids, slack, watcher, store
        self.clock: ManualClock = world.clock
        self.url = url

    async def get(self, path: str, *, token: str | None = TOKEN, **kw: Any) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.get(self.url + path, headers=headers, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r.headers

    async def post(self, path: str, data: dict[str, str], *, token: str | None = TOKEN) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.post(self.url + path, data=data, headers=headers, allow_redirects=False) as r:
            return r.status, await r.text()

    async def csrf(self) -> str:
        _, page, _ = await self.get("/")
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found, "no CSRF token on the page"
        return found[1]

    async def fail(self, key: str = "sync", n: int = 1) -> None:
        """Scenario ``key`` fails ``n`` times; a cycle reads it and the alert is sent."""
        self.clock.advance(60)
        for i in range(n):
            self.world.inject_run(self.ids[key].id, status=3, error_name="DataError", error_message=f"row {i} <b>x</b>")
        self.clock.advance(60)
        await self.watcher.cycle()

    def silences(self) -> int:
        return self.store.read_sync(lambda db: db["silences"].count)


def write_config(tmp_path: Path, sim_url: str, slack_url: str, org_id: int, web: str, alerts: str = "") -> Path:
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f"""
[[organizations]]
name = "Acme"
base_url = "{sim_url}"
organization_id = {org_id}
token_env = "TOK"

[state]
db_path = "{tmp_path / "state.db"}"

[polling]
poll_interval_s = 60.0

[alerts]
default_channels = ["ops"]
group_wait_s = 0
repeat_interval_s = 600
{alerts}

[channels.ops]
type = "slack_bot"
token_env = "BOT"
channel = "#ops"
base_url = "{slack_url}/api/"

[web]
listen = "127.0.0.1:0"
{web}
"""
    )
    return cfg


@pytest.fixture
async def make_rig(start_sim, aiohttp_server, tmp_path):
    made: list[tuple[Any, Watcher, Store]] = []

    async def make(web: str = 'allow_write = true\ntoken_env = "WEB_TOKEN"', alerts: str = "") -> Rig:
        clock = ManualClock(START)
        world = World(seed=7, clock=clock)
        org = world.add_organization(name="Acme", plan="pro")
        team = world.add_team(org.id, name="T")
        far = START + 10**8
        ids = {
            "org": org,
            "token": world.add_token(org_ids=[org.id]),
            "sync": world.add_scenario(team.id, name=f"CRM {EVIL} sync", first_run_at=far, max_errors=0),
            "other": world.add_scenario(team.id, name="Invoices", first_run_at=far, max_errors=0),
        }
        sim = await start_sim(world)
        slack = SlackState(channels={"ops": "C0OPS"})
        slack_server = await aiohttp_server(create_slack_app(slack))
        slack_url = str(slack_server.make_url("")).rstrip("/")
        cfg = write_config(tmp_path, sim.base_url, slack_url, org.id, web, alerts)
        settings = load_config(cfg, env={"TOK": ids["token"], "BOT": BOT, "WEB_TOKEN": TOKEN})
        store = Store.open(settings.state.db_path)
        watcher = Watcher(settings, store, sim.session, clock)
        server = await start_web(settings, store, watcher)
        assert server is not None and server.port != 0  # port 0 became a real one
        made.append((server, watcher, store))
        await watcher.cycle()  # the baseline
        return Rig(world, ids, slack, watcher, store, server.url)

    yield make
    for server, watcher, store in made:
        await server.aclose()
        await watcher.aclose()
        store.close()


# --- /healthz -------------------------------------------------------------------------------


async def test_healthz_is_200_while_polls_are_in_time_and_503_naming_the_overdue_org(make_rig):
    rig = await make_rig()
    status, body, _ = await rig.get("/healthz")
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "ok" and data["organizations"]["Acme"]["ok"] is True
    assert data["channels"]["ops"]["ok"] is True

    allowed = data["organizations"]["Acme"]["allowed_s"]
    rig.clock.advance(allowed + 1)  # no poll since: overdue
    status, body, _ = await rig.get("/healthz")
    data = json.loads(body)
    assert status == 503 and data["status"] == "unhealthy"
    assert data["organizations"]["Acme"]["ok"] is False
    assert data["organizations"]["Acme"]["reason"].startswith("overdue: last successful poll")

    await rig.watcher.poll_once()  # polled again: healthy again
    assert (await rig.get("/healthz"))[0] == 200


async def test_healthz_is_503_when_a_channel_has_failed_for_ten_minutes(make_rig):
    rig = await make_rig()
    rig.slack.down = True
    await rig.fail()
    for _ in range(12):  # ticks across 12 minutes; every attempt fails
        rig.clock.advance(60)
        await rig.watcher.poll_once()  # keep the organization fresh: only the channel is wrong
        await rig.watcher.alert()
    status, body, _ = await rig.get("/healthz")
    data = json.loads(body)
    assert status == 503, body
    assert data["organizations"]["Acme"]["ok"] is True
    assert data["channels"]["ops"]["ok"] is False
    assert data["channels"]["ops"]["reason"].startswith("failing for")
    fams = families((await rig.get("/metrics"))[1])
    failed = rig.store.read_sync(lambda db: db["deliveries"].count_where("ok = 0"))
    assert failed >= 2
    assert value(fams, "makewatch_notifications", "makewatch_notifications_total", channel="ops", outcome="failed") == failed
    assert value(fams, "makewatch_channel_failing", "makewatch_channel_failing", channel="ops") == 1
    assert value(fams, "makewatch_outbox_pending", "makewatch_outbox_pending", channel="ops") == 1
    assert value(fams, "makewatch_outbox_oldest_age_seconds", "makewatch_outbox_oldest_age_seconds", channel="ops") >= 600


async def test_healthz_needs_no_token_but_then_tells_only_the_status(make_rig):
    rig = await make_rig()
    status, body, _ = await rig.get("/healthz", token=None)
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert "Acme" not in body


# --- /metrics -------------------------------------------------------------------------------


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in fams[family].samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, labels, [s for s in fams[family].samples])
    return found[0]


async def test_metrics_count_the_real_requests_events_and_notices(make_rig):
    rig = await make_rig()
    await rig.fail(n=2)
    status, text, headers = await rig.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = families(text)
    expected = {
        "makewatch_make_requests", "makewatch_make_rate_limited_responses", "makewatch_events",
        "makewatch_notifications", "makewatch_digests_sent", "makewatch_poll_cycle_duration_seconds",
        "makewatch_task_restarts", "makewatch_budget_used_requests", "makewatch_budget_allowed_requests",
        "makewatch_poll_lag_seconds", "makewatch_pending_reads", "makewatch_outbox_pending",
        "makewatch_outbox_oldest_age_seconds", "makewatch_alerts_open",
    }
    assert expected <= set(fams), expected - set(fams)

    org_id = rig.ids["org"].id
    listed = len([r for r in rig.world.requests if r.org_id == org_id and r.path.endswith("/scenarios")])
    assert listed >= 2  # the baseline and the second cycle listed the scenarios
    assert value(fams, "makewatch_make_requests", "makewatch_make_requests_total", org="Acme", endpoint="/scenarios", status="200") == listed
    logs = [s for s in fams["makewatch_make_requests"].samples if s.labels["endpoint"] == "/scenarios/{id}/logs"]
    assert logs and all(str(rig.ids["sync"].id) not in s.labels["endpoint"] for s in logs)
    assert value(fams, "makewatch_events", "makewatch_events_total", org="Acme", kind="execution_error") == 2
    assert value(fams, "makewatch_notifications", "makewatch_notifications_total", channel="ops", outcome="sent") == len(rig.slack.messages) == 1
    assert value(fams, "makewatch_poll_cycle_duration_seconds", "makewatch_poll_cycle_duration_seconds_count", org="Acme") == 2
    limiter = rig.watcher.pollers[0].client.limiter
    assert value(fams, "makewatch_budget_allowed_requests", "makewatch_budget_allowed_requests", org="Acme") == limiter.per_window
    assert value(fams, "makewatch_budget_used_requests", "makewatch_budget_used_requests", org="Acme") == limiter.used() > 0
    assert value(fams, "makewatch_poll_lag_seconds", "makewatch_poll_lag_seconds", org="Acme") == 0
    assert value(fams, "makewatch_alerts_open", "makewatch_alerts_open", severity="error") == 1


async def test_metrics_count_the_notices_the_flood_cap_held_back(make_rig):
    rig = await make_rig(alerts="max_per_hour = 1")
    await rig.fail("sync")
    await rig.fail("other")  # the same hour: over the cap of one
    fams = families((await rig.get("/metrics"))[1])
    assert value(fams, "makewatch_notifications", "makewatch_notifications_total", channel="ops", outcome="sent") == 1
    assert value(fams, "makewatch_notifications", "makewatch_notifications_total", channel="ops", outcome="held") == 1


async def test_the_task_restart_counter_is_reachable_from_the_watcher(make_rig):
    rig = await make_rig()
    rig.watcher.metrics.task_restarted("alerts")
    fams = families((await rig.get("/metrics"))[1])
    assert value(fams, "makewatch_task_restarts", "makewatch_task_restarts_total", task="alerts") == 1


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/metrics"])
async def test_without_the_token_the_page_and_metrics_answer_401(make_rig, path: str):
    rig = await make_rig()
    for token in (None, "wrong-token-0123456789"):
        status, body, headers = await rig.get(path, token=token)
        assert status == 401 and "Access token needed" in body
        assert TOKEN not in body and headers["WWW-Authenticate"].startswith("Bearer")
    assert (await rig.get(path))[0] == 200


async def test_logging_in_with_the_token_sets_a_cookie_that_is_not_the_token(make_rig):
    rig = await make_rig()
    # unsafe=True: aiohttp's client keeps no cookie of an IP address otherwise (browsers do).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(rig.url + "/login", data={"token": "nope"}, allow_redirects=False) as r:
            assert r.status == 401
        async with s.post(rig.url + "/login", data={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.cookies["makewatch_session"]
            assert cookie.value and TOKEN not in cookie.value and cookie["httponly"]
        async with s.get(rig.url + "/") as r:  # the cookie alone now opens the page
            assert r.status == 200 and "Open alerts" in await r.text()


# --- the page and its forms -----------------------------------------------------------------


async def test_the_page_shows_the_firing_alert_with_user_text_escaped_and_links(make_rig):
    rig = await make_rig()
    await rig.fail()
    status, page, headers = await rig.get("/")
    assert status == 200
    assert "CRM &lt;script&gt;alert(1)&lt;/script&gt; sync" in page and EVIL not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "<script" not in page  # no JavaScript at all
    assert f"/scenarios/{rig.ids['sync'].id}/edit" in page  # a link to the scenario in Make
    assert "UTC" in page and 'name="viewport"' in page
    assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]


async def test_a_silence_without_the_csrf_token_is_refused_with_403(make_rig):
    rig = await make_rig()
    form = {"scenario_id": str(rig.ids["sync"].id), "for": "2h", "reason": "deploy"}
    assert (await rig.post("/silences", form))[0] == 403
    assert (await rig.post("/silences", form | {"csrf": "0" * 64}))[0] == 403
    assert rig.silences() == 0
    status, _ = await rig.post("/silences", form | {"csrf": await rig.csrf()})
    assert status == 303 and rig.silences() == 1  # the same form with the token is accepted


async def test_a_read_only_page_shows_no_forms_and_refuses_writes_with_403(make_rig):
    rig = await make_rig('token_env = "WEB_TOKEN"')  # allow_write defaults to false
    await rig.fail()
    _, page, _ = await rig.get("/")
    assert "<form" not in page.replace('action="/logout"', "").split("Open alerts", 1)[1]
    assert "Read-only" in page
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)[1]  # the logout form's
    form = {"scenario_id": str(rig.ids["sync"].id), "for": "2h", "reason": "deploy", "csrf": csrf}
    assert (await rig.post("/silences", form))[0] == 403
    alert_id = rig.store.read_sync(lambda db: next(db["alerts"].rows)["id"])
    assert (await rig.post(f"/alerts/{alert_id}/ack", {"csrf": csrf}))[0] == 403
    assert rig.silences() == 0


async def test_a_bad_silence_form_is_refused_saying_why(make_rig):
    rig = await make_rig()
    csrf = await rig.csrf()
    status, page = await rig.post("/silences", {"kind": "nonsense", "for": "2h", "reason": "x", "csrf": csrf})
    assert status == 400 and "unknown kind" in page
    status, page = await rig.post("/silences", {"org": EVIL, "for": "2h", "reason": "x", "csrf": csrf})
    assert status == 400 and "matches no configured organization" in page and EVIL not in page
    assert rig.silences() == 0


async def test_acknowledging_on_the_page_stops_repeats_and_shows_who(make_rig):
    rig = await make_rig()
    await rig.fail()
    assert len(rig.slack.calls("chat.postMessage")) == 1
    alert_id = rig.store.read_sync(lambda db: next(db["alerts"].rows)["id"])
    status, _ = await rig.post(f"/alerts/{alert_id}/ack", {"by": "Ana", "csrf": await rig.csrf()})
    assert status == 303
    _, page, _ = await rig.get("/")
    assert "acknowledged</strong> by Ana" in page
    rig.clock.advance(700)  # past the repeat interval: a new failure would be repeated
    await rig.fail()
    assert len(rig.slack.calls("chat.postMessage")) == 1 and rig.slack.calls("chat.update") == []
    reasons = rig.store.read_sync(lambda db: [r["reason"] for r in db["events"].rows_where("kind = 'execution_error'", order_by="id")])
    assert reasons[-1] == "acknowledged"
    # The silence form and expiry use the same checks: expire an unknown silence is a 404.
    assert (await rig.post("/silences/999/expire", {"csrf": await rig.csrf()}))[0] == 404


# --- configuration and start-up ---------------------------------------------------------------


def cli_config(tmp_path: Path, web: str) -> Path:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(
        '[[organizations]]\nname = "Acme"\nzone = "eu1.make.com"\norganization_id = 1\ntoken_env = "TOK"\n'
        f'[state]\ndb_path = "{tmp_path / "cli.db"}"\n[web]\n{web}\n'
    )
    return cfg


@pytest.mark.parametrize(
    ("web", "key", "message"),
    [
        ('listen = "127.0.0.1"', "web.listen", "must be host:port"),
        ('listen = "127.0.0.1:99999"', "web.listen", "port"),
        ('listen = "bad host:80"', "web.listen", "not an IP address or a host name"),
        ('listen = "0.0.0.0:9464"', "web.token_env", "is required when web.listen (0.0.0.0:9464) is not a loopback"),
        ('token_env = "UNSET_WEB_TOKEN"', "web.token_env", "environment variable UNSET_WEB_TOKEN is not set"),
        ('token_env = "SHORT"', "web.token_env", "shorter than 16 characters"),
    ],
)
def test_a_bad_web_setting_exits_2_naming_the_key(tmp_path: Path, web: str, key: str, message: str):
    result = CliRunner().invoke(main, ["status", "--config", str(cli_config(tmp_path, web))], env={"TOK": "t", "SHORT": "s3cr3t-value"})
    assert result.exit_code == 2, result.output
    assert f"{key}: " in result.output and message in result.output
    assert "s3cr3t-value" not in result.output


def test_a_non_loopback_listen_with_a_token_and_loopback_without_are_accepted(tmp_path: Path):
    for web in ('listen = "0.0.0.0:9464"\ntoken_env = "WT"', 'listen = "[::1]:0"', "enabled = false"):
        settings = load_config(cli_config(tmp_path, web), env={"TOK": "t", "WT": TOKEN})
        assert TOKEN not in repr(settings) and TOKEN not in repr(settings.web)


async def test_a_taken_port_is_a_clear_error_naming_web_listen(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_config(cli_config(tmp_path, f'listen = "127.0.0.1:{port}"'), env={"TOK": "t"})
        store = Store.open(settings.state.db_path)
        async with aiohttp.ClientSession() as session:
            watcher = Watcher(settings, store, session)
            try:
                with pytest.raises(WebServerError, match=rf"cannot listen on 127.0.0.1:{port} \(web.listen\)"):
                    await start_web(settings, store, watcher)
                disabled = load_config(cli_config(tmp_path, "enabled = false"), env={"TOK": "t"})
                assert await start_web(disabled, store, watcher) is None
            finally:
                await watcher.aclose()
                store.close()


def test_makewatch_run_serves_healthz_and_stops_on_sigterm(service):
    import signal
    import subprocess
    import time
    import urllib.request

    from conftest import makewatch

    cfg, _db, env = service
    proc = subprocess.Popen(makewatch("run", "--config", str(cfg)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "run exited before serving"
            if found := re.search(r"web: .* on (http://127\.0\.0\.1:\d+)/", line):
                url = found[1]
        assert url, "no 'web: ... on http://...' line in the log"
        # 200 from the start: an organization is not overdue before it had a chance to be polled.
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            status = resp.status
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_the_readmes_prometheus_rules_use_only_metrics_makewatch_exposes():
    """README "Health and metrics": a sample rule on a misspelt metric would never fire."""
    from pathlib import Path

    from watcher.web.metrics import ChannelGauges, Metrics, OrgGauges, ScrapeState

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rules = readme.split("```yaml\ngroups:\n  - name: makewatch\n", 1)[1].split("```", 1)[0]
    used = set(re.findall(r"\b(makewatch_[a-z_]+)", rules))
    metrics = Metrics()
    metrics.task_restarted("poll")
    text = metrics.exposition(
        ScrapeState(
            orgs=[OrgGauges("A", 1, 30, 5.0, 0, rate_limited=False)],
            channels=[ChannelGauges("slack", 0, 0.0)],
        )
    ).decode()
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    exposed |= {f.name + "_total" for f in text_string_to_metric_families(text) if f.type == "counter"}
    assert len(used) >= 5 and used <= exposed, used - exposed
