"""User and group id mappings for the user namespace: pure logic, no kernel calls.

A rootless container maps *container 0* to the invoking user and *container 1..N* to the
user's subordinate range from ``/etc/subuid`` / ``/etc/subgid`` (several ranges are laid
end to end).  Without a range (or without the setuid ``newuidmap`` helpers) only the user
itself can be mapped: container 0 = the user, every other id is unmapped, so files in
images end up owned by the user ("squashed").

Real root needs no mapping at all (mode ``host``).
"""

from __future__ import annotations

import os
import stat

from pbox.record import record

MODE_HOST = "host"  # real root: no user namespace, ids are host ids
MODE_SUBUID = "subuid"  # 0 = user, 1..N = /etc/subuid ranges, mapped with newuidmap
MODE_SINGLE = "single"  # 0 = user only, mapped by the process itself

SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"

# The kernel's overflow ids: what an unmapped id looks like from inside a namespace.
OVERFLOW_ID = 65534


@record(frozen=True)
class IdRange:
    """``size`` ids starting at ``container`` inside map to ``host`` outside."""

    container: int
    host: int
    size: int

    def line(self) -> str:
        return f"{self.container} {self.host} {self.size}"


@record(frozen=True)
class SubRange:
    """One line of /etc/subuid: ``owner:start:count``."""

    owner: str
    start: int
    count: int


def parse_subid(text: str) -> list[SubRange]:
    """Parse the text of /etc/subuid or /etc/subgid; malformed lines are skipped."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        owner, start, count = parts
        try:
            s, c = int(start), int(count)
        except ValueError:
            continue
        if not owner or s < 0 or c <= 0:
            continue
        out.append(SubRange(owner, s, c))
    return out


def ranges_for(entries: list[SubRange], name: str | None, uid: int) -> list[SubRange]:
    """The entries of a user, given by name or by numeric id (both forms are legal)."""
    keys = {str(uid)}
    if name:
        keys.add(name)
    return [e for e in entries if e.owner in keys]


def read_subid_ranges(name: str | None, uid: int, path: str = SUBUID_FILE) -> list[SubRange]:
    """The user's ranges in ``path``; a missing or unreadable file means none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    return ranges_for(parse_subid(text), name, uid)


def build_ranges(own_id: int, subs: list[SubRange]) -> tuple[IdRange, ...]:
    """Container 0 = ``own_id``; 1.. = the subordinate ranges, in file order.

    Duplicate lines and ranges that contain the user's own id are skipped: mapping one
    host id twice is refused by the kernel.
    """
    out = [IdRange(0, own_id, 1)]
    nxt = 1
    seen: list[tuple[int, int]] = [(own_id, own_id + 1)]
    for s in subs:
        lo, hi = s.start, s.start + s.count
        if any(lo < b and a < hi for a, b in seen):
            continue
        seen.append((lo, hi))
        out.append(IdRange(nxt, s.start, s.count))
        nxt += s.count
    return tuple(out)


def _lookup(ranges: tuple[IdRange, ...], value: int, inside: bool) -> int | None:
    for r in ranges:
        base, other = (r.container, r.host) if inside else (r.host, r.container)
        if base <= value < base + r.size:
            return other + (value - base)
    return None


