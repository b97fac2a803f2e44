"""sha256 of a system library, called through ``_ctypes``: libgcrypt's, else
libcrypto's.  With ``pbox.rootless.syscalls``, the one place that calls C directly.

CPython's own sha256 runs at about a fifth of their speed (~10 ms for a busybox pull's
3 MB here, against ~2), and ``import _hashlib`` (what ``hashlib`` uses) loads libcrypto,
~1.2 ms of resolving its thousands of symbols, then sets up every OpenSSL digest, ~1.3 ms
more: a pull pays it for the two sha256 it needs, the blob's and the layer tar's.
libgcrypt loads and sets itself up in ~0.35 ms and hashes at libcrypto's speed with the
CPU's SHA instructions (1.8 against 1.9 ms for 3 MB), faster without them (6.3 against
7.6 ms).  So it comes first; libcrypto, on every machine with a CPython's ``_hashlib``,
is next.  ``pbox.oci.digest`` uses what :func:`load` gives, ``hashlib`` when it gives
None.  The calls release the interpreter lock, as ``_hashlib``'s do for big data.
"""

from __future__ import annotations

__all__ = ["LIBRARIES", "load"]

_MAX_UPDATE = 1 << 30
_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
_FOUND: list = []  # [hash class or None], found once
_GCRY_MD_SHA256 = 8
_LIBCRYPTO_CTX_SIZE = 256  # sizeof(SHA256_CTX) is 112


def load():
    """A sha256 hash class (``update``, ``digest``, ``hexdigest``) on the first of
    :data:`LIBRARIES` that loads and hashes a test string right, or None: without
    ``_ctypes`` (plain ``_ctypes``: the ``ctypes`` package costs ~2 ms to import), or
    without any of them."""
    if _FOUND:
        return _FOUND[0]
    found = None
    try:
        import _ctypes
        import os
    except ImportError:  # pragma: no cover - a Python built without it
        _ctypes = None
    for name, binder in LIBRARIES if _ctypes is not None else ():
        try:
            handle = _ctypes.dlopen(name, os.RTLD_NOW)
        except OSError:
            continue
        try:
            cls = binder(_ctypes, handle)
            if _hashes_right(cls):
                found = cls
                break
        except Exception:  # symbols missing, a failed set-up: the next one
            continue
    _FOUND.append(found)
    return found


def _hashes_right(cls) -> bool:
    h = cls()
    h.update(b"ab")
    h.update(memoryview(b"c"))
    return h.hexdigest() == _ABC and h.hexdigest() == _ABC


def _types(_ctypes):
    """The C types the bindings use, made from ``_ctypes`` alone."""

    class Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL

    class Pointer(_ctypes._SimpleCData):
        _type_ = "P"

    class Bytes(_ctypes._SimpleCData):
        _type_ = "z"

    class Size(_ctypes._SimpleCData):  # size_t: unsigned long on Linux
        _type_ = "L"

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class UInt(_ctypes._SimpleCData):
        _type_ = "I"

    class Byte(_ctypes._SimpleCData):
        _type_ = "B"

    return Func, Pointer, Bytes, Size, Int, UInt, Byte


def _function(Func, handle, name, argtypes, restype):
    class Lib:
        _handle = handle

    f = Func((name, Lib))
    if argtypes is not None:
        f.argtypes = argtypes
    f.restype = restype
    return f


class _Sha256:
    """What both hash classes share: ``update`` (bytes-likes, and data longer than one
    C call takes given in pieces) over their ``_write``, and ``hexdigest``."""

    __slots__ = ()

    def update(self, data) -> None:
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) <= _MAX_UPDATE:
            self._write(data)
            return
        view = memoryview(data)
        for i in range(0, len(data), _MAX_UPDATE):
            self._write(bytes(view[i : i + _MAX_UPDATE]))

    def hexdigest(self) -> str:
        return self.digest().hex()


