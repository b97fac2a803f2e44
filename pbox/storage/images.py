"""Image records and tags.

An image is identified by its config digest (docker's image id).  Its record lists
the chain ids of its layers; names live in ``repositories.json`` only, so there is
one source of truth for "which name points where":

    {"tags":    {"docker.io/library/busybox:latest": "sha256:<id>"},
     "digests": {"docker.io/library/busybox@sha256:<manifest>": "sha256:<id>"}}
"""

from __future__ import annotations

import os
import time

from pbox.errors import ImageNotFound, UsageError
from pbox.storage.store import Store


class ImageRecord:
    """One image in the store, as ``images/<id>.json`` keeps it.  (A plain class, not
    a dataclass: `images` would import ``dataclasses`` and ``inspect`` for it.)"""

    FIELDS = ("id", "layers", "diff_ids", "manifest_digest", "manifest_media_type", "created",
              "size", "added")

    def __init__(self, id: str, layers: list | None = None, diff_ids: list | None = None,
                 manifest_digest: str = "", manifest_media_type: str = "", created: str = "",
                 size: int = 0, added: float = 0.0):
        self.id = id
        self.layers = [] if layers is None else layers  # chain ids, bottom first
        self.diff_ids = [] if diff_ids is None else diff_ids
        self.manifest_digest = manifest_digest
        self.manifest_media_type = manifest_media_type
        self.created = created
        self.size = size
        self.added = added

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return ("ImageRecord(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS)
                + ")")

    def to_dict(self) -> dict:
        """The record as JSON keeps it (lists copied, as ``dataclasses.asdict`` did)."""
        return {f: (list(v) if isinstance(v, list) else v)
                for f in self.FIELDS for v in (getattr(self, f),)}

    @classmethod
    def from_dict(cls, d: dict) -> ImageRecord:
        known = {k: v for k, v in d.items() if k in cls.FIELDS}
        return cls(**known)


class ImageStore:
    def __init__(self, store: Store):
        self.store = store

    def _path(self, image_id: str) -> str:
        return os.path.join(self.store.images_dir, image_id.partition(":")[2] + ".json")

    # -- records ------------------------------------------------------------------------

    def put(self, record: ImageRecord) -> None:
        if not record.added:
            record.added = time.time()
        self.store.ensure()
        self.store.write_json(self._path(record.id), record.to_dict())

    def get(self, image_id: str) -> ImageRecord:
        d = self.store.read_json(self._path(image_id))
        if d is None:
            raise ImageNotFound(f"image {image_id} not found")
        return ImageRecord.from_dict(d)

    def exists(self, image_id: str) -> bool:
        return os.path.exists(self._path(image_id))

    def list(self) -> list[ImageRecord]:
        out = []
        try:
            names = os.listdir(self.store.images_dir)
        except FileNotFoundError:
            return out
        for n in names:
            if n.endswith(".json") and len(n) == 69:
                d = self.store.read_json(os.path.join(self.store.images_dir, n))
                if d:
                    out.append(ImageRecord.from_dict(d))
        return out

    def remove(self, image_id: str) -> None:
        try:
            os.unlink(self._path(image_id))
        except FileNotFoundError:
            pass

    def config(self, record: ImageRecord) -> dict:
        from pbox import jsonio as json

        return json.loads(self.store.read_blob(record.id))

    # -- names ----------------------------------------------------------------------------

    def repositories(self) -> dict:
        repos = self.store.read_json(self.store.repositories_path, None) or {}
        repos.setdefault("tags", {})
        repos.setdefault("digests", {})
        return repos

    def _update(self, fn) -> None:
        self.store.ensure()
        with self.store.meta_lock.exclusive():
            repos = self.repositories()
            fn(repos)
            self.store.write_json(self.store.repositories_path, repos)

    def set_names(self, image_id: str, tags=(), digests=()) -> str | None:
        """Point tags (full ``registry/repo:tag``) and digest names at the image in one
        update of the names' file (one lock, one write); returns the id the last tag
        that pointed elsewhere pointed at before, if any."""
        previous = []

        def fn(repos):
            for name in tags:
                old = repos["tags"].get(name)
                if old and old != image_id:
                    previous.append(old)
                repos["tags"][name] = image_id
            for name in digests:
                repos["digests"][name] = image_id

        self._update(fn)
        return previous[-1] if previous else None

    def set_tag(self, name: str, image_id: str) -> str | None:
        """Point ``name`` (a full ``registry/repo:tag``) at the image; returns the id it
        pointed at before, if another."""
        return self.set_names(image_id, tags=(name,))

    def set_digest(self, name: str, image_id: str) -> None:
        self.set_names(image_id, digests=(name,))

    def remove_names(self, names: list[str]) -> None:
        def fn(repos):
            for n in names:
                repos["tags"].pop(n, None)
                repos["digests"].pop(n, None)

        self._update(fn)

    def names_of(self, image_id: str, repos: dict | None = None) -> tuple[list[str], list[str]]:
        repos = repos or self.repositories()
        tags = sorted(n for n, i in repos["tags"].items() if i == image_id)
        digests = sorted(n for n, i in repos["digests"].items() if i == image_id)
        return tags, digests

    def find_id(self, text: str) -> str | None:
        """An image id from a full or short id (``sha256:`` optional); None if not an id."""
        t = text[7:] if text.startswith("sha256:") else text
        if not t or len(t) > 64 or any(c not in "0123456789abcdef" for c in t):
            return None
        if len(t) == 64:
            return "sha256:" + t if self.exists("sha256:" + t) else None
        try:
            names = os.listdir(self.store.images_dir)
        except FileNotFoundError:
            return None
        hits = [n[:-5] for n in names if n.startswith(t) and n.endswith(".json")]
        if len(hits) > 1:
            raise UsageError(f"short id {text!r} is ambiguous: it matches {len(hits)} images")
        return "sha256:" + hits[0] if hits else None
