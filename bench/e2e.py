"""Outside-in scorer: does every piece of trouble reach Slack, once, in time?

What runs
---------
In this process, on 127.0.0.1: the Make simulator (a :class:`~watcher.simulator.World` on
``ScaledClock(1)``, i.e. real time) and the Slack stand-in
(:mod:`watcher.testing.slack_standin`). ``makewatch run -c <temp config>`` runs as a
subprocess, with two organizations (Acme Agency on Core, Globex Ops on Pro), a Slack
incoming-webhook channel and a Slack bot channel (``base_url`` at the stand-in), every alert
timing at its default (group wait 30 s, group interval 5 min, repeat 4 h), a temp SQLite file.
A script injects trouble over ``--minutes`` (default 5): a spaced burst with successes between
errors, errors followed by a success within the group wait, deactivations (a scheduled
scenario after 3 errors, a webhook scenario after 1), DLQ items (one while the DLQ alert of
the same scenario is firing), API 5xx / Cloudflare HTML / truncated JSON / 429 storms, Slack
500s and 429s (``Retry-After``), and a SIGKILL of makewatch with errors injected while it is
down, then a restart. Background scenarios run on their schedules (check runs, a few random
errors). Before makewatch's first start the world already has history (old errors, a
scenario Make switched off, a DLQ backlog, an error 15 s before the start). After the last
injection it waits ``--grace`` seconds (default 150), stops makewatch (SIGTERM), and scores.

Ground truth and what was delivered
-----------------------------------
Truth: the simulator's ledger (``World.ledger``: every error, deactivation, DLQ item,
recovery it produced, scheduled or injected). Counted: entries with a time in
``[first start, end of the script]``; older ones are *history*, newer ones are left out
(they had no grace period).

Delivered: every request the Slack stand-in answered with success (HTTP 200 and ``ok``):
``chat.postMessage`` (a top-level post, or a thread reply when ``thread_ts`` is set),
``chat.update``, webhook posts (always top-level). The time of a notice is when the stand-in
received it. A notice **is about** scenario S when its text or blocks contain a link with
``/scenarios/<S>/`` (makewatch's buttons: run, scenario, history, DLQs); a thread reply or
an update with no link is about its parent's scenarios. Its *kind* and the engine's reason
come from the context block's ``block_id`` ``makewatch.<kind>.<reason>`` (Slack does not show
it; spaces in the reason are "_"); its *phase* from the bot's message metadata, else from
the text (``Resolved:``/``is resolved.`` → resolved, ``Still happening:`` → repeat, else
firing); a ``chat.update`` is a resolution.

Scoring (pure functions below, tested by tests/test_e2e_scorer.py)
------------------------------------------------------------------
* An error E of scenario S at time t is **covered** if, at t, some channel had announced an
  alert about S that was not resolved yet: a top-level firing or repeat notice about S
  before t, and no resolved notice of that kind about S in that channel since. It is
  **notified** if it is covered, or if some notice about S (any phase, any channel) was
  delivered at or after t. Otherwise it is **missed**.
* **Latency** of an error that was not covered: the time from t to the first notice about S
  delivered at or after t. Percentiles are nearest-rank over every uncovered counted error,
  a missed one counting as infinite (so p95 says "missed" when more than 5 % were missed).
  **Late**: notified after more than 120 s.
* Deactivations and DLQ items are scored the same way, separately, but only notices of their
  own kind count (``scenario_deactivated``, ``incomplete_executions``): an open error alert
  does not tell anyone that Make switched the scenario off. Recoveries are counted with how
  many got a resolved notice (informational: resolving is the product's choice).
* **Duplicates**, per channel, among top-level posts: (a) two posts with identical text and
  blocks (a redelivered notice), or (b) a second ``firing`` post with reason ``first`` about
  the same scenario and kind while the first one's alert was not resolved in that channel
  (the same problem announced as new twice). Each extra post counts once.
* **History re-alerted**: top-level firing notices of an execution kind about a scenario
  that had no error between the first start and the notice: they can only come from history
  (``backfill = "none"`` promises none). **Standing at start**: other top-level firing
  notices with no counted trouble of their kind before them (e.g. a scenario already
  deactivated before the start): informational.
* From the simulator's request log: 429s it answered makewatch, and each organization's most
  requests in any 60 s window against its budget (``apiLimit × budget_share``). From
  makewatch's stderr: whether any secret (a Make token, the Slack bot token, the webhook
  URL or its path) appears.

    python bench/e2e.py              # about 8 minutes: 5 of script, 150 s of grace
    python bench/e2e.py --quick      # about 2.5 minutes (a smoke run, not the reference)
    python bench/e2e.py --minutes 10 --grace 200 --seed 2 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bench.stats import max_in_window, percentile  # noqa: E402
from watcher.clock import ScaledClock  # noqa: E402
from watcher.config import load_config  # noqa: E402
from watcher.simulator import LedgerEntry, World, create_app  # noqa: E402
from watcher.testing import DEFAULT_TOKEN, SlackState, create_slack_app  # noqa: E402
from watcher.testing.slack_standin import SlackRequest  # noqa: E402
from watcher.testing.standins import serve_local  # noqa: E402

LATE_S = 120.0
BUDGET_SHARE = 0.5  # makewatch's default budget_share; the config leaves it unset
WEBHOOK_PATH = "T0E2EBENCH/B0E2EBENCH/e2eWebhookSecret0123456789"
SCENARIO_LINK = re.compile(r"/scenarios/(\d+)/")
CONTEXT = re.compile(r'"block_id": "makewatch\.([a-z_]+)\.([^"]*)"')
EXECUTION_KINDS = frozenset({"execution_error", "execution_warning"})
TROUBLE_KIND_NOTICE = {"deactivation": "scenario_deactivated", "dlq": "incomplete_executions"}


# --------------------------------------------------------------------------------------------
# What was delivered


@dataclass(frozen=True)
class Notice:
    """One message Slack accepted, as the scorer sees it."""

    t: float
    channel: str
    method: str  # "post", "reply", "update" (bot) or "webhook"
    scenarios: frozenset[int]
    phase: str  # "firing", "repeat", "resolved"
    kind: str  # the alert kind from the context line, "" if none
    reason: str
    content: str  # text + blocks, canonical JSON: what "identical" means for duplicates

    @property
    def top_level(self) -> bool:
        return self.method in ("post", "webhook")


def _phase_of(body: dict[str, Any], text: str, method: str) -> str:
    meta = body.get("metadata")
    if isinstance(meta, dict):
        phase = (meta.get("event_payload") or {}).get("phase")
        if isinstance(phase, str) and phase:
            return "resolved" if method == "update" else phase
    if method == "update" or "Resolved:" in text or "is resolved." in text:
        return "resolved"
    if "Still happening:" in text:
        return "repeat"
    return "firing"


def notices_from_requests(requests: Iterable[SlackRequest]) -> list[Notice]:
    """The notices Slack accepted, in arrival order, from the stand-in's request record."""
    out: list[Notice] = []
    about: dict[tuple[str, str], frozenset[int]] = {}  # (channel, ts) of a post -> scenarios
    for r in requests:
        body = r.body if isinstance(r.body, dict) else {}
        if r.method == "webhook":
            if r.status != 200 or r.answer != "ok":
                continue
            channel, method, ts, parent = "webhook", "webhook", None, None
        elif r.method in ("chat.postMessage", "chat.update"):
            answer = r.answer if isinstance(r.answer, dict) else {}
            if r.status != 200 or not answer.get("ok"):
                continue
            channel, ts = str(answer.get("channel")), str(answer.get("ts"))
            if r.method == "chat.update":
                method, parent = "update", ts
            elif body.get("thread_ts"):
                method, parent = "reply", str(body["thread_ts"])
            else:
                method, parent = "post", None
        else:
            continue
        content = json.dumps(
            {"text": body.get("text"), "blocks": body.get("blocks")}, sort_keys=True, ensure_ascii=False
        )
        scenarios = frozenset(int(s) for s in SCENARIO_LINK.findall(content))
        if parent is not None:
            scenarios = scenarios | about.get((channel, parent), frozenset())
        if method == "post" and ts:
            about[(channel, ts)] = scenarios
        m = CONTEXT.search(content)
        kind, reason = (m.group(1), m.group(2).replace("_", " ").strip()) if m else ("", "")
        out.append(Notice(r.at, channel, method, scenarios, _phase_of(body, content, method), kind, reason, content))
    return out


