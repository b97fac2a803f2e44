"""User networks: records, addresses, the bridge's holder, names in /etc/hosts, links.

A network's record (``<root>/networks/<name>.json``) is what ``network create`` made.
Its run-time state (``<runroot>/networks/<id>.json``, changed under ``<id>.lock``) is
the pid of the holder process keeping the bridge's namespace and one lease per running
container: address, interface, veth peer and the names it answers to.  Leases come and
go with containers (``attach`` from the start hook, ``detach`` when they end); a lease
whose container died without a ``detach`` (kill -9 of its owner) is dropped the next
time the state is read.  The holder starts with the first container and ends with the
last; when it is found dead while containers are still on the network, a new one is
made and the running containers are plugged into it again with the same addresses.

Names: every running member's ``/etc/hosts`` gets, after a ``# pbox network names``
line, the addresses of the other members (name, hostname, aliases, short id) and of
its links; all members' files are rewritten, in place (the file is bind-mounted, a
rename would not be seen), each time a container joins or leaves.

``bridge`` is docker's default network: containers on it get pasta as before and no
veth; a container started with ``--link`` (and each container it links to) is also
plugged into ``bridge``'s namespace, so the linked one is reachable at its address.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from pbox import jsonio as json
from pbox.errors import Conflict, NetworkNotFound, PboxError, RuntimeFailure, UsageError
from pbox.names import is_name
from pbox.storage.store import Store

DEFAULT = "bridge"
PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}
# The implicit network of links (docker's default bridge); user networks take /24s of
# USER_POOL that neither another network nor a route of the host uses.
LINK_SUBNET = "10.88.0.0/16"
LINK_GATEWAY = "10.88.0.1"
USER_POOL = "10.89.0.0/16"
HOSTS_MARK = "# pbox network names"
PASTA_IFNAME = "pasta0"  # pasta's interface in a container whose eth0 is a veth
PREDEFINED_IDS = {
    "bridge": "1d5479643d3136102f8dd8b9ac98dcfb321d3e37c6138b8e6e80da045f51efca",
    "host": "5cd2626b63b3b95e5a5cd46e2342375eee160145c40a79e633c457d1de55dd0d",
    "none": "b246f77a20f2ba484b66111cbd22a3aa8c58f04c0c021e0bd8488f3223085086",
}


def _now() -> str:
    from pbox import humanize

    return humanize.rfc3339(time.time())


def predefined_id(name: str) -> str:
    # fixed ids (sha256 of "pbox-network-NAME"), written out: hashlib's import is slow
    return PREDEFINED_IDS[name]


# -- records ------------------------------------------------------------------------------


def _dir(store: Store) -> str:
    return os.path.join(store.root, "networks")


def _record_path(store: Store, name: str) -> str:
    return os.path.join(_dir(store), name + ".json")


def _link_record() -> dict:
    return {"Name": DEFAULT, "Id": predefined_id(DEFAULT), "Created": "", "Driver": "bridge",
            "Subnet": LINK_SUBNET, "Gateway": LINK_GATEWAY, "Internal": True,
            "Labels": {}, "Options": {}, "Names": False}


def records(store: Store) -> list[dict]:
    try:
        names = sorted(n[:-5] for n in os.listdir(_dir(store)) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        rec = store.read_json(_record_path(store, n))
        if rec:
            out.append(rec)
    return out


def find(store: Store, text: str) -> dict:
    """A user network by name, full id or unique id prefix."""
    if is_name(text or ""):
        rec = store.read_json(_record_path(store, text))
        if rec:
            return rec
    if text:
        hits = [r for r in records(store) if r["Id"].startswith(text)]
        if len(hits) == 1:
            return hits[0]
    raise NetworkNotFound(f"network {text} not found")


def is_user_network(mode: str) -> bool:
    """``--network`` names a user network (not a mode of the container's own)."""
    return bool(mode) and mode.partition(":")[0] not in (
        "host", "none", "container", "pasta", "slirp4netns", "bridge", "default")


def _host_routes() -> list:
    import ipaddress

    out = []
    try:
        with open("/proc/net/route") as f:
            rows = [ln.split() for ln in f.read().splitlines()[1:]]
    except OSError:
        return out
    import socket

    for r in rows:
        if len(r) > 7 and r[1] != "00000000":
            dest = socket.inet_ntoa(int(r[1], 16).to_bytes(4, "little"))
            mask = socket.inet_ntoa(int(r[7], 16).to_bytes(4, "little"))
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    return out


def _free_subnet(store: Store) -> str:
    import ipaddress

    used = [ipaddress.ip_network(r["Subnet"]) for r in records(store)]
    used += _host_routes() + [ipaddress.ip_network(LINK_SUBNET)]
    for net in ipaddress.ip_network(USER_POOL).subnets(new_prefix=24):
        if net.network_address.packed[2] == 0:
            continue  # 10.89.0.0/24 stays free, as podman leaves its first one
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeFailure(f"no free subnet left in {USER_POOL}: give one with --subnet")


def create(store: Store, name: str, *, subnet: str = "", gateway: str = "",
           internal: bool = False, labels: dict | None = None, driver: str = "bridge",
           options: dict | None = None) -> dict:
    import ipaddress

    if driver not in ("bridge", ""):
        raise UsageError(f"network driver {driver!r} is not supported (only bridge)")
    if not is_name(name):
        raise UsageError(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                         f"are allowed")
    if name in PREDEFINED or name == "default":
        raise Conflict(f"network with name {name} already exists")
    os.makedirs(_dir(store), exist_ok=True)
    with _records_lock(store):
        if os.path.exists(_record_path(store, name)):
            raise Conflict(f"network with name {name} already exists")
        if subnet:
            try:
                net = ipaddress.ip_network(subnet, strict=False)
            except ValueError:
                raise UsageError(f"invalid subnet {subnet!r}")
            if net.version != 4 or net.prefixlen > 30:
                raise UsageError(f"invalid subnet {subnet!r}: an IPv4 network of at most "
                                 f"/30 is needed")
            if str(net) != subnet and "/" in subnet:
                raise UsageError(f"invalid subnet {subnet}: it should be {net}")
            for r in records(store):
                if ipaddress.ip_network(r["Subnet"]).overlaps(net):
                    raise Conflict(f"Pool overlaps with other one on this address space "
                                   f"(network {r['Name']}, {r['Subnet']})")
        else:
            net = ipaddress.ip_network(_free_subnet(store))
        if gateway:
            try:
                gw = ipaddress.ip_address(gateway)
            except ValueError:
                raise UsageError(f"invalid gateway {gateway!r}")
            if gw not in net:
                raise UsageError(f"gateway {gateway} is not in subnet {net}")
        else:
            gw = net.network_address + 1
        rec = {"Name": name, "Id": os.urandom(32).hex(),
               "Created": _now(), "Driver": "bridge",
               "Subnet": str(net), "Gateway": str(gw), "Internal": bool(internal),
               "Labels": dict(labels or {}), "Options": dict(options or {}), "Names": True}
        store.write_json(_record_path(store, name), rec)
    return rec


@contextlib.contextmanager
def _records_lock(store: Store):
    fd = os.open(os.path.join(_dir(store), ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def users(store: Store, rec: dict) -> list[tuple[str, str]]:
    """(id, name) of the containers whose config names the network."""
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    out = []
    for cid in cs.ids():
        try:
            cfg = cs.config(cid)
        except PboxError:
            continue
        if rec["Name"] in endpoints(cfg):
            out.append((cid, cfg.get("Name", "").lstrip("/")))
    return out


def remove(store: Store, text: str) -> str:
    """``network rm``: refused while a running container is on it; returns the name."""
    if text in PREDEFINED:
        raise Conflict(f"{text} is a pre-defined network and cannot be removed")
    rec = find(store, text)
    with _records_lock(store), _state(store, rec) as st:
        live = [cid for cid in st["leases"]]
        if live:
            from pbox.containers.records import ContainerStore

            cs = ContainerStore(store)
            names = []
            for cid in live:
                with contextlib.suppress(PboxError):
                    names.append(cs.name_of(cid))
            raise Conflict(f"error while removing network: network {rec['Name']} id "
                           f"{rec['Id'][:12]} has active endpoints "
                           f"({', '.join(names or live)})")
        _stop_holder(st)
        os.unlink(_record_path(store, rec["Name"]))
    with contextlib.suppress(OSError):
        os.unlink(_state_path(store, rec))
    return rec["Name"]


def prune(store: Store) -> list[str]:
    """Remove the user networks no container refers to."""
    used = set()
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    for cid in cs.ids():
        with contextlib.suppress(PboxError):
            used.update(endpoints(cs.config(cid)))
    out = []
    for rec in records(store):
        if rec["Name"] not in used:
            with contextlib.suppress(NetworkNotFound, Conflict):
                out.append(remove(store, rec["Name"]))
    return out


# -- the views of ls and inspect ----------------------------------------------------------


def list_rows(store: Store, filters: dict | None = None) -> list[dict]:
    rows = []
    for name, driver in PREDEFINED.items():
        rows.append({"ID": predefined_id(name)[:12], "Name": name, "Driver": driver,
                     "Scope": "local", "IPv6": "false", "Internal": "false", "Labels": "",
                     "CreatedAt": "", "_labels": {}, "_id": predefined_id(name)})
    for rec in records(store):
        labels = rec.get("Labels") or {}
        rows.append({"ID": rec["Id"][:12], "Name": rec["Name"], "Driver": rec["Driver"],
                     "Scope": "local", "IPv6": "false",
                     "Internal": "true" if rec.get("Internal") else "false",
                     "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
                     "CreatedAt": rec.get("Created", ""), "_labels": labels,
                     "_id": rec["Id"]})
    for key, value in (filters or {}).items():
        rows = [r for r in rows if _match(r, key, value)]
    return sorted(rows, key=lambda r: r["Name"])


def _match(row: dict, key: str, value: str) -> bool:
    if key == "name":
        return value in row["Name"]
    if key == "id":
        return row["_id"].startswith(value)
    if key == "driver":
        return row["Driver"] == value
    if key == "label":
        k, sep, v = value.partition("=")
        return k in row["_labels"] and (not sep or row["_labels"][k] == v)
    if key == "type":
        custom = row["Name"] not in PREDEFINED
        return custom if value == "custom" else not custom
    raise UsageError(f"invalid filter {key!r}")


def inspect(store: Store, text: str) -> dict:
    import ipaddress

    if text in PREDEFINED:
        rec = _link_record() if text == DEFAULT else {
            "Name": text, "Id": predefined_id(text), "Created": "",
            "Driver": PREDEFINED[text], "Subnet": "", "Gateway": "", "Internal": False,
            "Labels": {}, "Options": {}}
    else:
        rec = find(store, text)
    containers = {}
    if rec.get("Subnet"):
        from pbox.containers.records import ContainerStore

        cs = ContainerStore(store)
        prefix = ipaddress.ip_network(rec["Subnet"]).prefixlen
        for cid, lease in _read_state(store, rec)["leases"].items():
            name = ""
            with contextlib.suppress(PboxError):
                name = cs.name_of(cid)
            containers[cid] = {"Name": name, "EndpointID": lease.get("endpoint", ""),
                               "MacAddress": lease["mac"],
                               "IPv4Address": f"{lease['ip']}/{prefix}", "IPv6Address": ""}
    config = [{"Subnet": rec["Subnet"], "Gateway": rec["Gateway"]}] if rec.get("Subnet") else []
    return {
        "Name": rec["Name"], "Id": rec["Id"], "Created": rec.get("Created") or
        "0001-01-01T00:00:00Z", "Scope": "local", "Driver": rec["Driver"],
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": bool(rec.get("Internal")) and rec["Name"] != DEFAULT,
        "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": containers, "Options": rec.get("Options") or {},
        "Labels": rec.get("Labels") or {},
    }


# -- containers' endpoints (in their config) ----------------------------------------------


def endpoints(cfg: dict) -> dict:
    """The user networks a container is on: name -> {"Aliases": [...]}, primary first."""
    return dict(((cfg.get("NetworkingConfig") or {}).get("EndpointsConfig")) or {})


def links(cfg: dict) -> list[tuple[str, str]]:
    """(target container id, alias) of the container's ``--link``s."""
    return [(x["Id"], x["Alias"]) for x in cfg.get("LinkTargets") or []]


def primary_internal(store: Store, cfg: dict) -> bool:
    mode = (cfg.get("HostConfig") or {}).get("NetworkMode") or ""
    if not is_user_network(mode):
        return False
    return bool(find(store, mode).get("Internal"))


def set_endpoint(store: Store, cid: str, name: str, aliases: list | None = None,
                 ip: str = "", *, remove_it: bool = False) -> None:
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    cfg = cs.config(cid)
    nc = cfg.setdefault("NetworkingConfig", {})
    eps = nc.get("EndpointsConfig") or {}
    if remove_it:
        eps.pop(name, None)
    else:
        eps[name] = {"Aliases": list(aliases or [])}
        if ip:
            eps[name]["IPAMConfig"] = {"IPv4Address": ip}
    nc["EndpointsConfig"] = eps
    cs.write_config(cid, cfg)


# -- run-time state -----------------------------------------------------------------------


def _state_path(store: Store, rec: dict) -> str:
    return os.path.join(store.runroot, "networks", rec["Id"] + ".json")


def _read_state(store: Store, rec: dict) -> dict:
    st = store.read_json(_state_path(store, rec)) or {}
    st.setdefault("holder", 0)
    st.setdefault("holder_start", None)
    st.setdefault("leases", {})
    st["leases"] = {c: le for c, le in st["leases"].items() if _lease_alive(le)}
    return st


def _lease_alive(lease: dict) -> bool:
    from pbox.containers.records import alive

    return alive(lease.get("pid"), lease.get("pid_start"))


@contextlib.contextmanager
def _state(store: Store, rec: dict):
    """The network's run-time state, locked; written back when the block ends."""
    d = os.path.join(store.runroot, "networks")
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, rec["Id"] + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = _read_state(store, rec)
        yield st
        store.write_json(_state_path(store, rec), st)
    finally:
        os.close(fd)


def _stop_holder(st: dict) -> None:
    from pbox.rootless import network as rnet

    rnet.stop_holder(st["holder"], st["holder_start"])
    st["holder"], st["holder_start"] = 0, None


def _ensure_holder(store: Store, rec: dict, st: dict) -> None:
    """The bridge's namespace exists; a dead holder is replaced and the containers still
    running on the network are plugged into the new bridge with their addresses."""
    import ipaddress

    from pbox.containers.records import proc_start_time
    from pbox.rootless import network as rnet

    if rnet.holder_alive(st["holder"], st["holder_start"]):
        if rnet.same_user_namespace(st["holder"]):
            return
        # The pause process was replaced: the old holder's namespace is out of reach.
        _stop_holder(st)
    net = ipaddress.ip_network(rec["Subnet"])
    pid = rnet.spawn_holder(rec["Gateway"], net.prefixlen)
    st["holder"], st["holder_start"] = pid, proc_start_time(pid)
    for cid, lease in list(st["leases"].items()):
        try:
            rnet.unplumb(lease["pid"], lease["ifname"])
            rnet.plumb(lease["pid"], pid, lease["ifname"], lease["peer"], lease["ip"],
                       net.prefixlen, lease["mac"])
        except PboxError:
            st["leases"].pop(cid, None)


def holder_status(store: Store, rec: dict) -> str:
    """"" when fine; a sentence when containers are on a network whose holder died."""
    from pbox.rootless import network as rnet

    st = _read_state(store, rec)
    if st["leases"] and not rnet.holder_alive(st["holder"], st["holder_start"]):
        return (f"the bridge of network {rec['Name']} is gone (its holder process "
                f"{st['holder']} was killed); the next container started on it recreates it")
    return ""


def _mac(ip: str) -> str:
    """docker's MAC from the address: a restarted container that gets the same address
    keeps its MAC, so its peers' neighbour caches stay right."""
    import ipaddress

    b = ipaddress.ip_address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


def check_address(rec: dict, ip: str) -> str:
    """``--ip``: an address of the network's subnet, not its gateway."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"invalid IPv4 address: {ip}")
    net = ipaddress.ip_network(rec["Subnet"])
    if addr not in net or addr in (net.network_address, net.broadcast_address) or \
            str(addr) == rec["Gateway"]:
        raise UsageError(f"invalid address {ip}: not a free host address of network "
                         f"{rec['Name']} ({net}, gateway {rec['Gateway']})")
    return str(addr)


def _allocate(rec: dict, st: dict, cid: str, wanted: str = "") -> str:
    import ipaddress

    net = ipaddress.ip_network(rec["Subnet"])
    taken = {le["ip"] for c, le in st["leases"].items() if c != cid} | {rec["Gateway"]}
    if wanted:
        if wanted in taken:
            raise Conflict(f"Address already in use: {wanted} on network {rec['Name']}")
        return wanted
    for host in net.hosts():
        if str(host) not in taken:
            return str(host)
    raise RuntimeFailure(f"network {rec['Name']} has no free address left in {net}")


def _free_ifname(pid: int) -> str:
    from pbox.rootless import network as rnet

    have = rnet.ifnames(pid)
    n = 0
    while f"eth{n}" in have:
        n += 1
    return f"eth{n}"


def _names(cfg: dict, cid: str, aliases: list) -> list[str]:
    out = []
    for n in [cfg.get("Name", "").lstrip("/"), (cfg.get("Config") or {}).get("Hostname", ""),
              cid[:12], *aliases]:
        if n and n not in out:
            out.append(n)
    return out


def _plug(store: Store, rec: dict, cid: str, cfg: dict, pid: int, aliases: list,
          wanted: str = "") -> dict:
    """Plug the running container ``pid`` into the network (under its state lock) and
    rewrite the members' hosts files.  Returns inspect's endpoint settings."""
    import ipaddress

    from pbox.containers.records import proc_start_time
    from pbox.rootless import network as rnet

    net = ipaddress.ip_network(rec["Subnet"])
    with _state(store, rec) as st:
        old = st["leases"].get(cid)
        if old and old.get("pid") == pid:
            lease = old
        else:
            _ensure_holder(store, rec, st)
            ip = _allocate(rec, st, cid, wanted)
            lease = {"ip": ip, "mac": _mac(ip), "ifname": _free_ifname(pid),
                     "peer": "v" + cid[:8] + os.urandom(2).hex(), "pid": pid,
                     "pid_start": proc_start_time(pid),
                     "endpoint": os.urandom(32).hex()}
            rnet.plumb(pid, st["holder"], lease["ifname"], lease["peer"], ip, net.prefixlen,
                       lease["mac"])
        lease["names"] = _names(cfg, cid, aliases) if rec.get("Names", True) else []
        lease["aliases"] = list(aliases)
        st["leases"][cid] = lease
        _rewrite_members(store, rec, st, {cid: cfg})
    return {"IPAMConfig": {"IPv4Address": wanted} if wanted else None, "Links": None,
            "Aliases": list(aliases) or None,
            "NetworkID": rec["Id"], "EndpointID": lease["endpoint"], "Gateway": rec["Gateway"],
            "IPAddress": lease["ip"], "IPPrefixLen": net.prefixlen, "IPv6Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": lease["mac"],
            "DriverOpts": None}


def _unplug(store: Store, rec: dict, cid: str, *, remove_if: bool = False) -> bool:
    """Drop the container's lease (and its interface, when asked); the last one out
    ends the holder.  True when it had one."""
    from pbox.rootless import network as rnet

    with _state(store, rec) as st:
        raw = (store.read_json(_state_path(store, rec)) or {}).get("leases") or {}
        lease = st["leases"].pop(cid, None) or raw.get(cid)
        if lease is not None and remove_if:
            with contextlib.suppress(PboxError):
                rnet.unplumb(lease["pid"], lease["ifname"])
        if not st["leases"]:
            _stop_holder(st)
        elif lease is not None or len(raw) != len(st["leases"]):
            _rewrite_members(store, rec, st, {})
    return lease is not None


# -- the start/stop hooks -----------------------------------------------------------------


def attach(store: Store, cid: str, pid: int) -> dict:
    """At start (``pid``'s namespaces exist): plug the container into its user networks
    and, for ``--link``, into ``bridge`` with the containers it links to.  Returns
    ``NetworkSettings.Networks`` entries."""
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    cfg = cs.config(cid)
    out = {}
    done = []
    try:
        for name, ep in endpoints(cfg).items():
            try:
                rec = find(store, name)
            except NetworkNotFound:
                raise NetworkNotFound(f"network {name} not found") from None
            wanted = (ep.get("IPAMConfig") or {}).get("IPv4Address") or ""
            out[name] = _plug(store, rec, cid, cfg, pid, ep.get("Aliases") or [], wanted)
            done.append(rec)
        # A link to a container on none of our networks goes through bridge, which
        # both join.
        apart = [t for t, _alias in links(cfg)
                 if not any(_has_lease(store, r, t) for r in done)]
        if apart:
            for target in apart:
                link_target(store, target, [])
            rec = _link_record()
            out[DEFAULT] = _plug(store, rec, cid, cfg, pid, [])
            done.append(rec)
    except BaseException:
        for rec in done:
            with contextlib.suppress(Exception):
                _unplug(store, rec, cid, remove_if=True)
        raise
    return out


def detach(store: Store, cid: str) -> None:
    """When the container ended: release its leases on every network."""
    for rec in records(store) + [_link_record()]:
        raw = store.read_json(_state_path(store, rec)) or {}
        if cid in (raw.get("leases") or {}):
            with contextlib.suppress(OSError, PboxError):
                _unplug(store, rec, cid)


def _has_lease(store: Store, rec: dict, cid: str) -> bool:
    return cid in _read_state(store, rec)["leases"]


def _running_pid(store: Store, cid: str, what: str) -> int:
    from pbox.containers.records import ContainerStore, alive

    st = ContainerStore(store).state(cid)
    if st.get("Running") and alive(st.get("Pid"), st.get("PidStart")):
        return st["Pid"]
    raise Conflict(what)


def link_target(store: Store, target: str, shared: list) -> str:
    """The address at which a container on the user networks ``shared`` that links to
    ``target`` reaches it: ``target``'s lease on one of them, else on ``bridge``
    (plugged in now if needed)."""
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    cfg = cs.config(target)
    name = cfg.get("Name", "").lstrip("/")
    pid = _running_pid(store, target, f"Cannot link to a non running container: /{name}")
    rec = _link_record()
    for r in [find(store, n) for n in shared if _exists(store, n)] + [rec]:
        lease = _read_state(store, r)["leases"].get(target)
        if lease and lease.get("pid") == pid:
            return lease["ip"]
    return _plug(store, rec, target, cfg, pid, [])["IPAddress"]


def _exists(store: Store, name: str) -> bool:
    return os.path.exists(_record_path(store, name))


def connect(store: Store, net: str, cid: str, aliases: list, ip: str = "") -> None:
    rec = find(store, net)
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    cfg = cs.config(cid)
    mode = (cfg.get("HostConfig") or {}).get("NetworkMode") or ""
    if mode in ("host", "none") or mode.startswith("container:"):
        raise Conflict("container cannot be disconnected from host network or connected "
                       "to host network" if mode == "host" else
                       "container sharing network namespace with another container or "
                       "host cannot be connected to any other network")
    if rec["Name"] in endpoints(cfg):
        raise Conflict(f"endpoint with name {cfg['Name'].lstrip('/')} already exists in "
                       f"network {rec['Name']}")
    wanted = check_address(rec, ip) if ip else ""
    set_endpoint(store, cid, rec["Name"], aliases, wanted)
    st = cs.state(cid)
    if st.get("Running"):
        try:
            settings = _plug(store, rec, cid, cs.config(cid), st["Pid"], aliases, wanted)
        except BaseException:
            set_endpoint(store, cid, rec["Name"], remove_it=True)
            raise
        _record_settings(cs, cid, rec["Name"], settings)


def disconnect(store: Store, net: str, cid: str) -> None:
    rec = find(store, net)
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    cfg = cs.config(cid)
    if rec["Name"] not in endpoints(cfg):
        raise Conflict(f"container {cid[:12]} is not connected to network {rec['Name']}")
    set_endpoint(store, cid, rec["Name"], remove_it=True)
    _unplug(store, rec, cid, remove_if=True)
    _record_settings(cs, cid, rec["Name"], None)


def _record_settings(cs, cid: str, name: str, settings: dict | None) -> None:
    st = cs.state(cid)
    ns = dict(st.get("NetworkSettings") or {})
    nets = dict(ns.get("Networks") or {})
    if settings is None:
        nets.pop(name, None)
    else:
        nets[name] = settings
    ns["Networks"] = nets
    cs.write_state(cid, NetworkSettings=ns)


# -- /etc/hosts ---------------------------------------------------------------------------


def _rewrite_members(store: Store, rec: dict, st: dict, fresh: dict) -> None:
    """Rewrite the hosts file of every container with a lease in ``st`` (``rec``'s
    state being changed, not yet written)."""
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    every = _all_leases(store)
    every[rec["Id"]] = (rec, st["leases"])
    for cid in list(st["leases"]):
        try:
            cfg = fresh.get(cid) or cs.config(cid)
        except PboxError:
            continue
        with contextlib.suppress(OSError, PboxError):
            write_hosts(store, cs, cid, cfg, every)


def _all_leases(store: Store) -> dict:
    """Every network's live leases: network id -> {cid: lease}."""
    out = {}
    for rec in records(store) + [_link_record()]:
        if os.path.exists(_state_path(store, rec)):
            out[rec["Id"]] = (rec, _read_state(store, rec)["leases"])
    return out


def hosts_lines(store: Store, cid: str, cfg: dict, every: dict | None = None) -> list[str]:
    """The managed part of ``cid``'s /etc/hosts."""
    every = _all_leases(store) if every is None else every
    mine = [(rec, leases) for rec, leases in every.values() if cid in leases]
    lines = []
    hostname = (cfg.get("Config") or {}).get("Hostname") or ""
    own = [leases[cid] for rec, leases in mine if rec["Name"] != DEFAULT]
    if own and hostname:
        names = dict.fromkeys([hostname, *own[0].get("names", [])])
        lines.append(f"{own[0]['ip']}\t{' '.join(names)}")
    seen = set()
    for rec, leases in mine:
        for other, lease in sorted(leases.items(), key=lambda kv: kv[1]["ip"]):
            if other != cid and lease.get("names") and (other, rec["Id"]) not in seen:
                seen.add((other, rec["Id"]))
                lines.append(f"{lease['ip']}\t{' '.join(lease['names'])}")
    from pbox.containers.records import ContainerStore

    cs = ContainerStore(store)
    for target, alias in links(cfg):
        for _rec, leases in mine:
            lease = leases.get(target)
            if lease:
                tname = ""
                with contextlib.suppress(PboxError):
                    tname = cs.name_of(target)
                names = [n for n in dict.fromkeys([alias, target[:12], tname]) if n]
                lines.append(f"{lease['ip']}\t{' '.join(names)}")
                break
    return lines


def write_hosts(store: Store, cs, cid: str, cfg: dict, every: dict | None = None) -> None:
    """Rewrite the managed part of the container's hosts file, in place."""
    path = cs.path(cid, "hosts")
    with open(path, "r+b") as f:
        text = f.read().decode(errors="replace")
        base = text.split(HOSTS_MARK + "\n")[0].splitlines()
        extra = hosts_lines(store, cid, cfg, every)
        hostname = (cfg.get("Config") or {}).get("Hostname") or ""
        if extra and hostname and extra[0].split()[1:2] == [hostname]:
            # our address replaces the 127.0.1.1 line, as docker's file has it
            base = [ln for ln in base if ln.split()[1:] != [hostname]]
        new = "\n".join(base) + "\n"
        if extra:
            new += HOSTS_MARK + "\n" + "\n".join(extra) + "\n"
        data = new.encode()
        if data != text.encode():
            f.seek(0)
            f.write(data)
            f.truncate()


# -- --link -------------------------------------------------------------------------------


def link_env(alias: str, name: str, target_name: str, ip: str, target_cfg: dict) -> list[str]:
    """docker's legacy link variables (daemon/links): ALIAS_PORT, ALIAS_PORT_80_TCP...,
    ALIAS_NAME=/name/alias, ALIAS_ENV_* from the target's environment."""
    a = alias.upper().replace("-", "_").replace(".", "_")
    ports = []
    for key in (target_cfg.get("Config") or {}).get("ExposedPorts") or {}:
        port, _, proto = key.partition("/")
        if port.isdigit():
            ports.append((int(port), proto or "tcp"))
    ports.sort()
    env = []
    if ports:
        p, proto = ports[0]
        env.append(f"{a}_PORT={proto}://{ip}:{p}")
    for p, proto in ports:
        pre = f"{a}_PORT_{p}_{proto.upper()}"
        env += [f"{pre}={proto}://{ip}:{p}", f"{pre}_ADDR={ip}", f"{pre}_PORT={p}",
                f"{pre}_PROTO={proto}"]
    env.append(f"{a}_NAME=/{name}/{alias}")
    for e in (target_cfg.get("Config") or {}).get("Env") or []:
        k, sep, v = e.partition("=")
        if sep and k not in ("HOME", "PATH"):
            env.append(f"{a}_ENV_{k}={v}")
    return env


def parse_link(text: str) -> tuple[str, str]:
    target, _, alias = text.partition(":")
    target = target.lstrip("/")
    if not target:
        raise UsageError(f"invalid link {text!r}: NAME[:ALIAS]")
    return target, alias or target



# -- killed helpers -----------------------------------------------------------------------


def container_warnings(store: Store, cid: str) -> list[str]:
    """What no longer works for a running container because a helper process of its
    network was killed: its pasta (outbound traffic, published ports) or the holder of
    a user network's bridge."""
    from pbox.containers.records import ContainerStore, alive
    from pbox.rootless import network as rnet

    cs = ContainerStore(store)
    st = cs.state(cid)
    if not (st.get("Running") and alive(st.get("Pid"), st.get("PidStart"))):
        return []
    out = []
    ns = st.get("NetworkSettings") or {}
    helper = ns.get("HelperPid") or 0
    if helper and not rnet.helper_running(helper):
        out.append(f"the network helper of container {cs.name_of(cid)} (pasta or "
                   f"slirp4netns, pid {helper}) is gone: outbound traffic and published "
                   f"ports no longer work until the container is restarted")
    cfg = cs.config(cid)
    for name in endpoints(cfg):
        if _exists(store, name):
            problem = holder_status(store, find(store, name))
            if problem and cid in _read_state(store, find(store, name))["leases"]:
                out.append(problem)
    return out


def stop_holders(runroot: str) -> None:
    """End every network's holder recorded under ``runroot`` (``system reset``, which
    kills containers' owners before they could release their leases)."""
    from pbox.rootless import network as rnet

    d = os.path.join(runroot, "networks")
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name.endswith(".json"):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(d, name)) as f:
                    st = json.load(f)
                rnet.stop_holder(st.get("holder") or 0, st.get("holder_start"))
