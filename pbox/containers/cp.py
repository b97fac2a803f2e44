"""docker's `cp`: files between a container (running or not) and the host.

Like docker, a copy is a tar stream between two sides: the side that reads makes
the tar (entries named after the source's base name), the side that writes extracts
it, renaming or dropping the first component by docker's rules (a file onto a file,
a directory into a directory, ``dir/.`` for its contents, ``-`` for a tar on
stdin/stdout).

The container's side runs in a child process whose root directory *is* the
container's root (``chroot``), so every path, every symlink (``/``, ``../..``, an
absolute host path) is resolved by the kernel inside the container and nothing
outside can be reached, even while the container changes its files under us:

* a running container: the child chroots into ``/proc/PID/root`` of its first
  process.  It sees the container's own mount tree (volumes, /etc/hosts...) and
  writes through its overlay mount, so the kernel does the copy-up and the
  container sees new files at once (writing into a mounted overlay's upper
  directory behind its back would not be seen reliably).
* a stopped container: the child makes a private mount namespace and mounts the
  container's root filesystem there the way ``start`` does (same driver), plus its
  bind/volume mounts and its /etc files, holding the container's lock so it cannot
  be started meanwhile; the mounts vanish with the child.

No name service (NSS) code runs in the child: a container's ``libnss_*.so`` must
never be loaded by pbox.  Everything the child needs is imported before ``chroot``.

Owners: files copied into a container belong to its root (0:0), as docker documents;
with ``-a`` they keep the ids of the tar (for host files: the ids seen in pbox's user
namespace, where the invoking user is root).  Files copied out belong to the invoking
user and lose setuid/setgid bits.  Extended attributes are not copied.  Entries of an
extracted tar are created without following symlinks; a tar entry naming ``..`` or
going through a symlink is refused.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass

from pbox.config import Config
from pbox.errors import Conflict, NotFound, PboxError, UsageError
from pbox.lazylog import get_logger
from pbox.rootless.launcher import stop_helpers
from pbox.storage.treetar import CHUNK, TarWriter, write_tree

log = get_logger(__name__)

LOCK_WAIT = 10.0  # seconds cp waits for a stopped container's lock


# -- cp: arguments and docker's path rules ------------------------------------------------------


def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a local path -> (None, path).  As docker:
    an absolute path, or one whose part before ':' starts with '.', is local."""
    if arg.startswith("/"):
        return None, arg
    head, sep, tail = arg.partition(":")
    if not sep or head.startswith("."):
        return None, arg
    return head, tail


def asserts_dir(path: str) -> bool:
    return path.endswith("/") or path.endswith("/.") or path == "."


def clean_path(path: str, *, container: bool) -> str:
    """Lexically clean, relative container paths taken from /; keeps no trailing marks."""
    if container and not path.startswith("/"):
        path = "/" + path
    cleaned = os.path.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


@dataclass
class SourceInfo:
    is_dir: bool
    contents_only: bool  # "dir/." (or the root): the directory's contents, not itself
    root_name: str  # the first component of the tar's names


def source_info(path: str, st) -> SourceInfo:
    cleaned = clean_path(path, container=False)
    is_dir = stat.S_ISDIR(st.st_mode)
    if asserts_dir(path) and not is_dir:
        raise UsageError(f"{path}: not a directory")
    base = os.path.basename(cleaned)
    contents_only = is_dir and (path.endswith("/.") or path == "." or cleaned == "/")
    if cleaned == "/" or not base or base in (".", ".."):
        base = "."
    return SourceInfo(is_dir, contents_only, base)


