"""pbox.oci.transport against real HTTP servers on 127.0.0.1 (threads of this process)."""

from __future__ import annotations

import io
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from harness.registry import make_ca, make_server_cert

from pbox.errors import RegistryError
from pbox.oci import transport
from pbox.oci.regsession import RegistrySession


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        srv = self.server
        body = self._body()
        srv.seen.append((self.command, self.path, dict(self.headers), body,
                         self.client_address[1]))
        if self.path.startswith("/redirect"):
            target = self.path.split("?to=", 1)[1]
            self.send_response(307)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/echo/"):  # the answer names the request
            reply = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        if self.path == "/big":  # more than the client drains to keep a connection
            reply = b"b" * (4 * transport.DRAIN_LIMIT)
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        if self.path == "/close":
            reply = b"bye"
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            self.wfile.flush()
            self.close_connection = True  # without saying so: the next request finds it closed
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3;ext=1\r\nabc\r\n" b"0a\r\n0123456789\r\n"
                             b"0\r\nTrailer: x\r\n\r\n")
            return
        if self.path == "/until-close":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"all of it")
            self.close_connection = True
            return
        reply = b'{"len": %d}' % len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("X-Mixed-Case", "yes")
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_PUT = do_POST = do_PATCH = _handle

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()


@pytest.fixture
def server():
    servers = []

    def start(tls_context=None):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        srv.seen = []
        if tls_context is not None:
            srv.socket = tls_context.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def session():
    return transport.Session(ssl_context=ssl.create_default_context, user_agent="t/1")


def url(srv, path="/", host="127.0.0.1"):
    return f"http://{host}:{srv.server_address[1]}{path}"


def test_keep_alive_reuses_one_connection(server):
    srv = server()
    with session() as s:
        for _ in range(3):
            r = s.request("GET", url(srv, "/a"))
            assert r.status_code == 200 and r.json() == {"len": 0}
            assert r.headers.get("x-mixed-case") == "yes" and "X-MIXED-CASE" in r.headers
        # a streamed body read to its end gives the connection back too
        r = s.request("GET", url(srv, "/b"), stream=True)
        assert b"".join(r.iter_content(3)) == b'{"len": 0}'
        r.close()
        s.request("GET", url(srv, "/c"))
        assert s.connections_made == 1
    assert len({port for *_, port in srv.seen}) == 1
    assert srv.seen[0][2]["User-Agent"] == "t/1"


def test_a_closed_idle_connection_is_replaced(server):
    srv = server()
    with session() as s:
        assert s.request("GET", url(srv, "/close")).content == b"bye"
        assert s.request("GET", url(srv, "/after")).status_code == 200
        assert s.connections_made == 2
    assert [p for _, p, *_ in srv.seen] == ["/close", "/after"]


def test_redirect_keeps_authorization_on_the_same_host_only(server):
    a, b = server(), server()
    auth = {"Authorization": "Bearer SECRET"}
    with session() as s:
        r = s.request("GET", url(a, "/redirect?to=/same"), headers=auth)
        assert r.status_code == 200 and r.url == url(a, "/same")
        r = s.request("GET", url(a, "/redirect?to=" + url(b, "/other-port")), headers=auth)
        assert r.status_code == 200
        r = s.request("GET", url(a, "/redirect?to=" + url(a, "/other-host", host="localhost")),
                      headers=auth)
        assert r.status_code == 200
        # not followed when asked so
        r = s.request("GET", url(a, "/redirect?to=/same"), headers=auth, allow_redirects=False)
        assert r.status_code == 307
    sent = {p: h.get("Authorization") for _, p, h, *_ in a.seen + b.seen}
    assert sent["/same"] == "Bearer SECRET"
    assert sent["/other-port"] is None
    assert sent["/other-host"] is None


def test_redirect_resends_a_bytes_body(server):
    srv = server()
    with session() as s:
        r = s.request("PUT", url(srv, "/redirect?to=/put"), data=b"12345")
        assert r.json() == {"len": 5}


