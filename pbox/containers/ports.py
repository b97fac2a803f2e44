"""Published ports: docker's ``-p``/``-P``/``--expose`` syntax and the port records.

A :class:`PortBinding` is one host port forwarded to one container port.  The records
that ``inspect``, ``ps`` and ``port`` show are docker's ``NetworkSettings.Ports`` map::

    {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5080"}], "443/tcp": None}

(an exposed port that is not published maps to None).  Everything here is pure except
:func:`check_free` / :func:`assign_free_ports`, which bind sockets on the host.
"""

from __future__ import annotations

import contextlib
import errno
import os

from pbox.errors import PboxError, UsageError
from pbox.record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

PROTOCOLS = ("tcp", "udp")


@record(frozen=True)
class PortBinding:
    """One published port; immutable, compared and hashed by value."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""  # "" = every address
    host_port: int = 0  # 0 = a free port picked at start

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"

    def to_dict(self) -> dict:
        return {"ContainerPort": self.container_port, "Protocol": self.protocol,
                "HostIp": self.host_ip, "HostPort": self.host_port}

    @classmethod
    def from_dict(cls, d: dict) -> PortBinding:
        return cls(int(d["ContainerPort"]), d.get("Protocol") or "tcp", d.get("HostIp") or "",
                   int(d.get("HostPort") or 0))


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid {what} port {text!r}: a number from 1 to 65535")
    return int(text)


def _range(text: str, what: str) -> list[int]:
    lo, sep, hi = text.partition("-")
    first = _port(lo, what)
    last = _port(hi, what) if sep else first
    if last < first:
        raise UsageError(f"invalid {what} port range {text!r}")
    return list(range(first, last + 1))


def _split_proto(text: str) -> tuple[str, str]:
    body, sep, proto = text.rpartition("/")
    if not sep:
        return text, "tcp"
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise UsageError(f"invalid protocol {proto!r} in {text!r}: tcp or udp")
    return body, proto


def parse_publish(text: str) -> list[PortBinding]:
    """``-p [ip:][hostPort:]containerPort[/proto]``; ports may be ranges (``8000-8002:80-82``)."""
    body, proto = _split_proto(text.strip())
    ip = ""
    if body.startswith("["):  # [::1]:8080:80
        end = body.find("]")
        if end < 0 or body[end + 1:end + 2] != ":":
            raise UsageError(f"invalid publish spec {text!r}")
        ip, body = body[1:end], body[end + 2:]
        parts = body.split(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            ip = parts.pop(0)
    if len(parts) == 1:
        host, ctr = "", parts[0]
    elif len(parts) == 2:
        host, ctr = parts
    else:
        raise UsageError(f"invalid publish spec {text!r}: [ip:][hostPort:]containerPort[/proto]")
    if ip:
        import socket  # (~2 ms: not for `ps`, which only prints bindings)

        try:
            socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
        except OSError:
            raise UsageError(f"invalid IP address {ip!r} in publish spec {text!r}")
    if ip in ("0.0.0.0", "::"):
        ip = ""
    if not ctr:
        raise UsageError(f"invalid publish spec {text!r}: no container port")
    cports = _range(ctr, "container")
    hports = _range(host, "host") if host else [0] * len(cports)
    if len(hports) == 1 and len(cports) > 1:
        raise UsageError(f"invalid publish spec {text!r}: one host port for a container range")
    if len(cports) == 1 and len(hports) > 1:
        # docker: a host range for one container port means "any free port of the range";
        # we take the first one.
        hports = hports[:1]
    if len(hports) != len(cports):
        raise UsageError(f"invalid publish spec {text!r}: host and container ranges differ "
                         f"in size")
    return [PortBinding(c, proto, ip, h) for h, c in zip(hports, cports)]


def parse_expose(text: str) -> list[tuple[int, str]]:
    """``--expose 80``, ``--expose 8000-8002/udp``."""
    body, proto = _split_proto(text.strip())
    return [(p, proto) for p in _range(body, "exposed")]


def exposed_ports(image_exposed: dict | None, expose: list[str]) -> dict:
    """The container's ``ExposedPorts`` (docker form ``{"80/tcp": {}}``)."""
    out = {}
    for key in image_exposed or {}:
        body, proto = _split_proto(key)
        for p in _range(body, "exposed"):
            out[f"{p}/{proto}"] = {}
    for text in expose:
        for p, proto in parse_expose(text):
            out[f"{p}/{proto}"] = {}
    return out


