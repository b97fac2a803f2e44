"""Starting one container: namespaces, id maps, mounts, pivot_root, credentials, execve.

Three processes take part::

    caller (pbox)                 the host side; writes the id maps, gets a Container
      └─ holder                   unshare(USER|NS|UTS|IPC[|NET]); mounts the rootfs
                                  (and owns the fuse-overlayfs daemon); unshare(PID);
                                  waits; exits with the container's exit code
           └─ container PID 1     mounts /proc, /dev, /sys, volumes; pivot_root; drops
                                  capabilities; switches user; execve(command)

The holder exists because a new pid namespace only applies to children, and because
someone outside the container must stop the fuse daemon when the container ends.

Setup errors travel from the children to the caller as JSON lines over a close-on-exec
pipe: the pipe reaching end-of-file without an error line means the command was
executed.  So :func:`launch` either returns a running :class:`Container` or raises
(CommandNotFound 127, CommandNotExecutable 126, RuntimeFailure 125).

Exec later: the container's namespaces are those of ``Container.pid``
(``/proc/PID/ns/*``); :func:`pbox.rootless.userns.join_namespaces` enters them.

Code that runs after ``pivot_root`` may not import anything: the host's Python library
is no longer reachable then.  Every module it needs is imported at the top.
"""

from __future__ import annotations

import _signal as signal  # (signal imports enum: ~2 ms of every run)
import errno
import fcntl
import gc
import os
import stat
import sys
import termios
from collections.abc import Callable

from pbox import jsonio as json
from pbox.errors import CommandNotExecutable, CommandNotFound, RuntimeFailure
from pbox.rootless import caps, idmap, mounts, syscalls, userns
from pbox.rootless.idmap import IdMapping
from pbox.rootless.spec import DEFAULT_PATH, NETWORK_HOST, ContainerSpec

KIND_SETUP = "setup"
KIND_NOT_FOUND = "notfound"
KIND_NOT_EXECUTABLE = "noexec"

EXIT_SETUP = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

_FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)

try:
    _MAX_FD = max(65536, os.sysconf("SC_OPEN_MAX"))
except (OSError, ValueError):
    _MAX_FD = 65536

# Message lines are written with one write(2) each; keep them under PIPE_BUF.
_MAX_MESSAGE = 3500


class _ChildError(Exception):
    def __init__(self, kind: str, message: str, code: int):
        super().__init__(message)
        self.kind = kind
        self.code = code


