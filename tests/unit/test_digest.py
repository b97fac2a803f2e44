from __future__ import annotations

import hashlib
import io
import os

import pytest

from pbox.errors import DigestMismatch, InvalidReference
from pbox.oci import digest, nativesha

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATA = b"hello world\n" * 1000
GOOD = "sha256:" + hashlib.sha256(DATA).hexdigest()


class Trickle(io.RawIOBase):
    """Hands out at most ``step`` bytes a read, like a socket does."""

    def __init__(self, data: bytes, step: int = 7):
        self._b = io.BytesIO(data)
        self._step = step

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            return self._b.read()
        return self._b.read(min(n, self._step))


def test_parse_and_validate():
    assert digest.parse(GOOD) == ("sha256", GOOD[7:])
    sha512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert digest.validate(sha512) == sha512
    assert digest.hex_of(GOOD) == GOOD[7:]
    assert digest.algorithm_of(sha512) == "sha512"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha256:" + "a" * 63 + "\n",  # a regular expression's $ let this one through
        "md5:" + "a" * 32,
        "sha512:" + "a" * 64,
        None,
    ],
)
def test_invalid(bad):
    with pytest.raises(InvalidReference):
        digest.parse(bad)
    assert not digest.is_digest(bad)


def test_compute():
    assert digest.compute(DATA) == GOOD
    assert digest.compute_file(io.BytesIO(DATA)) == (GOOD, len(DATA))


@pytest.mark.parametrize("size", [0, 1, 55, 56, 64, 1000, digest.SMALL, digest.SMALL + 1])
def test_compute_small_and_large_agree_with_hashlib(size, monkeypatch):
    """Small data goes through CPython's own sha256 until OpenSSL's is loaded."""
    import hashlib
    import random

    data = random.Random(size).randbytes(size)
    want = "sha256:" + hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(digest, "_new", None)  # as in a new process
    assert digest.compute(data) == want
    assert digest._builtin_sha256() is not None  # (the path under test exists here)
    digest.preload()
    assert digest.compute(data) == want


def test_a_small_blob_of_known_size_is_verified_without_a_library():
    """A config (a pull's second answer) is checked by CPython's own sha256: the
    library is loaded while the layer's answer is awaited instead (pbox.pull)."""
    import subprocess
    import sys

    sizes = (300, digest.SMALL, digest.SMALL + 1)
    code = """if True:
        import io, sys
        from pbox.oci import digest
        for arg in sys.argv[1:]:
            size, good = int(arg.split("=")[0]), arg.split("=")[1]
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            r = digest.VerifyingReader(io.BytesIO(data), good, size)
            r.finish()
            print(size, r.verified, digest._new is not None)  # a library loaded?
            bad = digest.VerifyingReader(io.BytesIO(data[:-1] + b"!"), good, size)
            try:
                bad.finish()
            except Exception as e:
                print(type(e).__name__)
    """
    args = []
    for size in sizes:
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        args.append(f"{size}=sha256:{hashlib.sha256(data).hexdigest()}")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                         text=True, check=True, cwd=REPO_ROOT).stdout.split()
    assert out == ["300", "True", "False", "DigestMismatch",
                   str(digest.SMALL), "True", "False", "DigestMismatch",
                   str(digest.SMALL + 1), "True", "True", "DigestMismatch"]


def test_hashing_reader_tees():
    r = digest.HashingReader(Trickle(DATA))
    out = b""
    while True:
        chunk = r.read(100)
        if not chunk:
            break
        out += chunk
    assert out == DATA
    assert r.digest() == GOOD and r.size == len(DATA)


def test_hashing_reader_finish_reads_the_rest():
    r = digest.HashingReader(io.BytesIO(DATA))
    r.read(10)
    assert r.finish() == GOOD


def test_verifying_reader_accepts_good_content():
    r = digest.VerifyingReader(Trickle(DATA, 1000), GOOD, len(DATA))
    assert r.read() == DATA
    assert r.verified


def test_verifying_reader_in_buffered_reader():
    r = io.BufferedReader(digest.VerifyingReader(Trickle(DATA, 333), GOOD))
    assert r.read() == DATA


