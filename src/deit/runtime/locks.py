"""A lock that dies with its holder: ``fcntl.flock`` on a file, which the OS releases when the process that holds
it ends, however it ends (a crash, SIGKILL, a lost node's restart). A pid file alone would outlive a killed
holder and could name a reused pid.

The file records who holds it (pid, host, start time, command line) so that a refused process can name the
holder; a clean release removes it. A file found with a record but no flock on it was left by a holder that died:
taking the lock over returns that record, so the caller can say whose it was.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is advisory there and always granted
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    since: str  # local time, YYYY-MM-DD HH:MM:SS
    command: str

    def describe(self) -> str:
        """``pid 123 on host h since 2025-01-02 03:04:05 (`deit train ...`)``."""
        return f"pid {self.pid} on host {self.host} since {self.since} (`{self.command}`)"

    @classmethod
    def me(cls) -> Holder:
        command = shlex.join(["deit", *sys.argv[1:]] if _run_as_deit() else [sys.executable, *sys.argv])
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), command)


def _run_as_deit() -> bool:
    """Whether this process is the ``deit`` command (``deit ...`` or ``python -m deit ...``)."""
    argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return argv0 == "deit" or Path(sys.argv[0]).parent.name == "deit" and argv0 == "__main__.py"


class LockHeld(Exception):
    """The lock is held by a live process: ``holder`` (None when it has not written its record yet)."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path, self.holder = path, holder
        who = holder.describe() if holder else "a process that is starting"
        super().__init__(f"{path} is held by {who}")


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        return Holder(**json.loads(raw))
    except (ValueError, TypeError):  # empty (a holder between its open and its write) or foreign
        return None


class FileLock:
    """An exclusive, non-blocking lock on ``path``: ``acquire`` takes it or raises LockHeld; ``release`` (also on a
    lock never taken) removes the file and unlocks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Holder | None:
        """Take the lock; returns the record of a dead holder whose lock this took over (None: it was free)."""
        if fcntl is None:
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise LockHeld(self.path, holder) from None
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):  # a file system without locks: nothing to hold
                    return None
                raise
            # A releaser removes the file after we opened it and before we locked it: we then hold a lock on a
            # file nobody else will open; start again on the one at the path.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(Holder.me().__dict__).encode())
        self._fd = fd
        return previous

    def release(self, moved_to: str | Path | None = None) -> None:
        """Remove the lock file (at ``moved_to`` when its directory was renamed meanwhile) and unlock."""
        if self._fd is None:
            return
        path = Path(moved_to) if moved_to is not None else self.path
        # Removed while still locked: whoever opens the path next creates a new file and locks that one.
        if _same_file(self._fd, path):
            path.unlink()
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


__all__ = ["FileLock", "Holder", "LockHeld"]