class ChildProcess:
    """A process of ours whose exit status gives docker's exit code (128+N for
    signal N); ``_wait_pid`` names the child to reap, ``pid`` the one to signal."""

    pid: int
    returncode: int | None

    def _wait_pid(self) -> int:
        return self.pid

    def _reap(self, flags: int) -> int | None:
        if self.returncode is not None:
            return self.returncode
        while True:
            try:
                pid, status = os.waitpid(self._wait_pid(), flags)
            except ChildProcessError:
                self.returncode = EXIT_SETUP
                return self.returncode
            if pid == 0:
                return None
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.returncode = userns.exit_status(status)
                return self.returncode

    def wait(self) -> int:
        """Block until it ends; docker's exit code."""
        code = self._reap(0)
        assert code is not None
        return code

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def receive_console(self, sock, failure: str) -> None:
        """Take the pty master the child sent over ``sock`` (before its execve)."""
        import socket

        sock.settimeout(10)
        try:
            _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        except OSError:
            fds = []
        finally:
            sock.close()
        if not fds:
            self.kill(signal.SIGKILL)
            self.wait()
            raise RuntimeFailure(failure)
        self.console_fd = fds[0]
        os.set_inheritable(self.console_fd, False)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal ``pid`` (a container's PID 1 ignores signals it has no handler for,
        except SIGKILL/SIGSTOP, like any PID 1)."""
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


class Container(ChildProcess):
    """A running container started by :func:`launch`.

    ``pid`` is the container's PID 1 as seen from the host; ``holder_pid`` our direct
    child, whose exit status carries the container's exit code.
    """

    def __init__(self, spec: ContainerSpec, pid: int, holder_pid: int, driver: str):
        self.spec = spec
        self.id = spec.id
        self.pid = pid
        self.holder_pid = holder_pid
        self.driver = driver
        self.helper_pids: list[int] = []  # fuse-overlayfs, stopped by the holder at exit
        self.returncode: int | None = None
        self.console_fd: int | None = None  # the pty master with launch(console=True)

    def __repr__(self) -> str:
        return f"<Container {self.id} pid={self.pid} returncode={self.returncode}>"

    def ns_path(self, name: str) -> str:
        """``/proc/PID/ns/<name>`` of the container (user, mnt, pid, uts, ipc, net)."""
        return f"/proc/{self.pid}/ns/{name}"

    def _wait_pid(self) -> int:
        return self.holder_pid


# -- helpers used in the children --------------------------------------------------------------


def _report(fd: int, **msg) -> None:
    line = json.dumps(msg)
    if len(line) > _MAX_MESSAGE:
        msg["message"] = msg.get("message", "")[: _MAX_MESSAGE - 200] + "..."
        line = json.dumps(msg)
    try:
        os.write(fd, line.encode() + b"\n")
    except OSError:
        pass


def _fail(fd: int, exc: BaseException) -> None:
    """Report ``exc`` to the caller and end this child with the matching exit code."""
    if isinstance(exc, _ChildError):
        kind, message, code = exc.kind, str(exc), exc.code
    elif isinstance(exc, (mounts.MountError, RuntimeFailure, OSError)):
        kind, message, code = KIND_SETUP, str(exc), EXIT_SETUP
    else:
        kind, message, code = KIND_SETUP, f"{type(exc).__name__}: {exc}", EXIT_SETUP
    _report(fd, kind=kind, message=message)
    os._exit(code)


def _step(what: str, fn, *args, **kw):
    """Run one setup step, naming it in the error."""
    try:
        return fn(*args, **kw)
    except (OSError, mounts.MountError) as e:
        raise _ChildError(KIND_SETUP, f"{what}: {e}", EXIT_SETUP)


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()]
    except OSError:
        return []


def resolve_user(user: str, uid: int, gid: int, extra_gids: list[int]):
    """docker's ``-u`` against the container's /etc/passwd and /etc/group (after pivot).

    Returns (uid, gid, supplementary gids, home).
    """
    home = "/"
    passwd = _read_db("/etc/passwd")
    groups = _read_db("/etc/group")
    name = None
    if user:
        u, _, g = user.partition(":")
        entry = next((p for p in passwd if len(p) >= 7 and p[0] == u), None)
        if entry is None and u.isdigit():
            entry = next((p for p in passwd if len(p) >= 7 and p[2] == u), None)
        if entry is not None:
            name, uid, gid, home = entry[0], int(entry[2]), int(entry[3]), entry[5] or "/"
        elif u.isdigit():
            uid, gid = int(u), 0
        else:
            raise _ChildError(
                KIND_SETUP,
                f"unable to find user {u}: no matching entries in passwd file",
                EXIT_SETUP,
            )
        if g:
            grp = next((x for x in groups if len(x) >= 3 and x[0] == g), None)
            if grp is not None:
                gid = int(grp[2])
            elif g.isdigit():
                gid = int(g)
            else:
                raise _ChildError(
                    KIND_SETUP,
                    f"unable to find group {g}: no matching entries in group file",
                    EXIT_SETUP,
                )
    else:
        entry = next((p for p in passwd if len(p) >= 7 and p[2] == str(uid)), None)
        if entry is not None:
            name, home = entry[0], entry[5] or "/"
    if max(uid, gid) > 0xFFFFFFFE:
        raise _ChildError(KIND_SETUP, f"invalid user {user!r}: uids and gids must be in "
                          f"range 0-{0xFFFFFFFE}", EXIT_SETUP)
    sup = []
    if name is not None:
        for grp in groups:
            if len(grp) >= 4 and name in grp[3].split(",") and grp[2].isdigit():
                sup.append(int(grp[2]))
    for g in extra_gids:
        if g not in sup:
            sup.append(g)
    return uid, gid, sup, home


def _env_with_defaults(env: list[str], hostname: str, home: str, tty: bool) -> list[str]:
    keys = {e.split("=", 1)[0] for e in env}
    out = list(env)
    if "PATH" not in keys:
        out.insert(0, "PATH=" + DEFAULT_PATH)
    if "HOSTNAME" not in keys and hostname:
        out.append("HOSTNAME=" + hostname)
    if "HOME" not in keys:
        out.append("HOME=" + home)
    if tty and "TERM" not in keys:
        out.append("TERM=xterm")
    return out


def find_executable(cmd: str, path: str) -> str:
    """PATH lookup as execvp does it, with docker's errors (127 not found, 126 denied)."""
    if "/" in cmd:
        return cmd
    denied = None
    for d in path.split(":"):
        candidate = os.path.join(d or ".", cmd)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied:
        raise _ChildError(
            KIND_NOT_EXECUTABLE,
            f"pbox: cannot execute `{cmd}` ({denied}): Permission denied",
            EXIT_NOEXEC,
        )
    raise _ChildError(
        KIND_NOT_FOUND,
        f"pbox: executable file `{cmd}` not found in $PATH: No such file or directory",
        EXIT_NOTFOUND,
    )


