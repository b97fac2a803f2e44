"""libcrypto's sha256, called through ``_ctypes``: the one place besides
``pbox.rootless.syscalls`` that calls C directly.

``import _hashlib`` (what ``hashlib`` uses) loads libcrypto (~1.5 ms) and then sets up
every OpenSSL digest (~1.3 ms more): a pull pays it for the two sha256 it needs, the
blob's and the layer tar's.  These three functions are all that needs; the hashing
itself runs at the same speed (the same OpenSSL code).  ``pbox.oci.digest`` uses
:class:`Sha256` when :func:`load` finds the library, ``hashlib`` otherwise.
"""

from __future__ import annotations

__all__ = ["LIBCRYPTO_NAMES", "Sha256", "load"]

LIBCRYPTO_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so")
_CTX_SIZE = 256  # sizeof(SHA256_CTX) is 112
_MAX_UPDATE = 1 << 30
_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
_LIB: list = []  # [namespace or None], found once


def load():
    """``SHA256_Init``/``_Update``/``_Final`` of libcrypto (OpenSSL 1.1 and 3 both have
    them), or None: without ``_ctypes`` or libcrypto, or when a test hash comes out
    wrong.  Plain ``_ctypes`` (the ``ctypes`` package costs ~2 ms to import); its
    calls release the interpreter lock, as ``_hashlib``'s do for big data."""
    if _LIB:
        return _LIB[0]
    found = None
    try:
        import _ctypes
        import os

        handle = None
        for name in LIBCRYPTO_NAMES:
            try:
                handle = _ctypes.dlopen(name, os.RTLD_NOW)
                break
            except OSError:
                continue
        if handle is not None:
            found = _bind(_ctypes, handle)
            h = Sha256(found)
            h.update(b"ab")
            h.update(b"c")
            if h.hexdigest() != _ABC or h.hexdigest() != _ABC:
                found = None
    except Exception:  # no _ctypes, no such symbols: hashlib does it
        found = None
    _LIB.append(found)
    return found


def _bind(_ctypes, handle):
    class Lib:
        _handle = handle

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

    class Byte(_ctypes._SimpleCData):
        _type_ = "B"

    class Namespace:
        ctx = Byte * _CTX_SIZE
        out = Byte * 32
        init = Func(("SHA256_Init", Lib))
        update = Func(("SHA256_Update", Lib))
        final = Func(("SHA256_Final", Lib))

    Namespace.init.argtypes = (Pointer,)
    Namespace.update.argtypes = (Pointer, Bytes, Size)
    Namespace.final.argtypes = (Pointer, Pointer)
    for f in (Namespace.init, Namespace.update, Namespace.final):
        f.restype = Int
    return Namespace


class Sha256:
    """A sha256 hash object (``update``, ``digest``, ``hexdigest``) on libcrypto."""

    __slots__ = ("_lib", "_ctx")

    def __init__(self, lib=None):
        self._lib = lib = lib or _LIB[0]
        self._ctx = lib.ctx()
        if lib.init(self._ctx) != 1:
            raise RuntimeError("SHA256_Init failed")

    def update(self, data) -> None:
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) > _MAX_UPDATE:
            view = memoryview(data)
            for i in range(0, len(data), _MAX_UPDATE):
                self.update(bytes(view[i : i + _MAX_UPDATE]))
            return
        if self._lib.update(self._ctx, data, len(data)) != 1:
            raise RuntimeError("SHA256_Update failed")

    def digest(self) -> bytes:
        lib = self._lib
        ctx = lib.ctx.from_buffer_copy(self._ctx)  # Final ends a context: a copy's
        out = lib.out()
        if lib.final(out, ctx) != 1:
            raise RuntimeError("SHA256_Final failed")
        return bytes(out)

    def hexdigest(self) -> str:
        return self.digest().hex()
