"""bench/detect.py --quick still measures what it claims; scale.py and soak.py run.

Structure only, never speed: the benchmark's figures are checked against data it cannot make
up (the simulator's own request log, a rebuilt copy of the world, the raw latencies), so a
broken benchmark fails here, whichever poller is faster.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_bench


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]


def most_in_any_window(times: list[float], window_s: float = 60.0) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered))


@pytest.mark.timeout(300)  # a hang guard, generous for a loaded machine
async def test_quick_benchmark_measures_both_pollers_inside_the_same_budget() -> None:
    detect = load_bench("detect")
    results = await detect.run_benchmark(detect.QUICK, seed=1)
    assert [r.regime.key for r in results] == ["a", "b"]

    for res in results:
        regime = res.regime
        # The ground truth is the world's: a fresh copy, advanced to the end of the window,
        # produced exactly these failures (none filtered out, none invented).
        clock = detect.BenchClock(detect.START)
        world, _, _ = detect.build_world(regime, res.seed, clock)
        clock.set(detect.START + regime.window_s)
        assert res.truth == detect.failures(world, detect.START, detect.START + regime.window_s)
        assert res.truth, "the world injected no failure: the benchmark measures nothing"
        truth_ids = {f.execution_id for f in res.truth}

        for p in (res.makewatch, res.naive):
            where = f"regime {regime.key}, {p.name}"
            assert p.detected_count >= 1, f"{where}: detected no injected failure"
            # One latency per counted failure, from the recorded detection time; a failure
            # never recorded is missed (infinite), never dropped.
            assert len(p.latencies) == len(res.truth)
            for f, latency in zip(res.truth, p.latencies, strict=True):
                if f.execution_id in p.detected:
                    assert latency == p.detected[f.execution_id] - f.at >= 0, where
                else:
                    assert latency == math.inf, where
            assert p.missed == len(truth_ids - p.detected.keys())

            # The budget, from the simulator's side: Core 60/min x budget_share 0.5.
            assert p.budget_per_minute == 30
            assert p.requests, where
            assert most_in_any_window([r.t for r in p.requests]) <= p.budget_per_minute, where
            assert p.max_per_window == most_in_any_window([r.t for r in p.requests])
            assert not [r for r in p.requests if r.status == 429], f"{where}: got 429s"
            assert all(r.status == 200 for r in p.requests), where

        # The naive poller only reads error logs (status=3), round-robin, after one listing.
        naive_logs = [r for r in res.naive.requests if detect.LOGS_PATH.match(r.path)]
        assert naive_logs and all(r.query.get("status") == "3" for r in naive_logs)
        assert {r.path for r in res.naive.requests} - {r.path for r in naive_logs} == {"/api/v2/scenarios"}
        # makewatch lists the inventory every cycle.
        assert res.makewatch.count("list") >= res.makewatch.cycles

        # Ratios come from the measured latencies and request counts.
        for what, q in (("p50", 50), ("p95", 95)):
            mw, nv = nearest_rank(res.makewatch.latencies, q), nearest_rank(res.naive.latencies, q)
            expected = nv / mw if math.isfinite(mw) and math.isfinite(nv) and mw > 0 else math.nan
            got = res.ratio(what)
            assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
        assert res.ratio("requests") == pytest.approx(len(res.naive.requests) / len(res.makewatch.requests))

    text = detect.render(results, "python bench/detect.py --quick --seed 1")
    assert text.startswith("command: python bench/detect.py --quick")
    for res in results:
        assert f"regime ({res.regime.key})" in text
        assert detect.fmt_ratio(res.ratio("p50")) in text
        assert detect.fmt_ratio(res.ratio("requests")) in text


@pytest.mark.timeout(300)  # a hang guard, generous for a loaded machine
async def test_quick_alert_tick_benchmark_measures_what_it_built(tmp_path) -> None:  # noqa: ANN001
    """bench/alert_tick.py: the open alerts it times are there, the size run's rows and
    bytes add up (structure only, never speed)."""
    bench = load_bench("alert_tick")
    tick = await bench.tick_bench(200, tmp_path, seed=1, idle_ticks=3, busy_ticks=2)
    assert tick.open_alerts == 200 and tick.idle_cpu_ms >= 0 and tick.busy_cpu_ms > 0
    size = await bench.size_bench(20, 0.25, tmp_path, seed=1, read_every_s=3600)
    assert size.rows["events"] >= size.errors > 0 and size.rows["outbox"] == size.rows["deliveries"] > 0
    # Compaction only shrinks; the projection scales the measured rows.
    assert all(size.compacted.get(t, 0) <= size.full[t] for t in ("events", "outbox"))
    rows_90, _ = size.projection(seed=1)["outbox"]
    assert rows_90 == pytest.approx(size.rows["outbox"] * 10_000 / 20 * 90 / 0.25)


# --- bench/scale.py and bench/soak.py: smoke runs at their smallest, as subprocesses --------

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_script(name: str, *args: str, tmp_path: Path, timeout_s: float) -> tuple[dict, str]:
    """``python bench/<name>.py ARGS --json FILE``: (the JSON it wrote, what it printed)."""
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args, "--json", str(out)],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.timeout(240)  # a hang guard, generous for a loaded machine
def test_scale_quick_measures_the_watcher_against_a_small_world(tmp_path: Path) -> None:
    figures, text = run_script(
        "scale", "--quick", "--orgs", "2", "--scenarios", "60", "--hours", "1", "--max-wall", "15",
        tmp_path=tmp_path, timeout_s=230,
    )  # fmt: skip
    (run,) = figures["runs"]
    assert (run["orgs"], run["scenarios"]) == (2, 60)
    assert 0 < run["simulated_hours"] <= 1
    hours = math.ceil(run["simulated_hours"] - 1e-9)
    assert len(run["cpu_s_per_hour"]) == len(run["rss_mb_per_hour"]) == hours
    assert run["cpu_s"] > 0 and run["cycles"] > 0
    assert 30 < run["peak_rss_mb"] < 4000 and run["peak_rss_mb"] >= run["rss_before_mb"] * 0.9
    assert run["db_bytes_per_hour"][-1] > 0
    # The budget, from the simulator's request log: Core 60/min x budget_share 0.5, per org.
    assert run["budget_per_minute"] == {o["name"]: 30 for o in run["organizations"]}
    assert all(0 < o["max_per_60s"] <= 30 for o in run["organizations"])
    assert run["status_429"] == 0
    # Failures come from the world, detections from makewatch's store.
    assert 0 <= run["failures_recorded"] <= run["failures_produced"]
    assert "peak RSS" in text and "429s 0" in text


@pytest.mark.timeout(240)  # a hang guard, generous for a loaded machine
def test_soak_quick_tells_every_error_once_across_sigkills(tmp_path: Path) -> None:
    args = ("--quick", "--kills", "3", "--drain", "40", "--quiet")
    figures, text = run_script("soak", *args, tmp_path=tmp_path, timeout_s=230)
    assert figures["kills"] == figures["sigkill_exits"] == figures["restarts"] == 3
    # Each kill lands between sends (bench/README.md: a kill inside one may repeat that
    # message on any channel, and no channel lets makewatch prevent it), so any duplicate
    # below is makewatch's.
    assert not figures["anywhere"] and figures["kills_inside_send"] == 0, text
    assert figures["injected"] > 3
    assert figures["missed"] == 0, text
    assert figures["duplicated"] == 0, text
    assert figures["notified"] == figures["injected"]
    assert figures["stored_once"] == figures["injected"]
    assert set(figures["per_channel"]) == {"slack webhook", "e-mail"}


@pytest.mark.postgres
@pytest.mark.timeout(180)  # a hang guard, generous for a loaded machine
def test_replicas_quick_runs_three_replicas_through_kills_and_a_handover(tmp_path: Path) -> None:
    """bench/replicas.py --quick: its figures come from what ran (structure, not speed).

    Runs on its own PostgreSQL (tests/pg_fixture.py's start_pg, or MAKEWATCH_TEST_PG_URL's
    server)."""
    pytest.importorskip("psycopg")
    from pg_fixture import find_pg_bin

    external = os.environ.get("MAKEWATCH_TEST_PG_URL")
    if external is None and find_pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql, or set MAKEWATCH_TEST_PG_URL)")
    args = ["--quick", "--quiet"] + (["--pg-url", external] if external else [])
    figures, text = run_script("replicas", *args, tmp_path=tmp_path, timeout_s=170)
    assert figures["replicas"] == 3 and figures["orgs"] == 6 and figures["ttl_s"] == 5
    assert figures["sigkills"] >= 1 and figures["sigterms"] == 1, text
    assert figures["starts"] == 3 + figures["sigkills"] + figures["sigterms"]
    exits = figures["exits"]  # every SIGKILL, then SIGTERMs: the handover and the final stops
    assert exits.count(-9) == figures["sigkills"] and exits.count(0) == len(exits) - figures["sigkills"], exits
    # Each kill lands between sends, so a duplicate below is makewatch's.
    assert not figures["anywhere"] and figures["kills_inside_send"] == 0, text
    assert figures["expected"] > 10
    assert figures["lost"] == 0 and figures["duplicated"] == 0, text
    assert figures["sent"] == figures["stored_once"] == figures["expected"], text
    took = figures["takeover_s"]["SIGKILL"]["all"] + figures["takeover_s"]["SIGTERM"]["all"]
    assert took and figures["takeover_unfinished"] == 0 and max(took) <= 60, text
    orgs = figures["organizations"]
    assert len(orgs) == 6 and all(o["budget_per_minute"] == 30 and o["requests"] > 0 for o in orgs)
    # Each organization's budget held in every 60 s window, across kills and the handover
    # (the limiter is seeded with what the previous holder reported, or, after a death, with
    # the rest of its window spent at its lease's expiry: watcher.replicas.takeover_budget).
    assert figures["over_budget"] == 0, text
    assert all(o["max_per_60s"] <= o["budget_per_minute"] for o in orgs), text
    assert figures["status_429"] == 0, text
    assert "takeover after SIGKILL" in text and "busiest 60 s" in text
