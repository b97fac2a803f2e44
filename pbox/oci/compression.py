"""Layer compression: streaming decompressors and compressors, picked by media type.

A registry of algorithms (gzip, zstd, none) keyed by name; ``for_media_type`` maps a
layer media type to its algorithm.  Every reader and writer streams: nothing holds a
whole layer in memory.

zstd uses the ``zstandard`` module, imported only when a zstd layer shows up.  The
``.pyz`` may run on a Python where that compiled module cannot be loaded; then the
``zstd`` program does the work through a pipe.

gzip is inflated by python-isal's ``isal_zlib`` (Intel's ISA-L: about twice zlib's
speed, and it lets go of the GIL as zlib does) when it can be imported, else by
``zlib``; the output is the same either way.  ``PBOX_INFLATE=zlib`` picks zlib.
Compression stays with ``zlib`` (``pgzip``): its bytes, hence the digests of pushed
layers, must not depend on which modules are installed.
"""

from __future__ import annotations

import io
import zlib

from pbox.errors import DigestMismatch, PboxError, UnsupportedFormat
from pbox.lazylog import get_logger
from pbox.oci import mediatypes as mt

log = get_logger(__name__)

GZIP = "gzip"
ZSTD = "zstd"
NONE = None

_CHUNK = 256 * 1024
_INPUT_CHUNK = 1 << 20  # compressed bytes read from the source at once
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

ZSTD_MISSING = (
    "zstd-compressed layers need the Python package 'zstandard' or the 'zstd' program; "
    "install one of them (pip install zstandard, or your distribution's zstd package)"
)

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from typing import BinaryIO, Callable


_FAST_ZLIB = None  # isal_zlib or zlib, chosen on first use


def fast_zlib():
    """isal's zlib module where it can be imported (and ``PBOX_INFLATE`` is not "zlib"),
    else zlib.  isal inflates at about twice zlib's speed, computes CRC-32 at ~5 times
    and deflates at level 1 ~4 times as fast, in a format zlib reads (pushed layers are
    still compressed with zlib, so their digests do not depend on it)."""
    global _FAST_ZLIB
    if _FAST_ZLIB is None:
        import os

        _FAST_ZLIB = zlib
        if os.environ.get("PBOX_INFLATE", "").lower() != "zlib":
            try:
                _FAST_ZLIB = _import_isal_zlib()
            except ImportError:
                pass
    return _FAST_ZLIB


def _import_isal_zlib():
    """``isal.isal_zlib`` without running ``isal/__init__.py``, which loads a third
    compiled module (``_isal``) for version numbers pbox never reads: ~0.5 ms of a small
    pull.  The package is found as an import finds it (the .pyz's finder unpacks it
    then); a bare module with its ``__path__`` stands for it in ``sys.modules``."""
    import sys

    if "isal" not in sys.modules:
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find("isal", None) if find is not None else None
            if spec is not None:
                break
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("no module named 'isal'")
        package = type(sys)("isal")
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = "isal"
        sys.modules["isal"] = package
        try:
            from isal import isal_zlib
        except BaseException:
            if sys.modules.get("isal") is package:
                del sys.modules["isal"]  # a later import finds the real package
            raise
        return isal_zlib
    from isal import isal_zlib

    return isal_zlib


def _inflater() -> tuple:
    """(decompressobj, error classes, name) of the module that inflates gzip layers."""
    z = fast_zlib()
    if z is zlib:
        return zlib.decompressobj, (zlib.error,), "zlib"
    return z.decompressobj, (z.error, zlib.error), "isal"


def inflater_name() -> str:
    """``"isal"`` or ``"zlib"``: what inflates gzip layers here."""
    return _inflater()[2]


def _close(f) -> None:
    """Close a wrapped stream if it can be closed (plain readers may lack ``close``)."""
    close = getattr(f, "close", None)
    if close is not None:
        close()


class CompressionError(UnsupportedFormat):
    """A layer could not be (de)compressed: corrupt data or a missing tool."""


def _decode_error(src, message: str) -> CompressionError:
    """The error to raise when compressed data does not decode.

    Corrupt data usually means a corrupt download: when ``src`` is a verifying stream,
    reading it to its end raises the digest mismatch, the real cause, instead.
    """
    try:
        while src.read(_CHUNK):
            pass
    except DigestMismatch:
        raise
    except Exception:  # a broken source says nothing more about the data
        pass
    return CompressionError(message)


