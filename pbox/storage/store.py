"""The on-disk store: one object owns every path (charliecloud's ``Storage`` idea).

Layout under the root (default ``~/.local/share/pbox``)::

    version                 store format; init when missing, refuse when newer
    lock                    gc lock: shared while using content, exclusive to delete it
    meta.lock               exclusive around read-modify-write of records (tags)
    blobs/sha256/<hex>      manifests, configs (and layer blobs we made)
    layers/<chain hex>/     one extracted layer, shared by every image using it:
        diff/               its files, whiteouts in overlay form
        layer.json          diff id, parent chain id, size
        tar-split           a pulled layer's tar minus file contents (``tarsplit``)
    blob-diffs/<hex>        symlink to the hex of the diff id the layer blob <hex>
                            inflates to (blobs pulled or pushed; see ``diff_of_blob``)
    images/<id hex>.json    one image record (id = config digest)
    repositories.json       tags and repo digests -> image id
    containers/<id>/        config, state, upper/work dirs, hosts files, log
    volumes/<name>/_data    named volumes
    tmp/                    everything being written; see ``TempEntry``

Nothing appears under a real name half written: blobs, layers and records are
written under ``tmp/`` (or a temp name) and renamed into place.  A writer holds an
flock on ``tmp/<name>.lock`` for as long as its temp entry lives, so the next
start can tell abandoned entries (lock free: the writer died) from live ones.
"""

from __future__ import annotations

import errno
import os
import time

from pbox import jsonio as json
from pbox.errors import StoreError
from pbox.storage.fsutil import atomic_write, remove_tree, unlink_if_present
from pbox.storage.lock import FileLock, try_lock_path

STORE_VERSION = 1
LAYER_SPLIT = "tar-split"  # in a layer's directory, next to diff/ and layer.json