# --------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class Trouble:
    """One ledger entry to score: kind "error", "deactivation", "dlq" or "recovery"."""

    kind: str
    t: float
    scenario_id: int
    ref: str  # execution id or DLQ id


def troubles_from_ledger(ledger: Iterable[LedgerEntry]) -> list[Trouble]:
    return [
        Trouble(e.kind, e.t, e.scenario_id, (e.dlq_id if e.kind == "dlq" else e.execution_id) or "")
        for e in ledger
        if e.kind in ("error", "deactivation", "dlq", "recovery")
    ]


@dataclass
class Outcome:
    trouble: Trouble
    covered: bool
    latency_s: float  # math.inf when missed; nan when covered (no latency of its own)

    @property
    def notified(self) -> bool:
        return self.covered or math.isfinite(self.latency_s)


def _matches(n: Notice, sid: int, kinds: frozenset[str] | None) -> bool:
    return sid in n.scenarios and (kinds is None or not n.kind or n.kind in kinds)


def open_alerts_at(notices: Sequence[Notice], sid: int, t: float, kinds: frozenset[str] | None) -> bool:
    """Whether some channel had announced an alert about ``sid`` (of ``kinds``) unresolved at t."""
    open_: set[tuple[str, str]] = set()
    for n in notices:
        if n.t >= t:
            break
        if not _matches(n, sid, kinds):
            continue
        if n.phase == "resolved":
            open_.discard((n.channel, n.kind))
            if not n.kind:
                open_ = {k for k in open_ if k[0] != n.channel}
        elif n.top_level:
            open_.add((n.channel, n.kind))
    return bool(open_)


