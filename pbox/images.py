"""Image use cases: the store and its namespace, resolve, tag, remove, prune (the pull
is ``pbox.pull``).

Glue between the registry client (``pbox.oci``), the store (``pbox.storage``) and
the user namespace (``pbox.rootless.userns``).  Nothing here prints: progress goes
to a ``report(event, **info)`` callback that the CLI renders.
"""

from __future__ import annotations

import os

from pbox.config import Config
from pbox.errors import Conflict, ImageNotFound, InvalidReference, PboxError
from pbox.oci import reference as refs
from pbox.record import factory, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbox.storage.images import ImageRecord, ImageStore
    from pbox.storage.store import Store


# The store's modules are imported where a store is opened: a pull imports them while
# its first request is on the way (``pull``), not before sending it.

def open_store(config: Config, *, create: bool = True) -> Store:
    from pbox.storage.store import Store

    return Store.open(config.root, config.runroot, create=create)


def image_store(store: Store) -> ImageStore:
    from pbox.storage.images import ImageStore

    return ImageStore(store)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids: chain(L0) = diff(L0); chain(Ln) = sha256(chain(Ln-1) + ' ' + diff(Ln))."""
    from pbox.oci.digest import compute

    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else compute(f"{out[-1]} {d}".encode()))
    return out


def enter_userns(config: Config, notice=None) -> bool:
    """Join the user's namespace (see ``pbox.rootless.pause``) when the store keeps
    real file owners; must run before any thread starts.  Returns whether file owners
    are kept (real root, or a namespace with a subordinate id range)."""
    from pbox.rootless import pause

    if os.getuid() != 0 and pause.join_existing(config.runroot):
        return True  # the usual case: the pause process (with a subordinate range) runs
    from pbox.rootless import idmap, userns

    mapping = userns.current_mapping()
    if mapping.mode == idmap.MODE_HOST:
        return True
    if mapping.mode == idmap.MODE_SUBUID:
        pause.enter(config.runroot, mapping, notice=notice)
        return True
    if notice is not None:
        userns.notify_squash(notice, mapping.uid)
    return False


# -- resolving local images -------------------------------------------------------------


@record
class Resolved:
    image_id: str
    record: ImageRecord
    ref: refs.Reference | None = None  # the name the user gave, when it was a name


def resolve(istore: ImageStore, text: str) -> Resolved:
    """Find a local image by name[:tag], name@digest, full or short id."""
    repos = None
    ref = None
    if text.startswith("sha256:"):
        image_id = istore.find_id(text)
        if image_id:
            return Resolved(image_id, istore.get(image_id))
        raise ImageNotFound(f"No such image: {text}")
    try:
        ref = refs.parse(text)
    except InvalidReference:
        ref = None
    if ref is not None:
        repos = istore.repositories()
        found = _lookup(istore, repos, ref)
        if found is not None:
            return found
    image_id = istore.find_id(text)
    if image_id:
        return Resolved(image_id, istore.get(image_id))
    if ref is None:
        raise InvalidReference(f"invalid reference format: {text!r}")
    found = _resolve_short_name(istore, text, repos)
    if found is not None:
        return found
    raise ImageNotFound(f"No such image: {text}")


def _resolve_short_name(istore: ImageStore, text: str, repos) -> Resolved | None:
    """A short name that registries.conf resolved elsewhere at pull (alias, search)."""
    path = registries_conf_path(Config())
    if not os.path.exists(path):
        return None
    from pbox import registries

    if not registries.is_short_name(text):
        return None
    conf = registries.load(os.path.dirname(path))
    for ref in registries.candidates(conf, text):
        found = _lookup(istore, repos, ref)
        if found is not None:
            return found
    return None


def _lookup(istore: ImageStore, repos, ref) -> Resolved | None:
    """The stored image that ``ref``'s tag or digest names, if any."""
    if ref.digest:
        image_id = repos["digests"].get(ref.with_digest(ref.digest).string())
    else:
        image_id = repos["tags"].get(ref.string())
    if image_id and istore.exists(image_id):
        return Resolved(image_id, istore.get(image_id), ref)
    return None


def familiar_names(names: list[str]) -> list[str]:
    from pbox.imageinfo import familiar_names

    return familiar_names(names)


def registries_conf_path(config: Config) -> str:
    return config.registries_conf


# -- listing, tagging, removing ------------------------------------------------------------


def tag(config: Config, source: str, target: str) -> None:
    store = open_store(config)
    istore = image_store(store)
    res = resolve(istore, source)
    ref = refs.parse(target)
    if ref.digest:
        raise InvalidReference(f"{target}: a tag cannot contain a digest")
    istore.set_tag(ref.string(), res.image_id)


@record
class RemoveResult:
    untagged: list = factory(list)
    deleted: list = factory(list)
    reclaimed: int = 0


def users_of_images(store: Store) -> dict[str, list[str]]:
    """image id -> container ids using it (read from the containers' records)."""
    out: dict[str, list[str]] = {}
    try:
        names = os.listdir(store.containers_dir)
    except FileNotFoundError:
        return out
    for cid in names:
        cfg = store.read_json(os.path.join(store.containers_dir, cid, "config.json"))
        if cfg and cfg.get("Image"):
            out.setdefault(cfg["Image"], []).append(cid)
    return out


def remove_images(config: Config, names: list[str], *, force: bool = False) -> RemoveResult:
    """``rmi``: untag; delete an image when no name is left; then its unused layers."""
    enter_userns(config)
    store = open_store(config)
    istore = image_store(store)
    result = RemoveResult()
    errors: list[PboxError] = []
    with store.gc_lock.exclusive():
        used = users_of_images(store)
        for text in names:
            try:
                _remove_one(istore, text, force, used, result)
            except PboxError as e:
                errors.append(e)
        result.reclaimed = _gc_layers(store, istore)
        store.clean_temp(grace=0)
    if errors:
        # one "Error: " line per name that failed, as docker; what was removed
        # before travels along for the CLI to print
        err = errors[0] if len(errors) == 1 else \
            PboxError("\nError: ".join(str(e) for e in errors))
        err.partial = result
        raise err
    return result


