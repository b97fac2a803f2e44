"""Write a layer tar from a directory: an overlay upper dir or an extracted layer.

The output is deterministic: two calls on equal trees give the same bytes, whatever
order the files were created in, so a rebuilt layer has the same digest.

* Entries in tree order: each directory, then its children sorted by their tar name
  (bytes), directories before their contents.  The root itself is not an entry.
* PAX (ustar headers, plus a PAX extended header only where ustar cannot hold a
  value: long or non-ASCII names, big sizes and ids, xattrs).  uname/gname empty,
  mtimes whole seconds, clamped to ``mtime_clamp`` (SOURCE_DATE_EPOCH) when given,
  no atime/ctime.
* Overlay whiteouts (a character device 0/0) become empty ``.wh.NAME`` files; an
  opaque directory (``trusted.overlay.opaque``, ``user.overlay.opaque`` or
  ``user.fuseoverlayfs.opaque`` = ``y``, or a ``.wh..wh..opq`` file as fuse-overlayfs
  writes without xattr support) gets a ``.wh..wh..opq`` entry first among its
  children.  ``.wh.NAME`` regular files (whiteouts where mknod was refused) are
  written as they are.
* Files sharing an inode (same device and inode number) are written once, then as
  hardlinks to the first name in tree order.  Whiteout devices are never hardlinks
  (kernel overlayfs shares one inode among its whiteouts).
* xattrs become ``SCHILY.xattr.*`` records, except overlay bookkeeping
  (``trusted.overlay.*``, ``user.overlay.*``, ``user.fuseoverlayfs.*``...) and
  ``security.selinux`` (a host label, not image content).
* Sockets cannot be in a tar and are skipped.

Nothing is followed: directories are opened with ``O_NOFOLLOW`` relative to their
parent, and file contents are streamed, never held whole in memory.
"""

from __future__ import annotations

import errno
import os
import stat

from pbox.errors import StoreError
from pbox.lazylog import get_logger
from pbox.storage.whiteout import INTERNAL_XATTR_PREFIXES, OPAQUE_MARKER, WHITEOUT_PREFIX

log = get_logger(__name__)

__all__ = ["write_layer_tar"]

BLOCK = 512
CHUNK = 1 << 20
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")
SKIPPED_XATTR_PREFIXES = INTERNAL_XATTR_PREFIXES + ("security.selinux",)
MAX_OPEN_LEVELS = 64  # deeper directories are reopened from an ancestor when needed

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = (
    b"0", b"1", b"2", b"3", b"4", b"5", b"6",
)


# ---------------------------------------------------------------------------
# header encoding (pure)


def pax_record(key: str, value: bytes) -> bytes:
    """One PAX record ``"<len> key=value\\n"``, where <len> counts itself."""
    body = b" " + key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode("ascii") + body


def _octal(value: int, width: int) -> bytes | None:
    """``width``-byte octal field with a NUL terminator, or None if it does not fit."""
    if value < 0:
        return None
    text = b"%0*o" % (width - 1, value)
    if len(text) > width - 1:
        return None
    return text + b"\0"


def _split_ustar(name: bytes):
    """(prefix, name) that hold ``name`` in ustar fields, or None."""
    if len(name) <= 100:
        return b"", name
    # the prefix ends at a '/', which is not stored
    i = name.find(b"/", max(0, len(name) - 101))
    while 0 < i <= 155:
        if len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
        i = name.find(b"/", i + 1)
    return None


def _is_ascii(b: bytes) -> bool:
    try:
        b.decode("ascii")
        return True
    except UnicodeDecodeError:
        return False


