from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from pbox.errors import DigestMismatch, UnsupportedFormat
from pbox.oci import compression as c
from pbox.oci import mediatypes as mt
from pbox.oci.digest import VerifyingReader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Compressible but not trivial: a few MiB so that every buffer boundary is crossed.
DATA = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() * 3 for i in range(40000))
needs_zstd_program = pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd program")


class Trickle(io.RawIOBase):
    def __init__(self, data: bytes, step: int = 4093):
        self._b = io.BytesIO(data)
        self._step = step

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            return self._b.read()
        return self._b.read(min(n, self._step))


def read_in_pieces(f, n=10240) -> bytes:
    out = []
    while True:
        chunk = f.read(n)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """The gzip tests run with each inflater (isal where it is installed)."""
    if request.param == "isal":
        pytest.importorskip("isal")
        monkeypatch.delenv("PBOX_INFLATE", raising=False)
    else:
        monkeypatch.setenv("PBOX_INFLATE", "zlib")
    monkeypatch.setattr(c, "_FAST_ZLIB", None)
    assert c.inflater_name() == request.param
    return request.param


def test_isal_zlib_is_imported_without_the_package_init():
    """isal's ``__init__`` loads a third compiled module (``_isal``) for version
    numbers: pbox imports ``isal.isal_zlib`` without it, and inflates with it; with no
    isal to be found, zlib does the work and nothing is left in ``sys.modules``."""
    pytest.importorskip("isal")
    code = textwrap.dedent("""
        import sys, gzip
        from pbox.oci import compression as c
        if sys.argv[1] == "gone":
            sys.path[:] = [p for p in sys.path if "site-packages" not in p]
        z = c.fast_zlib()
        print(z.__name__, "isal._isal" in sys.modules, "isal" in sys.modules,
              c.decompress(__import__("io").BytesIO(gzip.compress(b"x" * 9)), "gzip").read())
    """)
    for case, want in (("here", "isal.isal_zlib False True b'xxxxxxxxx'"),
                       ("gone", "zlib False False b'xxxxxxxxx'")):
        out = subprocess.run([sys.executable, "-c", code, case], capture_output=True,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == want, case


def test_media_type_registry():
    assert c.for_media_type(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert c.for_media_type(mt.DOCKER_FOREIGN_LAYER_GZIP) == "gzip"
    assert c.for_media_type(mt.OCI_LAYER_ZSTD) == "zstd"
    assert c.for_media_type(mt.OCI_LAYER) is None
    assert c.for_media_type(mt.OCI_NONDISTRIBUTABLE_LAYER_GZIP) == "gzip"
    with pytest.raises(UnsupportedFormat):
        c.for_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
    with pytest.raises(UnsupportedFormat):
        c.for_media_type("application/octet-stream")


def test_gzip_single_member(inflater):
    blob = gzip.compress(DATA)
    out = read_in_pieces(c.decompress_media_type(Trickle(blob), mt.OCI_LAYER_GZIP))
    assert out == DATA


def test_gzip_concatenated_members_and_padding(inflater):
    blob = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]) + b"\0" * 1024
    assert read_in_pieces(c.decompress(Trickle(blob, 100), "gzip"), 777) == DATA
    assert c.decompress(io.BytesIO(blob), "gzip").read() == DATA


def test_gzip_reads_return_at_most_size_and_end_once(inflater):
    blob = gzip.compress(DATA[:5000]) + b"\0" * 3 + gzip.compress(DATA[5000:])
    r = c.decompress(io.BytesIO(blob), "gzip")
    sizes = [1, 4096, 1 << 20, 3]
    out = []
    for i in range(10**6):
        n = sizes[i % len(sizes)]
        chunk = r.read(n)
        assert len(chunk) <= n
        if not chunk:
            break
        out.append(chunk)
    assert b"".join(out) == DATA
    assert r.read(10) == b""