def _default_signals() -> None:
    """Default dispositions and an empty mask for the command: the caller may block
    signals while it starts us, and Python ignores SIGPIPE and SIGXFSZ, which an
    exec'd program would inherit."""
    for sig in range(1, signal.NSIG):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _exec(args: list[str], env: list[str]) -> None:
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    exe = find_executable(args[0], path)
    _default_signals()
    try:
        os.execve(exe, args, dict(e.split("=", 1) if "=" in e else (e, "") for e in env))
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise _ChildError(
                KIND_NOT_FOUND,
                f"pbox: executable file `{args[0]}` not found: No such file or directory",
                EXIT_NOTFOUND,
            )
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise _ChildError(
            KIND_NOT_EXECUTABLE, f"pbox: cannot execute `{args[0]}`: {reason}", EXIT_NOEXEC
        )


def _setup_stdio(fds: tuple[int, int, int], msg_w: int, keep: tuple = ()) -> None:
    """Put the given fds on 0, 1, 2 and close everything else but the message pipe
    (and the fds in ``keep``, such as the console socket)."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
    for i, fd in enumerate(high):
        os.dup2(fd, i, inheritable=True)
    for fd in high:
        os.close(fd)
    last = 3
    for fd in sorted(k for k in (msg_w, *keep) if k >= 3):
        os.closerange(last, fd)
        last = fd + 1
    os.closerange(last, _MAX_FD)


def _make_console(sock_fd: int, uid: int, tty_gid: int | None) -> None:
    """A pty from the container's own /dev/pts (after pivot_root, so ttyname works
    inside): its slave becomes our stdio, its master goes to pbox over ``sock_fd``
    (runc's console socket)."""
    import socket

    master, slave = os.openpty()
    try:
        os.fchown(slave, uid, -1 if tty_gid is None else tty_gid)
        os.fchmod(slave, 0o620)
    except OSError:
        pass
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [b"C"], [master])
    finally:
        sock.close()
        os.close(master)


