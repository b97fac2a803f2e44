"""Pure parts of layer tar reading and writing: header fields, PAX records, names."""

from __future__ import annotations

import io
import tarfile

import pytest

from pbox.errors import UnsupportedFormat
from pbox.storage import layertar, tarread
from pbox.storage.layertar import encode_header, pax_record
from pbox.storage.tarread import (
    LayerError,
    UnsafeLayer,
    header_checksum_ok,
    parse_header,
    parse_number,
    parse_pax,
    split_name,
)
from pbox.storage.whiteout import OPAQUE_MARKER, whiteout_target

# -- numbers


@pytest.mark.parametrize(
    "field, value",
    [
        (b"0000644\0", 0o644),
        (b"   644 \0", 0o644),
        (b"\0\0\0\0\0\0\0\0", 0),
        (b"00000000012\0", 10),
        (b"\x80" + b"\0" * 3 + (12345678901).to_bytes(8, "big"), 12345678901),
        (b"\xff" * 11 + b"\xfe", -2),
    ],
)
def test_parse_number(field, value):
    assert parse_number(field) == value


def test_parse_number_rejects_garbage():
    with pytest.raises(LayerError):
        parse_number(b"12x4\0")


# -- PAX records


def test_pax_record_length_counts_itself():
    for key, value in [("path", b"a"), ("path", b"x" * 95), ("path", b"x" * 996)]:
        rec = pax_record(key, value)
        length, _, rest = rec.partition(b" ")
        assert int(length) == len(rec)
        assert rest == key.encode() + b"=" + value + b"\n"


def test_parse_pax_round_trip_with_binary_and_newlines():
    data = (
        pax_record("path", "dïr/ñame".encode())
        + pax_record("SCHILY.xattr.user.bin", b"\x00\xff=\n ")
        + pax_record("mtime", b"1700000000.5")
    )
    records = parse_pax(data + b"\0" * 20)
    assert records == {
        "path": "dïr/ñame".encode(),
        "SCHILY.xattr.user.bin": b"\x00\xff=\n ",
        "mtime": b"1700000000.5",
    }


@pytest.mark.parametrize("data", [b"5 a=b\n", b"99 path=x\n", b"x path=y\n", b"8 pathx\n"])
def test_parse_pax_rejects_bad_records(data):
    with pytest.raises(LayerError):
        parse_pax(data)


def test_apply_pax_fields():
    entry = tarread.TarEntry(name=b"short", type=b"0")
    tarread.apply_pax(
        entry,
        {
            "path": b"long/name",
            "linkpath": b"target",
            "size": b"123",
            "uid": b"100000",
            "gid": b"7",
            "mtime": b"-1.25",
            "SCHILY.xattr.user.a": b"1",
            "LIBARCHIVE.xattr.user.b%3Dc": b"Mg",
            "atime": b"5",
        },
    )
    assert entry.name == b"long/name"
    assert entry.linkname == b"target"
    assert (entry.size, entry.uid, entry.gid) == (123, 100000, 7)
    assert entry.mtime_ns == -1_250_000_000
    assert entry.xattrs == {"user.a": b"1", "user.b=c": b"2"}


def test_apply_pax_refuses_sparse():
    with pytest.raises(LayerError, match="sparse"):
        tarread.apply_pax(tarread.TarEntry(name=b"a", type=b"0"), {"GNU.sparse.map": b"0,1"})


# -- names


@pytest.mark.parametrize(
    "name, parts",
    [
        (b"a/b/c", (b"a", b"b", b"c")),
        (b"./a//b/./c/", (b"a", b"b", b"c")),
        (b"/etc/passwd", (b"etc", b"passwd")),
        (b"./", ()),
        (b"/", ()),
        (b"a..b/..c", (b"a..b", b"..c")),
    ],
)
def test_split_name(name, parts):
    assert split_name(name) == parts


