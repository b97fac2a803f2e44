"""Content digests (``sha256:<64 hex>``) and streams that compute or verify them.

Everything pbox stores or fetches is named by a digest; a blob is only trusted once the
bytes that went through one of these wrappers hashed to the name they were asked by.
"""

from __future__ import annotations

import io

from pbox.errors import DigestMismatch, InvalidReference

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from typing import BinaryIO

# OCI image-spec: registered algorithms and the length of their lower-case hex encoding.
ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
CANONICAL = "sha256"
_LOWER_HEX = frozenset("0123456789abcdef")
_CHUNK = 1024 * 1024


def parse(digest: str) -> tuple[str, str]:
    """Split and validate ``algorithm:hex``; raises ``InvalidReference`` when malformed."""
    if not isinstance(digest, str) or ":" not in digest:
        raise InvalidReference(f"invalid checksum digest format: {digest!r}")
    algorithm, _, hexpart = digest.partition(":")
    if algorithm not in ALGORITHMS:
        raise InvalidReference(f"unsupported digest algorithm: {digest!r}")
    if len(hexpart) != ALGORITHMS[algorithm]:
        raise InvalidReference(f"invalid checksum digest length: {digest!r}")
    if not set(hexpart) <= _LOWER_HEX:
        raise InvalidReference(f"invalid checksum digest format: {digest!r}")
    return algorithm, hexpart


def validate(digest: str) -> str:
    """Return ``digest`` unchanged when it is well formed, else raise ``InvalidReference``."""
    parse(digest)
    return digest


def is_digest(s: str) -> bool:
    try:
        parse(s)
    except InvalidReference:
        return False
    return True


def algorithm_of(digest: str) -> str:
    return parse(digest)[0]


def hex_of(digest: str) -> str:
    """The hex part: the file name of a blob, the long image id docker shows."""
    return parse(digest)[1]


_new = None


def new_hasher(algorithm: str = CANONICAL, size: int | None = None):
    """A hash object; ``size``: how many bytes it will hash, when known (up to ``SMALL``
    sha256 is CPython's own while no library is loaded for it, see ``SMALL``)."""
    if algorithm not in ALGORITHMS:
        raise InvalidReference(f"unsupported digest algorithm: {algorithm!r}")
    if size is not None and size <= SMALL and _new is None and algorithm == "sha256":
        small = _builtin_sha256()
        if small is not None:
            return small()
    return (_new or _hash_constructor())(algorithm)


def _hash_constructor():
    """The constructor of hash objects for big data, made on first use: libgcrypt's or
    libcrypto's sha256 through ``_ctypes`` (``pbox.oci.nativesha``), ``_hashlib`` for
    the other algorithms.  Loading libgcrypt is ~0.35 ms (libcrypto ~1.2), which a pull
    spends while it waits on the registry (``preload``); ``_hashlib`` would load
    libcrypto and then set up every OpenSSL digest, ~1.3 ms more."""
    global _new
    from pbox.oci import nativesha

    sha256 = nativesha.load()

    def new(algorithm: str):
        if algorithm == "sha256" and sha256 is not None:
            return sha256()
        return _hashlib_new()(algorithm)

    _new = new
    return new


def _hashlib_new():
    try:
        from _hashlib import new
    except ImportError:  # pragma: no cover - CPython built without OpenSSL
        from hashlib import new
    return new


def preload() -> None:
    """Load the sha256 library now (``pbox.pull``: while the registry prepares an
    answer)."""
    _new or _hash_constructor()


# Up to this size, sha256 is taken by CPython's own module (~0.1 ms to import, ~1/5 of
# the libraries' speed here): a manifest or a config needs no library loaded.
SMALL = 1 << 16


def compute(data: bytes, algorithm: str = CANONICAL) -> str:
    """The digest of ``data`` in full form."""
    h = new_hasher(algorithm, len(data))
    h.update(data)
    return f"{algorithm}:{h.hexdigest()}"


_SMALL_SHA256 = []  # [constructor or None], found once


def _builtin_sha256():
    if not _SMALL_SHA256:  # (a failed import searches sys.path, ~80 us: asked once)
        import sys

        sha256 = None
        # CPython 3.12 and later have _sha2, older ones _sha256: the right one first
        names = ("_sha256", "_sha2") if sys.version_info < (3, 12) else ("_sha2", "_sha256")
        for name in names:
            try:
                sha256 = __import__(name).sha256
                break
            except (ImportError, AttributeError):  # pragma: no cover - built without it
                continue
        _SMALL_SHA256.append(sha256)
    return _SMALL_SHA256[0]


def compute_file(fileobj: BinaryIO, algorithm: str = CANONICAL) -> tuple[str, int]:
    """Read ``fileobj`` to its end; return (digest, size)."""
    h = new_hasher(algorithm)
    size = 0
    while True:
        chunk = fileobj.read(_CHUNK)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
    return f"{algorithm}:{h.hexdigest()}", size