def _ustar_block(name, prefix, typ, mode, uid, gid, size, mtime, linkname, major, minor) -> bytes:
    fields = [
        name.ljust(100, b"\0"),
        _octal(mode, 8) or _octal(0, 8),
        _octal(uid, 8) or _octal(0, 8),
        _octal(gid, 8) or _octal(0, 8),
        _octal(size, 12) or _octal(0, 12),
        _octal(mtime, 12) or _octal(0, 12),
        b" " * 8,  # checksum, computed below
        typ,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 32,  # uname
        b"\0" * 32,  # gname
        _octal(major, 8) or _octal(0, 8),
        _octal(minor, 8) or _octal(0, 8),
        prefix.ljust(155, b"\0"),
        b"\0" * 12,
    ]
    block = bytearray(b"".join(fields))
    assert len(block) == BLOCK
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def encode_header(
    name: bytes,
    typ: bytes,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: dict | None = None,
) -> bytes:
    """The header block(s) of one entry: an optional PAX extended header, then ustar."""
    pax: dict = {}
    split = _split_ustar(name) if _is_ascii(name) else None
    if split is None:
        pax["path"] = name
        # what a reader without PAX support sees: something, not the real name
        split = (b"", name[-100:].decode("ascii", "replace").encode("ascii", "replace"))
    if len(linkname) > 100 or not _is_ascii(linkname):
        pax["linkpath"] = linkname
        linkname = linkname[:100].decode("ascii", "replace").encode("ascii", "replace")
    if _octal(size, 12) is None:
        pax["size"] = b"%d" % size
    if _octal(uid, 8) is None:
        pax["uid"] = b"%d" % uid
    if _octal(gid, 8) is None:
        pax["gid"] = b"%d" % gid
    if _octal(mtime, 12) is None:
        pax["mtime"] = b"%d" % mtime
    for key in sorted(xattrs or ()):
        pax["SCHILY.xattr." + key] = xattrs[key]
    ustar = _ustar_block(
        split[1], split[0], typ, mode & 0o7777, uid, gid, size, mtime, linkname,
        devmajor, devminor,
    )
    if not pax:
        return ustar
    records = b"".join(pax_record(k, pax[k]) for k in sorted(pax))
    pax_header = _ustar_block(
        b"././@PaxHeader", b"", b"x", 0o644, 0, 0, len(records), 0, b"", 0, 0
    )
    return pax_header + records + b"\0" * (-len(records) % BLOCK) + ustar


# ---------------------------------------------------------------------------
# the walk


class _Out:
    """Buffer small writes (headers) to the caller's file object."""

    def __init__(self, out):
        self._out = out
        self._buf = bytearray()

    def write(self, data) -> None:
        self._buf += data
        if len(self._buf) >= CHUNK:
            self.flush()

    def write_big(self, data) -> None:
        self.flush()
        self._write(data)

    def _write(self, data) -> None:
        view = memoryview(data)
        while view:
            n = self._out.write(view)
            if n is None or n >= len(view):
                return
            view = view[n:]

    def flush(self) -> None:
        if self._buf:
            self._write(bytes(self._buf))
            self._buf = bytearray()


class _Frame:
    __slots__ = ("parts", "fd", "ident", "children", "idx")

    def __init__(self, parts, fd, ident, children):
        self.parts = parts
        self.fd = fd
        self.ident = ident
        self.children = children
        self.idx = 0


def _read_xattrs(target, *, follow_symlinks: bool = True) -> dict:
    try:
        names = os.listxattr(target, follow_symlinks=follow_symlinks)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return {}
        raise
    result = {}
    for key in names:
        try:
            result[key] = os.getxattr(target, key, follow_symlinks=follow_symlinks)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                continue
            raise
    return result