def score_one(tr: Trouble, notices: Sequence[Notice]) -> Outcome:
    """``notices`` in time order. See the module docstring for the rules."""
    notice_kind = TROUBLE_KIND_NOTICE.get(tr.kind)
    kinds = frozenset({notice_kind}) if notice_kind else None
    if open_alerts_at(notices, tr.scenario_id, tr.t, kinds):
        return Outcome(tr, True, math.nan)
    for n in notices:
        if n.t >= tr.t and _matches(n, tr.scenario_id, kinds):
            return Outcome(tr, False, n.t - tr.t)
    return Outcome(tr, False, math.inf)



@dataclass
class KindScore:
    kind: str
    outcomes: list[Outcome]

    @property
    def produced(self) -> int:
        return len(self.outcomes)

    @property
    def covered(self) -> int:
        return sum(1 for o in self.outcomes if o.covered)

    @property
    def notified(self) -> int:
        return sum(1 for o in self.outcomes if o.notified)

    @property
    def missed(self) -> int:
        return self.produced - self.notified

    @property
    def latencies(self) -> list[float]:
        return [o.latency_s for o in self.outcomes if not o.covered]

    @property
    def late(self) -> int:
        return sum(1 for x in self.latencies if math.isfinite(x) and x > LATE_S)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def max_latency(self) -> float:
        return max(self.latencies) if self.latencies else math.nan


def duplicates(notices: Sequence[Notice]) -> list[tuple[Notice, str]]:
    """Extra top-level posts, each with the rule it broke ("identical" or "first twice")."""
    out: list[tuple[Notice, str]] = []
    seen: dict[tuple[str, str], Notice] = {}
    first: dict[tuple[str, int, str], Notice] = {}  # (channel, scenario, kind) -> open first
    for n in notices:
        if n.phase == "resolved":
            for sid in n.scenarios:
                first.pop((n.channel, sid, n.kind), None)
                if not n.kind:
                    for key in [k for k in first if k[0] == n.channel and k[1] == sid]:
                        first.pop(key)
        if not n.top_level:
            continue
        if (n.channel, n.content) in seen:
            out.append((n, "identical"))
            continue
        seen[(n.channel, n.content)] = n
        if n.phase == "firing" and n.reason == "first":
            keys = [(n.channel, sid, n.kind) for sid in n.scenarios]
            if keys and all(k in first for k in keys):
                out.append((n, "first twice"))
            for k in keys:
                first.setdefault(k, n)
    return out


def unexplained(notices: Sequence[Notice], troubles: Sequence[Trouble], since: float) -> tuple[list[Notice], list[Notice]]:
    """(history re-alerted, standing at start): top-level firing notices no counted trouble explains."""
    history, standing = [], []
    by_scenario: dict[int, list[Trouble]] = defaultdict(list)
    for tr in troubles:
        if tr.t >= since:
            by_scenario[tr.scenario_id].append(tr)
    for n in notices:
        if not (n.top_level and n.phase == "firing" and n.scenarios):
            continue
        if n.kind in EXECUTION_KINDS:
            wanted = {"error"}
        else:
            wanted = {k for k, v in TROUBLE_KIND_NOTICE.items() if v == n.kind} or {"error", "deactivation", "dlq"}
        if not any(tr.kind in wanted and tr.t <= n.t for sid in n.scenarios for tr in by_scenario[sid]):
            (history if n.kind in EXECUTION_KINDS else standing).append(n)
    return history, standing


