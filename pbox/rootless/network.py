"""User-mode networking for a container's own network namespace: pasta or slirp4netns.

The launcher creates the namespace; :func:`attach` (called from ``launch(on_created=)``
with a pid in it) starts the helper that gives it an interface, a default route, DNS
and the published ports.  The helper runs in our (the user's) user namespace, which
owns the container's network namespace, and binds the published ports on the host.

Why ``/proc/self/fd/N``: we open ``/proc/PID/ns/net`` ourselves and hand the fd down.
pasta drops every capability but a few before opening its target, and the kernel
then refuses it ``/proc/PID/ns/net`` of a process with more capabilities (ptrace
access check); the fd link of its own process is not subject to that check.

Lifetimes: pasta daemonizes and quits by itself when the namespace goes away; the
owner also kills it (:meth:`Helper.stop`) when it sees the container end.
slirp4netns stays our child and exits when the write end of its ``--exit-fd`` pipe
closes (our stop, or our death).
"""

from __future__ import annotations

import _signal as signal  # (signal imports enum: ~2 ms of every run)
import contextlib
import os
import time

from pbox import jsonio as json
from pbox.errors import RuntimeFailure
from pbox.record import record

TYPE_CHECKING = False  # socket and subprocess cost ~8 ms to import: pasta needs neither
if TYPE_CHECKING:
    import subprocess

PASTA = "pasta"
SLIRP4NETNS = "slirp4netns"
MODES = (PASTA, SLIRP4NETNS)
DEFAULT = PASTA

PACKAGES = {PASTA: "passt", SLIRP4NETNS: "slirp4netns"}

# slirp4netns's fixed addresses (10.0.2.0/24).
SLIRP_ADDRESS = "10.0.2.100"
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
# Where pasta answers DNS when the host's resolvers are on its loopback (unreachable
# from another namespace): a link-local address pasta forwards to the host's resolver.
PASTA_DNS_FORWARD = "169.254.1.1"


@record
class Forward:
    """One published port: host (ip, port) -> container port."""

    protocol: str
    host_ip: str
    host_port: int
    container_port: int


@record
class Helper:
    """A started network helper; ``stop()`` ends it (idempotent)."""

    mode: str
    pid: int
    address: str
    gateway: str
    proc: subprocess.Popen | None = None
    exit_w: int = -1
    ports: bool = True  # it publishes ports: stop() waits until they are free
    _stopped: bool = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.exit_w >= 0:
            with contextlib.suppress(OSError):
                os.close(self.exit_w)
        if self.proc is not None:
            import subprocess  # slirp4netns: our child

            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            return
        # pasta is not our child (it daemonized): signal it and, when it publishes
        # ports, wait until it is gone, so they are free when we return.  Without ports
        # nothing needs the wait, and it is long: the kernel takes 25-50 ms to tear down
        # pasta's tap device even after SIGKILL.
        if not self.ports:
            with contextlib.suppress(ProcessLookupError):
                if _is_helper(self.pid, self.mode):
                    os.kill(self.pid, signal.SIGTERM)
            return
        deadline = time.monotonic() + 5
        sig = signal.SIGTERM
        while _is_helper(self.pid, self.mode):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            time.sleep(0.01)


def _is_helper(pid: int, mode: str) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    comm, _, rest = stat.rpartition(")")
    comm = comm.partition("(")[2]
    if rest.split()[:1] == ["Z"]:
        return False  # a zombie holds no ports
    return comm in (mode, "passt", "passt.avx2", "pasta.avx2")


def parse_mode(network: str) -> tuple[str, dict]:
    """``pasta``, ``slirp4netns``, ``slirp4netns:allow_host_loopback=true``."""
    name, _, opts = network.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        k, _, v = item.partition("=")
        options[k.strip()] = v.strip() or "true"
    return name, options


def binary(mode: str) -> str:
    from pbox.rootless.progs import which

    path = which(mode)
    if path is None:
        raise RuntimeFailure(f"network {mode!r} needs the {mode} program, which is not "
                             f"installed: install the {PACKAGES[mode]} package "
                             f"(e.g. apt-get install {PACKAGES[mode]}), or use "
                             f"--network host or none")
    return path


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def container_nameservers(mode: str, host: list[str]) -> list[str]:
    """What the container's resolv.conf names for ``mode`` given the host's resolvers."""
    if mode == SLIRP4NETNS:
        return [SLIRP_DNS]
    usable = [n for n in host if not _loopback(n)]
    return usable or [PASTA_DNS_FORWARD]


