"""Entering a user namespace where the invoking user is root.

``become_root()`` is for commands that must create files owned by container ids (pull,
load, rmi of files owned by subordinate ids, build commits): afterwards the process runs
as uid 0 of a user namespace that is mapped to the user and the subordinate ranges.

Two ways, chosen by :func:`current_mapping`:

* **subuid** (the user has /etc/subuid and /etc/subgid ranges and the setuid
  newuidmap/newgidmap exist): only a privileged helper may write a multi-range map, and it
  must be given the pid of a process *already in* the new namespace, from *outside* it.
  So we fork: the child unshares and continues the command; the parent runs the helpers
  on the child's pid, then only waits and exits with the child's status.
* **single** (no range): a process may map its own uid alone, so the process unshares and
  writes its own maps, with no fork.  Only uid/gid 0 exist inside.

A process must be single-threaded to enter a user namespace (the kernel refuses
``unshare(CLONE_NEWUSER)`` otherwise, and threads would not survive the fork), so call
``become_root()`` early, before starting threads, and before taking POSIX (fcntl) locks,
which a forked child does not inherit.
"""

from __future__ import annotations

import _signal as signal  # (signal imports enum: ~2 ms of every pull)
import os
import sys

from pbox.errors import RuntimeFailure
from pbox.rootless import idmap, syscalls
from pbox.rootless.idmap import IdMapping
from pbox.rootless.pause import ENV_MARKER  # defined there, for the path that joins

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Signals the waiting parent passes on to the child.  SIGINT is not among them: a ^C
# from the terminal already reaches both through the process group.
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

_notified = False


