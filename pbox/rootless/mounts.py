"""Building a container's filesystem inside its mount namespace.

Everything here runs in the launcher's children, after ``unshare(CLONE_NEWNS)``: the
mounts are private to the container and vanish with its last process.  Paths taken
from the image (mount targets, /etc files) are resolved with :func:`secure_join` so a
symlink in a layer cannot point a mount outside the container's root.

Nothing here may import lazily: after ``pivot_root`` the host's Python library is gone.
"""

from __future__ import annotations

import _signal as signal  # (signal imports enum: ~2 ms of every run)
import errno
import fcntl
import os
import stat
import time

from pbox.record import factory, record
from pbox.rootless import syscalls
from pbox.rootless.spec import (
    DRIVER_AUTO,
    DRIVER_FUSE,
    DRIVER_OVERLAY,
    DRIVER_VFS,
    DeviceSpec,
    MountSpec,
    RootfsSpec,
)
from pbox.rootless.syscalls import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
)

syscalls.load()  # ctypes, while imports work: before any pivot_root or setns

# The kernel copies at most one page of mount data; keep clear of it.
MOUNT_DATA_MAX = 4000

OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")
VFS_DONE_SUFFIX = ".vfs-complete"

HOST_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


class MountError(Exception):
    """A step of the container's filesystem setup failed; the text is for the user."""


# -- paths inside the container's root ----------------------------------------------------


