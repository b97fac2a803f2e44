"""Thin wrappers over the Linux system calls Python's ``os`` module lacks.

This is the only module of pbox that uses ``ctypes``.  Every function here is a plain
Python function that raises ``OSError`` (with ``errno`` set) when the kernel refuses,
so the code above never sees a return code or ``ctypes`` object.

``setns`` and ``unshare``, which every command joining the user namespace calls, go
through ctypes' C core (``_ctypes``) alone; the ``ctypes`` package, whose import and
set-up here cost ~1.5 ms, is loaded by the first of the other calls, or by ``load()``,
which the container-side modules (mounts, caps, launcher, nsexec) call as they are
imported, before any of them leaves the host's filesystem.

Calls already in ``os`` (``setresuid``, ``setgroups``, ``mknod``, ``pidfd_open``...) are
used from there directly and are not repeated here.
"""

from __future__ import annotations

import _ctypes
import os

# -- namespaces (linux/sched.h) ------------------------------------------------------------
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# -- mount(2) flags (linux/mount.h) ----------------------------------------------------------
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# umount2(2)
MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

# mount_setattr(2) (linux/mount.h)
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# -- prctl(2) (linux/prctl.h) ---------------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capget/capset (linux/capability.h)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# System calls glibc has no wrapper for.  Numbers from 424 on are the same on every
# architecture; pivot_root is not.
_PIVOT_ROOT_NR = {
    "x86_64": 155,
    "amd64": 155,
    "aarch64": 41,
    "arm64": 41,
    "riscv64": 41,
    "loongarch64": 41,
    "i386": 217,
    "i686": 217,
    "armv7l": 218,
    "armv6l": 218,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
}
_NR_MOUNT_SETATTR = 442


class _Program:
    """What ``ctypes.CDLL(None)`` wraps: the program and the libraries it has loaded."""

    _handle = _ctypes.dlopen(None, os.RTLD_NOW)


class _IntFunction(_ctypes.CFuncPtr):
    """A C function taking and returning ``int``s, errno kept (a ``CDLL`` function with
    its default argument and result types)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


_unshare = _IntFunction(("unshare", _Program))
_setns = _IntFunction(("setns", _Program))

_c = None  # the ctypes package and what is built with it (``_ctypes_part``)


def _ctypes_part():
    """``(ctypes, libc, structures)``, made at the first call that needs them."""
    global _c
    if _c is not None:
        return _c
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    libc.syscall.restype = ctypes.c_long
    libc.syncfs.argtypes = [ctypes.c_int]
    libc.socket.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]

    class CapHeader(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    class MountAttr(ctypes.Structure):
        _fields_ = [
            ("attr_set", ctypes.c_uint64),
            ("attr_clr", ctypes.c_uint64),
            ("propagation", ctypes.c_uint64),
            ("userns_fd", ctypes.c_uint64),
        ]

    libc.capget.argtypes = [ctypes.POINTER(CapHeader), ctypes.POINTER(CapData)]
    libc.capset.argtypes = [ctypes.POINTER(CapHeader), ctypes.POINTER(CapData)]
    _c = (ctypes, libc, {"cap_header": CapHeader, "cap_data": CapData,
                         "mount_attr": MountAttr})
    return _c


def _libc():
    return _ctypes_part()[1]


def load() -> None:
    """Import the ctypes part now.  The modules that set up and enter containers call
    this when they are imported: after a pivot_root, or a setns into a container's
    mount namespace, no module can be imported any more."""
    _ctypes_part()


def _fs(path: str | bytes | os.PathLike | None) -> bytes | None:
    if path is None:
        return None
    return os.fsencode(path)


def _check(ret: int, call: str, filename: object = None) -> int:
    if ret == -1:
        err = _ctypes.get_errno()
        msg = f"{call}: {os.strerror(err)}"
        if filename is not None:
            raise OSError(
                err, msg, os.fsdecode(filename) if isinstance(filename, bytes) else filename
            )
        raise OSError(err, msg)
    return ret


# -- namespaces ------------------------------------------------------------------------------


def unshare(flags: int) -> None:
    """unshare(2).  CLONE_NEWUSER needs a single-threaded process (EINVAL otherwise)."""
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2) on an open /proc/PID/ns/* (or pidfd) file descriptor."""
    _check(_setns(fd, nstype), "setns")


# -- mounts ----------------------------------------------------------------------------------


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2).  ``data`` must fit in one page (the kernel copies at most PAGE_SIZE)."""
    src = _fs(source)
    dat = data.encode() if data is not None else None
    ret = _libc().mount(src, _fs(target), fstype.encode() if fstype else None, flags, dat)
    _check(ret, f"mount {fstype or ''} {source or ''}".replace("  ", " ").strip(), target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc().umount2(_fs(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    machine = os.uname().machine  # what platform.machine() returns, without its imports
    nr = _PIVOT_ROOT_NR.get(machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unsupported architecture {machine}")
    ctypes, libc, _ = _ctypes_part()
    ret = libc.syscall(ctypes.c_long(nr), _fs(new_root), _fs(put_old))
    _check(ret, "pivot_root", new_root)


def mount_setattr(
    path: str,
    attr_set: int = 0,
    attr_clr: int = 0,
    *,
    recursive: bool = True,
    dirfd: int = AT_FDCWD,
) -> None:
    """mount_setattr(2) (Linux 5.12+): change mount flags of a whole tree in one call.

    Used to make a recursive bind mount read-only, which MS_REMOUNT would have to do
    mount by mount.
    """
    ctypes, libc, structs = _ctypes_part()
    attr = structs["mount_attr"](attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    ret = libc.syscall(
        ctypes.c_long(_NR_MOUNT_SETATTR),
        ctypes.c_int(dirfd),
        _fs(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(ret, "mount_setattr", path)


# -- process attributes ----------------------------------------------------------------------


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc().prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to us when the thread that forked us dies."""
    prctl(PR_SET_PDEATHSIG, sig)


