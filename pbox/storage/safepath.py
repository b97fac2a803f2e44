"""Directory descriptors that keep every write of an extraction inside its directory.

Every operation is made relative to a directory descriptor that was opened component
by component with ``O_NOFOLLOW|O_DIRECTORY``, and the last component is always
created, changed or linked with the no-follow variant of the call.  A symlink met on
the way is refused as an escape, never followed.
"""

from __future__ import annotations

import errno
import os
import stat

from pbox.storage.tarread import LayerError, UnsafeLayer, show_name

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def unsafe_entry(entry_name: bytes, why: str) -> UnsafeLayer:
    return UnsafeLayer(f"refusing layer: entry {show_name(entry_name)!r} {why}")


def lstat_non_directory(parent_fd: int, name: bytes, entry_name: bytes, how: str):
    """The lstat of ``name``, which is not a directory; a symlink there is an escape."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise unsafe_entry(entry_name, how)
    return st


def not_a_directory(entry_name: bytes, shown: str) -> LayerError:
    return LayerError(f"layer entry {show_name(entry_name)!r}: {shown!r} is not a directory")


def walk_existing(root_fd: int, parts: tuple, entry_name: bytes) -> int:
    """Open directory ``parts`` without creating anything; the caller closes the fd."""
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:
                shown = show_name(b"/".join(parts[: i + 1]))
                how = f"links through the symlink {shown!r}"
                lstat_non_directory(fd, name, entry_name, how)
                raise not_a_directory(entry_name, shown)
            except FileNotFoundError:
                raise LayerError(
                    f"layer entry {show_name(entry_name)!r}: hardlink target "
                    f"directory {show_name(b'/'.join(parts[: i + 1]))!r} is not in the layer"
                )
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class Cursor:
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
        self._at: tuple = ()  # tuple(self._path), asked for again and again
        st = os.fstat(root_fd)
        self._idents = [(st.st_dev, st.st_ino)]  # of root, path[:1], path[:2], ...
        self._fd = root_fd

    def get(self, parts: tuple) -> int:
        """A descriptor of directory ``parts``, owned by the cursor."""
        if parts == self._at:
            return self._fd
        path = self._path
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
            self._at = tuple(path)
            self._idents.append((st.st_dev, st.st_ino))
        return self._fd

    def _up(self) -> None:
        parent = os.open("..", DIR_FLAGS, dir_fd=self._fd)
        self._path.pop()
        self._at = tuple(self._path)
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
        self._at = ()
        del self._idents[1:]