@record(frozen=True)
class IdMapping:
    """How ids inside the user namespace correspond to host ids."""

    mode: str
    uid: int  # the invoking user's host uid
    gid: int  # and primary gid
    uid_ranges: tuple[IdRange, ...] = ()
    gid_ranges: tuple[IdRange, ...] = ()
    newuidmap: str | None = None
    newgidmap: str | None = None
    # True when the process is already inside this mapping's namespace (the ranges were
    # read back from /proc/self/uid_map): nothing must be unshared or mapped again.
    entered: bool = False

    @classmethod
    def host(cls, uid: int = 0, gid: int = 0) -> IdMapping:
        return cls(MODE_HOST, uid, gid)

    @classmethod
    def single(cls, uid: int, gid: int) -> IdMapping:
        return cls(MODE_SINGLE, uid, gid, (IdRange(0, uid, 1),), (IdRange(0, gid, 1),))

    @classmethod
    def subuid(
        cls,
        uid: int,
        gid: int,
        subuids: list[SubRange],
        subgids: list[SubRange],
        newuidmap: str = "newuidmap",
        newgidmap: str = "newgidmap",
    ) -> IdMapping:
        return cls(
            MODE_SUBUID,
            uid,
            gid,
            build_ranges(uid, subuids),
            build_ranges(gid, subgids),
            newuidmap,
            newgidmap,
        )

    @property
    def needs_userns(self) -> bool:
        return self.mode != MODE_HOST

    @property
    def uid_count(self) -> int:
        """How many container uids exist (0..count-1); 2**32-1 for host mode."""
        if self.mode == MODE_HOST:
            return 0xFFFFFFFF
        return sum(r.size for r in self.uid_ranges)

    @property
    def gid_count(self) -> int:
        if self.mode == MODE_HOST:
            return 0xFFFFFFFF
        return sum(r.size for r in self.gid_ranges)

    def to_host_uid(self, container_uid: int) -> int | None:
        """The host uid of ``container_uid``, or None when it is not mapped."""
        if self.mode == MODE_HOST:
            return container_uid
        return _lookup(self.uid_ranges, container_uid, inside=True)

    def to_host_gid(self, container_gid: int) -> int | None:
        if self.mode == MODE_HOST:
            return container_gid
        return _lookup(self.gid_ranges, container_gid, inside=True)

    def to_container_uid(self, host_uid: int) -> int | None:
        if self.mode == MODE_HOST:
            return host_uid
        return _lookup(self.uid_ranges, host_uid, inside=False)

    def to_container_gid(self, host_gid: int) -> int | None:
        if self.mode == MODE_HOST:
            return host_gid
        return _lookup(self.gid_ranges, host_gid, inside=False)

    def uid_map_text(self) -> str:
        """The text for /proc/PID/uid_map (what newuidmap writes for us)."""
        return "".join(r.line() + "\n" for r in self.uid_ranges)

    def gid_map_text(self) -> str:
        return "".join(r.line() + "\n" for r in self.gid_ranges)

    def newuidmap_args(self, pid: int) -> list[str]:
        return newidmap_args(self.newuidmap or "newuidmap", pid, self.uid_ranges)

    def newgidmap_args(self, pid: int) -> list[str]:
        return newidmap_args(self.newgidmap or "newgidmap", pid, self.gid_ranges)


def newidmap_args(program: str, pid: int, ranges: tuple[IdRange, ...]) -> list[str]:
    """``newuidmap PID  inside outside count  inside outside count ...``."""
    args = [program, str(pid)]
    for r in ranges:
        args += [str(r.container), str(r.host), str(r.size)]
    return args


def find_newidmap(program: str, path: str | None = None) -> str | None:
    """The helper's path when it exists and can work: setuid root, or with file caps."""
    from pbox.rootless.progs import which

    found = which(program, path)
    if not found:
        return None
    try:
        st = os.stat(found)
    except OSError:
        return None
    if st.st_uid == 0 and st.st_mode & stat.S_ISUID:
        return found
    # Some distributions grant CAP_SETUID/CAP_SETGID as file capabilities instead.
    try:
        os.getxattr(found, "security.capability")
        return found
    except OSError:
        return None


def usermod_hint(name: str, count: int = 65536, start: int = 100000) -> str:
    end = start + count - 1
    return f"sudo usermod --add-subuids {start}-{end} --add-subgids {start}-{end} {name}"


def squash_notice(name: str) -> str:
    """The one-time message when only the user can be mapped."""
    return (
        f"user {name!r} has no subordinate id range in {SUBUID_FILE} and {SUBGID_FILE} "
        "(or newuidmap/newgidmap are missing), so only your own id is mapped: files in "
        "images are all owned by you and containers can only use uid 0. For full id "
        "mapping an administrator can give you a free range, e.g.: " + usermod_hint(name)
    )


def mapping_for(
    uid: int,
    gid: int,
    name: str | None,
    *,
    subuid_file: str = SUBUID_FILE,
    subgid_file: str = SUBGID_FILE,
    newuidmap: str | None = None,
    newgidmap: str | None = None,
) -> IdMapping:
    """Choose the mapping for a user: host for root, subuid when possible, else single.

    ``newuidmap``/``newgidmap`` are the helpers' paths (None: not available).
    """
    if uid == 0:
        return IdMapping.host(0, gid)
    subuids = read_subid_ranges(name, uid, subuid_file)
    subgids = read_subid_ranges(name, uid, subgid_file)
    if subuids and subgids and newuidmap and newgidmap:
        return IdMapping.subuid(uid, gid, subuids, subgids, newuidmap, newgidmap)
    return IdMapping.single(uid, gid)
