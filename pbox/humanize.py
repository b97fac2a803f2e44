"""Docker's ways of printing sizes, durations and times (go-units), as pure functions."""

from __future__ import annotations

import time

_DECIMAL = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
_BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]


def _go_g(value: float, precision: int) -> str:
    # Go's %.Ng matches C's for these magnitudes.
    return f"{value:.{precision}g}"


def human_size(size: float, precision: int = 3) -> str:
    """``units.HumanSizeWithPrecision``: 4261550 -> '4.26MB'."""
    i = 0
    while size >= 1000.0 and i < len(_DECIMAL) - 1:
        size /= 1000.0
        i += 1
    return _go_g(size, precision) + _DECIMAL[i]


def bytes_size(size: float) -> str:
    """``units.BytesSize``: binary units, 4 significant digits: '1.5MiB'."""
    i = 0
    while size >= 1024.0 and i < len(_BINARY) - 1:
        size /= 1024.0
        i += 1
    return _go_g(size, 4) + _BINARY[i]


def human_duration(seconds: float) -> str:
    """``units.HumanDuration``: 'Less than a second', '3 seconds', 'About an hour'..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since(timestamp: float, now: float | None = None) -> str:
    """'2 minutes ago' for a past UNIX time."""
    now = time.time() if now is None else now
    return human_duration(max(0.0, now - timestamp)) + " ago"


def parse_rfc3339(text: str) -> float:
    """RFC 3339 (with nanoseconds, Z or offset) -> UNIX time; 0.0 when empty/bad."""
    if not text:
        return 0.0
    t = text.strip()
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    # Python < 3.11 takes at most 6 fractional digits.
    if "." in t:
        head, _, rest = t.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        t = head + "." + (frac[:6] or "0") + rest[i:]
    try:
        import datetime

        return datetime.datetime.fromisoformat(t).timestamp()
    except ValueError:
        return 0.0


def rfc3339(ts: float, nanos: bool = True) -> str:
    """UNIX time -> '2024-01-02T03:04:05.123456789Z' (docker's form).

    Through ``time`` rather than ``datetime`` (whose import is ~1.5 ms of every
    ``run``, which stamps the container it creates)."""
    seconds = int(ts // 1)
    day = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if not nanos:
        return day + "Z"
    frac = f"{ts - seconds:.9f}"[2:].rstrip("0")
    if frac.startswith("."):  # a fraction that rounded up to a whole second
        return rfc3339(seconds + 1, nanos)
    return day + (f".{frac}" if frac else "") + "Z"


def local_time(ts: float) -> str:
    """'2024-01-02 03:04:05 +0000 UTC' as Go prints a time.Time."""
    import datetime

    d = datetime.datetime.fromtimestamp(ts).astimezone()
    return d.strftime("%Y-%m-%d %H:%M:%S %z ") + (d.tzname() or "")