# -- detection -----------------------------------------------------------------------------


def for_media_type(media_type: str | None) -> str | None:
    """The algorithm of a layer media type; ``UnsupportedFormat`` for other types."""
    base = mt.base(media_type)
    if mt.is_encrypted(base):
        raise UnsupportedFormat(f"encrypted layers are not supported ({base})")
    try:
        return mt.layer_compression(base)
    except KeyError:
        raise UnsupportedFormat(f"unsupported layer media type {media_type!r}")


def detect(head: bytes) -> str | None:
    """The algorithm whose magic number starts ``head`` (None: assume a plain tar)."""
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    return None


class _Reader(io.RawIOBase):
    """Base of the readers here: a stream made from the source ``self._f``, which it
    owns (closing the reader closes the source).  Subclasses implement ``_read(size)``
    for ``size > 0``, returning at most ``size`` bytes and ``b""`` only at the end."""

    def __init__(self, fileobj: BinaryIO):
        super().__init__()
        self._f = fileobj

    def readable(self) -> bool:
        return True

    def _read(self, size: int) -> bytes:
        raise NotImplementedError

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        return self._read(size)

    def readall(self) -> bytes:
        parts = []
        while True:
            chunk = self._read(_CHUNK)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _close_own(self) -> None:
        """What the subclass must release before the source is closed."""

    def close(self) -> None:
        if not self.closed:
            try:
                try:
                    self._close_own()
                finally:
                    _close(self._f)
            finally:
                super().close()


class _Prefixed(_Reader):
    """``head`` followed by the rest of ``fileobj``: lets us peek at magic numbers."""

    def __init__(self, head: bytes, fileobj: BinaryIO):
        super().__init__(fileobj)
        self._head = head

    def _read(self, size: int) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._f.read(size)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def sniff(fileobj: BinaryIO) -> tuple[str | None, BinaryIO]:
    """Detect the compression of a stream from its first bytes without losing them."""
    head = _read_exact(fileobj, 4)
    return detect(head), _Prefixed(head, fileobj)


# -- decompression ---------------------------------------------------------------------------


class _GzipReader(_Reader):
    """Streaming gzip decoder built on zlib.

    Concatenated members read as one stream (as ``gzip -d`` and Go's reader do), and
    zero padding between or after members is skipped (as Python's gzip module does).
    A read returns what one call of the decompressor gives (at most ``size`` bytes):
    no buffer of our own, so no copy beyond zlib's output.
    """

    def __init__(self, fileobj: BinaryIO, read_size: int = _INPUT_CHUNK):
        super().__init__(fileobj)
        self._read_size = read_size
        self._d = None  # the decompressor of the current member; None between members
        self._errors: tuple = (zlib.error,)
        self._input = b""  # compressed bytes left after the end of a member
        self._members = 0
        self._eof = False

    def _read(self, size: int) -> bytes:
        while not self._eof:
            d = self._d
            if d is not None and d.unconsumed_tail:
                data = d.unconsumed_tail
            else:
                data, self._input = self._input or self._f.read(self._read_size), b""
                if not data:
                    if d is not None:
                        raise _decode_error(
                            self._f, "gzip stream is truncated (unexpected end of data)"
                        )
                    if self._members == 0:
                        raise CompressionError("invalid gzip data: empty stream")
                    self._eof = True
                    break
            if d is None:
                data = data.lstrip(b"\x00")
                if not data:
                    continue
                make, self._errors, _ = _inflater()
                d = self._d = make(zlib.MAX_WBITS | 16)
                self._members += 1
            try:
                # zlib releases the GIL while it inflates: other threads keep working
                out = d.decompress(data, size)
            except self._errors as e:
                raise _decode_error(self._f, f"invalid gzip data: {e}") from None
            if d.eof:
                self._input = d.unused_data
                self._d = None
            if out:
                return out
        return b""