def _remove_one(istore: ImageStore, text: str, force: bool, used: dict, result: RemoveResult):
    res = resolve(istore, text)
    tags, digests = istore.names_of(res.image_id)
    if res.ref is not None and not res.ref.digest and len(tags) > 1:
        # `rmi name:tag` of an image with other tags only removes that name.
        istore.remove_names([res.ref.string()])
        result.untagged.append(res.ref.familiar())
        return
    if used.get(res.image_id) and not force:
        cid = used[res.image_id][0][:12]
        raise Conflict(
            f"unable to remove image {text!r}: image is in use by container {cid} "
            f"(use -f to force)"
        )
    by_id = res.ref is None
    if by_id and len(tags) > 1 and not force:
        raise Conflict(
            f"unable to delete {res.image_id[7:19]} (must be forced) - image is referenced "
            f"in multiple repositories"
        )
    istore.remove_names(tags + digests)
    result.untagged.extend(familiar_names(tags + digests))
    istore.remove(res.image_id)
    result.deleted.append(res.image_id)


def _gc_layers(store: Store, istore: ImageStore) -> int:
    """Delete layers and blobs no image or container uses (caller holds the gc lock
    exclusively, so no writer is between storing a blob and recording its image);
    bytes freed."""
    keep: set[str] = set()
    blobs: set[str] = set()
    for rec in istore.list():
        keep.update(rec.layers)
        blobs.update(d for d in (rec.id, rec.manifest_digest) if d)
    for extra in _container_layer_refs(store):
        keep.add(extra)
    blobs.update(users_of_images(store))
    freed = 0
    try:
        names = os.listdir(store.blobs_dir)
    except FileNotFoundError:
        names = []
    for name in names:
        if len(name) == 64 and "sha256:" + name not in blobs:
            path = os.path.join(store.blobs_dir, name)
            try:
                freed += os.lstat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                pass
    for chain in store.list_layers():
        if chain not in keep:
            try:
                freed += store.layer_info(chain).get("size", 0)
            except PboxError:
                pass
            store.remove_layer(chain)
    return freed


def _container_layer_refs(store: Store) -> set[str]:
    """Layers pinned by containers whose image record may be gone (rmi -f)."""
    out: set[str] = set()
    try:
        names = os.listdir(store.containers_dir)
    except FileNotFoundError:
        return out
    for cid in names:
        cfg = store.read_json(os.path.join(store.containers_dir, cid, "config.json"))
        if cfg:
            out.update(cfg.get("Layers", []))
    return out


def prune_images(config: Config, *, all_images: bool = False) -> RemoveResult:
    """``image prune``: dangling images (no tag), or with -a every image no container uses."""
    enter_userns(config)
    store = open_store(config)
    istore = image_store(store)
    result = RemoveResult()
    with store.gc_lock.exclusive():
        repos = istore.repositories()
        used = users_of_images(store)
        for rec in istore.list():
            tags, digests = istore.names_of(rec.id, repos)
            if rec.id in used:
                continue
            if tags and not all_images:
                continue
            istore.remove_names(tags + digests)
            result.untagged.extend(familiar_names(tags + digests))
            istore.remove(rec.id)
            result.deleted.append(rec.id)
        result.reclaimed = _gc_layers(store, istore)
        store.clean_temp(grace=0)
    return result


def reset_store(config: Config) -> None:
    """``system reset``: stop every container, delete the whole store and run-time
    state, and end the user's pause process of this run root."""
    import signal

    from pbox.rootless import pause
    from pbox.storage.fsutil import remove_tree

    enter_userns(config)
    try:
        store = open_store(config, create=False)
        if store.exists:
            _kill_all_containers(store)
            with store.gc_lock.exclusive():
                for name in sorted(os.listdir(store.root)):
                    if name not in ("lock",):
                        remove_tree(os.path.join(store.root, name))
            remove_tree(store.root)
    finally:
        if os.path.isdir(config.runroot):
            from pbox.networks import stop_holders

            stop_holders(config.runroot)
            pid = pause.pause_pid(config.runroot)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            # Only what pbox keeps there: --runroot may name a directory of the user's
            # own (--runroot ~, PBOX_RUNROOT=/tmp) that reset must not empty.
            ours = {"pause.pid", "pause.pid.tmp", "pause.lock", "networks", "notices"}
            entries = set(os.listdir(config.runroot))
            for name in entries & ours:
                remove_tree(os.path.join(config.runroot, name))
            if entries <= ours:
                remove_tree(config.runroot)


def _kill_all_containers(store: Store) -> None:
    """SIGKILL the owner (monitor or foreground pbox) and PID 1 of every container, and
    end its network helper (which nobody else would stop once the owner is gone)."""
    import signal
    import time

    from pbox.containers.records import ContainerStore, alive, end_orphaned_helper

    cs = ContainerStore(store)
    pids = []
    for cid in cs.ids():
        st = store.read_json(cs.path(cid, "state.json")) or {}
        end_orphaned_helper(st)
        for pid_key, start_key in (("MonitorPid", "MonitorStart"), ("Pid", "PidStart")):
            pid = st.get(pid_key)
            if pid and alive(pid, st.get(start_key)):
                try:
                    os.kill(pid, signal.SIGKILL)
                    pids.append((pid, st.get(start_key)))
                except ProcessLookupError:
                    pass
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [(p, s) for p, s in pids if alive(p, s)]
        time.sleep(0.02)
