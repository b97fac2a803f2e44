"""What one container run needs, as plain data (no store, no image, no CLI).

The containers layer fills a :class:`ContainerSpec` from an image config and the user's
flags; :func:`pbox.rootless.launcher.launch` turns it into a running process.  Specs
round-trip through JSON (``to_dict`` / ``from_dict``), so a detached monitor can be
handed one.
"""

from __future__ import annotations

from pbox import record as _record
from pbox.record import factory, record
from pbox.rootless import caps

DRIVER_AUTO = ""
DRIVER_OVERLAY = "overlay"
DRIVER_FUSE = "fuse-overlayfs"
DRIVER_VFS = "vfs"
DRIVERS = (DRIVER_AUTO, DRIVER_OVERLAY, DRIVER_FUSE, DRIVER_VFS)

NETWORK_NONE = "none"  # own network namespace with only lo
NETWORK_HOST = "host"  # the host's network namespace
# Any other value ("pasta", "slirp4netns", a network name...) gets its own network
# namespace like "none"; the networking code attaches to it via launch(on_created=...).
# "container:ID" creates none: the caller enters the owner's before launching.

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# docker's (moby's oci.DefaultSpec) masked and read-only paths.
DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@record
class RootfsSpec:
    """The container's root filesystem.

    ``lowerdirs`` are read-only layer directories, top first, in overlay form (whiteouts
    are 0/0 character devices, opaque directories carry ``user.overlay.opaque=y``).
    ``upperdir``/``workdir`` hold the container's writes.  ``path`` is where the tree is
    assembled (created if missing; default: ``merged`` next to ``upperdir``).

    ``driver`` "" picks native overlay, then fuse-overlayfs, then vfs.  ``vfs`` copies
    the layers into ``path`` once (a marker file records completion) and the container
    writes there directly.  A single lowerdir with no upperdir is bind-mounted as is (a
    plain directory rootfs).
    """

    lowerdirs: list[str] = factory(list)
    upperdir: str = ""
    workdir: str = ""
    driver: str = DRIVER_AUTO
    readonly: bool = False
    path: str = ""


@record
class MountSpec:
    """One -v/--mount/--tmpfs: ``type`` is "bind", "tmpfs" or "volume" (a bind of the
    volume's directory).  ``options``: ro, rw, nosuid, nodev, noexec, size=, mode=,
    recursive/rbind/bind, private/rprivate/slave/rslave/shared/rshared; others ignored
    (z, Z, nocopy...)."""

    type: str
    target: str
    source: str = ""
    options: list[str] = factory(list)

    @property
    def readonly(self) -> bool:
        return "ro" in self.options or "readonly" in self.options


@record
class ProcessSpec:
    """The command and its credentials.

    ``user`` (docker's ``-u``: ``name``, ``uid``, ``name:group``, ``uid:gid``) is resolved
    against the container's own /etc/passwd and /etc/group after the rootfs is mounted,
    and then overrides ``uid``/``gid``/``additional_gids``.  ``capabilities`` are names;
    None means docker's default set.
    """

    args: list[str] = factory(list)
    env: list[str] = factory(list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = factory(list)
    user: str = ""
    tty: bool = False
    no_new_privs: bool = False
    capabilities: list[str] | None = None
    umask: int = 0o022

    def effective_capabilities(self) -> list[str]:
        return list(caps.DEFAULT) if self.capabilities is None else list(self.capabilities)


@record
class DeviceSpec:
    """A host device node made available in the container (docker's --device)."""

    source: str
    target: str = ""


@record
class ContainerSpec:
    """Everything the launcher needs to run one container."""

    id: str
    rootfs: RootfsSpec
    process: ProcessSpec
    hostname: str = ""
    domainname: str = ""
    mounts: list[MountSpec] = factory(list)
    hosts_file: str = ""  # host paths bound to /etc/hosts, /etc/resolv.conf, /etc/hostname
    resolv_conf: str = ""
    hostname_file: str = ""
    network: str = NETWORK_NONE
    masked_paths: list[str] = factory(lambda: list(DEFAULT_MASKED_PATHS))
    readonly_paths: list[str] = factory(lambda: list(DEFAULT_READONLY_PATHS))
    devices: list[DeviceSpec] = factory(list)
    init: bool = False  # a minimal init as PID 1 that reaps zombies and forwards signals
    shm_size: int = 64 * 1024 * 1024
    private_ipc: bool = True

    @property
    def own_network(self) -> bool:
        return self.network != NETWORK_HOST and not self.network.startswith("container:")

    def to_dict(self) -> dict:
        return _record.as_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ContainerSpec:
        d = _known(cls, data)
        d["rootfs"] = RootfsSpec(**_known(RootfsSpec, data.get("rootfs", {})))
        d["process"] = ProcessSpec(**_known(ProcessSpec, data.get("process", {})))
        d["mounts"] = [MountSpec(**_known(MountSpec, m)) for m in data.get("mounts", [])]
        d["devices"] = [DeviceSpec(**_known(DeviceSpec, x)) for x in data.get("devices", [])]
        return cls(**d)


def _known(cls, data: dict) -> dict:
    """Only the keys ``cls`` knows: a spec written by a newer pbox still loads."""
    names = _record.names(cls)
    return {k: v for k, v in data.items() if k in names}