def _default_route() -> tuple[str, str] | None:
    """(interface, gateway) of the host's IPv4 default route."""
    try:
        with open("/proc/net/route") as f:
            rows = [ln.split() for ln in f.read().splitlines()[1:]]
    except OSError:
        return None
    for r in rows:
        if len(r) > 2 and r[1] == "00000000":
            gw = ".".join(str(b) for b in int(r[2], 16).to_bytes(4, "little"))
            return r[0], gw
    return None


def host_gateway(network: str) -> str:
    """The address docker's ``--add-host NAME:host-gateway`` stands for: where the
    container reaches the host.  pasta maps its gateway address to the host's loopback;
    slirp4netns's 10.0.2.2 does the same, but only with ``allow_host_loopback=true``;
    sharing the host's network (or having none), that is plain 127.0.0.1."""
    mode = parse_mode(network)[0]
    if mode == SLIRP4NETNS:
        return SLIRP_GATEWAY
    if mode == PASTA:
        route = _default_route()
        if route is None:
            raise RuntimeFailure("host-gateway: the host has no IPv4 default route, whose "
                                 "gateway address pasta maps to the host")
        return route[1]
    return "127.0.0.1"


def _outbound_address(gateway: str) -> str:
    import socket  # (~3 ms: not before pasta is started)

    # connect() of a UDP socket only picks the route and source address: nothing is sent.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((gateway, 9))
        return s.getsockname()[0]
    except OSError:
        return ""
    finally:
        s.close()


def pasta_args(forwards: list[Forward], *, netns: str, pidfile: str, dns_forward: str = "",
               runas: str = "", userns: str = "", ns_ifname: str = "") -> list[str]:
    tcp = [_pasta_spec(f) for f in forwards if f.protocol == "tcp"]
    udp = [_pasta_spec(f) for f in forwards if f.protocol == "udp"]
    args = ["--config-net", "--quiet", "--pid", pidfile]
    for opt, specs in (("-t", tcp), ("-u", udp)):
        if specs:
            for s in specs:
                args += [opt, s]
        else:
            args += [opt, "none"]
    args += ["-T", "none", "-U", "none"]
    if dns_forward:
        args += ["--dns-forward", dns_forward]
    if runas:
        args += ["--runas", runas]
    if userns:
        args += ["--userns", userns]
    if ns_ifname:
        args += ["-I", ns_ifname]
    return args + ["--netns", netns]


def _pasta_spec(f: Forward) -> str:
    return (f"{f.host_ip}/" if f.host_ip else "") + f"{f.host_port}:{f.container_port}"


def attach(network: str, pid: int, forwards: list[Forward], ns_ifname: str = "") -> Helper:
    """Give the network namespace of ``pid`` connectivity with ``network``'s helper
    (pasta's interface named ``ns_ifname`` when given, else as the host's)."""
    mode, options = parse_mode(network)
    if mode not in MODES:
        raise RuntimeFailure(f"unknown network {network!r}: pasta, slirp4netns, host or none")
    path = binary(mode)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    userfd = -1
    try:
        # Without the shared user namespace (single-id mapping), the container made its
        # own: the helper must join it to be allowed into the network namespace.
        if os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino:
            userfd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        if mode == PASTA:
            return _attach_pasta(path, fd, forwards, userfd, ns_ifname)
        return _attach_slirp(path, fd, forwards, options, userfd)
    finally:
        os.close(fd)
        if userfd >= 0:
            os.close(userfd)


def new_netns() -> int:
    """A new network namespace with lo up, held only by the returned fd (close-on-exec):
    for a helper to set up before the container that will join it exists."""
    from pbox.rootless import syscalls

    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            syscalls.unshare(syscalls.CLONE_NEWNET)
            syscalls.set_link_up("lo")
            os.write(ready_w, b"1")
            os.read(done_r, 1)  # until the parent holds the namespace
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise RuntimeFailure("cannot create a network namespace")
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def _attach_pasta(path: str, nsfd: int, forwards: list[Forward], userfd: int,
                  ns_ifname: str = "") -> Helper:
    return start_pasta(path, nsfd, forwards, userfd, ns_ifname).finish()


