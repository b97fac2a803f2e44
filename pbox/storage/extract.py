"""Extract one layer tar into its own directory, safely, in the form overlayfs reads.

Layer tars are hostile input.  ``tarread`` parses them from the sequential stream
(never seeked, read to its end so that a digest computed on the way covers every
byte); this module creates the entries; ``safepath`` holds the directory descriptors
that keep it inside ``dest``; ``whiteout`` stores whiteouts and opaque directories
in the form overlayfs reads (see there).

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
"""

from __future__ import annotations

import errno
import os
import stat

from pbox.errors import StoreError
from pbox.lazylog import get_logger
from pbox.record import record
from pbox.storage.fsutil import chmod_at, remove_tree_at
from pbox.storage.safepath import (
    DIR_FLAGS,
    FILE_FLAGS,
    Cursor,
    lstat_non_directory,
    not_a_directory,
    unsafe_entry,
    walk_existing,
)
from pbox.storage.tarread import (
    BLKDEV,
    CHRDEV,
    DIRTYPE,
    FIFO,
    GNU_DUMPDIR,
    HARDLINK,
    REGULAR_TYPES,
    SYMLINK,
    LayerError,
    TarEntry,
    TarReader,
    UnsafeLayer,
    iter_entries,
    show_name,
    split_name,
)
from pbox.storage.whiteout import (
    INTERNAL_XATTR_PREFIXES,
    NOT_SUPPORTED,
    OPAQUE_MARKER,
    is_whiteout_dev,
    mark_opaque,
    mknod_whiteout,
    whiteout_target,
    write_whiteout_file,
)

log = get_logger(__name__)

__all__ = ["ExtractStats", "LayerError", "UnsafeLayer", "extract_layer"]

MAX_SYMLINK = 4095
_XATTR_SOFT_ERRORS = NOT_SUPPORTED | {errno.EINVAL, errno.ENOSPC, errno.E2BIG, errno.ERANGE}


@record
class ExtractStats:
    entries: int = 0  # file system entries in the tar (PAX/long-name headers not counted)
    bytes_written: int = 0  # regular file content
    whiteouts: int = 0  # .wh.NAME entries
    opaque_dirs: int = 0  # .wh..wh..opq entries
    skipped_devices: int = 0  # chr/blk devices we were not allowed to create


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


