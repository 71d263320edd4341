"""One writer per state file (issue 12, point 9): real processes, a real simulator, real flock."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import makewatch, start_run, stop, wait_until_running

from watcher.lock import AlreadyRunningError, StateLock, lock_path_for


def test_a_second_run_on_the_same_state_file_exits_1_naming_the_first(service):
    cfg, db, env = service
    first = start_run(cfg, env)
    try:
        wait_until_running(first, db)
        for command in ("run", "once"):
            second = subprocess.run(makewatch(command, "--config", str(cfg)), env=env, capture_output=True, text=True, timeout=30)
            assert second.returncode == 1, (command, second.stderr)
            assert (
                f"another makewatch is already running on {db} (pid {first.pid}); stop it first, "
                "or give this one its own state.db_path"
            ) in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one never noticed
    finally:
        stop(first)


def test_read_only_commands_and_silences_are_not_blocked_by_a_running_service(service):
    cfg, db, env = service
    first = start_run(cfg, env)
    try:
        wait_until_running(first, db)
        for args in (
            ["status"],
            ["check"],
            ["silence", "list"],
            ["silence", "add", "--kind", "quota", "--for", "1h", "--reason", "maintenance"],
            ["silence", "expire", "1"],
        ):
            done = subprocess.run(makewatch(*args, "--config", str(cfg)), env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
    finally:
        stop(first)


def test_a_run_right_after_sigkill_of_the_first_starts_at_once(service):
    cfg, db, env = service
    first = start_run(cfg, env)
    wait_until_running(first, db)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL

    started = time.monotonic()
    second = start_run(cfg, env)
    try:
        # Its first cycle: the kernel dropped the dead process's lock, nothing timed out.
        wait_until_running(second, db, timeout_s=15)
        assert time.monotonic() - started < 15
        assert lock_path_for(db).read_text().strip() == str(second.pid)
    finally:
        stderr = stop(second)
    assert "already running" not in stderr and "Traceback" not in stderr


def test_the_lock_is_one_per_file_whatever_the_spelling_and_released_on_close(tmp_path: Path, monkeypatch):
    db = tmp_path / "state.db"
    (tmp_path / "link.db").symlink_to(db)
    monkeypatch.chdir(tmp_path)
    with StateLock(db):
        for spelling in ("state.db", "./state.db", "link.db", str(db)):
            with pytest.raises(AlreadyRunningError) as info:
                StateLock(spelling).acquire()
            assert info.value.pid == os.getpid()
    with StateLock("state.db") as again:  # released: free again
        assert again.path == tmp_path / "state.db.lock"
    assert (tmp_path / "state.db.lock").stat().st_mode & 0o077 == 0