def start_pasta(path: str, nsfd: int, forwards: list[Forward], userfd: int = -1,
                ns_ifname: str = "") -> PendingPasta:
    """Start pasta on the network namespace ``nsfd``; :meth:`PendingPasta.finish` waits
    until it has set the namespace up (it takes ~25 ms: the caller may work meanwhile)."""
    route = _default_route()
    gateway = route[1] if route else ""
    host_ns = host_nameservers()
    dns_forward = PASTA_DNS_FORWARD if PASTA_DNS_FORWARD in container_nameservers(
        PASTA, host_ns) else ""
    tmp = _private_dir("pbox-pasta-")
    pidfile = os.path.join(tmp, "pid")
    args = pasta_args(forwards, netns=f"/proc/self/fd/{nsfd}", pidfile=pidfile,
                      dns_forward=dns_forward, runas=f"{os.geteuid()}:{os.getegid()}",
                      userns=f"/proc/self/fd/{userfd}" if userfd >= 0 else "",
                      ns_ifname=ns_ifname)
    # pasta forks into the background once set up; its exit status says how that
    # went.  stderr goes to a file: the daemon must not hold a pipe of ours open.
    err = os.memfd_create("pasta-stderr", os.MFD_CLOEXEC)
    try:
        pid = _spawn([path, *args], err, tuple(f for f in (nsfd, userfd) if f >= 0))
    except BaseException:
        os.close(err)
        _remove_private_dir(tmp)
        raise
    return PendingPasta(pid, err, tmp, gateway, bool(forwards))


class PendingPasta:
    """A pasta setting a network namespace up (:func:`start_pasta`)."""

    def __init__(self, pid: int, err: int, tmp: str, gateway: str, ports: bool):
        self._pid, self._err, self._tmp = pid, err, tmp
        self._gateway, self._ports = gateway, ports
        self._helper: Helper | None = None

    def finish(self) -> Helper:
        """Wait until pasta is set up; its helper, or RuntimeFailure with its message.
        Again after the first time: the same helper."""
        if self._helper is not None:
            return self._helper
        if self._pid <= 0:
            raise RuntimeFailure("pasta was stopped before it set up the network")
        # The container's address as pasta gives it: the host's on the default route.
        address = _outbound_address(self._gateway) if self._gateway else ""
        rc = os.waitstatus_to_exitcode(os.waitpid(self._pid, 0)[1])
        self._pid = 0
        try:
            os.lseek(self._err, 0, os.SEEK_SET)
            text = _clean(os.read(self._err, 65536).decode(errors="replace"))
            if rc != 0:
                raise RuntimeFailure(f"pasta failed to set up the network (exit status {rc})"
                                     + (f": {text}" if text else ""))
            try:
                with open(os.path.join(self._tmp, "pid")) as f:
                    hpid = int(f.read().strip())
            except (OSError, ValueError):
                hpid = 0
        finally:
            self._release()
        self._helper = Helper(PASTA, hpid, address, self._gateway, ports=self._ports)
        return self._helper

    def cancel(self) -> None:
        """Not needed after all: end pasta (set up or not)."""
        if self._helper is not None:
            self._helper.stop()
            return
        if self._pid > 0:
            with contextlib.suppress(Exception):
                self.finish().stop()
            self._pid = 0
        self._release()

    def _release(self) -> None:
        if self._err >= 0:
            os.close(self._err)
            self._err = -1
        if self._tmp:
            _remove_private_dir(self._tmp)
            self._tmp = ""


def _spawn(argv: list[str], out: int, pass_fds: tuple) -> int:
    """Start ``argv`` (stdin /dev/null, stdout and stderr ``out``, ``pass_fds`` kept
    open); its pid.  The child starts with no signal blocked: the caller may be
    holding signals back (run does, until the container exists), and a daemonizing
    pasta would keep that mask and never see the SIGTERM of ``stop``."""
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        return os.posix_spawn(argv[0], argv, dict(os.environ), setsigmask=(),
                              setsigdef=(signal.SIGPIPE,),
                              file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                            (os.POSIX_SPAWN_DUP2, out, 1),
                                            (os.POSIX_SPAWN_DUP2, out, 2)])
    finally:
        os.close(devnull)
        for fd in pass_fds:
            os.set_inheritable(fd, False)