def compute_path(path: str, algorithm: str = CANONICAL) -> tuple[str, int]:
    with open(path, "rb") as f:
        return compute_file(f, algorithm)


def _close(f) -> None:
    """Close a wrapped stream if it can be closed (plain readers may lack ``close``)."""
    close = getattr(f, "close", None)
    if close is not None:
        close()


class HashingReader(io.RawIOBase):
    """A read-through tee: whatever is read is hashed and counted.

    ``digest()`` is the digest of everything read so far; read to the end first
    (``finish()`` does that) when the digest of the whole stream is wanted.  The wrapper
    owns ``fileobj``: closing it (or dropping it) closes the wrapped file.
    """

    def __init__(self, fileobj: BinaryIO, algorithm: str = CANONICAL,
                 size_hint: int | None = None):
        super().__init__()
        self._f = fileobj
        self.algorithm = algorithm
        self._h = new_hasher(algorithm, size_hint)
        self.size = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def _got(self, data: bytes, requested: int) -> None:
        if data:
            self._h.update(data)
            self.size += len(data)
        elif requested != 0:
            self.eof = True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while True:
                chunk = self._f.read(_CHUNK)
                self._got(chunk, _CHUNK)
                if not chunk:
                    break
                parts.append(chunk)
            return b"".join(parts)
        data = self._f.read(size)
        self._got(data, size)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def digest(self) -> str:
        return f"{self.algorithm}:{self._h.hexdigest()}"

    def finish(self) -> str:
        """Read (and hash) whatever is left; return the digest of the whole stream."""
        while self.read(_CHUNK):
            pass
        return self.digest()

    def close(self) -> None:
        if not self.closed:
            try:
                _close(self._f)
            finally:
                super().close()


class VerifyingReader(HashingReader):
    """A read-through wrapper that checks the stream against an expected digest.

    Raises ``DigestMismatch`` when the end of the stream is reached and the digest (or
    the size, when given) is not the expected one, and as soon as more than ``size``
    bytes arrive.  A consumer that stops before the end (``tarfile`` leaves the zero
    padding unread) must call ``finish()`` to get the check.
    """

    def __init__(
        self, fileobj: BinaryIO, digest: str, size: int | None = None, *, what: str = "blob"
    ):
        algorithm, _ = parse(digest)
        super().__init__(fileobj, algorithm, size)
        self.expected = digest
        self.expected_size = size
        self.what = what
        self.verified = False
        self._pending: list | None = None  # bytes read, not hashed yet (``defer``)

    def defer(self) -> None:
        """Leave the hashing to another thread: from now on the bytes read are kept (not
        copied) until :meth:`catch_up` hashes them, and the digest is checked by
        :meth:`finish`, not at the end of the stream.  For a stream read by a thread
        that has more to do than the one that would hash it (``pbox.pull``: the thread
        inflating a small layer; the one extracting it waits for it).  The size is still
        checked as the bytes come."""
        if self._pending is None:
            self._pending = []

    def catch_up(self) -> None:
        """Hash the bytes read so far (deferred hashing); from one thread at a time."""
        pending = self._pending
        while pending:
            self._h.update(pending.pop(0))  # (the reader only appends: no lock needed)

    def _got(self, data: bytes, requested: int) -> None:
        if self._pending is None:
            super()._got(data, requested)
        elif data:
            self._pending.append(data)
            self.size += len(data)
        elif requested != 0:
            self.eof = True
        if self.expected_size is not None and self.size > self.expected_size:
            raise DigestMismatch(
                f"{self.what} {self.expected}: got more than the {self.expected_size} bytes "
                f"announced"
            )
        if self.eof and not self.verified and self._pending is None:
            self._check()

    def digest(self) -> str:
        if self._pending:
            self.catch_up()
        return super().digest()

    def _check(self) -> None:
        if self.expected_size is not None and self.size != self.expected_size:
            raise DigestMismatch(
                f"{self.what} {self.expected}: size {self.size} does not match the "
                f"{self.expected_size} bytes announced"
            )
        got = self.digest()
        if got != self.expected:
            raise DigestMismatch(
                f"{self.what} digest mismatch: expected {self.expected}, got {got}"
            )
        self.verified = True

    def finish(self) -> str:
        while self.read(_CHUNK):
            pass
        if not self.verified:
            self._check()
        return self.digest()


class HashingWriter(io.RawIOBase):
    """A write-through tee: bytes written go to ``fileobj`` (if any) and are hashed."""

    def __init__(self, fileobj: BinaryIO | None = None, algorithm: str = CANONICAL):
        super().__init__()
        self._f = fileobj
        self.algorithm = algorithm
        self._h = new_hasher(algorithm)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self._h.update(data)
        self.size += len(data)
        if self._f is not None:
            self._f.write(data)
        return len(data)

    def flush(self) -> None:
        if self._f is not None and hasattr(self._f, "flush"):
            self._f.flush()

    def digest(self) -> str:
        return f"{self.algorithm}:{self._h.hexdigest()}"