@pytest.mark.parametrize("name", [b"..", b"../x", b"a/../../x", b"a/..", b"/../etc"])
def test_split_name_refuses_dotdot(name):
    with pytest.raises(UnsafeLayer, match="'\\.\\.'"):
        split_name(name)


def test_split_name_limits():
    split_name(b"x" * 255)
    with pytest.raises(LayerError, match="255"):
        split_name(b"x" * 256)
    ok = b"/".join([b"y" * 200] * 20)  # 4019 bytes
    assert len(split_name(ok)) == 20
    with pytest.raises(LayerError, match="4096"):
        split_name(b"/".join([b"y" * 200] * 21))
    with pytest.raises(LayerError, match="NUL"):
        split_name(b"a\0b")


def test_errors_are_unsupported_format():
    assert issubclass(UnsafeLayer, LayerError)
    assert issubclass(LayerError, UnsupportedFormat)


@pytest.mark.parametrize(
    "component, target",
    [
        (b"file", None),
        (b".wh.file", b"file"),
        (b".wh..hidden", b".hidden"),
        (b".wh..wh..opq", OPAQUE_MARKER),
        (b".wh..wh.plnk", b""),
        (b".wh..wh.aufs", b""),
        (b".whx", None),
    ],
)
def test_whiteout_target(component, target):
    assert whiteout_target(component) == target


@pytest.mark.parametrize("component", [b".wh.", b".wh..", b".wh..."])
def test_whiteout_of_dot_or_dotdot_is_unsafe(component):
    with pytest.raises(UnsafeLayer):
        whiteout_target(component)


# -- headers


def _tar_bytes(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_parse_header_ustar_prefix_and_checksum():
    name = "d" * 120 + "/" + "f" * 90
    info = tarfile.TarInfo(name)
    info.size = 3
    info.mode = 0o4755
    info.uid, info.gid, info.mtime = 1000, 2000, 1_600_000_000
    block = _tar_bytes([(info, b"abc")], fmt=tarfile.USTAR_FORMAT)[:512]
    entry = parse_header(block)
    assert entry.name == name.encode()
    assert (entry.mode, entry.uid, entry.gid, entry.size) == (0o4755, 1000, 2000, 3)
    assert entry.mtime_ns == 1_600_000_000 * 10**9
    bad = bytearray(block)
    bad[0] ^= 1
    with pytest.raises(LayerError, match="checksum"):
        parse_header(bytes(bad))


@pytest.mark.parametrize("block", [bytes(512), b"A" * 512, b"\x80" * 512, b"\xff" * 512,
                                   b"\xff" * 10 + bytes(502)])
def test_header_checksum_is_the_sum_of_the_bytes(block):
    """POSIX's checksum: the unsigned sum of the 512 bytes, its own field counted as 8
    spaces; blocks of high bytes sum past 65521, where a sum taken modulo Adler-32's
    prime would go wrong.  Old tars' signed sums are taken too (the last block)."""
    block = bytearray(block)
    block[148:156] = b" " * 8
    unsigned = sum(block)
    signed = sum(b - 256 if b > 127 else b for b in block)
    cases = [(unsigned, True), (unsigned + 1, False), (unsigned - 65521, False)]
    if 0 <= signed != unsigned:
        cases.append((signed, True))
    for stored, ok in cases:
        if stored < 0:
            continue
        block[148:156] = b"%06o\0 " % stored
        assert header_checksum_ok(bytes(block)) is ok, stored


@pytest.mark.parametrize("name, high", [(b"plain", False), (b"\xff" * 100, False),
                                        (b"\xc3\xa9t\xc3\xa9" * 20, False),
                                        (b"\xff" * 100, True)])
def test_parse_header_checks_the_sum_as_header_checksum_ok_does(name, high):
    """parse_header's own (inline) test of the common case agrees with
    header_checksum_ok: the unsigned sum and an old tar's signed sum in any of the
    field's spellings pass; one more, or a sum taken modulo Adler-32's prime (``high``:
    a block summing past it), fails."""
    info = tarfile.TarInfo("x")
    info.mtime = 1_600_000_000
    block = bytearray(_tar_bytes([(info, b"")], fmt=tarfile.USTAR_FORMAT)[:512])
    block[0:100] = name.ljust(100, b"\0")
    if high:  # linkname, uname and gname too (a regular file's linkname is not read)
        block[157:257] = b"\xff" * 100
        block[265:329] = b"\xff" * 64
    block[148:156] = b" " * 8
    unsigned = sum(block)
    signed = sum(b - 256 if b > 127 else b for b in block)
    cases = [(b"%06o\0 " % unsigned, True), (b"%07o\0" % unsigned, True),
             (b"  %05o " % unsigned if unsigned < 0o100000 else b"%06o  " % unsigned, True),
             (b"%06o\0 " % (unsigned + 1), False)]
    assert (unsigned >= 65521) is high
    if high:
        cases.append((b"%06o\0 " % (unsigned - 65521), False))
    if 0 <= signed != unsigned:
        cases.append((b"%06o\0 " % signed, True))
    for field, ok in cases:
        assert len(field) == 8
        block[148:156] = field
        assert header_checksum_ok(bytes(block)) is ok, field
        if ok:
            assert parse_header(bytes(block)).name == name.rstrip(b"\0"), field
        else:
            with pytest.raises(LayerError, match="checksum"):
                parse_header(bytes(block))


def _with_fields(block: bytes, **fields: bytes) -> bytes:
    """``block`` with header fields replaced (offsets of ustar) and its checksum redone."""
    at = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
          "mtime": (136, 12), "linkname": (157, 100), "prefix": (345, 155)}
    out = bytearray(block)
    for key, value in fields.items():
        start, length = at[key]
        out[start : start + length] = value.ljust(length, b"\0")[:length]
    out[148:156] = b" " * 8
    out[148:156] = b"%06o\0 " % sum(out)
    return bytes(out)


