"""Running one more process in a running container (``exec``).

Two processes take part::

    caller (pbox exec)       opens /proc/PID (PID 1 of the container, as seen here) and
                             through it the namespace files and the root; joins the
                             container's user namespace when it is not ours already,
                             and its pid namespace for the children it forks; forks
      └─ exec'd process      joins the mount, uts, ipc, net (and cgroup) namespaces;
                             enters the container's root (fchdir + chroot); setsid and
                             the controlling terminal; capabilities and user like the
                             container; chdir; execve(command)

The exec'd process is the caller's own child, so the caller reaps it and gets its
exit status; it lives in the container's pid namespace, so it cannot outlive the
container (when a pid namespace's init exits the kernel kills every process in it).

setns(2) on a pid namespace only moves the children forked afterwards, and an
unprivileged caller may not move back to its own (that needs CAP_SYS_ADMIN over the
namespace's owner, the host's user namespace).  So after :func:`exec_in` every process
the caller forks starts in the container: call it from a process that forks nothing
else afterwards (``pbox exec``), or from a child made for the purpose.

Why /proc/PID/root: joining a mount namespace puts us at the root of its first mount,
which is not where the container's PID 1 sees its root after ``pivot_root``.  The
``root`` link of PID 1 is exactly its root (nsenter's ``--root`` and runc do the same).

/proc/PID is opened once, as a directory, and every file is opened relative to it: if
the container's PID 1 dies and its pid is reused, the old directory answers ESRCH
instead of leading into an unrelated process's namespaces.

Setup errors travel to the caller as the launcher's JSON lines over a close-on-exec
pipe (end-of-file without an error line: the command was executed).

Code that runs after the chroot may not import anything (the host's Python library is
no longer reachable); every module it needs is imported at the top.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import sys
import termios

from pbox.errors import RuntimeFailure
from pbox.rootless import caps, syscalls, userns
from pbox.rootless.idmap import IdMapping
from pbox.rootless.launcher import (
    EXIT_SETUP,
    KIND_SETUP,
    ChildProcess,
    _ChildError,
    _env_with_defaults,
    _exec,
    _fail,
    _fileno,
    _make_console,
    _read_messages,
    _setup_stdio,
    _switch_user,
    raise_child_error,
    resolve_user,
)
from pbox.rootless.spec import ProcessSpec

# Joined by the caller (the user namespace first: it grants the rights to join the rest).
CALLER_NAMESPACES = ("user", "pid")
# Joined by the exec'd process.  "time" is left out: pbox never makes one.
CHILD_NAMESPACES = ("mnt", "uts", "ipc", "net", "cgroup")


class ExecProcess(ChildProcess):
    """A process started by :func:`exec_in`, a child of the caller."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self.console_fd: int | None = None  # the pty master with exec_in(console=True)

    def __repr__(self) -> str:
        return f"<ExecProcess pid={self.pid} returncode={self.returncode}>"


def _start_time(stat_text: bytes) -> int:
    return int(stat_text[stat_text.rindex(b")") + 2:].split()[19])


def _open_target(pid: int, start_time: int | None) -> tuple[int, dict[str, int]]:
    """Open /proc/PID/root and the namespace files we are not in already.

    Returns (root fd, {namespace: fd}).  RuntimeFailure when the process is gone.
    """
    gone = RuntimeFailure(f"process {pid} is gone; the container is not running")
    try:
        pdir = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise gone
    fds: dict[str, int] = {}
    root = -1
    try:
        try:
            if start_time is not None:
                sfd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=pdir)
                try:
                    text = os.read(sfd, 4096)
                finally:
                    os.close(sfd)
                if _start_time(text) != start_time:
                    raise gone
            for name in CALLER_NAMESPACES + CHILD_NAMESPACES:
                path = f"ns/{name}"
                mine = "/proc/self/ns/" + ("pid_for_children" if name == "pid" else name)
                try:
                    theirs = os.stat(path, dir_fd=pdir)
                except FileNotFoundError:
                    if name == "cgroup":
                        continue  # a kernel without cgroup namespaces
                    raise
                here = os.stat(mine)
                if (theirs.st_dev, theirs.st_ino) == (here.st_dev, here.st_ino):
                    continue
                fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=pdir)
            root = os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pdir)
        except (ProcessLookupError, FileNotFoundError):
            raise gone
        except PermissionError as e:
            raise RuntimeFailure(
                f"cannot open the namespaces of process {pid}: {e.strerror} (pbox must "
                f"run in the user namespace of the container)"
            )
        except ValueError:
            raise gone
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    finally:
        os.close(pdir)
    return root, fds


