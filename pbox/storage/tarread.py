"""Reading a layer tar from a stream: headers (ustar, GNU long names, PAX) and names.

Layer tars are hostile input.  The reader parses tar headers itself (ustar, GNU long
names, PAX) from a sequential stream: the stream is usually a download being hashed
on the way, so it is never seeked, and it is read to its end even after the tar's
end marker so that the digest covers every byte.  Names become path components
relative to the layer root (split_name), refusing ``..`` and names over the Linux
limits; what is done with the entries is ``extract``'s job.
"""

from __future__ import annotations

import binascii  # (base64 imports re: ~3 ms)
import zlib

from pbox.errors import UnsupportedFormat
from pbox.record import record
from pbox.storage.fsutil import write_all

BLOCK = 512
COPY_CHUNK = 1 << 20
MAX_NAME = 4096  # PATH_MAX
MAX_COMPONENT = 255  # NAME_MAX
MAX_PAX_HEADER = 8 << 20  # xattrs can be large, but not this large
MAX_LONGNAME = 64 << 10

_ZERO_BLOCK = bytes(BLOCK)

# tar type flags
REGULAR_TYPES = (b"0", b"\0", b"7")
HARDLINK, SYMLINK, CHRDEV, BLKDEV, DIRTYPE, FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
GNU_DUMPDIR = b"D"


class LayerError(UnsupportedFormat):
    """A layer tar pbox cannot extract: malformed, truncated, names too long."""


class UnsafeLayer(LayerError):
    """A layer tar that tries to write outside its directory."""


def show_name(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------
# tar header parsing (pure)


@record
class TarEntry:
    """One file system entry of a tar, after PAX / GNU long-name headers are applied."""

    name: bytes
    type: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict | None = None
    data_consumed: bool = False  # set by whoever copied the entry's data


_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")


def parse_number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit of the first byte)."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    try:
        # the common case, "0000644\0": int() strips the blanks
        return int(field.translate(_NUL_TO_SPACE), 8)
    except ValueError:
        pass
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(f"invalid number {text!r} in a tar header")