class _PipeReader(_Reader):
    """Output of a filter program whose input is fed from ``fileobj`` by a thread.

    Errors of the feeding side (a digest mismatch of the wrapped stream, a broken
    connection) are re-raised here, at the end of the output, where the reader sees them.
    """

    def __init__(self, argv: list[str], fileobj: BinaryIO, what: str):
        super().__init__(fileobj)
        self._what = what
        import subprocess  # only for a filter program: ~4 ms that zlib work does not pay

        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._feed_error: BaseException | None = None
        self._stderr = b""
        import threading  # (not imported by every pull: ~1 ms)

        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()
        self._err_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._err_reader.start()
        self._done = False

    def _feed(self) -> None:
        try:
            while True:
                chunk = self._f.read(_CHUNK)
                if not chunk:
                    break
                self._proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as e:  # handed to the reading side
            self._feed_error = e
        finally:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def _read_stderr(self) -> None:
        self._stderr = self._proc.stderr.read()

    def readall(self) -> bytes:
        data = self._proc.stdout.read()
        self._finish()
        return data

    def _read(self, size: int) -> bytes:
        data = self._proc.stdout.read1(size)
        if not data:
            self._finish()
        return data

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._feeder.join()
        rc = self._proc.wait()
        self._err_reader.join()
        if self._feed_error is not None:
            raise self._feed_error
        if rc != 0:
            msg = self._stderr.decode("utf-8", "replace").strip()
            raise CompressionError(f"{self._what} failed: {msg or f'exit status {rc}'}")

    def _close_own(self) -> None:
        if not self._done:
            self._done = True
            try:
                self._proc.kill()
            except OSError:
                pass
            self._proc.wait()
        self._proc.stdout.close()


class _ZstdReader(_Reader):
    """Adapter over zstandard's stream reader (reads across frames, owns the source)."""

    def __init__(self, fileobj: BinaryIO, zstandard, read_size: int = _INPUT_CHUNK):
        super().__init__(fileobj)
        self._zstd_error = zstandard.ZstdError
        self._r = zstandard.ZstdDecompressor().stream_reader(
            fileobj, read_size=read_size, read_across_frames=True, closefd=False
        )

    def readall(self) -> bytes:
        try:
            return self._r.readall()
        except self._zstd_error as e:
            raise _decode_error(self._f, f"invalid zstd data: {e}") from None

    def _read(self, size: int) -> bytes:
        try:
            return self._r.read(size)
        except self._zstd_error as e:
            raise _decode_error(self._f, f"invalid zstd data: {e}") from None

    def _close_own(self) -> None:
        self._r.close()


def _import_zstandard():
    try:
        import zstandard
    except ImportError as e:
        log.debug("zstandard cannot be imported (%s); trying the zstd program", e)
        return None
    return zstandard


def _zstd_program() -> str | None:
    import shutil

    return shutil.which("zstd")


def _decompress_none(fileobj: BinaryIO, read_size: int = _INPUT_CHUNK) -> BinaryIO:
    return fileobj


def _decompress_gzip(fileobj: BinaryIO, read_size: int = _INPUT_CHUNK) -> BinaryIO:
    return _GzipReader(fileobj, read_size)


def _decompress_zstd(fileobj: BinaryIO, read_size: int = _INPUT_CHUNK, *,
                     use_module: bool = True) -> BinaryIO:
    zstandard = _import_zstandard() if use_module else None
    if zstandard is not None:
        return _ZstdReader(fileobj, zstandard, read_size)
    prog = _zstd_program()
    if prog is None:
        raise CompressionError(ZSTD_MISSING)
    return _PipeReader([prog, "-d", "-c", "-q"], fileobj, "zstd decompression")


DECOMPRESSORS: dict[str | None, Callable[[BinaryIO, int], BinaryIO]] = {
    NONE: _decompress_none,
    GZIP: _decompress_gzip,
    ZSTD: _decompress_zstd,
}


def decompress(fileobj: BinaryIO, algorithm: str | None,
               read_size: int = _INPUT_CHUNK) -> BinaryIO:
    """A reader of the decompressed content of ``fileobj`` (which the reader owns),
    reading ``read_size`` compressed bytes at a time (a small layer's pull reads less at
    once: see ``pbox.pull``)."""
    try:
        fn = DECOMPRESSORS[algorithm]
    except KeyError:
        raise UnsupportedFormat(f"unsupported compression {algorithm!r}")
    return fn(fileobj, read_size)


def decompress_media_type(fileobj: BinaryIO, media_type: str | None) -> BinaryIO:
    """Decompress a layer as its media type says."""
    return decompress(fileobj, for_media_type(media_type))