def _is_whiteout(st) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _Writer:
    def __init__(self, out, mtime_clamp, owners):
        self.out = _Out(out)
        self.clamp = mtime_clamp
        if owners == "keep":
            self.owners = None
        else:
            uid, gid = owners
            self.owners = (int(uid), int(gid))
        self.links: dict = {}  # (dev, ino) -> tar name of the first occurrence
        self.current = b""

    def _mtime(self, st) -> int:
        t = st.st_mtime_ns // 1_000_000_000
        if self.clamp is not None and t > self.clamp:
            t = self.clamp
        return t

    def _ids(self, st):
        return self.owners if self.owners is not None else (st.st_uid, st.st_gid)

    def _list(self, dir_fd: int):
        """Sorted (tar name, file name, lstat) of a directory, and whether it is opaque."""
        with os.scandir(dir_fd) as it:
            entries = list(it)
        children = []
        names = set()
        opaque = False
        for entry in entries:
            fname = os.fsencode(entry.name)
            st = entry.stat(follow_symlinks=False)
            if fname == OPAQUE_MARKER:
                opaque = True  # fuse-overlayfs marks opaque dirs so without xattrs
                continue
            if stat.S_ISSOCK(st.st_mode):
                log.debug("skipping socket %r", fname)
                continue
            tname = WHITEOUT_PREFIX + fname if _is_whiteout(st) else fname
            if tname in names:
                continue  # a whiteout device and a .wh. file for the same name
            names.add(tname)
            children.append((tname, fname, st))
        children.sort(key=lambda c: c[0])
        return children, opaque

    def _dir_xattrs(self, fd: int):
        xattrs = _read_xattrs(fd)
        opaque = any(xattrs.get(k) == b"y" for k in OPAQUE_XATTRS)
        return _keep_xattrs(xattrs), opaque

    def _emit_opaque(self, dir_path: bytes, st) -> None:
        uid, gid = self._ids(st)
        self.out.write(
            encode_header(dir_path + OPAQUE_MARKER, REGTYPE, mode=0o644, uid=uid, gid=gid,
                          mtime=self._mtime(st))
        )

    def _open_frame(self, parts: tuple, fd: int, st) -> _Frame:
        children, opaque_file = self._list(fd)
        return _Frame(parts, fd, (st.st_dev, st.st_ino), children), opaque_file

    def _reopen(self, frames: list, k: int) -> int:
        """Reopen frame k's directory from the nearest ancestor that is still open."""
        j = k - 1
        while frames[j].fd is None:
            j -= 1
        fd = os.dup(frames[j].fd)
        try:
            for name in frames[k].parts[len(frames[j].parts) :]:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if (st.st_dev, st.st_ino) != frames[k].ident:
            os.close(fd)
            raise OSError(errno.ESTALE, "directory changed while writing the layer tar")
        frames[k].fd = fd
        return fd

    def run(self, src_dir: str) -> None:
        root_fd = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root_st = os.fstat(root_fd)
        frames: list = []
        try:
            frame, opaque_file = self._open_frame((), root_fd, root_st)
            frames.append(frame)
            _, opaque = self._dir_xattrs(root_fd)
            if opaque or opaque_file:
                self._emit_opaque(b"", root_st)
            while frames:
                frame = frames[-1]
                if frame.idx >= len(frame.children):
                    if frame.fd is not None:
                        os.close(frame.fd)
                    frames.pop()
                    continue
                tname, fname, st = frame.children[frame.idx]
                frame.idx += 1
                dir_fd = frame.fd if frame.fd is not None else self._reopen(frames, len(frames) - 1)
                parts = frame.parts + (fname,)
                path = b"/".join(frame.parts + (tname,))
                self.current = path
                if stat.S_ISDIR(st.st_mode):
                    child_fd = os.open(fname, _DIR_FLAGS, dir_fd=dir_fd)
                    try:
                        cst = os.fstat(child_fd)
                        if (cst.st_dev, cst.st_ino) != (st.st_dev, st.st_ino):
                            raise OSError(errno.ESTALE, "directory replaced while reading it")
                        xattrs, opaque = self._dir_xattrs(child_fd)
                        uid, gid = self._ids(cst)
                        self.out.write(
                            encode_header(path + b"/", DIRTYPE, mode=cst.st_mode, uid=uid,
                                          gid=gid, mtime=self._mtime(cst), xattrs=xattrs)
                        )
                        child, opaque_file = self._open_frame(parts, child_fd, cst)
                    except BaseException:
                        os.close(child_fd)
                        raise
                    if opaque or opaque_file:
                        self._emit_opaque(path + b"/", cst)
                    frames.append(child)
                    if len(frames) > MAX_OPEN_LEVELS:
                        far = frames[-MAX_OPEN_LEVELS - 1]
                        if far.fd is not None and far.parts:
                            os.close(far.fd)
                            far.fd = None
                    continue
                self._non_dir(dir_fd, fname, path, st)
        except OSError as e:
            raise StoreError(
                f"cannot write the layer tar of {src_dir}: "
                f"{self.current.decode('utf-8', 'backslashreplace')!r}: {e.strerror or e}"
            ) from e
        finally:
            for f in frames:
                if f.fd is not None:
                    os.close(f.fd)
        self.out.write(b"\0" * (2 * BLOCK))
        self.out.flush()

    def _non_dir(self, dir_fd: int, fname: bytes, path: bytes, st) -> None:
        uid, gid = self._ids(st)
        mtime = self._mtime(st)
        if _is_whiteout(st):
            # mode 0600 like docker's whiteouts: the device's mode means nothing
            self.out.write(encode_header(path, REGTYPE, mode=0o600, uid=uid, gid=gid, mtime=mtime))
            return
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                self.out.write(
                    encode_header(path, LNKTYPE, mode=st.st_mode, uid=uid, gid=gid,
                                  mtime=mtime, linkname=first)
                )
                return
            self.links[key] = path
        if stat.S_ISREG(st.st_mode):
            self._regular(dir_fd, fname, path, st, uid, gid, mtime)
            return
        xattrs = _keep_xattrs(
            _read_xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, fname), follow_symlinks=False)
        )
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(fname, dir_fd=dir_fd)
            header = encode_header(path, SYMTYPE, mode=0o777, uid=uid, gid=gid, mtime=mtime,
                                   linkname=target, xattrs=xattrs)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            typ = CHRTYPE if stat.S_ISCHR(st.st_mode) else BLKTYPE
            header = encode_header(path, typ, mode=st.st_mode, uid=uid, gid=gid, mtime=mtime,
                                   devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                                   xattrs=xattrs)
        elif stat.S_ISFIFO(st.st_mode):
            header = encode_header(path, FIFOTYPE, mode=st.st_mode, uid=uid, gid=gid,
                                   mtime=mtime, xattrs=xattrs)
        else:
            log.debug("skipping %r of unknown type %o", path, st.st_mode)
            return
        self.out.write(header)

    def _regular(self, dir_fd, fname, path, st, uid, gid, mtime) -> None:
        fd = os.open(fname, _FILE_FLAGS, dir_fd=dir_fd)
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.ESTALE, "file replaced while writing the layer tar")
            size = fst.st_size
            xattrs = _keep_xattrs(_read_xattrs(fd))
            self.out.write(
                encode_header(path, REGTYPE, mode=fst.st_mode, uid=uid, gid=gid, size=size,
                              mtime=mtime, xattrs=xattrs)
            )
            remaining = size
            while remaining:
                data = os.read(fd, min(CHUNK, remaining))
                if not data:
                    raise OSError(errno.EIO, "file shrank while writing the layer tar")
                if len(data) >= 64 * 1024:
                    self.out.write_big(data)
                else:
                    self.out.write(data)
                remaining -= len(data)
            pad = -size % BLOCK
            if pad:
                self.out.write(b"\0" * pad)
        finally:
            os.close(fd)


