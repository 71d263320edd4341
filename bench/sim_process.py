"""The scale world served from a process of its own, on a clock the benchmark moves.

Why a process of its own: a world of 10,000 scenarios holds hundreds of megabytes of run
logs after a few simulated hours and spends tens of CPU seconds making them. In the
benchmark's process that would be counted as makewatch's memory and CPU. Here the benchmark's
``ru_maxrss`` and ``time.process_time()`` are makewatch's (plus a thin driver), and the world's
cost is reported apart.

Why the clock is shared memory: the benchmark steps a :class:`~watcher.clock.ManualClock`
many thousand times (every limiter wait, every alert tick). :class:`SharedClock` writes each
new time into an 8-byte file mapped by both processes before it wakes anyone, and the world's
:class:`MappedClock` reads it, so a request that arrives at the simulator always sees the
time at which the client sent it, and moving time costs no round trip.

Run by :func:`start` (``python bench/sim_process.py CLOCK_FILE --orgs K --scenarios M ...``):
it prints one JSON line (ports, organizations, tokens) and serves until stdin closes. Besides
the simulator's API it answers ``GET /_bench/report?since=&until=``: the failures the world
produced in that window (advanced to ``until``), the request log's figures per organization,
its own CPU and memory. The Slack stand-in runs in this process too, on a port of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import resource
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from bench.stats import max_in_window  # noqa: E402
from watcher.clock import ManualClock  # noqa: E402
from watcher.simulator import World, create_app  # noqa: E402
from watcher.simulator.scale import build_scale_world, org_access  # noqa: E402
from watcher.testing import SlackState, create_slack_app  # noqa: E402
from watcher.testing.standins import serve_local  # noqa: E402

_FMT = "d"  # one float64: the clock's epoch seconds
_SIZE = struct.calcsize(_FMT)


class SharedClock(ManualClock):
    """The benchmark's ManualClock; every move is written to ``path`` first."""

    def __init__(self, path: Path, start: float) -> None:
        super().__init__(start)
        path.write_bytes(struct.pack(_FMT, start))
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), _SIZE)

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError("a ManualClock never goes backwards")
        # Before any sleeper wakes: the simulator must see the new time before the request
        # a woken task sends can reach it.
        self._map[:_SIZE] = struct.pack(_FMT, t)
        super().set(t)

    def next_deadline(self) -> float | None:
        """When the earliest live sleeper is due (None: nobody waits on the clock)."""
        live = [deadline for deadline, _, fut in self._sleepers if not fut.done()]
        return min(live) if live else None

    def close(self) -> None:
        self._map.close()
        self._file.close()


class MappedClock:
    """The simulator's side: the time the benchmark last wrote. Never sleeps for long (the
    simulator only sleeps for its latency fault, which the benchmark does not set)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._map = mmap.mmap(self._file.fileno(), _SIZE, access=mmap.ACCESS_READ)

    def time(self) -> float:
        return struct.unpack(_FMT, self._map[:_SIZE])[0]

    async def sleep(self, seconds: float) -> None:
        until = self.time() + seconds
        while self.time() < until:  # noqa: ASYNC110 - another process moves this clock
            await asyncio.sleep(0.001)


# --------------------------------------------------------------------------------------------
# The server side


def report(world: World, slack: SlackState, since: float, until: float) -> dict[str, Any]:
    """What the benchmark scores against: the world's truth and the request log's figures."""
    world.advance(until)
    failures = [
        {"scenario_id": e.scenario_id, "org_id": e.org_id, "execution_id": e.execution_id, "t": e.t}
        for e in world.ledger
        if e.kind == "error" and since <= e.t < until
    ]
    orgs = []
    for org in sorted(world.organizations.values(), key=lambda o: o.id):
        times = [r.t for r in world.requests if r.org_id == org.id]
        statuses = Counter(r.status for r in world.requests if r.org_id == org.id)
        orgs.append(
            {
                "organization_id": org.id,
                "name": org.name,
                "api_limit": org.api_limit,
                "requests": len(times),
                "max_per_60s": max_in_window(times) if times else 0,
                "status_429": statuses.get(429, 0),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
            }
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "failures": failures,
        "runs": sum(sc.run_index for sc in world.scenarios.values()),
        "organizations": orgs,
        "user_level_requests": sum(1 for r in world.requests if r.org_id is None),
        "slack_requests": len(slack.requests),
        "slack_messages": len(slack.messages),
        "cpu_s": time.process_time(),
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


async def serve(clock_file: Path, orgs: int, scenarios: int, seed: int, plan: str) -> None:
    world = build_scale_world(seed, orgs, scenarios, MappedClock(clock_file), plan)
    slack = SlackState()
    app = create_app(world)

    async def bench_report(request: web.Request) -> web.Response:
        since = float(request.query["since"])
        until = float(request.query["until"])
        return web.json_response(report(world, slack, since, until))

    app.router.add_get("/_bench/report", bench_report)
    sim_runner, port = await serve_local(app)
    slack_runner, slack_port = await serve_local(create_slack_app(slack))
    access = [vars(a) for a in org_access(world)]
    print(json.dumps({"port": port, "slack_port": slack_port, "orgs": access}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        # Until the benchmark closes our stdin (or dies): never outlive it.
        await loop.run_in_executor(None, sys.stdin.read)
    finally:
        await sim_runner.cleanup()
        await slack_runner.cleanup()


# --------------------------------------------------------------------------------------------
# The benchmark's side


@dataclass
class SimProcess:
    """A running simulator process: where it listens and what it serves."""

    proc: asyncio.subprocess.Process
    port: int
    slack_port: int
    orgs: list[dict[str, Any]]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    @property
    def slack_url(self) -> str:
        return f"http://127.0.0.1:{self.slack_port}"

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def start(clock_file: Path, orgs: int, scenarios: int, seed: int, plan: str) -> SimProcess:
    """Start the simulator process on ``clock_file`` (a :class:`SharedClock`'s file)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), str(clock_file),
        "--orgs", str(orgs), "--scenarios", str(scenarios), "--seed", str(seed), "--plan", plan,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if not line:
        raise RuntimeError(f"the simulator process exited ({await proc.wait()}) before it served")
    info = json.loads(line)
    return SimProcess(proc, info["port"], info["slack_port"], info["orgs"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Serve the scale world on a shared clock (bench/scale.py)."
    )
    ap.add_argument("clock_file", type=Path)
    ap.add_argument("--orgs", type=int, required=True)
    ap.add_argument("--scenarios", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plan", default="core")
    args = ap.parse_args(argv)
    asyncio.run(serve(args.clock_file, args.orgs, args.scenarios, args.seed, args.plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
