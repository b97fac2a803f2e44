"""Tar-split: a pulled layer is written back byte for byte, so its diff id, the image's
config digest and its id survive a push elsewhere and a save/load.

The first tests run the extractor and the writer in this process on tars from several
writers (Python's tarfile in GNU, PAX and ustar formats, GNU tar when present); the
others push, save and load through the CLI against the real registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import harness
import pytest
from harness.images import REPO_PREFIX, LayerSpec, RegistryClient, build_image, busybox_layer

from pbox.storage import tarsplit
from pbox.storage.extract import LayerError, extract_layer
from pbox.storage.layertar import write_layer_tar

T0 = 1_600_000_000


def _add(tf, name, data=None, *, typ=tarfile.REGTYPE, mode=None, linkname="", uid=0,
         pax=None):
    if mode is None:
        mode = 0o755 if typ == tarfile.DIRTYPE else 0o644
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = typ, mode, T0, uid, uid
    info.uname = info.gname = "someone"
    info.linkname = linkname
    if pax:
        info.pax_headers = pax
    if data is not None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def sample_tar(fmt) -> bytes:
    """A layer with long names, a big file, links, a whiteout, an opaque dir and zero
    padding to the 10 KiB record (as tarfile and GNU tar do)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        _add(tf, "etc/", typ=tarfile.DIRTYPE, mode=0o755)
        _add(tf, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        _add(tf, "bin/", typ=tarfile.DIRTYPE, mode=0o755)
        _add(tf, "bin/big", os.urandom(3 * 1024 * 1024 + 17), mode=0o755)
        _add(tf, "bin/empty", b"")
        _add(tf, "bin/sh", typ=tarfile.SYMTYPE, linkname="big", mode=0o777)
        _add(tf, "bin/hard", typ=tarfile.LNKTYPE, linkname="bin/big")
        long_dir = "deep/" + "d" * 120 + "/"
        _add(tf, long_dir, typ=tarfile.DIRTYPE, mode=0o700)
        _add(tf, long_dir + "f" * 130, b"long name\n", uid=3000000)
        _add(tf, "data/.wh.gone", b"")
        _add(tf, "opq/", typ=tarfile.DIRTYPE)
        _add(tf, "opq/.wh..wh..opq", b"")
        _add(tf, "opq/new", b"only this")
        if fmt == tarfile.PAX_FORMAT:
            _add(tf, "x/attr", b"xattr", pax={"SCHILY.xattr.user.k": "v",
                                             "mtime": "1600000000.123456789"})
    return buf.getvalue()


def extract_with_split(tar: bytes, tmp_path):
    layer = tmp_path / "layer"
    (layer / "diff").mkdir(parents=True)
    split = str(layer / "tar-split")
    extract_layer(io.BytesIO(tar), str(layer / "diff"), keep_owners=False, split_to=split)
    return str(layer / "diff"), split


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["gnu", "pax", "ustar"])
def test_reassembled_tar_is_the_original(fmt, tmp_path):
    if fmt == tarfile.USTAR_FORMAT:
        tar = sample_tar_ustar()
    else:
        tar = sample_tar(fmt)
    diff, split = extract_with_split(tar, tmp_path)
    # the split file is small: headers, not contents
    assert os.path.getsize(split) < len(tar) // 20
    out = io.BytesIO()
    write_layer_tar(diff, out, split=split, diff_id=digest(tar))
    assert out.getvalue() == tar
    # without it the tar is regenerated: a valid tar, other bytes
    again = io.BytesIO()
    write_layer_tar(diff, again)
    assert again.getvalue() != tar