def secure_join(root: str, unsafe: str) -> str:
    """``root/unsafe`` with every symlink resolved as if ``root`` were ``/``.

    The result never leaves ``root`` (``..`` and absolute link targets are clamped to it).
    Components that do not exist yet are appended as they are.
    """
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            done.append(part)
            continue
        except NotADirectoryError:
            raise MountError(f"{'/' + '/'.join(done)} is not a directory in the container")
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 255:
                raise MountError(f"too many levels of symbolic links in {unsafe}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        done.append(part)
    return os.path.join(root, *done)


def mkdir_in(root: str, path: str, mode: int = 0o755) -> str:
    """Create directory ``path`` inside ``root`` (and its parents); return its host path."""
    full = secure_join(root, path)
    if not os.path.isdir(full):
        parent = os.path.dirname(full)
        if parent != full and not os.path.isdir(parent):
            mkdir_in(root, os.path.relpath(parent, root), mode)
            full = secure_join(root, path)
        try:
            os.mkdir(full, mode)
        except FileExistsError:
            if not os.path.isdir(full):
                raise MountError(f"{path} exists in the container and is not a directory")
        except OSError as e:
            # the container's path, not where its root is on the host
            raise MountError(f"mkdir /{path.lstrip('/')}: {e.strerror}")
    return full


def touch_in(root: str, path: str, mode: int = 0o644) -> str:
    """Make sure file ``path`` exists inside ``root`` (a mount point for a file)."""
    full = secure_join(root, path)
    if os.path.lexists(full):
        if os.path.isdir(full):
            raise MountError(f"{path} is a directory in the container, cannot mount a file on it")
        return full
    parent = os.path.relpath(os.path.dirname(full), root)
    mkdir_in(root, parent)
    full = secure_join(root, path)
    fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    os.close(fd)
    return full


# -- mount flags ---------------------------------------------------------------------------


def make_rslave(path: str = "/") -> None:
    """Stop our mounts from propagating to the host (host mounts still propagate in)."""
    syscalls.mount(None, path, None, MS_REC | MS_SLAVE)


def _statvfs_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    out = 0
    for st_bit, ms_bit in (
        (os.ST_RDONLY, MS_RDONLY),
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (getattr(os, "ST_NOATIME", 1024), syscalls.MS_NOATIME),
        (getattr(os, "ST_NODIRATIME", 2048), syscalls.MS_NODIRATIME),
        (getattr(os, "ST_RELATIME", 4096), syscalls.MS_RELATIME),
    ):
        if f & st_bit:
            out |= ms_bit
    return out


def set_mount_flags(path: str, flags: int, *, recursive: bool = True) -> None:
    """Add MS_RDONLY/MS_NOSUID/MS_NODEV/MS_NOEXEC to the mount(s) at ``path``.

    mount_setattr(2) changes only the named bits, in one call for a whole tree.  The
    older remount must repeat the flags the kernel locked on mounts inherited from the
    host (it refuses to clear them in a user namespace), so they are read back first.
    """
    attr = 0
    for ms, ma in (
        (MS_RDONLY, syscalls.MOUNT_ATTR_RDONLY),
        (MS_NOSUID, syscalls.MOUNT_ATTR_NOSUID),
        (MS_NODEV, syscalls.MOUNT_ATTR_NODEV),
        (MS_NOEXEC, syscalls.MOUNT_ATTR_NOEXEC),
    ):
        if flags & ms:
            attr |= ma
    if not attr:
        return
    try:
        syscalls.mount_setattr(path, attr, recursive=recursive)
        return
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    current = _statvfs_flags(path)
    syscalls.mount(None, path, None, syscalls.MS_REMOUNT | MS_BIND | current | flags)


def bind(source: str, target: str, *, recursive: bool = True, flags: int = 0) -> None:
    syscalls.mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if flags:
        set_mount_flags(target, flags, recursive=recursive)


# -- the root filesystem ---------------------------------------------------------------------


@record
class MountedRootfs:
    path: str
    driver: str
    helper_pids: list[int] = factory(list)  # fuse-overlayfs daemons


def rootfs_path(rs: RootfsSpec) -> str:
    if rs.path:
        return rs.path
    if rs.upperdir:
        return os.path.join(os.path.dirname(os.path.abspath(rs.upperdir)), "merged")
    if rs.lowerdirs:
        return rs.lowerdirs[0]
    raise MountError("the container has no root filesystem")


def _needs_escape(path: str) -> bool:
    return any(c in path for c in ",:\\\n")


def overlay_plan(
    lowers: list[str], upper: str, work: str, extra: tuple[str, ...] = ("userxattr",)
) -> tuple[str | None, str] | None:
    """Mount data for overlay that fits a page: ``(cwd, data)``; None if it cannot.

    Absolute paths when they fit; else paths relative to the lowerdirs' common parent
    (the mount must then be done with that as the working directory).
    """
    paths = [*lowers, upper, work] if upper else list(lowers)
    if any(_needs_escape(p) for p in paths):
        return None

    def data(ls, u, w):
        parts = ["lowerdir=" + ":".join(ls)]
        if u:
            parts += ["upperdir=" + u, "workdir=" + w]
        return ",".join(parts + list(extra))

    full = data(lowers, upper, work)
    if len(full) < MOUNT_DATA_MAX:
        return None, full
    base = os.path.commonpath([os.path.abspath(p) for p in paths])
    rel = data(
        [os.path.relpath(p, base) for p in lowers],
        os.path.relpath(upper, base) if upper else "",
        os.path.relpath(work, base) if upper else "",
    )
    if len(rel) < MOUNT_DATA_MAX:
        return base, rel
    return None


def _with_links(target: str, lowers: list[str], upper: str, work: str) -> tuple[list, str, str]:
    """Put a tmpfs with short symlinks (0, 1, ..., u, w) on ``target`` and chdir into it.

    The kernel follows the links when the overlay is mounted on top of that tmpfs,
    which then stays hidden below it.  Returns the short names.
    """
    syscalls.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
    names = []
    for i, p in enumerate(lowers):
        os.symlink(os.path.abspath(p), os.path.join(target, str(i)))
        names.append(str(i))
    u = w = ""
    if upper:
        os.symlink(os.path.abspath(upper), os.path.join(target, "u"))
        os.symlink(os.path.abspath(work), os.path.join(target, "w"))
        u, w = "u", "w"
    os.chdir(target)
    return names, u, w


def mount_overlay(lowers: list[str], upper: str, work: str, target: str) -> None:
    """Native overlayfs (unprivileged in a user namespace since Linux 5.11)."""
    plan = overlay_plan(lowers, upper, work)
    old_cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if plan is None:
            ls, u, w = _with_links(target, lowers, upper, work)
            plan = overlay_plan(ls, u, w)
            if plan is None:
                raise MountError(f"too many layers for overlay ({len(lowers)})")
        cwd, data = plan
        if cwd:
            os.chdir(cwd)
        flags = 0 if upper else MS_RDONLY
        syscalls.mount("overlay", target, "overlay", flags, data)
    finally:
        os.fchdir(old_cwd)
        os.close(old_cwd)


def _arm_pdeathsig() -> None:
    syscalls.set_pdeathsig(signal.SIGKILL)


def mount_fuse_overlayfs(lowers: list[str], upper: str, work: str, target: str) -> list[int]:
    """fuse-overlayfs in our namespace; returns the daemon's pid to stop at exit.

    It runs in the foreground as our child, so it dies with us (PR_SET_PDEATHSIG) even
    if we are killed; readiness is seen as the mount appearing on ``target``.
    """
    import shutil  # not at module level: it pulls in zlib, bz2, lzma
    import subprocess

    exe = shutil.which("fuse-overlayfs")
    if not exe:
        raise MountError("fuse-overlayfs is not installed")
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse does not exist")
    cwd = None
    paths = [*lowers, upper, work] if upper else list(lowers)
    if any(_needs_escape(p) for p in paths):
        raise MountError("a layer path contains ',' or ':', which fuse-overlayfs cannot take")
    if sum(len(p) for p in paths) > 60000:
        cwd = os.path.commonpath([os.path.abspath(p) for p in paths])
        lowers = [os.path.relpath(p, cwd) for p in lowers]
        if upper:
            upper, work = os.path.relpath(upper, cwd), os.path.relpath(work, cwd)
    opts = "lowerdir=" + ":".join(lowers)
    if upper:
        opts += f",upperdir={upper},workdir={work}"
    dev_before = os.stat(target).st_dev
    # Its messages go to a memory file: a pipe nobody reads would block or kill it.
    log = os.memfd_create("fuse-overlayfs-log", os.MFD_CLOEXEC)
    try:
        proc = subprocess.Popen(
            [exe, "-f", "-o", opts, target],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_arm_pdeathsig,
        )
        delay = 0.0005
        deadline = time.monotonic() + 60
        while True:
            code = proc.poll()
            if code is not None:
                os.lseek(log, 0, os.SEEK_SET)
                msg = os.read(log, 8192).decode(errors="replace").strip()
                raise MountError(f"fuse-overlayfs failed: {msg or 'exit status ' + str(code)}")
            if os.stat(target).st_dev != dev_before:
                return [proc.pid]
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise MountError("fuse-overlayfs did not mount within 60 seconds")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
    finally:
        os.close(log)


def _is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def _remove(path: str) -> None:
    import shutil  # not at module level: it pulls in zlib, bz2, lzma

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _clear_dir(path: str) -> None:
    for entry in os.scandir(path):
        _remove(entry.path)


def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    try:
        os.lchown(dst, st.st_uid, st.st_gid)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EINVAL):
            raise
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        if name.startswith(("user.overlay.", "trusted.overlay.")):
            continue
        try:
            os.setxattr(
                dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False
            )
        except OSError:
            pass  # e.g. security.* refused in a user namespace: not worth failing a run
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _merge_layer(src: str, dst: str, links: dict) -> None:
    import shutil  # not at module level: it pulls in zlib, bz2, lzma

    for entry in os.scandir(src):
        s = entry.path
        d = os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0:  # overlay whiteout
            _remove(d)
            continue
        if stat.S_ISDIR(mode):
            if os.path.lexists(d) and (os.path.islink(d) or not os.path.isdir(d)):
                _remove(d)
            if os.path.isdir(d):
                if _is_opaque(s):
                    _clear_dir(d)
            else:
                os.mkdir(d, 0o700)
            _merge_layer(s, d, links)
            _copy_meta(s, d, st)
            continue
        if os.path.lexists(d):
            _remove(d)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            try:
                os.link(links[key], d)
                continue
            except OSError:
                pass
        if stat.S_ISREG(mode):
            shutil.copyfile(s, d, follow_symlinks=False)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            try:
                os.mknod(d, mode, st.st_rdev)
            except OSError:
                continue  # device nodes cannot be made in a user namespace
        else:
            continue  # sockets
        _copy_meta(s, d, st)
        if st.st_nlink > 1:
            links[key] = d


