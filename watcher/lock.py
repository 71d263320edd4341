"""One writer per state file: an OS lock held by ``makewatch run`` / ``once`` for their lifetime.

Why
---
Two services on one state file each keep their own rate limiter, so together they spend twice
the organization's API budget (16 requests in a 60 s window against a 15/min budget were
seen), and they race each other's cursors and outbox. The second one must refuse to start.

How
---
An exclusive ``fcntl.flock`` on ``<db_path>.lock``, the file beside the database. The kernel
drops the lock when the process ends, however it ends (SIGKILL, OOM killer, power-off of a
container), so a restart never waits for a stale lock to time out, and nobody has to delete
anything. A row with a timestamp in the database could not promise that. The lock file is
never deleted: unlinking it while another process waits on it would let two processes hold
"the" lock on two different files.

The file holds the holder's pid, only to name it in the refusal message.

Read-only commands (``status``, ``silence list``, ``check``) and the small writes of
``silence add`` / ``expire`` do not take the lock: SQLite's WAL lets them run beside the
service. Unix only (``fcntl``), like the rest of the service's signal handling.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunningError", "StateLock", "lock_path_for"]


class AlreadyRunningError(Exception):
    """Another process holds the lock of this state file."""

    def __init__(self, db_path: Path, pid: int | None) -> None:
        self.db_path = db_path
        self.pid = pid
        who = f" (pid {pid})" if pid is not None else ""
        super().__init__(
            f"another makewatch is already running on {db_path}{who}; stop it first, "
            "or give this one its own state.db_path"
        )


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """``/data/state.db`` -> ``/data/state.db.lock``, after resolving symlinks.

    Resolving makes ``./state.db``, an absolute path and a symlink to the file share one
    lock (flock is per inode, so the same lock file under two names would work too; a
    *different* lock file per spelling would not).
    """
    path = Path(db_path).expanduser().resolve()
    return path.with_name(path.name + ".lock")


class StateLock:
    """``with StateLock(db_path):`` holds the state file's lock, or raises at once.

    Raises :class:`AlreadyRunningError` if another process holds it (it never waits), and
    ``OSError`` if the lock file cannot be created (the caller reports it as a state-file
    problem).
    """

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.db_path = Path(db_path)
        self.path = lock_path_for(db_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunningError(self.db_path, _read_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Idempotent. Closing the descriptor releases the lock; the file stays (see above)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    # Empty when the holder has locked but not yet written its pid.
    return int(text) if text.isdigit() else None