def decompress_auto(fileobj: BinaryIO) -> BinaryIO:
    """Decompress by magic number (docker-archive layers, mislabelled blobs)."""
    algorithm, stream = sniff(fileobj)
    return decompress(stream, algorithm)


# -- compression -----------------------------------------------------------------------------


class _Writer(io.RawIOBase):
    """Base of the writers here: they write into ``self._out``, which stays open."""

    def __init__(self, out: BinaryIO):
        super().__init__()
        self._out = out

    def writable(self) -> bool:
        return True


class _GzipWriter(_Writer):
    """gzip with a deterministic header (mtime 0, no name): same input, same digest."""

    def __init__(self, out: BinaryIO, level: int):
        super().__init__(out)
        # wbits 31 = gzip framing; zlib writes mtime 0 and no file name.
        self._c = zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, b) -> int:
        data = bytes(b)
        out = self._c.compress(data)
        if out:
            self._out.write(out)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._out.write(self._c.flush(zlib.Z_FINISH))
            finally:
                super().close()


class _ZstdWriter(_Writer):
    def __init__(self, out: BinaryIO, level: int, zstandard):
        super().__init__(out)
        self._w = zstandard.ZstdCompressor(level=level).stream_writer(out, closefd=False)

    def write(self, b) -> int:
        self._w.write(b)
        return len(b)

    def close(self) -> None:
        if not self.closed:
            try:
                self._w.close()  # ends the frame; ``out`` stays open (closefd=False)
            finally:
                super().close()


class _PipeWriter(_Writer):
    """Write into a filter program; a thread copies its output to ``out``."""

    def __init__(self, argv: list[str], out: BinaryIO, what: str):
        super().__init__(out)
        self._what = what
        import subprocess  # only for a filter program: ~4 ms that zlib work does not pay

        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._copy_error: BaseException | None = None
        self._stderr = b""
        import threading

        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()
        self._err_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._err_reader.start()

    def _copy(self) -> None:
        try:
            while True:
                chunk = self._proc.stdout.read1(_CHUNK)
                if not chunk:
                    break
                self._out.write(chunk)
        except BaseException as e:
            self._copy_error = e

    def _read_stderr(self) -> None:
        self._stderr = self._proc.stderr.read()

    def write(self, b) -> int:
        try:
            self._proc.stdin.write(b)
        except BrokenPipeError:
            self._wait()
            raise CompressionError(f"{self._what} failed: the program exited early")
        return len(b)

    def _wait(self) -> int:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._copier.join()
        rc = self._proc.wait()
        self._err_reader.join()
        return rc

    def close(self) -> None:
        if self.closed:
            return
        try:
            rc = self._wait()
            self._proc.stdout.close()
            if self._copy_error is not None:
                raise self._copy_error
            if rc != 0:
                msg = self._stderr.decode("utf-8", "replace").strip()
                raise CompressionError(f"{self._what} failed: {msg or f'exit status {rc}'}")
        finally:
            super().close()


class _PlainWriter(_Writer):
    def write(self, b) -> int:
        self._out.write(b)
        return len(b)


DEFAULT_LEVELS = {GZIP: 6, ZSTD: 3}


def compressor(
    out: BinaryIO, algorithm: str | None, *, level: int | None = None, use_module: bool = True
) -> BinaryIO:
    """A writer that compresses into ``out``; close it to end the stream (``out`` stays open).

    Output is deterministic for a given input, algorithm and level.
    """
    if algorithm is None:
        return _PlainWriter(out)
    if level is None:
        level = DEFAULT_LEVELS.get(algorithm, 6)
    if algorithm == GZIP:
        return _GzipWriter(out, level)
    if algorithm == ZSTD:
        zstandard = _import_zstandard() if use_module else None
        if zstandard is not None:
            return _ZstdWriter(out, level, zstandard)
        prog = _zstd_program()
        if prog is None:
            raise CompressionError(ZSTD_MISSING)
        return _PipeWriter([prog, "-c", "-q", f"-{level}"], out, "zstd compression")
    raise UnsupportedFormat(f"unsupported compression {algorithm!r}")


def compress_file(
    src: BinaryIO, out: BinaryIO, algorithm: str | None, *, level: int | None = None
) -> None:
    """Copy ``src`` to ``out`` compressed."""
    w = compressor(out, algorithm, level=level)
    try:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            w.write(chunk)
    except BaseException:
        try:
            w.close()
        except PboxError:
            pass
        raise
    w.close()