class TempEntry:
    """A file or directory under ``tmp/`` that belongs to this process until
    committed (renamed to its real name) or discarded."""

    def __init__(self, store: Store, kind: str):
        self.store = store
        name = f"{kind}-{os.urandom(8).hex()}"
        self.path = os.path.join(store.tmp_dir, name)
        self.lock_path = self.path + ".lock"
        # Create the lock file already locked, then give it its name, so a
        # cleaner never sees an unlocked lock file of a live writer.  The pending
        # file itself is unlocked for an instant: a cleaner that takes it then
        # deletes it (it cannot tell it from a dead writer's), so start again.
        import fcntl

        for _ in range(100):
            pending = os.path.join(store.tmp_dir, f".{name}.{os.urandom(4).hex()}.new")
            fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.rename(pending, self.lock_path)
            except FileNotFoundError:
                os.close(fd)
                continue
            break
        else:
            raise StoreError(f"cannot create a temp entry in {store.tmp_dir}")
        self._fd = fd

    def commit(self, target: str) -> bool:
        """Rename into place; False when ``target`` already exists (someone else won)."""
        try:
            os.rename(self.path, target)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                self.discard()
                return False
            raise
        self._release()
        return True

    def discard(self) -> None:
        if os.path.lexists(self.path):
            remove_tree(self.path)
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            unlink_if_present(self.lock_path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            self.discard()


def _sha256_hex(digest: str) -> str | None:
    """The hex of a well-formed ``sha256:`` digest (a file name in ``blob-diffs/``), or
    None for anything else."""
    from pbox.oci.digest import is_digest

    return digest[7:] if digest.startswith("sha256:") and is_digest(digest) else None


def _lock_if_dead(path: str) -> int | None:
    """Lock ``path`` if no one holds it and it is still the file of that name (a
    cleaner that deleted it may have let us lock the old file); fd or None."""
    fd = try_lock_path(path)
    if fd is None:
        return None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
        os.close(fd)
        return None
    return fd


class Store:
    def __init__(self, root: str, runroot: str | None = None):
        self.root = root
        self.runroot = runroot or os.path.join(root, "run")
        self.blobs_dir = os.path.join(root, "blobs", "sha256")
        self.layers_dir = os.path.join(root, "layers")
        self.blob_diffs_dir = os.path.join(root, "blob-diffs")
        self.images_dir = os.path.join(root, "images")
        self.containers_dir = os.path.join(root, "containers")
        self.volumes_dir = os.path.join(root, "volumes")
        self.tmp_dir = os.path.join(root, "tmp")
        self.repositories_path = os.path.join(root, "repositories.json")
        self.gc_lock = FileLock(os.path.join(root, "lock"))
        self.meta_lock = FileLock(os.path.join(root, "meta.lock"))

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, root: str, runroot: str | None = None, *, create: bool = True) -> Store:
        store = cls(root, runroot)
        store._check_version(create)
        return store

    @property
    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.root, "version"))

    def _check_version(self, create: bool) -> None:
        vpath = os.path.join(self.root, "version")
        try:
            with open(vpath) as f:
                text = f.read().strip()
        except FileNotFoundError:
            if create:
                self._init()
            return
        except OSError as e:
            raise StoreError(f"cannot read the store at {self.root}: {e.strerror}")
        try:
            version = int(text)
        except ValueError:
            raise StoreError(f"the store at {self.root} is damaged: bad version file")
        if version > STORE_VERSION:
            raise StoreError(
                f"the store at {self.root} has format {version}, newer than this pbox "
                f"understands ({STORE_VERSION}); upgrade pbox or use another --root"
            )

    def _init(self) -> None:
        try:
            for d in (self.root, self.blobs_dir, self.layers_dir, self.images_dir,
                      self.containers_dir, self.volumes_dir, self.tmp_dir):
                os.makedirs(d, mode=0o700 if d == self.root else 0o755, exist_ok=True)
            atomic_write(os.path.join(self.root, "version"), f"{STORE_VERSION}\n".encode())
        except OSError as e:
            raise StoreError(f"cannot create the store at {self.root}: {e.strerror}")

    def ensure(self) -> Store:
        """Create the store if it is not there yet (for writers)."""
        if not self.exists:
            self._init()
        return self

    # -- temp entries ----------------------------------------------------------------

    def temp(self, kind: str) -> TempEntry:
        self.ensure()
        return TempEntry(self, kind)

    def _clean_atomic_leftovers(self) -> None:
        """``atomic_write`` temp files (``.NAME.tmp-PID-RANDOM``) of dead writers."""
        for d in (self.blobs_dir, self.images_dir, self.root):
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                if not n.startswith(".") or ".tmp-" not in n:
                    continue
                try:
                    pid = int(n.rsplit(".tmp-", 1)[1].split("-")[0])
                except ValueError:
                    continue
                if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                    unlink_if_present(os.path.join(d, n))

    def clean_temp(self, grace: float = 60.0) -> int:
        """Remove entries under tmp/ whose writer is gone; returns how many.

        Several pbox processes may clean at once: each entry goes to the one that
        holds its lock file while that file still has its name.
        """
        self._clean_atomic_leftovers()
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        removed = 0
        now = time.time()
        locks = {n[:-5] for n in names if n.endswith(".lock")}
        for base in locks:
            lock_path = os.path.join(self.tmp_dir, base + ".lock")
            fd = _lock_if_dead(lock_path)
            if fd is None:
                continue  # a live writer, or another cleaner got there first
            try:
                data = os.path.join(self.tmp_dir, base)
                if os.path.lexists(data):
                    remove_tree(data)
                unlink_if_present(lock_path)
                removed += 1
            finally:
                os.close(fd)
        for n in names:
            if n.endswith(".lock") or n in locks:
                continue
            path = os.path.join(self.tmp_dir, n)
            if n.startswith(".") and n.endswith(".new"):
                # a lock file not named yet (TempEntry); unlocked: its writer died
                fd = _lock_if_dead(path)
                if fd is not None:
                    unlink_if_present(path)
                    os.close(fd)
                    removed += 1
                continue
            try:
                if now - os.lstat(path).st_mtime > grace:
                    remove_tree(path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    # -- blobs --------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64:
            raise StoreError(f"unsupported digest {digest!r}")
        return os.path.join(self.blobs_dir, hexpart)

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def read_blob(self, digest: str) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store")

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store small content (manifests, configs); verified against ``digest``."""
        from pbox.oci.digest import compute

        actual = compute(data)
        if digest is not None and digest != actual:
            from pbox.errors import DigestMismatch

            raise DigestMismatch(f"content does not match its digest {digest} (got {actual})")
        path = self.blob_path(actual)
        if not os.path.exists(path):
            self.ensure()
            atomic_write(path, data, mode=0o644)
        return actual

    # -- layers -------------------------------------------------------------------------

    def layer_path(self, chain_id: str) -> str:
        return os.path.join(self.layers_dir, chain_id.partition(":")[2] or chain_id)

    def layer_diff(self, chain_id: str) -> str:
        return os.path.join(self.layer_path(chain_id), "diff")

    def layer_split(self, chain_id: str) -> str:
        return os.path.join(self.layer_path(chain_id), LAYER_SPLIT)

    def has_layer(self, chain_id: str) -> bool:
        return os.path.exists(os.path.join(self.layer_path(chain_id), "layer.json"))

    def layer_info(self, chain_id: str) -> dict:
        try:
            with open(os.path.join(self.layer_path(chain_id), "layer.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            raise StoreError(f"layer {chain_id} is missing from the store")

    def update_layer_info(self, chain_id: str, **changes) -> None:
        """Add facts learnt later (e.g. the compressed digest a push produced)."""
        with self.meta_lock.exclusive():
            info = self.layer_info(chain_id)
            info.update(changes)
            atomic_write(os.path.join(self.layer_path(chain_id), "layer.json"),
                         json.dumps(info, sort_keys=True).encode())

    def new_layer(self) -> TempEntry:
        """A temp dir to fill: write the files under ``<path>/diff``."""
        entry = self.temp("layer")
        os.mkdir(entry.path, 0o755)
        os.mkdir(os.path.join(entry.path, "diff"), 0o755)
        return entry

    def commit_layer(self, entry: TempEntry, chain_id: str, info: dict) -> bool:
        atomic_write(os.path.join(entry.path, "layer.json"),
                     json.dumps(info, sort_keys=True).encode())
        return entry.commit(self.layer_path(chain_id))

    # -- what layer blobs inflate to ----------------------------------------------------

    def diff_of_blob(self, blob: str) -> str | None:
        """The diff id the layer blob ``blob`` inflates to, if a pull or push of this
        store has seen it (``note_blob_diff``); else None."""
        blob_hex = _sha256_hex(blob)
        if blob_hex is None:
            return None
        try:
            target = os.readlink(os.path.join(self.blob_diffs_dir, blob_hex))
        except OSError:
            return None
        return "sha256:" + target if _sha256_hex("sha256:" + target) else None

    def note_blob_diff(self, blob: str, diff_id: str) -> None:
        """Remember that the layer blob ``blob`` inflates to ``diff_id``: a fact about
        their content (never wrong, and kept when a layer goes), one symlink each.  Only
        a hint for later pulls: failing to write it fails nothing."""
        blob_hex, diff_hex = _sha256_hex(blob), _sha256_hex(diff_id)
        if blob_hex is None or diff_hex is None:
            return
        path = os.path.join(self.blob_diffs_dir, blob_hex)
        try:
            try:
                os.symlink(diff_hex, path)
            except FileNotFoundError:  # a store made before this directory was
                os.makedirs(self.blob_diffs_dir, exist_ok=True)
                os.symlink(diff_hex, path)
        except OSError:  # there already (a fact: the first one stays), or cannot be
            pass

    def list_layers(self) -> list[str]:
        try:
            return ["sha256:" + n for n in os.listdir(self.layers_dir) if len(n) == 64]
        except FileNotFoundError:
            return []

    def remove_layer(self, chain_id: str) -> None:
        # Rename out of the way first, so a half-removed layer never looks present.
        path = self.layer_path(chain_id)
        entry = self.temp("rmlayer")
        try:
            os.rename(path, entry.path)
        except FileNotFoundError:
            entry.discard()
            return
        entry.discard()

    # -- records ------------------------------------------------------------------------

    def write_json(self, path: str, obj, *, durable: bool = True) -> None:
        # not indented: the C encoder writes it (see pbox.jsonio)
        atomic_write(path, json.dumps(obj, sort_keys=True).encode(),
                     durable=durable)

    @staticmethod
    def read_json(path: str, default=None):
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return default
        except ValueError:
            raise StoreError(f"{path} is damaged (not JSON)")
