"""A small HTTP/1.1 client on the standard library, for the registry client.

What the registry protocol needs and no more: keep-alive connections reused per host
(one pool per ``Session``, thread-safe), TLS with a caller-made ``ssl`` context (made on
the first https request), redirects (the ``Authorization`` header is dropped when the
host changes, as curl and requests do), streamed request bodies (bytes, file objects and
iterables; chunked transfer when the length is unknown), streamed response bodies,
HTTP proxies from ``HTTP(S)_PROXY``/``NO_PROXY``, and connect/read timeouts.

It exists because importing ``requests`` (urllib3, idna, charset_normalizer, certifi)
costs tens of milliseconds on every pull, push and login.  Failures raise
``TransportError`` subclasses whose ``__cause__`` is the underlying ``OSError``,
``ssl.SSLError`` or ``http.client.HTTPException``.
"""

from __future__ import annotations

import base64
import http.client
import json as _json
import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import unquote, urlencode, urljoin, urlsplit

log = logging.getLogger(__name__)

MAX_REDIRECTS = 30
MAX_IDLE_PER_HOST = 16
BLOCK = 256 * 1024  # how much of a streamed request body is read at once
DRAIN_LIMIT = 64 * 1024  # an unread body up to this size is read to keep the connection


class TransportError(Exception):
    """The request did not get an answer (or its body broke off)."""


class ConnectError(TransportError):
    """The connection could not be made (refused, unknown host, reset...)."""


class TLSError(ConnectError):
    """The TLS handshake failed (certificate not trusted, not TLS at all...)."""


class Timeout(TransportError):
    """Connecting or waiting for data took longer than the timeout."""


class TooManyRedirects(TransportError):
    pass


def _wrap(e: BaseException, what: str) -> TransportError:
    if isinstance(e, TransportError):
        return e
    if isinstance(e, ssl.SSLError):  # includes SSLCertVerificationError
        err: TransportError = TLSError(f"{what}: {e}")
    elif isinstance(e, (socket.timeout, TimeoutError)):
        err = Timeout(f"{what}: timed out")
    else:
        err = ConnectError(f"{what}: {type(e).__name__}: {e}")
    err.__cause__ = e
    return err