def test_global_pax_records_round_trip(tmp_path):
    """Records of a global PAX header apply to every later entry, an entry's empty
    record deletes one for that entry: the extractor and the recorder agree."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"mtime": "1500000000.5", "comment": "all"}) as tf:
        _add(tf, "a", b"first")
        _add(tf, "b", b"second", pax={"mtime": ""})  # back to the header's mtime
        _add(tf, "d/" + "n" * 150, b"long name")
    tar = buf.getvalue()
    diff, split = extract_with_split(tar, tmp_path)
    assert os.stat(os.path.join(diff, "a")).st_mtime_ns == 1_500_000_000_500_000_000
    assert os.stat(os.path.join(diff, "b")).st_mtime_ns == 1_600_000_000 * 10**9
    with open(os.path.join(diff, "d", "n" * 150), "rb") as f:
        assert f.read() == b"long name"
    out = io.BytesIO()
    write_layer_tar(diff, out, split=split, diff_id=digest(tar))
    assert out.getvalue() == tar


@pytest.mark.parametrize("module", ["zlib", "isal"])
def test_split_recorded_with_either_zlib_module(module, monkeypatch, tmp_path):
    """isal's CRC-32 and deflate record the split where isal is installed; reading it
    back (zlib) and checking the files' CRCs give the same tar either way."""
    import zlib

    from pbox.oci import compression

    if module == "isal":
        isal_zlib = pytest.importorskip("isal.isal_zlib")
        monkeypatch.setattr(compression, "_FAST_ZLIB", isal_zlib)
    else:
        monkeypatch.setattr(compression, "_FAST_ZLIB", zlib)
    tar = sample_tar(tarfile.PAX_FORMAT)
    diff, split = extract_with_split(tar, tmp_path)
    monkeypatch.setattr(compression, "_FAST_ZLIB", zlib if module == "isal" else None)
    out = io.BytesIO()
    write_layer_tar(diff, out, split=split, diff_id=digest(tar))
    assert out.getvalue() == tar


def sample_tar_ustar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        _add(tf, "a/", typ=tarfile.DIRTYPE)
        _add(tf, "a/b", b"x" * 1000)
        _add(tf, "a/.wh.c", b"")
    return buf.getvalue() + b"\0" * 4096  # more zeros after the end marker


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
def test_gnu_tar_output_round_trips(tmp_path):
    src = tmp_path / "src"
    (src / "dir" / ("n" * 150)).mkdir(parents=True)
    (src / "dir" / ("n" * 150) / "file").write_bytes(b"gnu tar long name\n")
    (src / "blob").write_bytes(os.urandom(70000))
    os.symlink("blob", src / "link")
    tar = subprocess.run(["tar", "-C", str(src), "-cf", "-", "--owner=0", "--group=0", "."],
                         check=True, capture_output=True).stdout
    diff, split = extract_with_split(tar, tmp_path)
    out = io.BytesIO()
    write_layer_tar(diff, out, split=split, diff_id=digest(tar))
    assert out.getvalue() == tar


def test_changed_or_missing_file_falls_back_to_a_new_tar(tmp_path):
    tar = sample_tar(tarfile.PAX_FORMAT)
    diff, split = extract_with_split(tar, tmp_path)
    fresh = io.BytesIO()
    write_layer_tar(diff, fresh)

    # same size, other content: not the original any more, and nothing half written
    path = os.path.join(diff, "etc", "passwd")
    with open(path, "r+b") as f:
        f.write(b"R")
    out = io.BytesIO()
    assert tarsplit.reassemble(split, diff, out) is False
    assert out.getvalue() == b""
    out = io.BytesIO()
    write_layer_tar(diff, out, split=split, diff_id=digest(tar))
    assert out.getvalue() != tar
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert tf.extractfile("etc/passwd").read().startswith(b"Root")

    # a file replaced by a symlink is never followed
    os.unlink(path)
    os.symlink("/etc/passwd", path)
    assert tarsplit.reassemble(split, diff, io.BytesIO()) is False

    # no split file, or a damaged one: regenerated
    os.unlink(path)
    os.symlink("../bin/big", path)
    assert tarsplit.reassemble(str(tmp_path / "missing"), diff, io.BytesIO()) is False
    with open(split, "r+b") as f:
        f.truncate(os.path.getsize(split) // 2)
    assert tarsplit.reassemble(split, diff, io.BytesIO()) is False


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 1 << 40])
def test_varints_round_trip_and_small_ones_are_one_byte(n):
    encoded = tarsplit._varint(n)
    assert tarsplit._read_varint(encoded + b"tail", 0) == (n, len(encoded))
    assert (len(encoded) == 1) == (n < 128)


