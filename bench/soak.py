"""Soak: SIGKILL ``makewatch run`` at many random moments; is every error told exactly once?

What runs
---------
In this process, on 127.0.0.1 (as ``makewatch simulate`` serves them): the Make simulator on
a :class:`~watcher.clock.ScaledClock` ``--speed`` times faster than real time, the Slack
stand-in and the mail sink. ``makewatch run`` runs as a subprocess (bench/e2e.py's
:class:`~bench.e2e.Makewatch`) with one organization on Enterprise (its budget is not what is
tested here), a Slack incoming-webhook channel and an e-mail channel as default channels,
``poll_interval_s = 1`` and ``group_wait_s = 1`` so that kills land in every phase (start-up,
listing, reading logs, deciding, delivering), a temp SQLite file.

The simulator runs fast because makewatch is restarted every few seconds and each new process
starts with an empty limiter: on real time, its bursts of start-up requests from several
restarts inside one of Make's 60 s windows would earn 429s; on the faster clock the window
passes in ``60 / speed`` s. (Timestamps then run ahead of makewatch's clock, which only reads
them as Make's.) The background scenarios run on it too.

The script: wait until the first process has finished a cycle (its baseline: ``backfill =
"none"``), then inject errors all the time, into a dozen scenarios at random gaps of 0.05-0.6 s,
each with an error name of its own, so each is an alert of its own and owes exactly one
notice per channel; now and then a success of the same scenario comes right after (inside
the group wait or not). Meanwhile the process is SIGKILLed ``--kills`` times, each after a
random 0.5-5 s of life, and started again at once. Each kill lands between sends: both
stand-ins refuse new messages (451, 503: makewatch retries them later), the kill waits until
every message they accepted is recorded as sent in the state file, then lands (a kill inside a
send, after the channel accepted a message and before makewatch committed it, repeats that
message whatever makewatch does; ``--anywhere`` kills there too, and counts such kills).
Then the injection stops, makewatch runs
on until every error has been told on both channels (at most ``--drain`` s) and some seconds
more (a duplicate would come then), and it is stopped with SIGTERM.

Tally: per injected error (its execution id), the top-level firing notices that name it,
on the Slack webhook (a link ``/logs/<id>``) and in e-mail (the text part). *Notified*: at
least one on each channel; *missed*: none on some channel; *duplicated*: more than one on some
channel (each extra counted). From the store: how many ``execution_error`` events it holds per
execution id (exactly one each).

    python bench/soak.py               # 50 kills (about 4 minutes)
    python bench/soak.py --quick       # 10 kills (about a minute)
    python bench/soak.py --kills 100 --seed 3 --json out.json
    python bench/soak.py --anywhere    # kill at random moments, inside sends too
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.e2e import Makewatch, notices_from_requests  # noqa: E402
from watcher.clock import ScaledClock  # noqa: E402
from watcher.config import load_config  # noqa: E402
from watcher.simulator import World, create_app  # noqa: E402
from watcher.testing import SlackState, create_slack_app  # noqa: E402
from watcher.testing.mail_sink import MailSink, start_mail_sink  # noqa: E402
from watcher.testing.standins import serve_local  # noqa: E402

WEBHOOK_PATH = "T0SOAK/B0SOAK/soakWebhookSecret0123456789"
MAIL_TO = "ops@soak.example"
SCENARIOS = 12
LIFE_S = (0.5, 5.0)  # how long each process lives before its SIGKILL
GAP_S = (0.05, 0.6)  # between two injected errors
SUCCESS_AFTER = 0.15  # share of errors followed by a success of the same scenario
SETTLE_S = 8.0  # after the last error was told: time for a duplicate to show up
GATE_WAIT_S = 10.0  # at most this long for the last accepted message's "sent" to commit
EXECUTION_ID = re.compile(r"\b[0-9a-f]{32}\b")


@dataclass
class Soak:
    """Everything a run leaves behind, for the tally."""

    seed: int
    kills: int
    speed: float
    injected: list[str]  # execution ids, in injection order
    successes: int
    slack: SlackState
    mails: list[tuple[list[str], EmailMessage]]
    starts: list[float]
    exits: list[int | None]
    stored: Counter[str]
    drained_s: float
    wall_s: float
    log_tail: str = ""
    kill_ages: list[float] = field(default_factory=list)
    anywhere: bool = False
    injected_at: list[float] = field(default_factory=list)  # wall clock, per injected error
    mail_at: list[float] = field(default_factory=list)  # when each of ``mails`` arrived
    # Kills that found a message accepted by a channel and not yet recorded as sent (only
    # with ``anywhere``, or when a commit took longer than GATE_WAIT_S).
    kills_inside_send: int = 0


def build_world(seed: int, clock: ScaledClock) -> tuple[World, int, str, list[int]]:
    """One Enterprise organization: a few background scenarios (check runs and successes on
    their schedule, no errors) and the scenarios the script injects into (they never run by
    themselves). Returns (world, org id, token, injected-into scenario ids)."""
    world = World(seed=seed, clock=clock)
    org = world.add_organization("Soak Agency", plan="enterprise", operations_limit=10**12)
    team = world.add_team(org.id, name="Soak")
    now = clock.time()
    for i in range(4):
        world.add_scenario(
            team.id, f"Background {i + 1}", interval_s=60 + 30 * i, check_run_rate=0.6,
            max_errors=0, first_run_at=now + 5 * i,
        )  # fmt: skip
    targets = [
        world.add_scenario(
            team.id, f"Soaked {i + 1:02d}", max_errors=0, first_run_at=now + 10**9
        ).id
        for i in range(SCENARIOS)
    ]
    return world, org.id, world.add_token([org.id], name="makewatch-soak"), targets


def write_config(
    workdir: Path, base_url: str, org_id: int, token: str, slack_url: str, smtp_port: int
) -> tuple[Path, dict[str, str]]:
    env = {
        "MAKEWATCH_SOAK_TOKEN": token,
        "MAKEWATCH_SOAK_WEBHOOK": f"{slack_url}/webhook/{WEBHOOK_PATH}",
    }
    text = f"""[[organizations]]
