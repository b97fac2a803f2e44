"""One user namespace per user, held open by a tiny pause process (podman's idea).

Every pbox command that needs the user's namespace (pull and rmi to write layer files
owned by subordinate ids, run for containers) joins the same namespace.  Benefits:

* no newuidmap/newgidmap per command: joining is one ``setns(2)``;
* all containers live in one user namespace, so pbox can signal any of their
  processes (a process of uid 1000 in a container is host uid 100999, which the user
  may only signal from inside the namespace) and networking can join containers'
  network namespaces to each other.

The pause process is ``sleep infinity`` exec'd inside the new namespace under the name
``pbox-pause`` (about 1 MB); its pid is kept in ``<runroot>/pause.pid``.  If it is gone
(reboot, killed), the next command makes a new one.  There is one per run root: one
whose run root was deleted is ended when a new one is made (``_end_strays``).
"""

from __future__ import annotations

import _signal as signal  # (signal imports enum: ~2 ms of every pull)
import fcntl
import os

from pbox.errors import RuntimeFailure
from pbox.rootless import make_runroot, syscalls

TYPE_CHECKING = False  # (the typing module is ~3 ms to import)
if TYPE_CHECKING:
    from pbox.rootless import idmap

PAUSE_NAME = b"pbox-pause"
# In the pause process's environment: the run root it was made for (see _end_strays).
RUNROOT_ENV = "PBOX_PAUSE_RUNROOT"
# Set in the environment of a process that joined the namespace (children inherit it:
# they must not try again).  ``userns.ENV_MARKER``; here so that joining, the hot path
# of every container command, does not import the id-mapping modules.
ENV_MARKER = "PBOX_USERNS"


def _pidfile(runroot: str) -> str:
    return os.path.join(runroot, "pause.pid")


def pause_pid(runroot: str) -> int | None:
    """The pid of a live pause process of ours, or None."""
    try:
        with open(_pidfile(runroot)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
        if argv0 != PAUSE_NAME or os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        return pid
    except (OSError, ValueError):
        return None


def _join(pid: int) -> bool:
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWUSER)
    except OSError:
        return False
    finally:
        os.close(fd)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.environ[ENV_MARKER] = "1"
    return True


def quiet_holder() -> None:
    """In a holder process (this pause process, a network's bridge holder) before it
    execs ``sleep infinity``: stdio on /dev/null, cwd /, and deaf to the signals a
    terminal or a stray ``kill`` sends; only SIGKILL ends it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)


def _spawn(mapping: idmap.IdMapping, runroot: str) -> int:
    """Start the pause process of ``runroot`` in a new user namespace mapped by
    ``mapping``."""
    from pbox.rootless import idmap, userns
    from pbox.rootless.progs import which

    sleep = which("sleep") or "/bin/sleep"
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the pause process
        try:
            os.close(ready_r)
            os.close(go_w)
            os.setsid()
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"U")
            if os.read(go_r, 1) != b"K":  # the parent has written our id maps
                os._exit(1)
            quiet_holder()
            os.execve(sleep, [PAUSE_NAME.decode(), "infinity"],
                      dict(os.environ, **{RUNROOT_ENV: os.path.abspath(runroot)}))
        finally:
            os._exit(1)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"U":
            os.waitpid(pid, 0)
            raise RuntimeFailure("cannot create a user namespace (is "
                                 "kernel.unprivileged_userns_clone enabled?)")
        try:
            if mapping.mode == idmap.MODE_SUBUID:
                userns.run_newidmap(mapping, pid)
            else:
                userns.write_single_map(pid, mapping.uid, mapping.gid)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        os.write(go_w, b"K")
        # ready_w is close-on-exec: EOF means the child has exec'd (or died).  Only
        # then does its cmdline say pbox-pause, which is how every other pbox command
        # (pause_pid) recognises it: publishing the pid earlier would let a concurrent
        # command start a second namespace, or `system reset` miss this one.
        os.read(ready_r, 1)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            raise RuntimeFailure("the pause process exited at start")
    finally:
        os.close(ready_r)
        os.close(go_w)
    return pid


def _end_strays(keep: int) -> None:
    """End the user's pause processes whose run root is gone: one lives for each run
    root, and nothing else ends it when a ``--runroot`` directory is deleted (its
    namespace can no longer be joined: nothing knows its pid).  Run when a new pause
    process is made, which is rare: a look at every process in /proc.  One whose run
    root exists is kept whatever its pid file says (another command may be about to
    publish it); one made by an older pbox, which does not name its run root, too."""
    uid = os.getuid()
    marker = RUNROOT_ENV.encode() + b"="
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == keep:
            continue
        proc = f"/proc/{name}"
        try:
            if os.stat(proc).st_uid != uid:
                continue
            with open(proc + "/cmdline", "rb") as f:
                if f.read().split(b"\0")[0] != PAUSE_NAME:
                    continue
            with open(proc + "/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        roots = [e[len(marker):] for e in environ if e.startswith(marker)]
        if roots and roots[0] and not os.path.isdir(roots[0]):
            try:
                os.kill(int(name), signal.SIGKILL)  # (it ignores the other signals)
            except OSError:
                pass


def join_existing(runroot: str) -> bool:
    """Join the namespace of a live pause process of ours that maps a subordinate range
    (the one :func:`enter` makes in subuid mode); False, changing nothing, when there
    is none.  Must be called while the process has a single thread."""
    pid = pause_pid(runroot)
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/uid_map") as f:
            ranges = f.read().split("\n")
    except OSError:
        return False
    if len([r for r in ranges if r.strip()]) < 2:
        return False  # a single-id namespace: only enter() decides to use that one
    return _join(pid)


def enter(runroot: str, mapping: idmap.IdMapping | None = None, notice=None) -> idmap.IdMapping:
    """Join the user's namespace, creating its pause process when needed.

    No-op for real root and when already inside.  Must be called while the process has
    a single thread.  Returns the mapping now in force.
    """
    from pbox.rootless import idmap, userns

    mapping = mapping or userns.current_mapping()
    if mapping.mode == idmap.MODE_HOST or mapping.entered:
        return mapping
    if mapping.mode == idmap.MODE_SINGLE:
        userns.notify_squash(notice, mapping.uid)
    pid = pause_pid(runroot)
    if pid is not None and _join(pid):
        return userns.current_mapping()
    make_runroot(runroot)
    lock_fd = os.open(os.path.join(runroot, "pause.lock"),
                      os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        pid = pause_pid(runroot)
        if pid is None:
            pid = _spawn(mapping, runroot)
            tmp = _pidfile(runroot) + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{pid}\n")
            os.rename(tmp, _pidfile(runroot))
            _end_strays(pid)
    finally:
        os.close(lock_fd)
    if not _join(pid):
        raise RuntimeFailure(f"cannot join the user namespace of pause process {pid}")
    return userns.current_mapping()