def _switch_user(uid: int, gid: int, groups: list[int], mapping: IdMapping | None) -> None:
    single = mapping is not None and mapping.mode == idmap.MODE_SINGLE and mapping.needs_userns
    if single and (uid, gid) != (0, 0):
        raise _ChildError(
            KIND_SETUP,
            f"cannot run as uid {uid} gid {gid}: only uid/gid 0 exist in this container "
            f"because user {mapping.uid} has no subordinate id range in {idmap.SUBUID_FILE} "
            f"and {idmap.SUBGID_FILE}",
            EXIT_SETUP,
        )
    if mapping is not None and mapping.needs_userns:
        # Groups the namespace does not map cannot be joined (docker images list root in
        # many groups; with a single-id mapping none of them exist).
        groups = [g for g in groups if mapping.to_host_gid(g) is not None]
    try:
        os.setgroups(groups)
    except OSError as e:
        # setgroups is denied in a single-id namespace; the process then keeps no group
        # that is mapped anyway.
        if not (single and e.errno == errno.EPERM):
            raise _ChildError(KIND_SETUP, f"setgroups {groups}: {e.strerror}", EXIT_SETUP)
    try:
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise _ChildError(
            KIND_SETUP, f"cannot switch to uid {uid} gid {gid}: {e.strerror}", EXIT_SETUP
        )


def _container_main(spec: ContainerSpec, root: str, ctx: _Ctx) -> None:
    """PID 1 of the new pid namespace: finish the filesystem, then become the command."""
    proc = spec.process
    syscalls.set_pdeathsig(signal.SIGKILL)
    _setup_stdio(ctx.stdio, ctx.msg_w, (ctx.console_sock, ctx.net_r))
    _step("mounting /proc", mounts.mount_proc, root)
    _step(
        "mounting /dev",
        mounts.mount_dev,
        root,
        tty_gid=ctx.tty_gid,
        shm_size=spec.shm_size,
        mqueue=spec.private_ipc,
        devices=spec.devices,
    )
    _step("mounting /sys", mounts.mount_sys, root,
          own_netns=spec.network != NETWORK_HOST)
    for m in spec.mounts:
        _step(f"mounting {m.target}", mounts.apply_mount, root, m)
    _step("binding /etc/hosts", mounts.bind_etc_file, root, spec.hosts_file, "/etc/hosts")
    _step(
        "binding /etc/resolv.conf", mounts.bind_etc_file, root, spec.resolv_conf, "/etc/resolv.conf"
    )
    _step("binding /etc/hostname", mounts.bind_etc_file, root, spec.hostname_file, "/etc/hostname")
    _step("masking paths", mounts.mask_paths, root, spec.masked_paths)
    _step("read-only paths", mounts.readonly_paths, root, spec.readonly_paths)
    cwd = proc.cwd or "/"
    _step(f"creating the working directory {cwd}", mounts.mkdir_in, root, cwd)
    if spec.rootfs.readonly:
        _step(
            "making the root read-only",
            mounts.set_mount_flags,
            root,
            syscalls.MS_RDONLY,
            recursive=False,
        )
    _step("pivot_root", mounts.pivot, root)

    uid, gid, groups, home = resolve_user(proc.user, proc.uid, proc.gid, proc.additional_gids)
    env = _env_with_defaults(proc.env, spec.hostname, home, proc.tty)
    if ctx.console_sock >= 0:
        _step("allocating the terminal", _make_console, ctx.console_sock, uid, ctx.tty_gid)

    os.setsid()
    if proc.tty and os.isatty(0):
        try:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError as e:
            raise _ChildError(KIND_SETUP, f"setting the controlling terminal: {e}", EXIT_SETUP)
    capset = proc.effective_capabilities()
    _step("dropping capabilities", caps.apply_bounding, capset)
    _switch_user(uid, gid, groups, ctx.mapping)
    _step("setting capabilities", caps.apply_process_caps, capset, uid)
    try:
        os.chdir(cwd)
    except OSError as e:
        raise _ChildError(KIND_SETUP, f"chdir to {cwd}: {e.strerror}", EXIT_SETUP)
    os.umask(proc.umask)
    if proc.no_new_privs:
        syscalls.set_no_new_privs()
    # Changing credentials cleared the parent-death signal: arm it again.
    syscalls.set_pdeathsig(signal.SIGKILL)
    if not proc.args:
        raise _ChildError(KIND_SETUP, "no command given", EXIT_SETUP)
    if ctx.net_r >= 0:
        ready = os.read(ctx.net_r, 1) == b"N"
        os.close(ctx.net_r)
        if not ready:
            os._exit(EXIT_SETUP)  # the caller failed to set up the network, and says why
    if spec.init:
        _init_main(proc.args, env, ctx.msg_w)
    _exec(proc.args, env)


