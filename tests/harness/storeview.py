"""Read a pbox store from a test: image records and the merged view of their layers.

The merge follows overlayfs on the stored (overlay-form) layers: a character device
0/0 hides the name below it, a directory with ``user.overlay.opaque=y`` hides the
lower directories' contents.  It reads only; it does not use pbox's code.
"""

from __future__ import annotations

import json
import os
import stat


def image_record(root: str, image_id: str) -> dict:
    with open(os.path.join(root, "images", image_id.partition(":")[2] + ".json")) as f:
        return json.load(f)


def repositories(root: str) -> dict:
    try:
        with open(os.path.join(root, "repositories.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"tags": {}, "digests": {}}


def layer_dirs(root: str, image_id: str) -> list[str]:
    """The diff dirs of an image's layers, bottom first."""
    rec = image_record(root, image_id)
    return [os.path.join(root, "layers", c.partition(":")[2], "diff") for c in rec["layers"]]


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "user.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def merged(root: str, image_id: str) -> dict[str, tuple[str, os.stat_result]]:
    """{"/path": (layer diff dir holding it, lstat)} of the flattened image."""
    view: dict[str, tuple[str, os.stat_result]] = {}
    for diff in layer_dirs(root, image_id):
        for dirpath, dirnames, filenames in os.walk(diff):
            rel_dir = "/" + os.path.relpath(dirpath, diff).lstrip(".")
            rel_dir = rel_dir.rstrip("/") or "/"
            if rel_dir != "/" and _opaque(dirpath):
                prefix = rel_dir + "/"
                for k in [k for k in view if k.startswith(prefix)]:
                    del view[k]
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                rel = (rel_dir.rstrip("/") + "/" + name)
                st = os.lstat(full)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    view.pop(rel, None)
                    prefix = rel + "/"
                    for k in [k for k in view if k.startswith(prefix)]:
                        del view[k]
                    continue
                if rel in view and not stat.S_ISDIR(st.st_mode):
                    prefix = rel + "/"
                    for k in [k for k in view if k.startswith(prefix)]:
                        del view[k]
                view[rel] = (diff, st)
    return view


def listing(root: str, image_id: str) -> dict[str, dict]:
    """The merged view as seen from pbox's user namespace (ids as inside containers).

    Layer files are owned by subordinate ids and may sit in directories the user
    cannot read, so this runs in a child that first becomes root of the user's
    namespace, as pbox does: {"/path": {kind, mode, uid, gid, size, target, data}}.
    """
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), root, image_id],
                         env=env, capture_output=True, check=True, timeout=120)
    return json.loads(out.stdout)


def _listing_here(root: str, image_id: str) -> dict[str, dict]:
    out = {}
    for path, (diff, st) in merged(root, image_id).items():
        kind = ("dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode)
                else "file" if stat.S_ISREG(st.st_mode) else "other")
        item = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                "gid": st.st_gid, "size": st.st_size, "nlink": st.st_nlink}
        if kind == "symlink":
            item["target"] = os.readlink(diff + path)
        elif kind == "file" and st.st_size <= 4096:
            with open(diff + path, "rb") as f:
                item["data"] = f.read().decode("latin-1")
        out[path] = item
    return out


def read_file(root: str, image_id: str, path: str) -> bytes:
    view = merged(root, image_id)
    diff, _ = view[path]
    with open(diff + path, "rb") as f:
        return f.read()


def du(path: str) -> int:
    """Bytes of disk used below ``path`` (hard links counted once)."""
    seen = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


if __name__ == "__main__":
    import sys

    from pbox.rootless import userns

    mapping = userns.current_mapping()
    if mapping.mode == "subuid":
        userns.become_root(mapping)
    print(json.dumps(_listing_here(sys.argv[1], sys.argv[2])))