class _Dribble:
    """A stream handing out pieces of every size from 1 byte up, as decompressors and
    read-ahead threads do: headers and contents split at any offset."""

    def __init__(self, data: bytes):
        self._data, self._pos, self._n = data, 0, 0

    def read(self, n=-1):
        self._n = self._n % 1031 + 1
        size = min(n if n and n > 0 else len(self._data), self._n * 7)
        piece = self._data[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece


def _tar_with_big_raw_parts() -> bytes:
    """Over a megabyte kept raw in a row: the data of a whiteout (not extracted) and a
    PAX header, between files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "a", b"before")
        _add(tf, ".wh.gone", os.urandom(2 * 1024 * 1024 + 300))
        _add(tf, "b", os.urandom(5000), pax={"comment": "c" * 1_500_000})
    return buf.getvalue()


@pytest.mark.parametrize("tar", [sample_tar(tarfile.PAX_FORMAT), _tar_with_big_raw_parts()],
                         ids=["sample", "big-raw"])
def test_any_read_sizes_give_the_same_split(tar, tmp_path):
    splits = []
    for name, stream in (("whole", io.BytesIO(tar)), ("dribble", _Dribble(tar))):
        layer = tmp_path / name
        (layer / "diff").mkdir(parents=True)
        split = str(layer / "tar-split")
        extract_layer(stream, str(layer / "diff"), keep_owners=False, split_to=split)
        out = io.BytesIO()
        assert tarsplit.reassemble(split, str(layer / "diff"), out, digest(tar))
        assert out.getvalue() == tar
        with open(split, "rb") as f:
            splits.append(f.read())
    assert splits[0] == splits[1]
    # contents are referenced, whatever is not extracted is kept: the split is about
    # as big as the raw parts, compressed
    assert len(splits[0]) < (8 << 20 if len(tar) > 3 << 20 else len(tar) // 20)


def test_an_unwritable_split_file_does_not_fail_the_extraction(tmp_path):
    tar = sample_tar(tarfile.GNU_FORMAT)
    (tmp_path / "diff").mkdir()
    split = tmp_path / "missing-dir" / "tar-split"
    extract_layer(io.BytesIO(tar), str(tmp_path / "diff"), keep_owners=False,
                  split_to=str(split))
    assert (tmp_path / "diff" / "etc" / "passwd").read_bytes().startswith(b"root:")
    assert not split.exists()
    # and a layer without its split file is written as a new tar
    out = io.BytesIO()
    assert tarsplit.reassemble(str(split), str(tmp_path / "diff"), out) is False


def test_a_name_written_twice_gives_a_new_tar(tmp_path):
    # the first content is not in the layer any more: the original cannot be rebuilt
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "twice", b"first version")
        _add(tf, "twice", b"second, longer version")
    diff, split = extract_with_split(buf.getvalue(), tmp_path)
    out = io.BytesIO()
    write_layer_tar(diff, out, split=split, diff_id=digest(buf.getvalue()))
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert [m.name for m in tf.getmembers()] == ["twice"]
        assert tf.extractfile("twice").read() == b"second, longer version"


def test_failed_extraction_leaves_no_split_file(tmp_path):
    tar = sample_tar(tarfile.GNU_FORMAT)
    layer = tmp_path / "layer"
    (layer / "diff").mkdir(parents=True)
    split = layer / "tar-split"
    with pytest.raises(LayerError):
        extract_layer(io.BytesIO(tar[: len(tar) // 2 + 100]), str(layer / "diff"),
                      keep_owners=False, split_to=str(split))
    assert not split.exists()


# -- through the CLI ------------------------------------------------------------------------


def _skopeo(*args: str) -> bytes:
    return harness.skopeo(*args)


def _decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        import gzip

        return gzip.decompress(blob)
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(blob)


def _manifest_and_config(dest: str):
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}"))
    config = json.loads(_skopeo("inspect", "--config", "--tls-verify=false",
                                f"docker://{dest}"))
    return manifest, config


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_pulled_image_pushed_elsewhere_keeps_config_and_diff_ids(
        compression, registry_plain, registry_factory, test_images, run_pbox, pbox_root,
        tmp_path):
    img = test_images(registry_plain).layers  # five layers: whiteouts, opaque dir, links
    run_pbox("pull", "-q", img.reference)
    layers_dir = os.path.join(pbox_root.root, "layers")
    assert all(os.path.isfile(os.path.join(layers_dir, c, "tar-split"))
               for c in os.listdir(layers_dir))
    other = registry_factory("plain")
    dest = f"{other.host}/elsewhere/layers:copy"
    run_pbox("push", "--compression-format", compression, img.reference, dest)

    manifest, config = _manifest_and_config(dest)
    assert manifest["config"]["digest"] == img.config_digest
    assert config["rootfs"]["diff_ids"] == img.diff_ids
    # skopeo copies it (checking every blob's digest); the layers decompress to the
    # diff ids the config names
    layout = tmp_path / "copy"
    _skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:x")
    blobs = layout / "blobs" / "sha256"
    got = [digest(_decompress((blobs / d["digest"][7:]).read_bytes()))
           for d in manifest["layers"]]
    assert got == img.diff_ids

    # the same repository of the first registry: nothing differs, nothing is re-pushed
    r = run_pbox("push", img.reference, f"{registry_plain.host}/pbox-test/layers:again")
    assert "Pushed" not in r.stdout


def test_save_load_keeps_the_image_id(registry_plain, test_images, run_pbox, tmp_path):
    img = test_images(registry_plain).layers
    run_pbox("pull", "-q", img.reference)
    path = tmp_path / "layers.tar"
    run_pbox("save", "-o", path, img.reference)
    with tarfile.open(path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        assert manifest[0]["Config"].endswith(img.config_digest[7:] + ".json") or \
            img.config_digest[7:] in manifest[0]["Config"]
        tars = [tf.extractfile(name).read() for name in manifest[0]["Layers"]]
    assert [digest(t) for t in tars] == img.diff_ids
    run_pbox("rmi", img.reference)
    run_pbox("load", "-i", path)
    got = json.loads(run_pbox("inspect", img.reference).stdout)[0]
    assert got["Id"] == img.config_digest
    assert got["RootFS"]["Layers"] == img.diff_ids
    # loaded layers carry a split file too: a second save gives the same bytes
    again = tmp_path / "again.tar"
    run_pbox("save", "-o", again, img.reference)
    with tarfile.open(again) as tf:
        manifest2 = json.load(tf.extractfile("manifest.json"))
        assert [digest(tf.extractfile(n).read()) for n in manifest2[0]["Layers"]] == img.diff_ids
    assert run_pbox("run", "--rm", img.reference, "cat", "/data/kept.txt").stdout == "kept\n"


def test_rmi_removes_the_split_files(registry_plain, test_images, run_pbox, pbox_root):
    img = test_images(registry_plain).layers
    run_pbox("pull", "-q", img.reference)
    layers_dir = os.path.join(pbox_root.root, "layers")
    assert len(os.listdir(layers_dir)) == len(img.diff_ids)
    run_pbox("rmi", img.reference)
    assert os.listdir(layers_dir) == []
    assert os.listdir(os.path.join(pbox_root.root, "tmp")) == []


def _split_files(root: str) -> list[str]:
    found = []
    for top, _dirs, files in os.walk(root):
        if "tar-split" in files and "diff" in _dirs:
            found.append(os.path.relpath(os.path.join(top, "tar-split"), root))
    return sorted(found)


def test_killed_pull_leaves_no_split_file_behind(registry_factory, pbox_cmd, pbox_root,
                                                 run_pbox, tmp_path):
    """kill -9 while a layer (and its split file) is being written: the next pull removes
    the half layer with its split file, and every committed layer's split rebuilds it."""
    reg = registry_factory("plain")
    big = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(40 * 1024 * 1024 // 32))
    img = build_image([busybox_layer(), LayerSpec("COPY big").file("/big.bin", big)],
                      labels={"org.opencontainers.image.title": "tarsplit-kill"})
    pushed = RegistryClient(reg).push_image(f"{REPO_PREFIX}/tarsplit-kill", "latest", img)
    root = pbox_root.root
    env = pbox_root.env_with(None)
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
    proc = subprocess.Popen([*pbox_cmd, "pull", "-q", pushed.reference], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    seen = []
    try:
        while proc.poll() is None and not seen:
            tmp = os.path.join(root, "tmp")
            seen = _split_files(tmp) if os.path.isdir(tmp) else []
            time.sleep(0.002)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert seen, "the pull ended before a split file was seen being written"
    run_pbox("pull", "-q", pushed.reference)
    assert os.listdir(os.path.join(root, "tmp")) == []
    layers = sorted(os.listdir(os.path.join(root, "layers")))
    assert _split_files(os.path.join(root, "layers")) == [
        os.path.join(c, "tar-split") for c in layers]
    # each split is whole: save writes the pulled tars again
    out = tmp_path / "saved.tar"
    run_pbox("save", "-o", out, pushed.reference)
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        got = [digest(tf.extractfile(n).read()) for n in manifest[0]["Layers"]]
    assert got == pushed.diff_ids
