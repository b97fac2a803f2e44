"""Names and sizes of `run`'s options, checked by hand: compared with the regular
expressions they replace (docker's), on generated strings.  Where the two differ, the
hand-written check is the stricter one on purpose: ``$`` let a trailing newline through,
and ``\\d`` took any Unicode digit."""

from __future__ import annotations

import random
import re

import pytest

from pbox import names
from pbox.containers import options, volumes
from pbox.errors import UsageError

NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
CONTAINER = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?", re.I | re.ASCII)
PERCENT = re.compile(r"\d+%", re.ASCII)


def strings(alphabet: str, n: int = 20000, seed: int = 7):
    rnd = random.Random(seed)
    for _ in range(n):
        yield "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 7)))


def test_names_as_docker_checks_them():
    """Of containers, volumes and networks: one check (pbox.names) for the three."""
    for s in strings("aZ09_.-/ \n:é"):
        assert names.is_name(s) == bool(NAME.fullmatch(s)), s
        ok = True
        try:
            volumes.check_name(s)
        except UsageError:
            ok = False
        assert ok == (bool(NAME.fullmatch(s)) and len(s) >= 2), s
        ok = True
        try:
            options.check_name(s)
        except UsageError:
            ok = False
        assert ok == bool(CONTAINER.fullmatch(s)), s
    assert options.check_name("/web") == "web"
    with pytest.raises(UsageError):
        options.check_name("w")  # docker wants two characters at least
    for bad in ("data\n", "x\u0663"):
        assert not names.is_name(bad)


def ref_size(text: str):
    m = SIZE.fullmatch(text.strip())
    if not m:
        return None
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    return int(float(m.group(1)) * mult[m.group(2).lower()])


def test_sizes_as_docker_reads_them():
    for s in strings("0123456789.kmgtpKMGTPibIB x-\t"):
        try:
            got = options.parse_size(s)
        except UsageError:
            got = None
        assert got == ref_size(s), s
    assert options.parse_size("64m") == 64 << 20
    assert options.parse_size(" 1.5 GiB ") == 3 << 29
    assert options.parse_size("512kb") == 512 << 10
    for bad in ("", "k", "1.", ".5", "1kk", "1bi", "\u0663k"):
        with pytest.raises(UsageError):
            options.parse_size(bad)


def test_tmpfs_size_in_percent():
    for s in strings("0123456789%k."):
        percent = options._is_percent(s)
        assert percent == bool(PERCENT.fullmatch(s)), s
    assert options.parse_tmpfs("/t:size=50%,mode=1777") == ("/t", ["size=50%", "mode=1777"])
    with pytest.raises(UsageError):
        options.parse_tmpfs("/t:size=%")


def test_signal_names_as_the_signal_module_knows_them():
    import signal

    for sig in signal.Signals:
        assert options.parse_signal(sig.name) == sig.value
        assert options.parse_signal(sig.name[3:].lower()) == sig.value
    assert options.parse_signal("9") == 9
    for bad in ("SIG_DFL", "IGN", "_BLOCK", "NSIG", "FOO", "0", "65", "", "SIG"):
        with pytest.raises(UsageError):
            options.parse_signal(bad)