def test_gzip_truncated(inflater):
    blob = gzip.compress(DATA)
    r = c.decompress(io.BytesIO(blob[: len(blob) // 2]), "gzip")
    with pytest.raises(c.CompressionError) as e:
        read_in_pieces(r)
    assert "truncated" in str(e.value)


def test_gzip_garbage(inflater):
    with pytest.raises(c.CompressionError):
        c.decompress(io.BytesIO(b"this is not gzip at all"), "gzip").read()
    with pytest.raises(c.CompressionError):
        c.decompress(io.BytesIO(b""), "gzip").read()


def test_gzip_corrupt_in_the_middle(inflater):
    blob = bytearray(gzip.compress(DATA))
    for i in range(len(blob) // 2, len(blob) // 2 + 64):
        blob[i] ^= 0x5A
    with pytest.raises((c.CompressionError, DigestMismatch)):
        read_in_pieces(c.decompress(io.BytesIO(bytes(blob)), "gzip"))


def test_gzip_compressor_is_deterministic_and_standard():
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        c.compress_file(io.BytesIO(DATA), buf, "gzip")
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert outs[0][4:8] == b"\0\0\0\0"  # mtime 0
    assert outs[0][3] & 0x08 == 0  # no FNAME
    assert gzip.decompress(outs[0]) == DATA


def test_none_passes_through():
    assert c.decompress(io.BytesIO(b"tar"), None).read() == b"tar"
    buf = io.BytesIO()
    w = c.compressor(buf, None)
    w.write(b"abc")
    w.close()
    assert buf.getvalue() == b"abc" and not buf.closed


def zstd_compress(data: bytes, **kw) -> bytes:
    buf = io.BytesIO()
    c.compress_file(io.BytesIO(data), buf, "zstd", **kw)
    return buf.getvalue()


class Recording(io.RawIOBase):
    """A source that notes the size of every read asked of it."""

    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)
        self.asked: list = []

    def readable(self):
        return True

    def read(self, n=-1):
        self.asked.append(n)
        return self._b.read(n)


@pytest.mark.parametrize("algorithm", ["gzip", "zstd"])
def test_the_source_is_read_in_pieces_of_the_read_size(algorithm, inflater):
    """A small layer's pull reads its blob 64 KiB at a time (``pbox.pull``): the
    decompressors ask for no more, and give the same data, members and frames
    included; by default they read 1 MiB at once."""
    if algorithm == "zstd":
        pytest.importorskip("zstandard")
        blob = zstd_compress(DATA[:5000]) + zstd_compress(DATA[5000:])
    else:
        blob = gzip.compress(DATA[:5000]) + b"\0" * 3 + gzip.compress(DATA[5000:])
    src = Recording(blob)
    assert read_in_pieces(c.decompress(src, algorithm, 4096), 1 << 18) == DATA
    assert src.asked and max(src.asked) == 4096
    src = Recording(blob)
    assert read_in_pieces(c.decompress(src, algorithm), 1 << 18) == DATA
    assert max(src.asked) == 1 << 20


def test_zstd_round_trip_module():
    blob = zstd_compress(DATA)
    assert blob.startswith(c.ZSTD_MAGIC)
    assert zstd_compress(DATA) == blob
    out = read_in_pieces(c.decompress_media_type(Trickle(blob), mt.OCI_LAYER_ZSTD))
    assert out == DATA


def test_zstd_multiple_frames():
    blob = zstd_compress(DATA[:5000]) + zstd_compress(DATA[5000:])
    assert read_in_pieces(c.decompress(io.BytesIO(blob), "zstd")) == DATA


def test_zstd_garbage():
    with pytest.raises(c.CompressionError):
        c.decompress(io.BytesIO(c.ZSTD_MAGIC + b"\xff" * 64), "zstd").read()


@needs_zstd_program
def test_zstd_program_fallback_decompress():
    blob = zstd_compress(DATA[:5000]) + zstd_compress(DATA[5000:])
    r = c._decompress_zstd(Trickle(blob), use_module=False)
    assert read_in_pieces(r) == DATA
    r.close()


@needs_zstd_program
def test_zstd_program_fallback_compress():
    buf = io.BytesIO()
    w = c.compressor(buf, "zstd", use_module=False)
    for i in range(0, len(DATA), 65536):
        w.write(DATA[i : i + 65536])
    w.close()
    assert c.decompress(io.BytesIO(buf.getvalue()), "zstd").read() == DATA


@needs_zstd_program
def test_zstd_program_reports_errors():
    r = c._decompress_zstd(io.BytesIO(c.ZSTD_MAGIC + b"\xff" * 64), use_module=False)
    with pytest.raises(c.CompressionError) as e:
        read_in_pieces(r)
    assert "zstd decompression failed" in str(e.value)


@needs_zstd_program
def test_zstd_program_passes_on_errors_of_the_source():
    blob = zstd_compress(DATA)
    wrong = "sha256:" + "0" * 64
    r = c._decompress_zstd(VerifyingReader(io.BytesIO(blob), wrong), use_module=False)
    with pytest.raises(DigestMismatch):
        read_in_pieces(r)


@needs_zstd_program
def test_zstd_program_early_close_does_not_hang():
    r = c._decompress_zstd(io.BytesIO(zstd_compress(DATA)), use_module=False)
    assert r.read(10) == DATA[:10]
    r.close()


def run_without_zstandard(code: str, path: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python where ``import zstandard`` fails, as in a bare .pyz."""
    prelude = "import sys; sys.modules['zstandard'] = None\n"
    env = dict(os.environ, PYTHONPATH=REPO, PATH=path)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_zstd_program
def test_without_zstandard_module_the_program_is_used(tmp_path):
    blob = tmp_path / "l.zst"
    blob.write_bytes(zstd_compress(DATA))
    code = f"""
        import hashlib
        from pbox.oci import compression as c
        with open({str(blob)!r}, "rb") as f:
            r = c.decompress(f, "zstd")
            print(type(r).__name__, hashlib.sha256(r.read()).hexdigest())
    """
    p = run_without_zstandard(code, os.path.dirname(shutil.which("zstd")))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["_PipeReader", hashlib.sha256(DATA).hexdigest()]


def test_without_zstandard_nor_program_a_clear_error(tmp_path):
    code = """
        import io
        from pbox.oci import compression as c
        try:
            c.decompress(io.BytesIO(b""), "zstd")
        except c.CompressionError as e:
            print(e)
    """
    p = run_without_zstandard(code, str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "zstandard" in p.stdout and "zstd" in p.stdout


def test_auto_detection():
    assert c.detect(gzip.compress(b"x")) == "gzip"
    assert c.detect(c.ZSTD_MAGIC + b"...") == "zstd"
    assert c.detect(b"ustar") is None
    assert c.decompress_auto(io.BytesIO(gzip.compress(DATA))).read() == DATA
    assert c.decompress_auto(io.BytesIO(zstd_compress(DATA))).read() == DATA
    assert c.decompress_auto(io.BytesIO(b"ab")).read() == b"ab"
    assert c.decompress_auto(Trickle(DATA, 3)).read() == DATA


def test_unknown_algorithm():
    with pytest.raises(UnsupportedFormat):
        c.decompress(io.BytesIO(b""), "bzip2")
    with pytest.raises(UnsupportedFormat):
        c.compressor(io.BytesIO(), "bzip2")


class NoClose:
    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)

    def read(self, n=-1):
        return self._b.read(n)


def test_wrapping_a_reader_without_close():
    r = c.decompress(NoClose(gzip.compress(DATA)), "gzip")
    assert read_in_pieces(r) == DATA
    r.close()
    z = c.decompress(NoClose(zstd_compress(DATA)), "zstd")
    assert read_in_pieces(z) == DATA
    z.close()


@pytest.mark.parametrize("algorithm", ["gzip", "zstd"])
def test_corrupt_download_reports_the_digest_mismatch(algorithm):
    blob = gzip.compress(DATA) if algorithm == "gzip" else zstd_compress(DATA)
    good = "sha256:" + hashlib.sha256(blob).hexdigest()
    for pos in (20, len(blob) // 2, len(blob) - 6):
        bad = bytearray(blob)
        bad[pos] ^= 0xFF
        r = c.decompress(VerifyingReader(io.BytesIO(bytes(bad)), good), algorithm)
        with pytest.raises(DigestMismatch):
            read_in_pieces(r)
