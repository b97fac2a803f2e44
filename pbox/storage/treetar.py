"""Tar streams of files on disk: :class:`TarWriter` writes one entry per lstat result,
:func:`write_tree` a whole tree in tar order.  Used by ``export``, ``commit`` (a copy
driver's changes) and ``cp``; a layer as it is stored and pushed is written by
:mod:`pbox.storage.layertar` instead.
"""

from __future__ import annotations

import errno
import os
import stat

from pbox.lazylog import get_logger
from pbox.storage import layertar
from pbox.storage.layerview import _name_key
from pbox.storage.whiteout import INTERNAL_XATTR_PREFIXES

log = get_logger(__name__)

CHUNK = 1 << 20


# -- writing tars ------------------------------------------------------------------------------


_SKIPPED_XATTRS = INTERNAL_XATTR_PREFIXES + ("security.selinux",)


class TarWriter:
    """Tar entries from files on disk (lstat results), streamed to ``out``.

    ``owner``: None writes the ids seen on disk, a (uid, gid) pair that for every
    entry.  Files that share an inode are written once, then as hardlinks.
    """

    def __init__(self, out, *, owner=None, xattrs: bool = False):
        self.out = out
        self.owner = owner
        self.xattrs = xattrs
        self.links: dict = {}
        self.bytes = 0
        self._buf = bytearray()

    def _write(self, data) -> None:
        self._buf += data
        if len(self._buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.out.write(bytes(self._buf))
            self.bytes += len(self._buf)
            self._buf = bytearray()

    def _xattrs(self, path: str, follow: bool) -> dict:
        if not self.xattrs:
            return {}
        try:
            names = os.listxattr(path, follow_symlinks=follow)
        except OSError:
            return {}
        out = {}
        for key in names:
            if key.startswith(_SKIPPED_XATTRS):
                continue
            try:
                out[key] = os.getxattr(path, key, follow_symlinks=follow)
            except OSError:
                pass
        return out

    def add(self, name: bytes, path: str, st, *, follow: bool = False) -> None:
        """One entry ``name`` (no trailing slash) for the file at ``path``."""
        uid, gid = self.owner if self.owner is not None else (st.st_uid, st.st_gid)
        mtime = max(0, st.st_mtime_ns // 1_000_000_000)
        mode = stat.S_IMODE(st.st_mode)
        enc = layertar.encode_header
        if stat.S_ISDIR(st.st_mode):
            self._write(enc(name + b"/", layertar.DIRTYPE, mode=mode, uid=uid, gid=gid,
                            mtime=mtime, xattrs=self._xattrs(path, follow)))
            return
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                self._write(enc(name, layertar.LNKTYPE, mode=mode, uid=uid, gid=gid,
                                mtime=mtime, linkname=first))
                return
            self.links[key] = name
        if stat.S_ISREG(st.st_mode):
            self._regular(name, path, st, mode, uid, gid, mtime, follow)
        elif stat.S_ISLNK(st.st_mode):
            self._write(enc(name, layertar.SYMTYPE, mode=0o777, uid=uid, gid=gid, mtime=mtime,
                            linkname=os.fsencode(os.readlink(path))))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            typ = layertar.CHRTYPE if stat.S_ISCHR(st.st_mode) else layertar.BLKTYPE
            self._write(enc(name, typ, mode=mode, uid=uid, gid=gid, mtime=mtime,
                            devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev)))
        elif stat.S_ISFIFO(st.st_mode):
            self._write(enc(name, layertar.FIFOTYPE, mode=mode, uid=uid, gid=gid, mtime=mtime))
        else:
            log.debug("not in a tar: %r (a socket)", path)

    def _regular(self, name, path, st, mode, uid, gid, mtime, follow) -> None:
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        fd = os.open(path, flags)
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                raise OSError(errno.ESTALE, "file replaced while reading it", path)
            size = fst.st_size
            self._write(layertar.encode_header(name, layertar.REGTYPE, mode=mode, uid=uid,
                                               gid=gid, size=size, mtime=mtime,
                                               xattrs=self._xattrs(path, follow)))
            left = size
            while left:
                data = os.read(fd, min(CHUNK, left))
                if not data:
                    # it shrank while we read it: keep the header's promise
                    log.debug("%s shrank while it was copied", path)
                    data = bytes(min(CHUNK, left))
                self._write(data)
                left -= len(data)
            if size % 512:
                self._write(bytes(512 - size % 512))
        finally:
            os.close(fd)

    def close(self) -> None:
        self._write(bytes(1024))
        self.flush()


def write_tree(tw: TarWriter, path: str, root_name: bytes, *, follow_root: bool = False,
               include_root: bool = True) -> None:
    """The tree at ``path`` as entries ``root_name``, ``root_name/child``... in tar order.
    Only the root is followed when it is a symlink (``follow_root``)."""
    st = os.stat(path) if follow_root else os.lstat(path)
    if include_root:
        tw.add(root_name, path, st, follow=follow_root)
    if not stat.S_ISDIR(st.st_mode):
        return
    prefix = root_name + b"/" if root_name else b""
    stack = [(path, prefix, iter(_sorted_entries(path)))]
    while stack:
        dpath, dprefix, it = stack[-1]
        e = next(it, None)
        if e is None:
            stack.pop()
            continue
        name = dprefix + os.fsencode(e.name)
        cst = e.stat(follow_symlinks=False)
        tw.add(name, e.path, cst)
        if stat.S_ISDIR(cst.st_mode):
            stack.append((e.path, name + b"/", iter(_sorted_entries(e.path))))


def _sorted_entries(path: str) -> list:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: _name_key(e.name))


__all__ = ["CHUNK", "TarWriter", "write_tree"]