def plan_copy(src: SourceInfo, dst_path: str, dst_exists: bool, dst_is_dir: bool,
              resolved: str | None = None):
    """docker's rules -> (directory to extract into, mode, new name).

    ``dst_path`` is the destination as the user wrote it (a trailing ``/`` says it must
    be a directory), ``resolved`` the same with symlinks followed.  mode "as-is":
    entries keep their names; "strip": the first component is dropped (a directory's
    contents); "rename": the first component becomes the new name."""
    cleaned = clean_path(resolved or dst_path, container=False)
    if dst_exists and dst_is_dir:
        if src.is_dir and src.contents_only:
            return cleaned, "strip", None
        return cleaned, "as-is", None
    if dst_exists:
        if src.is_dir:
            raise UsageError(f"cannot copy a directory to a file: {dst_path}")
    elif asserts_dir(dst_path) and not src.is_dir:
        raise NotFound(f"destination directory {dst_path} does not exist")
    return os.path.dirname(cleaned) or ".", "rename", os.path.basename(cleaned)


# -- cp: extracting a tar stream ----------------------------------------------------------------


_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _clean_parts(raw: str) -> list[str]:
    parts = [p for p in raw.split("/") if p and p != "."]
    if ".." in parts:
        raise PboxError(f"refusing the tar entry {raw!r}: it points outside the destination")
    return parts


def entry_parts(raw: str, mode: str, new_name: str | None) -> list[str]:
    """The path of a tar entry below the extraction directory ([] = the directory)."""
    raw = raw.lstrip("/")
    if mode == "as-is":
        return _clean_parts(raw)
    first, _, rest = raw.partition("/")
    parts = _clean_parts(rest)
    return parts if mode == "strip" else [new_name] + parts