@dataclass
class Score:
    kinds: dict[str, KindScore]
    recoveries: int
    recoveries_resolved: int
    duplicates: list[tuple[Notice, str]]
    history: list[Notice]
    standing: list[Notice]
    notices: list[Notice]


def score(troubles: Sequence[Trouble], notices: Sequence[Notice], since: float, until: float) -> Score:
    """Score every trouble with ``since <= t <= until`` against ``notices`` (any order)."""
    ordered = sorted(notices, key=lambda n: n.t)
    counted = [tr for tr in troubles if since <= tr.t <= until]
    kinds = {
        k: KindScore(k, [score_one(tr, ordered) for tr in counted if tr.kind == k])
        for k in ("error", "deactivation", "dlq")
    }
    recoveries = [tr for tr in counted if tr.kind == "recovery"]
    resolved = sum(
        1 for tr in recoveries if any(n.t >= tr.t and tr.scenario_id in n.scenarios and n.phase == "resolved" for n in ordered)
    )
    history, standing = unexplained(ordered, troubles, since)
    return Score(kinds, len(recoveries), resolved, duplicates(ordered), history, standing, list(ordered))



def secrets_found(text: str, secrets: dict[str, str]) -> list[str]:
    """Names (never values) of the secrets that appear in ``text``."""
    return sorted(name for name, value in secrets.items() if value and value in text)


# --------------------------------------------------------------------------------------------
# The world and the script


@dataclass
class Cast:
    """The organizations and the scenarios the script drives, by role."""

    core: int
    pro: int
    tokens: dict[int, str]
    roles: dict[str, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)


def build_world(seed: int, clock: ScaledClock) -> tuple[World, Cast]:
    """Two organizations with background scenarios, scripted ones, and some history."""
    world = World(seed=seed, clock=clock)
    now = clock.time()
    far = now + 10**8  # scripted scenarios only run when the script says so
    core = world.add_organization("Acme Agency", plan="core", operations_limit=10**9)
    pro = world.add_organization("Globex Ops", plan="pro", operations_limit=10**9)
    cast = Cast(core.id, pro.id, {})
    for org, teams in ((core, ("Marketing", "Delivery")), (pro, ("Finance", "Platform"))):
        team_ids = [world.add_team(org.id, name=n).id for n in teams]
        for i in range(6):  # background: scheduled, mostly check runs, a few errors
            sc = world.add_scenario(
                team_ids[i % 2],
                f"{org.name.split()[0]} background {i + 1}",
                interval_s=60 + 30 * (i % 4),
                check_run_rate=0.6,
                error_rate=0.06 if i % 3 == 0 else 0.0,
                operations_per_run=4,
                max_errors=0,
                first_run_at=now - 3600 + 37 * i,  # an hour of history already
            )
            cast.names[sc.id] = sc.name
        cast.tokens[org.id] = world.add_token([org.id], name=f"makewatch-e2e-{org.plan}")

    def scripted(role: str, org_id: int, name: str, **kw: Any) -> None:
        team = world.organizations[org_id].team_ids[len(cast.roles) % 2]
        kw.setdefault("max_errors", 0)
        kw.setdefault("interval_s", 900)
        sc = world.add_scenario(team, name, operations_per_run=5, first_run_at=far, **kw)
        cast.roles[role] = sc.id
        cast.names[sc.id] = name

    scripted("burst", core.id, "Spaced burst (errors, successes between)")
    scripted("flap", core.id, "Error then success within the group wait")
    scripted("deact", core.id, "Switched off after 3 errors", max_errors=3)
    scripted("dlq", core.id, "Orders to ERP (incomplete executions)", store_incomplete=True)
    scripted("kill_a", core.id, "Fails while makewatch is down (Acme)")
    scripted("late_a", core.id, "Late error (Acme)")
    scripted("hook", pro.id, "Webhook switched off by its first error", webhook=True, max_errors=1, interval_s=10**8)
    scripted("api", pro.id, "Errors during API faults")
    scripted("slack500", pro.id, "Errors during Slack 500s")
    scripted("slack429", pro.id, "Errors during Slack 429s")
    scripted("kill_g", pro.id, "Fails while makewatch is down (Globex)")
    scripted("flap_g", pro.id, "Late error then success (Globex)")
    # History: trouble before makewatch's first start, which backfill = "none" must not alert.
    scripted("old_err", core.id, "Old errors only (history)")
    scripted("old_deact", pro.id, "Switched off before the start", max_errors=3)
    scripted("old_dlq", pro.id, "DLQ backlog from before the start", store_incomplete=True)
    for ago in (7200, 3600, 600):
        world.inject_run(cast.roles["old_err"], status=3, error_name="DataError", at=now - ago)
    for ago in (5400, 5300, 5200):
        world.inject_run(cast.roles["old_deact"], status=3, at=now - ago)
    world.inject_run(cast.roles["old_dlq"], status=3, error_name="ConnectionError", at=now - 1800)
    world.advance()
    return world, cast


