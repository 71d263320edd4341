"""A broken state file is one clear line and exit 1, never a traceback or a loop (issue 12, point 10).

Real files and real processes: a corrupt file is garbage bytes, a read-only one is chmod 0444
(or, for root, whom permissions do not stop, the immutable flag), a deleted one is unlinked
under a running ``makewatch run``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cycles, makewatch, start_run

from watcher.store import StateFileError, Store

UNREACHABLE = "http://127.0.0.1:9/api/v2"  # never called: the state file fails first


def write_config(tmp_path: Path, db: Path) -> Path:
    cfg = tmp_path / "makewatch.toml"
    cfg.write_text(
        f'[[organizations]]\nname = "Acme"\nbase_url = "{UNREACHABLE}"\norganization_id = 1\n'
        f'token_env = "TOK"\n[state]\ndb_path = "{db}"\n'
    )
    return cfg


def run_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOK": "t"}
    return subprocess.run(makewatch(*args, "--config", str(cfg)), env=env, capture_output=True, text=True, timeout=60)


def assert_clear_exit_1(done: subprocess.CompletedProcess[str], db: Path, problem: str) -> None:
    assert done.returncode == 1, done.stderr
    assert f"makewatch: state file {db}: {problem}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.fixture
def read_only(tmp_path: Path):
    """A makewatch state file this process cannot write; yields its path."""
    db = tmp_path / "state.db"
    Store.open(db).close()
    if os.geteuid() != 0:
        db.chmod(0o444)
        yield db
        db.chmod(0o600)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("running as root, and the file system has no immutable flag: no way to make a file read-only")
    try:
        yield db
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


@pytest.mark.parametrize("command", ["run", "once"])
def test_a_read_only_state_file_exits_1_naming_it(read_only: Path, tmp_path: Path, command: str):
    done = run_cli(write_config(tmp_path, read_only), command)
    assert_clear_exit_1(done, read_only, "is read-only for this user")


@pytest.mark.parametrize("command", ["run", "once", "status", "silence list"])
def test_a_corrupt_state_file_exits_1_naming_it(tmp_path: Path, command: str):
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not SQLite\n" * 500)
    done = run_cli(write_config(tmp_path, db), *command.split())
    assert_clear_exit_1(done, db, "is not a makewatch state file, or is corrupt (SQLite: file is not a database); move it aside")
    assert db.read_bytes() == b"this is not SQLite\n" * 500  # left as it was


def test_a_state_file_inside_a_regular_file_exits_1_naming_it(tmp_path: Path):
    (tmp_path / "data").write_text("a file, not a directory")
    db = tmp_path / "data" / "state.db"
    done = run_cli(write_config(tmp_path, db), "run")
    assert_clear_exit_1(done, db, f"{tmp_path / 'data'} is not a directory")


def test_a_state_file_that_is_a_directory_is_reported_when_opened(tmp_path: Path):
    # The config refuses one (exit 2, see test_cli); one made a directory after the config
    # was read is still a clear StateFileError.
    with pytest.raises(StateFileError, match=r"state file .*: is a directory; set state.db_path to a file path"):
        Store.open(tmp_path)


def test_a_state_file_replaced_under_an_open_store_is_noticed(tmp_path: Path):
    db = tmp_path / "state.db"
    with Store.open(db) as store:
        store.check_file()
        os.replace(shutil.copy(db, tmp_path / "copy.db"), db)
        with pytest.raises(StateFileError, match="was replaced by another file"):
            store.check_file()


@pytest.mark.timeout(90)
def test_run_stops_with_exit_1_when_its_state_file_is_deleted(service):  # noqa: F811
    cfg, db, env = service
    proc = start_run(cfg, env)
    deadline = time.monotonic() + 20
    while cycles(db) < 1 and time.monotonic() < deadline:
        assert proc.poll() is None
        time.sleep(0.1)
    db.unlink()
    try:
        _, stderr = proc.communicate(timeout=20)  # it notices within a poll or alert round
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        raise AssertionError(f"still running 20 s after its state file was deleted: {stderr[-2000:]}") from None
    assert proc.returncode == 1, stderr
    assert f"makewatch: state file {db}: was deleted (or moved) while makewatch was running" in stderr
    assert "Traceback" not in stderr