def _private_dir(prefix: str) -> str:
    """A new 0700 directory under $TMPDIR (:func:`_remove_private_dir` removes it), made
    without the tempfile module (its imports cost ~9 ms on every run)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(base, f"{prefix}{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def _remove_private_dir(path: str) -> None:
    """Remove a :func:`_private_dir` with what is in it (one level)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(path):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _clean(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and "syslog" not in ln]
    return "; ".join(lines)


def _attach_slirp(path: str, nsfd: int, forwards: list[Forward], options: dict,
                  userfd: int) -> Helper:
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    import tempfile  # not at module level: it pulls in shutil, random and zlib

    tmp = tempfile.mkdtemp(prefix="pbox-slirp-")
    api = os.path.join(tmp, "api.sock")
    args = [path, "--configure", "--mtu=65520", f"--exit-fd={exit_r}",
            f"--ready-fd={ready_w}", f"--api-socket={api}", "--netns-type=path"]
    if options.get("allow_host_loopback", "false").lower() not in ("true", "1", "yes"):
        args.append("--disable-host-loopback")
    if userfd >= 0:
        args.append(f"--userns-path=/proc/self/fd/{userfd}")
    args += [f"/proc/self/fd/{nsfd}", "tap0"]
    with tempfile.TemporaryFile() as err:
        return _run_slirp(args, err, nsfd, exit_r, exit_w, ready_r, ready_w, api, tmp,
                          forwards, userfd)


