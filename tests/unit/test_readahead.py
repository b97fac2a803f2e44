"""pbox.pull._ReadAhead: the thread that downloads and inflates a layer ahead of the
extracting one.  Its contract: every byte in order, the producer's error at the
consumer's next read, and once ``close()`` returns no read of the stream going on or to
come, whatever the producer was doing (its thread then ends; the kernel may take a
moment to let go of it)."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from pbox.pull import _ReadAhead


class _Noting(io.RawIOBase):
    """A stream that notes the (kernel) id of the thread reading it, how many reads
    were started and how many are going on."""

    def __init__(self, inner):
        self.inner = inner
        self.readers: set[int] = set()
        self.started = self.active = 0

    def readable(self) -> bool:
        return True

    def read(self, n=-1):
        self.readers.add(threading.get_native_id())
        self.started += 1
        self.active += 1
        try:
            return self.inner.read(n)
        finally:
            self.active -= 1


def alive(tids: set[int]) -> set[int]:
    """Which of these threads still exist (other tests' threads do not matter)."""
    return tids & {int(t) for t in os.listdir("/proc/self/task")}


def assert_stopped(src: _Noting) -> None:
    """Right after close(): no read going on, none started later, the thread ends."""
    assert src.readers and src.active == 0
    started = src.started
    deadline = time.monotonic() + 5
    while alive(src.readers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(src.readers) and src.started == started


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
    assert_stopped(src)


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
    assert_stopped(src)
