"""Loggers that import ``logging`` only for a record that is going to be written.

``import logging`` costs ~5 ms (it brings ``traceback``, ``tokenize``, ``string``...),
and the registry, store and layer modules log only at debug level: at the default
level a pull or push writes no record at all.  ``get_logger(name)`` returns a stand-in
with ``debug``/``info``/``warning``/``error``: once the program has set the level
(``set_level``, from ``pbox.commands.fast.configure_logging``), a call below it
returns at once; any other call goes to ``logging.getLogger(name)``, which the program
configured as it was imported.  Used as a library (no ``set_level``), every call goes
to ``logging`` as usual.
"""

from __future__ import annotations

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_threshold: int | None = None


def set_level(name: str) -> None:
    """The level the program logs at (a name of ``_LEVELS``; unknown: warning)."""
    global _threshold
    _threshold = _LEVELS.get(name.lower(), 30)


class Logger:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def _log(self, level: int, msg, args, kwargs) -> None:
        if _threshold is not None and level < _threshold:
            return
        import logging

        kwargs.setdefault("stacklevel", 3)  # the caller of debug(), not this module
        logging.getLogger(self.name).log(level, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        if _threshold is not None:
            return level >= _threshold
        import logging

        return logging.getLogger(self.name).isEnabledFor(level)

    def debug(self, msg, *args, **kwargs) -> None:
        self._log(10, msg, args, kwargs)

    def info(self, msg, *args, **kwargs) -> None:
        self._log(20, msg, args, kwargs)

    def warning(self, msg, *args, **kwargs) -> None:
        self._log(30, msg, args, kwargs)

    def error(self, msg, *args, **kwargs) -> None:
        self._log(40, msg, args, kwargs)


def get_logger(name: str) -> Logger:
    return Logger(name)