def copy_layers(lowers: list[str], dest: str) -> None:
    """Flatten overlay-form layers (top first) into ``dest``, applying whiteouts."""
    os.makedirs(dest, exist_ok=True)
    for layer in reversed(lowers):
        _merge_layer(layer, dest, {})
        st = os.lstat(layer)
        _copy_meta(layer, dest, st)


def mount_vfs(lowers: list[str], target: str) -> None:
    """The copy driver: the layers are copied once; the container then writes in place."""
    marker = target.rstrip("/") + VFS_DONE_SUFFIX
    if not os.path.exists(marker):
        if os.path.isdir(target):
            _clear_dir(target)
        copy_layers(lowers, target)
        with open(marker, "w") as f:
            f.write("complete\n")
    bind(target, target)


def mount_rootfs(rs: RootfsSpec) -> MountedRootfs:
    """Assemble the root filesystem and return where it is; MountError when no driver can."""
    if not rs.lowerdirs:
        raise MountError("the container has no image layers")
    target = rootfs_path(rs)
    lowers = [os.path.abspath(p) for p in rs.lowerdirs]
    upper = os.path.abspath(rs.upperdir) if rs.upperdir else ""
    work = os.path.abspath(rs.workdir) if rs.workdir else ""
    if upper and not work:
        work = os.path.join(os.path.dirname(upper), "work")
    for d in lowers:
        if not os.path.isdir(d):
            raise MountError(f"layer directory {d} does not exist")
    for d in (target, upper, work):
        if d:
            os.makedirs(d, exist_ok=True)

    if len(lowers) == 1 and not upper:
        # A plain directory: bind it (onto itself when it is the target).
        bind(lowers[0], target)
        return MountedRootfs(target, "bind")
    if rs.driver not in (DRIVER_AUTO, DRIVER_OVERLAY, DRIVER_FUSE, DRIVER_VFS):
        raise MountError(f"unknown storage driver {rs.driver!r}")
    order = [rs.driver] if rs.driver else [DRIVER_OVERLAY, DRIVER_FUSE, DRIVER_VFS]
    failures = []
    for driver in order:
        try:
            if driver == DRIVER_OVERLAY:
                mount_overlay(lowers, upper, work, target)
                return MountedRootfs(target, driver)
            if driver == DRIVER_FUSE:
                pids = mount_fuse_overlayfs(lowers, upper, work, target)
                return MountedRootfs(target, driver, pids)
            if not upper and not rs.path:
                raise MountError("the copy driver needs a writable directory")
            mount_vfs(lowers, target)
            return MountedRootfs(target, driver)
        except (OSError, MountError) as e:
            failures.append(f"{driver}: {e}")
    raise MountError("cannot mount the root filesystem (" + "; ".join(failures) + ")")


