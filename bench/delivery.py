"""Delivery throughput: how fast a backlog of outbox rows drains on one e-mail channel.

What is measured
----------------
A fresh state file gets ``--rows`` execution errors, each an alert of its own (one error name
per scenario), and one alert tick's decision (``alerts.pipeline.process_events``, group wait 0)
queues one e-mail per alert. Then ``alerts.delivery.deliver_due`` runs, pass after pass, until
no row is pending; the wall time of that drain (the decision excluded) gives messages per
second, with the CPU seconds of this process (``time.process_time``: the store's writer and
reader threads included). The SMTP server is aiosmtpd's discarding ``Sink`` in a subprocess
(``python -m aiosmtpd``), so its work does not compete for this process's GIL; makewatch's
SMTP client talks to it over 127.0.0.1 without TLS or login, so the figure is makewatch's own
cost per message (a real server adds its round trips).

``--slack`` adds a Slack incoming-webhook channel (the Slack stand-in, served in this process)
as a second default channel, so every alert queues two rows: then the drain shows whether one
channel's rows wait behind the other's.

    python bench/delivery.py               # 300 rows on one e-mail channel
    python bench/delivery.py --rows 1000 --slack
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alerts.delivery import deliver_due  # noqa: E402
from alerts.pipeline import process_events  # noqa: E402
from alerts.service import Alerter  # noqa: E402
from watcher import store as st  # noqa: E402
from watcher.config import load_config  # noqa: E402
from watcher.store import Store  # noqa: E402
from watcher.testing import SlackState, create_slack_app  # noqa: E402
from watcher.testing.standins import serve_local  # noqa: E402

ORG = 1001
HOOK_PATH = "T0BENCH/B0BENCH/benchWebhookSecret"
START = 1_790_000_000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp_sink() -> tuple[subprocess.Popen[bytes], int]:
    """aiosmtpd's discarding Sink in its own process; returns once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the SMTP sink did not start within 10 s")


def write_config(workdir: Path, smtp_port: int, slack_url: str | None) -> tuple[Path, dict[str, str]]:
    channels = ["mail"] + (["hook"] if slack_url else [])
    text = f"""
[[organizations]]
name = "Bench"
base_url = "http://127.0.0.1:9/api/v2"
organization_id = {ORG}
token_env = "TOK"

[state]
db_path = {json.dumps(str(workdir / "state.db"))}

[alerts]
default_channels = {json.dumps(channels)}
group_wait_s = 0

[channels.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from_addr = "makewatch@bench.example"
to = ["ops@bench.example"]
"""
    env = {"TOK": "tok"}
    if slack_url:
        text += '\n[channels.hook]\ntype = "slack_webhook"\nwebhook_url_env = "HOOK"\n'
        env["HOOK"] = f"{slack_url}/webhook/{HOOK_PATH}"
    path = workdir / "makewatch.toml"
    path.write_text(text)
    return path, env


def error_event(i: int) -> dict:
    return {
        "key": f"execution_error:{ORG}:{1000 + i}:e{i}",
        "kind": "execution_error",
        "severity": "error",
        "org_id": ORG,
        "scenario_id": 1000 + i,
        "occurred_at": START,
        "detected_at": START,
        "payload": {
            "organization": "Bench",
            "scenario_name": f"Scenario {i}",
            "error_name": "DataError",
            "error_message": f"bench error {i}",
            "execution_id": f"{i:032x}",
        },
    }


async def bench(rows: int, slack: bool) -> dict:
    smtp, smtp_port = start_smtp_sink()
    slack_state = SlackState(webhooks={HOOK_PATH: "C0HOOK"})
    runner = None
    try:
        slack_url = None
        if slack:
            runner, slack_port = await serve_local(create_slack_app(slack_state))
            slack_url = f"http://127.0.0.1:{slack_port}"
        with tempfile.TemporaryDirectory(prefix="makewatch-delivery-") as tmp:
            config, env = write_config(Path(tmp), smtp_port, slack_url)
            settings = load_config(config, env=env)
            store = Store.open(settings.state.db_path)
            async with aiohttp.ClientSession() as session:
                alerter = Alerter(settings, store, session, rng=random.Random(1))
                try:
                    events = [error_event(i) for i in range(rows)]
                    await store.write(lambda db: st.insert_events(db, events))
                    await process_events(store, alerter.policy, START)
                    queued = await store.read(lambda db: db["outbox"].count_where("status = 'pending'"))
                    t0, c0 = time.perf_counter(), time.process_time()
                    passes, sent = 0, 0
                    while True:
                        report = await deliver_due(store, alerter.notifiers, START, rng=random.Random(1))
                        passes += 1
                        sent += report.sent
                        left = await store.read(lambda db: db["outbox"].count_where("status = 'pending'"))
                        if not left or (not report.sent and not report.retried):
                            break
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                finally:
                    await alerter.aclose()
            store.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        smtp.terminate()
        smtp.wait(timeout=10)
    return {
        "rows": queued,
        "sent": sent,
        "left": left,
        "passes": passes,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s": sent / wall if wall else None,
        "channels": ["mail"] + (["hook"] if slack else []),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=300, help="alerts queued before the drain (default 300)")
    ap.add_argument("--slack", action="store_true", help="a Slack webhook channel too (two rows per alert)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the median is reported (default 3)")
    ap.add_argument("--json", type=Path, help="also write the runs to this JSON file")
    args = ap.parse_args(argv)
    runs = [asyncio.run(bench(args.rows, args.slack)) for _ in range(args.repeat)]
    for r in runs:
        print(
            f"{r['rows']} rows on {'+'.join(r['channels'])}: sent {r['sent']} in {r['wall_s']:.2f} s "
            f"({r['per_s']:.0f} messages/s, {r['passes']} passes), CPU {r['cpu_s']:.2f} s, left {r['left']}"
        )
    best = sorted(runs, key=lambda r: r["per_s"] or 0)[len(runs) // 2]
    print(f"median: {best['per_s']:.0f} messages/s")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 0 if all(not r["left"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