class _Extractor:
    def __init__(self, dest: str, keep_owners: bool, notice):
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.keep_owners = keep_owners
        self.notices = _Notices(notice)
        self.stats = ExtractStats()
        # directory parts -> (mode, mtime_ns or None), applied at the end
        self.dirs: dict = {}
        self.cache = Cursor(self.root_fd, self._open_parent_component)
        self.entry_name = b""
        self.can_chown = keep_owners
        # who owns what this process creates here: nothing to change for an entry that
        # should belong to that very owner (most of a layer: root's).  A set-group-ID
        # layer directory passes its group on, to files and to the directories below.
        st = os.fstat(self.root_fd)
        self.new_owner = (os.geteuid(), st.st_gid if st.st_mode & stat.S_ISGID
                          else os.getegid())
        self.can_mknod_whiteout = True
        self.is_real_root = os.geteuid() == 0 and _in_initial_userns()

    def close(self) -> None:
        self.cache.close()
        os.close(self.root_fd)

    # -- errors

    def _unsafe(self, why: str) -> UnsafeLayer:
        return unsafe_entry(self.entry_name, why)

    # -- walking

    def _open_parent_component(self, parent_fd: int, parts: tuple) -> int:
        """Open directory ``parts[-1]`` in ``parent_fd``, creating it (0755) if missing."""
        name = parts[-1]
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            self._mkdir(parent_fd, name, parts)
            self.dirs.setdefault(parts, (0o755, None))
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except NotADirectoryError:
            shown = show_name(b"/".join(parts))
            st = lstat_non_directory(
                parent_fd, name, self.entry_name,
                f"goes through the symlink {shown!r} (it would write outside the layer)",
            )  # fmt: skip
            if is_whiteout_dev(st):
                # ".wh.d" then "d/x" in the same layer: d is a new, opaque directory
                os.unlink(name, dir_fd=parent_fd)
                self._mkdir(parent_fd, name, parts)
                self.dirs.setdefault(parts, (0o755, None))
                fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
                self._set_opaque(fd, parts)
                return fd
            raise not_a_directory(self.entry_name, shown)

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

    def _chown(self, uid: int, gid: int, *, fd=None, parent_fd=None, name=None,
               new: bool = False) -> None:
        """Give an entry its owner; ``new``: this process just created it."""
        if not self.can_chown or new and (uid, gid) == self.new_owner:
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
                    f"(first: {key} on {show_name(self.entry_name)!r}: {e.strerror})",
                )

    def _set_opaque(self, dir_fd: int, parts: tuple) -> None:
        self.stats.opaque_dirs += 1
        mark_opaque(dir_fd, privileged=self.is_real_root, notices=self.notices)

    @staticmethod
    def _times(entry: TarEntry):
        return (entry.mtime_ns, entry.mtime_ns)

    def _finish_node(self, parent_fd: int, name: bytes, entry: TarEntry, chmod: bool) -> None:
        """Owner, mode, xattrs, times of a non-regular, non-directory entry just created.
        (A small layer can hold hundreds of symlinks: nothing is called that has
        nothing to do.)"""
        if (entry.uid, entry.gid) != self.new_owner:
            self._chown(entry.uid, entry.gid, parent_fd=parent_fd, name=name, new=True)
        if chmod:
            chmod_at(parent_fd, name, entry.mode & 0o7777)
        if entry.xattrs:
            self._set_xattrs(entry.xattrs, parent_fd=parent_fd, name=name)
        mtime = entry.mtime_ns
        os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)

    # -- entries

    def run(self, reader: TarReader) -> None:
        for entry in iter_entries(reader):
            self.entry_name = entry.name
            self.stats.entries += 1
            try:
                self._entry(entry, reader)
            except (LayerError, StoreError):
                raise
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:
                    raise LayerError(f"layer entry {show_name(entry.name)!r}: name too long")
                raise StoreError(
                    f"cannot extract layer entry {show_name(entry.name)!r}: {e.strerror or e}"
                ) from e
        self.entry_name = b""
        self.cache.close()
        self._apply_dir_metadata()
        reader.drain()

    def _entry(self, entry: TarEntry, reader: TarReader) -> None:
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
                f"layer entry {show_name(entry.name)!r} has unsupported tar type {typ!r}"
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
            parent_fd, name, parts, lambda: os.open(name, FILE_FLAGS, 0o600, dir_fd=parent_fd)
        )
        try:
            size = entry.size
            entry.data_consumed = True
            reader.copy_to_fd(fd, size, parts)
            self.stats.bytes_written += size
            # chown first: it clears setuid/setgid bits, the chmod sets them back
            self._chown(entry.uid, entry.gid, fd=fd, new=True)
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
        new = True
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            new = not stat.S_ISDIR(st.st_mode)  # (an earlier entry may have chowned it)
            if new:
                opaque = is_whiteout_dev(st)
                self._remove_existing(parent_fd, name, parts, st)
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        self._chown(entry.uid, entry.gid, parent_fd=parent_fd, name=name, new=new)
        if entry.xattrs or opaque:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
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
            raise LayerError(f"layer entry {show_name(entry.name)!r}: invalid symlink target")
        # (not through _create: a small layer can be mostly symlinks, each ~13 us)
        try:
            os.symlink(target, name, dir_fd=parent_fd)
        except FileExistsError:
            self._remove_existing(parent_fd, name, parts)
            os.symlink(target, name, dir_fd=parent_fd)
        self._finish_node(parent_fd, name, entry, False)

    def _hardlink(self, parent_fd, name, parts, entry) -> None:
        tparts = split_name(entry.linkname, "hardlink target of " + show_name(entry.name))
        if not tparts:
            raise self._unsafe("is a hardlink to the layer root")
        if tparts == parts:
            return  # a link to itself: nothing to do
        tdir = walk_existing(self.root_fd, tparts[:-1], self.entry_name)
        try:
            tname = tparts[-1]
            try:
                tst = os.stat(tname, dir_fd=tdir, follow_symlinks=False)
            except FileNotFoundError:
                raise _no_link_target(entry)
            if stat.S_ISDIR(tst.st_mode):
                raise self._unsafe("is a hardlink to a directory")

            def make():
                os.link(tname, name, src_dir_fd=tdir, dst_dir_fd=parent_fd,
                        follow_symlinks=False)

            try:
                self._create(parent_fd, name, parts, make)
            except FileNotFoundError:
                # the entry being replaced contained the target
                raise _no_link_target(entry)
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
                f"first: {show_name(entry.name)!r}",
            )
            return
        self._finish_node(parent_fd, name, entry, True)

    def _whiteout(self, parent_fd, name, parts, entry) -> None:
        self.stats.whiteouts += 1
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            # the layer itself has this name: a whiteout only hides lower layers
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
                try:
                    self._set_opaque(fd, parts)
                finally:
                    os.close(fd)
            return
        if self.can_mknod_whiteout:
            if mknod_whiteout(parent_fd, name, self.notices):
                self._chown(entry.uid, entry.gid, parent_fd=parent_fd, name=name)
                os.utime(name, ns=self._times(entry), dir_fd=parent_fd, follow_symlinks=False)
                return
            self.can_mknod_whiteout = False
        write_whiteout_file(parent_fd, name, self._times(entry))

    def _apply_dir_metadata(self) -> None:
        """Modes and mtimes of directories, deepest first (children sort after parents).

        The cursor only ever stands in, climbs out of or goes through directories not
        yet done (still u+rwx): a directory is changed from its parent.
        """
        cache = Cursor(self.root_fd, self._open_existing_component)
        try:
            for parts in sorted(self.dirs, reverse=True):
                mode, mtime_ns = self.dirs[parts]
                self.entry_name = b"/".join(parts)
                if not parts:
                    fd = os.dup(self.root_fd)
                else:
                    parent_fd = cache.get(parts[:-1])
                    fd = os.open(parts[-1], DIR_FLAGS, dir_fd=parent_fd)
                try:
                    os.fchmod(fd, mode)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
        except OSError as e:
            raise StoreError(
                f"cannot set the mode of layer directory {show_name(self.entry_name)!r}: "
                f"{e.strerror or e}"
            ) from e
        finally:
            cache.close()

    @staticmethod
    def _open_existing_component(parent_fd: int, parts: tuple) -> int:
        return os.open(parts[-1], DIR_FLAGS, dir_fd=parent_fd)