# -- the standard container mounts -----------------------------------------------------------


def mount_proc(root: str) -> None:
    target = mkdir_in(root, "/proc", 0o555)
    try:
        syscalls.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
        # A fresh proc is refused when the host's /proc is partly covered; the host's
        # then shows host pids, which is still better than none.
        bind("/proc", target)


def mount_dev(
    root: str,
    *,
    tty_gid: int | None = 5,
    shm_size: int = 64 * 1024 * 1024,
    mqueue: bool = True,
    devices: list[DeviceSpec] = (),
) -> None:
    dev = mkdir_in(root, "/dev")
    syscalls.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name in HOST_DEVICES:
        node = os.path.join(dev, name)
        os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        bind("/dev/" + name, node, recursive=False)
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    data = "newinstance,ptmxmode=0666,mode=0620"
    if tty_gid is not None:
        data += f",gid={tty_gid}"
    syscalls.mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, data)
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    syscalls.mount(
        "shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={shm_size}"
    )
    if mqueue:
        mq = os.path.join(dev, "mqueue")
        os.mkdir(mq, 0o755)
        try:
            syscalls.mount("mqueue", mq, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            os.rmdir(mq)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ):
        os.symlink(target, os.path.join(dev, name))
    for d in devices:
        src = os.path.realpath(d.source)
        st = os.stat(src)
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise MountError(f"{d.source} is not a device")
        node = touch_in(root, d.target or d.source, 0o666)
        bind(src, node, recursive=False)


def mount_sys(root: str, *, own_netns: bool) -> None:
    target = mkdir_in(root, "/sys", 0o555)
    ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    if own_netns:
        try:
            syscalls.mount("sysfs", target, "sysfs", ro)
            return
        except OSError:
            pass
    # Without our own network namespace the kernel refuses a new sysfs: bind the host's.
    bind("/sys", target, flags=ro)