def requested(publish: list[str], publish_all: bool, exposed: dict) -> list[PortBinding]:
    """Every binding asked for by ``-p`` and ``-P`` (host port 0 = pick one at start)."""
    out: list[PortBinding] = []
    for text in publish:
        out += parse_publish(text)
    if publish_all:
        have = {b.key for b in out}
        for key in sorted(exposed, key=_key_order):
            if key not in have:
                port, proto = key.split("/")
                out.append(PortBinding(int(port), proto))
    seen = set()
    for b in out:
        if b.host_port and (b.host_ip, b.host_port, b.protocol) in seen:
            raise UsageError(f"host port {b.host_port}/{b.protocol} is published twice")
        seen.add((b.host_ip, b.host_port, b.protocol))
    return out


def _key_order(key: str):
    port, _, proto = key.partition("/")
    return (int(port) if port.isdigit() else 0, proto)


def ports_map(bindings: list[PortBinding], exposed: dict | None = None) -> dict:
    """docker's ``NetworkSettings.Ports``."""
    out: dict = {k: None for k in sorted(exposed or {}, key=_key_order)}
    for b in bindings:
        out.setdefault(b.key, None)
        if out[b.key] is None:
            out[b.key] = []
        out[b.key].append({"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)})
    return out


def ps_text(ports: dict | None) -> str:
    """``ps``'s PORTS column: ``0.0.0.0:5080->80/tcp, 443/tcp``."""
    items = []
    for key in sorted(ports or {}, key=_key_order):
        hosts = (ports or {})[key]
        if not hosts:
            items.append(key)
            continue
        for h in hosts:
            ip = h.get("HostIp") or "0.0.0.0"
            ip = f"[{ip}]" if ":" in ip else ip
            items.append(f"{ip}:{h.get('HostPort')}->{key}")
    return ", ".join(items)


def port_lines(ports: dict | None, which: str = "") -> list[str]:
    """``pbox port NAME [PORT[/proto]]``: ``80/tcp -> 0.0.0.0:5080`` (only the host side
    when a port is given, as docker)."""
    want = ""
    if which:
        body, proto = _split_proto(which)
        want = f"{_port(body, 'container')}/{proto}"
    lines = []
    for key in sorted(ports or {}, key=_key_order):
        if want and key != want:
            continue
        for h in (ports or {})[key] or []:
            ip = h.get("HostIp") or "0.0.0.0"
            ip = f"[{ip}]" if ":" in ip else ip
            host = f"{ip}:{h.get('HostPort')}"
            lines.append(host if want else f"{key} -> {host}")
    return lines


# -- the host side ------------------------------------------------------------------------------


def _bind(b: PortBinding, port: int) -> socket.socket:
    import socket

    family = socket.AF_INET6 if ":" in b.host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if b.protocol == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    if kind == socket.SOCK_STREAM:
        # Connections of an earlier run in TIME_WAIT do not make the port busy; a
        # listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((b.host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except BaseException:
        s.close()
        raise
    return s


def check_free(bindings: list[PortBinding]) -> None:
    """Fail with docker's message if a host port is taken (before the container starts)."""
    for b in bindings:
        if not b.host_port:
            continue
        try:
            _bind(b, b.host_port).close()
        except OSError as e:
            where = f"{b.host_ip or '0.0.0.0'}:{b.host_port}"
            if e.errno == errno.EADDRINUSE:
                raise PboxError(f"cannot publish {where}->{b.key}: port {b.host_port} is "
                                f"already in use")
            if e.errno == errno.EACCES:
                raise PboxError(f"cannot publish {where}->{b.key}: port {b.host_port} needs "
                                f"privileges (ports below net.ipv4.ip_unprivileged_port_start"
                                f" are reserved): use a higher host port")
            raise PboxError(f"cannot publish {where}->{b.key}: {e.strerror}")


def assign_free_ports(bindings: list[PortBinding]) -> list[PortBinding]:
    """Host port 0 replaced by a port the kernel reports free right now."""
    out = []
    for b in bindings:
        if b.host_port:
            out.append(b)
            continue
        s = _bind(b, 0)
        try:
            port = s.getsockname()[1]
        finally:
            s.close()
        out.append(PortBinding(b.container_port, b.protocol, b.host_ip, port))
    return out


# -- the container's records and its network at run time --------------------------------------


def port_bindings_record(bindings: list[PortBinding]) -> dict:
    """docker's ``HostConfig.PortBindings`` (what was asked; HostPort "" = any)."""
    out: dict = {}
    for b in bindings:
        out.setdefault(b.key, []).append(
            {"HostIp": b.host_ip, "HostPort": str(b.host_port) if b.host_port else ""})
    return out


def bindings_from_config(cfg: dict) -> list[PortBinding]:
    """The bindings to set up at each start, from a container's config record."""
    host = cfg.get("HostConfig") or {}
    out = []
    for key, hosts in (host.get("PortBindings") or {}).items():
        port, _, proto = key.partition("/")
        for h in hosts or [{}]:
            hp = h.get("HostPort") or ""
            out.append(PortBinding(int(port), proto or "tcp", h.get("HostIp") or "",
                                   int(hp) if hp.isdigit() else 0))
    if host.get("PublishAllPorts"):
        have = {b.key for b in out}
        for key in sorted((cfg.get("Config") or {}).get("ExposedPorts") or {}, key=_key_order):
            if key not in have:
                port, _, proto = key.partition("/")
                out.append(PortBinding(int(port), proto or "tcp"))
    return out


def own_network(mode: str) -> bool:
    """A mode that needs a user-mode network helper (not host, none or container:)."""
    return mode not in ("host", "none", "") and not mode.startswith("container:")


class EarlyNetwork:
    """A network namespace with pasta already setting it up, made by `run` before the
    container exists: pasta's ~25 ms start-up runs while the container is created, and
    the container joins the namespace instead of making its own."""

    def __init__(self):
        from pbox.rootless import network

        self.netns_fd = network.new_netns()
        try:
            self.pending = network.start_pasta(network.binary(network.PASTA),
                                               self.netns_fd, [])
        except BaseException:
            os.close(self.netns_fd)
            raise

    def settle(self) -> bool:
        """Wait until pasta is set up (from the process that started it); False, with
        everything ended, if it failed (the normal path will then say why)."""
        try:
            self.pending.finish()
            return True
        except PboxError:
            self.cancel()
            return False

    def close(self) -> None:
        """This process's part is done (another owns the container now)."""
        if self.netns_fd >= 0:
            os.close(self.netns_fd)
            self.netns_fd = -1

    def cancel(self) -> None:
        self.close()
        self.pending.cancel()


# EarlyNetworks for containers of this process, by id, claimed by ContainerNetwork.
_early: dict = {}


def adopt_early(cid: str, early: EarlyNetwork) -> None:
    _early[cid] = early


def drop_early(cid: str, *, cancel: bool) -> None:
    """End this process's claim on ``cid``'s early network; ``cancel`` also ends pasta
    (nobody ran the container)."""
    early = _early.pop(cid, None)
    if early is not None:
        early.cancel() if cancel else early.close()


class ContainerNetwork:
    """Starts and stops a container's network helper around one run.

    ``attach`` is the launcher's ``on_created`` callback; ``detach`` runs once the
    container ended (or failed to start).  The ports really bound and the container's
    address are written to the state's ``NetworkSettings``.
    """

    def __init__(self, cs, cid: str, cfg: dict):
        self.cs = cs
        self.cid = cid
        self.cfg = cfg
        self.mode = (cfg.get("HostConfig") or {}).get("NetworkMode") or "host"
        self.helper = None
        self._plugged = False  # on user networks (or bridge, for links)
        self.netns_fd = -1  # container:ID: the owner's network namespace, for launch()
        self._error: PboxError | None = None
        self._early = _early.pop(cid, None)
        if self._early is not None:
            if self.mode == "pasta" and self._early.netns_fd >= 0:
                self.netns_fd, self._early.netns_fd = self._early.netns_fd, -1
            else:
                self._early.cancel()
                self._early = None
        if self.mode.startswith("container:"):
            try:
                self.netns_fd = self._open_netns(self.mode.partition(":")[2])
            except PboxError as e:
                # Raised from attach(), before the container may run: launch gives up.
                self._error = e

    def _open_netns(self, target: str) -> int:
        """``container:ID``: the running owner's network namespace, which the launcher
        makes the container join (``launch(netns_fd=)``)."""
        from pbox.errors import RuntimeFailure

        st = self.cs.state(self.cs.find(target)) if target else {}
        pid = st.get("Pid") or 0
        if st.get("Running") and pid:
            try:
                return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        raise RuntimeFailure(f"cannot join network namespace of a non running "
                             f"container: {target[:12]}")

    def _close_netns(self) -> None:
        if self.netns_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.netns_fd)
            self.netns_fd = -1

    def attach(self, pid: int) -> None:
        self._close_netns()  # the launcher's child has its copy
        if self._error is not None:
            raise self._error
        if not own_network(self.mode):
            return
        from pbox import networks
        from pbox.rootless import network

        user = networks.is_user_network(self.mode)
        # --link, or a user network joined with `network connect`
        linked = bool(networks.links(self.cfg) or networks.endpoints(self.cfg))
        bindings = bindings_from_config(self.cfg)
        # A user network: pasta for outbound traffic and published ports (none when the
        # network is internal), a veth on the network's bridge for the other members.
        helper_mode = self.mode
        if user:
            helper_mode = "" if networks.primary_internal(self.cs.store, self.cfg) else \
                network.PASTA
        address = gateway = ""
        if helper_mode:
            check_free(bindings)
            bindings = assign_free_ports(bindings)
            forwards = [network.Forward(b.protocol, b.host_ip, b.host_port, b.container_port)
                        for b in bindings]
            if self._early is not None and not forwards and not user:
                # pasta set the namespace up while the container was created
                early, self._early = self._early, None
                self.helper = early.pending.finish()
            else:
                self.helper = network.attach(helper_mode, pid, forwards,
                                             ns_ifname=networks.PASTA_IFNAME if user else "")
            address, gateway = self.helper.address, self.helper.gateway
            if address and not user:
                self._hosts_address(address)
        else:
            bindings = []
        nets = {}
        if user or linked:
            self._plugged = True
            nets = networks.attach(self.cs.store, self.cid, pid)
        if user and self.mode in nets:
            address, gateway = nets[self.mode]["IPAddress"], nets[self.mode]["Gateway"]
        else:
            name = network.parse_mode(self.mode)[0]
            nets = {name: {"IPAddress": address, "Gateway": gateway}, **nets}
        exposed = (self.cfg.get("Config") or {}).get("ExposedPorts") or {}
        from pbox.containers.records import proc_start_time

        self.cs.write_state(self.cid, NetworkSettings={
            "Ports": ports_map(bindings, exposed), "IPAddress": address,
            "Gateway": gateway, "HelperPid": self.helper.pid if self.helper else 0,
            "HelperStart": proc_start_time(self.helper.pid) if self.helper else None,
            "Networks": nets,
        })

    def _hosts_address(self, address: str) -> None:
        """/etc/hosts names the container's hostname with its address, as docker's.

        Rewritten in place: the container may already have bound the file (the
        network is set up while its filesystem is mounted)."""
        path = self.cs.path(self.cid, "hosts")
        hostname = (self.cfg.get("Config") or {}).get("Hostname") or ""
        try:
            with open(path, "r+") as f:
                lines = f.read().splitlines()
                lines = [ln for ln in lines if not (ln.split()[1:] == [hostname] and hostname)]
                if hostname:
                    lines.append(f"{address}\t{hostname}")
                f.seek(0)
                f.write("\n".join(lines) + "\n")
                f.truncate()
        except OSError:
            return

    def detach(self) -> None:
        self._close_netns()
        if self._early is not None:  # the container never got as far as its network
            self._early.cancel()
            self._early = None
        # Also when not plugged itself: containers that link to this one plugged it
        # into the bridge network, and that lease ends with it.
        if self._plugged or (own_network(self.mode) and os.path.isdir(
                os.path.join(self.cs.store.runroot, "networks"))):
            self._plugged = False
            from pbox import networks

            with contextlib.suppress(Exception):
                networks.detach(self.cs.store, self.cid)
        if self.helper is None:
            return
        helper, self.helper = self.helper, None
        helper.stop()
        with contextlib.suppress(Exception):
            self.cs.write_state(self.cid, NetworkSettings={})


def network_settings(cfg: dict, st: dict) -> dict:
    """inspect's ``NetworkSettings``: what the running container really got."""
    mode = (cfg.get("HostConfig") or {}).get("NetworkMode") or "host"
    live = (st.get("NetworkSettings") or {}) if st.get("Status") in ("running",
                                                                       "restarting") else {}
    exposed = (cfg.get("Config") or {}).get("ExposedPorts") or {}
    name = mode.partition(":")[0]
    return {
        "Bridge": "", "SandboxID": "", "HairpinMode": False,
        "Ports": live.get("Ports") or ports_map([], exposed),
        "IPAddress": live.get("IPAddress", ""),
        "Gateway": live.get("Gateway", ""),
        "Networks": live.get("Networks") or {name: {}},
    }


def live_ports(st: dict) -> dict:
    """The published ports of a running container (``ps``, ``port``)."""
    if st.get("Status") not in ("running", "restarting"):
        return {}
    return (st.get("NetworkSettings") or {}).get("Ports") or {}