def _no_link_target(entry: TarEntry) -> LayerError:
    return LayerError(
        f"layer entry {show_name(entry.name)!r}: hardlink target "
        f"{show_name(entry.linkname)!r} is not in the layer"
    )


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
    return LayerExtraction(dest, keep_owners=keep_owners, notice=notice,
                           split_to=split_to).run(stream)


class LayerExtraction:
    """:func:`extract_layer` in two steps: set up (``dest`` opened, the tar-split file
    begun), then :meth:`run` once the stream is there.  ``pbox.pull`` sets up while the
    registry prepares the layer's answer.  One that will not run is given back with
    :meth:`close` (its files stay for the caller to remove, as after an error)."""

    def __init__(self, dest: str, *, keep_owners: bool, notice=None,
                 split_to: str | None = None):
        self._ex = _Extractor(dest, keep_owners, notice)
        self._recorder = None
        if split_to is not None:
            try:
                from pbox.storage.tarsplit import Recorder

                self._recorder = Recorder(split_to)
            except BaseException:
                self._ex.close()
                raise
        self._open = True

    def run(self, stream) -> ExtractStats:
        """Extract the tar read from ``stream`` (see :func:`extract_layer`)."""
        if not self._open:
            raise ValueError("this extraction has run or was closed")
        self._open = False
        ex, recorder = self._ex, self._recorder
        try:
            ex.run(TarReader(stream, recorder))
        except BaseException:
            if recorder is not None:
                recorder.abort()
            raise
        finally:
            ex.close()
        if recorder is not None:
            recorder.finish()
        return ex.stats

    def close(self) -> None:
        """Give back an extraction that has not run: nothing recorded, ``dest`` closed."""
        if self._open:
            self._open = False
            if self._recorder is not None:
                self._recorder.abort()
            self._ex.close()