def _join_caller(pid: int, fds: dict[str, int]) -> None:
    if "user" in fds:
        if userns.thread_count() > 1:
            raise RuntimeFailure(
                "cannot join the container's user namespace from a multi-threaded process"
            )
        try:
            syscalls.setns(fds["user"], syscalls.CLONE_NEWUSER)
        except OSError as e:
            raise RuntimeFailure(f"cannot join the user namespace of process {pid}: {e}")
        # setns gave us every capability there; keep them as its root.
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    if "pid" in fds:
        try:
            syscalls.setns(fds["pid"], syscalls.CLONE_NEWPID)
        except OSError as e:
            raise RuntimeFailure(f"cannot join the pid namespace of process {pid}: {e}")


_NS_FLAGS = {
    "mnt": syscalls.CLONE_NEWNS,
    "uts": syscalls.CLONE_NEWUTS,
    "ipc": syscalls.CLONE_NEWIPC,
    "net": syscalls.CLONE_NEWNET,
    "cgroup": syscalls.CLONE_NEWCGROUP,
}


def _child_main(
    proc: ProcessSpec,
    hostname: str,
    root: int,
    fds: dict[str, int],
    stdio: tuple[int, int, int],
    msg_w: int,
    alive_r: int,
    die_with_parent: bool,
    mapping: IdMapping,
    console_sock: int,
) -> None:
    if die_with_parent:
        syscalls.set_pdeathsig(signal.SIGKILL)
        # getppid() says 0 here (our parent is outside this pid namespace), so the pipe
        # tells whether the caller died before the death signal was armed: its write end
        # is closed then.
        if select.select([alive_r], [], [], 0)[0]:
            os._exit(EXIT_SETUP)
    for name in CHILD_NAMESPACES:
        if name in fds:
            try:
                syscalls.setns(fds[name], _NS_FLAGS[name])
            except OSError as e:
                raise _ChildError(
                    KIND_SETUP, f"cannot join the {name} namespace of the container: {e}",
                    EXIT_SETUP,
                )
    try:
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
    except OSError as e:
        raise _ChildError(KIND_SETUP, f"entering the container's root: {e}", EXIT_SETUP)
    # Closes the namespace files, the root and the pipe.
    _setup_stdio(stdio, msg_w, (console_sock,))

    uid, gid, groups, home = resolve_user(proc.user, proc.uid, proc.gid, proc.additional_gids)
    env = _env_with_defaults(proc.env, hostname, home, proc.tty)
    if console_sock >= 0:
        tty_gid = 5 if mapping.to_host_gid(5) is not None else None
        try:
            _make_console(console_sock, uid, tty_gid)
        except OSError as e:
            raise _ChildError(KIND_SETUP, f"allocating the terminal: {e}", EXIT_SETUP)
    os.setsid()
    if proc.tty and os.isatty(0):
        try:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError as e:
            raise _ChildError(KIND_SETUP, f"setting the controlling terminal: {e}", EXIT_SETUP)
    capset = proc.effective_capabilities()
    try:
        caps.apply_bounding(capset)
    except OSError as e:
        raise _ChildError(KIND_SETUP, f"dropping capabilities: {e}", EXIT_SETUP)
    _switch_user(uid, gid, groups, mapping)
    try:
        caps.apply_process_caps(capset, uid)
    except OSError as e:
        raise _ChildError(KIND_SETUP, f"setting capabilities: {e}", EXIT_SETUP)
    cwd = proc.cwd or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise _ChildError(KIND_SETUP, f"chdir to {cwd}: {e.strerror}", EXIT_SETUP)
    os.umask(proc.umask)
    if proc.no_new_privs:
        syscalls.set_no_new_privs()
    if die_with_parent:
        # Switching user cleared the parent-death signal: arm it again.
        syscalls.set_pdeathsig(signal.SIGKILL)
    if not proc.args:
        raise _ChildError(KIND_SETUP, "no command given", EXIT_SETUP)
    # The command starts with default dispositions and nothing blocked (the caller may
    # block signals while it starts us, and Python ignores SIGPIPE).
    for sig in range(1, signal.NSIG):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    _exec(proc.args, env)


