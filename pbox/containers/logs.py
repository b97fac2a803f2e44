"""Container logs in docker's json-file format: one JSON object per line,
``{"log": "text\\n", "stream": "stdout", "time": "2024-01-02T03:04:05.123456789Z"}``."""

from __future__ import annotations

import os
import time

from pbox import jsonio as json

# pbox.humanize (and with it datetime) is imported where used: stop and rm import
# this module with the lifecycle code but write no log.


class LogWriter:
    """Splits each stream into lines and appends them with a timestamp."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial.get(stream, b"") + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        if lines:
            from pbox import humanize
            now = humanize.rfc3339(time.time())
            out = b"".join(self._line(stream, ln + b"\n", now) for ln in lines)
            os.write(self.fd, out)

    def flush(self) -> None:
        from pbox import humanize
        now = humanize.rfc3339(time.time())
        for stream, rest in list(self.partial.items()):
            if rest:
                os.write(self.fd, self._line(stream, rest, now))
        self.partial.clear()

    @staticmethod
    def _line(stream: str, data: bytes, now: str) -> bytes:
        return (json.dumps({"log": data.decode("utf-8", "replace"), "stream": stream,
                            "time": now}, ensure_ascii=False) + "\n").encode()

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def parse_time(text: str, now: float | None = None) -> float:
    """--since/--until: a UNIX time, an RFC 3339 time, or a duration like 10m, 1h30m."""
    import re

    now = time.time() if now is None else now
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    m = re.fullmatch(r"((\d+(\.\d+)?)(ns|us|ms|s|m|h))+", t)
    if m:
        total = 0.0
        for num, _, unit in re.findall(r"(\d+(\.\d+)?)(ns|us|ms|s|m|h)", t):
            total += float(num) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60,
                                   "h": 3600}[unit]
        return now - total
    from pbox import humanize
    ts = humanize.parse_rfc3339(t if "T" in t else t + "T00:00:00Z")
    if not ts:
        from pbox.errors import UsageError

        raise UsageError(f"invalid time {text!r}: use a duration (10m), RFC 3339 or a "
                         f"UNIX time")
    return ts


def read_entries(path: str, *, since: float | None = None, until: float | None = None,
                 tail: int | None = None, offset: int = 0):
    """(entries, next offset): entries are (stream, text, time string)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = offset + len(data)
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        end = offset + cut
        data = data[:cut]
    out = []
    for line in data.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if since is not None or until is not None:
            from pbox import humanize
            ts = humanize.parse_rfc3339(e.get("time", ""))
            if since is not None and ts < since:
                continue
            if until is not None and ts > until:
                continue
        out.append((e.get("stream", "stdout"), e.get("log", ""), e.get("time", "")))
    if tail is not None and tail >= 0:
        out = out[-tail:] if tail else []
    return out, end
