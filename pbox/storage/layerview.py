"""Layer directories in overlay form: the tree they show merged, and what changed in it.

Where a container's files are
-----------------------------
The store holds them in overlay form: the image's layer directories (``Spec.rootfs
.lowerdirs``, top first) and the container's ``upper`` directory, where a deleted
name is a 0/0 character device (or a ``.wh.NAME`` file where mknod was refused) and
a replaced directory carries ``user.overlay.opaque=y`` (or ``trusted.``/
``user.fuseoverlayfs.``, or a ``.wh..wh..opq`` file).  :class:`LayerView` reads that
merged tree without mounting anything.  A container that ran with the copy driver
(``vfs``) keeps its whole tree in ``merged`` instead; it is compared with the image's
layers entry by entry (docker's "naive diff").

diff
----
docker's overlay2 rules, in its order (a walk of the tree, names sorted, a directory
before what is inside it): ``D`` for a deleted name, ``A`` for a name no image layer
has, ``C`` for a name that was there before.  A directory is ``C`` when something
below it changed or its mode or owner did; its mtime alone does not count, because
setting up a container touches directories (see below).  A replaced (opaque)
directory is ``C``, what it holds is compared with what it hid.  The mount points
the runtime itself creates in the upper directory when the image lacks them
(``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``, ``/proc``, ``/sys``,
``/dev``...: docker keeps them in a hidden init layer) are left out of ``diff`` and
``commit`` while they are still empty.
"""

from __future__ import annotations

import os
import stat

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")

# Mount points the runtime creates when the image lacks them (docker's init layer).
INIT_PATHS = frozenset({
    "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/mtab", "/proc", "/sys",
    "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/console", "/.dockerenv",
    "/run/.containerenv",
})


# -- the stored tree ------------------------------------------------------------------------


