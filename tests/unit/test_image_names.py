"""The names' file of the image store (tags and digest names): one update for many."""

from __future__ import annotations

from pbox.storage import store as store_mod
from pbox.storage.images import ImageStore
from pbox.storage.store import Store

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_tags_and_digest_names_in_one_write(tmp_path, monkeypatch):
    istore = ImageStore(Store(str(tmp_path / "root")).ensure())
    writes = []
    real = store_mod.atomic_write
    monkeypatch.setattr(store_mod, "atomic_write",
                        lambda path, *a, **k: (writes.append(path), real(path, *a, **k)))
    assert istore.set_names(A, tags=["r/x:1", "r/x:2"], digests=["r/x@sha256:" + "1" * 64]) \
        is None
    assert len(writes) == 1  # a pull's tag and digest name: one lock, one write, fsyncs
    repos = istore.repositories()
    assert repos["tags"] == {"r/x:1": A, "r/x:2": A}
    assert repos["digests"] == {"r/x@sha256:" + "1" * 64: A}
    # moving a tag tells which image had it; the other names stay
    assert istore.set_names(B, tags=["r/x:2"], digests=["r/x@sha256:" + "2" * 64]) == A
    assert istore.set_tag("r/x:2", B) is None  # already there
    istore.set_digest("r/y@sha256:" + "3" * 64, B)
    repos = istore.repositories()
    assert repos["tags"] == {"r/x:1": A, "r/x:2": B}
    assert repos["digests"] == {"r/x@sha256:" + "1" * 64: A, "r/x@sha256:" + "2" * 64: B,
                                "r/y@sha256:" + "3" * 64: B}
