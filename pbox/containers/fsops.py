"""A container's files: `diff`, `commit` and `export`, as docker has them.

The merged tree of the image's layers and the container's changes to it come from
:mod:`pbox.storage.layerview`; ``cp`` is :mod:`pbox.containers.cp` (re-exported here).

``diff``, ``commit`` and ``export`` read the store directly, whether the container
runs or not.  docker pauses a running container while it commits it; pbox does not
(it has no cgroup freezer to do it with), so a container that keeps writing may
leave a half-written file in the new layer.

commit
------
The upper directory becomes a layer tar (:func:`pbox.storage.layertar.write_layer_tar`),
which is extracted into a new layer directory exactly like a pulled layer; the empty
mount points the runtime made (:data:`pbox.storage.layerview.INIT_PATHS`) are then
removed from it, and the diff id is the digest of the layer tar written back from
that directory (so pushing it later gives the same bytes).  The layer is stored once under its chain id: committing the same changes
on the same image twice shares it.  The image config is the parent image's config
with docker's ``config`` = the container's Config (Env, Cmd, Entrypoint, WorkingDir,
User, Labels, ...) after the ``--change`` instructions, ``rootfs.diff_ids`` extended
and one history entry.  A commit without changes adds an ``empty_layer`` entry and no
layer, as docker does.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass

from pbox.config import Config
from pbox.containers.cp import copy
from pbox.errors import PboxError, StoreError, UsageError
from pbox.storage import layertar
from pbox.storage.layerview import (
    INIT_PATHS,
    LayerView,
    _is_empty_dir,
    _is_opaque_dir,
    _meta_differs,
    _path,
    _tree_changes,
    _upper_changes,
)
from pbox.storage.treetar import TarWriter, write_tree

VFS_DONE_SUFFIX = ".vfs-complete"  # pbox.rootless.mounts: the copy driver's marker
EMPTY_TAR_SIZE = 1024  # a tar without entries: its two end blocks


@dataclass
class ContainerFS:
    cid: str
    cfg: dict
    upper: str
    lowers: list  # top first
    vfs_dir: str | None  # the copy driver's tree, when the container ran with it


def _container_fs(cs, cid: str) -> ContainerFS:
    cfg = cs.config(cid)
    rootfs = (cfg.get("Spec") or {}).get("rootfs") or {}
    upper = rootfs.get("upperdir") or cs.path(cid, "upper")
    lowers = list(rootfs.get("lowerdirs") or [])
    merged = rootfs.get("path") or os.path.join(os.path.dirname(upper), "merged")
    vfs = merged if os.path.exists(merged.rstrip("/") + VFS_DONE_SUFFIX) else None
    for d in lowers:
        if not os.path.isdir(d):
            raise StoreError(f"layer directory {d} of container {cid[:12]} is missing")
    return ContainerFS(cid, cfg, upper, lowers, vfs)


def _open(config: Config, name: str, notice=None):
    from pbox.containers.records import ContainerStore
    from pbox.images import enter_userns, open_store

    keep_owners = enter_userns(config, notice)
    store = open_store(config)
    cs = ContainerStore(store)
    return store, cs, cs.find(name), keep_owners


# -- diff -------------------------------------------------------------------------------------


def _changes_of(fs: ContainerFS) -> list:
    lower = LayerView(fs.lowers)
    if fs.vfs_dir:
        return _tree_changes(fs.vfs_dir, lower)
    if not os.path.isdir(fs.upper):
        return []
    return _upper_changes(fs.upper, lower)


def changes(config: Config, name: str, notice=None) -> list[tuple[str, str]]:
    """docker's `diff`: [(kind, path)] with kind A (added), C (changed), D (deleted)."""
    _store, cs, cid, _ = _open(config, name, notice)
    fs = _container_fs(cs, cid)
    return [(kind, _path(parts)) for kind, parts in _changes_of(fs)]


