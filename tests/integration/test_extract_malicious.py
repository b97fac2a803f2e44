"""Hostile layer tars: nothing may be written, changed or linked outside the layer dir.

Every case extracts into ``sandbox/layer`` next to sentinel files in
``sandbox/outside``; the whole tmp dir (but the layer dir) is snapshotted before and
after the extraction and after removing the layer dir with ``remove_tree``.
Runs as root and as an unprivileged user.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import stat
import tarfile

import pytest

from pbox.storage.extract import LayerError, UnsafeLayer, extract_layer
from pbox.storage.fsutil import remove_tree
from pbox.storage.layertar import encode_header

IS_ROOT = os.geteuid() == 0


# -- building tars


def member(name, type=tarfile.REGTYPE, data=b"", linkname="", mode=0o644, pax=None, **kw):
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.mode = mode
    info.mtime = 1_700_000_000
    if type == tarfile.REGTYPE:
        info.size = len(data)
    if pax:
        info.pax_headers = dict(pax)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if type == tarfile.REGTYPE else None)


def make_tar(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def d(name, mode=0o755):
    return member(name, tarfile.DIRTYPE, mode=mode)


def sym(name, target):
    return member(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hard(name, target):
    return member(name, tarfile.LNKTYPE, linkname=target)


# -- the sandbox


def _xattrs(path):
    try:
        return sorted(
            (k, os.getxattr(path, k, follow_symlinks=False))
            for k in os.listxattr(path, follow_symlinks=False)
        )
    except OSError:
        return None


def _describe(path):
    st = os.lstat(path)
    info = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns,
            st.st_nlink, st.st_uid, st.st_gid, st.st_rdev, _xattrs(path)]
    if stat.S_ISLNK(st.st_mode):
        info.append(os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            info.append(hashlib.sha256(f.read()).hexdigest())
    return tuple(info)


def snapshot(root, exclude):
    snap = {".": _describe(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == exclude:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if path == exclude:
                continue
            snap[os.path.relpath(path, root)] = _describe(path)
    return snap


PASSWD_NLINK = os.lstat("/etc/passwd").st_nlink


@pytest.fixture
def sandbox(tmp_path):
    box = tmp_path / "sandbox"
    outside = box / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret\n")
    (outside / "sub" / "keep").write_bytes(b"keep\n")
    os.chmod(outside / "secret", 0o640)
    (box / "near").write_bytes(b"near\n")
    os.symlink("outside", box / "outside-link")
    layer = box / "layer"
    layer.mkdir()

    class Box:
        root = str(tmp_path)
        dest = str(layer)
        out = str(outside)

        def extract(self, data, **kw):
            notices = []
            kw.setdefault("keep_owners", IS_ROOT)
            stats = extract_layer(io.BytesIO(data), self.dest, notice=notices.append, **kw)
            self.notices = notices
            return stats

    b = Box()
    before = snapshot(b.root, b.dest)
    yield b
    after = snapshot(b.root, b.dest)
    assert after == before, "the layer changed something outside its directory"
    remove_tree(b.dest)
    assert not os.path.lexists(b.dest)
    after = snapshot(b.root, b.dest)
    del after["sandbox"], before["sandbox"]  # the layer dir's parent lost an entry
    assert after == before, "removing the layer changed something outside"
    assert os.lstat("/etc/passwd").st_nlink == PASSWD_NLINK


# -- escapes refused


REFUSED = {
    "dotdot": [member("../outside/pwned", data=b"x")],
    "dotdot-deep": [member("a/b/../../../outside/pwned", data=b"x")],
    "dotdot-dir": [d("../outside/newdir")],
    "dotdot-symlink-name": [sym("../outside/evil", "/etc/passwd")],
    "symlink-then-write-through": [sym("link", "../outside"), member("link/pwned", data=b"x")],
    "symlink-then-dotdot": [sym("link", "sub"), d("sub"), member("link/../../x", data=b"x")],
    "symlink-dir-then-hardlink-through": [
        sym("link", "../outside"), hard("h", "link/secret")],
    "hardlink-name-through-symlink": [
        member("f", data=b"x"), sym("link", "../outside"), hard("link/h", "f")],
    "hardlink-dotdot": [hard("h", "../outside/secret")],
    "hardlink-to-dir": [d("dir"), hard("h", "dir")],
    "hardlink-to-root": [hard("h", "./")],
    "dir-replaced-by-symlink-then-written": [
        d("d"), member("d/ok", data=b"1"), sym("d", "../outside"), member("d/pwned", data=b"x")],
    "symlink-loop": [sym("a", "b"), sym("b", "a"), member("a/x", data=b"x")],
    # absolute symlinks point into the sandbox: a regression must not touch the host
    "absolute-symlink-then-overwrite": [
        sym("etc", "{outside}/sub"), member("etc/keep", data=b"overwritten")],
    "symlink-to-abs-sandbox-then-file": [
        sym("o", "{outside}"), member("o/pwned", data=b"x")],
    "whiteout-of-dotdot": [member(".wh...", data=b"")],
    "whiteout-of-dot": [member("sub/.wh..", data=b"")],
    "whiteout-through-symlink": [sym("link", "../outside"), member("link/.wh.secret")],
    "opaque-through-symlink": [sym("link", "../outside"), member("link/.wh..wh..opq")],
    "pax-path-dotdot": [member("innocent", data=b"x", pax={"path": "../outside/pwned"})],
    "pax-linkpath-dotdot": [
        member("innocent", tarfile.LNKTYPE, linkname="ok",
               pax={"linkpath": "../outside/secret"})],
    "root-replaced-by-symlink": [sym("./", "../outside")],
    "root-replaced-by-file": [member(".", data=b"x")],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(sandbox, case):
    members = [(copy.copy(info), data) for info, data in REFUSED[case]]
    for info, _ in members:
        info.linkname = info.linkname.replace("{outside}", sandbox.out)
    with pytest.raises(UnsafeLayer) as exc:
        sandbox.extract(make_tar(*members))
    assert "refusing layer" in str(exc.value)


def test_gnu_longname_with_dotdot(sandbox):
    name = "a/" * 60 + "../" * 62 + "outside/pwned"
    with pytest.raises(UnsafeLayer, match=r"'\.\.'"):
        sandbox.extract(make_tar(member(name, data=b"x"), fmt=tarfile.GNU_FORMAT))


def test_gnu_longlink_with_dotdot(sandbox):
    target = "x/" * 60 + "../" * 62 + "outside/secret"
    with pytest.raises(UnsafeLayer):
        sandbox.extract(
            make_tar(member("f", data=b"1"), hard("h", target), fmt=tarfile.GNU_FORMAT)
        )


def test_hardlink_to_etc_passwd(sandbox):
    with pytest.raises(LayerError, match="not in the layer"):
        sandbox.extract(make_tar(hard("passwd", "/etc/passwd")))
    assert not os.path.lexists(os.path.join(sandbox.dest, "passwd"))


def test_hardlink_to_outside_absolute(sandbox):
    with pytest.raises(LayerError, match="not in the layer"):
        sandbox.extract(make_tar(hard("h", sandbox.out + "/secret")))


# -- odd but harmless: stays inside the layer


def test_absolute_paths_land_inside(sandbox):
    target = sandbox.out + "/pwned"
    sandbox.extract(make_tar(member(target, data=b"in"), member("/abs", data=b"a")))
    assert not os.path.exists(target)
    with open(sandbox.dest + target, "rb") as f:
        assert f.read() == b"in"
    assert os.path.isfile(os.path.join(sandbox.dest, "abs"))


def test_file_replaces_symlink_to_outside(sandbox):
    sandbox.extract(make_tar(sym("link", "../outside/secret"), member("link", data=b"mine")))
    path = os.path.join(sandbox.dest, "link")
    assert not os.path.islink(path)
    with open(path, "rb") as f:
        assert f.read() == b"mine"


def test_dir_replaces_symlink_to_outside(sandbox):
    sandbox.extract(make_tar(sym("d", "../outside"), d("d", 0o777), member("d/f", data=b"x")))
    path = os.path.join(sandbox.dest, "d")
    assert stat.S_ISDIR(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o777


def test_node_replaces_symlink_to_outside(sandbox):
    sandbox.extract(make_tar(sym("p", "../outside/secret"), member("p", tarfile.FIFOTYPE)))
    assert stat.S_ISFIFO(os.lstat(os.path.join(sandbox.dest, "p")).st_mode)


def test_hardlink_to_symlink_links_the_symlink(sandbox):
    sandbox.extract(make_tar(sym("link", "../outside/secret"), hard("h", "link")))
    h = os.path.join(sandbox.dest, "h")
    assert os.path.islink(h)
    assert os.lstat(h).st_ino == os.lstat(os.path.join(sandbox.dest, "link")).st_ino


def test_xattr_on_symlink_to_outside_is_not_followed(sandbox):
    sandbox.extract(
        make_tar(member("link", tarfile.SYMTYPE, linkname="../outside/secret",
                        pax={"SCHILY.xattr.user.pwned": "1"}))
    )
    assert "user.pwned" not in os.listxattr(os.path.join(sandbox.out, "secret"))


def test_dotted_names_are_plain_names(sandbox):
    sandbox.extract(make_tar(member(".wh.../outside/secret", data=b"x"),
                             member("...", data=b"y"), member("a..b", data=b"z")))
    assert os.path.isfile(os.path.join(sandbox.dest, ".wh...", "outside", "secret"))
    assert os.path.isfile(os.path.join(sandbox.dest, "..."))


def test_overlay_xattrs_from_the_layer_are_dropped(sandbox):
    sandbox.extract(
        make_tar(
            member("d", tarfile.DIRTYPE, pax={
                "SCHILY.xattr.user.overlay.redirect": "/etc",
                "SCHILY.xattr.user.overlay.opaque": "y",
                "SCHILY.xattr.user.fuseoverlayfs.origin": "x",
                "SCHILY.xattr.user.ok": "1",
            })
        )
    )
    xattrs = os.listxattr(os.path.join(sandbox.dest, "d"))
    assert xattrs == ["user.ok"]


# -- duplicates


def test_duplicates_later_wins(sandbox):
    sandbox.extract(
        make_tar(
            member("f", data=b"first"),
            member("f", data=b"second", mode=0o600),
            d("x"), d("x/inner"), member("x/inner/file", data=b"1"),
            member("x", data=b"file over dir"),
            member("y", data=b"file"), d("y", 0o711), member("y/z", data=b"dir over file"),
            d("m", 0o700), member("m/a", data=b"a"), d("m", 0o750), member("m/b", data=b"b"),
        )
    )
    dest = sandbox.dest
    with open(os.path.join(dest, "f"), "rb") as f:
        assert f.read() == b"second"
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "f")).st_mode) == 0o600
    assert os.path.isfile(os.path.join(dest, "x"))
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "y")).st_mode) == 0o711
    assert os.path.isfile(os.path.join(dest, "y", "z"))
    assert sorted(os.listdir(os.path.join(dest, "m"))) == ["a", "b"]  # dir over dir merges
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "m")).st_mode) == 0o750


def test_file_over_dir_with_0000_subdir(sandbox):
    sandbox.extract(
        make_tar(d("x"), d("x/locked", 0o000), member("x/locked/f", data=b"1"),
                 member("x", data=b"now a file"))
    )
    assert os.path.isfile(os.path.join(sandbox.dest, "x"))


# -- limits and malformed input


def test_long_component(sandbox):
    with pytest.raises(LayerError, match="255"):
        sandbox.extract(make_tar(member("a/" + "n" * 256, data=b"x")))


def test_long_path(sandbox):
    with pytest.raises(LayerError, match="4096"):
        sandbox.extract(make_tar(member("/".join(["p" * 250] * 17), data=b"x")))


def test_long_symlink_target(sandbox):
    with pytest.raises(LayerError):
        sandbox.extract(make_tar(sym("l", "t" * 5000)))


def test_huge_pax_header(sandbox):
    data = encode_header(b"././@PaxHeader", b"x", size=100 << 20)
    with pytest.raises(LayerError, match="too large"):
        sandbox.extract(data)


def test_truncated(sandbox):
    data = make_tar(member("f", data=b"q" * 5000))
    with pytest.raises(LayerError, match="truncated"):
        sandbox.extract(data[:3000])


def test_garbage(sandbox):
    with pytest.raises(LayerError):
        sandbox.extract(os.urandom(4096))


def test_deep_tree_uses_few_descriptors(sandbox):
    # 1900 levels: more than the usual 1024 open files if every level stayed open
    name = "/".join(["a"] * 1900) + "/leaf"
    sandbox.extract(make_tar(member(name, data=b"deep")))
    fd = os.open(sandbox.dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1900):
            nfd = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        assert os.stat("leaf", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)


# -- legitimate but privileged content


def test_devices(sandbox):
    stats = sandbox.extract(
        make_tar(
            member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
            member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660),
            member("dev/fifo", tarfile.FIFOTYPE, mode=0o620),
        )
    )
    fifo = os.lstat(os.path.join(sandbox.dest, "dev", "fifo"))
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    null = os.path.join(sandbox.dest, "dev", "null")
    if IS_ROOT:
        st = os.lstat(null)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        assert stat.S_IMODE(st.st_mode) == 0o666
        assert stat.S_ISBLK(os.lstat(os.path.join(sandbox.dest, "dev", "sda")).st_mode)
        assert stats.skipped_devices == 0
    else:
        assert not os.path.lexists(null)
        assert stats.skipped_devices == 2
        assert len([n for n in sandbox.notices if "device" in n]) == 1


def test_setuid_bits_kept(sandbox):
    sandbox.extract(
        make_tar(
            member("bin/su", data=b"#!", mode=0o4755, uid=0, gid=0),
            member("bin/wall", data=b"#!", mode=0o2755, uid=0, gid=0),
            d("tmp", 0o1777),
        )
    )
    assert stat.S_IMODE(os.lstat(os.path.join(sandbox.dest, "bin/su")).st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(os.path.join(sandbox.dest, "bin/wall")).st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(os.path.join(sandbox.dest, "tmp")).st_mode) == 0o1777


@pytest.mark.skipif(not IS_ROOT, reason="chown to other ids needs root")
def test_owners_kept_as_root(sandbox):
    sandbox.extract(
        make_tar(member("f", data=b"x", mode=0o4750, uid=1234, gid=5678), d("dd"),
                 sym("l", "f")),
        keep_owners=True,
    )
    st = os.lstat(os.path.join(sandbox.dest, "f"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert stat.S_IMODE(st.st_mode) == 0o4750  # chown did not eat the setuid bit


@pytest.mark.skipif(not IS_ROOT, reason="chown to other ids needs root")
def test_owners_when_the_creator_already_owns_the_entry(sandbox):
    """New entries that should belong to the creating process are not chowned; an
    entry that existed already (a directory given twice) or a set-group-ID layer
    directory (its group passes on) still gets its owner."""
    os.chown(sandbox.dest, 0, 4321)
    os.chmod(sandbox.dest, 0o2755)
    sandbox.extract(
        make_tar(
            member("dd", tarfile.DIRTYPE, mode=0o755, uid=1000, gid=1000),
            member("dd", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0),
            member("f", data=b"x", uid=0, gid=0),
            member("f", data=b"y", uid=0, gid=4321),
            member("g", data=b"x", uid=1000, gid=1000),
            member("g", data=b"y", uid=0, gid=0),
            sym("l", "f"),
        ),
        keep_owners=True,
    )
    for name in ("dd", "g", "l"):
        st = os.lstat(os.path.join(sandbox.dest, name))
        assert (st.st_uid, st.st_gid) == (0, 0), name
    st = os.lstat(os.path.join(sandbox.dest, "f"))
    assert (st.st_uid, st.st_gid) == (0, 4321)


@pytest.mark.skipif(IS_ROOT, reason="needs an unprivileged user")
def test_keep_owners_without_privilege_tells_once(sandbox):
    sandbox.extract(
        make_tar(member("f", data=b"x", uid=0, gid=0), member("g", data=b"y", uid=5, gid=5)),
        keep_owners=True,
    )
    assert os.lstat(os.path.join(sandbox.dest, "f")).st_uid == os.getuid()
    assert len([n for n in sandbox.notices if "owner" in n]) == 1