def _init_main(args: list[str], env: list[str], msg_w: int) -> None:
    """A minimal init as PID 1 (docker --init): run the command, forward signals, reap."""
    pid = os.fork()
    if pid == 0:
        try:
            _exec(args, env)
        except BaseException as e:
            _fail(msg_w, e)
        os._exit(EXIT_SETUP)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    # Only now may the caller learn that the command runs (the pipe's end-of-file):
    # a signal it forwards from then on finds our handlers, not PID 1's default of
    # ignoring it.
    os.close(msg_w)
    while True:
        try:
            wpid, status = os.wait()
        except ChildProcessError:
            os._exit(EXIT_SETUP)
        if wpid == pid and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
            os._exit(userns.exit_status(status))


class _Ctx:
    """What the children need besides the spec (fds, flags, mapping facts)."""

    def __init__(self):
        self.stdio: tuple[int, int, int] = (0, 1, 2)
        self.msg_w = -1
        self.sync_w = -1
        self.go_r = -1
        self.flags = 0
        self.parent_pid = 0
        self.die_with_parent = True
        self.tty_gid: int | None = 5
        self.mapping: IdMapping | None = None
        self.use_userns = False
        self.console_sock = -1
        self.netns_fd = -1
        # With on_created: PID 1 waits on this pipe, just before its exec, until the
        # caller has set up the network, which runs alongside the filesystem setup.
        self.net_r = -1


def _close_fds_except(keep: set[int]) -> None:
    """Drop every inherited fd we do not need, so no pipe of the caller is held open."""
    last = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(last, fd)
        last = fd + 1
    os.closerange(last, _MAX_FD)


