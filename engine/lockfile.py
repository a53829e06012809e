"""Exactly one writer per store: an flock on `<store>/LOCK` holding the writer's pid.

The kernel drops the lock when the process dies (even by SIGKILL), so a crashed writer never leaves
a stale lock behind; the pid in the file is only there to name the holder in the error.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import LockedError


class WriterLock:
    def __init__(self, store: Path) -> None:
        self.path = store / "LOCK"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._holder()
            os.close(self.fd)
            self.fd = -1
            raise LockedError(str(store), pid) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def _holder(self) -> int | None:
        try:
            return int(os.pread(self.fd, 32, 0).split()[0])
        except (ValueError, IndexError, OSError):
            return None

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, 0)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                self.fd = -1