@dataclass(frozen=True)
class Step:
    at_s: float  # seconds after makewatch's first start
    what: str
    args: tuple[Any, ...] = ()


def script(span_s: float) -> list[Step]:
    """The trouble, at fractions of ``span_s`` plus fixed gaps where the gap is the point."""

    def at(f: float, plus: float = 0.0) -> float:
        return round(f * span_s + plus, 1)

    steps = [
        # A spaced burst: error, success, error, success, error, 8 s apart.
        *(Step(at(0.10, 8 * i), "error" if i % 2 == 0 else "success", ("burst",)) for i in range(5)),
        # An error followed by a success 10 s later, inside the 30 s group wait; twice.
        Step(at(0.15), "error", ("flap",)),
        Step(at(0.15, 10), "success", ("flap",)),
        Step(at(0.60), "error", ("flap",)),
        Step(at(0.60, 5), "success", ("flap",)),
        # Three errors in a row: Make switches the scenario off; later a user starts it and
        # it fails again.
        *(Step(at(0.25, 5 * i), "error", ("deact",)) for i in range(3)),
        Step(at(0.70), "reactivate", ("deact",)),
        Step(at(0.70, 5), "error", ("deact",)),
        # DLQ items: one, then a second while the first one's alert is firing, a third later.
        Step(at(0.30), "error", ("dlq",)),
        Step(at(0.30, 45), "error", ("dlq",)),
        Step(at(0.80), "error", ("dlq",)),
        # A webhook scenario switched off by its first error.
        Step(at(0.35), "error", ("hook",)),
        # API trouble on Globex: 5xx, Cloudflare HTML, truncated JSON, a 429 storm.
        Step(at(0.40), "faults", ({"error_5xx_count": 3},)),
        Step(at(0.40, 1), "error", ("api",)),
        Step(at(0.40, 5), "faults", ({"html_error_count": 1},)),
        Step(at(0.40, 10), "faults", ({"malformed_json_count": 2},)),
        Step(at(0.40, 12), "error", ("api",)),
        Step(at(0.40, 15), "faults", ({"storm_429_count": 3, "retry_after_s": 5},)),
        # Slack trouble: the next 3 requests answer 500, later the next 2 answer 429.
        Step(at(0.45), "slack", ({"n": 3, "status": 500},)),
        Step(at(0.45, 1), "error", ("slack500",)),
        Step(at(0.55), "slack", ({"n": 2, "status": 429, "retry_after": 5},)),
        Step(at(0.55, 1), "error", ("slack429",)),
        # SIGKILL, errors while makewatch is down, restart 10 s later.
        Step(at(0.50), "kill"),
        Step(at(0.50, 2), "error", ("kill_g",)),
        Step(at(0.50, 4), "error", ("kill_a",)),
        Step(at(0.50, 10), "restart"),
        Step(at(0.90), "error", ("late_a",)),
        Step(at(1.00), "error", ("flap_g",)),
        Step(at(1.00, 15), "success", ("flap_g",)),
    ]
    return sorted(steps, key=lambda s: s.at_s)


# --------------------------------------------------------------------------------------------
# Running makewatch