def exec_in(
    pid: int,
    proc: ProcessSpec,
    *,
    hostname: str = "",
    start_time: int | None = None,
    stdin=None,
    stdout=None,
    stderr=None,
    mapping: IdMapping | None = None,
    die_with_parent: bool = True,
    console: bool = False,
) -> ExecProcess:
    """Start ``proc`` in the container whose PID 1 is ``pid``; return once it executes.

    ``proc`` is complete: the container's environment already merged with the user's,
    ``cwd`` absolute, ``user`` (docker's ``-u``) resolved against the container's own
    /etc/passwd and /etc/group, ``capabilities`` as the container's (None: docker's
    default set).  ``hostname`` is HOSTNAME when the environment lacks it.
    ``start_time`` (from /proc/PID/stat) guards against a reused pid.  ``stdin``/
    ``stdout``/``stderr``: fds or file objects (a pty's slave becomes the controlling
    terminal with ``proc.tty``); None inherits ours.  With ``die_with_parent`` the
    process is killed if the caller dies.  ``mapping`` defaults to the caller's
    (:func:`userns.current_mapping`), read before any namespace is joined.  With
    ``console`` the process gets a terminal allocated in the container's own /dev/pts
    (so ``tty`` works inside); its master is ``ExecProcess.console_fd`` and the given
    stdio fds are not used.

    The caller's later children start in the container's pid namespace (see the module
    docstring).  Raises CommandNotFound (127), CommandNotExecutable (126) or
    RuntimeFailure (125) with the reason.
    """
    if mapping is None:
        mapping = userns.current_mapping()
    syscalls.last_cap()  # read /proc now, while it is the host's
    root, fds = _open_target(pid, start_time)
    stdio = (_fileno(stdin, 0), _fileno(stdout, 1), _fileno(stderr, 2))
    msg_r = msg_w = alive_r = alive_w = console_w = -1
    console_r = None
    try:
        _join_caller(pid, fds)
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
        if console:
            console_r, sock_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            console_w = sock_w.detach()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        try:
            child = os.fork()
        except OSError as e:
            os.close(msg_r)
            os.close(alive_w)
            if console_r is not None:
                console_r.close()
            # ENOMEM: the pid namespace accepts no more processes (its init has exited).
            raise RuntimeFailure(f"cannot start a process in the container: {e.strerror}")
        if child == 0:
            try:
                os.close(msg_r)
                os.close(alive_w)
                if console_r is not None:
                    console_r.close()
                _child_main(proc, hostname, root, fds, stdio, msg_w, alive_r,
                            die_with_parent, mapping, console_w)
            except BaseException as e:
                _fail(msg_w, e)
            os._exit(EXIT_SETUP)
    finally:
        os.close(root)
        for fd in fds.values():
            os.close(fd)
        for fd in (msg_w, alive_r, console_w):
            if fd >= 0:
                os.close(fd)
    try:
        messages = _read_messages(msg_r)
    finally:
        os.close(msg_r)
        os.close(alive_w)
    p = ExecProcess(child)
    error = next((m for m in messages if "kind" in m), None)
    if error is not None:
        if console_r is not None:
            console_r.close()
        p.wait()
        raise_child_error(error, "the command could not be started")
    if console_r is not None:
        # Sent before the execve, so it is waiting in the socket by now.
        p.receive_console(console_r, "the terminal of the command could not be allocated")
    return p
