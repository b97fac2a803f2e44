"""Named and anonymous volumes: ``<root>/volumes/<name>/_data`` plus a small record.

A volume's record (``volume.json``) holds docker's inspect fields and whether it is
anonymous.  Anonymous volumes (``-v /path``, an image's VOLUME) carry docker's label
``com.docker.volume.anonymous`` too, which ``volume prune`` (docker >= 23) goes by.

The only driver is docker's ``local``.  Of its options (``-o``), the bind form
``type=none,o=bind,device=/host/dir`` is supported: the volume is then that host
directory.  Mounting a file system (``type=tmpfs``, nfs...) is refused rather than
silently ignored.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from dataclasses import dataclass

from pbox import humanize
from pbox import jsonio as json
from pbox.errors import Conflict, UsageError, VolumeNotFound
from pbox.names import is_name
from pbox.storage.store import Store

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LOCAL_OPTIONS = ("type", "device", "o", "size")
FILTER_KEYS = ("name", "label", "dangling", "driver")
PRUNE_FILTER_KEYS = ("label", "all")


@dataclass
class Volume:
    name: str
    path: str
    device: str = ""  # a bind volume's host directory

    @property
    def data_dir(self) -> str:
        return self.device or os.path.join(self.path, "_data")


def _record_path(vol: Volume) -> str:
    return os.path.join(vol.path, "volume.json")


def check_name(name: str) -> None:
    """docker's rule for local volume names."""
    if len(name) < 2 and name.isalnum():
        raise UsageError(f"volume name is too short, names should be at least two "
                         f"alphanumeric characters: {name!r}")
    if not is_name(name, 2):
        raise UsageError(f"{name!r} includes invalid characters for a local volume name, "
                         f"only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; a host directory "
                         f"must be given as an absolute path")


def bind_device(options: dict) -> str:
    """The host directory of a bind volume ("" for a plain one); UsageError for options
    the local driver has that pbox cannot apply."""
    for key in options:
        if key not in LOCAL_OPTIONS:
            raise UsageError(f"invalid option: {key!r} (the local driver takes type, "
                             f"device, o)")
    if not options:
        return ""
    kind = options.get("type", "")
    flags = [f for f in options.get("o", "").split(",") if f]
    device = options.get("device", "")
    if kind in ("", "none") and ("bind" in flags or "rbind" in flags) and device:
        if not os.path.isabs(device):
            raise UsageError(f"the device of a bind volume must be an absolute path: {device}")
        if not os.path.isdir(device):
            raise UsageError(f"the device of a bind volume does not exist: {device}")
        return os.path.normpath(device)
    raise UsageError(
        "volume options other than a bind (type=none, o=bind, device=/host/dir) are not "
        f"supported: {', '.join(f'{k}={v}' for k, v in sorted(options.items()))}"
    )


def _load(store: Store, name: str) -> tuple[Volume, dict] | None:
    if "/" in name or name in ("", ".", ".."):
        return None
    vol = Volume(name, os.path.join(store.volumes_dir, name))
    try:
        with open(_record_path(vol)) as f:
            rec = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        rec = {}
    vol.device = rec.get("Device", "")
    return vol, rec


def ensure(store: Store, name: str, labels: dict | None = None,
           options: dict | None = None, *, anonymous: bool | None = None) -> Volume:
    """The volume called ``name``, created when missing ("" = a new anonymous one)."""
    if not name:
        name = secrets.token_hex(32)
        anonymous = True if anonymous is None else anonymous
    else:
        found = _load(store, name)
        if found is not None:
            return found[0]
        check_name(name)
    if anonymous:
        labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
    options = dict(options or {})
    device = bind_device(options)
    store.ensure()
    os.makedirs(store.volumes_dir, exist_ok=True)
    vol = Volume(name, os.path.join(store.volumes_dir, name), device)
    try:
        os.mkdir(vol.path, 0o700)
    except FileExistsError:
        pass
    if not device:
        os.makedirs(vol.data_dir, mode=0o755, exist_ok=True)
    rec = {
        "Name": name, "Driver": "local", "Mountpoint": vol.data_dir,
        "CreatedAt": humanize.rfc3339(time.time(), nanos=False),
        "Labels": labels or {}, "Options": options, "Scope": "local",
        "Anonymous": bool(anonymous),
    }
    if device:
        rec["Device"] = device
    # The record is written last and atomically: a volume without one does not exist.
    store.write_json(_record_path(vol), rec)
    return vol


def get(store: Store, name: str) -> Volume:
    found = _load(store, name)
    if found is None:
        raise VolumeNotFound(f"No such volume: {name}")
    return found[0]


def info(store: Store, name: str) -> dict:
    found = _load(store, name)
    if found is None:
        raise VolumeNotFound(f"No such volume: {name}")
    return found[1]


def inspect(store: Store, name: str) -> dict:
    """docker's ``volume inspect`` object."""
    rec = info(store, name)
    return {
        "CreatedAt": rec.get("CreatedAt", ""),
        "Driver": rec.get("Driver", "local"),
        "Labels": rec.get("Labels") or {},
        "Mountpoint": rec.get("Mountpoint") or get(store, name).data_dir,
        "Name": name,
        "Options": rec.get("Options") or {},
        "Scope": rec.get("Scope", "local"),
    }


def names(store: Store) -> list[str]:
    try:
        return sorted(n for n in os.listdir(store.volumes_dir)
                      if os.path.exists(os.path.join(store.volumes_dir, n, "volume.json")))
    except FileNotFoundError:
        return []


