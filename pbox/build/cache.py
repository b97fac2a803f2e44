"""The build cache: which image a step made, keyed by what the step depends on.

A step's key is the parent image id, the instruction after substitution, the build
args in scope and, for COPY/ADD, a hash of the sources; the index lives in the store
(``build-cache.json``, written atomically).  A hit whose config or layers left the
store is a miss.  ``builder prune`` forgets it all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

from pbox import jsonio as json
from pbox.config import Config

CACHE_FILE = "build-cache.json"
FILE_SUMS = "build-filesums.json"  # context file digests (pbox.build.context.FileSums)


class BuildCache:
    def __init__(self, store):
        self.store = store
        self.path = os.path.join(store.root, CACHE_FILE)

    def load(self) -> dict:
        return self.store.read_json(self.path, {}) or {}

    def get(self, key: str) -> dict | None:
        """The record of ``key`` when its config and layers are still in the store."""
        rec = self.load().get(key)
        if not isinstance(rec, dict) or not self.store.has_blob(rec.get("id") or ""):
            return None
        if not all(self.store.has_layer(c) for c in rec.get("layers") or []):
            return None
        return rec

    def put(self, key: str, image_id: str, layers: list) -> None:
        with self.store.meta_lock.exclusive():
            d = self.load()
            d[key] = {"id": image_id, "layers": list(layers)}
            self.store.write_json(self.path, d)


def cache_key(parent: str, text: str, args: dict, sources: str = "") -> str:
    raw = json.dumps([parent, text, sorted(args.items()), sources])
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def prune_cache(config: Config) -> tuple[int, int]:
    """`builder prune`: forget every cache record, then remove the step configs and
    layers no image or container uses, and the RUN cache mounts no build is using.
    Returns (records, bytes freed)."""
    from pbox.images import _gc_layers, enter_userns, open_store
    from pbox.storage.images import ImageStore

    enter_userns(config)
    store = open_store(config)
    with store.gc_lock.exclusive():
        cache = BuildCache(store)
        with store.meta_lock.exclusive():
            count = len(cache.load())
            store.write_json(cache.path, {})
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store.root, FILE_SUMS))
        freed = _gc_layers(store, ImageStore(store))
    from pbox.build.mounts import prune_cache_mounts

    return count, freed + prune_cache_mounts(store)
