"""Where pbox keeps things, and the knobs a command was started with.

A ``Config`` is built once by the CLI from flags and environment and passed down;
library code never reads global mutable configuration.
"""

from __future__ import annotations

import os
import sys


def _xdg(var: str, fallback: str, name: str) -> str:
    """The user directory ``name`` of pbox, as platformdirs computes it on Linux
    (``$VAR`` when set and not blank, else ``~/fallback``), without importing it."""
    if sys.platform.startswith("linux"):
        base = os.environ.get(var, "")
        if not base.strip():
            base = os.path.expanduser(fallback)
        return os.path.join(base, "pbox")
    import platformdirs

    return getattr(platformdirs, name)("pbox", appauthor=False)


def _user_uid() -> int:
    """The uid pbox runs for: the user's own, also once the process is uid 0 of pbox's
    user namespace (a command that joined it and then works out a default path must
    still find the user's store, not root's)."""
    uid = os.getuid()
    if uid == 0 and os.environ.get("PBOX_USERNS") == "1":
        try:
            with open("/proc/self/uid_map") as f:
                for line in f:
                    inside, outside, _count = line.split()
                    if inside == "0":
                        return int(outside)
        except (OSError, ValueError):
            pass
    return uid


def _default_root() -> str:
    if _user_uid() == 0:
        return "/var/lib/pbox"
    return _xdg("XDG_DATA_HOME", "~/.local/share", "user_data_dir")


def _default_runroot() -> str:
    uid = _user_uid()
    if uid == 0:
        return "/run/pbox"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return os.path.join(xdg, "pbox")
    return f"/tmp/pbox-{uid}"


def _default_config_dir() -> str:
    if _user_uid() == 0:
        return "/etc/pbox"
    return _xdg("XDG_CONFIG_HOME", "~/.config", "user_config_dir")


def _default_cache_dir() -> str:
    return _xdg("XDG_CACHE_HOME", "~/.cache", "user_cache_dir")


class Config:
    """Paths and global options of one pbox invocation.

    ``config_dir`` and ``cache_dir`` are worked out on first use.  (A plain class, not
    a dataclass: `images` and `ps` would import ``dataclasses``, and with it
    ``inspect``, only for this, ~6 ms of a ~40 ms command.)"""

    _FIELDS = ("root", "runroot", "_config_dir", "_cache_dir", "log_level", "storage_driver",
               "extra")

    def __init__(self, root: str = "", runroot: str = "", _config_dir: str = "",
                 _cache_dir: str = "", log_level: str = "warning", storage_driver: str = "",
                 extra: dict | None = None):
        self.root = root
        self.runroot = runroot
        self._config_dir = _config_dir
        self._cache_dir = _cache_dir
        self.log_level = log_level
        self.storage_driver = storage_driver  # "", "overlay", "fuse-overlayfs", "vfs" (copy)
        self.extra = {} if extra is None else extra

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # mutable, as the dataclass it was

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS) + ")"

    @property
    def config_dir(self) -> str:
        if not self._config_dir:
            self._config_dir = os.environ.get("PBOX_CONFIG_DIR") or _default_config_dir()
        return self._config_dir

    @property
    def registries_conf(self) -> str:
        """The registries.conf pbox reads (short-name search, mirrors, insecure
        registries): ``$PBOX_REGISTRIES_CONF``, else in the config directory."""
        return os.environ.get("PBOX_REGISTRIES_CONF") or os.path.join(self.config_dir,
                                                                       "registries.conf")

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
