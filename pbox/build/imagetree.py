"""Looking things up in the image a step builds on (a LayerView of its layers): paths
through the image's symbolic links, and users and groups from its /etc/passwd and
/etc/group."""

from __future__ import annotations

import os
import stat

from pbox.errors import BuildError


def resolve_in_image(lower, parts: list) -> list:
    """``parts`` with the image's symbolic links on the way resolved inside its root, so
    a COPY to /bin/ in an image whose /bin links to usr/bin writes to /usr/bin (and
    keeps the link)."""
    todo = list(parts)
    done: list = []
    hops = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        if name == ".":
            continue
        node = lower.lookup(done + [name]) if lower.root.dirs else None
        if node is not None and stat.S_ISLNK(node.st.st_mode):
            hops += 1
            if hops > 40:
                raise BuildError(f"/{'/'.join(parts)}: too many levels of symbolic links")
            target = os.readlink(node.path)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
            continue
        done.append(name)
    return done


def owner_of(lower, spec: str, chown: bool = False):
    """uid, gid of ``user[:group]`` (names looked up in the image's /etc/passwd)."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")
    passwd = _read_db(lower, "passwd")
    groups = _read_db(lower, "group")
    uid = _lookup_id(user, passwd, "user")
    if group:
        gid = _lookup_id(group, groups, "group")
    elif chown:
        gid = uid if user.isdigit() else int(passwd.get(user, ["", "", "", "0"])[3] or 0)
    else:
        gid = int(passwd.get(user, ["", "", "", "0"])[3] or 0) if not user.isdigit() else 0
    return uid, gid


def _read_db(lower, name: str) -> dict:
    node = lower.lookup(["etc", name])
    out = {}
    if node is None or node.is_dir or not stat.S_ISREG(node.st.st_mode):
        return out
    with open(node.path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 3:
                out[fields[0]] = fields
    return out


def _lookup_id(name: str, db: dict, what: str) -> int:
    if name.isdigit():
        return int(name)
    if name not in db:
        raise BuildError(f"unable to find {what} {name}: no matching entries in "
                         f"{'passwd' if what == 'user' else 'group'} file")
    return int(db[name][2])