def _keep_xattrs(xattrs: dict) -> dict:
    return {k: v for k, v in xattrs.items() if not k.startswith(SKIPPED_XATTR_PREFIXES)}


def write_layer_tar(src_dir: str, out, *, mtime_clamp: int | None = None, owners="keep",
                    split: str | None = None, diff_id: str | None = None) -> None:
    """Write the tree at ``src_dir`` as a layer tar to the binary file object ``out``.

    ``mtime_clamp``: no mtime later than this (SOURCE_DATE_EPOCH).  ``owners``:
    ``"keep"`` writes the uid/gid seen on disk (run inside the container's user
    namespace to see the image's ids), a ``(uid, gid)`` pair writes that for every
    entry.  ``split``: the layer's tar-split file (a pulled layer); when it is there
    and the files are as recorded, the original tar is written byte for byte instead
    (``owners`` and ``mtime_clamp`` do not apply; ``diff_id``, when given, is checked).
    Raises :class:`StoreError` if the tree cannot be read.
    """
    if owners != "keep" and (not isinstance(owners, (tuple, list)) or len(owners) != 2):
        raise ValueError("owners must be 'keep' or a (uid, gid) pair")
    if split is not None:
        from pbox.storage.tarsplit import reassemble

        if reassemble(split, src_dir, out, diff_id):
            return
    _Writer(out, mtime_clamp, owners).run(src_dir)
