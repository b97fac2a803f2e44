"""HTTP/1.1 on a socket: one connection, the request it sends and the answer it reads.

The wire half of ``pbox.oci.transport``, whose ``Session`` pools these connections,
follows redirects and proxies, and hands out their answers as ``Response`` objects.
``http.client`` would do, but importing it costs ~30 ms: it imports ``ssl`` (most of that) and ``email.parser`` for its
header parsing, on every pull and push, even to a plain-HTTP registry.  The protocol the
registry client needs is small: one request at a time per connection (and one more GET
pipelined behind it), Content-Length or chunked bodies both ways, and a body read until
the server closes when it sends neither.  Failures raise ``TransportError`` subclasses; a
connection's failure has the underlying ``OSError`` (or ``ssl.SSLError``) as its
``__cause__``.
"""

from __future__ import annotations

import _socket  # the C module: ``socket`` (with selectors, enum) is ~3 ms to import
import io
import sys

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

BLOCK = 256 * 1024  # how much of a streamed request body is read at once

class TransportError(Exception):
    """The request did not get an answer (or its body broke off)."""


class ConnectError(TransportError):
    """The connection could not be made (refused, unknown host, reset...)."""


class TLSError(ConnectError):
    """The TLS handshake failed (certificate not trusted, not TLS at all...)."""


class Timeout(TransportError):
    """Connecting or waiting for data took longer than the timeout."""


def _wrap(e: BaseException, what: str) -> TransportError:
    if isinstance(e, TransportError):
        return e
    ssl = sys.modules.get("ssl")  # not imported: no TLS connection made the error
    if ssl is not None and isinstance(e, ssl.SSLError):  # includes SSLCertVerificationError
        err: TransportError = TLSError(f"{what}: {e}")
    elif isinstance(e, (_socket.timeout, TimeoutError)):
        err = Timeout(f"{what}: timed out")
    else:
        err = ConnectError(f"{what}: {type(e).__name__}: {e}")
    err.__cause__ = e
    return err


# -- HTTP/1.1 on a socket ------------------------------------------------------------------
#
# ``http.client`` would do, but importing it costs ~30 ms: it imports ``ssl`` (most of
# that) and ``email.parser`` for its header parsing, on every pull and push, even to a
# plain-HTTP registry.  The protocol the registry client needs is small: one request at a
# time per connection, Content-Length or chunked bodies both ways, and a body read until
# the server closes when it sends neither.


class ProtocolError(TransportError):
    """The server's answer is not HTTP/1.x."""


class IncompleteRead(ProtocolError):
    """The connection ended before the body did."""


class RemoteDisconnected(ConnectionResetError):
    """The server closed a connection without answering (a kept-alive one, usually)."""


MAX_LINE = 65536
MAX_HEADERS = 200


class Headers:
    """A response's headers: ``get`` and ``in`` ignore case; ``get`` gives the first."""

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items
        self._first: dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k.lower() == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _read_line(rfile) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError("a header line of the answer is too long")
    return line


def _read_headers(rfile) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    while True:
        line = _read_line(rfile)
        if line in (b"\r\n", b"\n", b""):
            return items
        if len(items) >= MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} headers in the answer")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and items:  # an obsolete folded continuation
            name, value = items[-1]
            items[-1] = (name, f"{value} {text.strip()}")
            continue
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise ProtocolError(f"a malformed header line in the answer: {text[:80]!r}")
        items.append((name.strip(), value.strip()))