def users(store: Store) -> dict[str, list[str]]:
    """volume name -> ids of the containers that mount it."""
    out: dict[str, list[str]] = {}
    try:
        cids = os.listdir(store.containers_dir)
    except FileNotFoundError:
        return out
    for cid in sorted(cids):
        cfg = store.read_json(os.path.join(store.containers_dir, cid, "config.json"))
        for m in (cfg or {}).get("Mounts", []):
            if m.get("Type") == "volume":
                out.setdefault(m["Name"], []).append(cid)
    return out


def create(store: Store, name: str, labels: dict | None = None,
           options: dict | None = None) -> Volume:
    """``volume create``: an existing volume of that name is fine (docker), unless it was
    made with other options.  Without a name it gets a random one, and is still not
    anonymous: only volumes made for a container are (docker's rule for prune)."""
    if name:
        check_name(name)
        found = _load(store, name)
        if found is not None:
            old_opts = found[1].get("Options") or {}
            if options and dict(options) != old_opts:
                raise Conflict(f"volume {name} already exists with different options")
            return found[0]
    return ensure(store, name, labels, options, anonymous=False)


def remove(store: Store, name: str, *, force: bool = False) -> None:
    """Remove a volume (its record and data; a bind volume's host directory is kept).

    In use by a container: Conflict naming the containers, unless ``force``.
    """
    from pbox.storage.fsutil import remove_tree

    # Exclusive: `create` holds the lock shared from making a volume to writing the
    # record that uses it, so a concurrent prune cannot take a volume in between.
    with store.gc_lock.exclusive():
        vol = get(store, name)
        used = users(store).get(name)
        if used and not force:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(used)}]",
                           exit_code=1)
        entry = store.temp("rmvol")
        os.rename(vol.path, entry.path)
        entry.discard()
        if os.path.lexists(vol.path):
            remove_tree(vol.path)


# -- listing and pruning ------------------------------------------------------------------


def parse_filters(items: list[str] | tuple[str, ...],
                  allowed: tuple[str, ...] = FILTER_KEYS) -> dict[str, list[str]]:
    """``--filter key=value`` items -> {key: [values]}; UsageError for unknown keys."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise UsageError(f"bad format of filter (expected name=value): {item!r}")
        if key not in allowed:
            raise UsageError(f"invalid filter '{key}'")
        if key in ("dangling", "all") and value.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter '{key}={value}'")
        out.setdefault(key, []).append(value)
    return out


def _label_matches(labels: dict, want: str) -> bool:
    key, sep, value = want.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def _name_matches(name: str, pattern: str) -> bool:
    import re  # (docker's name filter is a regular expression)

    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def matches(rec: dict, in_use: bool, filters: dict[str, list[str]]) -> bool:
    """docker's volume filters: values of one key are ORed (labels: ANDed), keys ANDed."""
    name = rec.get("Name", "")
    if "name" in filters and not any(_name_matches(name, p) for p in filters["name"]):
        return False
    if "driver" in filters and rec.get("Driver", "local") not in filters["driver"]:
        return False
    labels = rec.get("Labels") or {}
    if "label" in filters and not all(_label_matches(labels, w) for w in filters["label"]):
        return False
    if "dangling" in filters:
        want = {v.lower() in ("true", "1") for v in filters["dangling"]}
        if (not in_use) not in want:
            return False
    return True


def list_volumes(store: Store, filters: dict[str, list[str]] | None = None) -> list[dict]:
    """Rows for ``volume ls``: Name, Driver, Scope, Mountpoint, Labels, Links, Size."""
    filters = filters or {}
    used = users(store)
    rows = []
    for name in names(store):
        found = _load(store, name)
        if found is None:
            continue
        vol, rec = found
        rec = {**rec, "Name": name}
        if not matches(rec, bool(used.get(name)), filters):
            continue
        labels = rec.get("Labels") or {}
        rows.append({
            "Name": name,
            "Driver": rec.get("Driver", "local"),
            "Scope": rec.get("Scope", "local"),
            "Mountpoint": vol.data_dir,
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "Links": str(len(used.get(name, []))),
            "Size": "N/A",
        })
    return rows


def tree_size(path: str) -> int:
    """Bytes of the regular files under ``path`` (hard links once), never following links."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1:
                        if key in seen:
                            continue
                        seen.add(key)
                    total += st.st_size
    return total


@dataclass
class PruneResult:
    deleted: list
    reclaimed: int


def prune(store: Store, *, all_volumes: bool = False,
          filters: dict[str, list[str]] | None = None) -> PruneResult:
    """Remove unused volumes: anonymous ones (docker >= 23), or every one with ``all_volumes``.

    ``filters`` takes ``label`` (and ``all=true``, docker's spelling of ``-a`` there).
    """
    filters = dict(filters or {})
    if any(v.lower() in ("true", "1") for v in filters.pop("all", [])):
        all_volumes = True
    used = users(store)
    deleted, reclaimed = [], 0
    for name in names(store):
        if used.get(name):
            continue
        found = _load(store, name)
        if found is None:
            continue
        vol, rec = found
        labels = rec.get("Labels") or {}
        anonymous = rec.get("Anonymous") or ANONYMOUS_LABEL in labels
        if not all_volumes and not anonymous:
            continue
        if not matches({**rec, "Name": name}, False, filters):
            continue
        size = 0 if vol.device else tree_size(vol.data_dir)
        try:
            remove(store, name)
        except (Conflict, VolumeNotFound):
            continue  # taken into use or removed meanwhile
        deleted.append(name)
        reclaimed += size
    return PruneResult(deleted, reclaimed)