class Extractor:
    """Write a tar stream into a directory; created entries never follow symlinks.

    ``chown``: False leaves every entry to the caller (the host side); else ``owner``
    (uid, gid) for every entry, or None for the tar's own ids.
    """

    def __init__(self, dest_dir: str, mode: str, new_name: str | None, *, chown: bool,
                 owner=None, host: bool, notice=None):
        self.dest_dir = dest_dir
        self.mode = mode
        self.new_name = new_name
        self.chown = chown
        self.owner = owner
        self.host = host
        self.notice = notice
        self.dirs: list = []
        self.skipped_devices = 0

    def _err(self, parts, what: str) -> PboxError:
        return PboxError(f"cannot copy to {os.path.join(self.dest_dir, *parts)}: {what}")

    def _ids(self, uid: int, gid: int):
        return self.owner if self.owner is not None else (uid, gid)

    def _lchown(self, parent_fd: int, name: str, uid: int, gid: int) -> None:
        if not self.chown:
            return
        uid, gid = self._ids(uid, gid)
        try:
            os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.EINVAL:  # an id this namespace does not map: root
                if e.errno != errno.EPERM:
                    raise
                return
            os.chown(name, 0, 0, dir_fd=parent_fd, follow_symlinks=False)

    def _parent(self, root_fd: int, parts, *, create: bool) -> int:
        fd = os.dup(root_fd)
        try:
            for i, p in enumerate(parts[:-1]):
                try:
                    nfd = os.open(p, _DIR_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise self._err(parts, "no such file or directory")
                    os.mkdir(p, 0o755, dir_fd=fd)
                    self._lchown(fd, p, 0, 0)
                    nfd = os.open(p, _DIR_NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._err(parts[:i + 1], "not a directory (or a symlink)")
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def run(self, fileobj) -> int:
        import tarfile

        try:
            root_fd = os.open(self.dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no such directory: {self.dest_dir}")
        except NotADirectoryError:
            raise PboxError(f"{self.dest_dir} is not a directory")
        count = 0
        try:
            try:
                tf = tarfile.open(fileobj=fileobj, mode="r|")  # noqa: SIM115 (closed below)
            except tarfile.ReadError as e:
                raise PboxError(f"not a tar archive: {e}")
            try:
                for member in tf:
                    parts = entry_parts(member.name, self.mode, self.new_name)
                    if not parts:
                        continue  # the destination directory itself: left as it is
                    self._entry(root_fd, parts, member, tf)
                    count += 1
            except tarfile.TarError as e:
                raise PboxError(f"invalid tar stream: {e}")
            finally:
                tf.close()
            self._finish_dirs(root_fd)
        finally:
            os.close(root_fd)
        if self.skipped_devices and self.notice:
            self.notice(f"{self.skipped_devices} device file(s) were not copied (not "
                        f"permitted here)")
        return count

    def _entry(self, root_fd: int, parts, m, tf) -> None:
        pfd = self._parent(root_fd, parts, create=True)
        name = parts[-1]
        try:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if stat.S_ISDIR(st.st_mode) != m.isdir():
                    if m.isdir():
                        raise self._err(parts, "cannot overwrite a non-directory with a "
                                               "directory")
                    raise self._err(parts, "cannot overwrite a directory with a "
                                           "non-directory")
                if not m.isdir():
                    os.unlink(name, dir_fd=pfd)
            mode = m.mode & (0o1777 if self.host else 0o7777)
            if m.isdir():
                if st is None:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                self._lchown(pfd, name, m.uid, m.gid)
                self.dirs.append((parts, mode, m.mtime))
                return
            if m.isreg():
                self._regular(pfd, name, m, tf, mode)
            elif m.issym():
                os.symlink(m.linkname, name, dir_fd=pfd)
            elif m.islnk():
                self._hardlink(root_fd, pfd, parts, m)
                return
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                try:
                    os.mknod(name, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
                except PermissionError:
                    self.skipped_devices += 1
                    return
            elif m.isfifo():
                os.mkfifo(name, mode, dir_fd=pfd)
            else:
                log.debug("skipping tar entry %r of type %r", m.name, m.type)
                return
            self._lchown(pfd, name, m.uid, m.gid)
            if not m.issym():
                os.chmod(name, mode, dir_fd=pfd)
            os.utime(name, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def _regular(self, pfd: int, name: str, m, tf, mode: int) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(m)
            while True:
                data = src.read(CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _hardlink(self, root_fd: int, pfd: int, parts, m) -> None:
        target = entry_parts(m.linkname, self.mode, self.new_name)
        if not target:
            raise self._err(parts, f"bad hardlink target {m.linkname!r}")
        tfd = self._parent(root_fd, target, create=False)
        try:
            try:
                tst = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise self._err(parts, f"hardlink target {m.linkname!r} not found")
            if stat.S_ISDIR(tst.st_mode):
                raise self._err(parts, "a hardlink to a directory")
            os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd,
                    follow_symlinks=False)
        finally:
            os.close(tfd)

    def _finish_dirs(self, root_fd: int) -> None:
        for parts, mode, mtime in sorted(self.dirs, key=lambda d: -len(d[0])):
            pfd = self._parent(root_fd, parts, create=False)
            try:
                os.chmod(parts[-1], mode, dir_fd=pfd)
                os.utime(parts[-1], (mtime, mtime), dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)


# -- cp: the container's side (a chrooted child) -------------------------------------------------


def _message(e: BaseException) -> str:
    if isinstance(e, OSError):
        text = e.strerror or str(e)
        return f"{text}: {e.filename}" if e.filename else text
    return str(e) or type(e).__name__


class _Lines:
    """JSON messages, one per line, on a pipe."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def read(self) -> dict | None:
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


def _send(fd: int, **msg) -> None:
    data = json.dumps(msg).encode() + b"\n"
    while data:
        data = data[os.write(fd, data):]


class _ContainerSide:
    """Runs ``work(send, data_fd)`` in a child whose root is the container's root."""

    def __init__(self, cs, cid: str, cfg: dict, mapping, *, writing: bool):
        self.cs = cs
        self.cid = cid
        self.cfg = cfg
        self.mapping = mapping
        self.writing = writing
        self.pid = 0
        self.lock = None

    def _target(self):
        from pbox.containers.records import alive

        st = self.cs.state(self.cid)
        if st.get("Status") in ("running", "paused", "stopping") and \
                alive(st.get("Pid"), st.get("PidStart")):
            return "running", st
        return "stopped", st

    def __enter__(self):
        if self.writing and (self.cfg.get("HostConfig") or {}).get("ReadonlyRootfs"):
            raise PboxError("container rootfs is marked read-only")
        # A stopped container is mounted under its lock, so it cannot start meanwhile.
        # The lock may be busy for a moment (another cp, a start on its way): retry.
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            where, st = self._target()
            if where == "running":
                break
            ctx = self.cs.locked(self.cid, wait=False)
            try:
                ctx.__enter__()
            except Conflict:
                if time.monotonic() > deadline:
                    raise Conflict("the container is busy (being started, removed or "
                                   "copied to); try again")
                time.sleep(0.05)
                continue
            self.lock = ctx
            break
        self.where, self.state = where, st
        return self

    def __exit__(self, *exc):
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def start(self, work, data_fd: int, parent_fds: list[int]) -> _Lines:
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(msg_r)
                for fd in parent_fds:
                    os.close(fd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                from pbox.rootless import syscalls

                syscalls.set_pdeathsig(signal.SIGKILL)
                if os.getppid() != parent_pid:
                    os._exit(1)
                helpers = self._enter_root()
                try:
                    work(lambda **m: _send(msg_w, **m), data_fd)
                except BrokenPipeError:
                    pass  # the host side stopped reading: its own error says why
                finally:
                    stop_helpers(helpers)
                code = 0
            except BaseException as e:
                try:
                    _send(msg_w, error=_message(e))
                except OSError:
                    pass
            os._exit(code)
        self.pid = pid
        os.close(msg_w)
        os.close(data_fd)
        return _Lines(msg_r)

    def _enter_root(self) -> list[int]:
        """In the child: make the container's root our root; fuse daemons to stop."""
        from pbox.rootless import idmap, mounts, syscalls, userns
        from pbox.rootless.spec import ContainerSpec

        own_userns = self.mapping.mode == idmap.MODE_SINGLE and not self.mapping.entered \
            and os.getuid() != 0
        if self.where == "running":
            pid = self.state["Pid"]
            if own_userns:
                userns.join_namespaces(pid, ("user",))
            os.chroot(f"/proc/{pid}/root")
            os.chdir("/")
            return []
        if own_userns:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            userns.write_single_map("self", self.mapping.uid, self.mapping.gid)
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        spec = ContainerSpec.from_dict(self.cfg["Spec"])
        driver = self.state.get("Driver") or self.cfg.get("Driver") or spec.rootfs.driver
        if driver in ("overlay", "fuse-overlayfs", "vfs"):
            spec.rootfs.driver = driver
        try:
            rootfs = mounts.mount_rootfs(spec.rootfs)
            for m in spec.mounts:
                if m.type in ("bind", "volume") and os.path.exists(m.source):
                    mounts.apply_mount(rootfs.path, m)
            for src, path in ((spec.hosts_file, "/etc/hosts"),
                              (spec.resolv_conf, "/etc/resolv.conf"),
                              (spec.hostname_file, "/etc/hostname")):
                if src and os.path.exists(src):
                    mounts.bind_etc_file(rootfs.path, src, path)
        except mounts.MountError as e:
            raise PboxError(f"cannot mount the container's files: {e}")
        os.chroot(rootfs.path)
        os.chdir("/")
        return rootfs.helper_pids

    def finish(self, lines: _Lines | None) -> str | None:
        """Wait for the child; the error it reported, if any."""
        error = None
        while lines is not None:
            try:
                msg = lines.read()
            except ValueError:
                msg = None
            if msg is None:
                break
            if "error" in msg and error is None:
                error = msg["error"]
        if lines is not None:
            os.close(lines.fd)
        _, status = os.waitpid(self.pid, 0)
        if error is None and status != 0:
            code = os.waitstatus_to_exitcode(status)
            error = f"the copy failed in the container (exit status {code})"
        return error


def _resolve_source(path: str, follow: bool):
    """(cleaned path, lstat or stat) of a copy source; the last symlink is followed
    only with ``follow`` (-L)."""
    cleaned = clean_path(path, container=False)
    parent = os.path.dirname(cleaned)
    full = os.path.join(os.path.realpath(parent), os.path.basename(cleaned)) \
        if cleaned not in ("/", ".") else cleaned
    try:
        st = os.stat(full) if follow or asserts_dir(path) else os.lstat(full)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {path}")
    except NotADirectoryError:
        raise NotFound(f"not a directory: {path}")
    return full, st


def _resolve_dest(path: str):
    """(resolved path, exists, is_dir): symlinks followed (inside the container's root
    when run there), like docker does for a destination."""
    cleaned = clean_path(path, container=False)
    real = os.path.realpath(cleaned)
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return real, False, False
    return real, True, stat.S_ISDIR(st.st_mode)


def _open_stdin_tar(stream):
    """stdin as an uncompressed tar stream (docker accepts gzip, bzip2 and xz too)."""
    import io

    raw = stream.buffer if hasattr(stream, "buffer") else stream
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    head = buffered.peek(6)[:6]
    if head[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if head[:3] == b"BZh":
        import bz2

        return bz2.BZ2File(buffered)
    if head[:6] == b"\xfd7zXZ\x00":
        import lzma

        return lzma.LZMAFile(buffered)
    return buffered


def copy(config: Config, src: str, dst: str, *, archive: bool = False,
         follow: bool = False, stdin=None, stdout=None, notice=None) -> int:
    """docker's `cp` between a container (running or not) and the host, or a tar on
    stdin/stdout for ``-``.  Returns the number of bytes of tar copied."""
    import tarfile  # noqa: F401  (the chrooted child cannot import it any more)

    from pbox.containers.records import ContainerStore
    from pbox.images import enter_userns, open_store
    from pbox.rootless import idmap, mounts, syscalls, userns  # noqa: F401 (same reason)
    from pbox.rootless.spec import ContainerSpec  # noqa: F401

    s_ctr, s_path = split_cp_arg(src)
    d_ctr, d_path = split_cp_arg(dst)
    if s_ctr is not None and d_ctr is not None:
        raise UsageError("copying between containers is not supported")
    if s_ctr is None and d_ctr is None:
        raise UsageError("must specify at least one container source")
    if s_ctr == "" or d_ctr == "":
        raise UsageError("a container name is needed before ':'")
    path = s_path if s_ctr is not None else d_path
    if not path:
        raise UsageError("the container path must not be empty")
    enter_userns(config, notice)
    mapping = userns.current_mapping()
    cs = ContainerStore(open_store(config))
    cid = cs.find(s_ctr if s_ctr is not None else d_ctr)
    cfg = cs.config(cid)
    if s_ctr is not None:
        return _copy_out(cs, cid, cfg, mapping, s_ctr, s_path, d_path, follow=follow,
                         stdout=stdout or sys.stdout, notice=notice)
    return _copy_in(cs, cid, cfg, mapping, d_ctr, s_path, d_path, archive=archive,
                    follow=follow, stdin=stdin or sys.stdin, notice=notice)


def _copy_out(cs, cid, cfg, mapping, ctr, c_path, h_path, *, follow, stdout, notice) -> int:
    c_path = "/" + c_path.lstrip("/") if not c_path.startswith("/") else c_path
    to_stdout = h_path == "-"

    def work(send, data_fd):
        try:
            full, st = _resolve_source(c_path, follow)
        except NotFound:
            raise NotFound(f"Could not find the file {c_path} in container {ctr}")
        info = source_info(c_path, st)
        send(src={"is_dir": info.is_dir, "contents_only": info.contents_only,
                  "root_name": info.root_name})
        with os.fdopen(data_fd, "wb") as out:
            tw = TarWriter(out)
            write_tree(tw, full, os.fsencode(info.root_name),
                       follow_root=follow or asserts_dir(c_path))
            tw.close()
        send(done=True)

    data_r, data_w = os.pipe2(os.O_CLOEXEC)
    with _ContainerSide(cs, cid, cfg, mapping, writing=False) as side:
        lines = side.start(work, data_w, [data_r])
        error = None
        copied = 0
        try:
            first = lines.read()
            if first is None or "error" in first:
                error = (first or {}).get("error") or "the container side failed"
            else:
                src = SourceInfo(**first["src"])
                with os.fdopen(data_r, "rb") as data:
                    data_r = -1
                    if to_stdout:
                        out = stdout.buffer if hasattr(stdout, "buffer") else stdout
                        while True:
                            chunk = data.read(CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            copied += len(chunk)
                        out.flush()
                    else:
                        target, exists, is_dir = _resolve_dest(h_path)
                        into, mode, new_name = plan_copy(src, h_path, exists, is_dir,
                                                         target)
                        counter = _CountingReader(data)
                        Extractor(into, mode, new_name, chown=False, host=True,
                                  notice=notice).run(counter)
                        copied = counter.count
        except (PboxError, OSError) as e:
            mine = e  # unless the container's side failed first (a cut stream)
        else:
            mine = None
        finally:
            if data_r >= 0:
                os.close(data_r)
            child_error = side.finish(lines)
        error = error or child_error
        if error is not None:
            raise _child_error(error)
        if mine is not None:
            raise mine
    return copied


def _copy_in(cs, cid, cfg, mapping, ctr, h_path, c_path, *, archive, follow, stdin,
             notice) -> int:
    c_path = "/" + c_path.lstrip("/") if not c_path.startswith("/") else c_path
    from_stdin = h_path == "-"
    if from_stdin:
        src = None
    else:
        full, st = _resolve_source(h_path, follow)
        src = source_info(h_path, st)
    owner = None if archive else (0, 0)

    def work(send, data_fd):
        target, exists, is_dir = _resolve_dest(c_path)
        if src is None:
            if not (exists and is_dir):
                raise PboxError(f'destination "{ctr}:{c_path}" must be a directory')
            into, mode, new_name = target, "as-is", None
        else:
            into, mode, new_name = plan_copy(src, c_path, exists, is_dir, target)
            try:
                st = os.stat(into)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"cannot copy to {ctr}:{c_path}: no such directory {into}")
            if not stat.S_ISDIR(st.st_mode):
                raise PboxError(f"cannot copy to {ctr}:{c_path}: {into} is not a directory")
        send(ready=True)
        with os.fdopen(data_fd, "rb") as data:
            Extractor(into, mode, new_name, chown=True, owner=owner, host=False).run(data)
            # read to the end, so the writer never sees a broken pipe for trailing zeros
            while data.read(CHUNK):
                pass
        send(done=True)

    data_r, data_w = os.pipe2(os.O_CLOEXEC)
    copied = 0
    with _ContainerSide(cs, cid, cfg, mapping, writing=True) as side:
        lines = side.start(work, data_r, [data_w])
        error = None
        try:
            first = lines.read()
            if first is None or "error" in first:
                error = (first or {}).get("error") or "the container side failed"
            else:
                with os.fdopen(data_w, "wb") as out:
                    data_w = -1
                    counter = _CountingWriter(out)
                    try:
                        if from_stdin:
                            data = _open_stdin_tar(stdin)
                            while True:
                                chunk = data.read(CHUNK)
                                if not chunk:
                                    break
                                counter.write(chunk)
                        else:
                            tw = TarWriter(counter)
                            write_tree(tw, full, os.fsencode(src.root_name),
                                       follow_root=follow)
                            tw.close()
                    except BrokenPipeError:
                        pass  # the child stopped reading: its message says why
                    copied = counter.count
        except BrokenPipeError:
            mine = None
        except (PboxError, OSError) as e:
            mine = e  # our side failed first: the child only saw a cut stream
        else:
            mine = None
        finally:
            if data_w >= 0:
                os.close(data_w)
            child_error = side.finish(lines)
        if mine is not None:
            raise mine
        error = error or child_error
        if error is not None:
            raise _child_error(error)
    return copied


def _child_error(text: str) -> PboxError:
    if text.startswith("Could not find") or "no such" in text.lower():
        return NotFound(text)
    return PboxError(text)


class _CountingReader:
    def __init__(self, f):
        self.f = f
        self.count = 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.count += len(data)
        return data


class _CountingWriter:
    def __init__(self, f):
        self.f = f
        self.count = 0

    def write(self, data) -> int:
        self.f.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


__all__ = ["Extractor", "copy", "plan_copy", "split_cp_arg"]
