"""The tar writer of ``save``: tarfile's bytes, layer files sent with sendfile(2)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading

import pytest

from pbox import archive


def entries(tmp_path):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(os.urandom(3 * 1024 * 1024 + 77))
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    return [("file", "a" * 64 + "/layer.tar", str(layer), layer.stat().st_size),
            ("bytes", "b" * 64 + ".json", b'{"config": 1}', 0),
            ("file", "blobs/sha256/" + "c" * 64, str(small), 1000),
            ("bytes", "manifest.json", b"[]", 0)]


def write(sink, items) -> None:
    for kind, name, what, size in items:
        if kind == "file":
            sink.add_file(name, what, size)
        else:
            sink.add_bytes(name, what)
    sink.close()


def with_tarfile(items) -> bytes:
    """What the sink replaced: tarfile in stream mode, same headers."""
    out = io.BytesIO()
    tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    dirs: set = set()
    for kind, name, what, size in items:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                info = tarfile.TarInfo(d + "/")
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
                dirs.add(d)
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = 0o644, 0
        if kind == "file":
            info.size = size
            with open(what, "rb") as f:
                tar.addfile(info, f)
        else:
            info.size = len(what)
            tar.addfile(info, io.BytesIO(what))
    tar.close()
    return out.getvalue()


def test_same_bytes_as_tarfile_in_memory_and_in_a_file(tmp_path):
    items = entries(tmp_path)
    want = with_tarfile(items)
    mem = io.BytesIO()
    write(archive._TarSink(mem), items)
    assert mem.getvalue() == want
    path = tmp_path / "out.tar"
    with open(path, "wb") as f:
        sink = archive._TarSink(f)
        assert sink._fd is not None  # the sendfile path
        write(sink, items)
    assert path.read_bytes() == want


def test_through_a_pipe(tmp_path):
    items = entries(tmp_path)
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    got = []


    reader = threading.Thread(target=lambda: got.append(proc.stdout.read()))
    reader.start()
    write(archive._TarSink(proc.stdin), items)
    proc.stdin.close()
    reader.join()
    proc.wait()
    assert got[0] == with_tarfile(items)


def test_a_file_shorter_than_said_is_an_error(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"y" * 100)
    with open(tmp_path / "out.tar", "wb") as f, pytest.raises(archive.ArchiveError):
        archive._TarSink(f).add_file("x/layer.tar", str(short), 5000)
