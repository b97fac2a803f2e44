"""`create`: from an image and the user's options to a container record and run spec."""

from __future__ import annotations

import os
import time

from pbox import humanize
from pbox.config import Config
from pbox.containers import options as opt
from pbox.containers import ports
from pbox.containers.records import ContainerStore, new_id
from pbox.errors import Conflict, ImageNotFound, PboxError, UsageError
from pbox.storage.images import ImageStore
from pbox.storage.store import Store


def _default_hosts(hostname: str, extra: list[tuple[str, str]]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for name, ip in extra:
        lines.append(f"{ip}\t{name}")
    lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


def _resolv_conf(dns: list[str], search: list[str], options: list[str]) -> str:
    """The host's resolv.conf, with --dns/--dns-search/--dns-option replacing its parts."""
    host_lines = []
    try:
        with open("/etc/resolv.conf") as f:
            host_lines = f.read().splitlines()
    except OSError:
        pass
    ns = [ln.split()[1] for ln in host_lines if ln.startswith("nameserver") and
          len(ln.split()) > 1]
    # A loopback resolver on the host (systemd-resolved's 127.0.0.53) is unreachable
    # from a network namespace of its own; keep it only for host networking (caller).
    srch = [w for ln in host_lines if ln.startswith(("search", "domain")) for w in ln.split()[1:]]
    opts = [w for ln in host_lines if ln.startswith("options") for w in ln.split()[1:]]
    out = []
    if search or srch:
        out.append("search " + " ".join(search or srch))
    for n in dns or ns:
        out.append(f"nameserver {n}")
    if options or opts:
        out.append("options " + " ".join(options or opts))
    return "\n".join(out) + "\n"


def build_command(image_cfg: dict, o: opt.RunOptions) -> tuple[list[str], list[str]]:
    """docker's rules: (entrypoint, cmd) after --entrypoint and the given command."""
    entrypoint = image_cfg.get("Entrypoint") or []
    cmd = image_cfg.get("Cmd") or []
    if o.entrypoint is not None:
        entrypoint = [o.entrypoint] if o.entrypoint else []
        cmd = []  # docker drops the image's Cmd when the entrypoint is overridden
    if o.command:
        cmd = list(o.command)
    return list(entrypoint), list(cmd)


def create(config: Config, o: opt.RunOptions, *, report=None, notice=None,
           hold_signals: tuple = ()) -> str:
    """Create a container (not started); returns its id.

    ``hold_signals`` are blocked once the image is there (a ^C still interrupts a
    pull): `run` in the foreground passes the signals it forwards, so one that
    arrives before the container exists stays pending until there is someone to
    forward it to (``lifecycle.wait_forwarding`` unblocks them), instead of killing
    pbox and leaving the container behind.
    """
    opt.check(o)
    from pbox.pull import find_or_pull_image

    store = Store.open(config.root, config.runroot)
    res = find_or_pull_image(config, store, o.image, o.pull, platform=o.platform,
                             report=report, notice=notice)
    if hold_signals:
        import _signal as signal

        signal.pthread_sigmask(signal.SIG_BLOCK, hold_signals)
    # Shared gc lock from here to the written record: rmi/prune of the image and of
    # the volumes we make wait, so nothing we refer to disappears half-way.
    with store.gc_lock.shared():
        if not ImageStore(store).exists(res.image_id):
            raise ImageNotFound(f"No such image: {o.image}")
        return _create(config, store, o, res)


def _create(config: Config, store: Store, o: opt.RunOptions, res) -> str:
    from pbox.rootless import caps
    from pbox.rootless import spec as rspec

    cstore = ContainerStore(store)
    istore = ImageStore(store)
    image_config = istore.config(res.record)
    icfg = image_config.get("config") or {}

    _refuse_limits(o)
    entrypoint, cmd = build_command(icfg, o)
    if not entrypoint and not cmd:
        raise UsageError("no command specified: the image has no Cmd or Entrypoint; "
                         "give one after the image name")
    env = list(icfg.get("Env") or [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={rspec.DEFAULT_PATH}")
    user_env = []
    for path in o.env_files:
        user_env += opt.read_env_file(path)
    user_env += opt.parse_env(o.env)
    env = opt.merge_env(env, user_env)
    labels = dict(icfg.get("Labels") or {})
    labels.update(opt.parse_labels(o.labels))
    restart = opt.parse_restart(o.restart)
    if o.rm and restart["Name"]:
        raise UsageError("conflicting options: --restart and --rm")
    stop_signal = o.stop_signal or icfg.get("StopSignal") or "SIGTERM"
    opt.parse_signal(stop_signal)
    try:
        capabilities = caps.resolve(o.cap_add, o.cap_drop, privileged=o.privileged)
    except ValueError as e:
        raise UsageError(str(e))
    no_new_privs = any(s.replace(":", "=") in ("no-new-privileges", "no-new-privileges=true")
                       for s in o.security_opt)
    network, dns = _network(o)
    joined = ""
    if network.startswith("container:"):
        joined = _joined_container(cstore, network, o)
        network = "container:" + joined
    exposed = ports.exposed_ports(icfg.get("ExposedPorts"), o.expose)
    bindings = ports.requested(o.publish, o.publish_all, exposed)
    if bindings and not ports.own_network(network):
        raise UsageError(f"published ports need a network of the container's own: "
                         f"--network {network} has none")

    cid = new_id()
    name = opt.check_name(o.name) if o.name else _random_name(cstore)
    cstore.claim_name(name, cid)
    try:
        cdir = cstore.create_dir(cid)
        hostname = o.hostname or cid[:12]
        endpoints, link_env, link_records = _user_networks(store, cstore, network, name, o)
        env = opt.merge_env(opt.merge_env(env, link_env), user_env)
        mounts, mount_records, binds = _mounts(store, cid, o, icfg)
        etc_dir = cdir
        if joined:
            # docker's container: mode: the owner's hostname, hosts and resolv.conf.
            hostname = (cstore.config(joined).get("Config") or {}).get("Hostname") or \
                joined[:12]
            etc_dir = cstore.path(joined)
        else:
            extra = [_host_gateway(network, *opt.parse_add_host(h)) for h in o.add_hosts]
            with open(os.path.join(cdir, "hosts"), "w") as f:
                f.write(_default_hosts(hostname, extra))
            with open(os.path.join(cdir, "resolv.conf"), "w") as f:
                f.write(_resolv_conf(dns, o.dns_search, o.dns_options))
            with open(os.path.join(cdir, "hostname"), "w") as f:
                f.write(hostname + "\n")
        layers = [store.layer_diff(c) for c in reversed(res.record.layers)]
        spec = rspec.ContainerSpec(
            id=cid,
            rootfs=rspec.RootfsSpec(lowerdirs=layers, upperdir=os.path.join(cdir, "upper"),
                                    workdir=os.path.join(cdir, "work"),
                                    driver=o.storage_driver or config.storage_driver,
                                    readonly=o.read_only, path=os.path.join(cdir, "merged")),
            process=rspec.ProcessSpec(
                args=entrypoint + cmd, env=env, cwd=o.workdir or icfg.get("WorkingDir") or "/",
                user=o.user or icfg.get("User") or "", tty=o.tty, no_new_privs=no_new_privs,
                capabilities=capabilities,
                additional_gids=_group_ids(o.group_add, layers),
            ),
            hostname=hostname,
            domainname=o.domainname,
            mounts=mounts,
            hosts_file=os.path.join(etc_dir, "hosts"),
            resolv_conf=os.path.join(etc_dir, "resolv.conf"),
            hostname_file=os.path.join(etc_dir, "hostname"),
            network=network,
            init=o.init,
        )
        if o.privileged:
            spec.masked_paths = []
            spec.readonly_paths = []
        if o.shm_size:
            spec.shm_size = opt.parse_size(o.shm_size)
        now = time.time()
        record = {
            "Id": cid,
            "Name": "/" + name,
            "Created": humanize.rfc3339(now),
            "CreatedUnix": now,
            "Path": (entrypoint + cmd)[0],
            "Args": (entrypoint + cmd)[1:],
            "Image": res.image_id,
            "ImageName": o.image,
            "Layers": list(res.record.layers),
            "Driver": spec.rootfs.driver or "overlay",
            "Config": {
                "Hostname": hostname,
                "Domainname": o.domainname,
                "User": o.user or icfg.get("User") or "",
                "AttachStdin": o.interactive and not o.detach,
                "AttachStdout": not o.detach,
                "AttachStderr": not o.detach,
                "Tty": o.tty,
                "OpenStdin": o.interactive,
                "StdinOnce": o.interactive and not o.detach,
                "Env": env,
                "Cmd": cmd,
                "Image": o.image,
                "Volumes": icfg.get("Volumes"),
                "WorkingDir": o.workdir or icfg.get("WorkingDir") or "",
                "Entrypoint": entrypoint or None,
                "OnBuild": None,
                "Labels": labels,
                "StopSignal": stop_signal,
                **({"StopTimeout": o.stop_timeout} if o.stop_timeout is not None else {}),
                **({"ExposedPorts": exposed} if exposed else {}),
            },
            "HostConfig": {
                "Binds": binds,
                "AutoRemove": o.rm,
                "RestartPolicy": restart,
                "NetworkMode": network,
                "PortBindings": ports.port_bindings_record(bindings),
                "PublishAllPorts": o.publish_all,
                "Privileged": o.privileged,
                "CapAdd": o.cap_add or None,
                "CapDrop": o.cap_drop or None,
                "ReadonlyRootfs": o.read_only,
                "Init": o.init,
                "Dns": o.dns,
                "DnsSearch": o.dns_search,
                "DnsOptions": o.dns_options,
                "ExtraHosts": o.add_hosts or None,
                "Links": [f"/{t}:/{name}/{a}" for t, a in
                          ((cstore.name_of(x["Id"]), x["Alias"]) for x in link_records)] or None,
                "GroupAdd": o.group_add or None,
                "SecurityOpt": o.security_opt or None,
                "Tmpfs": {t: ",".join(topts) for t, topts in
                          (opt.parse_tmpfs(x) for x in o.tmpfs)} or None,
                "ShmSize": spec.shm_size,
            },
            "Mounts": mount_records,
            "NetworkingConfig": {"EndpointsConfig": endpoints},
            "LinkTargets": link_records,  # --link: [{"Id", "Alias"}]
            "Spec": spec.to_dict(),
        }
        cstore.write_config(cid, record)
        cstore.write_state(cid, Status="created", Running=False, Paused=False,
                           Restarting=False, OOMKilled=False, Dead=False, Pid=0, ExitCode=0,
                           Error="", StartedAt="0001-01-01T00:00:00Z",
                           FinishedAt="0001-01-01T00:00:00Z", RestartCount=0)
    except BaseException:
        cstore.release_name(name, cid)
        if os.path.isdir(cstore.path(cid)):
            cstore.remove_dir(cid)
        raise
    return cid


def _image_file(layers: list[str], path: str) -> str | None:
    """The text of ``path`` in the image whose layer dirs are ``layers`` (top first), or
    None.  A whiteout (overlay's 0/0 character device) in an upper layer hides it."""
    import stat

    for layer in layers:
        full = os.path.join(layer, path.lstrip("/"))
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            with open(full, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None
    return None


def _group_ids(groups: list[str], layers: list[str]) -> list[int]:
    """--group-add: numeric gids as given; names looked up in the image's /etc/group."""
    out: list[int] = []
    table = None
    for g in groups:
        g = str(g).strip()
        if g.isdigit():
            gid = int(g)
        else:
            if table is None:
                table = {}
                for line in (_image_file(layers, "/etc/group") or "").splitlines():
                    parts = line.split(":")
                    if len(parts) >= 3 and parts[2].isdigit():
                        table.setdefault(parts[0], int(parts[2]))
            if g not in table:
                raise UsageError(f"unable to find group {g}: no matching entries in "
                                 f"group file")
            gid = table[g]
        if gid not in out:
            out.append(gid)
    return out


def _network(o: opt.RunOptions) -> tuple[str, list[str]]:
    """The network mode (default: a private namespace through pasta) and the resolvers
    the container's resolv.conf names."""
    if o.network in ("host", "none"):
        return o.network, list(o.dns)  # as below, without importing the network code
    from pbox import networks
    from pbox.rootless import network as rnet

    mode = o.network or rnet.DEFAULT
    if mode in (networks.DEFAULT, "default"):
        mode = rnet.DEFAULT  # docker's default network: here a pasta per container
    name = rnet.parse_mode(mode)[0]
    if name == "container":
        return mode, []
    if name in ("host", "none") and mode != name:
        # refused now, not only when the container starts
        raise UsageError(f"network {mode!r} not found: {name} takes no options")
    if networks.is_user_network(mode):
        # outbound traffic (and so DNS) goes through pasta, as on the default network
        rnet.binary(rnet.PASTA)
        return mode, list(o.dns) or rnet.container_nameservers(rnet.PASTA,
                                                               rnet.host_nameservers())
    if name not in ("host", "none") + rnet.MODES:
        raise UsageError(f"network {mode!r} is not supported: use pasta, slirp4netns, "
                         f"host, none or container:NAME")
    if o.dns or name in ("host", "none"):
        return mode, list(o.dns)
    rnet.binary(name)  # a missing helper is reported now, with the package to install
    return mode, rnet.container_nameservers(name, rnet.host_nameservers())


def _user_networks(store: Store, cstore: ContainerStore, network: str, name: str,
                   o: opt.RunOptions):
    """``--network NAME`` of a user network, ``--network-alias`` and ``--link``: the
    config's endpoints, the link variables and the links' records."""
    if network in ("host", "none") and not o.network_aliases and not o.links:
        return {}, [], []  # as below, without importing the network code
    from pbox import networks

    endpoints = {}
    if networks.is_user_network(network):
        rec = networks.find(store, network)
        endpoints[rec["Name"]] = {"Aliases": list(o.network_aliases)}
        if o.ip:
            endpoints[rec["Name"]]["IPAMConfig"] = {
                "IPv4Address": networks.check_address(rec, o.ip)}
    elif o.network_aliases:
        raise UsageError("network-scoped alias is supported only for containers in user "
                         "defined networks")
    elif o.ip:
        raise UsageError("user specified IP address is supported on user defined "
                         "networks only")
    if o.links and network in ("host", "none"):
        raise UsageError(f"conflicting options: {network} type networking can't be used "
                         f"with links")
    env, records = [], []
    for text in o.links:
        target, alias = networks.parse_link(text)
        tid = cstore.find(target)
        tcfg = cstore.config(tid)
        tname = tcfg.get("Name", "").lstrip("/")
        try:
            ip = networks.link_target(store, tid, list(endpoints))
        except Conflict:
            raise UsageError(f"Cannot link to a non running container: /{tname} AS "
                             f"/{name}/{alias}") from None
        env += networks.link_env(alias, name, tname, ip, tcfg)
        records.append({"Id": tid, "Alias": alias})
    return endpoints, env, records


def _joined_container(cstore: ContainerStore, network: str, o: opt.RunOptions) -> str:
    """``--network container:NAME|ID``: the id of the container whose network namespace
    (and hostname, /etc/hosts, /etc/resolv.conf) this one shares; docker's conflicts."""
    target = network.partition(":")[2]
    if not target:
        raise UsageError("--network container: needs a container name or id")
    for given, what in ((o.publish or o.publish_all, "port publishing"),
                        (o.expose, "port exposing")):
        if given:
            raise UsageError(f"conflicting options: {what} and the container type "
                             f"network mode")
    for given, what in ((o.hostname, "hostname"),
                        (o.dns or o.dns_search or o.dns_options, "dns"),
                        (o.add_hosts, "custom host-to-IP mapping"),
                        (o.links, "links")):
        if given:
            raise UsageError(f"conflicting options: {what} and the network mode")
    return cstore.find(target)


def _host_gateway(network: str, name: str, ip: str) -> tuple[str, str]:
    """--add-host NAME:host-gateway -> the address where the container reaches the host."""
    if ip != "host-gateway":
        return name, ip
    from pbox.rootless import network as rnet

    try:
        return name, rnet.host_gateway(network)
    except PboxError as e:
        raise UsageError(str(e))


def _refuse_limits(o: opt.RunOptions) -> None:
    asked = [f for f, v in (("--memory", o.memory), ("--cpus", o.cpus),
                            ("--pids-limit", o.pids_limit)) if v]
    if not asked:
        return
    from pbox.rootless import cgroups

    problem = cgroups.delegation_problem()
    if problem:
        raise PboxError(f"{', '.join(asked)} need a cgroup v2 subtree delegated to you: "
                        f"{problem}")
    raise PboxError(f"{', '.join(asked)}: resource limits are not implemented yet")


def _mounts(store: Store, cid: str, o: opt.RunOptions, icfg: dict):
    """MountSpecs for -v/--mount/--tmpfs and the image's VOLUMEs; inspect's Mounts."""
    from pbox.rootless.spec import MountSpec

    if o.volumes or o.mounts or icfg.get("Volumes"):
        from pbox.containers import volumes  # not for a plain run: it imports secrets

    specs: list[MountSpec] = []
    records: list[dict] = []
    binds: list[str] = []
    taken: set[str] = set()
    args = [opt.parse_volume(v) for v in o.volumes]
    tmpfs = [opt.parse_tmpfs(t) for t in o.tmpfs]
    for m in o.mounts:
        parsed = opt.parse_mount(m)
        if isinstance(parsed, tuple):
            tmpfs.append((parsed[1][0], parsed[1][1:]))
        else:
            args.append(parsed)
    for a in args:
        target = os.path.normpath(a.target)
        if target in taken:
            raise UsageError(f"duplicate mount point: {target}")
        taken.add(target)
        flags = ["ro"] if a.readonly else []
        flags += [x for x in a.options if x in ("private", "rprivate", "slave", "rslave",
                                                "shared", "rshared", "nosuid", "nodev",
                                                "noexec")]
        if a.type == "bind":
            if not os.path.exists(a.source):
                raise UsageError(f"invalid mount config: bind source path does not exist: "
                                 f"{a.source}")
            specs.append(MountSpec("bind", target, a.source, flags))
            records.append({"Type": "bind", "Source": a.source, "Destination": target,
                            "Mode": ",".join(a.options), "RW": not a.readonly,
                            "Propagation": "rprivate"})
            binds.append(f"{a.source}:{target}" + (":ro" if a.readonly else ""))
        else:
            vol = volumes.ensure(store, a.source)
            copy = [] if "nocopy" in a.options else ["copy"]
            specs.append(MountSpec("volume", target, vol.data_dir, flags + copy))
            records.append({"Type": "volume", "Name": vol.name, "Source": vol.data_dir,
                            "Destination": target, "Driver": "local",
                            "Mode": ",".join(a.options), "RW": not a.readonly,
                            "Propagation": ""})
            if a.source:
                binds.append(f"{vol.name}:{target}" + (":ro" if a.readonly else ""))
    for vpath in sorted(icfg.get("Volumes") or {}):
        target = os.path.normpath(vpath)
        if target in taken or any(t == target for t, _ in tmpfs):
            continue
        taken.add(target)
        vol = volumes.ensure(store, "")
        specs.append(MountSpec("volume", target, vol.data_dir, ["copy"]))
        records.append({"Type": "volume", "Name": vol.name, "Source": vol.data_dir,
                        "Destination": target, "Driver": "local", "Mode": "", "RW": True,
                        "Propagation": ""})
    for target, topts in tmpfs:
        specs.append(MountSpec("tmpfs", os.path.normpath(target), "tmpfs", list(topts)))
    return specs, records, binds


_ADJ = ["admiring", "brave", "calm", "eager", "festive", "gifted", "happy", "jolly", "keen",
        "lucid", "modest", "nifty", "quirky", "serene", "tender", "vibrant", "wizardly",
        "zealous", "bold", "clever"]
_NOUN = ["turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "curie",
         "noether", "shannon", "babbage", "dijkstra", "hamilton", "liskov", "kay", "wozniak",
         "pike", "cerf", "berners", "hodgkin"]


def _pick(words: list[str]) -> str:
    # os.urandom, not the random module (~1 ms of imports on every unnamed run)
    return words[int.from_bytes(os.urandom(2), "little") % len(words)]


def _random_name(cstore: ContainerStore) -> str:
    used = set()
    try:
        used = set(os.listdir(cstore.names_dir))
    except FileNotFoundError:
        pass
    for _ in range(100):
        n = f"{_pick(_ADJ)}_{_pick(_NOUN)}"
        if n not in used:
            return n
    return f"{_pick(_ADJ)}_{_pick(_NOUN)}{int.from_bytes(os.urandom(2), 'little') % 9999 + 1}"