def test_verifying_reader_raises_at_eof():
    bad = DATA[:-1] + b"X"
    r = digest.VerifyingReader(io.BytesIO(bad), GOOD)
    assert r.read(len(bad)) == bad  # all content delivered; the end is where it fails
    with pytest.raises(DigestMismatch) as e:
        r.read(10)
    assert GOOD in str(e.value)


def test_verifying_reader_size_overrun():
    r = digest.VerifyingReader(io.BytesIO(DATA + b"more"), GOOD, len(DATA))
    with pytest.raises(DigestMismatch) as e:
        r.read()
    assert "more than" in str(e.value)


def test_verifying_reader_short_content():
    r = digest.VerifyingReader(io.BytesIO(DATA[:100]), GOOD, len(DATA))
    with pytest.raises(DigestMismatch) as e:
        r.read()
    assert "size 100" in str(e.value)


def test_verifying_reader_finish():
    r = digest.VerifyingReader(io.BytesIO(DATA), GOOD)
    r.read(5)
    assert not r.verified
    assert r.finish() == GOOD and r.verified
    bad = digest.VerifyingReader(io.BytesIO(b"x"), GOOD)
    with pytest.raises(DigestMismatch):
        bad.finish()


def test_deferred_hashing_is_checked_by_finish_not_at_the_end():
    bad = DATA[:-1] + b"X"
    r = digest.VerifyingReader(Trickle(bad, 1000), GOOD, len(DATA))
    r.defer()
    assert r.read() == bad  # the end passes: nothing is hashed yet
    assert not r.verified
    with pytest.raises(DigestMismatch) as e:
        r.finish()
    assert GOOD in str(e.value)


def test_deferred_hashing_from_another_thread_keeps_the_order():
    import threading

    data = os.urandom(1 << 20)
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    r = digest.VerifyingReader(Trickle(data, 4096), good, len(data))
    r.defer()
    done = threading.Event()

    def hasher():  # the consumer's side: hashes while the reader goes on
        while not done.is_set():
            r.catch_up()
        r.catch_up()

    t = threading.Thread(target=hasher)
    t.start()
    try:
        while r.read(4096):
            pass
    finally:
        done.set()
        t.join()
    assert r.size == len(data) and not r._pending
    assert r.finish() == good and r.verified


def test_deferred_hashing_still_refuses_an_overrun_at_once():
    r = digest.VerifyingReader(io.BytesIO(DATA + b"more"), GOOD, len(DATA))
    r.defer()
    with pytest.raises(DigestMismatch) as e:
        r.read()
    assert "more than" in str(e.value)


def test_verifying_reader_closes_wrapped():
    inner = io.BytesIO(DATA)
    r = digest.VerifyingReader(inner, GOOD)
    r.close()
    assert inner.closed


def test_hashing_writer():
    out = io.BytesIO()
    w = digest.HashingWriter(out)
    for i in range(0, len(DATA), 1000):
        w.write(memoryview(DATA)[i : i + 1000])
    assert out.getvalue() == DATA
    assert w.digest() == GOOD and w.size == len(DATA)
    assert digest.HashingWriter().write(b"abc") == 3


class NoClose:
    """A reader with nothing but ``read`` (progress counters and the like)."""

    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)

    def read(self, n=-1):
        return self._b.read(n)


def test_wrapping_a_reader_without_close():
    r = digest.VerifyingReader(NoClose(DATA), GOOD)
    assert r.read() == DATA
    r.close()
    assert r.closed