def _user_name(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER") or os.environ.get("LOGNAME")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def in_initial_userns() -> bool:
    """True in the host's user namespace (its uid_map maps every id to itself)."""
    try:
        lines = _read("/proc/self/uid_map").split()
    except OSError:
        return True
    return lines == ["0", "0", "4294967295"]


def in_pbox_userns() -> bool:
    """True inside a namespace made by :func:`become_root` (or a container's)."""
    return os.environ.get(ENV_MARKER) == "1" and not in_initial_userns()


def _parse_map(text: str) -> tuple[idmap.IdRange, ...]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append(idmap.IdRange(int(parts[0]), int(parts[1]), int(parts[2])))
    return tuple(out)


def current_mapping() -> IdMapping:
    """The mapping this process should use (or is already inside).

    Real root gets ``host`` (no namespace needed).  A user with subordinate ranges and
    working newuidmap/newgidmap gets ``subuid``; anyone else ``single``.  Inside a
    namespace made by become_root the mapping is read back from /proc/self/uid_map, so
    ``to_host_uid`` still answers in host ids.
    """
    uid, gid = os.getuid(), os.getgid()
    if not in_initial_userns() and uid == 0:
        uids = _parse_map(_read("/proc/self/uid_map"))
        gids = _parse_map(_read("/proc/self/gid_map"))
        host_uid = uids[0].host if uids else uid
        host_gid = gids[0].host if gids else gid
        mode = idmap.MODE_SINGLE if len(uids) == 1 and uids[0].size == 1 else idmap.MODE_SUBUID
        return IdMapping(mode, host_uid, host_gid, uids, gids, entered=True)
    if uid == 0:
        return idmap.mapping_for(uid, gid, None)  # host: no helper, no name needed
    name = _user_name(uid)
    # The helpers are looked for (shutil.which, which imports zlib, bz2 and lzma) only
    # when there are ranges for them to map; without, the mapping is single anyway.
    ranged = idmap.read_subid_ranges(name, uid, idmap.SUBUID_FILE) and \
        idmap.read_subid_ranges(name, uid, idmap.SUBGID_FILE)
    return idmap.mapping_for(
        uid,
        gid,
        name,
        newuidmap=idmap.find_newidmap("newuidmap") if ranged else None,
        newgidmap=idmap.find_newidmap("newgidmap") if ranged else None,
    )


def thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _require_single_thread(what: str) -> None:
    n = thread_count()
    if n > 1:
        raise RuntimeFailure(
            f"cannot {what}: the process has {n} threads; a user namespace can only be "
            "entered by a single-threaded process (enter it before starting threads)"
        )


def unshare_error(err: OSError) -> RuntimeFailure:
    """A user-facing error for a refused ``unshare(CLONE_NEWUSER...)``."""
    import errno

    if err.errno in (errno.EPERM, errno.ENOSPC, errno.EUSERS):
        hint = (
            "unprivileged user namespaces are disabled or exhausted on this system "
            "(check the sysctls kernel.unprivileged_userns_clone, "
            "user.max_user_namespaces and any AppArmor/SELinux restriction)"
        )
    elif err.errno == errno.EINVAL:
        hint = "the process is multi-threaded or the kernel lacks user namespaces"
    else:
        hint = err.strerror or str(err)
    return RuntimeFailure(f"cannot create a user namespace: {hint}")


def write_single_map(pid: int | str, uid: int, gid: int) -> None:
    """Map ``uid``/``gid`` alone to 0 in the namespace of ``pid`` (``"self"`` allowed).

    An unprivileged process may do this for its own ids only, and only after denying
    setgroups(2), which would otherwise let it drop groups that deny it access.
    """
    base = f"/proc/{pid}"
    with open(f"{base}/setgroups", "w") as f:
        f.write("deny")
    with open(f"{base}/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open(f"{base}/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def run_newidmap(mapping: IdMapping, pid: int) -> None:
    """Write a subuid mapping for ``pid`` with newuidmap/newgidmap; RuntimeFailure if refused."""
    import subprocess

    for args in (mapping.newuidmap_args(pid), mapping.newgidmap_args(pid)):
        try:
            res = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )
        except OSError as e:
            raise RuntimeFailure(f"cannot run {args[0]}: {e.strerror}")
        if res.returncode != 0:
            out = res.stdout.decode(errors="replace").strip()
            raise RuntimeFailure(
                f"{os.path.basename(args[0])} refused the id mapping "
                f"({' '.join(args[2:])}): {out or 'exit status ' + str(res.returncode)}; "
                f"check {idmap.SUBUID_FILE} and {idmap.SUBGID_FILE}"
            )


def notify_squash(notice: Callable[[str], None] | None, uid: int) -> None:
    """Tell the user, once per process, that ids are squashed to theirs."""
    global _notified
    if notice is None or _notified:
        return
    _notified = True
    notice(idmap.squash_notice(_user_name(uid) or str(uid)))


def exit_status(status: int) -> int:
    """A wait status as a shell-style exit code (128+N for a signal)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 125


def _become_root_single(mapping: IdMapping) -> None:
    _require_single_thread("enter a user namespace")
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    except OSError as e:
        raise unshare_error(e)
    try:
        write_single_map("self", mapping.uid, mapping.gid)
    except OSError as e:
        # The namespace exists but has no map: nothing sensible can run in it.
        raise RuntimeFailure(f"cannot write the id map of the user namespace: {e}")
    os.environ[ENV_MARKER] = "1"


def _forward_signals(pid: int) -> None:
    """In the waiting parent: ignore ^C (the child gets its own), pass the others on."""

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in _FORWARDED:
        signal.signal(sig, forward)


def _wait_and_exit(pid: int) -> None:
    """The parent's life after the fork: wait, exit like the child."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            os._exit(125)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            os._exit(exit_status(status))


def _become_root_forked(mapping: IdMapping) -> None:
    _require_single_thread("enter a user namespace")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    parent_pid = os.getpid()
    pid = os.fork()
    if pid:
        # Parent: map the child, then only wait.  It never returns.  Signals are set up
        # first, so none sent once the child runs can kill the parent by default action.
        _forward_signals(pid)
        os.close(to_parent_w)
        os.close(to_child_r)
        try:
            ready = os.read(to_parent_r, 1)
            if ready == b"U":
                try:
                    run_newidmap(mapping, pid)
                    os.write(to_child_w, b"K")
                except RuntimeFailure as e:
                    os.write(to_child_w, b"E" + str(e).encode())
        except OSError:
            pass
        finally:
            os.close(to_parent_r)
            os.close(to_child_w)
        _wait_and_exit(pid)

    # Child: continues the command.
    os.close(to_parent_r)
    os.close(to_child_w)
    try:
        syscalls.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent_pid:
            # The parent died before PDEATHSIG was armed: nobody would report our status.
            os._exit(125)
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
        except OSError as e:
            raise unshare_error(e)
        os.write(to_parent_w, b"U")
        os.close(to_parent_w)
        to_parent_w = -1
        answer = b""
        while True:
            chunk = os.read(to_child_r, 65536)
            if not chunk:
                break
            answer += chunk
        if not answer:
            os._exit(125)  # the parent vanished
        if answer[:1] != b"K":
            raise RuntimeFailure(answer[1:].decode(errors="replace"))
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.environ[ENV_MARKER] = "1"
    finally:
        if to_parent_w >= 0:
            os.close(to_parent_w)
        os.close(to_child_r)


def become_root(
    mapping: IdMapping | None = None,
    notice: Callable[[str], None] | None = None,
) -> None:
    """Continue this process as uid 0 of a user namespace mapped to the user.

    No-op for real root and when already inside such a namespace.  In subuid mode this
    forks: the original process stays behind, forwards SIGTERM/SIGHUP (it ignores SIGINT,
    which the terminal delivers to both), waits, and exits with the child's exit code (or
    128+signal); the function returns in the child, which dies with its parent
    (PR_SET_PDEATHSIG).  In single mode no fork happens and ``notice`` is called once
    with an explanation that file owners get squashed.

    Raises RuntimeFailure when the namespace cannot be made or mapped (in subuid mode
    the exception is raised in the child, so the command reports it normally).
    """
    if os.getuid() == 0:
        return
    if in_pbox_userns():
        return
    if mapping is None:
        mapping = current_mapping()
    if mapping.mode == idmap.MODE_HOST or mapping.entered:
        return
    if mapping.mode == idmap.MODE_SINGLE:
        _become_root_single(mapping)
        notify_squash(notice, mapping.uid)
        return
    _become_root_forked(mapping)


NS_FILES = {
    "user": syscalls.CLONE_NEWUSER,
    "mnt": syscalls.CLONE_NEWNS,
    "pid": syscalls.CLONE_NEWPID,
    "uts": syscalls.CLONE_NEWUTS,
    "ipc": syscalls.CLONE_NEWIPC,
    "net": syscalls.CLONE_NEWNET,
    "cgroup": syscalls.CLONE_NEWCGROUP,
}


def join_namespaces(pid: int, names: tuple[str, ...] = ("user", "mnt")) -> None:
    """setns(2) into the namespaces of ``pid``, the user namespace first.

    All files are opened before the first setns (after joining the mount namespace,
    /proc may be another one).  A namespace we are already in is skipped (joining one's
    own user namespace is EINVAL).  Joining "pid" only affects children forked later.
    The process must be single-threaded to join a user namespace.
    """
    order = [n for n in NS_FILES if n in names]
    fds = []
    try:
        for name in order:
            path = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
                fds.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                raise RuntimeFailure(f"process {pid} is gone; cannot join its namespaces")
        for name, fd in fds:
            try:
                syscalls.setns(fd, NS_FILES[name])
            except OSError as e:
                raise RuntimeFailure(f"cannot join the {name} namespace of process {pid}: {e}")
    finally:
        for _, fd in fds:
            os.close(fd)
    if "mnt" in order:
        os.chdir("/")
    if "user" in order and os.getuid() == 0:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def join_userns(pid: int) -> None:
    """Enter the user and mount namespaces of ``pid`` (e.g. a container's PID 1)."""
    _require_single_thread("join a user namespace")
    join_namespaces(pid, ("user", "mnt"))