def mask_paths(root: str, paths: list[str]) -> None:
    """docker's masking: files get /dev/null over them, directories an empty ro tmpfs."""
    for p in paths:
        full = os.path.join(root, p.lstrip("/"))
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            syscalls.mount("tmpfs", full, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=0")
        elif not stat.S_ISLNK(st.st_mode):
            bind("/dev/null", full, recursive=False)


def readonly_paths(root: str, paths: list[str]) -> None:
    for p in paths:
        full = os.path.join(root, p.lstrip("/"))
        if not os.path.exists(full):
            continue
        bind(full, full, flags=MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


_PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
}
_FLAG_OPTIONS = {
    "ro": MS_RDONLY,
    "readonly": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
}


def tmpfs_data(options: list[str]) -> str:
    keep = []
    for o in options:
        key = o.split("=", 1)[0]
        if key in ("size", "mode", "nr_inodes", "uid", "gid"):
            if key == "size" and "=" in o:
                o = "size=" + _tmpfs_size(o.split("=", 1)[1])
            keep.append(o)
    return ",".join(keep)


def _tmpfs_size(v: str) -> str:
    """docker accepts ``64m``/``1g``/bytes; tmpfs wants ``64m``/``1g``/bytes or ``%``."""
    v = v.strip().lower()
    if v.endswith("b") and v[:-1][-1:].isalpha():
        v = v[:-1]
    return v


COPYUP_STAGING = ".pbox-copyup"


def copy_up(image_dir: str, volume_dir: str) -> bool:
    """Fill an empty volume with the image's content at its mount point (docker's rule).

    ``image_dir`` is the mount point's host path in the mounted root filesystem.  Only a
    volume that is still empty is filled, and only from a directory.  Owners, modes,
    times, xattrs, hard links and symlinks are kept; no symlink is followed.  Returns
    whether anything was copied.

    Two containers may start on one new volume at once: an flock on the volume's
    directory serialises them, and the second finds it filled.  The copy goes to a
    staging directory inside the volume first and is then renamed into place entry by
    entry, so a copier killed half way leaves only the staging directory, which the
    next start removes before copying again.
    """
    try:
        st = os.lstat(image_dir)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    fd = os.open(volume_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        staging = os.path.join(volume_dir, COPYUP_STAGING)
        present = os.listdir(volume_dir)
        if present == [COPYUP_STAGING]:
            _remove(staging)  # a copier died before moving anything in
        elif present:
            if COPYUP_STAGING in present:
                _remove(staging)  # it died while moving entries in: keep what arrived
            return False
        if not os.listdir(image_dir):
            _copy_meta(image_dir, volume_dir, st)
            return False
        try:
            os.mkdir(staging, 0o700)
            # A merged overlay view has no whiteouts left, so the layer merge is a plain
            # faithful copy here.
            _merge_layer(image_dir, staging, {})
            for name in os.listdir(staging):
                os.rename(os.path.join(staging, name), os.path.join(volume_dir, name))
            os.rmdir(staging)
            _copy_meta(image_dir, volume_dir, st)
        except OSError as e:
            _clear_dir(volume_dir)
            raise MountError(
                f"cannot copy {e.filename or image_dir} into the volume: {e.strerror or e}"
            )
        return True
    finally:
        os.close(fd)


def apply_mount(root: str, m: MountSpec) -> None:
    """One user mount (bind, volume or tmpfs) into the container's root."""
    flags = 0
    for o in m.options:
        flags |= _FLAG_OPTIONS.get(o, 0)
    if m.type == "tmpfs":
        target = mkdir_in(root, m.target)
        flags |= MS_NOSUID | MS_NODEV
        syscalls.mount("tmpfs", target, "tmpfs", flags, tmpfs_data(m.options) or None)
        return
    if m.type not in ("bind", "volume"):
        raise MountError(f"unsupported mount type {m.type!r} for {m.target}")
    src = m.source
    try:
        st = os.stat(src)
    except OSError as e:
        raise MountError(f"mount source {src}: {e.strerror}")
    if m.type == "volume" and "copy" in m.options and stat.S_ISDIR(st.st_mode):
        copy_up(secure_join(root, m.target), src)
    if stat.S_ISDIR(st.st_mode):
        target = mkdir_in(root, m.target)
    else:
        target = touch_in(root, m.target)
    recursive = "bind" not in m.options and "norecursive" not in m.options
    try:
        bind(src, target, recursive=recursive, flags=flags)
    except OSError as e:
        raise MountError(f"cannot bind {src} on {m.target}: {e.strerror}")
    prop = MS_PRIVATE | MS_REC
    for o in m.options:
        prop = _PROPAGATION.get(o, prop)
    syscalls.mount(None, target, None, prop)


def bind_etc_file(root: str, source: str, path: str) -> None:
    """Bind a host file (hosts, resolv.conf, hostname) onto ``path`` in the container."""
    if not source:
        return
    target = touch_in(root, path)
    bind(source, target, recursive=False)


def pivot(root: str) -> None:
    """Make ``root`` the root, leaving nothing of the host's tree reachable.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one at "/"; the
    lazy unmount then takes it away, with no put_old directory needed in the image.
    """
    os.chdir(root)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
