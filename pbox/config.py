"""Where pbox keeps things, and the knobs a command was started with.

A ``Config`` is built once by the CLI from flags and environment and passed down;
library code never reads global mutable configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _default_root() -> str:
    if os.getuid() == 0:
        return "/var/lib/pbox"
    import platformdirs

    return os.path.join(platformdirs.user_data_dir("pbox", appauthor=False))


def _default_runroot() -> str:
    uid = os.getuid()
    if uid == 0:
        return "/run/pbox"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return os.path.join(xdg, "pbox")
    return f"/tmp/pbox-{uid}"


def _default_config_dir() -> str:
    if os.getuid() == 0:
        return "/etc/pbox"
    import platformdirs

    return platformdirs.user_config_dir("pbox", appauthor=False)


def _default_cache_dir() -> str:
    import platformdirs

    return platformdirs.user_cache_dir("pbox", appauthor=False)


@dataclass
class Config:
    """Paths and global options of one pbox invocation.

    ``config_dir`` and ``cache_dir`` are worked out on first use (platformdirs is
    only imported by commands that need them)."""

    root: str = ""
    runroot: str = ""
    _config_dir: str = ""
    _cache_dir: str = ""
    log_level: str = "warning"
    storage_driver: str = ""  # "", "overlay", "fuse-overlayfs", "vfs" (copy)
    extra: dict = field(default_factory=dict)

    @property
    def config_dir(self) -> str:
        if not self._config_dir:
            self._config_dir = os.environ.get("PBOX_CONFIG_DIR") or _default_config_dir()
        return self._config_dir

    @property
    def cache_dir(self) -> str:
        if not self._cache_dir:
            self._cache_dir = os.environ.get("PBOX_CACHE_DIR") or _default_cache_dir()
        return self._cache_dir

    @classmethod
    def from_env(cls, root: str | None = None, runroot: str | None = None,
                 log_level: str | None = None, storage_driver: str | None = None) -> Config:
        env = os.environ
        return cls(
            root=os.path.abspath(root or env.get("PBOX_ROOT") or _default_root()),
            runroot=os.path.abspath(runroot or env.get("PBOX_RUNROOT") or _default_runroot()),
            log_level=(log_level or env.get("PBOX_LOG_LEVEL") or "warning").lower(),
            storage_driver=storage_driver or env.get("PBOX_STORAGE_DRIVER") or "",
        )