def _check_agrees_with_hashlib(cls, monkeypatch):
    """A hash class of nativesha against hashlib: any chunking, bytes-like inputs, a
    digest asked for twice or in the middle, data longer than one C call takes."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    h = cls()
    h.update(data[:1])
    assert h.hexdigest() == hashlib.sha256(data[:1]).hexdigest()
    h.update(memoryview(data)[1:1000])
    h.update(bytearray(data[1000:70000]))
    h.update(data[70000:])
    want = hashlib.sha256(data).hexdigest()
    assert h.hexdigest() == want and h.hexdigest() == want
    assert h.digest() == hashlib.sha256(data).digest()
    assert cls().hexdigest() == hashlib.sha256(b"").hexdigest()
    with monkeypatch.context() as m:
        m.setattr(nativesha, "_MAX_UPDATE", 1000)
        h = cls()
        h.update(data[:3500])
        h.update(memoryview(data)[3500:7000])
        assert h.hexdigest() == hashlib.sha256(data[:7000]).hexdigest()


def _bound(name):
    """The hash class of one entry of nativesha.LIBRARIES, loaded on its own."""
    import _ctypes

    binder = dict(nativesha.LIBRARIES)[name]
    return binder(_ctypes, _ctypes.dlopen(name, os.RTLD_NOW))


def test_big_data_is_hashed_by_libgcrypt_first(monkeypatch):
    """libgcrypt's sha256 (through _ctypes) is the first choice for big data (it loads
    in a fraction of libcrypto's time); the other algorithms come from hashlib."""
    assert nativesha.load() is not None  # (the path under test exists here)
    assert nativesha.LIBRARIES[0][0] == "libgcrypt.so.20"
    h = digest.new_hasher("sha256")
    assert type(h).__name__ == "GcryptSha256"
    assert isinstance(h, nativesha.load())
    _check_agrees_with_hashlib(nativesha.load(), monkeypatch)
    assert digest.new_hasher("sha512").hexdigest() == hashlib.sha512(b"").hexdigest()


def test_libcrypto_sha256_agrees_with_hashlib(monkeypatch):
    """The next choice, libcrypto's, on its own."""
    cls = _bound("libcrypto.so.3")
    assert cls.__name__ == "LibcryptoSha256"
    _check_agrees_with_hashlib(cls, monkeypatch)


def test_a_gcrypt_handle_is_closed_with_its_object():
    """Each hash object holds a libgcrypt handle, and a digest a copy of it: both are
    closed (the copy at once, the handle with its object), and only once."""
    cls = _bound("libgcrypt.so.20")
    code = cls.__del__.__code__
    cell = dict(zip(code.co_freevars, cls.__del__.__closure__))["md_close"]
    real, closed = cell.cell_contents, []

    def counting(h):
        closed.append(h.value)
        real(h)

    cell.cell_contents = counting  # (the same cell as digest()'s)
    try:
        h = cls()
        handle = h._h.value
        h.update(b"x" * 100)
        assert h.hexdigest() == hashlib.sha256(b"x" * 100).hexdigest()
        assert len(closed) == 1 and closed[0] != handle  # the copy
        del h
        assert closed[1:] == [handle]
    finally:
        cell.cell_contents = real


def test_without_a_library_hashlib_hashes(monkeypatch):
    """Neither library to be found (or a wrong answer to the test hash): hashlib's
    sha256; libgcrypt missing alone: libcrypto's."""
    import subprocess
    import sys

    code = """if True:
        import hashlib, sys
        from pbox.oci import digest, nativesha
        nativesha.LIBRARIES = tuple((n, b) for n, b in nativesha.LIBRARIES
                                    if n not in sys.argv[1:])
        h = digest.new_hasher("sha256")
        h.update(b"x" * 100000)
        print(type(h).__name__, h.hexdigest() == hashlib.sha256(b"x" * 100000).hexdigest())
    """
    names = [n for n, _ in nativesha.LIBRARIES]
    for gone, used in ((names, "HASH"), (names[:1], "LibcryptoSha256")):
        out = subprocess.run([sys.executable, "-c", code, *gone], capture_output=True,
                             text=True, check=True, cwd=REPO_ROOT).stdout.split()
        assert out == [used, "True"], gone
    # a library whose test hash comes out wrong is not used either
    monkeypatch.setattr(nativesha, "_FOUND", [])
    monkeypatch.setattr(nativesha, "_ABC", "0" * 64)
    assert nativesha.load() is None


def test_cpython_own_sha256_is_imported_without_a_failed_try(monkeypatch):
    """``_sha2`` (3.12 and later) or ``_sha256`` (before): the one this Python has is
    asked for first, since a failed import searches every path entry (~80 us)."""
    import sys

    asked = []

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            asked.append(name)

    monkeypatch.setattr(sys, "meta_path", [Recorder(), *sys.meta_path])
    monkeypatch.setattr(digest, "_SMALL_SHA256", [])
    for name in ("_sha2", "_sha256"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert digest._builtin_sha256() is not None
    assert asked == ["_sha256" if sys.version_info < (3, 12) else "_sha2"]