@pytest.mark.parametrize("fields, expected", [
    # octal text ended by NUL or blanks, or blank-padded in front (old tars)
    ({}, (0o4755, 1000, 2000, 3, 1_600_000_000)),
    ({"uid": b" 1750 \0", "size": b"        12 "}, (0o4755, 1000, 2000, 10, 1_600_000_000)),
    # every digit used, no terminator
    ({"mode": b"00004755", "gid": b"00003720", "mtime": b"013727410000"},
     (0o4755, 1000, 2000, 3, 1_600_000_000)),
    # an empty field is 0; text after the NUL is ignored (per field, the slow way)
    ({"gid": b"\0\0\0\0\0\0\0\0", "mode": b"644\0junk"}, (0o644, 1000, 0, 3, 1_600_000_000)),
    # GNU base-256 numbers: a big uid, a size over 8 GiB, a negative mtime
    ({"uid": b"\x80" + (2**31).to_bytes(7, "big"),
      "size": b"\x80" + (9 << 30).to_bytes(11, "big"),
      "mtime": b"\xff" * 11 + b"\xfe"}, (0o4755, 2**31, 2000, 9 << 30, -2)),
])
def test_parse_header_numbers(fields, expected):
    info = tarfile.TarInfo("f")
    info.size, info.mode = 3, 0o4755
    info.uid, info.gid, info.mtime = 1000, 2000, 1_600_000_000
    block = _with_fields(_tar_bytes([(info, b"abc")], fmt=tarfile.USTAR_FORMAT)[:512],
                         **fields)
    entry = parse_header(block)
    assert (entry.mode, entry.uid, entry.gid, entry.size,
            entry.mtime_ns // 10**9) == expected


def test_parse_header_refuses_a_number_that_is_not_one():
    info = tarfile.TarInfo("f")
    block = _with_fields(_tar_bytes([(info, None)], fmt=tarfile.USTAR_FORMAT)[:512],
                         size=b"12x4\0")
    with pytest.raises(LayerError, match="invalid number"):
        parse_header(block)


def test_parse_header_names_links_and_prefix():
    info = tarfile.TarInfo("link")
    info.type, info.linkname = tarfile.SYMTYPE, "t" * 100  # the field full: no NUL
    block = _tar_bytes([(info, None)], fmt=tarfile.USTAR_FORMAT)[:512]
    entry = parse_header(block)
    assert (entry.name, entry.type, entry.linkname) == (b"link", b"2", b"t" * 100)
    entry = parse_header(_with_fields(block, prefix=b"p" * 155))  # likewise the prefix
    assert entry.name == b"p" * 155 + b"/link"


class Dribble(io.RawIOBase):
    """A stream that hands out at most ``n`` bytes per read, like a slow socket."""

    def __init__(self, data: bytes, n: int):
        self._data = memoryview(data)
        self._n = n
        self.consumed = 0

    def readable(self):
        return True

    def read(self, size=-1):
        k = self._n if size < 0 else min(size, self._n)
        out = bytes(self._data[self.consumed : self.consumed + k])
        self.consumed += len(out)
        return out


def _entries(data: bytes, chunk: int):
    reader = tarread.TarReader(Dribble(data, chunk))
    out = []
    for entry in tarread.iter_entries(reader):
        payload = reader.read_exact(entry.size) if entry.type in (b"0", b"\0") else b""
        entry.data_consumed = True
        out.append((entry, payload))
    return out


class _Pieces(io.RawIOBase):
    """A stream handing out ``data`` in pieces of the given sizes, in turn."""

    def __init__(self, data: bytes, sizes):
        self._data, self._sizes, self._pos, self._i = data, sizes, 0, 0

    def read(self, size=-1):
        k = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        out = self._data[self._pos : self._pos + min(k, size if size > 0 else k)]
        self._pos += len(out)
        return out


def test_reader_reads_across_chunks_and_records_what_it_hands_out():
    data = bytes(range(256)) * 41  # 10496 bytes: the last read comes up short
    kept = []
    split = type("Split", (), {"raw": staticmethod(lambda b: kept.append(bytes(b))),
                               "crc32": None})
    reader = tarread.TarReader(_Pieces(data, [100, 3000, 5, 700, 1, 2048]), split)
    got = []
    while True:
        block = reader.read(512)
        got.append(block)
        if len(block) < 512:
            break
    assert b"".join(got) == data and len(got[-1]) == len(data) % 512
    assert b"".join(kept) == data
    assert reader.read(512) == b"" and reader.eof


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20])
def test_iter_entries_long_names_any_chunking(fmt, chunk):
    long = "dir/" + "n" * 150 + "/file"
    f = tarfile.TarInfo(long)
    f.size = 700
    link = tarfile.TarInfo("sym")
    link.type = tarfile.SYMTYPE
    link.linkname = "t" * 180
    data = _tar_bytes([(f, b"z" * 700), (link, None)], fmt=fmt)
    got = _entries(data, chunk)
    assert [e.name for e, _ in got] == [long.encode(), b"sym"]
    assert got[0][1] == b"z" * 700
    assert got[1][0].linkname == b"t" * 180