# -- export -------------------------------------------------------------------------------------


def export(config: Config, name: str, out, notice=None) -> None:
    """docker's `export`: the container's whole tree as one tar (whiteouts applied)."""
    _store, cs, cid, keep_owners = _open(config, name, notice)
    fs = _container_fs(cs, cid)
    # without a subordinate id range every file is the user's: root's in the container
    tw = TarWriter(out, xattrs=True, owner=None if keep_owners else (0, 0))
    try:
        if fs.vfs_dir:
            write_tree(tw, fs.vfs_dir, b"", include_root=False)
        else:
            view = LayerView([fs.upper] + fs.lowers if os.path.isdir(fs.upper) else fs.lowers)
            for parts, node in view.walk():
                tw.add(os.fsencode("/".join(parts)), node.path, node.st)
        tw.close()
    except OSError as e:
        raise PboxError(f"cannot export {name}: {e.strerror or e}"
                        + (f": {e.filename}" if e.filename else ""))
    if hasattr(out, "flush"):
        out.flush()


# -- commit: docker's --change ----------------------------------------------------------------


COMMIT_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL",
                  "USER", "VOLUME", "WORKDIR")


def _expand(text: str, env: dict) -> list[str]:
    """Dockerfile words: quotes removed, ``$VAR``/``${VAR}``/``${VAR:-x}``/``${VAR:+x}``
    replaced (not inside single quotes), backslash escapes."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    i, n = 0, len(text)

    def var(i: int):
        if i + 1 < n and text[i + 1] == "{":
            end = text.find("}", i + 2)
            if end < 0:
                raise UsageError(f"missing '}}' in {text!r}")
            body = text[i + 2:end]
            for op in (":-", ":+"):
                if op in body:
                    key, _, alt = body.partition(op)
                    val = env.get(key, "")
                    if op == ":-":
                        return (val if val else alt), end + 1
                    return (alt if val else ""), end + 1
            return env.get(body, ""), end + 1
        j = i + 1
        while j < n and (text[j].isalnum() or text[j] == "_"):
            j += 1
        if j == i + 1:
            return "$", j
        return env.get(text[i + 1:j], ""), j

    while i < n:
        c = text[i]
        if c.isspace():
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
            i += 1
            continue
        in_word = True
        if c == "\\" and i + 1 < n:
            cur.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise UsageError(f"unterminated quote in {text!r}")
            cur.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\$':
                    cur.append(text[i + 1])
                    i += 2
                elif text[i] == "$":
                    val, i = var(i)
                    cur.append(val)
                else:
                    cur.append(text[i])
                    i += 1
            if i >= n:
                raise UsageError(f"unterminated quote in {text!r}")
            i += 1
        elif c == "$":
            val, i = var(i)
            cur.append(val)
        else:
            cur.append(c)
            i += 1
    if in_word:
        words.append("".join(cur))
    return words


def _json_list(rest: str):
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _pairs(instr: str, rest: str, env: dict) -> list[tuple[str, str]]:
    """ENV/LABEL arguments: ``k=v k2="v 2"``, or the old ``k value with spaces``."""
    words = _expand(rest, env)
    if not words:
        raise UsageError(f"{instr} needs at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise UsageError(f"{instr} names a key without a value: {rest.strip()!r}")
        vals = _expand(value, env)
        return [(_expand(key, env)[0], " ".join(vals))]
    out = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise UsageError(f"{instr}: {w!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def apply_changes(container_config: dict, changes: list[str]) -> dict:
    """docker commit's ``--change`` Dockerfile instructions applied to a config copy."""
    from pbox.containers import options as opt

    cfg = json.loads(json.dumps(container_config))
    cmd_set = False
    lines = [ln.strip() for c in changes for ln in c.splitlines() if ln.strip()]
    for line in lines:
        instr, _, rest = line.partition(" ")
        if not rest and "\t" in instr:
            instr, _, rest = instr.partition("\t")
        instr, rest = instr.upper(), rest.strip()
        if instr not in COMMIT_CHANGES:
            raise UsageError(f"{instr} is not a valid change command (use one of "
                             f"{', '.join(COMMIT_CHANGES)})")
        env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [])
        if instr in ("CMD", "ENTRYPOINT"):
            value = _json_list(rest)
            if value is None:
                shell = cfg.get("Shell") or ["/bin/sh", "-c"]
                value = list(shell) + [rest] if rest else []
            if instr == "CMD":
                cfg["Cmd"] = value or None
                cmd_set = True
            else:
                cfg["Entrypoint"] = value or None
                if not cmd_set:
                    cfg["Cmd"] = None  # docker: a new ENTRYPOINT drops an inherited CMD
        elif instr == "ENV":
            current = list(cfg.get("Env") or [])
            for key, value in _pairs(instr, rest, env):
                current = [e for e in current if e.partition("=")[0] != key]
                current.append(f"{key}={value}")
                env[key] = value
            cfg["Env"] = current
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(instr, rest, env))
            cfg["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            words = _expand(rest, env)
            if not words:
                raise UsageError("EXPOSE needs at least one port")
            for w in words:
                ports.update({p: {} for p in _expose(w)})
            cfg["ExposedPorts"] = ports
        elif instr == "VOLUME":
            paths = _json_list(rest)
            if paths is None:
                paths = _expand(rest, env)
            if not paths or any(not p.strip() for p in paths):
                raise UsageError("VOLUME needs a non-empty path")
            vols = dict(cfg.get("Volumes") or {})
            vols.update({p: {} for p in paths})
            cfg["Volumes"] = vols
        elif instr == "WORKDIR":
            words = _expand(rest, env)
            if len(words) != 1:
                raise UsageError("WORKDIR takes exactly one path")
            path = words[0]
            if not path.startswith("/"):
                path = os.path.join(cfg.get("WorkingDir") or "/", path)
            cfg["WorkingDir"] = os.path.normpath(path)
        elif instr == "USER":
            words = _expand(rest, env)
            if len(words) != 1:
                raise UsageError("USER takes exactly one user[:group]")
            cfg["User"] = words[0]
        elif instr == "STOPSIGNAL":
            words = _expand(rest, env)
            if len(words) != 1:
                raise UsageError("STOPSIGNAL takes exactly one signal")
            opt.parse_signal(words[0])
            cfg["StopSignal"] = words[0]
        elif instr == "ONBUILD":
            if not rest:
                raise UsageError("ONBUILD needs an instruction")
            trigger, _, args = rest.partition(" ")
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [
                f"{trigger.upper()} {args}".strip()]
    return cfg


def _expose(word: str) -> list[str]:
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"invalid protocol in EXPOSE {word!r}")
    lo, sep, hi = port.partition("-")
    try:
        first, last = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise UsageError(f"invalid port in EXPOSE {word!r}")
    if not (0 < first <= last <= 65535):
        raise UsageError(f"invalid port in EXPOSE {word!r}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


# -- commit -----------------------------------------------------------------------------------


class _Digester:
    def __init__(self):
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.h.update(data)
        self.size += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _parent_config(store, cfg: dict) -> dict:
    image_id = cfg.get("Image") or ""
    try:
        return json.loads(store.read_blob(image_id))
    except (StoreError, ValueError):
        raise PboxError(f"the image of container {cfg.get('Name', '').lstrip('/')} "
                        f"({image_id[7:19]}) is no longer in the store: cannot commit it")


def _write_changes_tar(out, top: str, changes_list: list) -> None:
    """A layer tar holding ``changes_list`` ((kind, parts) of a complete tree at ``top``)."""
    tw = TarWriter(out, xattrs=True)
    for kind, parts in changes_list:
        name = os.fsencode("/".join(parts))
        if kind == "D":
            head, _, base = name.rpartition(b"/")
            wh = (head + b"/" if head else b"") + b".wh." + base
            tw._write(layertar.encode_header(wh, layertar.REGTYPE, mode=0o600))
            continue
        path = os.path.join(top, *parts)
        tw.add(name, path, os.lstat(path))
    tw.close()


def _prune_stubs(layer_dir: str, lower: LayerView, extra=()) -> None:
    """Remove the runtime's empty mount points from a new layer, then the directories
    they alone brought in (empty, not opaque, same mode and owner as below).  The
    parents keep their times: the layer's bytes must not depend on when it was made."""
    parents = set()
    times = {}

    def remove(full: str, is_dir: bool) -> None:
        parent = os.path.dirname(full)
        if parent not in times:
            st = os.lstat(parent)
            times[parent] = (st.st_atime_ns, st.st_mtime_ns)
        (os.rmdir if is_dir else os.unlink)(full)

    for p in sorted(INIT_PATHS | set(extra), key=lambda x: -x.count("/")):
        parts = tuple(p.strip("/").split("/"))
        if lower.lookup(parts) is not None:
            continue
        full = _plain_path(layer_dir, parts)
        if full is None:
            continue
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            remove(full, False)
        elif stat.S_ISDIR(st.st_mode) and _is_empty_dir(full) and not _is_opaque_dir(full):
            remove(full, True)
        else:
            continue
        for i in range(len(parts) - 1, 0, -1):
            parents.add(parts[:i])
    for parts in sorted(parents, key=len, reverse=True):
        full = _plain_path(layer_dir, parts)
        below = lower.lookup(parts)
        if full is None or below is None or not below.is_dir:
            continue
        st = os.lstat(full)
        if (stat.S_ISDIR(st.st_mode) and _is_empty_dir(full) and not _is_opaque_dir(full)
                and not _meta_differs(st, below.st)):
            times.pop(full, None)
            remove(full, True)
    for path, ns in times.items():
        if os.path.isdir(path):
            os.utime(path, ns=ns, follow_symlinks=False)


def _plain_path(top: str, parts) -> str | None:
    """``top/parts`` when every parent on the way is a real directory (no symlink)."""
    cur = top
    for p in parts[:-1]:
        cur = os.path.join(cur, p)
        try:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                return None
        except FileNotFoundError:
            return None
    return os.path.join(cur, parts[-1])


def commit(config: Config, name: str, repository: str | None = None, *, author: str = "",
           message: str = "", change: list[str] | tuple = (), notice=None) -> str:
    """docker's `commit`: a new image from the container's changes; returns its id."""
    from pbox import humanize
    from pbox.images import chain_ids
    from pbox.oci import reference as refs
    from pbox.storage.images import ImageStore

    ref = None
    if repository:
        ref = refs.parse(repository)
        if ref.digest:
            raise UsageError(f"{repository}: the name of a commit cannot contain a digest")
    store, cs, cid, keep_owners = _open(config, name, notice)
    istore = ImageStore(store)
    fs = _container_fs(cs, cid)
    cfg = fs.cfg
    new_config = apply_changes(cfg.get("Config") or {}, list(change))
    parent = _parent_config(store, cfg)
    parent_diff_ids = list((parent.get("rootfs") or {}).get("diff_ids") or [])
    parent_layers = list(cfg.get("Layers") or [])
    if chain_ids(parent_diff_ids) != parent_layers:
        raise StoreError(f"container {cid[:12]}: its layers do not match its image's config")
    now = humanize.rfc3339(time.time())

    def write_tar(f):
        if fs.vfs_dir:
            _write_changes_tar(f, fs.vfs_dir, _tree_changes(fs.vfs_dir, LayerView(fs.lowers)))
        elif os.path.isdir(fs.upper):
            layertar.write_layer_tar(fs.upper, f)
        else:
            f.write(bytes(EMPTY_TAR_SIZE))

    with store.gc_lock.shared():
        diff_ids, layers, empty = add_layer(store, parent_diff_ids, parent_layers, write_tar,
                                            fs.lowers, keep_owners, notice=notice)
        image = {k: v for k, v in parent.items() if k not in ("container_config", "config",
                                                               "container", "author")}
        image["created"] = now
        image["config"] = new_config
        image["container"] = cid
        if author:
            image["author"] = author
        entry = {"created": now,
                 "created_by": " ".join((cfg.get("Config") or {}).get("Cmd") or [])}
        if author:
            entry["author"] = author
        if message:
            entry["comment"] = message
        if empty:
            entry["empty_layer"] = True
        image["history"] = list(parent.get("history") or []) + [entry]
        image_id = store_image(store, image, layers, diff_ids, now)
        if ref is not None:
            istore.set_tag(ref.string(), image_id)
    return image_id


def add_layer(store, parent_diff_ids: list, parent_layers: list, write_tar, lowers: list,
              keep_owners: bool, *, mtime_clamp: int | None = None, notice=None,
              stubs=()):
    """Store the layer tar ``write_tar(f)`` writes on top of ``parent_layers``.

    The tar is extracted into a new layer directory exactly like a pulled layer, the
    runtime's mount stubs are pruned, and the diff id is the digest of the tar written
    back from that directory (``mtime_clamp``: SOURCE_DATE_EPOCH).  Returns
    ``(diff_ids, layers, empty)``; an empty change adds no layer.  The caller holds
    the store's gc lock (shared).  ``stubs``: more mount points to prune (a build step's
    ``RUN --mount`` targets and the parents made for them)."""
    from pbox.images import chain_ids
    from pbox.storage.extract import extract_layer

    store.clean_temp()
    tar_entry = store.temp("commit")
    layer = store.new_layer()
    try:
        with open(tar_entry.path, "wb") as f:
            write_tar(f)
        diff_dir = os.path.join(layer.path, "diff")
        with open(tar_entry.path, "rb") as f:
            stats = extract_layer(f, diff_dir, keep_owners=keep_owners, notice=notice)
        tar_entry.discard()
        _prune_stubs(diff_dir, LayerView(lowers), stubs)
        sink = _Digester()
        # as a push writes it (without a subordinate id range: everything is root's)
        layertar.write_layer_tar(diff_dir, sink, mtime_clamp=mtime_clamp,
                                 owners="keep" if keep_owners else (0, 0))
        empty = sink.size <= EMPTY_TAR_SIZE
        diff_ids = parent_diff_ids if empty else parent_diff_ids + [sink.digest]
        layers = parent_layers
        if empty:
            layer.discard()
        else:
            chain = chain_ids(diff_ids)[-1]
            layers = parent_layers + [chain]
            if store.has_layer(chain):
                layer.discard()  # the same changes were stored before: share them
            else:
                info = {"chain_id": chain, "diff_id": sink.digest,
                        "parent": parent_layers[-1] if parent_layers else "",
                        "size": stats.bytes_written}
                store.commit_layer(layer, chain, info)
    except BaseException:
        tar_entry.discard()
        layer.discard()
        raise
    return list(diff_ids), list(layers), empty


def store_image(store, image: dict, layers: list, diff_ids: list, created: str) -> str:
    """Store the image config ``image`` (its rootfs set from ``diff_ids``) and its record;
    returns the image id.  The caller holds the store's gc lock (shared)."""
    from pbox.storage.images import ImageRecord, ImageStore

    image = dict(image)
    image["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    raw = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
    image_id = store.put_blob(raw)
    size = sum(store.layer_info(c).get("size", 0) for c in layers)
    ImageStore(store).put(ImageRecord(id=image_id, layers=list(layers), diff_ids=list(diff_ids),
                                      created=created, size=size, added=time.time()))
    return image_id


__all__ = ["add_layer", "apply_changes", "changes", "commit", "copy", "export", "store_image"]
