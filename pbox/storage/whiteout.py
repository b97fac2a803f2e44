"""Whiteouts and opaque directories, stored the way overlayfs reads a lower directory:

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

import errno
import os
import stat

from pbox.storage.safepath import FILE_FLAGS
from pbox.storage.tarread import UnsafeLayer, show_name

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

# the file system or the user namespace refuses: degrade, tell once
NOT_SUPPORTED = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


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
        raise UnsafeLayer(f"refusing layer: invalid whiteout {show_name(component)!r}")
    return target


def is_whiteout_dev(st) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def mark_opaque(dir_fd: int, *, privileged: bool, notices) -> None:
    """Mark directory ``dir_fd`` opaque: it hides what lower layers have under its name."""
    if privileged:
        try:
            os.setxattr(dir_fd, PRIVILEGED_OPAQUE_XATTR, b"y")
        except OSError as e:
            if e.errno not in NOT_SUPPORTED:
                raise
    try:
        for key in OPAQUE_XATTRS:
            os.setxattr(dir_fd, key, b"y")
    except OSError as e:
        if e.errno not in NOT_SUPPORTED:
            raise
        notices.once(
            "opaque",
            f"this file system cannot store overlay xattrs ({e.strerror}); opaque "
            "directories are marked with a .wh..wh..opq file, which only "
            "fuse-overlayfs understands",
        )
        try:
            fd = os.open(OPAQUE_MARKER, FILE_FLAGS, 0o600, dir_fd=dir_fd)
            os.close(fd)
        except FileExistsError:
            pass


def mknod_whiteout(parent_fd: int, name: bytes, notices) -> bool:
    """Create the whiteout device 0/0 ``name``; False (told once) when it is not permitted."""
    try:
        os.mknod(name, stat.S_IFCHR, 0, dir_fd=parent_fd)
    except PermissionError:
        notices.once(
            "whiteout",
            "cannot create overlay whiteout devices here (needs Linux >= 5.8); "
            "deleted files are kept as .wh. files, which only fuse-overlayfs "
            "understands",
        )
        return False
    return True


def write_whiteout_file(parent_fd: int, name: bytes, times: tuple) -> None:
    """The fallback form: an empty regular file ``.wh.NAME`` (fuse-overlayfs reads it)."""
    whname = WHITEOUT_PREFIX + name
    try:
        fd = os.open(whname, FILE_FLAGS, 0o600, dir_fd=parent_fd)
    except FileExistsError:
        return
    try:
        os.utime(fd, ns=times)
    finally:
        os.close(fd)