def test_streamed_uploads(server):
    srv = server()
    data = bytes(range(256)) * 4000

    def gen():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    class Sized:
        """A file object that knows its length (like the registry client's upload body)."""

        def __init__(self):
            self._f = io.BytesIO(data)

        def __len__(self):
            return len(data)

        def read(self, n=-1):
            return self._f.read(n)

    with session() as s:
        assert s.request("PATCH", url(srv, "/gen"), data=gen()).json() == {"len": len(data)}
        assert s.request("PUT", url(srv, "/file"), data=io.BytesIO(data)).json() == {
            "len": len(data)}
        assert s.request("PUT", url(srv, "/sized"), data=Sized()).json() == {"len": len(data)}
        assert s.request("POST", url(srv, "/form"), data={"a": "1 2", "b": "x"}).status_code == 200
    got = {p: (h, body) for _, p, h, body, _ in srv.seen}
    for path in ("/gen", "/file"):
        assert got[path][0].get("Transfer-Encoding") == "chunked"
        assert got[path][1] == data
    assert got["/sized"][0].get("Content-Length") == str(len(data))
    assert "Transfer-Encoding" not in got["/sized"][0]
    assert got["/sized"][1] == data
    assert got["/form"][1] == b"a=1+2&b=x"
    assert got["/form"][0]["Content-Type"] == "application/x-www-form-urlencoded"


def test_a_body_cut_short_is_an_error(server):
    srv = server()
    with session() as s:
        r = s.request("GET", url(srv, "/short"), stream=True)
        assert r.read(10) == b"x" * 10
        with pytest.raises(transport.TransportError):
            r.read(10)
        with pytest.raises(transport.TransportError):
            s.request("GET", url(srv, "/short"))