name = "Soak Agency"
base_url = {json.dumps(base_url)}
organization_id = {org_id}
token_env = "MAKEWATCH_SOAK_TOKEN"

[state]
db_path = {json.dumps(str(workdir / "state.db"))}

[polling]
poll_interval_s = 1.0
min_poll_interval_s = 1.0

[web]
listen = "127.0.0.1:0"

[alerts]
group_wait_s = 1
default_channels = ["ops-webhook", "ops-mail"]

[channels.ops-webhook]
type = "slack_webhook"
webhook_url_env = "MAKEWATCH_SOAK_WEBHOOK"

[channels.ops-mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@soak.example"
to = ["{MAIL_TO}"]
"""
    path = workdir / "makewatch-soak.toml"
    path.write_text(text)
    load_config(path, env=env)  # fail here, with the loader's message, not in the subprocess
    return path, env


def cycles_done(db: Path) -> int:
    """Cycles recorded in the state file (0 before the first, or while it is being created)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM cycles").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def stored_errors(db: Path) -> Counter[str]:
    """``execution_error`` events in the state file, per execution id."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT key FROM events WHERE kind = 'execution_error'").fetchall()
    finally:
        con.close()
    return Counter(key.rsplit(":", 1)[1] for (key,) in rows)


# --------------------------------------------------------------------------------------------
# What each channel told


def slack_firing(slack: SlackState) -> Counter[str]:
    """Execution ids named by top-level notices that are not resolutions, per id."""
    out: Counter[str] = Counter()
    for n in notices_from_requests(slack.requests):
        if n.top_level and n.phase != "resolved":
            out.update(set(EXECUTION_ID.findall(n.content)))
    return out


def mail_text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else ""


def mail_firing(mails: Sequence[tuple[list[str], EmailMessage]]) -> Counter[str]:
    """Execution ids named by e-mails that are not resolutions, per id (the phase is in
    makewatch's ``X-Makewatch-Phase`` header)."""
    out: Counter[str] = Counter()
    for _, message in mails:
        if str(message.get("X-Makewatch-Phase", "")) == "resolved":
            continue
        out.update(set(EXECUTION_ID.findall(mail_text_of(message))))
    return out


def told_at(soak: Soak) -> dict[str, float]:
    """When each injected error had been told on both channels (its later first notice)."""
    first: list[dict[str, float]] = [{}, {}]
    for n in notices_from_requests(soak.slack.requests):
        if n.top_level and n.phase != "resolved":
            for e in set(EXECUTION_ID.findall(n.content)):
                first[0].setdefault(e, n.t)
    for (_, message), at in zip(soak.mails, soak.mail_at, strict=False):
        if str(message.get("X-Makewatch-Phase", "")) != "resolved":
            for e in set(EXECUTION_ID.findall(mail_text_of(message))):
                first[1].setdefault(e, at)
    return {e: max(first[0][e], first[1][e]) for e in soak.injected if e in first[0] and e in first[1]}


@dataclass
class Tally:
    injected: int
    notified: int
    missed: list[str]
    duplicated: int  # extra notices, over both channels
    duplicated_ids: list[str]
    per_channel: dict[str, dict[str, int]]
    stored_once: int
    stored_missing: int
    stored_twice: int
    latencies_s: list[float] = field(default_factory=list)  # injection to told on both, sorted


def tally(soak: Soak) -> Tally:
    channels = {"slack webhook": slack_firing(soak.slack), "e-mail": mail_firing(soak.mails)}
    told = told_at(soak)
    missed, dup_ids, extra = [], [], 0
    per: dict[str, dict[str, int]] = {}
    for name, seen in channels.items():
        per[name] = {
            "notified": sum(1 for e in soak.injected if seen[e] >= 1),
            "missed": sum(1 for e in soak.injected if seen[e] == 0),
            "duplicated": sum(seen[e] - 1 for e in soak.injected if seen[e] > 1),
        }
        extra += per[name]["duplicated"]
    for e in soak.injected:
        if any(seen[e] == 0 for seen in channels.values()):
            missed.append(e)
        if any(seen[e] > 1 for seen in channels.values()):
            dup_ids.append(e)
    return Tally(
        injected=len(soak.injected),
        notified=len(soak.injected) - len(missed),
        missed=missed,
        duplicated=extra,
        duplicated_ids=dup_ids,
        per_channel=per,
        stored_once=sum(1 for e in soak.injected if soak.stored[e] == 1),
        stored_missing=sum(1 for e in soak.injected if soak.stored[e] == 0),
        stored_twice=sum(1 for e in soak.injected if soak.stored[e] > 1),
        latencies_s=sorted(
            t - at for e, at in zip(soak.injected, soak.injected_at, strict=False)
            if (t := told.get(e)) is not None
        ),  # fmt: skip
    )


# --------------------------------------------------------------------------------------------
# Killing between sends


class GatedMailSink(MailSink):
    """The mail sink, which answers 451 ("try again later") to every message while
    ``refusing``: a message it refuses was not delivered, and is sent again later."""

    refusing = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.refusing:
            return "451 4.3.0 soak: not now, try again later"
        return await super().handle_DATA(server, session, envelope)


def accepted(slack: SlackState, sink: MailSink) -> int:
    """Messages the channels accepted so far (duplicates included)."""
    hooks = sum(1 for r in slack.requests if r.method == "webhook" and r.status == 200)
    return hooks + len(sink.messages)


def recorded_sent(db: Path) -> int:
    """Successful attempts recorded in the state file (one per message recorded as sent).

    Errors propagate: a wrong count here would let a later kill land inside a send."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM deliveries WHERE ok = 1").fetchone()[0]
    finally:
        con.close()


async def kill_between_sends(
    mw: Makewatch, db: Path, slack: SlackState, sink: GatedMailSink, unrecorded: int
) -> bool:
    """SIGKILL makewatch at a moment that is not inside a send; True if that worked out.

    A message a channel accepted and makewatch has not yet recorded as sent is sent again
    after a restart, whatever makewatch does: neither Slack nor SMTP can tell it "you have
    that one already". That window (from the channel's acceptance to the commit) is narrow
    but, in a process busy delivering, often hit by a random kill. So both channels refuse
    new messages (a transient failure: makewatch retries them later), the kill waits until
    every message they accepted is recorded as sent (``unrecorded`` of them never were:
    earlier kills inside a send), then lands, and the channels accept again. False if the
    commit did not come within GATE_WAIT_S: the kill then landed inside a send.
    """
    slack.down, sink.refusing = True, True
    try:
        deadline = time.monotonic() + GATE_WAIT_S
        while accepted(slack, sink) - recorded_sent(db) > unrecorded:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True
    finally:
        await mw.kill()  # (here: the channels still refuse until it is dead)
        slack.down, sink.refusing = False, False


# --------------------------------------------------------------------------------------------
# The run


def error_name(n: int) -> str:
    """A name of its own for the n-th error (letters only, so nothing reads it as a number)."""
    letters = ""
    n += 26 * 26  # at least three letters
    while n:
        n, r = divmod(n, 26)
        letters = chr(ord("A") + r) + letters
    return f"Soak{letters}Error"


async def run_soak(
    seed: int, kills: int, speed: float, drain_s: float, *, quiet: bool = False,
    keep: Path | None = None, anywhere: bool = False,
) -> Soak:
    t_wall = time.perf_counter()
    rng = random.Random(f"soak:{seed}")
    clock = ScaledClock(speed)
    world, org_id, token, targets = build_world(seed, clock)
    slack = SlackState(webhooks={WEBHOOK_PATH: "C0WEBHOOK"})
    sink = GatedMailSink()
    smtp = start_mail_sink(sink)
    sim_runner, sim_port = await serve_local(create_app(world))
    slack_runner, slack_port = await serve_local(create_slack_app(slack))
    injected: list[str] = []
    injected_at: list[float] = []  # wall clock, as the stand-ins record arrivals
    mail_at: list[float] = []
    sink.listeners.append(lambda _rcpt, _msg: mail_at.append(time.time()))
    successes = 0
    kill_ages: list[float] = []
    inside_send = 0
    unrecorded = 0  # messages accepted that no process recorded as sent (kills inside a send)

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - t_wall:6.1f} s] {msg}", file=sys.stderr, flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="makewatch-soak-") as tmp:
            workdir = Path(tmp)
            db = workdir / "state.db"
            config, env = write_config(
                workdir, f"http://127.0.0.1:{sim_port}/api/v2", org_id, token,
                f"http://127.0.0.1:{slack_port}", smtp.port,
            )  # fmt: skip
            mw = Makewatch(config, env, workdir / "makewatch.log")
            await mw.start(time.time())
            deadline = time.monotonic() + 60
            while cycles_done(db) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("makewatch recorded no cycle within 60 s")
                await asyncio.sleep(0.1)
            say("first cycle done; injecting")

            stop_injecting = asyncio.Event()

            later: set[asyncio.Task[None]] = set()

            async def success(sid: int, after_s: float) -> None:
                nonlocal successes
                await asyncio.sleep(after_s)
                world.inject_run(sid, status=1)
                successes += 1

            async def inject() -> None:
                while not stop_injecting.is_set():
                    sid = rng.choice(targets)
                    n = len(injected)
                    row = world.inject_run(
                        sid, status=3, error_name=error_name(n), error_message=f"soak error {n}"
                    )
                    injected.append(row["id"])
                    injected_at.append(time.time())
                    if rng.random() < SUCCESS_AFTER:  # inside the 1 s group wait, or after it
                        task = asyncio.create_task(success(sid, rng.uniform(0.1, 2.0)))
                        later.add(task)
                        task.add_done_callback(later.discard)
                    await asyncio.sleep(rng.uniform(*GAP_S))

            injector = asyncio.create_task(inject())
            try:
                for i in range(kills):
                    life = rng.uniform(*LIFE_S)
                    await asyncio.sleep(life)
                    if injector.done():
                        injector.result()
                    if anywhere:
                        await mw.kill()
                    else:
                        await kill_between_sends(mw, db, slack, sink, unrecorded)
                    # The process is dead: what it left accepted but unrecorded is sent again.
                    left = accepted(slack, sink) - recorded_sent(db)
                    inside_send += left > unrecorded
                    unrecorded = left
                    kill_ages.append(life)
                    say(f"kill {i + 1}/{kills} after {life:.1f} s; {len(injected)} errors injected")
                    await mw.start(time.time())
            finally:
                stop_injecting.set()
                await injector
                await asyncio.gather(*later)
            say(f"{kills} kills done; draining (at most {drain_s:g} s)")
            t_drain = time.perf_counter()
            settled_at: float | None = None
            while time.perf_counter() - t_drain < drain_s:
                await asyncio.sleep(0.5)
                told = slack_firing(slack), mail_firing(sink.messages)
                if all(all(seen[e] for e in injected) for seen in told):
                    settled_at = settled_at or time.perf_counter()
                    if time.perf_counter() - settled_at >= SETTLE_S:
                        break
            drained_s = time.perf_counter() - t_drain
            await mw.stop()
            stored = stored_errors(db)
            log = (workdir / "makewatch.log").read_text(errors="replace")
            if keep is not None:
                keep_artifacts(
                    keep, workdir, dict(zip(injected, injected_at, strict=True)), slack,
                    sink.messages, mail_at, mw.starts,
                )  # fmt: skip
    finally:
        await sim_runner.cleanup()
        await slack_runner.cleanup()
        smtp.stop()
    return Soak(
        seed=seed, kills=kills, speed=speed, injected=injected, successes=successes, slack=slack,
        mails=list(sink.messages), starts=mw.starts, exits=mw.exits, stored=stored,
        drained_s=drained_s, wall_s=time.perf_counter() - t_wall, log_tail=log[-3000:], kill_ages=kill_ages,
        anywhere=anywhere, kills_inside_send=inside_send, injected_at=injected_at, mail_at=mail_at,
    )  # fmt: skip


def keep_artifacts(
    where: Path, workdir: Path, injected: dict[str, float], slack: SlackState,
    mails: Sequence[tuple[list[str], EmailMessage]], mail_at: Sequence[float], starts: Sequence[float],
) -> None:
    """The state file, makewatch's log, every e-mail (``mail/NNNN.eml``, ``mail.json`` when
    each arrived), the Slack requests, the injected execution ids with when they were injected
    and when each process started, for a closer look at a miss or a duplicate."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(workdir / "state.db", where / "state.db")
    shutil.copy(workdir / "makewatch.log", where / "makewatch.log")
    (where / "mail").mkdir(exist_ok=True)
    for i, (_, message) in enumerate(mails):
        (where / "mail" / f"{i:04d}.eml").write_bytes(bytes(message))
    requests = [{**vars(r), "body": r.body} for r in slack.requests]
    (where / "slack.json").write_text(json.dumps(requests, indent=1, default=str, ensure_ascii=False))
    index = [
        {"file": f"{i:04d}.eml", "at": at, "message_id": str(m["Message-ID"]),
         "phase": str(m["X-Makewatch-Phase"])}
        for i, ((_, m), at) in enumerate(zip(mails, mail_at, strict=True))
    ]  # fmt: skip
    (where / "mail.json").write_text(json.dumps(index, indent=0))
    (where / "injected.json").write_text(json.dumps(injected, indent=0))
    (where / "starts.json").write_text(json.dumps(list(starts)))


# --------------------------------------------------------------------------------------------
# Report


def render(soak: Soak, t: Tally, command: str) -> str:
    killed = sum(1 for x in soak.exits if x == -9)
    lines = [
        f"command: {command}",
        "",
        f"seed {soak.seed}; simulator x{soak.speed:g}; wall time {soak.wall_s:.0f} s "
        f"(drain {soak.drained_s:.0f} s)",
        f"  kills {soak.kills} (SIGKILL exits {killed}), restarts {len(soak.starts) - 1}, "
        f"final exit {soak.exits[-1] if soak.exits else None}; "
        + ("at random moments" if soak.anywhere else "between sends")
        + f", {soak.kills_inside_send} inside a send (a message accepted, not yet recorded as sent)",
        f"  errors injected {t.injected} (each its own alert; {soak.successes} followed by a success)",
        f"  notified on both channels {t.notified}, missed {len(t.missed)}, duplicated {t.duplicated} "
        f"(errors told more than once: {len(t.duplicated_ids)})",
    ]
    for name, c in t.per_channel.items():
        lines.append(
            f"    {name:<14} notified {c['notified']}, missed {c['missed']}, duplicated {c['duplicated']}"
        )
    if t.latencies_s:
        lat = t.latencies_s
        lines.append(
            f"  injection to told on both channels: median {lat[len(lat) // 2]:.1f} s, "
            f"p95 {lat[max(0, math.ceil(0.95 * len(lat)) - 1)]:.1f} s, max {lat[-1]:.1f} s"
        )
    lines.append(
        f"  state file: execution_error events once {t.stored_once}, missing {t.stored_missing}, "
        f"more than once {t.stored_twice}"
    )
    for e in t.missed[:10]:
        lines.append(f"  missed: {e}")
    for e in t.duplicated_ids[:10]:
        lines.append(f"  duplicated: {e}")
    return "\n".join(lines)


def to_json(soak: Soak, t: Tally) -> dict[str, Any]:
    return {
        "seed": soak.seed,
        "speed": soak.speed,
        "kills": soak.kills,
        "sigkill_exits": sum(1 for x in soak.exits if x == -9),
        "restarts": len(soak.starts) - 1,
        "anywhere": soak.anywhere,
        "kills_inside_send": soak.kills_inside_send,
        "injected": t.injected,
        "notified": t.notified,
        "missed": len(t.missed),
        "duplicated": t.duplicated,
        "per_channel": t.per_channel,
        "stored_once": t.stored_once,
        "stored_missing": t.stored_missing,
        "stored_twice": t.stored_twice,
        "latency_s": {
            "median": t.latencies_s[len(t.latencies_s) // 2] if t.latencies_s else None,
            "p95": t.latencies_s[max(0, math.ceil(0.95 * len(t.latencies_s)) - 1)] if t.latencies_s else None,
            "max": t.latencies_s[-1] if t.latencies_s else None,
        },
        "wall_s": soak.wall_s,
        "drain_s": soak.drained_s,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--kills", type=int, help="SIGKILLs (default 50; --quick 10)")
    ap.add_argument("--quick", action="store_true", help="10 kills, a shorter drain")
    ap.add_argument(
        "--seed", type=int, default=1, help="seed of the world and of the kill times (default 1)"
    )
    ap.add_argument(
        "--speed", type=float, default=10.0, help="simulated seconds per real second (default 10)"
    )
    ap.add_argument(
        "--drain",
        type=float,
        metavar="S",
        help="at most this long for the last notices (default 90; --quick 45)",
    )
    ap.add_argument("--json", type=Path, help="also write the tally to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument(
        "--anywhere", action="store_true",
        help="kill at random moments, inside a send too (default: between sends; see bench/README.md)",
    )  # fmt: skip
    ap.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="keep the state file, the log, the e-mails and the Slack requests here",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.kills is None:
        args.kills = 10 if args.quick else 50
    if args.drain is None:
        args.drain = 45.0 if args.quick else 90.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    soak = asyncio.run(
        run_soak(args.seed, args.kills, args.speed, args.drain, quiet=args.quiet, keep=args.keep, anywhere=args.anywhere)
    )
    t = tally(soak)
    command = f"python bench/soak.py --kills {args.kills} --seed {args.seed}" + (
        " --quick" if args.quick else ""
    ) + (" --anywhere" if args.anywhere else "")
    print(render(soak, t, command))
    if args.json:
        args.json.write_text(json.dumps(to_json(soak, t), indent=2) + "\n")
    return 0 if not t.missed and not t.duplicated else 1


if __name__ == "__main__":
    sys.exit(main())
