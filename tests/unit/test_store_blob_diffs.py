"""What layer blobs inflate to, as the store remembers it (``Store.note_blob_diff``)."""

from __future__ import annotations

import os

from pbox.storage.store import Store

BLOB = "sha256:" + "a" * 64
DIFF = "sha256:" + "b" * 64


def test_a_blob_diff_is_remembered_once(tmp_path):
    store = Store.open(str(tmp_path / "store"))
    assert store.diff_of_blob(BLOB) is None
    store.note_blob_diff(BLOB, DIFF)  # makes the directory a store of before lacks
    assert store.diff_of_blob(BLOB) == DIFF
    store.note_blob_diff(BLOB, "sha256:" + "c" * 64)  # a fact: the first one stays
    assert store.diff_of_blob(BLOB) == DIFF
    assert os.readlink(os.path.join(store.root, "blob-diffs", "a" * 64)) == "b" * 64


def test_what_the_store_cannot_name_is_not_remembered(tmp_path):
    store = Store.open(str(tmp_path / "store"))
    store.note_blob_diff("sha512:" + "a" * 128, DIFF)
    store.note_blob_diff(BLOB, "sha512:" + "b" * 128)
    assert not os.path.exists(os.path.join(store.root, "blob-diffs"))
    assert store.diff_of_blob("sha512:" + "a" * 128) is None
    os.makedirs(os.path.join(store.root, "blob-diffs"))
    os.symlink("../../etc", os.path.join(store.root, "blob-diffs", "a" * 64))  # damaged
    assert store.diff_of_blob(BLOB) is None


def test_a_name_that_is_not_a_digest_reads_nothing_outside(tmp_path):
    store = Store.open(str(tmp_path / "store"))
    os.makedirs(os.path.join(store.root, "blob-diffs"))
    os.symlink("b" * 64, os.path.join(store.root, "x"))
    assert store.diff_of_blob("sha256:../x") is None
    store.note_blob_diff("sha256:../y", DIFF)
    assert not os.path.lexists(os.path.join(store.root, "y"))