def get_pdeathsig() -> int:
    ctypes, libc, _ = _ctypes_part()
    out = ctypes.c_int(0)
    ret = libc.prctl(PR_GET_PDEATHSIG, ctypes.addressof(out), 0, 0, 0)
    _check(ret, "prctl(PR_GET_PDEATHSIG)")
    return out.value


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    return bool(prctl(PR_GET_NO_NEW_PRIVS))


def set_child_subreaper(on: bool = True) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if on else 0)


def set_name(name: str) -> None:
    """The process (thread) name shown by ps, at most 15 bytes."""
    ctypes, libc, _ = _ctypes_part()
    buf = ctypes.create_string_buffer(name.encode()[:15])
    ret = libc.prctl(PR_SET_NAME, ctypes.cast(buf, ctypes.c_void_p).value, 0, 0, 0)
    _check(ret, "prctl(PR_SET_NAME)")


def capbset_read(cap: int) -> bool:
    return bool(prctl(PR_CAPBSET_READ, cap))


def capbset_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def cap_ambient_clear_all() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def cap_ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) capability sets as 64-bit masks."""
    ctypes, libc, structs = _ctypes_part()
    hdr = structs["cap_header"](_LINUX_CAPABILITY_VERSION_3, pid)
    data = (structs["cap_data"] * 2)()
    _check(libc.capget(ctypes.byref(hdr), data), "capget")
    eff = data[0].effective | (data[1].effective << 32)
    perm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, perm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    ctypes, libc, structs = _ctypes_part()
    hdr = structs["cap_header"](_LINUX_CAPABILITY_VERSION_3, 0)
    data = (structs["cap_data"] * 2)()
    mask = 0xFFFFFFFF
    data[0].effective, data[1].effective = effective & mask, (effective >> 32) & mask
    data[0].permitted, data[1].permitted = permitted & mask, (permitted >> 32) & mask
    data[0].inheritable, data[1].inheritable = inheritable & mask, (inheritable >> 32) & mask
    _check(libc.capset(ctypes.byref(hdr), data), "capset")


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number this kernel knows (read once, then cached)."""
    global _last_cap
    if _last_cap is not None:
        return _last_cap
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            _last_cap = int(f.read())
    except OSError:
        n = 0
        while True:
            try:
                capbset_read(n + 1)
            except OSError:
                break
            n += 1
        _last_cap = n
    return _last_cap


# -- names -----------------------------------------------------------------------------------


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc().sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc().setdomainname(raw, len(raw)), "setdomainname")


# -- memory ------------------------------------------------------------------------------------
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def keep_freed_memory(largest: int = 32 << 20, *, one_arena: bool = False) -> bool:
    """Have the C library's malloc keep freed blocks of up to ``largest`` bytes for
    the next allocations, instead of unmapping each (glibc's ``mallopt`` thresholds for
    mmap and trimming; they stay set for the rest of the process).  Streaming a layer
    allocates a new 256 KiB - 1 MiB buffer per chunk; by default each is a fresh
    mapping whose pages the kernel must fault in and zero.  False where the C library
    has no ``mallopt`` or took none of the values (then nothing needs undoing).

    ``one_arena``: threads started from now on allocate from the main arena too, not
    from an arena of their own (a new 64 MiB reservation whose pages are all fresh):
    for one small layer's inflating thread, whose buffers the main thread frees.  With
    several threads streaming big layers the arena's lock costs more than it saves."""
    try:
        mallopt = _IntFunction(("mallopt", _Program))
    except AttributeError:  # not glibc
        return False
    mmap_set = bool(mallopt(_M_MMAP_THRESHOLD, largest))
    trim_set = bool(mallopt(_M_TRIM_THRESHOLD, 2 * largest))
    arena_set = one_arena and bool(mallopt(_M_ARENA_MAX, 1))
    return mmap_set or trim_set or arena_set


def release_freed_memory() -> None:
    """Undo :func:`keep_freed_memory` for a process that goes on after a pull (a
    container's owner, a build): glibc's default thresholds again (128 KiB), and the
    freed memory kept meanwhile given back to the kernel (``malloc_trim``)."""
    try:
        mallopt = _IntFunction(("mallopt", _Program))
        trim = _IntFunction(("malloc_trim", _Program))
    except AttributeError:  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 128 << 10)
    mallopt(_M_TRIM_THRESHOLD, 128 << 10)
    mallopt(_M_ARENA_MAX, 8 * (os.cpu_count() or 1))  # glibc's default (0 is refused)
    trim(0)


# -- files and network -----------------------------------------------------------------------

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def syncfs(fd: int) -> None:
    """Flush the filesystem holding ``fd`` (e.g. a FUSE mount before its daemon stops)."""
    _check(_libc().syncfs(fd), "syncfs")


def set_link_up(name: str = "lo") -> None:
    """Bring a network interface up (SIOCSIFFLAGS), e.g. ``lo`` of a new network namespace."""
    import fcntl
    import struct

    # socket(2) through libc: the socket module costs ~3 ms to import, in the container's
    # setup, for one descriptor to ioctl on.
    fd = _libc().socket(2, 2 | os.O_CLOEXEC, 0)  # AF_INET, SOCK_DGRAM | SOCK_CLOEXEC
    _check(fd, "socket")
    try:
        req = struct.pack("16sH22x", name.encode(), 0)
        res = fcntl.ioctl(fd, SIOCGIFFLAGS, req)
        flags = struct.unpack("16sH22x", res)[1]
        fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))
    finally:
        os.close(fd)
