"""gzip for layer pushes: blocks compressed in parallel, incompressible blocks stored.

The output is one ordinary gzip member (any gunzip reads it) and depends only on the
input bytes and the level, never on the number of threads or on how the input was cut
into ``write`` calls, so the same layer always gets the same digest:

* the input is cut into blocks of ``BLOCK`` bytes; each block is deflated on its own
  (raw deflate, ``wbits=-15``) and ended with a sync flush, which leaves the stream
  byte-aligned, so the blocks' outputs joined make one deflate stream (what ``pigz``
  does); the last block is ended with ``Z_FINISH``.  A block does not see the one
  before it as a dictionary: a little larger output, but blocks are independent.
* zlib releases the GIL while it deflates, so the blocks of a layer are compressed on
  all the cores, in a small thread pool, and written in order.
* a block whose sample (a few slices spread over the block, deflated at level 1)
  does not shrink is stored (level 0) instead: random or already-compressed data costs
  a copy instead of a full deflate search (zlib spends ~60 ms per MiB failing to
  compress random bytes).  Stored blocks are made in the writing thread (a copy is
  not worth a hand-off to the pool); only blocks worth deflating go to the pool.
* the header is fixed (no name, mtime 0, OS "unix" as zlib writes it), the trailer is
  the CRC-32 and length of all the input.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from typing import BinaryIO

BLOCK = 1024 * 1024
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
SAMPLE_SLICES = 4
SAMPLE_SLICE = 8 * 1024
STORE_RATIO = 0.97  # a sample that deflates to more than this is stored


def incompressible(block: bytes) -> bool:
    """Whether deflating ``block`` would not pay (its sample does not shrink)."""
    n = len(block)
    if n < SAMPLE_SLICES * SAMPLE_SLICE * 2:
        return False
    step = n // SAMPLE_SLICES
    sample = b"".join(block[i * step: i * step + SAMPLE_SLICE] for i in range(SAMPLE_SLICES))
    return len(zlib.compress(sample, 1)) > STORE_RATIO * len(sample)


def deflate_block(block: bytes, level: int, last: bool) -> bytes:
    """Raw deflate of one block, byte-aligned at its end (final when ``last``)."""
    if level != 0 and incompressible(block):
        level = 0
    return b"".join(_deflate(block, level, last))


def _deflate(block: bytes, level: int, last: bool) -> tuple[bytes, bytes]:
    """The deflated block in two pieces (written one after the other: joining them
    would copy a stored megabyte once more)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(block), c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class ParallelGzipWriter(io.RawIOBase):
    """A write-only file: gzip of what is written goes to ``out`` (left open)."""

    def __init__(self, out: BinaryIO, level: int = 6, threads: int | None = None):
        super().__init__()
        self._out = out
        self._level = level
        self._threads = threads or default_threads()
        self._pool = None
        self._pending: deque = deque()  # futures (or bytes) of blocks not yet written
        # what was written and is not in a block yet: views of immutable bytes (a
        # mutable buffer written is copied), so a block is cut out of a large write
        # without copying it
        self._pieces: deque = deque()
        self._buffered = 0
        self._crc = 0
        self._size = 0
        self._out.write(HEADER)

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        view = memoryview(b if type(b) is bytes else bytes(b)).cast("B")
        n = len(view)
        if not n:
            return 0
        self._pieces.append(view)
        self._buffered += n
        while self._buffered > BLOCK:  # keep the last block back: it may be the final one
            self._submit(self._take(BLOCK), last=False)
        return n

    def _take(self, size: int):
        """The next ``size`` bytes written (a view when one write holds them all)."""
        pieces = self._pieces
        self._buffered -= size
        first = pieces[0]
        if len(first) >= size:
            if len(first) == size:
                pieces.popleft()
            else:
                pieces[0] = first[size:]
            return first[:size]
        parts = []
        while size:
            piece = pieces[0]
            if len(piece) <= size:
                parts.append(pieces.popleft())
                size -= len(piece)
            else:
                parts.append(piece[:size])
                pieces[0] = piece[size:]
                size = 0
        return b"".join(parts)

    def _submit(self, block: bytes, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        level = self._level
        if level != 0 and incompressible(block):
            level = 0
        if self._threads <= 1 or level == 0:
            # a stored block is a copy: no thread hand-off for it
            data = _deflate(block, level, last)
            if not self._pending:
                self._write(data)
                return
            self._pending.append(data)  # after the blocks still in the pool
            self._drain()
            return
        if self._pool is None:
            from pbox.threads import Pool

            self._pool = Pool(self._threads, "pgzip")
        self._pending.append(self._pool.submit(_deflate, block, level, last))
        self._drain()

    def _write(self, pieces: tuple) -> None:
        for piece in pieces:
            if piece:
                self._out.write(piece)

    def _drain(self) -> None:
        """Write the finished blocks at the head; wait when too many are pending (the
        memory held is bounded by a few blocks)."""
        pending = self._pending
        while pending and (len(pending) > 2 * self._threads or isinstance(pending[0], tuple)
                           or pending[0].done()):
            self._write(_result(pending.popleft()))

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._submit(b"".join(self._pieces), last=True)
            self._pieces.clear()
            self._buffered = 0
            while self._pending:
                self._write(_result(self._pending.popleft()))
            self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self._shutdown()
            super().close()

    def abort(self) -> None:
        """Stop without finishing the stream (after an error upstream)."""
        self._pending.clear()
        self._shutdown()
        io.RawIOBase.close(self)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel=True)
            self._pool = None


def _result(item) -> tuple:
    """A pending block: pieces made in line, or a future of the pool."""
    return item if isinstance(item, tuple) else item.result()
