"""``makewatch demo``: the simulator and the client on embedded defaults, no config needed."""

from __future__ import annotations

import aiohttp
import jinja2
from aiohttp import web

from watcher.clock import ScaledClock
from watcher.config import PLAN_API_LIMITS
from watcher.make import MakeClient, SlidingWindowLimiter
from watcher.resources import templates_dir
from watcher.simulator import World, create_app

DEFAULT_BUDGET_SHARE = 0.5


async def run_demo(*, seed: int = 1, max_errors: int = 5) -> str:
    """Serve the demo world on a free port, read every organization through MakeClient."""
    clock = ScaledClock(speed=1.0)
    world = World.generate(seed=seed, clock=clock)
    runner = web.AppRunner(create_app(world), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}/api/v2"
        async with aiohttp.ClientSession() as session:
            orgs = [
                await _read_org(session, base_url, world, org_id, clock, max_errors)
                for org_id in sorted(world.organizations)
            ]
    finally:
        await runner.cleanup()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("cli/demo.txt.j2").render(base_url=base_url, seed=seed, orgs=orgs)


async def _read_org(
    session: aiohttp.ClientSession,
    base_url: str,
    world: World,
    org_id: int,
    clock: ScaledClock,
    max_errors: int,
) -> dict:
    token = world.tokens_by_org[org_id]
    sim_org = world.organizations[org_id]
    start_budget = int(PLAN_API_LIMITS["free"] * DEFAULT_BUDGET_SHARE)
    client = MakeClient(
        session,
        base_url,
        token,
        clock=clock,
        limiter=SlidingWindowLimiter(start_budget, clock=clock),
        budget_share=DEFAULT_BUDGET_SHARE,
    )
    org = await client.get_organization(org_id)
    api_limit = org.license.api_limit if org.license else None
    if api_limit:
        client.limiter.set_limit(max(1, int(api_limit * DEFAULT_BUDGET_SHARE)))
    scenarios = await client.list_scenarios(organization_id=org_id)
    errors = []
    for sc in scenarios:
        if sc.is_invalid or sc.dlq_count:
            for entry in await client.list_scenario_logs(sc.id, status=3, max_pages=1):
                errors.append(
                    {
                        "timestamp": entry.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                        "scenario": sc.name,
                        "error_name": entry.error_name,
                        "error_message": entry.error_message,
                    }
                )
    errors.sort(key=lambda e: e["timestamp"], reverse=True)
    limit = org.license.operations if org.license else None
    return {
        "id": org.id,
        "name": org.name,
        "plan": org.plan or sim_org.plan,
        "api_limit": api_limit,
        "budget": client.limiter.per_window,
        "operations_used": org.operations_used,
        "operations_limit": limit,
        "quota_pct": round(100 * org.operations_used / limit) if limit else "?",
        "next_reset": org.next_reset.strftime("%Y-%m-%d") if org.next_reset else "?",
        "scenarios": scenarios,
        "active": sum(1 for s in scenarios if s.is_active),
        "deactivated": [s for s in scenarios if s.is_invalid and not s.is_active],
        "with_dlq": [s for s in scenarios if s.dlq_count],
        "errors": errors[:max_errors],
        "requests": client.requests_sent,
    }
