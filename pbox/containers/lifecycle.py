"""Starting, watching, stopping and removing containers.

Who owns a running container: the process that called ``launch`` and so is the
parent of the container's holder.  For ``run`` in the foreground that is the pbox
process itself; for ``run -d`` / ``start`` it is a small detached monitor (double
fork, setsid) that pumps the output into the log, records the exit, applies the
restart policy and ``--rm``.  The owner holds the container's lock and records its
own pid and start time in the state, so others can tell a live owner from a dead one
(kill -9: the container dies with it, ``PR_SET_PDEATHSIG``).

Every process that touches containers first joins the user's namespace (the pause
process), so it may signal container processes of any uid in the mapping.
"""

from __future__ import annotations

# the C module: ``signal`` only wraps it in enums, and importing ``enum`` is ~2 ms of
# every `stop` and `rm` (the constants are the same numbers, the calls the same calls)
import _signal as signal
import contextlib
import errno
import os
import select
import sys
import time

from pbox.config import Config
from pbox.containers.logs import LogWriter
from pbox.containers.records import ContainerStore, alive, proc_start_time
from pbox.errors import Conflict, PboxError, RuntimeFailure, UsageError
from pbox.storage.store import Store

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


def open_containers(config: Config) -> ContainerStore:
    return ContainerStore(Store.open(config.root, config.runroot))


def enter(config: Config, notice=None) -> None:
    """Join the user's namespace before doing anything to containers."""
    if os.getuid() != 0 and not os.environ.get("PBOX_USERNS"):
        # The hot path: the user's pause process is there, so one setns(2) does it,
        # without working out the mapping (passwd, subuid files) that only making a
        # new pause process needs.
        from pbox.rootless import pause

        if pause.join_existing(config.runroot):
            return
    from pbox.images import enter_userns

    enter_userns(config, notice)


def _now() -> str:
    from pbox.humanize import rfc3339  # (datetime: not for stop and rm)

    return rfc3339(time.time())


def _spec(cfg: dict):
    from pbox.rootless.spec import ContainerSpec

    return ContainerSpec.from_dict(cfg["Spec"])


def _mark_running(cs: ContainerStore, cid: str, c, *, restart_count: int | None = None):
    changes = dict(Status="running", Running=True, Paused=False, Restarting=False,
                   Pid=c.pid, PidStart=proc_start_time(c.pid), MonitorPid=os.getpid(),
                   MonitorStart=proc_start_time(os.getpid()), ExitCode=0, Error="",
                   StartedAt=_now(), FinishedAt="0001-01-01T00:00:00Z", StopRequested=False,
                   Driver=c.driver)
    if restart_count is not None:
        changes["RestartCount"] = restart_count
    cs.write_state(cid, **changes)


def _mark_exited(cs: ContainerStore, cid: str, code: int, error: str = "") -> None:
    cs.write_state(cid, Status="exited", Running=False, Restarting=False, Pid=0,
                   ExitCode=code, Error=error, FinishedAt=_now())


# -- foreground ---------------------------------------------------------------------------


def run_foreground(config: Config, cid: str, *, interactive: bool, tty: bool,
                   notice=None) -> int:
    """Start ``cid`` attached to our terminal; wait; record; honour --rm.  Exit code."""
    from pbox.rootless.launcher import launch

    cs = open_containers(config)
    cfg = cs.config(cid)
    spec = _spec(cfg)
    auto_remove = cfg["HostConfig"].get("AutoRemove")
    code = 125
    with cs.locked(cid, wait=False):
        log = None if auto_remove else LogWriter(cs.path(cid, "ctr.log"))
        stdin = sys.stdin.fileno() if interactive else os.open(os.devnull, os.O_RDONLY)
        try:
            if tty:
                code = _run_with_pty(cs, cid, spec, log, interactive, notice)
            elif log is None:
                # --rm without a terminal: the container writes straight to ours.
                c = _launch_recording(cs, cid, launch, spec, stdin=stdin, stdout=1, stderr=2,
                                      notice=notice)
                code = wait_forwarding(c)
            else:
                code = _run_piped(cs, cid, spec, log, stdin, notice)
        except PboxError as e:
            _mark_exited(cs, cid, e.exit_code, str(e))
            if auto_remove:
                remove(config, cid, force=True, volumes=True, _locked=True)
            raise
        finally:
            net = _networks.pop(cid, None)
            if net is not None:
                net.detach()
            if log is not None:
                log.close()
            if not interactive:
                os.close(stdin)
        if auto_remove:
            # Straight away, still holding the lock: recording the exit of a container
            # about to vanish would be two more writes for nobody.
            try:
                _discard(cs, cid, cfg, volumes=True)
            except BaseException:
                _mark_exited(cs, cid, code)
                raise
        else:
            _mark_exited(cs, cid, code)
    return code