class Response:
    """An answer: ``status_code``, ``reason``, ``headers`` (case-insensitive), ``url``;
    the body through ``read``/``iter_content`` (streamed) or ``content``/``json()``."""

    def __init__(self, session: Session, key: tuple, conn, raw, url: str):
        self._session = session
        self._key = key
        self._conn = conn
        self._raw = raw
        self.url = url
        self.status_code: int = raw.status
        self.reason: str = raw.reason or ""
        self.headers = raw.msg  # an email.message.Message: get() and `in` ignore case
        self._content: bytes | None = None

    # -- the body --------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (b"" at its end); connection failures raise
        ``TransportError``."""
        if self._content is not None:
            if n is None or n < 0:
                data, self._content = self._content, b""
            else:
                data, self._content = self._content[:n], self._content[n:]
            return data
        raw = self._raw
        if raw is None:
            return b""
        left = raw.length
        try:
            data = raw.read(n if n is not None and n >= 0 else None)
            if not data and n != 0 and left and not raw.chunked:
                # (http.client reports a body cut short only when reading it all)
                raise http.client.IncompleteRead(b"", left)
        except (OSError, http.client.HTTPException) as e:
            self._discard()
            raise _wrap(e, "reading the response")
        if raw.isclosed():
            self._release()
        return data

    def iter_content(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        while True:
            data = self.read(chunk_size)
            if not data:
                return
            yield data

    @property
    def content(self) -> bytes:
        if self._content is None:
            parts = []
            while True:
                data = self.read(BLOCK)
                if not data:
                    break
                parts.append(data)
            self._content = b"".join(parts)
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.content)  # ValueError when it is not JSON

    # -- the connection -----------------------------------------------------------------------

    def _release(self) -> None:
        conn, raw = self._conn, self._raw
        self._conn = self._raw = None
        if conn is None:
            return
        if raw is not None and raw.isclosed() and not raw.will_close:
            self._session._put(self._key, conn)
        else:
            conn.close()

    def _discard(self) -> None:
        conn = self._conn
        self._conn = self._raw = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        raw = self._raw
        if raw is None:
            return
        if not raw.isclosed():
            # a short unread body (an error's JSON) is read to keep the connection
            if raw.length is not None and raw.length <= DRAIN_LIMIT and not raw.will_close:
                try:
                    raw.read()
                except (OSError, http.client.HTTPException):
                    self._discard()
                    return
            else:
                self._discard()
                return
        self._release()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


def _proxy_for(scheme: str, host: str, port: int) -> str | None:
    """The proxy URL the environment names for this target, or None (``NO_PROXY``)."""
    env = os.environ
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY") \
        or env.get("all_proxy") or env.get("ALL_PROXY")
    if not proxy:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    h = host.lower().strip("[]")
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return None
        ehost, _, eport = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if eport and eport != str(port):
            continue
        ehost = ehost.lstrip(".").strip("[]")
        if h == ehost or h.endswith("." + ehost):
            return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return proxy


class Session:
    """Connections to the hosts one client talks to.

    ``ssl_context`` is called (once, under a lock) on the first https request.
    ``timeout`` is (connect, read) seconds.  ``redact`` turns a URL into what a log line
    may show (redirects to storage often carry signatures).  Thread-safe: each request
    takes an idle connection of its host or makes one.
    """

    def __init__(self, *, ssl_context: Callable[[], ssl.SSLContext], user_agent: str = "",
                 timeout: tuple[float, float] = (30.0, 60.0),
                 redact: Callable[[str], str] = lambda url: url):
        self._make_ctx = ssl_context
        self._redact = redact
        self._ctx: ssl.SSLContext | None = None
        self.user_agent = user_agent
        self.timeout = timeout
        self._idle: dict[tuple, list] = {}
        self._lock = threading.Lock()
        self.connections_made = 0  # for tests and debugging: new TCP connections

    # -- the pool -------------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ctx is None:
                self._ctx = self._make_ctx()
            return self._ctx

    def _put(self, key: tuple, conn) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def _get(self, key: tuple):
        """An idle connection for ``key`` that the server has not closed, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            sock = conn.sock
            try:
                # readable while idle: the server closed it (or sent garbage)
                if sock is not None and not select.select([sock], [], [], 0)[0]:
                    return conn
            except (OSError, ValueError):
                pass
            conn.close()

    def _connect(self, key: tuple, timeout: tuple[float, float]):
        scheme, host, port, proxy = key
        what = f"{host}:{port}"
        if proxy:
            p = urlsplit(proxy)
            phost, pport = p.hostname or "", p.port or 80
            what = f"proxy {phost}:{pport}"
        else:
            phost, pport = host, port
        if scheme == "https":
            conn = http.client.HTTPSConnection(phost, pport, timeout=timeout[0],
                                               context=self._context(), blocksize=BLOCK)
        else:
            conn = http.client.HTTPConnection(phost, pport, timeout=timeout[0], blocksize=BLOCK)
        if proxy and scheme == "https":
            auth = _proxy_auth(proxy)
            conn.set_tunnel(host, port, headers={"Proxy-Authorization": auth} if auth else None)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _wrap(e, f"connecting to {what}")
        conn.sock.settimeout(timeout[1])
        self.connections_made += 1
        return conn

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: dict | None = None, data: Any = None,
                stream: bool = False, timeout: tuple[float, float] | None = None,
                allow_redirects: bool = True) -> Response:
        """Send a request; the response whatever its status.

        ``data``: None, bytes, str, a dict (sent as a form), a file object (streamed;
        chunked unless a Content-Length header is given or it has ``__len__``) or an
        iterable of bytes (chunked).  Without ``stream`` the body is read before this
        returns and the connection goes back to the pool.
        """
        timeout = timeout or self.timeout
        h = {"User-Agent": self.user_agent, "Accept": "*/*"}
        h.update(headers or {})
        if isinstance(data, dict):
            data = urlencode(data)
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data is not None and not isinstance(data, (bytes, bytearray)) and \
                hasattr(data, "__len__") and hasattr(data, "read") and \
                not any(k.lower() == "content-length" for k in h):
            h["Content-Length"] = str(len(data))
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send_once(method, url, h, data, timeout)
            loc = resp.headers.get("Location")
            if not allow_redirects or resp.status_code not in (301, 302, 303, 307, 308) or not loc:
                if not stream:
                    resp.content  # noqa: B018 - read it all, free the connection
                    resp._release()
                return resp
            resp.close()
            new = urljoin(url, loc)
            log.debug("%s %s -> %d, to %s", method, self._redact(url), resp.status_code,
                      self._redact(new))
            if resp.status_code == 303 and method != "HEAD" or \
                    resp.status_code in (301, 302) and method == "POST":
                method, data = "GET", None
                h = {k: v for k, v in h.items()
                     if k.lower() not in ("content-length", "content-type",
                                          "transfer-encoding")}
            elif data is not None and not isinstance(data, (bytes, bytearray)):
                raise TransportError(f"cannot resend a streamed body to {_origin(new)}")
            if _strip_auth(url, new):
                h = {k: v for k, v in h.items() if k.lower() != "authorization"}
            url = new
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def _send_once(self, method: str, url: str, headers: dict, data: Any,
                   timeout: tuple[float, float]) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise TransportError(f"unsupported URL scheme {scheme!r}")
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = _proxy_for(scheme, host, port)
        key = (scheme, host, port, proxy)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if proxy and scheme == "http":
            target = f"http://{parts.netloc.rsplit('@', 1)[-1]}{target}"
            auth = _proxy_auth(proxy)
            if auth:
                headers = dict(headers, **{"Proxy-Authorization": auth})
        replayable = data is None or isinstance(data, (bytes, bytearray))
        while True:
            conn = self._get(key)
            reused = conn is not None
            if conn is None:
                conn = self._connect(key, timeout)
            try:
                conn.request(method, target, body=data, headers=headers)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                # a kept-alive connection the server closed meanwhile: once more on a
                # new one, when the body can be sent again
                if reused and replayable and isinstance(
                        e, (http.client.RemoteDisconnected, ConnectionResetError,
                            BrokenPipeError, ConnectionAbortedError)):
                    continue
                raise _wrap(e, f"{method} {host}:{port}")
            return Response(self, key, conn, raw, url)


def _proxy_auth(proxy: str) -> str | None:
    p = urlsplit(proxy)
    if p.username is None:
        return None
    raw = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _strip_auth(old: str, new: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` must drop the Authorization header:
    another host, scheme or port (http to https on the default ports keeps it)."""
    o, n = urlsplit(old), urlsplit(new)
    if o.hostname != n.hostname:
        return True
    op, np_ = o.port or _default_port(o.scheme), n.port or _default_port(n.scheme)
    if o.scheme == "http" and n.scheme == "https" and op == 80 and np_ == 443:
        return False
    return o.scheme != n.scheme or op != np_