def _bind_gcrypt(_ctypes, handle):
    """libgcrypt's message digests (``gcry_md_open``/``_write``/``_copy``/``_read``/
    ``_close``), after ``gcry_check_version``, which sets the library up."""
    Func, Pointer, Bytes, Size, Int, UInt, Byte = _types(_ctypes)
    check_version = _function(Func, handle, "gcry_check_version", (Pointer,), Pointer)
    md_open = _function(Func, handle, "gcry_md_open", None, UInt)  # (a byref first)
    md_copy = _function(Func, handle, "gcry_md_copy", None, UInt)
    md_write = _function(Func, handle, "gcry_md_write", (Pointer, Bytes, Size), None)
    md_read = _function(Func, handle, "gcry_md_read", (Pointer, Int), Pointer)
    md_close = _function(Func, handle, "gcry_md_close", (Pointer,), None)
    if not check_version(None):
        raise OSError("gcry_check_version failed")
    byref, digest_type = _ctypes.byref, Byte * 32
    algo, no_flags = Int(_GCRY_MD_SHA256), UInt(0)

    class GcryptSha256(_Sha256):
        """A sha256 hash object on libgcrypt: a digest handle, closed with the object."""

        __slots__ = ("_h",)

        def __init__(self):
            self._h = None
            h = Pointer()
            if md_open(byref(h), algo, no_flags) != 0 or not h.value:
                raise RuntimeError("gcry_md_open failed")
            self._h = h

        def _write(self, data: bytes) -> None:
            md_write(self._h, data, len(data))

        def digest(self) -> bytes:
            # reading ends a handle's hashing: a copy's is read
            copy = Pointer()
            if md_copy(byref(copy), self._h) != 0 or not copy.value:
                raise RuntimeError("gcry_md_copy failed")
            try:
                address = md_read(copy, _GCRY_MD_SHA256)
                if not address:
                    raise RuntimeError("gcry_md_read failed")
                return bytes(digest_type.from_address(address))
            finally:
                md_close(copy)

        def __del__(self):
            if self._h is not None:
                md_close(self._h)
                self._h = None

    return GcryptSha256


def _bind_libcrypto(_ctypes, handle):
    """libcrypto's ``SHA256_Init``/``_Update``/``_Final`` (OpenSSL 1.1 and 3 both have
    them)."""
    Func, Pointer, Bytes, Size, Int, UInt, Byte = _types(_ctypes)
    sha_init = _function(Func, handle, "SHA256_Init", (Pointer,), Int)
    sha_update = _function(Func, handle, "SHA256_Update", (Pointer, Bytes, Size), Int)
    sha_final = _function(Func, handle, "SHA256_Final", (Pointer, Pointer), Int)
    ctx_type, out_type = Byte * _LIBCRYPTO_CTX_SIZE, Byte * 32

    class LibcryptoSha256(_Sha256):
        """A sha256 hash object on libcrypto."""

        __slots__ = ("_ctx",)

        def __init__(self):
            self._ctx = ctx_type()
            if sha_init(self._ctx) != 1:
                raise RuntimeError("SHA256_Init failed")

        def _write(self, data: bytes) -> None:
            if sha_update(self._ctx, data, len(data)) != 1:
                raise RuntimeError("SHA256_Update failed")

        def digest(self) -> bytes:
            ctx = ctx_type.from_buffer_copy(self._ctx)  # Final ends a context: a copy's
            out = out_type()
            if sha_final(out, ctx) != 1:
                raise RuntimeError("SHA256_Final failed")
            return bytes(out)

    return LibcryptoSha256


# (file name, binder), in the order they are tried
LIBRARIES = (
    ("libgcrypt.so.20", _bind_gcrypt),
    ("libcrypto.so.3", _bind_libcrypto),
    ("libcrypto.so.1.1", _bind_libcrypto),
    ("libcrypto.so", _bind_libcrypto),
)