def _run_slirp(args, err, nsfd, exit_r, exit_w, ready_r, ready_w, api, tmp, forwards,
               userfd):
    import shutil  # not at module level: it pulls in zlib, bz2, lzma
    import subprocess  # (~5 ms: pasta, the default, is started without it)

    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                pass_fds=tuple(f for f in (nsfd, exit_r, ready_w, userfd) if f >= 0))
        os.close(ready_w)
        ready_w = -1
        ok = os.read(ready_r, 1) == b"1"
        if not ok:
            proc.kill()
            proc.wait()
            err.seek(0)
            text = _clean(err.read().decode(errors="replace"))
            raise RuntimeFailure("slirp4netns failed to set up the network"
                                 + (f": {text}" if text else ""))
        helper = Helper(SLIRP4NETNS, proc.pid, SLIRP_ADDRESS, SLIRP_GATEWAY, proc=proc,
                        exit_w=exit_w)
        exit_w = -1
        try:
            for f in forwards:
                _slirp_hostfwd(api, f)
        except BaseException:
            helper.stop()
            raise
        return helper
    finally:
        for fd in (exit_r, ready_r, ready_w, exit_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


def _slirp_hostfwd(api: str, f: Forward) -> None:
    req = {"execute": "add_hostfwd",
           "arguments": {"proto": f.protocol, "host_addr": f.host_ip or "0.0.0.0",
                         "host_port": f.host_port, "guest_port": f.container_port}}
    import socket

    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(api)
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise RuntimeFailure("slirp4netns's API socket did not come up")
            time.sleep(0.01)
    with s:
        s.sendall(json.dumps(req).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data or b"{}")
    except ValueError:
        reply = {"error": {"desc": data.decode(errors="replace")}}
    if "error" in reply:
        desc = (reply["error"] or {}).get("desc", "")
        raise RuntimeFailure(f"cannot publish {f.host_ip or '0.0.0.0'}:{f.host_port}->"
                             f"{f.container_port}/{f.protocol}: {desc or 'slirp4netns refused'}")


# -- user networks: a bridge in a network namespace of its own ---------------------------
#
# A holder process (``sleep infinity`` named ``pbox-net``) keeps a network namespace
# with one bridge in it.  Each container on the network gets a veth pair: one end in
# the container's namespace, the other enslaved to the bridge.  pbox runs in the shared
# user namespace, which owns both namespaces, so it has CAP_NET_ADMIN in each; the
# changes are netlink requests (pbox/rootless/netlink.py) made by a forked child that
# setns()es there (pbox itself could not come back to the host's namespace, owned by
# the initial user namespace).

HOLDER_NAME = "pbox-net"
BRIDGE = "pbox0"
# Bridge traffic never leaves the host: a large MTU (as loopback's) is safe and saves
# most of the per-packet cost of container-to-container transfers.
BRIDGE_MTU = 65520


def _in_child(work) -> None:
    """Run ``work()`` in a forked child (which may setns() anywhere); its error, if it
    returns or raises one, becomes a RuntimeFailure here."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            err = work()
            os.write(w, (err or "").encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - the child reports everything
            with contextlib.suppress(BaseException):
                os.write(w, (str(e) or type(e).__name__).encode())
        finally:
            os._exit(1)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    err = b"".join(chunks).decode(errors="replace").strip()
    if err:
        raise RuntimeFailure(err)


def spawn_holder(gateway: str, prefix: int) -> int:
    """Start a holder process in a new network namespace with the bridge up at
    ``gateway/prefix``; returns its pid.  Not our child (double fork): it outlives us."""
    from pbox.rootless import netlink, syscalls
    from pbox.rootless.pause import quiet_holder
    from pbox.rootless.progs import which

    sleep = which("sleep") or "/bin/sleep"
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            syscalls.unshare(syscalls.CLONE_NEWNET)
            with netlink.Route() as nl:
                nl.add_bridge(BRIDGE, mtu=BRIDGE_MTU)
                nl.add_address(BRIDGE, gateway, prefix)
                nl.set_up(BRIDGE)
                nl.set_up("lo")
            quiet_holder()
            os.write(w, f"K{os.getpid()}".encode())
            os.execv(sleep, [HOLDER_NAME, "infinity"])
        except BaseException as e:  # noqa: BLE001
            with contextlib.suppress(BaseException):
                os.write(w, f"E{e}".encode())
        finally:
            os._exit(1)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        data += b
    os.close(r)
    os.waitpid(pid, 0)
    text = data.decode(errors="replace")
    if not text.startswith("K"):
        raise RuntimeFailure("cannot create the network's namespace and bridge: "
                             + (text[1:] or "the holder process died"))
    return int(text[1:])


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks (tells a reused pid), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return None if fields[0] == b"Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def holder_alive(pid: int, start: int | None) -> bool:
    """``pid`` is still our holder process (not a reused pid)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
    except OSError:
        return False
    return argv0 == HOLDER_NAME.encode() and (start is None or start_time(pid) == start)


def same_user_namespace(pid: int) -> bool:
    """``pid`` lives in our user namespace (so its network namespace is ours to change)."""
    try:
        return os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino
    except OSError:
        return False


def stop_holder(pid: int, start: int | None) -> None:
    if holder_alive(pid, start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def ifnames(pid: int) -> set[str]:
    """The interfaces in the network namespace of ``pid``."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            rows = f.read().splitlines()[2:]
    except OSError:
        return set()
    return {r.split(":")[0].strip() for r in rows}


def plumb(ctr_pid: int, holder_pid: int, ifname: str, peer: str, address: str, prefix: int,
          mac: str) -> None:
    """A veth pair: ``ifname`` (``address/prefix``, ``mac``) in the namespace of
    ``ctr_pid``, ``peer`` on the bridge of ``holder_pid``'s namespace."""
    from pbox.rootless import netlink, syscalls

    ctr_fd = os.open(f"/proc/{ctr_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        br_fd = os.open(f"/proc/{holder_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(ctr_fd)
        raise RuntimeFailure("the network's holder process is gone")

    def work() -> str:
        try:
            syscalls.setns(ctr_fd, syscalls.CLONE_NEWNET)
            with netlink.Route() as nl:
                nl.add_veth(ifname, peer, br_fd, mtu=BRIDGE_MTU, mac=mac)
                nl.add_address(ifname, address, prefix)
                nl.set_up(ifname)
                nl.set_up("lo")
            syscalls.setns(br_fd, syscalls.CLONE_NEWNET)
            with netlink.Route() as nl:
                nl.set_up(peer, master=BRIDGE)
        except OSError as e:
            return f"cannot connect the container to the network: {e.strerror or e}"
        return ""

    try:
        _in_child(work)
    finally:
        os.close(ctr_fd)
        os.close(br_fd)


def unplumb(ctr_pid: int, ifname: str) -> None:
    """Remove ``ifname`` (and so its veth peer) from the namespace of ``ctr_pid``."""
    from pbox.rootless import netlink, syscalls

    try:
        fd = os.open(f"/proc/{ctr_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the namespace is gone, and the pair with it

    def work() -> str:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
        with netlink.Route() as nl:
            nl.delete(ifname)
        return ""

    try:
        _in_child(work)
    finally:
        os.close(fd)


def helper_running(pid: int) -> bool:
    """``pid`` is a live pasta or slirp4netns."""
    return any(_is_helper(pid, m) for m in MODES)