def test_connection_refused_message():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with RegistrySession(f"127.0.0.1:{port}", retries=0) as c, \
            pytest.raises(RegistryError) as e:
        c.ping()
    assert str(e.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"


def test_tls_verify_failure_message(server, tmp_path):
    ca = make_ca(str(tmp_path / "ca"))
    cert, key = make_server_cert(str(tmp_path / "ca"), ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = server(ctx)
    host = f"127.0.0.1:{srv.server_address[1]}"
    with RegistrySession(host, config_dir=str(tmp_path / "cfg"), retries=0) as c, \
            pytest.raises(RegistryError) as e:
        c.ping()
    msg = str(e.value)
    assert msg.startswith(f"TLS handshake with {host} failed: certificate verify failed"), msg
    assert str(tmp_path / "cfg" / "certs.d" / host) in msg
    # the CA in certs.d: trusted, and the answer comes over TLS
    d = tmp_path / "cfg" / "certs.d" / host
    d.mkdir(parents=True)
    with open(ca[0], "rb") as f:
        (d / "ca.crt").write_bytes(f.read())
    with RegistrySession(host, config_dir=str(tmp_path / "cfg"), retries=0) as c:
        for _ in range(2):
            r = c._send("GET", f"https://{host}/tls", headers={})
            assert r.json() == {"len": 0}
        assert c.session.connections_made == 1  # TLS connections are kept alive too
    assert [p for _, p, *_ in srv.seen] == ["/tls", "/tls"]


def test_proxy_from_the_environment(server, monkeypatch):
    proxy, target = server(), server()
    monkeypatch.setenv("HTTP_PROXY", f"http://u:p@127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with session() as s:
        s.request("GET", url(target, "/via-proxy"))
    assert [p for _, p, *_ in proxy.seen] == [url(target, "/via-proxy")]
    assert proxy.seen[0][2]["Proxy-Authorization"] == "Basic dTpw"
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    with session() as s:
        s.request("GET", url(target, "/direct"))
    assert [p for _, p, *_ in target.seen] == ["/direct"]


def test_response_bodies_framed_every_way(server):
    """Chunked (with extensions and trailers), until the server closes, and a HEAD whose
    Content-Length has no body after it; the connection kept where it can be."""
    srv = server()
    with session() as s:
        r = s.request("GET", url(srv, "/chunked"))
        assert r.content == b"abc0123456789"
        r = s.request("GET", url(srv, "/chunked"), stream=True)
        assert list(r.iter_content(2)) == [b"ab", b"c", b"01", b"23", b"45", b"67", b"89"]
        r = s.request("HEAD", url(srv, "/head"))
        assert r.headers.get("Content-Length") == "12345" and r.content == b""
        assert s.request("GET", url(srv, "/a")).json() == {"len": 0}
        assert s.connections_made == 1  # chunked and HEAD answers left the connection usable
        r = s.request("GET", url(srv, "/until-close"))
        assert r.content == b"all of it"
        assert s.request("GET", url(srv, "/a")).status_code == 200
        assert s.connections_made == 2  # the until-close answer used its connection up


def _raw_server(reply: bytes):
    """A server that answers every connection with ``reply`` and closes it."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()

    def serve():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return lsock


@pytest.mark.parametrize("reply", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"",
])
def test_a_broken_answer_is_a_transport_error(reply):
    lsock = _raw_server(reply)
    try:
        with session() as s, pytest.raises(transport.TransportError):
            s.request("GET", f"http://127.0.0.1:{lsock.getsockname()[1]}/")
    finally:
        lsock.close()


def test_interim_and_folded_answers():
    lsock = _raw_server(b"HTTP/1.1 100 Continue\r\n\r\n"
                        b"HTTP/1.1 201 Created\r\nX-Long: a\r\n  b\r\n"
                        b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
    try:
        with session() as s:
            r = s.request("PUT", f"http://127.0.0.1:{lsock.getsockname()[1]}/", data=b"x")
            assert (r.status_code, r.reason, r.content) == (201, "Created", b"ok")
            assert r.headers.get("x-long") == "a b"
    finally:
        lsock.close()


def test_https_through_a_connect_proxy(server, tmp_path, monkeypatch):
    ca = make_ca(str(tmp_path / "ca"))
    cert, key = make_server_cert(str(tmp_path / "ca"), ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    target = server(ctx)
    asked = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()

    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def proxy():
        conn, _ = lsock.accept()
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += conn.recv(1)
        asked.append(head.decode())
        host, port = head.split()[1].decode().rsplit(":", 1)
        up = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\n")
        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()
        pipe(conn, up)

    threading.Thread(target=proxy, daemon=True).start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://u:p@127.0.0.1:{lsock.getsockname()[1]}")
    for name in ("https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    def trusting():
        c = ssl.create_default_context()
        c.load_verify_locations(ca[0])
        return c

    try:
        with transport.Session(ssl_context=trusting) as s:
            r = s.request("GET", f"https://127.0.0.1:{target.server_address[1]}/tunnelled")
            assert r.json() == {"len": 0}
    finally:
        lsock.close()
    assert asked[0].startswith(f"CONNECT 127.0.0.1:{target.server_address[1]} HTTP/1.1\r\n")
    assert "Proxy-Authorization: Basic dTpw" in asked[0]
    assert [p for _, p, *_ in target.seen] == ["/tunnelled"]


def test_while_waiting_runs_once_between_the_request_and_its_answer(server):
    """The callable runs after the request reached the server and before the answer is
    read: the server has seen the request when it runs; through a redirect (two
    requests), once."""
    srv = server()
    calls = []

    def meanwhile():
        calls.append([path for _, path, *_ in srv.seen])

    with session() as s:
        # (the server records the request before answering; its thread may lag: wait)
        def seen_first():
            import time

            for _ in range(500):
                if srv.seen:
                    break
                time.sleep(0.01)
            meanwhile()

        target = url(srv, "/a")
        r = s.request("GET", url(srv, f"/redirect?to={target}"), while_waiting=seen_first)
        assert r.status_code == 200 and r.json() == {"len": 0}
    assert calls == [[f"/redirect?to={target}"]]  # once, with the first request sent


def test_while_waiting_error_ends_the_request_and_its_connection(server):
    srv = server()

    def fails():
        raise OSError("the caller's own failure, not the connection's")

    with session() as s:
        with pytest.raises(OSError, match="the caller's own failure"):
            s.request("GET", url(srv, "/a"), while_waiting=fails)
        assert len(srv.seen) <= 1  # not sent again as if the connection had broken
        assert s.request("GET", url(srv, "/b")).status_code == 200
        assert s.connections_made == 2  # the first one was closed, not pooled half-read


def test_while_waiting_not_called_when_nothing_was_sent():
    calls = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    lsock.close()  # nothing listens there
    with session() as s, pytest.raises(transport.ConnectError):
        s.request("GET", f"http://127.0.0.1:{port}/", while_waiting=lambda: calls.append(1))
    assert calls == []


# -- a GET sent behind another (HTTP/1.1 pipelining) ------------------------------------------


def echo(srv, name: str) -> str:
    return url(srv, "/echo/" + name)


def test_a_get_sent_behind_another_is_answered_on_the_same_connection(server):
    srv = server()
    with session() as s:
        r = s.request("GET", echo(srv, "first"), then=(echo(srv, "second"), {"X-Then": "1"}))
        assert r.content == b"/echo/first"
        pipelined = r.pipelined
        r2 = pipelined.answer()
        assert r2.status_code == 200 and r2.content == b"/echo/second"
        assert pipelined.answer() is None  # once
        assert s.request("GET", echo(srv, "third")).content == b"/echo/third"
        assert s.connections_made == 1  # back in the pool once both answers were read
    assert [p for _, p, *_ in srv.seen] == ["/echo/first", "/echo/second", "/echo/third"]
    assert srv.seen[1][2]["X-Then"] == "1" and srv.seen[1][2]["User-Agent"] == "t/1"
    assert len({port for *_, port in srv.seen}) == 1


def test_a_get_sent_behind_never_answers_another_request(server):
    """Its answer waits on the connection: while it is there, or once it is given up,
    that connection serves no other request (which would read the wrong answer)."""
    srv = server()
    with session() as s:
        r = s.request("GET", echo(srv, "first"), then=(echo(srv, "unread"), {}))
        assert r.content == b"/echo/first"
        assert s.request("GET", echo(srv, "other")).content == b"/echo/other"
        r.pipelined.close()
        assert r.pipelined.answer() is None
        assert s.request("GET", echo(srv, "again")).content == b"/echo/again"
        assert s.connections_made == 2


def test_a_get_sent_behind_is_lost_when_its_connection_is(server):
    """The server closes the connection after the first answer, or the first answer's
    body is not read to its end: no answer (the caller asks anew), no error."""
    srv = server()
    with session() as s:
        r = s.request("GET", url(srv, "/close"), then=(echo(srv, "x"), {}))
        assert r.content == b"bye"
        assert r.pipelined.answer() is None
        r = s.request("GET", url(srv, "/big"), stream=True, then=(echo(srv, "y"), {}))
        assert r.read(10) == b"b" * 10
        r.close()
        assert r.pipelined.answer() is None
        assert s.request("GET", echo(srv, "z")).content == b"/echo/z"


def test_a_get_sent_behind_a_redirected_request(server):
    """The first request is redirected to another server: the answer behind it comes on
    the first connection once the redirect's (empty) body is read."""
    a, b = server(), server()
    with session() as s:
        r = s.request("GET", url(a, f"/redirect?to={echo(b, 'moved')}"),
                      then=(echo(a, "behind"), {}))
        assert r.content == b"/echo/moved"
        assert r.pipelined.answer().content == b"/echo/behind"


def test_nothing_sent_behind_a_body_or_to_another_server(server):
    a, b = server(), server()
    with session() as s:
        r = s.request("GET", echo(a, "first"), then=(echo(b, "elsewhere"), {}))
        assert r.content == b"/echo/first" and r.pipelined is None
        r = s.request("POST", echo(a, "post"), data=b"x", then=(echo(a, "after-post"), {}))
        assert r.status_code == 200 and r.pipelined is None
    assert b.seen == []
    assert [p for _, p, *_ in a.seen] == ["/echo/first", "/echo/post"]