def _is_whiteout(st) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _has_opaque_xattr(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def _is_opaque_dir(path: str) -> bool:
    return _has_opaque_xattr(path) or os.path.lexists(os.path.join(path, OPAQUE_MARKER))


def _name_key(name: str) -> bytes:
    return os.fsencode(name)


def _entries(path: str) -> list:
    with os.scandir(path) as it:
        return list(it)


def _is_empty_dir(path: str) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


class Node:
    """One entry of a merged tree: the host path and lstat of the entry that shows,
    and for a directory the layer directories merged into it (top first)."""

    __slots__ = ("path", "st", "dirs", "kids")

    def __init__(self, path: str, st, dirs):
        self.path = path
        self.st = st
        self.dirs = dirs
        self.kids = None

    @property
    def is_dir(self) -> bool:
        return self.dirs is not None


class LayerView:
    """The tree overlayfs would show for directories in overlay form (top first)."""

    def __init__(self, dirs: list[str]):
        stack = []
        for d in dirs:
            stack.append(d)
            if _is_opaque_dir(d):
                break
        st = os.lstat(dirs[0]) if dirs else None
        self.root = Node(dirs[0] if dirs else "", st, stack)

    def children(self, node: Node) -> dict:
        """name -> Node of a directory node (whiteouts and opaque directories applied)."""
        if node.kids is not None:
            return node.kids
        found: dict = {}
        closed: set = set()
        for d in node.dirs or ():
            try:
                entries = _entries(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            whiteouts = []
            for e in entries:
                name = e.name
                if name.startswith(WHITEOUT_PREFIX):
                    rest = name[len(WHITEOUT_PREFIX):]
                    if not rest.startswith(WHITEOUT_PREFIX) and e.is_file(follow_symlinks=False):
                        whiteouts.append(rest)
                    continue
                if name in closed:
                    continue
                st = e.stat(follow_symlinks=False)
                if _is_whiteout(st):
                    closed.add(name)
                    found.setdefault(name, None)
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if name not in found:
                    found[name] = Node(e.path, st, [e.path] if is_dir else None)
                    if not is_dir or _is_opaque_dir(e.path):
                        closed.add(name)
                    continue
                child = found[name]
                if child is not None and child.is_dir and is_dir:
                    child.dirs.append(e.path)  # a lower part of the same directory
                    if _is_opaque_dir(e.path):
                        closed.add(name)
                else:
                    closed.add(name)  # a file below a directory is hidden, and ends it
            for name in whiteouts:
                closed.add(name)
                found.setdefault(name, None)
        node.kids = {n: c for n, c in found.items() if c is not None}
        return node.kids

    def lookup(self, parts) -> Node | None:
        node = self.root
        for p in parts:
            if not node.is_dir:
                return None
            node = self.children(node).get(p)
            if node is None:
                return None
        return node

    def walk(self):
        """(parts, Node) of every entry below the root, in tar order."""
        todo = [((), self.root)]
        while todo:
            parts, node = todo.pop()
            if node.is_dir:
                kids = self.children(node)
                node.kids = None  # walked once: keep only the pending part of the tree
                for name in sorted(kids, key=_name_key, reverse=True):
                    todo.append((parts + (name,), kids[name]))
            if parts:
                yield parts, node  # before its children, which were pushed above


# -- diff -------------------------------------------------------------------------------------


def _path(parts) -> str:
    return "/" + "/".join(parts)


def _meta_differs(a, b) -> bool:
    return (stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode) or a.st_uid != b.st_uid
            or a.st_gid != b.st_gid)


def _is_stub(parts, st, empty_dir: bool) -> bool:
    """A mount point the runtime made (only called for names no image layer has)."""
    if _path(parts) not in INIT_PATHS:
        return False
    if stat.S_ISREG(st.st_mode):
        return st.st_size == 0
    return stat.S_ISDIR(st.st_mode) and empty_dir


def _upper_changes(upper: str, lower: LayerView) -> list:
    """(kind, parts) of an overlay upper directory against the view of the layers."""

    def walk(dirpath, parts, lnode, replaced):
        lkids = lower.children(lnode) if lnode is not None and lnode.is_dir else {}
        groups = []
        seen = set()
        whiteouts = set()
        for e in _entries(dirpath):
            name = e.name
            if name == OPAQUE_MARKER:
                continue
            if name.startswith(WHITEOUT_PREFIX) and e.is_file(follow_symlinks=False):
                whiteouts.add(name[len(WHITEOUT_PREFIX):])
                continue
            seen.add(name)
            p = parts + (name,)
            st = e.stat(follow_symlinks=False)
            lchild = lkids.get(name)
            if _is_whiteout(st):
                if lchild is not None:
                    groups.append((name, [("D", p)]))
                continue
            if not stat.S_ISDIR(st.st_mode):
                if lchild is not None:
                    groups.append((name, [("C", p)]))
                elif not _is_stub(p, st, False):
                    groups.append((name, [("A", p)]))
                continue
            if lchild is None:
                sub = walk(e.path, p, None, False)
                if sub or not _is_stub(p, st, _is_empty_dir(e.path)):
                    groups.append((name, [("A", p)] + sub))
            elif not lchild.is_dir:
                groups.append((name, [("C", p)] + walk(e.path, p, None, False)))
            elif replaced or _is_opaque_dir(e.path):
                groups.append((name, [("C", p)] + walk(e.path, p, lchild, True)))
            else:
                sub = walk(e.path, p, lchild, False)
                if sub or _meta_differs(st, lchild.st):
                    groups.append((name, [("C", p)] + sub))
        for name in whiteouts - seen:
            if name in lkids:
                groups.append((name, [("D", parts + (name,))]))
        if replaced:
            for name in lkids:
                if name not in seen and name not in whiteouts:
                    groups.append((name, [("D", parts + (name,))]))
        groups.sort(key=lambda g: _name_key(g[0]))
        return [c for _, cs in groups for c in cs]

    return walk(upper, (), lower.root, _is_opaque_dir(upper))


def _same_entry(a, b, a_path: str, b_path: str) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or _meta_differs(a, b):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True
    if a.st_mtime_ns // 1_000_000_000 != b.st_mtime_ns // 1_000_000_000:
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) == os.readlink(b_path)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return a.st_size == b.st_size


def _tree_changes(top: str, lower: LayerView) -> list:
    """(kind, parts) of a complete tree (the copy driver's) against the layers."""

    def walk(dirpath, parts, lnode):
        lkids = lower.children(lnode) if lnode is not None and lnode.is_dir else {}
        groups = []
        names = set()
        for e in _entries(dirpath):
            name = e.name
            names.add(name)
            p = parts + (name,)
            st = e.stat(follow_symlinks=False)
            lchild = lkids.get(name)
            is_dir = stat.S_ISDIR(st.st_mode)
            if lchild is None:
                sub = walk(e.path, p, None) if is_dir else []
                if sub or not _is_stub(p, st, is_dir and _is_empty_dir(e.path)):
                    groups.append((name, [("A", p)] + sub))
            elif is_dir and lchild.is_dir:
                sub = walk(e.path, p, lchild)
                if sub or _meta_differs(st, lchild.st):
                    groups.append((name, [("C", p)] + sub))
            elif is_dir:
                groups.append((name, [("C", p)] + walk(e.path, p, None)))
            elif not _same_entry(st, lchild.st, e.path, lchild.path):
                groups.append((name, [("C", p)]))
        for name in lkids:
            if name not in names:
                groups.append((name, [("D", parts + (name,))]))
        groups.sort(key=lambda g: _name_key(g[0]))
        return [c for _, cs in groups for c in cs]

    return walk(top, (), lower.root)


__all__ = ["INIT_PATHS", "LayerView", "Node"]
