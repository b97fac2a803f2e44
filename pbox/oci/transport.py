"""A small HTTP/1.1 client on sockets, for the registry client.

What the registry protocol needs and no more: keep-alive connections reused per host
(one pool per ``Session``, thread-safe), TLS with a caller-made ``ssl`` context (made on
the first https request), redirects (the ``Authorization`` header is dropped when the
host changes, as curl and requests do), streamed request bodies (bytes, file objects and
iterables; chunked transfer when the length is unknown), streamed response bodies,
HTTP proxies from ``HTTP(S)_PROXY``/``NO_PROXY``, and connect/read timeouts.

It exists because importing ``requests`` (urllib3, idna, charset_normalizer, certifi)
costs tens of milliseconds on every pull, push and login, and the standard library's
``http.client`` ~30 more (it imports ``ssl`` and the ``email`` package): here ``ssl`` is
imported only by whoever makes the first TLS context.  Failures raise
``TransportError`` subclasses; a connection's failure has the underlying ``OSError``
(or ``ssl.SSLError``) as its ``__cause__``.

This module is the session side (the pool, redirects, proxies, ``Response`` and the
pipelined GET); one connection on the wire, its requests and answers, is
``pbox.oci.http1``.
"""

from __future__ import annotations

import _thread
import binascii  # (base64 imports re: ~3 ms)
import os
import select

from pbox.lazylog import get_logger
from pbox.oci import urls
from pbox.oci.http1 import (  # noqa: F401 (the errors: this module's interface too)
    BLOCK,
    ConnectError,
    Headers,
    IncompleteRead,
    ProtocolError,
    RemoteDisconnected,
    Timeout,
    TLSError,
    TransportError,
    _Connection,
    _wrap,
)

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator
    from typing import Any, Callable

log = get_logger(__name__)

MAX_REDIRECTS = 30
MAX_IDLE_PER_HOST = 16
DRAIN_LIMIT = 64 * 1024  # an unread body up to this size is read to keep the connection


class TooManyRedirects(TransportError):
    pass


class Response:
    """An answer: ``status_code``, ``reason``, ``headers`` (case-insensitive), ``url``;
    the body through ``read``/``iter_content`` (streamed) or ``content``/``json()``."""

    def __init__(self, session: Session, key: tuple, conn, raw, url: str,
                 behind: Pipelined | None = None):
        self._session = session
        self._key = key
        self._conn = conn
        self._raw = raw
        self.url = url
        self.status_code: int = raw.status
        self.reason: str = raw.reason or ""
        self.headers: Headers = raw.msg
        self._content: bytes | None = None
        # a GET sent right behind this request (``Session.request``'s ``then``): it gets
        # the connection once this body is read; ``pipelined`` is on the final response
        # too, through redirects (None: nothing was sent behind)
        self._behind = behind
        self.pipelined: Pipelined | None = behind

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
        try:
            data = raw.read(n if n is not None and n >= 0 else None)
        except (OSError, TransportError) as e:
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
        from pbox import jsonio

        return jsonio.loads(self.content)  # ValueError when it is not JSON

    # -- the connection -----------------------------------------------------------------------

    def _release(self) -> None:
        conn, raw = self._conn, self._raw
        self._conn = self._raw = None
        if conn is None:
            return
        behind, self._behind = self._behind, None
        if raw is not None and raw.isclosed() and not raw.will_close:
            if behind is not None:  # its answer comes next on this connection
                behind._take(conn)
            else:
                self._session._put(self._key, conn)
        else:
            conn.close()
            if behind is not None:
                behind.close()

    def _discard(self) -> None:
        conn = self._conn
        self._conn = self._raw = None
        if conn is not None:
            conn.close()
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.close()

    def close(self) -> None:
        raw = self._raw
        if raw is None:
            return
        if not raw.isclosed():
            # a short unread body (an error's JSON) is read to keep the connection
            if raw.length is not None and raw.length <= DRAIN_LIMIT and not raw.will_close:
                try:
                    raw.read()
                except (OSError, TransportError):
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


