"""`build --squash`: the layers a build added on top of its base image, as one layer.

Docker's semantics: the base image's layers stay as they are; everything the final
stage's steps changed becomes one layer (a file made and deleted in between is in
neither).  The history keeps every step, each marked ``empty_layer``, and ends with
an entry for the merged layer.  The tree is flattened with the copy driver's code
and compared with the base's layers as `commit` compares a copy-driver container.
"""

from __future__ import annotations

import os


def squash(builder, st, base_count: int) -> None:
    from pbox.containers.fsops import _write_changes_tar, add_layer
    from pbox.rootless.mounts import copy_layers
    from pbox.storage.layerview import LayerView, _tree_changes

    store = builder.store
    if len(st.layers) - base_count < 2:
        return  # nothing to merge
    old_id = st.image_id
    diff_ids = st.diff_ids()
    base_layers = st.layers[:base_count]
    base_lowers = builder._lowers(base_layers)
    entry = store.temp("build")
    try:
        tree = os.path.join(entry.path, "tree")
        os.makedirs(entry.path)
        copy_layers(builder._lowers(st.layers), tree)
        changes = _tree_changes(tree, LayerView(base_lowers))
        with store.gc_lock.shared():
            new_diff, layers, empty = add_layer(
                store, diff_ids[:base_count], base_layers,
                lambda f: _write_changes_tar(f, tree, changes), base_lowers,
                builder.keep_owners, mtime_clamp=builder.epoch, notice=builder.notice)
    finally:
        entry.discard()
    history = list(st.image.get("history") or [])
    for h in history[st.base_history:]:
        h["empty_layer"] = True
    st.image["history"] = history
    merged = {"created_by": "", "comment": f"merge {old_id} to {st.base_id or 'scratch'}"}
    if empty:
        merged["empty_layer"] = True
    builder._store_step(st, merged, new_diff, layers)
