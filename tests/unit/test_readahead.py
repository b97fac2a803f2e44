"""pbox.images._ReadAhead: the thread that downloads and inflates a layer ahead of the
extracting one.  Its contract: every byte in order, the producer's error at the
consumer's next read, and no thread left once ``close()`` returns, whatever the
producer was doing."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from pbox.images import _ReadAhead


class _Noting(io.RawIOBase):
    """A stream that notes the (kernel) id of the thread reading it."""

    def __init__(self, inner):
        self.inner = inner
        self.readers: set[int] = set()

    def readable(self) -> bool:
        return True

    def read(self, n=-1):
        self.readers.add(threading.get_native_id())
        return self.inner.read(n)


def alive(tids: set[int]) -> set[int]:
    """Which of these threads still exist (other tests' threads do not matter)."""
    return tids & {int(t) for t in os.listdir("/proc/self/task")}


def test_every_byte_in_order_in_bounded_reads():
    data = os.urandom(300_000)
    ra = _ReadAhead(io.BytesIO(data), chunk=4096, depth=2)
    got = []
    while True:
        b = ra.read(5000)
        assert len(b) <= 4096  # at most one producer chunk a read
        if not b:
            break
        got.append(b)
    ra.close()
    assert b"".join(got) == data
    ra = _ReadAhead(io.BytesIO(data), chunk=4096)
    assert ra.read(10) == data[:10] and ra.read() == data[10:] and ra.read(1) == b""
    ra.close()


def test_the_producers_error_reaches_the_consumer():
    class Breaks(io.RawIOBase):
        def __init__(self):
            self.n = 0

        def read(self, n=-1):
            self.n += 1
            if self.n > 3:
                raise ValueError("inflating failed")
            return b"x" * 10

    ra = _ReadAhead(Breaks(), chunk=10)
    with pytest.raises(ValueError, match="inflating failed"):
        while ra.read(100):
            pass
    ra.close()


def test_close_stops_a_producer_waiting_for_room():
    src = _Noting(io.BytesIO(b"y" * 1_000_000))
    ra = _ReadAhead(src, chunk=1000, depth=2)
    assert ra.read(10) == b"y" * 10
    time.sleep(0.05)  # the producer fills the queue and waits
    ra.close()
    assert src.readers and not alive(src.readers)


def test_close_waits_for_a_producer_in_a_slow_read():
    """An extraction that fails mid-layer closes the read-ahead while its thread is in
    the middle of a download: close returns once that thread has finished."""
    started = threading.Event()

    class Slow(io.RawIOBase):
        def read(self, n=-1):
            started.set()
            time.sleep(0.3)
            return b"z" * 10

    src = _Noting(Slow())
    ra = _ReadAhead(src, chunk=10, depth=1)
    started.wait(5)
    ra.close()
    assert src.readers and not alive(src.readers)
