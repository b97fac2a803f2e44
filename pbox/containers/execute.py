"""Working with a running container: ``exec``, ``attach`` and ``top``.

exec
    A new process in the container's namespaces and root, with the container's
    environment, user, capabilities and working directory unless told otherwise
    (:func:`pbox.rootless.nsexec.exec_in`).  It is a child of the pbox process, which
    passes its stdio (or a pty allocated in the container, ``-t``) and signals on and
    exits with its code.  Its output is not logged (docker does not either).  It dies
    with the container, and with the pbox process unless it was started with ``-d``
    (then it is nobody's child once pbox exits, and the system's init reaps it).

attach
    Follows the container's log from now on, stdout and stderr kept apart, until the
    container exits; the exit code is the container's.  Stdin cannot be attached: a
    detached container's stdin is /dev/null from its start (the monitor owns no
    stream a later command could write to).

top
    The processes in the container's pid namespace (host pids, as docker shows them):
    docker's ``ps -ef`` columns read from /proc, or the host's ``ps`` with the given
    options, its output filtered to the container's processes.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from pbox.config import Config
from pbox.errors import Conflict, RuntimeFailure, UsageError


@dataclass
class ExecOptions:
    command: list = field(default_factory=list)
    interactive: bool = False
    tty: bool = False
    detach: bool = False
    env: list = field(default_factory=list)
    env_files: list = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    privileged: bool = False


def _running(cs, cid: str, name: str) -> dict:
    """The state of a running container, or Conflict naming what it is instead."""
    from pbox.containers.records import alive

    st = cs.state(cid)
    status = st.get("Status")
    if status == "restarting":
        raise Conflict(f"container {name} is restarting, wait until the container is running")
    if status != "running" or not alive(st.get("Pid"), st.get("PidStart")):
        raise Conflict(f"container {name} is not running")
    return st


def exec_process(spec, o: ExecOptions):
    """The container's process settings with the exec's flags applied (pure)."""
    from pbox.containers import options as opt
    from pbox.rootless import caps
    from pbox.rootless.spec import ProcessSpec

    if not o.command:
        raise UsageError("no command given: exec needs a container and a command")
    base = spec.process
    user_env = []
    for path in o.env_files:
        user_env += opt.read_env_file(path)
    user_env += opt.parse_env(o.env)
    cwd = o.workdir or base.cwd or "/"
    if not cwd.startswith("/"):
        raise UsageError(f"the working directory {o.workdir!r} is not an absolute path")
    return ProcessSpec(
        args=list(o.command),
        env=opt.merge_env(base.env, user_env),
        cwd=cwd,
        uid=base.uid,
        gid=base.gid,
        additional_gids=list(base.additional_gids),
        user=o.user or base.user,
        tty=o.tty,
        no_new_privs=base.no_new_privs,
        capabilities=caps.resolve(privileged=True) if o.privileged else base.capabilities,
        umask=base.umask,
    )


def exec_in_container(config: Config, name: str, o: ExecOptions) -> int:
    """``pbox exec``: run a command in the running container ``name``; its exit code.

    With ``o.detach`` returns 0 as soon as the command executes (its stdio is
    /dev/null).  Call in a process that does nothing else afterwards: the process's
    later children would start in the container's pid namespace.
    """
    from pbox.containers import lifecycle
    from pbox.rootless import nsexec
    from pbox.rootless.spec import ContainerSpec

    cs = lifecycle.open_containers(config)
    cid = cs.find(name)
    cfg = cs.config(cid)
    spec = ContainerSpec.from_dict(cfg["Spec"])
    proc = exec_process(spec, o)
    st = _running(cs, cid, name)
    hostname = spec.hostname or cid[:12]

    def start(stdin: int, stdout: int, stderr: int, die_with_parent: bool = True,
              console: bool = False):
        try:
            return nsexec.exec_in(st["Pid"], proc, hostname=hostname,
                                  start_time=st.get("PidStart"), stdin=stdin, stdout=stdout,
                                  stderr=stderr, die_with_parent=die_with_parent,
                                  console=console)
        except RuntimeFailure as e:
            if type(e) is RuntimeFailure and not lifecycle.is_running(cs, cid):
                raise Conflict(f"container {name} is not running")
            raise

    if o.detach:
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            start(devnull, devnull, devnull, die_with_parent=False)
        finally:
            os.close(devnull)
        return 0
    # Hold our signals back until they can be forwarded (wait_forwarding and
    # run_on_pty unblock them): a SIGTERM right after the command started would
    # otherwise end pbox, and the command with it, instead of reaching the command.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, lifecycle.FORWARDED)
    try:
        if o.tty:
            # The terminal is allocated in the container's /dev/pts (console).
            return lifecycle.run_on_pty(
                lambda slave: start(slave, slave, slave, console=True),
                interactive=o.interactive)
        stdin = 0 if o.interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            p = start(stdin, 1, 2)
        finally:
            if not o.interactive:
                os.close(stdin)
        return lifecycle.wait_forwarding(p)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


# -- attach -----------------------------------------------------------------------------------


def _feed_stdin(sock) -> None:
    """Copy our stdin to ``sock`` from a daemon thread until it ends (attach only
    returns when the container exits, whatever stdin does)."""
    import threading

    def copy():
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        finally:
            sock.close()

    threading.Thread(target=copy, name="attach-stdin", daemon=True).start()


def attach(config: Config, name: str, emit: Callable[[str, bytes], None], *,
           sig_proxy: bool = True, notice: Callable[[str], None] | None = None,
           poll: float = 0.05) -> int:
    """``pbox attach``: pass the output of the running container ``name`` to
    ``emit(stream, data)`` ("stdout"/"stderr") from now until it exits; its exit code.

    With ``sig_proxy`` our SIGINT/SIGTERM/... go to the container's PID 1 meanwhile.
    """
    from pbox.containers import lifecycle
    from pbox.containers import logs as lg

    cs = lifecycle.open_containers(config)
    cid = cs.find(name)
    cfg = cs.config(cid)
    st = cs.state(cid)
    if st.get("Status") == "restarting":
        raise Conflict("You cannot attach to a restarting container, wait until it is "
                       "running")
    if st.get("Status") != "running":
        raise Conflict("You cannot attach to a stopped container, start it first")
    path = cs.path(cid, "ctr.log")
    try:
        offset = os.path.getsize(path)
    except FileNotFoundError:
        offset = 0
    if cfg.get("Config", {}).get("OpenStdin") and notice is not None:
        # The monitor of a -i container takes its stdin through a socket; one started
        # without it (or by an older pbox) has stdin on /dev/null.  Fed only now that
        # the output we show starts here: what the input causes is part of it.
        sock = lifecycle.connect_stdin(cs, cid)
        if sock is None:
            notice("stdin is not attached: the container's monitor takes no input; use "
                   "'pbox exec -i' to talk to a process in the container")
        else:
            _feed_stdin(sock)

    def forward(signum, _frame):
        pid = cs.state(cid).get("Pid") if os.path.isdir(cs.path(cid)) else None
        if pid:
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    old = {}
    if sig_proxy:
        old = {s: signal.signal(s, forward) for s in lifecycle.FORWARDED}
    try:
        while True:
            gone = not os.path.isdir(cs.path(cid))
            if not gone:
                st = cs.state(cid)
            entries, offset = lg.read_entries(path, offset=offset)
            for stream, text, _ts in entries:
                emit(stream, text.encode())
            if gone or st.get("Status") not in ("running", "stopping"):
                if not gone:
                    # Everything the container wrote is in the log once its exit is
                    # recorded (the monitor flushes first).
                    entries, offset = lg.read_entries(path, offset=offset)
                    for stream, text, _ts in entries:
                        emit(stream, text.encode())
                return int(st.get("ExitCode") or 0)
            if not entries:
                time.sleep(poll)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# -- top --------------------------------------------------------------------------------------

DEFAULT_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def top(config: Config, name: str, ps_args: list[str] | None = None) -> tuple[list, list]:
    """``pbox top``: (titles, rows) of the processes of the running container ``name``.

    Without ``ps_args``: docker's default columns (those of ``ps -ef``), read from /proc.
    With them: the host's ``ps`` run with those arguments, filtered to the container's
    processes by its PID column.
    """
    from pbox.containers import lifecycle

    cs = lifecycle.open_containers(config)
    cid = cs.find(name)
    st = _running(cs, cid, name)
    pids = container_pids(st["Pid"])
    if not pids:
        raise Conflict(f"container {name} is not running")
    if not ps_args:
        rows = []
        for p in sorted(pids):
            row = proc_row(p)
            if row is not None:
                rows.append(row)
        return list(DEFAULT_TITLES), rows
    return filter_ps_output(_run_ps(ps_args), pids)


def container_pids(pid1: int, proc: str = "/proc") -> set[int]:
    """Host pids of the processes in the pid namespace of ``pid1``."""
    try:
        ns = os.stat(f"{proc}/{pid1}/ns/pid")
    except OSError:
        return set()
    key = (ns.st_dev, ns.st_ino)
    out = set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"{proc}/{entry}/ns/pid")
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        if (st.st_dev, st.st_ino) == key:
            out.add(int(entry))
    return out


def _run_ps(args: list[str]) -> str:
    import shutil
    import subprocess

    ps = shutil.which("ps")
    if ps is None:
        raise RuntimeFailure("ps options need the host's ps command, which is not installed "
                             "(without options, pbox top reads /proc itself)")
    res = subprocess.run([ps, *args], stdin=subprocess.DEVNULL, capture_output=True,
                         close_fds=True)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise RuntimeFailure(f"ps {' '.join(args)} failed (exit status {res.returncode})"
                             + (f": {err}" if err else ""))
    return res.stdout.decode(errors="replace")


def filter_ps_output(text: str, pids: set[int]) -> tuple[list, list]:
    """(titles, rows) of ``ps`` output for the given pids; extra fields join the last
    column (a command with spaces), as docker does."""
    lines = text.splitlines()
    if not lines:
        raise RuntimeFailure("ps printed nothing")
    titles = lines[0].split()
    if "PID" not in titles:
        raise UsageError("Couldn't find PID field in ps output (give ps options that "
                         "include the pid column)")
    at = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= at:
            continue
        try:
            pid = int(fields[at])
        except ValueError:
            continue
        if pid not in pids:
            continue
        n = len(titles)
        rows.append(fields[:n - 1] + [" ".join(fields[n - 1:])] if len(fields) >= n
                    else fields)
    return titles, rows


def proc_row(pid: int, proc: str = "/proc", now: float | None = None) -> list[str] | None:
    """One ``ps -ef`` row (UID PID PPID C STIME TTY TIME CMD) from /proc; None if gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"{proc}/{pid}/status", "rb") as f:
            status = f.read().decode(errors="replace")
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return None
    comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
    fields = stat[stat.rindex(b")") + 2:].split()
    uid = 0
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[2])  # effective, as ps -f shows
            break
    hz = os.sysconf("SC_CLK_TCK")
    ticks = int(fields[11]) + int(fields[12])
    started = _boot_time(proc) + int(fields[19]) / hz
    now = time.time() if now is None else now
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0")]
    while args and not args[-1]:
        args.pop()
    return [
        _user_name(uid),
        str(pid),
        fields[1].decode(),
        str(cpu_percent(ticks / hz, now - started)),
        format_stime(started, now),
        tty_name(int(fields[4])),
        format_cputime(ticks // hz),
        " ".join(args) if args else f"[{comm}]",
    ]


_BOOT: dict[str, float] = {}


def _boot_time(proc: str) -> float:
    if proc not in _BOOT:
        with open(f"{proc}/stat") as f:
            _BOOT[proc] = next(float(ln.split()[1]) for ln in f if ln.startswith("btime "))
    return _BOOT[proc]


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def cpu_percent(cpu_seconds: float, elapsed: float) -> int:
    """ps's C column: CPU time over lifetime, in whole percent, at most 99."""
    if elapsed <= 0:
        return 0
    return min(99, int(cpu_seconds * 100 / elapsed))


def format_stime(started: float, now: float) -> str:
    """ps's STIME: HH:MM within a day, MonDD within a year, else the year."""
    t = time.localtime(started)
    if now - started < 24 * 3600:
        return time.strftime("%H:%M", t)
    if t.tm_year == time.localtime(now).tm_year:
        return time.strftime("%b%d", t)
    return time.strftime("%Y", t)


def format_cputime(seconds: int) -> str:
    """ps's TIME: [DD-]HH:MM:SS."""
    days, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{days}-{text}" if days else text


def tty_name(tty_nr: int) -> str:
    """The TTY column from /proc/PID/stat's tty_nr (? for none)."""
    if tty_nr == 0:
        return "?"
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    if major == 5 and minor == 0:
        return "tty"
    return "?"

