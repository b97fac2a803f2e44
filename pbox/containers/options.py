"""The options of `run`/`create`, and parsing of their docker syntaxes (pure)."""

from __future__ import annotations

import _signal  # (signal imports enum: ~2 ms of every run)
import os

from pbox.errors import UsageError
from pbox.names import is_name
from pbox.record import factory, record


@record
class VolumeArg:
    """One -v / --mount of type bind or volume."""

    type: str  # bind | volume
    source: str  # host path (bind), volume name ("" = anonymous)
    target: str
    readonly: bool = False
    options: list = factory(list)


@record
class RunOptions:
    image: str = ""
    command: list = factory(list)
    name: str = ""
    env: list = factory(list)
    env_files: list = factory(list)
    workdir: str = ""
    user: str = ""
    group_add: list = factory(list)
    entrypoint: str | None = None
    hostname: str = ""
    domainname: str = ""
    add_hosts: list = factory(list)
    dns: list = factory(list)
    dns_search: list = factory(list)
    dns_options: list = factory(list)
    read_only: bool = False
    tmpfs: list = factory(list)
    volumes: list = factory(list)  # -v strings
    mounts: list = factory(list)  # --mount strings
    labels: list = factory(list)
    label_files: list = factory(list)
    stop_signal: str = ""
    stop_timeout: int | None = None
    network: str = ""
    pull: str = "missing"
    rm: bool = False
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    init: bool = False
    privileged: bool = False
    cap_add: list = factory(list)
    cap_drop: list = factory(list)
    security_opt: list = factory(list)
    restart: str = "no"
    platform: str | None = None
    publish: list = factory(list)
    publish_all: bool = False
    expose: list = factory(list)
    network_aliases: list = factory(list)
    links: list = factory(list)
    ip: str = ""
    memory: str = ""
    cpus: str = ""
    pids_limit: int | None = None
    shm_size: str = ""
    devices: list = factory(list)
    storage_driver: str = ""


def parse_env(items: list[str], environ: dict | None = None) -> list[str]:
    """-e KEY=VALUE, or -e KEY to take the value from our environment (dropped if unset)."""
    environ = os.environ if environ is None else environ
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable: {item!r}")
        if sep:
            out.append(f"{key}={value}")
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def read_env_file(path: str, environ: dict | None = None) -> list[str]:
    """docker's --env-file: KEY=VALUE lines, # comments, bare KEY taken from our env."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read env file {path}: {e.strerror}")
    items = []
    for n, line in enumerate(lines, 1):
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        key = text.partition("=")[0]
        if not key or " " in key.strip() or "\t" in key:
            raise UsageError(f"{path}:{n}: variable {key!r} contains whitespaces")
        items.append(text if "=" in text else key.strip())
    return parse_env(items, environ)


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Image env, then user env: a later KEY replaces an earlier one in place."""
    order: list[str] = []
    values: dict[str, str] = {}
    for item in list(base) + list(extra):
        key = item.partition("=")[0]
        if key not in values:
            order.append(key)
        values[key] = item
    return [values[k] for k in order]


def parse_labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid label: {item!r}")
        out[key] = value
    return out