# The network helpers of the containers this process runs in the foreground, stopped
# by run_foreground once the container ended.
_networks: dict = {}


def _launch_recording(cs, cid, launch, spec, **kw):
    from pbox.containers.ports import ContainerNetwork

    net = _networks[cid] = ContainerNetwork(cs, cid, cs.config(cid))
    c = launch(spec, on_created=net.attach, netns_fd=net.netns_fd, **kw)
    _mark_running(cs, cid, c)
    return c


def wait_forwarding(c) -> int:
    """Wait for ``c`` (``kill(sig)``, ``wait()``), passing our signals on to it.

    A caller may block FORWARDED while it starts ``c`` (so a signal arriving before
    there is anyone to forward it to is not lost): they are unblocked once forwarded.
    """

    def forward(signum, _frame):
        c.kill(signum)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    try:
        return c.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run_piped(cs, cid, spec, log: LogWriter, stdin: int, notice) -> int:
    """Output through pipes: to our stdout/stderr and to the log."""
    from pbox.rootless.launcher import launch

    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        c = _launch_recording(cs, cid, launch, spec, stdin=stdin, stdout=out_w,
                              stderr=err_w, notice=notice)
    finally:
        os.close(out_w)
        os.close(err_w)

    def forward(signum, _frame):
        c.kill(signum)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # see wait_forwarding
    try:
        _pump({out_r: ("stdout", 1), err_r: ("stderr", 2)}, log)
        return c.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _pump(sources: dict, log: LogWriter | None) -> None:
    """Copy each fd to its destination fd (or None) and the log, until all reach EOF."""
    open_fds = dict(sources)
    while open_fds:
        try:
            ready, _, _ = select.select(list(open_fds), [], [])
        except InterruptedError:
            continue
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EIO:  # a pty whose other side closed
                    data = b""
                else:
                    raise
            stream, dest = open_fds[fd]
            if not data:
                os.close(fd)
                del open_fds[fd]
                continue
            if dest is not None:
                _write_all(dest, data)
            if log is not None:
                log.write(stream, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return
        except InterruptedError:
            continue
        view = view[n:]


def _run_with_pty(cs, cid, spec, log, interactive: bool, notice) -> int:
    """-t: the container gets a pty; we proxy our terminal to it in raw mode."""
    from pbox.rootless.launcher import launch

    def start(slave: int):
        return _launch_recording(cs, cid, launch, spec, stdin=slave, stdout=slave,
                                 stderr=slave, notice=notice, console=True)

    return run_on_pty(start, interactive=interactive, log=log)


def run_on_pty(start, *, interactive: bool, log: LogWriter | None = None) -> int:
    """Run a process on a new pty proxied to our terminal; its exit code.

    ``start(slave_fd)`` starts the process with the pty's slave as its stdio and
    returns a handle with ``kill(sig)`` and ``wait()`` (a launched container, an exec'd
    process).  Our terminal goes raw while it runs (``interactive`` with a terminal on
    stdin), the window size follows ours, and our signals are forwarded.  Used by
    ``run -t`` and ``exec -t``.
    """
    import termios
    import tty as ttymod

    master, slave = os.openpty()
    os.set_inheritable(master, False)
    in_is_tty = interactive and os.isatty(0)
    _copy_winsize(0 if os.isatty(0) else 1, master)
    saved = termios.tcgetattr(0) if in_is_tty else None
    try:
        c = start(slave)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    if getattr(c, "console_fd", None) is not None:
        # The terminal was allocated inside the container: use its master instead.
        os.close(master)
        master = c.console_fd
        _copy_winsize(0 if os.isatty(0) else 1, master)

    def on_winch(_signum, _frame):
        _copy_winsize(0 if os.isatty(0) else 1, master)

    def forward(signum, _frame):
        c.kill(signum)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    old[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, on_winch)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # see wait_forwarding
    try:
        if in_is_tty:
            ttymod.setraw(0)
        fds = {master: ("stdout", 1)}
        if interactive:
            _pump_pty(master, log)
        else:
            _pump(fds, log)
        return c.wait()
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        for s, h in old.items():
            signal.signal(s, h)


def _pump_pty(master: int, log) -> None:
    stdin_open = True
    while True:
        rlist = [master] + ([0] if stdin_open else [])
        try:
            ready, _, _ = select.select(rlist, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                os.close(master)
                return
            _write_all(1, data)
            if log is not None:
                log.write("stdout", data)
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                stdin_open = False  # our stdin ended: send EOF (^D) to the container
                with contextlib.suppress(OSError):
                    os.write(master, b"\x04")
            else:
                _write_all(master, data)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


# -- detached: the monitor ------------------------------------------------------------------


def start_detached(config: Config, cid: str, notice=None, *, fresh: bool = True) -> None:
    """Start ``cid`` under a detached monitor; returns once it runs (or raises why not).

    ``fresh``: the monitor is a new interpreter (~12 MiB resident, ~20 ms to start);
    without it, it is this process forked (the container starts sooner, and the
    monitor keeps every module this process had imported)."""
    cs = open_containers(config)
    cs.config(cid)
    r, w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
            if fresh:
                _exec_monitor(config, cid, w)
            code = _monitor(config, cid, w)  # no interpreter to exec: stay as we are
            os._exit(code)
        except BaseException as e:
            with contextlib.suppress(Exception):
                os.write(w, f"E125 {e}".encode())
            os._exit(125)
    os.close(w)
    msg = b""
    while True:  # until the monitor reports (the intermediate child exits meanwhile)
        chunk = os.read(r, 65536)
        if not chunk:
            break
        msg += chunk
    os.close(r)
    os.waitpid(pid, 0)
    text = msg.decode(errors="replace")
    if text.startswith("OK"):
        return
    if text.startswith("E"):
        code_text, _, message = text[1:].partition(" ")
        from pbox.errors import CommandNotExecutable, CommandNotFound

        code = int(code_text) if code_text.isdigit() else 125
        cls = {127: CommandNotFound, 126: CommandNotExecutable}.get(code, RuntimeFailure)
        raise cls(message or "the container could not be started")
    raise RuntimeFailure("the container monitor died before the container started")


# From the click CLI the monitor runs in a fresh interpreter (no site, no click, none
# of the CLI's modules): forked, it would keep every module the CLI had loaded (~18 MiB
# resident); exec'd it holds what watching a container needs (~12 MiB).  The short
# path without click (pbox.commands.fast) imports little more than the monitor needs,
# so it forks the monitor as it is (also ~12 MiB), and the container starts ~20 ms
# sooner than after a new interpreter's start.
_MONITOR_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
                 "from pbox.containers.lifecycle import monitor_main; monitor_main(sys.argv[2:])")


def _exec_monitor(config: Config, cid: str, report_fd: int) -> None:
    """Become the monitor in a new interpreter; returns only if that cannot start."""
    import pbox

    exe = sys.executable
    # The directory (or .pyz) that holds the pbox package.
    where = os.path.dirname(os.path.dirname(os.path.abspath(pbox.__file__)))
    if not exe or not os.path.isabs(exe):
        return
    os.set_inheritable(report_fd, True)
    try:
        os.execv(exe, [exe, "-I", "-S", "-c", _MONITOR_BOOT, where, config.root,
                       config.runroot, config.storage_driver or "", config.log_level, cid,
                       str(report_fd)])
    except OSError:
        os.set_inheritable(report_fd, False)


def monitor_main(argv: list[str]) -> None:
    """Entry of the exec'd monitor (see ``_exec_monitor``); never returns."""
    root, runroot, driver, log_level, cid, fd = argv
    report_fd = int(fd)
    os.set_inheritable(report_fd, False)
    config = Config(root=root, runroot=runroot, storage_driver=driver, log_level=log_level)
    try:
        code = _monitor(config, cid, report_fd)
    except BaseException as e:
        with contextlib.suppress(Exception):
            os.write(report_fd, f"E125 {e}".encode())
        code = 125
    os._exit(code)


def _monitor(config: Config, cid: str, report_fd: int) -> int:
    """The detached owner of a container: runs it (again, per restart policy)."""
    from pbox.containers.ports import ContainerNetwork
    from pbox.rootless.launcher import launch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cs = open_containers(config)
    cfg = cs.config(cid)
    policy = cfg["HostConfig"].get("RestartPolicy") or {}
    auto_remove = cfg["HostConfig"].get("AutoRemove")
    spec = _spec(cfg)
    restarts = cs.state(cid).get("RestartCount", 0)
    delay = 0.1
    reported = False
    open_stdin = bool((cfg.get("Config") or {}).get("OpenStdin"))
    with cs.locked(cid, wait=False):
        log = LogWriter(cs.path(cid, "ctr.log"))
        listener = _attach_listener(cs, cid) if open_stdin else None
        while True:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            stdin_w = -1
            if open_stdin and not spec.process.tty:
                # -i: the container's stdin is a pipe we keep open (docker's OpenStdin),
                # fed by `attach` through the listener.
                stdin, stdin_w = os.pipe2(os.O_CLOEXEC)
            else:
                stdin = os.open(os.devnull, os.O_RDONLY)
            master = None
            net = ContainerNetwork(cs, cid, cfg)
            try:
                if spec.process.tty:
                    c = launch(spec, stdin=stdin, stdout=stdin, stderr=stdin, console=True,
                               on_created=net.attach, netns_fd=net.netns_fd)
                    master = c.console_fd
                else:
                    c = launch(spec, stdin=stdin, stdout=out_w, stderr=err_w,
                               on_created=net.attach, netns_fd=net.netns_fd)
            except PboxError as e:
                net.detach()
                _mark_exited(cs, cid, e.exit_code, str(e))
                if not reported:
                    os.write(report_fd, f"E{e.exit_code} {e}".encode())
                    os.close(report_fd)
                for fd in (out_r, out_w, err_r, err_w, stdin, stdin_w):
                    if fd >= 0:
                        os.close(fd)
                if listener is not None:
                    _close_listener(cs, cid, listener)
                if auto_remove:
                    break
                return e.exit_code
            os.close(out_w)
            os.close(err_w)
            os.close(stdin)
            _mark_running(cs, cid, c, restart_count=restarts)
            if not reported:
                os.write(report_fd, b"OK")
                os.close(report_fd)
                reported = True

            def forward(signum, _frame, c=c):
                c.kill(signum)

            signal.signal(signal.SIGTERM, forward)
            sources = {out_r: ("stdout", None), err_r: ("stderr", None)}
            if master is not None:
                os.close(out_r)
                os.close(err_r)
                sources = {master: ("stdout", None)}
            if listener is not None:
                _pump_attachable(sources, log, listener, master if master is not None
                                 else stdin_w)
            else:
                _pump(sources, log)
            if stdin_w >= 0:
                os.close(stdin_w)
            log.flush()
            code = c.wait()
            net.detach()
            st = cs.state(cid)
            if st.get("StopRequested") or not _should_restart(policy, code, restarts):
                _mark_exited(cs, cid, code)
                break
            # Straight from running to restarting: a reader never sees a final
            # "exited" between two runs.
            restarts += 1
            cs.write_state(cid, Status="restarting", Running=False, Restarting=True, Pid=0,
                           ExitCode=code, FinishedAt=_now(), RestartCount=restarts,
                           MonitorPid=os.getpid(), MonitorStart=proc_start_time(os.getpid()))
            time.sleep(delay)
            delay = min(delay * 2, 60)
            if cs.state(cid).get("StopRequested"):
                _mark_exited(cs, cid, code)
                break
        log.close()
        if listener is not None:
            _close_listener(cs, cid, listener)
    if auto_remove:
        with contextlib.suppress(PboxError):
            remove(config, cid, force=True, volumes=True)
    return 0


ATTACH_SOCKET = "attach.sock"


def _attach_listener(cs: ContainerStore, cid: str):
    """The unix socket in the container's directory (0700, the user's) through which
    `attach` feeds the stdin of a container created with -i."""
    import socket

    path = cs.path(cid, ATTACH_SOCKET)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Through the directory's fd: the full path may be longer than sun_path allows.
    dfd = os.open(cs.path(cid), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.bind(f"/proc/self/fd/{dfd}/{ATTACH_SOCKET}")
    finally:
        os.close(dfd)
    sock.listen(8)
    sock.setblocking(False)
    return sock


def _close_listener(cs: ContainerStore, cid: str, listener) -> None:
    listener.close()
    with contextlib.suppress(OSError):
        os.unlink(cs.path(cid, ATTACH_SOCKET))


def connect_stdin(cs: ContainerStore, cid: str):
    """A socket to the stdin of running container ``cid`` (see ``_attach_listener``),
    or None when its monitor serves none (not created with -i)."""
    import socket

    try:
        dfd = os.open(cs.path(cid), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dfd}/{ATTACH_SOCKET}")
    except OSError:
        sock.close()
        return None
    finally:
        os.close(dfd)
    return sock


def _pump_attachable(sources: dict, log: LogWriter, listener, target: int) -> None:
    """``_pump`` for the monitor of a -i container: also accept `attach` clients on
    ``listener`` and pass what they send to ``target`` (the container's stdin pipe, or
    its pty master).  The writes never block, so a container that does not read its
    stdin cannot stop its output from being logged; a client's end-of-file leaves the
    container's stdin open (docker's StdinOnce=false)."""
    open_fds = dict(sources)
    clients: dict = {}
    pending = bytearray()
    os.set_blocking(target, False)
    lfd = listener.fileno()
    while open_fds:
        rlist = list(open_fds) + [lfd] + (list(clients) if len(pending) < 65536 else [])
        wlist = [target] if pending and target >= 0 else []
        try:
            ready, writable, _ = select.select(rlist, wlist, [])
        except InterruptedError:
            continue
        if writable:
            try:
                del pending[:os.write(target, pending)]
            except BlockingIOError:
                pass
            except OSError:  # the container closed its stdin
                pending.clear()
                target = -1
        for fd in ready:
            if fd == lfd:
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    clients[conn.fileno()] = conn
            elif fd in clients:
                try:
                    data = clients[fd].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    clients.pop(fd).close()
                elif target >= 0:
                    pending += data
            elif fd in open_fds:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno != errno.EIO:  # a pty whose other side closed
                        raise
                    data = b""
                stream, _dest = open_fds[fd]
                if not data:
                    os.close(fd)
                    del open_fds[fd]
                    continue
                log.write(stream, data)
    for conn in clients.values():
        conn.close()


def _should_restart(policy: dict, code: int, restarts: int) -> bool:
    name = policy.get("Name") or ""
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        limit = policy.get("MaximumRetryCount") or 0
        return code != 0 and (limit == 0 or restarts < limit)
    return False


# -- stop, kill, wait, remove -------------------------------------------------------------------


def is_running(cs: ContainerStore, cid: str) -> bool:
    return cs.state(cid).get("Status") in ("running", "restarting")


def _container_gone(cs: ContainerStore, cid: str, st: dict) -> bool:
    return not alive(st.get("Pid"), st.get("PidStart")) and st.get("Status") != "restarting"


def _wait_exit(cs: ContainerStore, cid: str, timeout: float | None) -> bool:
    """Wait until the owner has recorded the exit (or died); False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    # The owner records an exit a ms or two after the signal: look often at first
    # (reading state.json is cheap), then back off.
    delay = 0.0005
    while True:
        st = cs.state(cid)
        if st.get("Status") not in ("running", "restarting", "stopping"):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def kill(config: Config, cid: str, sig: int = signal.SIGKILL) -> None:
    cs = open_containers(config)
    st = cs.state(cid)
    if st.get("Status") != "running":
        raise Conflict(f"cannot kill container {cid[:12]}: container is not running")
    try:
        os.kill(st["Pid"], sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise RuntimeFailure(f"cannot signal container {cid[:12]}: permission denied")


def _kill(pid: int, sig: int, enter=None) -> None:
    """Signal a container process; ``enter`` (joining the user's namespace) is called
    first when the process runs as an id only that namespace may signal."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        if enter is None:
            raise
        enter()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop(config: Config, cid: str, timeout: float | None = None, *, enter=None) -> None:
    """docker stop: the stop signal, then SIGKILL after ``timeout`` seconds.

    ``enter``: the caller has not joined the user's namespace yet and this joins it,
    which is needed only for a process running as another id than the user's."""
    cs = open_containers(config)
    cfg = cs.config(cid)
    st = cs.state(cid)
    if st.get("Status") not in ("running", "restarting"):
        return
    cs.write_state(cid, StopRequested=True)
    if timeout is None:
        timeout = cfg["Config"].get("StopTimeout")
        if timeout is None:
            from pbox.containers.records import DEFAULT_STOP_TIMEOUT

            timeout = DEFAULT_STOP_TIMEOUT
    sig = signal.SIGKILL  # -t 0: at once
    stop_signal = cfg["Config"].get("StopSignal")
    if timeout > 0:
        sig = signal.SIGTERM
        if stop_signal:
            from pbox.containers.options import parse_signal

            sig = parse_signal(stop_signal)
    pid = st.get("Pid")
    if pid and alive(pid, st.get("PidStart")):
        _kill(pid, sig, enter)
    if timeout > 0:
        if _wait_exit(cs, cid, timeout):
            return
        st = cs.state(cid)
        if st.get("Pid") and alive(st["Pid"], st.get("PidStart")):
            _kill(st["Pid"], signal.SIGKILL, enter)
    if not _wait_exit(cs, cid, 30):
        raise RuntimeFailure(f"container {cid[:12]} did not stop")


def wait(config: Config, cid: str) -> int:
    cs = open_containers(config)
    _wait_exit(cs, cid, None)
    return int(cs.state(cid).get("ExitCode", 0))


def remove(config: Config, cid: str, *, force: bool = False, volumes: bool = False,
           _locked: bool = False, enter=None) -> None:
    """docker rm.  ``enter``: as for :func:`stop`; here also needed when the
    container's files belong to ids of the user's namespace other than the user's."""
    cs = open_containers(config)
    cfg = cs.config(cid)
    if is_running(cs, cid):
        if not force:
            raise Conflict(
                f"cannot remove container {cid[:12]}: container is running: stop the "
                f"container before removing or force remove"
            )
        if enter is not None:
            enter()
        st = cs.state(cid)
        cs.write_state(cid, StopRequested=True)
        if st.get("Pid") and alive(st["Pid"], st.get("PidStart")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(st["Pid"], signal.SIGKILL)
        _wait_exit(cs, cid, 30)
    lock = contextlib.nullcontext() if _locked else cs.locked(cid, wait=True)
    with lock:
        _discard(cs, cid, cfg, volumes=volumes, enter=enter)


def _discard(cs: ContainerStore, cid: str, cfg: dict, *, volumes: bool, enter=None) -> None:
    """Remove a stopped container's records (the caller holds its lock), its name and,
    with ``volumes``, its anonymous volumes."""
    cs.remove_dir(cid, on_denied=enter)
    cs.release_name(cfg.get("Name", "").lstrip("/"), cid)
    named = [m["Name"] for m in cfg.get("Mounts", []) if m.get("Type") == "volume"]
    if volumes and named:
        if enter is not None:
            enter()
        from pbox.containers import volumes as vols

        for name in named:
            try:
                rec = vols.info(cs.store, name)
            except PboxError:
                continue
            if rec.get("Anonymous"):
                with contextlib.suppress(PboxError):
                    vols.remove(cs.store, name)


def start(config: Config, cid: str, notice=None, *, fresh: bool = True) -> None:
    cs = open_containers(config)
    if is_running(cs, cid):
        return
    start_detached(config, cid, notice, fresh=fresh)


def restart(config: Config, cid: str, timeout: float | None = None) -> None:
    stop(config, cid, timeout)
    start(config, cid)


def rename(config: Config, cid: str, new_name: str) -> None:
    from pbox.containers.options import check_name

    cs = open_containers(config)
    new_name = check_name(new_name)
    cfg = cs.config(cid)
    old = cfg.get("Name", "").lstrip("/")
    if old == new_name:
        raise UsageError("renaming a container with the same name as its current name")
    cs.claim_name(new_name, cid)
    cfg["Name"] = "/" + new_name
    cs.write_config(cid, cfg)
    cs.release_name(old, cid)