def _cstring(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def header_checksum_ok(block: bytes) -> bool:
    return _checksum_matches(block, parse_number(block[148:156]))


def _checksum_matches(block: bytes, stored: int) -> bool:
    """Whether ``stored`` (the header's checksum field, read) is the block's checksum."""
    # The unsigned sum of the bytes, the checksum field counting as 8 spaces.  Adler-32's
    # low half is 1 + the sum of the bytes modulo 65521, so it is the plain sum for up
    # to 256 bytes (at most 65281): three C calls instead of ``sum()`` (~1 us a header).
    a = zlib.adler32
    unsigned = (a(block[:148]) & 0xFFFF) + (a(block[156:412]) & 0xFFFF) + \
        (a(block[412:512]) & 0xFFFF) - 3 + 256
    if stored == unsigned:
        return True
    # some old tars summed signed chars
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
    return stored == signed


def parse_header(block: bytes) -> TarEntry:
    """Parse one 512-byte header block (not the end-of-archive zero block)."""
    # mode, uid, gid, size, mtime, checksum: octal text ends with NULs or blanks, which
    # int() takes once they are blanks; base-256 or odd fields go through parse_number
    text = block[100:156].translate(_NUL_TO_SPACE)
    try:  # the checksum field too: what parse_number would read, without its call
        stored = int(text[48:56], 8)
    except ValueError:
        stored = parse_number(block[148:156])
    if not _checksum_matches(block, stored):
        raise LayerError("invalid tar header checksum (corrupt or not a tar)")
    i = block.find(b"\0", 0, 100)
    name = block[: i if i >= 0 else 100]
    # POSIX ustar: a name prefix (GNU uses that room otherwise); most are empty
    if block[345] and block[257:263] == b"ustar\0":
        i = block.find(b"\0", 345, 500)
        name = block[345 : i if i >= 0 else 500] + b"/" + name
    typ = block[156:157]
    try:
        entry = TarEntry(name, typ, int(text[0:8], 8), int(text[8:16], 8),
                         int(text[16:24], 8), int(text[24:36], 8),
                         int(text[36:48], 8) * 1_000_000_000)
    except ValueError:
        entry = TarEntry(
            name, typ, parse_number(block[100:108]), parse_number(block[108:116]),
            parse_number(block[116:124]), parse_number(block[124:136]),
            parse_number(block[136:148]) * 1_000_000_000,
        )
    if typ in (b"1", b"2"):
        i = block.find(b"\0", 157, 257)
        entry.linkname = block[157 : i if i >= 0 else 257]
    elif typ in (b"3", b"4"):
        entry.devmajor = parse_number(block[329:337])
        entry.devminor = parse_number(block[337:345])
    return entry


def parse_pax(data: bytes) -> dict:
    """PAX extended header records: ``"<len> <key>=<value>\\n"``; keys str, values bytes."""
    records = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding some writers leave
            break
        sp = data.find(b" ", pos)
        try:
            length = int(data[pos:sp]) if sp > pos else 0
        except ValueError:
            length = 0
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise LayerError("invalid PAX extended header record")
        key, eq, value = data[sp + 1 : end - 1].partition(b"=")
        if not eq:
            raise LayerError("invalid PAX extended header record")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return records


def _pax_time_ns(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    try:
        if "." in text:
            sec, _, frac = text.partition(".")
            neg = sec.startswith("-")
            ns = int(sec or "0") * 1_000_000_000
            frac_ns = int((frac + "000000000")[:9]) if frac else 0
            return ns - frac_ns if neg else ns + frac_ns
        return int(text) * 1_000_000_000
    except ValueError:
        raise LayerError(f"invalid PAX time {text!r}")


def _pax_int(key: str, value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise LayerError(f"invalid PAX {key} {value!r}")


def apply_pax(entry: TarEntry, pax: dict) -> None:
    """Override header fields with PAX records (and collect xattrs)."""
    for key, value in pax.items():
        if key == "path":
            entry.name = value
        elif key == "linkpath":
            entry.linkname = value
        elif key == "size":
            entry.size = _pax_int(key, value)
        elif key == "uid":
            entry.uid = _pax_int(key, value)
        elif key == "gid":
            entry.gid = _pax_int(key, value)
        elif key == "mtime":
            entry.mtime_ns = _pax_time_ns(value)
        elif key == "SCHILY.devmajor":
            entry.devmajor = _pax_int(key, value)
        elif key == "SCHILY.devminor":
            entry.devminor = _pax_int(key, value)
        elif key.startswith("SCHILY.xattr."):
            entry.xattrs = entry.xattrs or {}
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            from pbox.oci.urls import unquote_to_bytes

            name = unquote_to_bytes(key[len("LIBARCHIVE.xattr.") :]).decode(
                "utf-8", "surrogateescape"
            )
            try:
                decoded = binascii.a2b_base64(value + b"=" * (-len(value) % 4))
            except ValueError:
                raise LayerError(f"invalid PAX xattr value for {name!r}")
            entry.xattrs = entry.xattrs or {}
            entry.xattrs.setdefault(name, decoded)
        elif key.startswith("GNU.sparse."):
            raise LayerError("sparse files in a layer tar are not supported")
        # atime, ctime, uname, gname, comment, charset...: not needed


def add_pax_records(typ: bytes, records: dict, pax: dict, global_pax: dict) -> None:
    """Keep the records of an ``x`` (the next entry's, in ``pax``) or ``g`` header
    (every later entry's, in ``global_pax``).  POSIX: an empty value deletes the
    global record of that name, for the next entry only (None in ``pax``) or for good."""
    for k, v in records.items():
        if typ == b"x":
            pax[k] = v if v else None
        elif v:
            global_pax[k] = v
        else:
            global_pax.pop(k, None)


def apply_pending(entry: TarEntry, pax: dict, global_pax: dict, longname: bytes | None,
                  longlink: bytes | None = None) -> None:
    """Give ``entry`` the PAX records and GNU long names that precede it (an entry's own
    PAX path wins over a long name)."""
    if pax or global_pax:  # (most entries have neither: ~1 us each)
        merged = dict(global_pax)
        for k, v in pax.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        if merged:
            apply_pax(entry, merged)
    if longname is not None and pax.get("path") is None:
        entry.name = longname
    if longlink is not None and pax.get("linkpath") is None:
        entry.linkname = longlink


def split_name(name: bytes, what: str = "entry") -> tuple:
    """Turn a tar name into path components relative to the layer root.

    Drops leading ``/``, empty and ``.`` components; raises on ``..`` (UnsafeLayer),
    NUL bytes and names over the Linux limits (LayerError).
    """
    if b"\0" in name:
        raise LayerError(f"layer {what} {show_name(name)!r}: NUL byte in name")
    parts = name.split(b"/")
    if b"" in parts or b"." in parts:
        parts = [p for p in parts if p and p != b"."]
    parts = tuple(parts)
    if b".." in parts:
        raise UnsafeLayer(
            f"refusing layer: {what} {show_name(name)!r} has a '..' component "
            "(it would write outside the layer)"
        )
    if len(name) <= MAX_COMPONENT:
        return parts  # no component nor the whole can be too long
    for p in parts:
        if len(p) > MAX_COMPONENT:
            raise LayerError(
                f"layer {what} {show_name(name[:80])!r}...: a name component is {len(p)} bytes "
                f"long, the limit is {MAX_COMPONENT}"
            )
    if sum(len(p) + 1 for p in parts) > MAX_NAME:
        raise LayerError(
            f"layer {what} {show_name(name[:80])!r}...: the path is {len(name)} bytes long, "
            f"the limit is {MAX_NAME}"
        )
    return parts


# stream reading


class TarReader:
    """Sequential reads from a file-like object, with our own read-ahead buffer.

    ``split``: a ``tarsplit.Recorder`` that receives every byte of the stream, as it
    is used: the bytes handed out by :meth:`read`, :meth:`skip` and :meth:`drain`
    (headers, PAX and long-name data, padding, anything after the end) as they are,
    the contents :meth:`copy_to_fd` writes to files by reference (their CRC-32)."""

    def __init__(self, stream, split=None):
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self.eof = False
        self._split = split
        self._keep = split.raw if split is not None else None

    def _fill(self) -> bool:
        """The next chunk of the stream as the buffer, once the current one is used."""
        if self.eof:
            return False
        data = self._stream.read(COPY_CHUNK)
        if not data:
            self.eof = True
            return False
        self._buf, self._pos = data, 0
        return True

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= n:
            data = buf[pos : pos + n]
            self._pos = pos + n
        else:  # across chunks: only the bytes asked for are copied, not the next chunk
            parts = [buf[pos:]]
            have = len(parts[0])
            self._buf, self._pos = b"", 0
            while have < n and self._fill():
                piece = self._buf[: n - have]
                self._pos = len(piece)
                parts.append(piece)
                have += len(piece)
            data = b"".join(parts)
        if self._keep is not None:
            self._keep(data)
        return data

    def read_exact(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise LayerError("truncated layer tar")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._fill():
                    raise LayerError("truncated layer tar")
                continue
            step = min(avail, n)
            if self._keep is not None:
                self._keep(memoryview(self._buf)[self._pos : self._pos + step])
            self._pos += step
            n -= step

    def copy_to_fd(self, fd: int, n: int, parts: tuple = ()) -> None:
        """Write the next ``n`` bytes to ``fd``: the content of the layer file
        ``parts`` (its path components, for the recorder)."""
        split = self._split
        crc32 = split.crc32 if split is not None else None
        crc = 0
        size = n
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if n >= COPY_CHUNK:
                    # big file: straight from the stream, no copy into our buffer
                    data = self._stream.read(COPY_CHUNK)
                    if not data:
                        self.eof = True
                        raise LayerError("truncated layer tar")
                    if len(data) > n:  # a stream may hand us more than asked
                        self._buf, self._pos = data, 0
                        continue
                    write_all(fd, data)
                    if crc32 is not None:
                        crc = crc32(data, crc)
                    n -= len(data)
                    continue
                if not self._fill():
                    raise LayerError("truncated layer tar")
                continue
            step = min(avail, n)
            data = memoryview(self._buf)[self._pos : self._pos + step]
            write_all(fd, data)
            if crc32 is not None:
                crc = crc32(data, crc)
            self._pos += step
            n -= step
        if split is not None and size:
            split.content(parts, size, crc)

    def drain(self) -> None:
        """Read the stream to its end (its digest is computed as it is read)."""
        if self._keep is not None and self._pos < len(self._buf):
            self._keep(memoryview(self._buf)[self._pos :])
        self._buf, self._pos = b"", 0
        while not self.eof:
            data = self._stream.read(COPY_CHUNK)
            if not data:
                self.eof = True
            elif self._keep is not None:
                self._keep(data)


def _padding(size: int) -> int:
    return -size % BLOCK


# entry types yielded as they are (the others are read here, or refused)
_PLAIN_TYPES = frozenset((b"0", b"\0", b"7", b"1", b"2", b"3", b"4", b"5", b"6", b"D"))


def iter_entries(reader: TarReader):
    """Yield TarEntry objects; the caller must consume (or skip) ``entry.size`` bytes
    of data of each entry before asking for the next (padding is handled here)."""
    global_pax: dict = {}
    pax: dict = {}
    longname = longlink = None
    pending_data = 0
    while True:
        if pending_data:
            reader.skip(pending_data)
            pending_data = 0
        block = reader.read(BLOCK)
        if len(block) != BLOCK:
            if block:
                raise LayerError("truncated layer tar")
            if pax or longname is not None or longlink is not None:
                raise LayerError("truncated layer tar")
            return  # no end marker: tolerated, as GNU tar does
        if block == _ZERO_BLOCK:
            return
        entry = parse_header(block)
        typ = entry.type
        if typ not in _PLAIN_TYPES:
            if typ in (b"x", b"g"):
                if entry.size > MAX_PAX_HEADER:
                    raise LayerError(f"PAX header of {entry.size} bytes is too large")
                data = reader.read_exact(entry.size)
                reader.skip(_padding(entry.size))
                add_pax_records(typ, parse_pax(data), pax, global_pax)
                continue
            if typ in (b"L", b"K"):
                if entry.size > MAX_LONGNAME:
                    raise LayerError(
                        f"GNU long name of {entry.size} bytes: the limit is {MAX_NAME}"
                    )
                data = _cstring(reader.read_exact(entry.size))
                reader.skip(_padding(entry.size))
                if typ == b"L":
                    longname = data
                else:
                    longlink = data
                continue
            if typ == b"S":
                raise LayerError("GNU sparse files in a layer tar are not supported")
            if typ == b"M":
                raise LayerError("multi-volume tar archives are not supported")
            if typ == b"V":
                pending_data = entry.size + _padding(entry.size)  # volume label
                continue
            # other types: the extractor tells which it cannot make
        if pax or global_pax or longname is not None or longlink is not None:
            apply_pending(entry, pax, global_pax, longname, longlink)
            pax = {}
            longname = longlink = None
        if entry.size < 0:
            raise LayerError("negative size in a tar header")
        yield entry
        # data not consumed by the caller (and the padding) is skipped before the next header
        size = entry.size
        pending_data = (0 if entry.data_consumed else size) + (-size % BLOCK)


# ---------------------------------------------------------------------------
# extraction
