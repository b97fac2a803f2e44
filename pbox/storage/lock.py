"""fcntl-based locks for the store.

Two processes of pbox at once must never corrupt the store.  A ``FileLock`` is
shared for readers and exclusive for writers (``flock(2)``, so it is held per open
file description and released by the kernel when the process dies, even by
``kill -9``).  When we have to wait, we say who holds the lock: the holder writes
its pid and command next to the lock (containers/storage's lockfile idea).
"""

from __future__ import annotations

import fcntl
import os
import time

from pbox.errors import StoreError


class FileLock:
    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None
        self._depth = 0
        self._mode = 0

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def acquire(self, shared: bool = False, timeout: float | None = None, on_wait=None) -> None:
        """Take the lock; re-entrant within one object (an exclusive hold covers shared)."""
        want = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if self._depth and (self._mode == fcntl.LOCK_EX or want == self._mode):
            self._depth += 1
            return
        fd = self._open()
        try:
            fcntl.flock(fd, want | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(self.holder())
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    if deadline is None:
                        fcntl.flock(fd, want)
                        break
                    fcntl.flock(fd, want | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"the store is locked by {self.holder() or 'another pbox process'}"
                        ) from None
                    time.sleep(0.05)
        self._mode = want
        self._depth += 1
        if want == fcntl.LOCK_EX:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._mode = 0

    def holder(self) -> str:
        """Best effort: 'pid N (command)' of the last exclusive holder."""
        try:
            with open(self.path) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            return f"pid {pid} ({cmd[:80]})"
        except (OSError, ValueError, IndexError):
            return ""

    def shared(self) -> _Held:
        """``with lock.shared():`` holds it shared for the block."""
        return _Held(self, True)

    def exclusive(self) -> _Held:
        """``with lock.exclusive():`` holds it exclusively for the block."""
        return _Held(self, False)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._depth = 0


class _Held:
    """The hold of ``FileLock.shared()`` / ``exclusive()``.  (Not contextlib: it and
    what it imports, collections and functools, cost ~1.5 ms of every command's start.)"""

    __slots__ = ("_lock", "_shared")

    def __init__(self, lock: FileLock, shared: bool):
        self._lock = lock
        self._shared = shared

    def __enter__(self) -> FileLock:
        self._lock.acquire(shared=self._shared)
        return self._lock

    def __exit__(self, *exc) -> None:
        self._lock.release()


def try_lock_path(path: str) -> int | None:
    """Open ``path`` and take an exclusive lock without waiting; fd or None if busy."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