def write_config(workdir: Path, base_url: str, slack_url: str, cast: Cast) -> tuple[Path, dict[str, str]]:
    """The config file and the environment holding its secrets; validated like a user's file."""
    env = {
        "MAKEWATCH_E2E_SLACK_TOKEN": DEFAULT_TOKEN,
        "MAKEWATCH_E2E_WEBHOOK": f"{slack_url}/webhook/{WEBHOOK_PATH}",
    }
    parts = []
    for i, (org_id, name, plan) in enumerate(((cast.core, "Acme Agency", "core"), (cast.pro, "Globex Ops", "pro"))):
        env[f"MAKEWATCH_E2E_TOKEN_{i}"] = cast.tokens[org_id]
        parts.append(
            f"[[organizations]]\nname = {json.dumps(name)}\nbase_url = {json.dumps(base_url)}\n"
            f'organization_id = {org_id}\ntoken_env = "MAKEWATCH_E2E_TOKEN_{i}"\nplan = "{plan}"\n'
        )
    parts.append(
        f"""[state]
db_path = {json.dumps(str(workdir / "state.db"))}

[web]
listen = "127.0.0.1:0"

[alerts]
default_channels = ["ops-webhook", "oncall-bot"]

[channels.ops-webhook]
type = "slack_webhook"
webhook_url_env = "MAKEWATCH_E2E_WEBHOOK"

[channels.oncall-bot]
type = "slack_bot"
token_env = "MAKEWATCH_E2E_SLACK_TOKEN"
channel = "#alerts"
base_url = "{slack_url}/api/"
"""
    )
    path = workdir / "makewatch-e2e.toml"
    path.write_text("\n".join(parts))
    load_config(path, env=env)  # fail here, with the loader's message, not in the subprocess
    return path, env


class Makewatch:
    """``makewatch run`` as a subprocess; every start appends its stderr to one log file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.cmd = [sys.executable, "-m", "watcher.cli", "run", "--config", str(config)]
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.starts: list[float] = []
        self.exits: list[int | None] = []

    async def start(self, now: float) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, env=self.env, stdout=out, stderr=out, cwd=str(self.log.parent)
            )
        self.starts.append(now)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.exits.append(await self.proc.wait())
        self.proc = None

    async def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exits.append(await asyncio.wait_for(self.proc.wait(), timeout_s))
        except TimeoutError:
            self.proc.kill()
            self.exits.append(await self.proc.wait())
        self.proc = None



@dataclass
class Run:
    """Everything a run leaves behind, for scoring and printing."""

    seed: int
    span_s: float
    grace_s: float
    since: float
    until: float
    world: World
    cast: Cast
    slack: SlackState
    steps: list[Step]
    starts: list[float]
    exits: list[int | None]
    stderr: str
    secrets: dict[str, str]
    wall_s: float


def keep_artifacts(run: Run, sc: Score, where: Path) -> None:
    """makewatch's log, the ledger, the notices and the request log, for a closer look."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "makewatch.log").write_text(run.stderr)
    (where / "ledger.json").write_text(json.dumps(run.world.ledger_json(), indent=1))
    rel = [{**vars(n), "scenarios": sorted(n.scenarios), "t": n.t - run.since} for n in sc.notices]
    (where / "notices.json").write_text(json.dumps(rel, indent=1, ensure_ascii=False))
    reqs = [{**vars(r), "t": r.t - run.since} for r in run.world.requests]
    (where / "requests.json").write_text(json.dumps(reqs, indent=0))
    steps = [{"at_s": s.at_s, "what": s.what, "args": list(s.args)} for s in run.steps]
    (where / "script.json").write_text(json.dumps(steps, indent=1))