class Pipelined:
    """A GET sent right behind another request on the same connection (HTTP/1.1
    pipelining, ``Session.request``'s ``then``): the server answers it as soon as it
    has answered the first, without waiting for the client to ask.

    Its answer can be read once the first answer's body has been read to its end (which
    hands the connection over).  ``answer()`` then gives its ``Response``; it gives None
    when there is nothing to read any more: the first answer closed the connection or
    was not read to its end, a redirect went elsewhere, the connection broke.  The
    caller then sends the request anew.  ``close()`` gives it up (the connection is
    closed: an unread answer is on it, it cannot serve another request).
    """

    def __init__(self, session: Session, key: tuple, url: str):
        self._session = session
        self._key = key
        self.url = url
        self._conn = None
        self._closed = False

    def _take(self, conn) -> None:
        if self._closed:
            conn.close()
        else:
            self._conn = conn

    def answer(self) -> Response | None:
        conn, self._conn = self._conn, None
        self._closed = True
        if conn is None:
            return None
        try:
            raw = conn.answer("GET")
        except (OSError, TransportError) as e:
            conn.close()
            log.debug("no answer to the pipelined GET %s: %s", self._session._redact(self.url),
                      e)
            return None
        return Response(self._session, self._key, conn, raw, self.url)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._closed = True
        if conn is not None:
            conn.close()


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
        self._lock = _thread.allocate_lock()
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
            p = urls.split(proxy)
            phost, pport = p.hostname or "", p.port or 80
            what = f"proxy {phost}:{pport}"
        else:
            phost, pport = host, port
        tunnel = (host, port, _proxy_auth(proxy)) if proxy and scheme == "https" else None
        conn = _Connection(phost, pport, timeout=timeout,
                           context=self._context() if scheme == "https" else None,
                           tunnel=tunnel)
        try:
            conn.connect()
        except (OSError, TransportError) as e:
            conn.close()
            raise _wrap(e, f"connecting to {what}")
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

    def _headers(self, extra: dict | None) -> dict:
        """A request's headers: the session's defaults, then ``extra``."""
        h = {"User-Agent": self.user_agent, "Accept": "*/*"}
        h.update(extra or {})
        return h

    def request(self, method: str, url: str, *, headers: dict | None = None, data: Any = None,
                stream: bool = False, timeout: tuple[float, float] | None = None,
                allow_redirects: bool = True,
                while_waiting: Callable[[], None] | None = None,
                then: tuple[str, dict] | None = None) -> Response:
        """Send a request; the response whatever its status.

        ``data``: None, bytes, str, a dict (sent as a form), a file object (streamed;
        chunked unless a Content-Length header is given or it has ``__len__``) or an
        iterable of bytes (chunked).  Without ``stream`` the body is read before this
        returns and the connection goes back to the pool.

        ``while_waiting`` is called once the request is sent, before its answer is read
        (work that overlaps the server's time); at most once, and not at all when the
        request could not be sent.  What it raises ends the request.

        ``then``: (url, headers) of a GET to send right behind this request on its
        connection, when this one is a GET or HEAD without a body and ``url`` is on the
        same host, not through a proxy; ``resp.pipelined`` (a ``Pipelined``, else None)
        reads its answer later.
        """
        timeout = timeout or self.timeout
        h = self._headers(headers)
        if isinstance(data, dict):
            data = urls.encode(data)
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data is not None and not isinstance(data, (bytes, bytearray)) and \
                hasattr(data, "__len__") and hasattr(data, "read") and \
                not any(k.lower() == "content-length" for k in h):
            h["Content-Length"] = str(len(data))
        waiting = [while_waiting] if while_waiting is not None else []
        behind = None
        if then is not None and method in ("GET", "HEAD") and data is None:
            behind = (then[0], self._headers(then[1]))
        pipelined = None
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send_once(method, url, h, data, timeout, waiting, behind)
            if behind is not None:
                pipelined, behind = resp.pipelined, None
            resp.pipelined = pipelined
            loc = resp.headers.get("Location")
            if not allow_redirects or resp.status_code not in (301, 302, 303, 307, 308) or not loc:
                if not stream:
                    resp.content  # noqa: B018 - read it all, free the connection
                    resp._release()
                return resp
            resp.close()
            new = urls.join(url, loc)
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
                   timeout: tuple[float, float], waiting: list,
                   behind: tuple[str, dict] | None = None) -> Response:
        """One request and its answer's head; ``waiting``: a ``while_waiting`` to call
        (and take out of the list) once the request is sent; ``behind``: (url, headers)
        of a GET to pipeline behind it, if it can be."""
        key, target, host_header = _where(url)
        scheme, host, port, proxy = key
        then = None
        if behind is not None and proxy is None:
            then_key, then_target, then_host = _where(behind[0])
            if then_key == key and then_host == host_header:
                then = then_target
        if proxy and scheme == "http":
            target = f"http://{host_header}{target}"
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
                conn.send(method, target, host_header, headers, data)
                if then is not None:
                    conn.send("GET", then, host_header, behind[1], None)
                if waiting:
                    try:
                        waiting.pop()()
                    except BaseException as e:
                        raise _Meanwhile(e) from None
                raw = conn.answer(method)
            except _Meanwhile as m:  # the caller's own error, not the connection's
                conn.close()
                raise m.error from None
            except (OSError, TransportError) as e:
                conn.close()
                # a kept-alive connection the server closed meanwhile: once more on a
                # new one, when the body can be sent again
                if reused and replayable and isinstance(
                        e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
                    continue
                raise _wrap(e, f"{method} {host}:{port}")
            except BaseException:  # the body's own error (a streamed one), or Ctrl-C
                conn.close()
                raise
            pipelined = Pipelined(self, key, behind[0]) if then is not None else None
            return Response(self, key, conn, raw, url, pipelined)


def _where(url: str) -> tuple[tuple, str, str]:
    """(pool key, request target, Host header) of ``url``."""
    parts = urls.split(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TransportError(f"unsupported URL scheme {scheme!r}")
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    proxy = _proxy_for(scheme, host, port)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (scheme, host, port, proxy), target, parts.netloc.rsplit("@", 1)[-1]


class _Meanwhile(Exception):
    """What a ``while_waiting`` callable raised, on its way past the transport's own
    error handling."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


def _proxy_auth(proxy: str) -> str | None:
    p = urls.split(proxy)
    if p.username is None:
        return None
    raw = f"{urls.unquote(p.username)}:{urls.unquote(p.password or '')}".encode()
    return "Basic " + binascii.b2a_base64(raw, newline=False).decode("ascii")


def _origin(url: str) -> str:
    p = urls.split(url)
    return f"{p.scheme}://{p.hostname}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _strip_auth(old: str, new: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` must drop the Authorization header:
    another host, scheme or port (http to https on the default ports keeps it)."""
    o, n = urls.split(old), urls.split(new)
    if o.hostname != n.hostname:
        return True
    op, np_ = o.port or _default_port(o.scheme), n.port or _default_port(n.scheme)
    if o.scheme == "http" and n.scheme == "https" and op == 80 and np_ == 443:
        return False
    return o.scheme != n.scheme or op != np_
