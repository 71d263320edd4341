"""``makewatch demo``: the whole worker on embedded defaults, no config, token or network.

It starts the bundled Make simulator on 127.0.0.1 (its clock runs fast), points a watcher at
every simulated organization, runs the first cycle (the baseline: problems that already
stand), lets simulated time pass, runs another cycle and shows what was detected.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from watcher.clock import ScaledClock
from watcher.config import Settings, load_config
from watcher.resources import templates_dir
from watcher.service import Watcher, format_reports
from watcher.simulator import World, create_app
from watcher.store import Store

DEMO_SPEED = 600.0  # ten simulated minutes per real second


def demo_settings(world: World, base_url: str, db_path: Path, workdir: Path) -> Settings:
    """A config for every simulated organization, validated like a user's file."""
    env: dict[str, str] = {}
    parts = []
    for i, org in enumerate(sorted(world.organizations.values(), key=lambda o: o.id)):
        env[f"MAKEWATCH_DEMO_TOKEN_{i}"] = world.tokens_by_org[org.id]
        parts.append(
            f"[[organizations]]\nname = {json.dumps(org.name)}\nbase_url = {json.dumps(base_url)}\n"
            f'organization_id = {org.id}\ntoken_env = "MAKEWATCH_DEMO_TOKEN_{i}"\n'
        )
    path = workdir / "makewatch-demo.toml"
    path.write_text("\n".join(parts) + f"\n[state]\ndb_path = {json.dumps(str(db_path))}\n")
    return load_config(path, env=env)


async def run_demo(*, seed: int = 1, minutes: float = 60.0, db_path: Path | None = None) -> str:
    """Run the demo and return its report (text)."""
    clock = ScaledClock(speed=DEMO_SPEED)
    world = World.generate(seed=seed, clock=clock)
    runner = web.AppRunner(create_app(world), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v2"
        with tempfile.TemporaryDirectory(prefix="makewatch-demo-") as tmp:
            db = db_path or Path(tmp) / "makewatch.db"
            settings = demo_settings(world, base_url, db, Path(tmp))
            with Store.open(db) as store:
                async with aiohttp.ClientSession() as session:
                    watcher = Watcher(settings, store, session, clock)
                    first = await watcher.poll_once()
                    after_first = await store.read(lambda d: d["events"].count)
                    await clock.sleep(minutes * 60)
                    second = await watcher.poll_once()
                events = await store.read(
                    lambda d: [dict(r) for r in d["events"].rows_where(order_by="id")]
                )
    finally:
        await runner.cleanup()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("cli/demo.txt.j2").render(
        base_url=base_url,
        seed=seed,
        minutes=minutes,
        first=format_reports(first),
        second=format_reports(second),
        baseline=[_row(e) for e in events[:after_first]],
        detected=[_row(e) for e in events[after_first:]],
    )


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
    }