async def run_bench(seed: int, span_s: float, grace_s: float, *, quiet: bool = False) -> Run:
    t_wall = time.perf_counter()
    clock = ScaledClock(1.0)
    world, cast = build_world(seed, clock)
    slack = SlackState(webhooks={WEBHOOK_PATH: "C0WEBHOOK"})
    sim_runner, sim_port = await serve_local(create_app(world))
    slack_runner, slack_port = await serve_local(create_slack_app(slack))
    steps = script(span_s)

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{clock.time() - since:7.1f} s] {msg}", file=sys.stderr, flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="makewatch-e2e-") as tmp:
            workdir = Path(tmp)
            base_url = f"http://127.0.0.1:{sim_port}/api/v2"
            slack_url = f"http://127.0.0.1:{slack_port}"
            config, env = write_config(workdir, base_url, slack_url, cast)
            # History right before the start: inside any re-read window the poller may use.
            world.inject_run(cast.roles["old_err"], status=3, error_name="DataError")
            await asyncio.sleep(15)
            mw = Makewatch(config, env, workdir / "makewatch.log")
            since = clock.time()
            await mw.start(since)
            say("makewatch started")
            try:
                for step in steps:
                    await asyncio.sleep(max(0.0, since + step.at_s - clock.time()))
                    role = step.args[0] if step.args and isinstance(step.args[0], str) else None
                    if step.what == "error":
                        world.inject_run(cast.roles[role], status=3, error_message=f"{role} failed at {step.at_s:g} s")
                    elif step.what == "success":
                        world.inject_run(cast.roles[role], status=1)
                    elif step.what == "reactivate":
                        world.set_active(cast.roles[role], True, author="Bench User")
                    elif step.what == "faults":
                        world.set_faults(**{"org_id": cast.pro, **step.args[0]})
                    elif step.what == "slack":
                        spec = dict(step.args[0])
                        slack.fail_next(spec.pop("n"), **spec)
                    elif step.what == "kill":
                        await mw.kill()
                    elif step.what == "restart":
                        await mw.start(clock.time())
                    say(f"{step.what} {role or (step.args[0] if step.args else '')}")
                until = clock.time()
                say(f"script done; grace {grace_s:g} s")
                await asyncio.sleep(grace_s)
            finally:
                await mw.stop()
            stderr = (workdir / "makewatch.log").read_text(errors="replace")
            secrets = {
                **{f"Make token ({name})": cast.tokens[o] for o, name in ((cast.core, "Acme"), (cast.pro, "Globex"))},
                "Slack bot token": DEFAULT_TOKEN,
                "Slack webhook URL": env["MAKEWATCH_E2E_WEBHOOK"],
                "Slack webhook path": WEBHOOK_PATH,
            }
    finally:
        await sim_runner.cleanup()
        await slack_runner.cleanup()
    return Run(
        seed, span_s, grace_s, since, until, world, cast, slack, steps, mw.starts, mw.exits, stderr, secrets,
        time.perf_counter() - t_wall,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Report


def fmt_s(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "missed"
    return f"{x:.0f}"


def org_requests(run: Run) -> dict[int, dict[str, Any]]:
    out = {}
    for org_id in (run.cast.core, run.cast.pro):
        org = run.world.organizations[org_id]
        reqs = [r for r in run.world.requests if r.org_id == org_id]
        out[org_id] = {
            "name": org.name,
            "requests": len(reqs),
            "max_per_60s": max_in_window([r.t for r in reqs]) if reqs else 0,
            "budget_per_60s": int(org.api_limit * BUDGET_SHARE),
            "status_429": sum(1 for r in reqs if r.status == 429),
        }
    return out


def render(run: Run, sc: Score, command: str) -> str:
    lines = [f"command: {command}", ""]
    lines.append(
        f"seed {run.seed}; script {run.span_s:g} s + grace {run.grace_s:g} s; makewatch started "
        f"{len(run.starts)} times (SIGKILL + restart); exit codes {run.exits}; wall time {run.wall_s:.0f} s"
    )
    lines.append("counted: ledger entries from the first start to the end of the script")
    lines.append("")
    rows = [("", "errors", "deactivations", "DLQ items")]
    ks = [sc.kinds["error"], sc.kinds["deactivation"], sc.kinds["dlq"]]
    for label, get in (
        ("produced", lambda k: str(k.produced)),
        ("notified", lambda k: str(k.notified)),
        ("  covered by an open alert", lambda k: str(k.covered)),
        ("missed", lambda k: str(k.missed)),
        (f"late (> {LATE_S:g} s)", lambda k: str(k.late)),
        ("latency p50 (s)", lambda k: fmt_s(k.p(50))),
        ("latency p95 (s)", lambda k: fmt_s(k.p(95))),
        ("latency max (s)", lambda k: fmt_s(k.max_latency)),
    ):
        rows.append((label, *(get(k) for k in ks)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append(f"  {r[0]:<{widths[0]}}  " + "  ".join(f"{r[i]:>{widths[i]}}" for i in range(1, 4)))
    lines.append("")
    lines.append(f"  recoveries produced {sc.recoveries}, followed by a resolved notice {sc.recoveries_resolved}")
    by_channel = Counter((n.channel, n.method) for n in sc.notices)
    lines.append("  notices delivered: " + ", ".join(f"{c} {m} {k}" for (c, m), k in sorted(by_channel.items())))
    dup_rules = Counter(rule for _, rule in sc.duplicates)
    lines.append(f"  duplicates: {len(sc.duplicates)}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(dup_rules.items()))})" if dup_rules else ""))
    lines.append(f"  history re-alerted (execution notices with no counted error before them): {len(sc.history)}")
    lines.append(f"  standing at start (other firing notices no counted trouble explains): {len(sc.standing)}")
    failed = [r for r in run.slack.requests if r.status != 200 or (isinstance(r.answer, dict) and not r.answer.get("ok"))]
    lines.append(
        f"  Slack requests {len(run.slack.requests)}, refused {len(failed)} "
        f"({', '.join(f'{s}: {n}' for s, n in sorted(Counter(r.status for r in failed).items()))})"
    )
    lines.append("")
    lines.append("  Make API (simulator's request log)      requests  max in 60 s  budget/60 s  429s")
    for info in org_requests(run).values():
        lines.append(
            f"    {info['name']:<36} {info['requests']:>9}  {info['max_per_60s']:>11}  "
            f"{info['budget_per_60s']:>11}  {info['status_429']:>4}"
        )
    other = [r for r in run.world.requests if r.org_id is None]
    lines.append(f"    user-level (no organization)         {len(other):>9}")
    found = secrets_found(run.stderr, run.secrets)
    lines.append(f"  secrets in makewatch's stderr: {', '.join(found) if found else 'none'}")
    lines.append("")
    lines.append("per scenario (error times are seconds after the first start; m = missed, c = covered):")
    per: dict[int, list[Outcome]] = defaultdict(list)
    for k in ks:
        for o in k.outcomes:
            per[o.trouble.scenario_id].append(o)
    for sid in sorted(per):
        bits = []
        for o in sorted(per[sid], key=lambda o: o.trouble.t):
            tag = "c" if o.covered else ("m" if math.isinf(o.latency_s) else f"{o.latency_s:.0f}s")
            bits.append(f"{o.trouble.kind}@{o.trouble.t - run.since:.0f}:{tag}")
        lines.append(f"  {run.cast.names.get(sid, sid)!s:<45.45} {' '.join(bits)}")
    for label, group in (("history re-alerted", sc.history), ("standing at start", sc.standing)):
        for n in group:
            names = ", ".join(str(run.cast.names.get(s, s)) for s in sorted(n.scenarios))
            lines.append(f"  {label}: {n.channel} {n.kind} at {n.t - run.since:.0f} s: {names}")
    for n, rule in sc.duplicates:
        names = ", ".join(str(run.cast.names.get(s, s)) for s in sorted(n.scenarios))
        lines.append(f"  duplicate ({rule}): {n.channel} {n.kind} {n.phase} at {n.t - run.since:.0f} s: {names}")
    lines.append("")
    lines.append(
        "latency = seconds from the trouble (its log entry's time) to the first notice about its "
        "scenario; nearest-rank percentiles over the ones no open alert covered, a missed one counting as infinite."
    )
    return "\n".join(lines)


def to_json(run: Run, sc: Score) -> dict[str, Any]:
    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    out: dict[str, Any] = {"seed": run.seed, "span_s": run.span_s, "grace_s": run.grace_s}
    for name, k in sc.kinds.items():
        out[name] = {
            "produced": k.produced, "notified": k.notified, "covered": k.covered, "missed": k.missed,
            "late": k.late, "p50_s": finite(k.p(50)), "p95_s": finite(k.p(95)), "max_s": finite(k.max_latency),
        }  # fmt: skip
    out["duplicates"] = len(sc.duplicates)
    out["history_realerted"] = len(sc.history)
    out["standing_at_start"] = len(sc.standing)
    out["organizations"] = list(org_requests(run).values())
    out["secrets_in_stderr"] = secrets_found(run.stderr, run.secrets)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the trouble script (default 5)")
    ap.add_argument("--grace", type=float, default=150.0, metavar="S", help="seconds of grace after it (default 150)")
    ap.add_argument("--quick", action="store_true", help="a 1-minute script and 75 s of grace (a smoke run)")
    ap.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="write makewatch's log, the ledger, notices and request log here (they contain the secrets)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes, args.grace = 1.0, 75.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = asyncio.run(run_bench(args.seed, args.minutes * 60, args.grace, quiet=args.quiet))
    sc = score(troubles_from_ledger(run.world.ledger), notices_from_requests(run.slack.requests), run.since, run.until)
    command = "python bench/e2e.py" + (" --quick" if args.quick else f" --minutes {args.minutes:g} --grace {args.grace:g}")
    print(render(run, sc, command + f" --seed {args.seed}"))
    if args.json:
        args.json.write_text(json.dumps(to_json(run, sc), indent=2) + "\n")
    if args.keep:
        keep_artifacts(run, sc, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