def test_iter_entries_pax_xattrs_and_global_header():
    info = tarfile.TarInfo("f")
    info.pax_headers = {"SCHILY.xattr.user.k": "v"}
    data = _tar_bytes([(info, b"")])
    (entry, _), = _entries(data, 512)
    assert entry.xattrs == {"user.k": b"v"}


def test_iter_entries_truncated():
    info = tarfile.TarInfo("f")
    info.size = 2000
    data = _tar_bytes([(info, b"q" * 2000)])
    with pytest.raises(LayerError, match="truncated"):
        _entries(data[:1500], 512)


def test_iter_entries_refuses_huge_gnu_longname():
    hdr = encode_header(b"././@LongLink", b"L", size=50 << 20)
    with pytest.raises(LayerError, match="long name"):
        _entries(hdr, 512)


# -- writing headers


def test_encode_header_plain_is_one_ustar_block_tarfile_reads():
    hdr = encode_header(b"a/b", b"0", mode=0o100644, uid=1, gid=2, size=0, mtime=5)
    assert len(hdr) == 512
    with tarfile.open(fileobj=io.BytesIO(hdr + bytes(1024))) as tf:
        (m,) = tf.getmembers()
    assert (m.name, m.mode, m.uid, m.gid, m.mtime, m.uname, m.gname) == (
        "a/b", 0o644, 1, 2, 5, "", ""
    )


