"""Layer tars on a real file system: write_layer_tar -> extract_layer round trips,
determinism, interoperability with the system's tar, and the fsutil helpers.

Runs as root and as an unprivileged user (whiteout devices 0/0 need Linux >= 5.8).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile

import pytest

from pbox.storage.extract import LayerExtraction, extract_layer
from pbox.storage.fsutil import atomic_write, fsync_dir, remove_tree
from pbox.storage.layertar import write_layer_tar

IS_ROOT = os.geteuid() == 0
T0 = 1_600_000_000
TAR = shutil.which("tar")


def _user_xattrs_supported(path) -> bool:
    probe = os.path.join(path, ".xattr-probe")
    open(probe, "w").close()
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


def build_tree(root, order=1):
    """A tree with every kind of entry a layer holds; ``order`` only changes the order
    (and so the inode numbers) in which things are created."""
    big = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)

    def files():
        yield "etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644
        yield "bin/su", b"\x7fELF fake", 0o4755
        yield "bin/wall", b"\x7fELF", 0o2755
        yield "usr/lib/big.so", big, 0o755
        yield "usr/lib/empty", b"", 0o600
        yield "ro/inside", b"in a 0555 dir", 0o444
        yield "uni/\u00e9t\u00e9", b"utf8 name", 0o644
        yield "long/" + "n" * 120 + "/" + "m" * 120, b"long name", 0o644
        yield "opq/new", b"only this", 0o644

    dirs = [("etc", 0o755), ("bin", 0o755), ("usr", 0o755), ("usr/lib", 0o755),
            ("ro", 0o555), ("uni", 0o755), ("long", 0o755), ("long/" + "n" * 120, 0o700),
            ("opq", 0o755), ("tmp", 0o1777), ("empty", 0o750)]
    items = list(files())
    if order < 0:
        items.reverse()
        dirs_sorted = sorted(dirs)
    else:
        dirs_sorted = dirs
    for name, _mode in dirs_sorted:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for name, data, mode in items:
        p = os.path.join(root, name)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
    os.link(os.path.join(root, "bin/su"), os.path.join(root, "bin/su-link"))
    os.symlink("../etc/passwd", os.path.join(root, "bin/rel-link"))
    os.symlink("/etc/shadow", os.path.join(root, "bin/abs-dangling"))
    os.mkfifo(os.path.join(root, "tmp/fifo"), 0o640)
    os.mknod(os.path.join(root, "etc/removed"), stat.S_IFCHR, os.makedev(0, 0))  # whiteout
    os.mknod(os.path.join(root, "usr/.wh-lookalike"), stat.S_IFCHR, os.makedev(0, 0))
    # kernel overlayfs may give all its whiteouts one inode: still not hardlinks in the tar
    os.link(os.path.join(root, "etc/removed"), os.path.join(root, "usr/removed-too"))
    if _user_xattrs_supported(root):
        os.setxattr(os.path.join(root, "opq"), "user.overlay.opaque", b"y")
        os.setxattr(os.path.join(root, "etc/passwd"), "user.note", b"\x00binary\xff")
        os.setxattr(os.path.join(root, "opq/new"), "user.overlay.origin", b"internal")
    # mtimes last, deepest first, so that creating children does not move them
    for dirpath, dirnames, filenames in sorted(os.walk(root), reverse=True):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), ns=(T0 * 10**9 + 5, T0 * 10**9 + 5),
                     follow_symlinks=False)
        for name in dirnames:
            os.utime(os.path.join(dirpath, name), (T0 + 100, T0 + 100), follow_symlinks=False)
    for name, mode in dirs:
        os.chmod(os.path.join(root, name), mode)


def describe_tree(root):
    """Everything a layer carries, per relative path; inodes as hardlink groups."""
    out = {}
    groups = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xattrs = os.listxattr(p, follow_symlinks=False)
            d = {"type": stat.S_IFMT(st.st_mode), "mtime": st.st_mtime_ns // 10**9,
                 "xattrs": sorted(k for k in xattrs if k.startswith("user.")
                                  and not k.startswith(("user.overlay.", "user.fuseoverlayfs."))),
                 "opaque": "user.overlay.opaque" in xattrs}
            if not stat.S_ISLNK(st.st_mode):
                d["mode"] = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    d["sha"] = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    d["group"] = groups.setdefault(st.st_ino, len(groups))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d["rdev"] = st.st_rdev
            out[rel] = d
    return out


def tar_of(root, **kw) -> bytes:
    buf = io.BytesIO()
    write_layer_tar(str(root), buf, **kw)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _cleanup(tmp_path):
    yield
    remove_tree(str(tmp_path))  # 0555 dirs and the like would trouble pytest


def test_round_trip(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    build_tree(str(src))
    data = tar_of(src)
    stats = extract_layer(io.BytesIO(data), str(dst), keep_owners=IS_ROOT)
    assert describe_tree(str(dst)) == describe_tree(str(src))
    assert stats.whiteouts == 3
    inodes = {}
    for dp, _, fs in os.walk(src):
        for f in fs:
            st = os.lstat(os.path.join(dp, f))
            if stat.S_ISREG(st.st_mode):
                inodes[st.st_ino] = st.st_size
    assert stats.bytes_written == sum(inodes.values())  # hardlinked data written once
    # extracting the extracted tree's tar gives the same bytes: nothing drifted
    assert tar_of(dst) == data
    if _user_xattrs_supported(str(src)):
        assert os.getxattr(dst / "opq", "user.overlay.opaque") == b"y"
        assert os.getxattr(dst / "opq", "user.fuseoverlayfs.opaque") == b"y"
        assert os.getxattr(dst / "etc/passwd", "user.note") == b"\x00binary\xff"
        assert "user.overlay.origin" not in os.listxattr(dst / "opq/new")
    wh = os.lstat(dst / "etc/removed")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0


def test_tar_layout(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    build_tree(str(src))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    with tarfile.open(fileobj=io.BytesIO(tar_of(src))) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    by_name = {m.name: m for m in members}
    # tree order: a directory, then its children sorted; dirs before their contents
    assert names.index("usr") < names.index("usr/lib") < names.index("usr/lib/big.so")
    assert names.index("etc/.wh.removed") < names.index("etc/passwd")
    assert "etc/removed" not in by_name
    assert by_name["etc/.wh.removed"].isreg() and by_name["etc/.wh.removed"].size == 0
    assert "usr/.wh..wh-lookalike" in by_name
    assert by_name["usr/.wh.removed-too"].isreg()
    assert "sock" not in by_name  # sockets cannot be in a tar
    assert by_name["bin/su-link"].islnk() and by_name["bin/su-link"].linkname == "bin/su"
    assert by_name["bin/su"].mode == 0o4755
    assert by_name["bin/rel-link"].issym() and by_name["bin/rel-link"].linkname == "../etc/passwd"
    assert by_name["tmp/fifo"].isfifo()
    assert by_name["ro"].mode == 0o555
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert "uni/\u00e9t\u00e9" in by_name
    if _user_xattrs_supported(str(src)):
        i = names.index("opq")
        assert names[i + 1] == "opq/.wh..wh..opq"
        assert by_name["etc/passwd"].pax_headers["SCHILY.xattr.user.note"]
        assert not any(k.startswith("SCHILY.xattr.user.overlay")
                       for m in members for k in m.pax_headers)


def test_deterministic_whatever_the_creation_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    build_tree(str(a), order=1)
    build_tree(str(b), order=-1)
    assert tar_of(a) == tar_of(b)
    assert tar_of(a) == tar_of(a)


def test_mtime_clamp_and_owners(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    build_tree(str(a))
    build_tree(str(b))
    os.utime(b / "etc/passwd", (T0 + 5000, T0 + 5000))  # differs, but above the clamp
    assert tar_of(a) != tar_of(b)
    clamp = T0 - 10  # below every mtime of both trees
    ta = tar_of(a, mtime_clamp=clamp, owners=(0, 0))
    assert ta == tar_of(b, mtime_clamp=clamp, owners=(0, 0))
    with tarfile.open(fileobj=io.BytesIO(ta)) as tf:
        for m in tf.getmembers():
            assert m.mtime == clamp
            assert (m.uid, m.gid) == (0, 0)
    with tarfile.open(fileobj=io.BytesIO(tar_of(a, owners=(1000, 100)))) as tf:
        assert {(m.uid, m.gid) for m in tf.getmembers()} == {(1000, 100)}


def test_opaque_marker_file_counts_as_opaque(tmp_path):
    # fuse-overlayfs without xattr support marks opaque dirs with a file
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / ".wh..wh..opq").write_bytes(b"")
    (src / "d" / "a").write_bytes(b"a")
    with tarfile.open(fileobj=io.BytesIO(tar_of(src))) as tf:
        assert tf.getnames() == ["d", "d/.wh..wh..opq", "d/a"]


def test_0555_and_0000_dirs_receive_children(tmp_path):
    members = [("ro", 0o555), ("none", 0o000), ("none/deeper", 0o500)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mode in members:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.mtime = T0
            tf.addfile(info)
        for name in ("ro/f", "none/f", "none/deeper/f"):
            info = tarfile.TarInfo(name)
            info.size = 1
            info.mode = 0o400
            tf.addfile(info, io.BytesIO(b"x"))
    dst = tmp_path / "dst"
    dst.mkdir()
    extract_layer(io.BytesIO(buf.getvalue()), str(dst), keep_owners=IS_ROOT)
    for name, mode in members:
        if name == "none/deeper":
            os.chmod(dst / "none", 0o700)  # to look inside, as any user
        st = os.lstat(dst / name)
        assert stat.S_IMODE(st.st_mode) == mode, name
        assert st.st_mtime == T0, name
    os.chmod(dst / "none/deeper", 0o700)
    assert sorted(os.listdir(dst / "none")) == ["deeper", "f"]
    assert os.listdir(dst / "none/deeper") == ["f"]
    os.chmod(dst / "none/deeper", 0o000)
    os.chmod(dst / "none", 0o000)
    remove_tree(str(dst))
    assert not dst.exists()


class Dribble(io.RawIOBase):
    """A network-like stream: short reads of varying size, no seek; counts what was read."""

    def __init__(self, data: bytes):
        self._data = data
        self.pos = 0
        self._sizes = [1, 511, 513, 4096, 70000, 3, 1 << 20]
        self._i = 0

    def readable(self):
        return True

    def seekable(self):
        return False

    def read(self, size=-1):
        k = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        if size >= 0:
            k = min(k, size)
        out = self._data[self.pos : self.pos + k]
        self.pos += len(out)
        return out


def test_stream_short_reads_and_drain(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    build_tree(str(src))
    data = tar_of(src) + bytes(10240) + b"trailing bytes after the end marker"
    stream = Dribble(data)
    extract_layer(stream, str(dst), keep_owners=False)
    assert stream.pos == len(data)  # read to the end: the digest covers everything
    assert describe_tree(str(dst)) == describe_tree(str(src))


def test_an_extraction_set_up_first_runs_once_or_is_given_back(tmp_path):
    """``LayerExtraction``: set up (the split file begun), then run once; one closed
    without running leaves no split file and holds no descriptor."""
    src = tmp_path / "src"
    src.mkdir()
    build_tree(str(src))
    data = tar_of(src)
    fds = len(os.listdir("/proc/self/fd"))
    for n, use in enumerate(("run", "close")):
        dst, split = tmp_path / f"dst{n}", tmp_path / f"split{n}"
        dst.mkdir()
        job = LayerExtraction(str(dst), keep_owners=False, split_to=str(split))
        assert split.exists()
        if use == "run":
            job.run(io.BytesIO(data))
            assert describe_tree(str(dst)) == describe_tree(str(src)) and split.exists()
            with pytest.raises(ValueError):
                job.run(io.BytesIO(data))
        else:
            job.close()
            job.close()
            assert not split.exists() and os.listdir(dst) == []
            with pytest.raises(ValueError):
                job.run(io.BytesIO(data))
        assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.skipif(TAR is None, reason="no tar program")
def test_system_tar_reads_ours_and_we_read_its(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    build_tree(str(src))
    ours = tmp_path / "ours.tar"
    ours.write_bytes(tar_of(src))
    # GNU tar (or bsdtar) extracts our tar to the same tree
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run([TAR, "-xpf", str(ours), "-C", str(by_tar)], check=True)
    want = {k: v for k, v in describe_tree(str(src)).items() if "removed" not in k
            and "lookalike" not in k}  # whiteouts: .wh. files for a plain tar
    got = {k: v for k, v in describe_tree(str(by_tar)).items() if ".wh." not in k}
    for d in (want, got):
        for v in d.values():
            v.pop("xattrs")
            v.pop("opaque")
    assert got == want
    # and we extract what it makes (GNU format: long names as ././@LongLink)
    for name in ("etc/.wh.removed", "usr/.wh..wh-lookalike", "usr/.wh.removed-too",
                 "opq/.wh..wh..opq"):
        os.unlink(by_tar / name)
    theirs = tmp_path / "theirs.tar"
    subprocess.run([TAR, "-cf", str(theirs), "-C", str(by_tar), "."], check=True)
    dst = tmp_path / "dst"
    dst.mkdir()
    with open(theirs, "rb") as f:
        extract_layer(f, str(dst), keep_owners=IS_ROOT)
    assert describe_tree(str(dst)) == describe_tree(str(by_tar))


def test_whiteout_over_existing_name_keeps_the_entry(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, typ in [("f", tarfile.REGTYPE), (".wh.f", tarfile.REGTYPE),
                          ("d", tarfile.DIRTYPE), (".wh.d", tarfile.REGTYPE),
                          (".wh.g", tarfile.REGTYPE), ("g", tarfile.DIRTYPE),
                          (".wh.h", tarfile.REGTYPE), ("h/inner", tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type = typ
            tf.addfile(info, io.BytesIO(b"") if typ == tarfile.REGTYPE else None)
    dst = tmp_path / "dst"
    dst.mkdir()
    stats = extract_layer(io.BytesIO(buf.getvalue()), str(dst), keep_owners=False)
    assert stats.whiteouts == 4
    assert stat.S_ISREG(os.lstat(dst / "f").st_mode)
    for name in ("d", "g", "h"):  # the layer's own dir hides the lower one: opaque
        assert stat.S_ISDIR(os.lstat(dst / name).st_mode)
        if _user_xattrs_supported(str(tmp_path)):
            assert os.getxattr(dst / name, "user.overlay.opaque") == b"y", name
    assert os.path.isfile(dst / "h/inner")


# -- fsutil


def test_remove_tree_modes_symlinks_and_depth(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    top = tmp_path / "top"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_bytes(b"x")
    os.symlink(str(outside), top / "a" / "to-outside")
    os.symlink(str(outside / "keep"), top / "keep-link")
    os.chmod(top / "a" / "b", 0o000)
    os.chmod(top / "a", 0o555)
    # deeper than the open-file limit, built with descriptors (paths would be too long)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    remove_tree(str(top))
    assert not os.path.lexists(top)
    assert (outside / "keep").read_bytes() == b"k"
    remove_tree(str(top))  # missing: fine
    os.symlink(str(outside), tmp_path / "link")
    remove_tree(str(tmp_path / "link"))  # a symlink is removed, not followed
    assert not os.path.lexists(tmp_path / "link") and (outside / "keep").exists()


def test_atomic_write(tmp_path):
    p = tmp_path / "rec.json"
    atomic_write(str(p), b"one", mode=0o600)
    assert p.read_bytes() == b"one"
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o600
    atomic_write(str(p), b"two")
    assert p.read_bytes() == b"two"
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["rec.json"]  # no temp file left
    fsync_dir(str(tmp_path))
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "missing" / "x"), b"")


UNSHARE = shutil.which("unshare")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(UNSHARE is None, reason="no unshare program")
def test_unmapped_owners_fall_back_to_root_in_a_user_namespace(tmp_path):
    # in "unshare -Ur" only id 0 is mapped: chown to 1234 fails with EINVAL
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, uid in (("mine", 0), ("theirs", 1234), ("theirs2", 4321)):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = 1, uid, uid, 0o4755
            tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "layer.tar").write_bytes(buf.getvalue())
    (tmp_path / "dst").mkdir()
    script = (
        "import sys, os\n"
        "from pbox.storage.extract import extract_layer\n"
        "notices = []\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    extract_layer(f, sys.argv[2], keep_owners=True, notice=notices.append)\n"
        "print(len(notices), notices[0] if notices else '')\n"
        "print(os.lstat(os.path.join(sys.argv[2], 'theirs')).st_uid)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [UNSHARE, "-Ur", sys.executable, "-c", script, str(tmp_path / "layer.tar"),
         str(tmp_path / "dst")],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0 and "unshare" in proc.stderr and "Operation not permitted" in proc.stderr:
        pytest.skip("user namespaces are not available here")
    assert proc.returncode == 0, proc.stderr
    first, uid_in_ns = proc.stdout.splitlines()
    assert first.startswith("1 ") and "ids (1234:1234)" in first  # told once, not twice
    assert uid_in_ns == "0"
    st = os.lstat(tmp_path / "dst" / "theirs")
    assert st.st_uid == os.getuid()  # ns root is us outside
    assert stat.S_IMODE(st.st_mode) == 0o4755