class _Answer:
    """A response's status, headers and body framing on its connection."""

    def __init__(self, conn: _Connection, method: str):
        rfile = conn.rfile
        while True:
            line = _read_line(rfile)
            if not line:
                raise RemoteDisconnected("the server closed the connection without answering")
            version, _, rest = line.decode("iso-8859-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.x answer: {line[:80]!r}")
            self.status = int(code)
            items = _read_headers(rfile)
            if not 100 <= self.status < 200 or self.status == 101:
                break  # an interim answer (100 Continue) is skipped
        self.reason = reason.strip()
        self.msg = Headers(items)
        self._conn = conn
        connection = (self.msg.get("Connection") or "").lower()
        self.will_close = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection)
        self.chunked = False
        self.length: int | None = None  # what is left of a Content-Length body
        self._chunk_left: int | None = None  # of the current chunk; None: read a size
        self._done = False
        te = (self.msg.get("Transfer-Encoding") or "").lower()
        if method == "HEAD" or self.status in (204, 304):
            self.length = 0
        elif te and te != "identity":
            if te.rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {te!r}")
            self.chunked = True
        elif "Content-Length" in self.msg:
            value = self.msg.get("Content-Length").split(",")[0].strip()
            if not value.isdigit():
                raise ProtocolError(f"a bad Content-Length: {value!r}")
            self.length = int(value)
        else:
            self.will_close = True  # the body ends where the connection does
        if self.length == 0:
            self._done = True

    def isclosed(self) -> bool:
        return self._done

    def read(self, n: int | None = None) -> bytes:
        """Up to ``n`` bytes (all that is left when None); b"" at the end."""
        if self._done:
            return b""
        if self.chunked:
            return self._read_chunked(n)
        rfile = self._conn.rfile
        if self.length is None:  # until the server closes
            data = rfile.read() if n is None else rfile.read1(n)
            if not data or n is None:
                self._done = True
            return data
        want = self.length if n is None else min(n, self.length)
        data = rfile.read(want) if n is None else rfile.read1(want)
        if not data and want:
            raise IncompleteRead(f"the answer broke off with {self.length} bytes to come")
        self.length -= len(data)
        if n is None and self.length:
            raise IncompleteRead(f"the answer broke off with {self.length} bytes to come")
        if self.length == 0:
            self._done = True
        return data

    def _read_chunked(self, n: int | None) -> bytes:
        rfile = self._conn.rfile
        parts = []
        while n is None or n > 0:
            if self._chunk_left is None:
                line = _read_line(rfile)
                size = line.split(b";", 1)[0].strip()
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise IncompleteRead("a broken chunk in the answer") from None
                if self._chunk_left == 0:
                    _read_headers(rfile)  # trailers
                    self._done = True
                    break
            want = self._chunk_left if n is None else min(n, self._chunk_left)
            data = rfile.read1(want) if n is not None else rfile.read(want)
            if not data or n is None and len(data) < want:
                raise IncompleteRead("the answer broke off inside a chunk")
            parts.append(data)
            self._chunk_left -= len(data)
            if n is not None:
                n -= len(data)
            if self._chunk_left == 0:
                if _read_line(rfile) not in (b"\r\n", b"\n"):
                    raise IncompleteRead("a broken chunk in the answer")
                self._chunk_left = None
            if n is not None:
                break  # what one chunk had: enough for a streamed read
        return b"".join(parts)