def test_encode_header_uses_pax_only_when_needed():
    long_name = b"/".join([b"p" * 60] * 3)  # 182 bytes: prefix 121 + name 60
    cases = {
        "path": dict(name="é".encode() * 3),
        "path ": dict(name=b"q" * 101),  # no '/' to split at
        "linkpath": dict(linkname=b"l" * 101),
        "uid": dict(uid=1 << 22),
        "size": dict(size=1 << 34),
        "SCHILY.xattr.user.x": dict(xattrs={"user.x": b"\0bin"}),
    }
    for key, kw in cases.items():
        args = {"name": b"n", **kw}
        hdr = encode_header(args.pop("name"), b"2" if "linkname" in args else b"0", **args)
        assert len(hdr) > 512, key
        assert key.strip().encode() + b"=" in hdr
    assert len(encode_header(long_name, b"0")) == 512  # fits with the ustar prefix
    parsed = parse_header(encode_header(long_name, b"0"))
    assert parsed.name == long_name


def test_encode_header_round_trips_through_our_reader():
    name = ("ü/" * 60).encode() + b"file"
    hdr = encode_header(
        name, b"0", mode=0o2755, uid=70000000, gid=3, size=4, mtime=-10,
        xattrs={"user.b": b"2", "user.a": b"1"},
    )
    data = hdr + b"abcd" + bytes(508) + bytes(1024)
    ((entry, payload),) = _entries(data, 100)
    assert entry.name == name
    assert (entry.mode, entry.uid, entry.gid) == (0o2755, 70000000, 3)
    assert entry.mtime_ns == -10 * 10**9
    assert entry.xattrs == {"user.a": b"1", "user.b": b"2"}
    assert payload == b"abcd"
    # deterministic: records in sorted key order
    assert hdr.index(b"SCHILY.xattr.user.a") < hdr.index(b"SCHILY.xattr.user.b")


def test_split_ustar():
    assert layertar._split_ustar(b"x" * 100) == (b"", b"x" * 100)
    assert layertar._split_ustar(b"a" * 150 + b"/" + b"b" * 100) == (b"a" * 150, b"b" * 100)
    assert layertar._split_ustar(b"a" * 156 + b"/b") is None
    assert layertar._split_ustar(b"a/" + b"b" * 101) is None


def test_global_pax_records_apply_to_later_entries_until_overridden():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"mtime": "1000.5", "SCHILY.xattr.user.g": "v"}) as tf:
        for name, pax in (("a", {}), ("b", {"mtime": "2000"}),
                          ("c", {"SCHILY.xattr.user.g": ""})):
            info = tarfile.TarInfo(name)
            info.mtime = 5
            info.pax_headers = pax
            tf.addfile(info, io.BytesIO(b""))
    entries = list(tarread.iter_entries(tarread.TarReader(io.BytesIO(buf.getvalue()))))
    got = [(e.name, e.mtime_ns, e.xattrs) for e in entries]
    assert got == [
        (b"a", 1000_500_000_000, {"user.g": b"v"}),
        (b"b", 2000_000_000_000, {"user.g": b"v"}),
        (b"c", 1000_500_000_000, None),  # an empty value unsets the global record
    ]
