"""Extract one layer tar into its own directory, safely, in the form overlayfs reads.

Layer tars are hostile input.  The reader parses tar headers itself (ustar, GNU long
names, PAX) from a sequential stream: the stream is usually a download being hashed
on the way, so it is never seeked, and it is read to its end even after the tar's
end marker so that the digest covers every byte.

No write can leave ``dest``: every operation is made relative to a directory
descriptor that was opened component by component with ``O_NOFOLLOW|O_DIRECTORY``,
and the last component is always created, changed or linked with the no-follow
variant of the call.  A symlink inside the layer is stored, never followed.  Rules:

* Names are taken relative to the layer root: leading ``/`` and ``.`` components are
  dropped, as docker and GNU tar do.  A ``..`` component, a path through a symlink
  (``link/file``, ``link/../x``), a hardlink through a symlink or to a name not yet
  in the layer, or an entry replacing the layer root by a non-directory raises
  :class:`UnsafeLayer` naming the entry: the caller discards the whole directory.
* A component over 255 bytes or a name over 4096 bytes raises :class:`LayerError`.
* A later entry replaces an earlier one of the same name (a file over a directory
  removes the directory's tree); a directory over a directory merges.
* Modes (setuid/setgid/sticky included) are applied; directories get their mode and
  mtime at the very end, deepest first, so a 0555 or 0000 directory still receives
  its children.  Missing parent directories are created 0755.
* ``keep_owners=True`` (we are root, possibly in a user namespace): entries are
  lchown'ed to the tar's uid/gid; an id the namespace does not map falls back to 0.
  ``keep_owners=False``: no chown, everything belongs to the caller.
* Character and block devices are created when permitted, otherwise skipped (told
  once).  FIFOs are created.  Sockets cannot be in a tar.
* PAX ``SCHILY.xattr.*`` and ``LIBARCHIVE.xattr.*`` attributes are set without
  following symlinks, except the overlay-internal namespaces (``trusted.overlay.``,
  ``user.overlay.``, ``user.fuseoverlayfs.``, ...): a layer must not forge overlay
  metadata.  Failures (EPERM, ENOTSUP) are told once and ignored.

Whiteouts are stored the way overlayfs wants them in a lower directory:

* ``.wh.NAME`` becomes a character device 0/0 named ``NAME`` (Linux >= 5.8 lets an
  unprivileged user create exactly that device).  Kernel overlayfs and
  fuse-overlayfs both read it.  If mknod is refused, a regular empty file
  ``.wh.NAME`` is written instead (fuse-overlayfs understands that form natively;
  kernel overlayfs does not) and the caller is told once.
* ``.wh..wh..opq`` in directory D sets on D the xattrs ``user.overlay.opaque=y``
  (kernel overlayfs mounted with ``userxattr``, i.e. in a user namespace),
  ``user.fuseoverlayfs.opaque=y`` (older fuse-overlayfs reads only that and
  ``trusted.overlay.opaque``; recent ones try ``trusted.overlay.opaque``, then
  ``user.overlay.opaque``, then ``user.fuseoverlayfs.opaque``) and, when we are real
  root, ``trusted.overlay.opaque=y`` (kernel overlayfs mounted without ``userxattr``).
  Both kernel overlayfs (``userxattr``, in a user namespace) and fuse-overlayfs were
  checked to hide what these whiteouts and opaque directories hide.  If the filesystem has no user
  xattrs, an empty regular file ``D/.wh..wh..opq`` is written instead (read by
  fuse-overlayfs) and the caller is told once.
* Other ``.wh..wh.*`` names (``.wh..wh.plnk``...) are aufs internals and skipped.
  ``.wh..``/``.wh...`` (a whiteout of ``.`` or ``..``) are hostile.
* The OCI spec says a whiteout only hides lower layers.  So a whiteout for a name the
  layer already has keeps the entry (a directory becomes opaque instead), and a
  directory arriving over a whiteout of the same layer becomes an opaque directory.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import stat
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from pbox.errors import StoreError, UnsupportedFormat
from pbox.storage.fsutil import chmod_at, remove_tree_at

log = logging.getLogger(__name__)

__all__ = ["ExtractStats", "LayerError", "UnsafeLayer", "extract_layer"]

BLOCK = 512
COPY_CHUNK = 1 << 20
MAX_NAME = 4096  # PATH_MAX
MAX_COMPONENT = 255  # NAME_MAX
MAX_SYMLINK = 4095
MAX_PAX_HEADER = 8 << 20  # xattrs can be large, but not this large
MAX_LONGNAME = 64 << 10

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OPAQUE_XATTRS = ("user.overlay.opaque", "user.fuseoverlayfs.opaque")
PRIVILEGED_OPAQUE_XATTR = "trusted.overlay.opaque"
# xattr namespaces that carry overlay (or our own) bookkeeping: never taken from a layer
INTERNAL_XATTR_PREFIXES = (
    "trusted.overlay.",
    "user.overlay.",
    "user.fuseoverlayfs.",
    "security.fuseoverlayfs.",
    "user.containers.",
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ZERO_BLOCK = bytes(BLOCK)
_NOT_SUPPORTED = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}
_XATTR_SOFT_ERRORS = _NOT_SUPPORTED | {errno.EINVAL, errno.ENOSPC, errno.E2BIG, errno.ERANGE}

# tar type flags
REGULAR_TYPES = (b"0", b"\0", b"7")
HARDLINK, SYMLINK, CHRDEV, BLKDEV, DIRTYPE, FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
GNU_DUMPDIR = b"D"


class LayerError(UnsupportedFormat):
    """A layer tar pbox cannot extract: malformed, truncated, names too long."""


class UnsafeLayer(LayerError):
    """A layer tar that tries to write outside its directory."""


@dataclass
class ExtractStats:
    entries: int = 0  # file system entries in the tar (PAX/long-name headers not counted)
    bytes_written: int = 0  # regular file content
    whiteouts: int = 0  # .wh.NAME entries
    opaque_dirs: int = 0  # .wh..wh..opq entries
    skipped_devices: int = 0  # chr/blk devices we were not allowed to create


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------
# tar header parsing (pure)


@dataclass
class TarEntry:
    """One file system entry of a tar, after PAX / GNU long-name headers are applied."""

    name: bytes
    type: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict | None = None
    data_consumed: bool = False  # set by whoever copied the entry's data


_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")


def parse_number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit of the first byte)."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    try:
        # the common case, "0000644\0": int() strips the blanks
        return int(field.translate(_NUL_TO_SPACE), 8)
    except ValueError:
        pass
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(f"invalid number {text!r} in a tar header")


def _cstring(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def header_checksum_ok(block: bytes) -> bool:
    stored = parse_number(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 256  # the field counts as 8 spaces
    if stored == unsigned:
        return True
    # some old tars summed signed chars
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
    return stored == signed


def parse_header(block: bytes) -> TarEntry:
    """Parse one 512-byte header block (not the end-of-archive zero block)."""
    if not header_checksum_ok(block):
        raise LayerError("invalid tar header checksum (corrupt or not a tar)")
    name = _cstring(block[0:100])
    magic = block[257:263]
    if magic == b"ustar\0":  # POSIX ustar: name may have a prefix; GNU uses that room otherwise
        prefix = _cstring(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    typ = block[156:157]
    entry = TarEntry(
        name=name,
        type=typ,
        mode=parse_number(block[100:108]),
        uid=parse_number(block[108:116]),
        gid=parse_number(block[116:124]),
        size=parse_number(block[124:136]),
        mtime_ns=parse_number(block[136:148]) * 1_000_000_000,
    )
    if typ in (b"1", b"2"):
        entry.linkname = _cstring(block[157:257])
    elif typ in (b"3", b"4"):
        entry.devmajor = parse_number(block[329:337])
        entry.devminor = parse_number(block[337:345])
    return entry


def parse_pax(data: bytes) -> dict:
    """PAX extended header records: ``"<len> <key>=<value>\\n"``; keys str, values bytes."""
    records = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding some writers leave
            break
        sp = data.find(b" ", pos)
        try:
            length = int(data[pos:sp]) if sp > pos else 0
        except ValueError:
            length = 0
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise LayerError("invalid PAX extended header record")
        key, eq, value = data[sp + 1 : end - 1].partition(b"=")
        if not eq:
            raise LayerError("invalid PAX extended header record")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return records


def _pax_time_ns(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    try:
        if "." in text:
            sec, _, frac = text.partition(".")
            neg = sec.startswith("-")
            ns = int(sec or "0") * 1_000_000_000
            frac_ns = int((frac + "000000000")[:9]) if frac else 0
            return ns - frac_ns if neg else ns + frac_ns
        return int(text) * 1_000_000_000
    except ValueError:
        raise LayerError(f"invalid PAX time {text!r}")


def _pax_int(key: str, value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise LayerError(f"invalid PAX {key} {value!r}")


def apply_pax(entry: TarEntry, pax: dict) -> None:
    """Override header fields with PAX records (and collect xattrs)."""
    for key, value in pax.items():
        if key == "path":
            entry.name = value
        elif key == "linkpath":
            entry.linkname = value
        elif key == "size":
            entry.size = _pax_int(key, value)
        elif key == "uid":
            entry.uid = _pax_int(key, value)
        elif key == "gid":
            entry.gid = _pax_int(key, value)
        elif key == "mtime":
            entry.mtime_ns = _pax_time_ns(value)
        elif key == "SCHILY.devmajor":
            entry.devmajor = _pax_int(key, value)
        elif key == "SCHILY.devminor":
            entry.devminor = _pax_int(key, value)
        elif key.startswith("SCHILY.xattr."):
            entry.xattrs = entry.xattrs or {}
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote_to_bytes(key[len("LIBARCHIVE.xattr.") :]).decode(
                "utf-8", "surrogateescape"
            )
            try:
                decoded = base64.b64decode(value + b"=" * (-len(value) % 4))
            except ValueError:
                raise LayerError(f"invalid PAX xattr value for {name!r}")
            entry.xattrs = entry.xattrs or {}
            entry.xattrs.setdefault(name, decoded)
        elif key.startswith("GNU.sparse."):
            raise LayerError("sparse files in a layer tar are not supported")
        # atime, ctime, uname, gname, comment, charset...: not needed


def split_name(name: bytes, what: str = "entry") -> tuple:
    """Turn a tar name into path components relative to the layer root.

    Drops leading ``/``, empty and ``.`` components; raises on ``..`` (UnsafeLayer),
    NUL bytes and names over the Linux limits (LayerError).
    """
    if b"\0" in name:
        raise LayerError(f"layer {what} {_show(name)!r}: NUL byte in name")
    parts = name.split(b"/")
    if b"" in parts or b"." in parts:
        parts = [p for p in parts if p and p != b"."]
    parts = tuple(parts)
    if b".." in parts:
        raise UnsafeLayer(
            f"refusing layer: {what} {_show(name)!r} has a '..' component "
            "(it would write outside the layer)"
        )
    if len(name) <= MAX_COMPONENT:
        return parts  # no component nor the whole can be too long
    for p in parts:
        if len(p) > MAX_COMPONENT:
            raise LayerError(
                f"layer {what} {_show(name[:80])!r}...: a name component is {len(p)} bytes "
                f"long, the limit is {MAX_COMPONENT}"
            )
    if sum(len(p) + 1 for p in parts) > MAX_NAME:
        raise LayerError(
            f"layer {what} {_show(name[:80])!r}...: the path is {len(name)} bytes long, "
            f"the limit is {MAX_NAME}"
        )
    return parts


def whiteout_target(component: bytes):
    """For the last component of a name: ``None`` (not a whiteout), ``b""`` (skipped aufs
    metadata), ``OPAQUE_MARKER``, or the whited-out name."""
    if not component.startswith(WHITEOUT_PREFIX):
        return None
    if component == OPAQUE_MARKER:
        return OPAQUE_MARKER
    if component.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
        return b""
    target = component[len(WHITEOUT_PREFIX) :]
    if target in (b"", b".", b".."):
        raise UnsafeLayer(f"refusing layer: invalid whiteout {_show(component)!r}")
    return target


# ---------------------------------------------------------------------------
# stream reading


class _Reader:
    """Sequential reads from a file-like object, with our own read-ahead buffer."""

    def __init__(self, stream):
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self._stream.read(COPY_CHUNK)
        if not data:
            self.eof = True
            return False
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos :] + data
        else:
            self._buf = data
        self._pos = 0
        return True

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        while len(self._buf) - self._pos < n and self._fill():
            pass
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def read_exact(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise LayerError("truncated layer tar")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._fill():
                    raise LayerError("truncated layer tar")
                continue
            step = min(avail, n)
            self._pos += step
            n -= step

    def copy_to_fd(self, fd: int, n: int) -> None:
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if n >= COPY_CHUNK:
                    # big file: straight from the stream, no copy into our buffer
                    data = self._stream.read(COPY_CHUNK)
                    if not data:
                        self.eof = True
                        raise LayerError("truncated layer tar")
                    if len(data) > n:  # a stream may hand us more than asked
                        self._buf, self._pos = data, 0
                        continue
                    _write_all(fd, data)
                    n -= len(data)
                    continue
                if not self._fill():
                    raise LayerError("truncated layer tar")
                continue
            step = min(avail, n)
            _write_all(fd, memoryview(self._buf)[self._pos : self._pos + step])
            self._pos += step
            n -= step

    def drain(self) -> None:
        """Read the stream to its end (its digest is computed as it is read)."""
        self._buf, self._pos = b"", 0
        while not self.eof:
            if not self._stream.read(COPY_CHUNK):
                self.eof = True


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _padding(size: int) -> int:
    return -size % BLOCK


def iter_entries(reader: _Reader):
    """Yield TarEntry objects; the caller must consume (or skip) ``entry.size`` bytes
    of data of each entry before asking for the next (padding is handled here)."""
    global_pax: dict = {}
    pax: dict = {}
    longname = longlink = None
    pending_data = 0
    while True:
        if pending_data:
            reader.skip(pending_data)
            pending_data = 0
        block = reader.read(BLOCK)
        if not block:
            if pax or longname is not None or longlink is not None:
                raise LayerError("truncated layer tar")
            return  # no end marker: tolerated, as GNU tar does
        if len(block) != BLOCK:
            raise LayerError("truncated layer tar")
        if block == _ZERO_BLOCK:
            return
        entry = parse_header(block)
        typ = entry.type
        if typ in (b"x", b"g"):
            if entry.size > MAX_PAX_HEADER:
                raise LayerError(f"PAX header of {entry.size} bytes is too large")
            data = reader.read_exact(entry.size)
            reader.skip(_padding(entry.size))
            records = parse_pax(data)
            target = pax if typ == b"x" else global_pax
            for k, v in records.items():
                if v == b"" and typ == b"x":  # empty value: unset the global one
                    target[k] = None
                else:
                    target[k] = v
            continue
        if typ in (b"L", b"K"):
            if entry.size > MAX_LONGNAME:
                raise LayerError(
                    f"GNU long name of {entry.size} bytes: the limit is {MAX_NAME}"
                )
            data = _cstring(reader.read_exact(entry.size))
            reader.skip(_padding(entry.size))
            if typ == b"L":
                longname = data
            else:
                longlink = data
            continue
        if typ == b"S":
            raise LayerError("GNU sparse files in a layer tar are not supported")
        if typ in (b"V", b"M"):
            if typ == b"M":
                raise LayerError("multi-volume tar archives are not supported")
            pending_data = entry.size + _padding(entry.size)  # volume label
            continue
        merged = {k: v for k, v in global_pax.items() if v is not None}
        merged.update({k: v for k, v in pax.items() if v is not None})
        if merged:
            apply_pax(entry, merged)
        if longname is not None and "path" not in pax:
            entry.name = longname
        if longlink is not None and "linkpath" not in pax:
            entry.linkname = longlink
        pax = {}
        longname = longlink = None
        if entry.size < 0:
            raise LayerError("negative size in a tar header")
        yield entry
        # data not consumed by the caller (and the padding) is skipped before the next header
        pending_data = (0 if entry.data_consumed else entry.size) + _padding(entry.size)


# ---------------------------------------------------------------------------
# extraction


class _Notices:
    def __init__(self, notice):
        self._notice = notice
        self._seen: set = set()

    def once(self, kind: str, message: str) -> None:
        if kind in self._seen:
            return
        self._seen.add(kind)
        log.debug("layer extraction notice: %s", message)
        if self._notice is not None:
            self._notice(message)


class _Cursor:
    """A position in the layer tree: one open directory and the path to it.

    Moving to another directory climbs with ``..`` to the common ancestor, checking
    at each step that it came back to the directory it went through (device and
    inode), then descends component by component with ``O_NOFOLLOW``.  Tars are
    mostly sorted, so a move is usually one step; and only one descriptor is held
    whatever the depth (a hostile 2000-level path must not exhaust descriptors).
    """

    def __init__(self, root_fd: int, opener):
        self.root_fd = root_fd
        self._open = opener  # (parent_fd, parts so far) -> fd of parts[-1]
        self._path: list = []
        st = os.fstat(root_fd)
        self._idents = [(st.st_dev, st.st_ino)]  # of root, path[:1], path[:2], ...
        self._fd = root_fd

    def get(self, parts: tuple) -> int:
        """A descriptor of directory ``parts``, owned by the cursor."""
        path = self._path
        if len(path) == len(parts) and tuple(path) == parts:
            return self._fd
        common = 0
        limit = min(len(path), len(parts))
        while common < limit and path[common] == parts[common]:
            common += 1
        while len(path) > common:
            self._up()
        for i in range(common, len(parts)):
            child = self._open(self._fd, parts[: i + 1])
            st = os.fstat(child)
            if self._fd != self.root_fd:
                os.close(self._fd)
            self._fd = child
            path.append(parts[i])
            self._idents.append((st.st_dev, st.st_ino))
        return self._fd

    def _up(self) -> None:
        parent = os.open("..", _DIR_FLAGS, dir_fd=self._fd)
        self._path.pop()
        self._idents.pop()
        if not self._path:
            os.close(parent)
            parent = self.root_fd
        else:
            st = os.fstat(parent)
            if (st.st_dev, st.st_ino) != self._idents[-1]:
                os.close(parent)
                raise OSError(errno.ESTALE, "layer directory moved during extraction")
        os.close(self._fd)
        self._fd = parent

    def invalidate(self, parts: tuple) -> None:
        """``parts`` is about to be removed: step out of it if we are inside."""
        while len(self._path) >= len(parts) and tuple(self._path[: len(parts)]) == parts:
            self._up()

    def close(self) -> None:
        if self._fd != self.root_fd:
            os.close(self._fd)
        self._fd = self.root_fd
        self._path = []
        del self._idents[1:]


def _is_whiteout_dev(st) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _Extractor:
    def __init__(self, dest: str, keep_owners: bool, notice):
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.keep_owners = keep_owners
        self.notices = _Notices(notice)
        self.stats = ExtractStats()
        # directory parts -> (mode, mtime_ns or None), applied at the end
        self.dirs: dict = {}
        self.cache = _Cursor(self.root_fd, self._open_parent_component)
        self.entry_name = b""
        self.can_chown = keep_owners
        self.can_mknod_whiteout = True
        self.is_real_root = os.geteuid() == 0 and _in_initial_userns()

    def close(self) -> None:
        self.cache.close()
        os.close(self.root_fd)

    # -- errors

    def _unsafe(self, why: str) -> UnsafeLayer:
        return UnsafeLayer(f"refusing layer: entry {_show(self.entry_name)!r} {why}")

    # -- walking

    def _open_parent_component(self, parent_fd: int, parts: tuple) -> int:
        """Open directory ``parts[-1]`` in ``parent_fd``, creating it (0755) if missing."""
        name = parts[-1]
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            self._mkdir(parent_fd, name, parts)
            self.dirs.setdefault(parts, (0o755, None))
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except NotADirectoryError:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise self._unsafe(
                    f"goes through the symlink {_show(b'/'.join(parts))!r} "
                    "(it would write outside the layer)"
                )
            if _is_whiteout_dev(st):
                # ".wh.d" then "d/x" in the same layer: d is a new, opaque directory
                os.unlink(name, dir_fd=parent_fd)
                self._mkdir(parent_fd, name, parts)
                self.dirs.setdefault(parts, (0o755, None))
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                self._set_opaque(fd, parts)
                return fd
            raise LayerError(
                f"layer entry {_show(self.entry_name)!r}: "
                f"{_show(b'/'.join(parts))!r} is not a directory"
            )

    def _walk_existing(self, parts: tuple) -> int:
        """Open directory ``parts`` without creating anything; the caller closes the fd."""
        fd = os.dup(self.root_fd)
        try:
            for i, name in enumerate(parts):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except NotADirectoryError:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise self._unsafe(
                            f"links through the symlink {_show(b'/'.join(parts[: i + 1]))!r}"
                        )
                    raise LayerError(
                        f"layer entry {_show(self.entry_name)!r}: "
                        f"{_show(b'/'.join(parts[: i + 1]))!r} is not a directory"
                    )
                except FileNotFoundError:
                    raise LayerError(
                        f"layer entry {_show(self.entry_name)!r}: hardlink target "
                        f"directory {_show(b'/'.join(parts[: i + 1]))!r} is not in the layer"
                    )
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _mkdir(self, parent_fd: int, name: bytes, parts: tuple) -> None:
        os.mkdir(name, 0o700, dir_fd=parent_fd)

    def _remove_existing(self, parent_fd: int, name: bytes, parts: tuple, st=None) -> None:
        if st is None:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self.cache.invalidate(parts)
            remove_tree_at(parent_fd, name)
            n = len(parts)
            for key in [k for k in self.dirs if k[:n] == parts]:
                del self.dirs[key]
        else:
            os.unlink(name, dir_fd=parent_fd)

    # -- metadata

    def _chown(self, uid: int, gid: int, *, fd=None, parent_fd=None, name=None) -> None:
        if not self.can_chown:
            return
        try:
            if fd is not None:
                os.fchown(fd, uid, gid)
            else:
                os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.EINVAL:
                self.notices.once(
                    "owner-unmapped",
                    f"some files of the layer belong to ids ({uid}:{gid}) outside the "
                    "user namespace; they were given to root",
                )
                try:
                    if fd is not None:
                        os.fchown(fd, 0, 0)
                    else:
                        os.chown(name, 0, 0, dir_fd=parent_fd, follow_symlinks=False)
                except OSError:
                    pass
            elif e.errno == errno.EPERM:
                self.can_chown = False
                self.notices.once(
                    "owner-eperm",
                    "cannot change file owners while extracting the layer; "
                    "its files belong to the current user",
                )
            else:
                raise

    def _set_xattrs(self, xattrs: dict, *, fd=None, parent_fd=None, name=None) -> None:
        for key in sorted(xattrs):
            if key.startswith(INTERNAL_XATTR_PREFIXES):
                log.debug("dropping overlay-internal xattr %s of %r", key, self.entry_name)
                continue
            try:
                if fd is not None:
                    os.setxattr(fd, key, xattrs[key])
                else:
                    path = b"/proc/self/fd/%d/%s" % (parent_fd, name)
                    os.setxattr(path, key, xattrs[key], follow_symlinks=False)
            except OSError as e:
                if e.errno not in _XATTR_SOFT_ERRORS and e.errno != errno.ENOENT:
                    raise
                self.notices.once(
                    "xattr",
                    f"some extended attributes of the layer could not be set "
                    f"(first: {key} on {_show(self.entry_name)!r}: {e.strerror})",
                )

    def _set_opaque(self, dir_fd: int, parts: tuple) -> None:
        self.stats.opaque_dirs += 1
        if self.is_real_root:
            try:
                os.setxattr(dir_fd, PRIVILEGED_OPAQUE_XATTR, b"y")
            except OSError as e:
                if e.errno not in _NOT_SUPPORTED:
                    raise
        try:
            for key in OPAQUE_XATTRS:
                os.setxattr(dir_fd, key, b"y")
        except OSError as e:
            if e.errno not in _NOT_SUPPORTED:
                raise
            self.notices.once(
                "opaque",
                f"this file system cannot store overlay xattrs ({e.strerror}); opaque "
                "directories are marked with a .wh..wh..opq file, which only "
                "fuse-overlayfs understands",
            )
            try:
                fd = os.open(OPAQUE_MARKER, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
                os.close(fd)
            except FileExistsError:
                pass

    @staticmethod
    def _times(entry: TarEntry):
        return (entry.mtime_ns, entry.mtime_ns)

    def _finish_node(self, parent_fd: int, name: bytes, entry: TarEntry, *, chmod: bool) -> None:
        """Owner, mode, xattrs, times of a non-regular, non-directory entry just created."""
        self._chown(entry.uid, entry.gid, parent_fd=parent_fd, name=name)
        if chmod:
            chmod_at(parent_fd, name, entry.mode & 0o7777)
        if entry.xattrs:
            self._set_xattrs(entry.xattrs, parent_fd=parent_fd, name=name)
        os.utime(name, ns=self._times(entry), dir_fd=parent_fd, follow_symlinks=False)

    # -- entries

    def run(self, reader: _Reader) -> None:
        for entry in iter_entries(reader):
            self.entry_name = entry.name
            self.stats.entries += 1
            try:
                self._entry(entry, reader)
            except (LayerError, StoreError):
                raise
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:
                    raise LayerError(f"layer entry {_show(entry.name)!r}: name too long")
                raise StoreError(
                    f"cannot extract layer entry {_show(entry.name)!r}: {e.strerror or e}"
                ) from e
        self.entry_name = b""
        self.cache.close()
        self._apply_dir_metadata()
        reader.drain()

    def _entry(self, entry: TarEntry, reader: _Reader) -> None:
        typ = entry.type
        if typ in REGULAR_TYPES and entry.name.endswith(b"/"):
            typ = DIRTYPE  # old tars mark directories with a trailing slash only
        if typ == GNU_DUMPDIR:
            typ = DIRTYPE
        parts = split_name(entry.name)
        if not parts:
            if typ != DIRTYPE:
                raise self._unsafe("would replace the layer root with a non-directory")
            self._root_dir(entry)
            return
        last = parts[-1]
        wh = whiteout_target(last)
        if wh is not None:
            if wh == b"":
                log.debug("skipping aufs metadata entry %r", entry.name)
                return
            parent_fd = self.cache.get(parts[:-1])
            if wh == OPAQUE_MARKER:
                fd = os.dup(parent_fd)
                try:
                    self._set_opaque(fd, parts[:-1])
                finally:
                    os.close(fd)
            else:
                self._whiteout(parent_fd, wh, parts[:-1] + (wh,), entry)
            return
        parent_fd = self.cache.get(parts[:-1])
        if typ in REGULAR_TYPES:
            self._regular(parent_fd, last, parts, entry, reader)
        elif typ == DIRTYPE:
            self._directory(parent_fd, last, parts, entry)
        elif typ == SYMLINK:
            self._symlink(parent_fd, last, parts, entry)
        elif typ == HARDLINK:
            self._hardlink(parent_fd, last, parts, entry)
        elif typ in (CHRDEV, BLKDEV, FIFO):
            self._node(parent_fd, last, parts, entry)
        else:
            raise LayerError(
                f"layer entry {_show(entry.name)!r} has unsupported tar type {typ!r}"
            )

    def _create(self, parent_fd: int, name: bytes, parts: tuple, make):
        """Run ``make()``; if the name exists, remove what is there and run it again."""
        try:
            return make()
        except FileExistsError:
            self._remove_existing(parent_fd, name, parts)
            return make()

    def _regular(self, parent_fd, name, parts, entry, reader) -> None:
        fd = self._create(
            parent_fd, name, parts, lambda: os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        )
        try:
            size = entry.size
            entry.data_consumed = True
            reader.copy_to_fd(fd, size)
            self.stats.bytes_written += size
            # chown first: it clears setuid/setgid bits, the chmod sets them back
            self._chown(entry.uid, entry.gid, fd=fd)
            os.fchmod(fd, entry.mode & 0o7777)
            if entry.xattrs:
                self._set_xattrs(entry.xattrs, fd=fd)
            os.utime(fd, ns=self._times(entry))
        finally:
            os.close(fd)

    def _root_dir(self, entry: TarEntry) -> None:
        self._chown(entry.uid, entry.gid, fd=self.root_fd)
        if entry.xattrs:
            self._set_xattrs(entry.xattrs, fd=self.root_fd)
        self.dirs[()] = (entry.mode & 0o7777, entry.mtime_ns)

    def _directory(self, parent_fd, name, parts, entry) -> None:
        opaque = False
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                opaque = _is_whiteout_dev(st)
                self._remove_existing(parent_fd, name, parts, st)
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        self._chown(entry.uid, entry.gid, parent_fd=parent_fd, name=name)
        if entry.xattrs or opaque:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            try:
                if entry.xattrs:
                    self._set_xattrs(entry.xattrs, fd=fd)
                if opaque:
                    self._set_opaque(fd, parts)
            finally:
                os.close(fd)
        self.dirs[parts] = (entry.mode & 0o7777, entry.mtime_ns)

    def _symlink(self, parent_fd, name, parts, entry) -> None:
        target = entry.linkname
        if not target or b"\0" in target or len(target) > MAX_SYMLINK:
            raise LayerError(f"layer entry {_show(entry.name)!r}: invalid symlink target")
        self._create(
            parent_fd, name, parts, lambda: os.symlink(target, name, dir_fd=parent_fd)
        )
        self._finish_node(parent_fd, name, entry, chmod=False)

    def _hardlink(self, parent_fd, name, parts, entry) -> None:
        tparts = split_name(entry.linkname, "hardlink target of " + _show(entry.name))
        if not tparts:
            raise self._unsafe("is a hardlink to the layer root")
        if tparts == parts:
            return  # a link to itself: nothing to do
        tdir = self._walk_existing(tparts[:-1])
        try:
            tname = tparts[-1]
            try:
                tst = os.stat(tname, dir_fd=tdir, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(
                    f"layer entry {_show(entry.name)!r}: hardlink target "
                    f"{_show(entry.linkname)!r} is not in the layer"
                )
            if stat.S_ISDIR(tst.st_mode):
                raise self._unsafe("is a hardlink to a directory")

            def make():
                os.link(tname, name, src_dir_fd=tdir, dst_dir_fd=parent_fd,
                        follow_symlinks=False)

            try:
                self._create(parent_fd, name, parts, make)
            except FileNotFoundError:
                # the entry being replaced contained the target
                raise LayerError(
                    f"layer entry {_show(entry.name)!r}: hardlink target "
                    f"{_show(entry.linkname)!r} is not in the layer"
                )
        finally:
            os.close(tdir)

    def _node(self, parent_fd, name, parts, entry) -> None:
        if entry.type == FIFO:
            kind, dev = stat.S_IFIFO, 0
        else:
            kind = stat.S_IFCHR if entry.type == CHRDEV else stat.S_IFBLK
            dev = os.makedev(entry.devmajor, entry.devminor)
        try:
            self._create(
                parent_fd, name, parts,
                lambda: os.mknod(name, kind | 0o600, dev, dir_fd=parent_fd),
            )
        except PermissionError:
            self.stats.skipped_devices += 1
            self.notices.once(
                "device",
                f"device nodes of the layer were skipped (not permitted here), "
                f"first: {_show(entry.name)!r}",
            )
            return
        self._finish_node(parent_fd, name, entry, chmod=True)

    def _whiteout(self, parent_fd, name, parts, entry) -> None:
        self.stats.whiteouts += 1
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            # the layer itself has this name: a whiteout only hides lower layers
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                try:
                    self._set_opaque(fd, parts)
                finally:
                    os.close(fd)
            return
        if self.can_mknod_whiteout:
            try:
                os.mknod(name, stat.S_IFCHR, 0, dir_fd=parent_fd)
            except PermissionError:
                self.can_mknod_whiteout = False
                self.notices.once(
                    "whiteout",
                    "cannot create overlay whiteout devices here (needs Linux >= 5.8); "
                    "deleted files are kept as .wh. files, which only fuse-overlayfs "
                    "understands",
                )
            else:
                self._chown(entry.uid, entry.gid, parent_fd=parent_fd, name=name)
                os.utime(name, ns=self._times(entry), dir_fd=parent_fd, follow_symlinks=False)
                return
        whname = WHITEOUT_PREFIX + name
        try:
            fd = os.open(whname, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            return
        try:
            os.utime(fd, ns=self._times(entry))
        finally:
            os.close(fd)

    def _apply_dir_metadata(self) -> None:
        """Modes and mtimes of directories, deepest first (children sort after parents).

        The cursor only ever stands in, climbs out of or goes through directories not
        yet done (still u+rwx): a directory is changed from its parent.
        """
        cache = _Cursor(self.root_fd, self._open_existing_component)
        try:
            for parts in sorted(self.dirs, reverse=True):
                mode, mtime_ns = self.dirs[parts]
                self.entry_name = b"/".join(parts)
                if not parts:
                    fd = os.dup(self.root_fd)
                else:
                    parent_fd = cache.get(parts[:-1])
                    fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent_fd)
                try:
                    os.fchmod(fd, mode)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
        except OSError as e:
            raise StoreError(
                f"cannot set the mode of layer directory {_show(self.entry_name)!r}: "
                f"{e.strerror or e}"
            ) from e
        finally:
            cache.close()

    @staticmethod
    def _open_existing_component(parent_fd: int, parts: tuple) -> int:
        return os.open(parts[-1], _DIR_FLAGS, dir_fd=parent_fd)


def _in_initial_userns() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def extract_layer(stream, dest: str, *, keep_owners: bool, notice=None,
                  split_to: str | None = None) -> ExtractStats:
    """Extract the uncompressed layer tar read from ``stream`` into directory ``dest``.

    ``dest`` must exist and be empty.  ``notice(message)`` is called at most once per
    kind of degradation (no whiteout devices, unmapped owners, skipped devices, xattrs
    refused).  Raises :class:`UnsafeLayer` for an entry trying to escape ``dest``,
    :class:`LayerError` for a tar pbox cannot extract, :class:`StoreError` when the
    file system fails; after an error, ``dest`` holds a partial layer the caller
    must remove (``fsutil.remove_tree``).  The stream is read to its end.
    ``split_to``: also record the tar there as a tar-split file (``tarsplit``).
    """
    recorder = None
    if split_to is not None:
        from pbox.storage.tarsplit import Recorder

        stream = recorder = Recorder(stream, split_to)
    ex = _Extractor(dest, keep_owners, notice)
    try:
        ex.run(_Reader(stream))
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    finally:
        ex.close()
    if recorder is not None:
        recorder.finish()
    return ex.stats