class _Connection:
    """One TCP (and TLS) connection; ``send`` a request, then ``answer``."""

    def __init__(self, host: str, port: int, *, timeout: tuple[float, float], context=None,
                 tunnel: tuple[str, int, str | None] | None = None):
        self.host, self.port = host, port
        self.sock = None
        self.rfile = None
        self._timeout = timeout
        self._context = context
        self._tunnel = tunnel  # (host, port, Proxy-Authorization) through an HTTP proxy

    def connect(self) -> None:
        # an ASCII name as bytes: getaddrinfo would otherwise import the idna codec
        host = self.host.encode("ascii") if self.host.isascii() else self.host
        if self._context is None:
            sock = _create_connection(host, self.port, self._timeout[0])
        else:  # ssl wraps only the ``socket`` module's sockets (and imports it anyway)
            import socket

            sock = socket.create_connection((host, self.port), self._timeout[0])
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            server_name = self.host
            if self._tunnel is not None:
                host, port, auth = self._tunnel
                server_name = host
                self._connect_tunnel(sock, host, port, auth)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=server_name)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self._timeout[1])
        self.sock = sock
        self.rfile = io.BufferedReader(_SocketReader(sock), BLOCK)

    def _connect_tunnel(self, sock, host: str, port: int, auth: str | None) -> None:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if auth:
            head += f"Proxy-Authorization: {auth}\r\n"
        sock.sendall((head + "\r\n").encode("latin-1"))
        rfile = _SocketReader(sock)  # unbuffered: nothing of the TLS bytes after it read
        try:
            parts = _tunnel_line(rfile).decode("iso-8859-1").split(None, 2)
            while _tunnel_line(rfile) not in (b"\r\n", b"\n"):  # its headers
                pass
        finally:
            rfile.close()
        if len(parts) < 2 or parts[1] != "200":
            raise OSError(f"Tunnel connection failed: {' '.join(parts[1:]).strip()}")

    def send(self, method: str, target: str, host: str, headers: dict, body: Any) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lower = {k.lower() for k in headers}
        if "accept-encoding" not in lower:
            lines.append("Accept-Encoding: identity")
        chunked = False
        if body is None:
            if method in ("POST", "PUT", "PATCH") and "content-length" not in lower:
                lines.append("Content-Length: 0")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            if "content-length" not in lower:
                lines.append(f"Content-Length: {len(body)}")
        elif "content-length" not in lower and "transfer-encoding" not in lower:
            lines.append("Transfer-Encoding: chunked")
            chunked = True
        for name, value in headers.items():
            if value is None:
                continue
            text = f"{name}: {value}"
            if "\r" in text or "\n" in text:
                raise ValueError(f"a header with a line break: {name}")
            lines.append(text)
        lines.append("\r\n")
        head = "\r\n".join(lines).encode("latin-1")
        sock = self.sock
        if body is None:
            sock.sendall(head)
        elif isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) <= BLOCK:
                sock.sendall(head + bytes(body))
            else:
                sock.sendall(head)
                sock.sendall(body)
        else:
            sock.sendall(head)
            for block in _blocks(body):
                if not block:
                    continue
                if chunked:
                    head = b"%x\r\n" % len(block)
                    if len(block) <= 65536:
                        sock.sendall(head + bytes(block) + b"\r\n")
                    else:  # a big block is sent as it is, not copied into one piece
                        sock.sendall(head)
                        sock.sendall(block)
                        sock.sendall(b"\r\n")
                else:
                    sock.sendall(block)
            if chunked:
                sock.sendall(b"0\r\n\r\n")

    def answer(self, method: str) -> _Answer:
        return _Answer(self, method)

    def close(self) -> None:
        sock, rfile = self.sock, self.rfile
        self.sock = self.rfile = None
        for thing in (rfile, sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass


def _create_connection(host, port: int, timeout: float):
    """``socket.create_connection`` with the C module: each address in turn."""
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0,
                                                               _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or OSError(f"getaddrinfo returned no address for {host!r}")


class _SocketReader(io.RawIOBase):
    """What ``socket.makefile("rb", buffering=0)`` gives, for a C-module socket (or
    an ``ssl`` one: both have ``recv_into``)."""

    def __init__(self, sock):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._sock.recv_into(b)

    def fileno(self) -> int:
        return self._sock.fileno()


def _tunnel_line(rfile) -> bytes:
    """A line of a proxy's answer to CONNECT, read byte by byte: a buffered read could
    take the first bytes of the TLS handshake that follows."""
    line = b""
    while not line.endswith(b"\n"):
        c = rfile.read(1)
        if not c:
            raise RemoteDisconnected("the proxy closed the connection")
        line += c
        if len(line) > MAX_LINE:
            raise ProtocolError("a line of the proxy's answer is too long")
    return line


def _blocks(body: Any) -> Iterator[bytes]:
    """A streamed request body block by block: a file object's reads or an iterable's
    items (str items encoded as UTF-8)."""
    read = getattr(body, "read", None)
    if read is not None:
        while True:
            block = read(BLOCK)
            if not block:
                return
            yield block.encode("utf-8") if isinstance(block, str) else block
    for block in body:
        yield block.encode("utf-8") if isinstance(block, str) else block