def parse_volume(text: str) -> VolumeArg:
    """-v SRC:DST[:OPTS] | -v DST (anonymous) | -v NAME:DST."""
    parts = text.split(":")
    if len(parts) > 1 and not all(parts):
        raise UsageError(f"invalid volume specification: {text!r}: empty section between "
                         f"colons")
    if len(parts) == 1:
        src, dst, opts = "", parts[0], []
    elif len(parts) == 2:
        src, dst, opts = parts[0], parts[1], []
    elif len(parts) == 3:
        src, dst, opts = parts[0], parts[1], [o for o in parts[2].split(",") if o]
    else:
        raise UsageError(f"invalid volume specification: {text!r}")
    if not dst.startswith("/"):
        raise UsageError(f"invalid volume specification: {text!r}: the container path "
                         f"must be absolute")
    for o in opts:
        if o not in ("ro", "rw", "z", "Z", "nocopy", "private", "rprivate", "slave",
                     "rslave", "shared", "rshared", "bind", "rbind", "noexec", "exec",
                     "nosuid", "suid", "nodev", "dev", "U", "O", "copy"):
            raise UsageError(f"invalid volume specification: {text!r}: unknown option {o!r}")
    ro = "ro" in opts
    if not src:
        return VolumeArg("volume", "", dst, ro, opts)
    if src.startswith("/") or src.startswith("."):
        return VolumeArg("bind", os.path.abspath(src), dst, ro, opts)
    if not is_name(src):
        raise UsageError(f"invalid volume name {src!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                         f"allowed; a host path must be absolute")
    return VolumeArg("volume", src, dst, ro, opts)


def parse_mount(text: str) -> VolumeArg | tuple[str, list[str]]:
    """--mount type=bind|volume|tmpfs,source=,target=,readonly,... .

    Returns a VolumeArg, or ("tmpfs", [target, options...]) for tmpfs."""
    fields: dict[str, str] = {}
    flags: list[str] = []
    for item in text.split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            flags.append(key)
        else:
            fields[key] = value
    kind = fields.get("type", "volume")
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not target:
        raise UsageError(f"invalid --mount {text!r}: target is required")
    if not target.startswith("/"):
        raise UsageError(f"invalid --mount {text!r}: the target must be an absolute path")
    ro = any(f in ("readonly", "ro") for f in flags) or \
        fields.get("readonly", fields.get("ro", "false")).lower() in ("true", "1")
    source = fields.get("source") or fields.get("src") or ""
    if kind == "bind":
        if not source:
            raise UsageError(f"invalid --mount {text!r}: a bind mount needs a source")
        opts = []
        if fields.get("bind-propagation"):
            opts.append(fields["bind-propagation"])
        return VolumeArg("bind", os.path.abspath(source), target, ro, opts)
    if kind == "volume":
        nocopy = "volume-nocopy" in flags or \
            fields.get("volume-nocopy", "false").lower() in ("true", "1")
        return VolumeArg("volume", source, target, ro, ["nocopy"] if nocopy else [])
    if kind == "tmpfs":
        opts = []
        if "tmpfs-size" in fields:
            opts.append(f"size={fields['tmpfs-size']}")
        if "tmpfs-mode" in fields:
            opts.append(f"mode={fields['tmpfs-mode']}")
        if ro:
            opts.append("ro")
        return ("tmpfs", [target, *opts])
    raise UsageError(f"invalid --mount {text!r}: unknown type {kind!r}")


def parse_tmpfs(text: str) -> tuple[str, list[str]]:
    target, _, opts = text.partition(":")
    if not target.startswith("/"):
        raise UsageError(f"invalid --tmpfs {text!r}: the path must be absolute")
    options = [o for o in opts.split(",") if o]
    for o in options:
        key, _, value = o.partition("=")
        if key in ("size", "nr_blocks", "nr_inodes") and not _is_percent(value):
            try:
                parse_size(value)
            except UsageError:
                raise UsageError(f"invalid --tmpfs {text!r}: bad {key} {value!r}")
    return target, options


def check(o: RunOptions) -> None:
    """Refuse a bad option value of `run`/`create` before an image is pulled or
    anything is made, as docker's flag parsing does."""
    parse_env(o.env)
    parse_labels(o.labels)
    parse_restart(o.restart)
    if o.stop_signal:
        parse_signal(o.stop_signal)
    for part in (o.user or "").split(":", 1):
        if part.isdigit() and int(part) > 0xFFFFFFFE:
            raise UsageError(f"invalid --user {o.user!r}: uids and gids must be in range "
                             f"0-{0xFFFFFFFE}")
    if o.hostname and len(o.hostname.encode()) > 64:
        raise UsageError(f"invalid hostname {o.hostname!r}: longer than 64 bytes")
    if o.workdir and not o.workdir.startswith("/"):
        raise UsageError(f"the working directory {o.workdir!r} is invalid, it needs to be "
                         f"an absolute path")
    for server in o.dns:
        import ipaddress

        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise UsageError(f"{server} is not an ip address")
    for s in o.security_opt:
        # docker: "no-new-privileges" alone, otherwise KEY=VALUE (or KEY:VALUE)
        if s != "no-new-privileges" and "=" not in s and ":" not in s:
            raise UsageError(f"invalid --security-opt: {s!r}")
    if o.memory:
        try:
            parse_size(o.memory)
        except UsageError as e:
            raise UsageError(f"invalid argument {o.memory!r} for --memory: {e}")
    if o.cpus:
        try:
            cpus = float(o.cpus)
        except ValueError:
            cpus = 0.0
        if not 0 < cpus < float("inf"):
            raise UsageError(f"invalid argument {o.cpus!r} for --cpus: a number of CPUs "
                             f"greater than 0")
    if o.platform:
        from pbox.oci import platform as plat

        plat.parse(o.platform)
    for v in o.volumes:
        parse_volume(v)
    for m in o.mounts:
        parse_mount(m)
    for t in o.tmpfs:
        parse_tmpfs(t)


def parse_restart(text: str) -> dict:
    """--restart no|always|unless-stopped|on-failure[:N] -> docker's RestartPolicy."""
    name, _, count = (text or "no").partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise UsageError(f"invalid restart policy {text!r}")
    if count and name != "on-failure":
        raise UsageError(f"invalid restart policy {text!r}: only on-failure takes a count")
    try:
        n = int(count) if count else 0
    except ValueError:
        raise UsageError(f"invalid restart policy {text!r}: bad count")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": n}


def parse_signal(text: str) -> int:
    """SIGTERM, TERM, 15 -> 15."""
    t = str(text).strip().upper()
    if not t:
        raise UsageError("empty signal")
    if t.isdigit():
        n = int(t)
        if 0 < n < 65:
            return n
        raise UsageError(f"invalid signal: {text}")
    if not t.startswith("SIG"):
        t = "SIG" + t
    # the signal names _signal has (signal.Signals' members), not SIG_DFL, SIG_BLOCK...
    n = getattr(_signal, t, None) if t[3:].isalnum() else None
    if not isinstance(n, int) or not 0 < n < _signal.NSIG:
        raise UsageError(f"invalid signal: {text}")
    return n


def parse_add_host(text: str) -> tuple[str, str]:
    """--add-host NAME:IP (IPv6 allowed after the first colon; also NAME=IP)."""
    sep = "=" if "=" in text else ":"
    name, _, ip = text.partition(sep)
    if not name or not ip:
        raise UsageError(f"invalid argument {text!r} for --add-host: expected NAME:IP")
    return name, ip.strip("[]")


_DIGITS = frozenset("0123456789")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

# (sizes checked by hand, not with ``re``: its import is ~3 ms of every `run`)


def _is_digits(text: str) -> bool:
    return bool(text) and all(c in _DIGITS for c in text)


def _is_percent(text: str) -> bool:
    return text.endswith("%") and _is_digits(text[:-1])


def parse_size(text: str) -> int:
    """64m, 1g, 512k, 100 -> bytes (docker's RAMInBytes: binary units; a unit may be
    followed by ``i`` and ``b``, any case, and preceded by blanks)."""
    t = text.strip().lower()
    for suffix in ("b", "i"):  # "kib", "kb", "ki", "b"
        if t.endswith(suffix):
            t = t[: -len(suffix)]
    unit = t[-1:] if t[-1:] in ("k", "m", "g", "t", "p") else ""
    number = t[: len(t) - len(unit)].rstrip()
    whole, dot, frac = number.partition(".")
    if not _is_digits(whole) or dot and not _is_digits(frac):
        raise UsageError(f"invalid size: {text!r}")
    try:
        return int(float(number) * _UNITS[unit])
    except OverflowError:
        raise UsageError(f"invalid size: {text!r}: too large")


def check_name(name: str) -> str:
    if not is_name(name[1:] if name.startswith("/") else name, 2):
        raise UsageError(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                         f"are allowed")
    if len(name.lstrip("/")) > 255:
        # the name is a file name in the store
        raise UsageError(f"Invalid container name ({name[:20]}...): longer than 255 "
                         f"characters")
    return name.lstrip("/")
