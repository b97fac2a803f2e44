"""pbox.oci.pgzip: the parallel gzip writer of layer pushes."""

from __future__ import annotations

import gzip
import io
import random
import zlib

import pytest

from pbox.oci import pgzip


def text(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(2, 8))) for _ in range(300)]
    out = b" ".join(rng.choice(words) for _ in range(n // 4))
    return out[:n]


def noise(n: int, seed: int = 2) -> bytes:
    return random.Random(seed).randbytes(n)


def compress(data: bytes, threads: int, piece: int, level: int = 6) -> bytes:
    out = io.BytesIO()
    w = pgzip.ParallelGzipWriter(out, level, threads=threads)
    for i in range(0, len(data), piece):
        w.write(data[i:i + piece])
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, pgzip.BLOCK - 1, pgzip.BLOCK, pgzip.BLOCK + 1,
                                  3 * pgzip.BLOCK + 12345])
def test_round_trip_through_gunzip(size):
    data = (text(size // 2) + noise(size - size // 2))[:size]
    blob = compress(data, threads=2, piece=70_001)
    assert gzip.decompress(blob) == data
    # zlib's gzip reader checks the CRC and the length of the trailer too
    assert zlib.decompress(blob, 31) == data


def test_same_bytes_whatever_the_threads_and_the_write_sizes():
    # deflated (pool) and stored (in line) blocks interleaved: the order must hold
    data = text(2 * pgzip.BLOCK) + noise(pgzip.BLOCK + 999) + text(pgzip.BLOCK, seed=3) + \
        noise(pgzip.BLOCK, seed=4) + text(pgzip.BLOCK // 2, seed=5)
    assert gzip.decompress(compress(data, 2, 300_001)) == data
    blobs = {compress(data, threads, piece)
             for threads, piece in ((1, 4096), (2, 1_000_000), (4, 123_457), (3, len(data)))}
    assert len(blobs) == 1


def test_compressible_blocks_shrink_and_random_blocks_are_stored():
    words = text(2 * pgzip.BLOCK)
    assert len(compress(words, 2, 65536)) < len(words) // 2
    assert not pgzip.incompressible(words[:pgzip.BLOCK])
    rnd = noise(2 * pgzip.BLOCK)
    assert pgzip.incompressible(rnd[:pgzip.BLOCK])
    # stored: the input plus a few bytes of block headers, header and trailer
    assert len(compress(rnd, 2, 65536)) - len(rnd) < 200


def test_stored_block_is_what_level_0_gives():
    rnd = noise(pgzip.BLOCK)
    c = zlib.compressobj(0, zlib.DEFLATED, -15)
    assert pgzip.deflate_block(rnd, 6, last=True) == c.compress(rnd) + c.flush()


def test_header_has_no_name_and_no_time():
    blob = compress(b"hello", 1, 5)
    assert blob[:10] == pgzip.HEADER
    assert blob[4:8] == b"\0\0\0\0"


def test_pending_blocks_stay_few_behind_a_slow_block(monkeypatch):
    # a deflated block that is slow, then many stored ones: the writer waits for the
    # slow one rather than keeping every stored block in memory
    import threading

    gate, waiting = threading.Event(), threading.Event()
    real_deflate, real_result = pgzip._deflate, pgzip._result
    seen = []

    def slow(block, level, last):
        if level:
            gate.wait(60)
        return real_deflate(block, level, last)

    def result(item):
        if not isinstance(item, tuple) and not item.done():
            seen.append(len(w._pending) + 1)  # the item was popped already
            waiting.set()
        return real_result(item)

    monkeypatch.setattr(pgzip, "_deflate", slow)
    monkeypatch.setattr(pgzip, "_result", result)
    out = io.BytesIO()
    w = pgzip.ParallelGzipWriter(out, 6, threads=2)
    w.write(text(pgzip.BLOCK))
    rnd = noise(8 * pgzip.BLOCK)
    feeder = threading.Thread(target=w.write, args=(rnd,))
    feeder.start()
    assert waiting.wait(60)  # the feeder blocks on the slow block...
    assert seen[0] <= 2 * 2 + 1  # ...with only a few blocks held
    gate.set()
    feeder.join(60)
    w.close()
    assert gzip.decompress(out.getvalue()) == text(pgzip.BLOCK) + rnd
