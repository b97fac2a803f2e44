"""Linux capabilities by name, docker's default set, and --cap-add/--cap-drop arithmetic.

Pure apart from :func:`apply_bounding` and :func:`apply_process_caps`, which the container
launcher calls in the child just before it switches user and executes the command.
"""

from __future__ import annotations

from collections.abc import Iterable

from pbox.rootless import syscalls

syscalls.load()  # ctypes, while imports work: before any pivot_root or setns

# linux/capability.h
NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
NAMES = {v: k for k, v in NUMBERS.items()}

# What docker (moby's caps.DefaultCapabilities) grants a container.
DEFAULT = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def normalize(name: str) -> str:
    """``net_admin`` / ``NET_ADMIN`` / ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ValueError if unknown."""
    n = name.strip().upper()
    if n == "ALL":
        return n
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in NUMBERS:
        raise ValueError(f"unknown capability {name!r}")
    return n


def all_names(last: int | None = None) -> list[str]:
    """Every capability this kernel knows (by name), in number order."""
    if last is None:
        last = syscalls.last_cap()
    return [NAMES[i] for i in sorted(NAMES) if i <= last]


def resolve(
    add: Iterable[str] = (),
    drop: Iterable[str] = (),
    base: Iterable[str] = DEFAULT,
    privileged: bool = False,
) -> list[str]:
    """docker's --cap-add/--cap-drop/--privileged on top of ``base``.

    ``ALL`` in ``add`` grants everything; ``ALL`` in ``drop`` starts from nothing (and
    then ``add`` applies, as docker does).
    """
    if privileged:
        return sorted(NUMBERS, key=NUMBERS.get)
    add_n = [normalize(a) for a in add]
    drop_n = [normalize(d) for d in drop]
    caps = set(base)
    if "ALL" in drop_n:
        caps = set()
    caps -= set(drop_n)
    if "ALL" in add_n:
        caps = set(NUMBERS)
    caps |= {a for a in add_n if a != "ALL"}
    return sorted(caps, key=NUMBERS.get)


def to_mask(names: Iterable[str]) -> int:
    mask = 0
    for n in names:
        mask |= 1 << NUMBERS[normalize(n)]
    return mask


def from_mask(mask: int) -> list[str]:
    return [NAMES.get(i, f"CAP_{i}") for i in range(64) if mask >> i & 1]


def apply_bounding(names: Iterable[str]) -> None:
    """Drop every capability not in ``names`` from the bounding set (needs CAP_SETPCAP).

    After this, no execve can regain them, whatever file capabilities or setuid bits say.
    """
    keep = to_mask(names)
    for cap in range(syscalls.last_cap() + 1):
        if not keep >> cap & 1:
            syscalls.capbset_drop(cap)


def apply_process_caps(names: Iterable[str], uid: int) -> None:
    """Set effective/permitted to ``names`` for root, nothing for other users; no inheritable.

    Like docker: a non-root user gets only the bounding set (execve would clear its
    permitted set anyway).  Call after switching user: setuid() to non-root has already
    cleared the sets then, and root's are narrowed here.
    """
    syscalls.cap_ambient_clear_all()
    if uid == 0:
        # Never more than we hold: the bounding set we inherited may already be short.
        _, permitted, _ = syscalls.capget()
        mask = to_mask(names) & _kernel_mask() & permitted
        syscalls.capset(mask, mask, 0)
    else:
        syscalls.capset(0, 0, 0)


def _kernel_mask() -> int:
    return (1 << (syscalls.last_cap() + 1)) - 1
