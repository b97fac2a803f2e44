"""Small filesystem helpers of the store.

Everything here works on paths the store owns, but still never follows a symlink
below the path it was given: a layer or a container's upper dir is content from an
image, and removing it must not reach anything else.  Errors are plain ``OSError``;
the callers turn them into store errors with context.
"""

from __future__ import annotations

import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH = getattr(os, "O_PATH", 0)


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """os.write until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: str, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a reader sees the old or the new content, never half.

    Writes a temp file next to ``path``, fsyncs it, renames it over ``path`` and
    fsyncs the directory.  ``mode`` is applied exactly (the umask does not apply).
    ``durable=False`` skips both fsyncs, for runtime state that a reboot makes moot
    anyway (a running container's state): the rename still makes the write atomic for
    every reader, and an fsync costs milliseconds on a disk.
    """
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


def unlink_if_present(path: str) -> None:
    """``os.unlink`` that lets a missing file be (another process removed it first)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def chmod_at(dir_fd: int, name, mode: int) -> None:
    """chmod ``name`` inside ``dir_fd`` without following it if it is a symlink.

    A symlink itself is left alone (Linux has no modes on symlinks).  Python's
    ``chmod(follow_symlinks=False)`` needs glibc >= 2.32; older ones get the same
    effect through an ``O_PATH`` descriptor and ``/proc/self/fd``.
    """
    try:
        os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
        return
    except (NotImplementedError, ValueError):
        pass  # symlink, or no fchmodat(AT_SYMLINK_NOFOLLOW): do it by hand below
    fd = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            return
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _open_dir_for_removal(parent_fd: int, name) -> int:
    """Open subdirectory ``name`` so that its entries can be removed: u+rwx if needed."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        # mode 0000 (or no r/x for us): we own it, so chmod then retry
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        chmod_at(parent_fd, name, stat.S_IMODE(st.st_mode) | 0o700)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700:  # e.g. 0555: we can list, not unlink
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _clear_dir(top_fd: int) -> None:
    """Remove everything inside the directory open as ``top_fd`` (not ``top_fd`` itself).

    Iterative, and it holds one directory descriptor at a time whatever the depth:
    it climbs back with ``..`` and checks that it came back to the directory it
    left (device and inode), so a tree moved away under it is an error, not a
    walk elsewhere.
    """
    cur = os.dup(top_fd)
    # one level per directory entered: (its name in the parent, parent's (dev, ino),
    # names of the subdirectories of the parent still to do)
    stack: list[tuple[object, tuple[int, int], list]] = []
    try:
        pending = _unlink_files(cur)
        while True:
            if pending:
                name = pending.pop()
                st = os.fstat(cur)
                child = _open_dir_for_removal(cur, name)
                stack.append((name, (st.st_dev, st.st_ino), pending))
                os.close(cur)
                cur = child
                pending = _unlink_files(cur)
                continue
            if not stack:
                return
            name, ident, pending = stack.pop()
            parent = os.open("..", _DIR_FLAGS, dir_fd=cur)
            st = os.fstat(parent)
            if (st.st_dev, st.st_ino) != ident:
                os.close(parent)
                raise OSError(f"directory moved while removing it: {name!r}")
            os.close(cur)
            cur = parent
            os.rmdir(name, dir_fd=cur)
    finally:
        os.close(cur)


def _unlink_files(dir_fd: int) -> list:
    """Unlink every non-directory in ``dir_fd``; return the names of subdirectories."""
    subdirs = []
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
        else:
            try:
                os.unlink(entry.name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
    return subdirs


def remove_tree_at(parent_fd: int, name) -> None:
    """Remove ``name`` inside directory ``parent_fd``: a file, a symlink or a whole tree."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = _open_dir_for_removal(parent_fd, name)
    try:
        _clear_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove_tree(path: str) -> None:
    """Delete ``path`` and everything below it; a missing path is not an error.

    Works on trees holding directories of mode 0000 or 0555 (adds u+rwx where
    needed) and never follows a symlink: a symlink is removed, not its target.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path.rstrip("/") or "/")
    if not name:
        raise OSError(f"refusing to remove {path!r}")
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_tree_at(parent_fd, name)
    finally:
        os.close(parent_fd)
