"""Finding helper programs (pasta, slirp4netns, newuidmap, sleep, ...) on PATH.

``shutil.which`` would do, but importing shutil pulls in zlib, bz2 and lzma: a few
milliseconds on every ``run``, which looks for its network helper each time.
"""

from __future__ import annotations

import os


def which(program: str, path: str | None = None) -> str | None:
    """The first executable regular file named ``program`` on ``path`` (default: $PATH,
    or the POSIX default when unset); ``program`` with a slash is checked as is."""
    if "/" in program:
        return program if _executable(program) else None
    if path is None:
        path = os.environ.get("PATH", os.defpath)
    for d in path.split(os.pathsep):
        candidate = os.path.join(d or ".", program)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)