def _holder_main(spec: ContainerSpec, ctx: _Ctx) -> None:
    # The caller may hold its signals back while it starts us; ours start unblocked.
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    _close_fds_except({*ctx.stdio, ctx.msg_w, ctx.sync_w, ctx.go_r, ctx.console_sock,
                       ctx.netns_fd, ctx.net_r})
    # Out of the caller's process group: a ^C on the terminal reaches only the caller,
    # which decides what the container gets (Container.kill), like docker's sig-proxy.
    os.setpgid(0, 0)
    if ctx.die_with_parent:
        syscalls.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != ctx.parent_pid:
            os._exit(EXIT_SETUP)
    try:
        syscalls.unshare(ctx.flags)
    except OSError as e:
        raise _ChildError(KIND_SETUP, str(userns.unshare_error(e)), EXIT_SETUP)
    os.write(ctx.sync_w, b"U")
    os.close(ctx.sync_w)
    if os.read(ctx.go_r, 1) != b"K":
        os._exit(EXIT_SETUP)  # the caller gave up (and reports why)
    os.close(ctx.go_r)
    if ctx.use_userns:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    _step("making / a slave mount", mounts.make_rslave, "/")
    if ctx.netns_fd >= 0:
        _step("joining the network namespace", syscalls.setns, ctx.netns_fd,
              syscalls.CLONE_NEWNET)
        os.close(ctx.netns_fd)
    if spec.own_network:
        _step("bringing up lo", syscalls.set_link_up, "lo")
    hostname = spec.hostname or spec.id[:12]
    if hostname:
        _step("sethostname", syscalls.sethostname, hostname)
    if spec.domainname:
        _step("setdomainname", syscalls.setdomainname, spec.domainname)
    rootfs = _step("mounting the root filesystem", mounts.mount_rootfs, spec.rootfs)
    _report(ctx.msg_w, driver=rootfs.driver, helpers=rootfs.helper_pids)
    if rootfs.helper_pids:
        # pivot_root moves the root of every process of the mount namespace that has
        # the old root, so the fuse daemon would then resolve its layer paths through
        # its own mount and hang.  Leave it behind in this namespace; the container
        # gets a copy, which still holds the fuse mount.
        _step("unshare(CLONE_NEWNS)", syscalls.unshare, syscalls.CLONE_NEWNS)

    # The pid namespace comes last: its first child becomes its init, and when that
    # exits the namespace accepts no more processes.  A fuse-overlayfs started above
    # would have been it.
    _step("unshare(CLONE_NEWPID)", syscalls.unshare, syscalls.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            _container_main(spec, rootfs.path, ctx)
        except BaseException as e:
            _fail(ctx.msg_w, e)
        os._exit(EXIT_SETUP)

    _report(ctx.msg_w, pid=pid)
    os.close(ctx.msg_w)
    if ctx.net_r >= 0:
        os.close(ctx.net_r)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    # Close what the container got, so its end of a pipe or pty is not held open here.
    for fd in set(ctx.stdio) | {0, 1, 2}:
        try:
            os.close(fd)
        except OSError:
            pass
    code = EXIT_SETUP
    while True:
        try:
            wpid, status = os.waitpid(pid, 0)
        except ChildProcessError:
            break
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            code = userns.exit_status(status)
            break
    _stop_helpers(rootfs)
    os._exit(code)


def _stop_helpers(rootfs: mounts.MountedRootfs) -> None:
    stop_helpers(rootfs.helper_pids)


def stop_helpers(pids: list[int]) -> None:
    """Flush a fuse-overlayfs mount (our root now), then stop its daemon(s)."""
    if not pids:
        return
    try:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            syscalls.syncfs(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            continue
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            pass


def _fileno(f, default: int) -> int:
    if f is None:
        return default
    if isinstance(f, int):
        return f
    return f.fileno()


def launch(
    spec: ContainerSpec,
    *,
    stdin=None,
    stdout=None,
    stderr=None,
    mapping: IdMapping | None = None,
    notice: Callable[[str], None] | None = None,
    on_created: Callable[[int], None] | None = None,
    die_with_parent: bool = True,
    console: bool = False,
    netns_fd: int = -1,
) -> Container:
    """Start ``spec``; return once the command is executing.

    ``stdin``/``stdout``/``stderr``: fds or file objects (a pty's slave works: with
    ``spec.process.tty`` it becomes the controlling terminal); None inherits ours.
    Signals are the caller's business: the container runs in its own session and the
    holder in its own process group, so a terminal's ^C reaches only the caller, which
    forwards what it wants with :meth:`Container.kill`.  ``mapping`` defaults to :func:`userns.current_mapping` and must be the one the layers
    were extracted with.  ``on_created(pid)`` runs once the namespaces exist, with the pid
    of a process in them (for network setup: ``/proc/PID/ns/net``), while the child
    mounts the filesystem; the command is executed only after it returned.  It must
    change files the container binds (/etc/hosts) in place.  With ``die_with_parent`` the container is killed if
    the calling process dies.  With ``console`` the command gets a terminal allocated
    in the container's own /dev/pts (so ``tty`` and ttyname work inside); its master
    side is ``Container.console_fd``, and the given stdio fds are not used.
    ``netns_fd`` (an open ``/proc/PID/ns/net``) is a network namespace to join instead
    of making one (or of the host's, for a spec whose network is ``container:ID``).

    Raises CommandNotFound / CommandNotExecutable / RuntimeFailure, with the reason.
    """
    if mapping is None:
        mapping = userns.current_mapping()
    ctx = _Ctx()
    ctx.mapping = mapping
    ctx.use_userns = mapping.mode != idmap.MODE_HOST and not mapping.entered
    ctx.die_with_parent = die_with_parent
    ctx.tty_gid = 5 if mapping.to_host_gid(5) is not None else None
    if ctx.use_userns and mapping.mode == idmap.MODE_SINGLE:
        userns.notify_squash(notice, mapping.uid)
    flags = (
        syscalls.CLONE_NEWNS
        | syscalls.CLONE_NEWUTS
        | (syscalls.CLONE_NEWIPC if spec.private_ipc else 0)
        | (syscalls.CLONE_NEWNET if spec.own_network and netns_fd < 0 else 0)
        | (syscalls.CLONE_NEWUSER if ctx.use_userns else 0)
    )
    ctx.flags = flags
    ctx.netns_fd = netns_fd
    ctx.stdio = (_fileno(stdin, 0), _fileno(stdout, 1), _fileno(stderr, 2))
    syscalls.last_cap()  # read /proc now, while it is the host's

    sync_r, ctx.sync_w = os.pipe2(os.O_CLOEXEC)
    ctx.go_r, go_w = os.pipe2(os.O_CLOEXEC)
    msg_r, ctx.msg_w = os.pipe2(os.O_CLOEXEC)
    net_w = -1
    if on_created is not None:
        ctx.net_r, net_w = os.pipe2(os.O_CLOEXEC)
    console_r = None
    if console:
        import socket

        console_r, console_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctx.console_sock = console_w.detach()
    ctx.parent_pid = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass

    holder = os.fork()
    if holder == 0:
        # The children run briefly before an exec or a wait: a collection would touch
        # (and so copy) every object shared with the parent, for nothing.
        gc.disable()
        try:
            os.close(sync_r)
            os.close(go_w)
            os.close(msg_r)
            if net_w >= 0:
                os.close(net_w)
            if console_r is not None:
                console_r.close()
            _holder_main(spec, ctx)
        except BaseException as e:
            _fail(ctx.msg_w, e)
        os._exit(EXIT_SETUP)

    os.close(ctx.sync_w)
    os.close(ctx.go_r)
    os.close(ctx.msg_w)
    if ctx.net_r >= 0:
        os.close(ctx.net_r)
    if ctx.console_sock >= 0:
        os.close(ctx.console_sock)
    try:
        try:
            ready = os.read(sync_r, 1) == b"U"
            if ready:
                if ctx.use_userns:
                    _write_maps(mapping, holder)
                os.write(go_w, b"K")
                if on_created is not None:
                    # The network is set up while the child mounts the filesystem; the
                    # command starts once both are done.
                    on_created(holder)
                    try:
                        os.write(net_w, b"N")
                    except BrokenPipeError:
                        pass  # the child failed meanwhile: its message says why
        except BaseException:
            _abandon(holder)
            raise
        finally:
            os.close(sync_r)
            os.close(go_w)
            if net_w >= 0:
                os.close(net_w)
        messages = _read_messages(msg_r)
    finally:
        os.close(msg_r)

    error = next((m for m in messages if "kind" in m), None)
    pid = next((m["pid"] for m in messages if "pid" in m), None)
    driver = next((m for m in messages if "driver" in m), {})
    c = Container(spec, pid or 0, holder, driver.get("driver", ""))
    c.helper_pids = list(driver.get("helpers", []))
    if error is not None or pid is None:
        code = c.wait()
        if error is None:
            raise RuntimeFailure(f"the container setup failed (exit status {code})")
        raise_child_error(error, "the container setup failed")
    if console_r is not None:
        c.receive_console(console_r, "the container's terminal could not be allocated")
    return c


def raise_child_error(error: dict, default: str) -> None:
    """Raise the error a child reported before its execve, as docker's exit codes want."""
    cls = {
        KIND_NOT_FOUND: CommandNotFound,
        KIND_NOT_EXECUTABLE: CommandNotExecutable,
    }.get(error["kind"], RuntimeFailure)
    raise cls(error.get("message") or default)


def _write_maps(mapping: IdMapping, pid: int) -> None:
    if mapping.mode == idmap.MODE_SUBUID:
        userns.run_newidmap(mapping, pid)
    else:
        try:
            userns.write_single_map(pid, mapping.uid, mapping.gid)
        except OSError as e:
            raise RuntimeFailure(f"cannot write the id map of the container: {e}")


def _abandon(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _read_messages(fd: int) -> list[dict]:
    data = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    out = []
    for line in data.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
