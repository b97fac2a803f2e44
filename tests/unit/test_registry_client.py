"""The registry client against a tiny registry served from this test on 127.0.0.1.

The real registry (tests/integration) covers the common paths; this one plays the
rare behaviours a real registry seldom shows on demand: 429 then success, a
connection dropped mid-blob, a 403 carrying a challenge, ``access_token``, a
challenge without ``service``, servers that ignore ``Range``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from pbox.errors import AuthError, DigestMismatch, ManifestUnknown, RegistryError, UnsupportedFormat
from pbox.oci import mediatypes as mt
from pbox.oci.auth import Credentials
from pbox.oci.registry import (
    RegistryClient,
    client_for,
    is_loopback,
    redact_url,
)
from pbox.oci.tls import cert_dirs, find_tls_files

PASSWORD = "s3cr3t-pw-XYZ"
BLOB = bytes(range(256)) * 4096  # 1 MiB
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": BLOB_DIGEST, "size": len(BLOB)},
        "layers": [],
    },
    indent=2,
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Fake:
    """State and behaviour of the fake registry (and its token endpoint)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict]] = []
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {
            ("x/app", "v1"): (MANIFEST, mt.OCI_MANIFEST),
            ("x/app", MANIFEST_DIGEST): (MANIFEST, mt.OCI_MANIFEST),
        }
        self.blobs: dict[str, bytes] = {BLOB_DIGEST: BLOB}
        self.uploads: dict[str, bytearray] = {}
        self.auth: str | None = None  # None, "basic", "bearer"
        self.users = {"alice": PASSWORD}
        self.token_field = "token"
        self.service: str | None = "fake-registry"
        self.anonymous_pull = True
        self.insufficient_status = 401
        self.tokens: dict[str, tuple[str | None, set]] = {}
        self.token_requests: list[dict] = []
        self.status_script: list[int] = []  # statuses to answer before serving normally
        self.drop_blob_after: list[int] = []  # per blob GET: bytes to send before hanging up
        self.ignore_range = False
        self.redirect_blobs = False
        self.chunk_min: int | None = None
        self.stream_failures = 0  # that many next stream uploads (PATCH, no range) get 503
        self.mountable = True
        self.downgrade_tokens = 0  # that many next tokens get pull scopes only
        self.private: set[str] = set()  # repositories anonymous tokens never cover
        self.repos = [f"repo{i:02d}" for i in range(7)]
        self.api_header = True  # Docker-Distribution-Api-Version on /v2/ answers
        self.port = 0

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.startswith(prefix))


def make_handler(fake: Fake):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def setup(self):
            super().setup()
            # headers and body go out in separate writes: without this, Nagle's algorithm
            # and delayed ACKs add 40 ms to every exchange
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        # -- sending --
        def send(self, status, body=b"", headers=None, ctype="application/json"):
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            self.send_response(status)
            if self.path.startswith("/v2/") and fake.api_header:  # as distribution does
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if ctype and "Content-Type" not in (headers or {}):
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def err(self, status, code, message, headers=None):
            self.send(status, {"errors": [{"code": code, "message": message}]}, headers)

        def body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    n = int(self.rfile.readline().strip(), 16)
                    if n == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(n)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        # -- auth --
        def challenge(self, scope: str | None, error: str | None = None) -> dict:
            if fake.auth == "basic":
                return {"WWW-Authenticate": 'Basic realm="fake"'}
            parts = [f'realm="http://127.0.0.1:{fake.port}/token"']
            if fake.service:
                parts.append(f'service="{fake.service}"')
            if scope:
                parts.append(f'scope="{scope}"')
            if error:
                parts.append(f'error="{error}"')
            return {"WWW-Authenticate": "Bearer " + ",".join(parts)}

        def basic_user(self) -> str | None:
            h = self.headers.get("Authorization", "")
            if not h.startswith("Basic "):
                return None
            user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
            return user if fake.users.get(user) == pw else ""

        def authorized(self, repo: str | None, action: str) -> bool:
            if fake.auth is None:
                return True
            scope = f"repository:{repo}:{action}" if repo else None
            if repo == "_catalog":
                scope = "registry:catalog:*"
            if fake.auth == "basic":
                if self.basic_user():
                    return True
                self.err(401, "UNAUTHORIZED", "authentication required", self.challenge(None))
                return False
            h = self.headers.get("Authorization", "")
            tok = fake.tokens.get(h[7:]) if h.startswith("Bearer ") else None
            if tok is None:
                self.err(401, "UNAUTHORIZED", "authentication required", self.challenge(scope))
                return False
            if (
                scope
                and scope not in tok[1]
                and not (action == "pull" and f"repository:{repo}:pull,push" in tok[1])
            ):
                status = fake.insufficient_status
                self.err(
                    status,
                    "DENIED",
                    "insufficient scope",
                    self.challenge(scope, "insufficient_scope"),
                )
                return False
            return True

        def token(self, q):
            user = self.basic_user()
            fake.token_requests.append(
                {"service": q.get("service", [None])[0], "scope": q.get("scope", []), "user": user}
            )
            if user == "" or (user is None and not fake.anonymous_pull):
                self.send(401, {"details": "incorrect username or password"})
                return
            granted = set()
            for sc in q.get("scope", []):
                if user is None and not sc.endswith(":pull"):
                    continue
                if user is None and sc.split(":")[1] in fake.private:
                    continue
                if fake.downgrade_tokens and sc.endswith(":pull,push"):
                    sc = sc[: -len(",push")]
                granted.add(sc)
            if fake.downgrade_tokens:
                fake.downgrade_tokens -= 1
            value = f"tok-SECRET-{len(fake.token_requests)}"
            fake.tokens[value] = (user, granted)
            self.send(200, {fake.token_field: value, "expires_in": 300})

        # -- dispatch --
        def handle_any(self):
            url = urlsplit(self.path)
            q = parse_qs(url.query)
            with fake.lock:
                fake.requests.append((self.command, url.path, dict(self.headers)))
            data = self.body() if self.command in ("POST", "PUT", "PATCH") else b""
            if url.path == "/token":
                return self.token(q)
            if url.path.startswith("/storage/"):  # where blobs are redirected to
                return self.blob(url.path[len("/storage/") :])
            if fake.status_script:
                status = fake.status_script.pop(0)
                return self.err(
                    status,
                    "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE",
                    "try later",
                    {"Retry-After": "0"},
                )
            if url.path == "/v2/":
                if fake.auth and not self.authorized(None, "pull"):
                    return
                return self.send(200, {})
            if url.path == "/v2/_catalog":
                if not self.authorized("_catalog", "*"):
                    return
                n = int(q.get("n", ["100"])[0])
                last = q.get("last", [""])[0]
                rest = [r for r in fake.repos if r > last]
                page, more = rest[:n], rest[n:]
                headers = {}
                if more:
                    headers["Link"] = f'</v2/_catalog?last={page[-1]}&n={n}>; rel="next"'
                return self.send(200, {"repositories": page}, headers)
            parts = url.path[len("/v2/") :].split("/")
            for i, p in enumerate(parts):
                if p in ("manifests", "blobs", "tags"):
                    repo, kind, rest = "/".join(parts[:i]), p, parts[i + 1 :]
                    break
            else:
                return self.err(404, "NAME_UNKNOWN", "no")
            write = self.command in ("PUT", "POST", "PATCH", "DELETE")
            if not self.authorized(repo, "pull,push" if write else "pull"):
                return
            if kind == "manifests":
                return self.manifest(repo, rest[0], data)
            if rest and rest[0] == "uploads":
                return self.upload(repo, rest[1] if len(rest) > 1 else "", q, data)
            return self.blob(rest[0])

        def manifest(self, repo, ref, data):
            if self.command == "PUT":
                fake.manifests[(repo, ref)] = (data, self.headers["Content-Type"])
                fake.manifests[(repo, sha(data))] = (data, self.headers["Content-Type"])
                return self.send(201, b"", {"Docker-Content-Digest": sha(data)})
            found = fake.manifests.get((repo, ref))
            if found is None:
                return self.err(404, "MANIFEST_UNKNOWN", "manifest unknown")
            raw, ctype = found
            self.send(200, raw, {"Docker-Content-Digest": sha(raw)}, ctype=ctype)

        def blob(self, digest):
            if fake.redirect_blobs and not self.path.startswith("/storage/"):
                where = f"/storage/{digest}?X-Amz-Signature=SECRETSIG&X-Amz-Expires=60"
                return self.send(307, b"", {"Location": where})
            data = fake.blobs.get(digest)
            if data is None:
                return self.err(404, "BLOB_UNKNOWN", "blob unknown")
            start = 0
            rng = self.headers.get("Range")
            if rng and not fake.ignore_range and self.command == "GET":
                start = int(rng.split("=")[1].split("-")[0])
            body = data[start:]
            if self.command == "HEAD" or not fake.drop_blob_after:
                headers = {}
                status = 200
                if start:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self.send(status, body, headers, ctype="application/octet-stream")
            cut = fake.drop_blob_after.pop(0)
            self.send_response(206 if start else 200)
            if self.path.startswith("/v2/") and fake.api_header:
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

        def upload(self, repo, uid, q, data):
            if self.command == "POST":
                if "mount" in q and fake.mountable and q["mount"][0] in fake.blobs:
                    return self.send(201, b"", {"Location": f"/v2/{repo}/blobs/{q['mount'][0]}"})
                uid = str(uuid.uuid4())
                fake.uploads[uid] = bytearray()
                headers = {"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=abc", "Range": "0-0"}
                if fake.chunk_min:
                    headers["OCI-Chunk-Min-Length"] = str(fake.chunk_min)
                return self.send(202, b"", headers)
            if uid not in fake.uploads:
                return self.err(404, "BLOB_UPLOAD_UNKNOWN", "no such upload")
            buf = fake.uploads[uid]
            if self.command == "DELETE":
                del fake.uploads[uid]
                return self.send(204, b"")
            if self.command == "PATCH" and not self.headers["Content-Range"] \
                    and fake.stream_failures:
                fake.stream_failures -= 1
                del fake.uploads[uid]
                return self.err(503, "UNAVAILABLE", "try again")
            if self.command == "PATCH":
                # no Content-Range: a stream upload, appended (as distribution does)
                start = int((self.headers["Content-Range"] or str(len(buf))).split("-")[0])
                if start != len(buf):
                    return self.err(416, "BLOB_UPLOAD_INVALID", "bad range")
                buf += data
                return self.send(
                    202,
                    b"",
                    {
                        "Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=n",
                        "Range": f"0-{len(buf) - 1}",
                    },
                )
            buf += data
            d = q["digest"][0]
            if sha(bytes(buf)) != d:
                return self.err(400, "DIGEST_INVALID", "digest did not match")
            fake.blobs[d] = bytes(buf)
            return self.send(
                201, b"", {"Location": f"/v2/{repo}/blobs/{d}", "Docker-Content-Digest": d}
            )

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    return H


@pytest.fixture
def fake():
    f = Fake()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(f))
    httpd.daemon_threads = True
    f.port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f
    httpd.shutdown()
    httpd.server_close()
    t.join(5)


def client(fake, **kw) -> RegistryClient:
    kw.setdefault("backoff", 0.01)
    return RegistryClient(f"127.0.0.1:{fake.port}", **kw)


def alice() -> Credentials:
    return Credentials("alice", PASSWORD)


# -- basics -------------------------------------------------------------------------------------


def test_plain_http_fallback_on_loopback(fake):
    with client(fake) as c:
        assert c.ping() is None
        assert c.base_url == f"http://127.0.0.1:{fake.port}"


def test_http_only_for_loopback_or_insecure():
    assert RegistryClient("127.0.0.1:5000").allow_http
    assert RegistryClient("localhost:5000").allow_http
    assert RegistryClient("[::1]:5000").allow_http
    assert RegistryClient("127.8.9.10").allow_http
    assert not RegistryClient("registry.example.com").allow_http
    assert not RegistryClient("10.0.0.1:5000").allow_http
    assert RegistryClient("registry.example.com", tls_verify=False).allow_http
    assert RegistryClient("docker.io").host == "registry-1.docker.io"
    assert RegistryClient("registry-1.docker.io").registry == "docker.io"
    assert is_loopback("localhost") and not is_loopback("example.com")


def test_manifest_by_tag_and_digest(fake):
    with client(fake) as c:
        raw, media_type, digest = c.get_manifest("x/app", "v1")
        assert raw == MANIFEST and media_type == mt.OCI_MANIFEST and digest == MANIFEST_DIGEST
        assert c.get_manifest("x/app", MANIFEST_DIGEST)[2] == MANIFEST_DIGEST
        accept = [h for m, p, h in fake.requests if p.endswith("/manifests/v1")][0]["Accept"]
        assert mt.OCI_INDEX in accept and mt.DOCKER_MANIFEST in accept
        assert c.head_manifest("x/app", "v1") == (MANIFEST_DIGEST, mt.OCI_MANIFEST, len(MANIFEST))
        assert c.head_manifest("x/app", "nope") is None


def test_manifest_digest_verified(fake):
    wrong = "sha256:" + "0" * 64
    fake.manifests[("x/app", wrong)] = (MANIFEST, mt.OCI_MANIFEST)
    with client(fake) as c, pytest.raises(DigestMismatch):
        c.get_manifest("x/app", wrong)


def test_corrupt_manifest_by_digest_is_a_digest_mismatch(fake):
    fake.manifests[("x/app", MANIFEST_DIGEST)] = (b"\x9a" + MANIFEST[1:], mt.OCI_MANIFEST)
    with client(fake) as c, pytest.raises(DigestMismatch) as e:
        c.get_manifest("x/app", MANIFEST_DIGEST)
    assert "digest mismatch" in str(e.value) and MANIFEST_DIGEST in str(e.value)


def test_manifest_unknown_message(fake):
    with client(fake) as c, pytest.raises(ManifestUnknown) as e:
        c.get_manifest("x/app", "nope")
    assert str(e.value) == f"manifest unknown: 127.0.0.1:{fake.port}/x/app:nope not found"
    assert e.value.status == 404 and e.value.code == "MANIFEST_UNKNOWN"


def test_schema1_refused(fake):
    fake.manifests[("x/old", "latest")] = (
        b'{"schemaVersion": 1, "name": "x/old"}',
        mt.DOCKER_MANIFEST_V1_SIGNED,
    )
    with client(fake) as c, pytest.raises(UnsupportedFormat) as e:
        c.get_manifest("x/old", "latest")
    assert "schema 1" in str(e.value)


# -- retries ------------------------------------------------------------------------------------


def test_429_then_success(fake):
    with client(fake) as c:
        c.ping()
        fake.status_script = [429, 429]
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST
    assert fake.count("GET", "/v2/x/app/manifests/v1") == 3


def test_503_bounded(fake):
    with client(fake, retries=2) as c:
        c.ping()
        fake.status_script = [503] * 10
        with pytest.raises(RegistryError) as e:
            c.get_manifest("x/app", "v1")
    assert e.value.temporary and e.value.status == 503
    assert fake.count("GET", "/v2/x/app/manifests/v1") == 3


def test_429_gives_up_with_a_clear_message(fake):
    with client(fake, retries=1) as c:
        c.ping()
        fake.status_script = [429] * 5
        with pytest.raises(RegistryError) as e:
            c.get_manifest("x/app", "v1")
    assert str(e.value).startswith("too many requests")
    assert e.value.temporary


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = RegistryClient(f"127.0.0.1:{port}", retries=0)
    with pytest.raises(RegistryError) as e:
        c.ping()
    assert "connection refused" in str(e.value)


# -- blobs --------------------------------------------------------------------------------------


def read_all(r, n=65536) -> bytes:
    out = []
    while True:
        chunk = r.read(n)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


def test_fetch_blob(fake):
    with client(fake) as c:
        r = c.fetch_blob("x/app", BLOB_DIGEST, len(BLOB))
        assert read_all(r) == BLOB and r.verified
        assert c.blob_exists("x/app", BLOB_DIGEST)
        assert c.stat_blob("x/app", BLOB_DIGEST) == len(BLOB)
        assert not c.blob_exists("x/app", "sha256:" + "1" * 64)


def test_first_request_settles_the_scheme_without_a_ping(fake):
    with client(fake) as c:
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST
        assert read_all(c.fetch_blob("x/app", BLOB_DIGEST, len(BLOB))) == BLOB
    assert [(m, p) for m, p, _ in fake.requests] == [
        ("GET", "/v2/x/app/manifests/v1"), ("GET", f"/v2/x/app/blobs/{BLOB_DIGEST}")]


def test_first_answer_not_from_a_registry_means_the_ping(fake):
    """A plain-HTTP answer without the registry's header (a TLS port's 400, some other
    server) settles nothing: the ping decides, as it did before, then the request again."""
    fake.api_header = False
    with client(fake) as c:
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST
        assert c.base_url == f"http://127.0.0.1:{fake.port}"
    paths = [p for _, p, _ in fake.requests]
    assert paths.count("/v2/x/app/manifests/v1") == 2 and "/v2/" in paths


def test_fetch_blob_resumes_with_range(fake):
    fake.drop_blob_after = [300_000, 200_000]
    with client(fake) as c:
        r = c.fetch_blob("x/app", BLOB_DIGEST)
        assert read_all(r, 10_000) == BLOB and r.verified
    ranges = [h.get("Range") for m, p, h in fake.requests if p.endswith(BLOB_DIGEST) and m == "GET"]
    assert ranges == [None, "bytes=300000-", "bytes=500000-"]


def test_fetch_blob_resume_when_server_ignores_range(fake):
    fake.drop_blob_after = [123_457]
    fake.ignore_range = True
    with client(fake) as c:
        assert read_all(c.fetch_blob("x/app", BLOB_DIGEST, len(BLOB))) == BLOB


def test_fetch_blob_gives_up_after_bounded_resumes(fake):
    fake.drop_blob_after = [1000] * 10
    with client(fake, resumes=2) as c:
        r = c.fetch_blob("x/app", BLOB_DIGEST)
        with pytest.raises(RegistryError) as e:
            read_all(r)
    assert "connection broke 3 times" in str(e.value)


def test_fetch_blob_digest_mismatch(fake):
    bad = "sha256:" + "2" * 64
    fake.blobs[bad] = b"not what the name says"
    with client(fake) as c:
        r = c.fetch_blob("x/app", bad)
        with pytest.raises(DigestMismatch):
            read_all(r)


def test_fetch_blob_unknown(fake):
    with client(fake) as c, pytest.raises(RegistryError) as e:
        c.fetch_blob("x/app", "sha256:" + "3" * 64)
    assert e.value.status == 404 and "blob unknown" in str(e.value)


# -- bearer tokens --------------------------------------------------------------------------------


def test_anonymous_token_reused(fake):
    fake.auth = "bearer"
    with client(fake) as c:
        c.get_manifest("x/app", "v1")
        c.get_manifest("x/app", MANIFEST_DIGEST)
        read_all(c.fetch_blob("x/app", BLOB_DIGEST))
    assert len(fake.token_requests) == 1
    tr = fake.token_requests[0]
    assert tr == {"service": "fake-registry", "scope": ["repository:x/app:pull"], "user": None}


def test_token_per_scope(fake):
    fake.auth = "bearer"
    fake.manifests[("y/other", "v1")] = (MANIFEST, mt.OCI_MANIFEST)
    with client(fake) as c:
        c.get_manifest("x/app", "v1")
        c.get_manifest("y/other", "v1")
        c.get_manifest("x/app", "v1")
    assert [t["scope"] for t in fake.token_requests] == [
        ["repository:x/app:pull"],
        ["repository:y/other:pull"],
    ]


def test_expired_token_renewed(fake):
    fake.auth = "bearer"
    with client(fake) as c:
        c.get_manifest("x/app", "v1")
        # no ping: the first GET is answered by the challenge, then sent with the token
        assert fake.count("GET", "/v2/x/app/manifests/v1") == 2
        for tok in c._tokens.values():
            tok.expires = 0.0  # as if its lifetime had passed
        c.get_manifest("x/app", "v1")
    assert len(fake.token_requests) == 2
    assert fake.count("GET", "/v2/x/app/manifests/v1") == 3  # renewed before, not after a 401


def test_token_refused_by_registry_gets_one_new_exchange(fake):
    fake.auth = "bearer"
    with client(fake) as c:
        c.get_manifest("x/app", "v1")
        assert fake.count("GET", "/v2/x/app/manifests/v1") == 2  # the challenge, the token
        fake.tokens.clear()  # the registry no longer accepts the token we hold
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST
    assert len(fake.token_requests) == 2
    assert fake.count("GET", "/v2/x/app/manifests/v1") == 4  # refused, then a new exchange


def test_access_token_field_and_missing_service(fake):
    fake.auth = "bearer"
    fake.token_field = "access_token"
    fake.service = None
    with client(fake) as c:
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST
    assert fake.token_requests[0]["service"] is None


def test_403_with_challenge_gets_a_new_exchange(fake):
    fake.auth = "bearer"
    fake.insufficient_status = 403
    fake.downgrade_tokens = 1  # the next token covers pull only, whatever was asked
    with client(fake, credentials=alice()) as c:
        digest = c.put_manifest("x/app", "v2", MANIFEST, mt.OCI_MANIFEST)
    assert digest == MANIFEST_DIGEST
    assert fake.manifests[("x/app", "v2")][0] == MANIFEST
    assert fake.count("PUT", "/v2/x/app/manifests/v2") == 2  # 403 + challenge, then accepted
    assert len(fake.token_requests) == 2
    assert "repository:x/app:pull,push" in fake.token_requests[-1]["scope"]


def test_401_on_manifest_with_anonymous_token_says_not_found_or_not_authorized(fake):
    fake.auth = "bearer"
    fake.private = {"private/app"}
    fake.manifests[("private/app", "v1")] = (MANIFEST, mt.OCI_MANIFEST)
    with client(fake) as c, pytest.raises(AuthError) as e:
        c.get_manifest("private/app", "v1")
    msg = str(e.value)
    assert msg.startswith(f"unauthorized: 127.0.0.1:{fake.port}/private/app:v1: not found or not")
    assert f"pbox login 127.0.0.1:{fake.port}" in msg
    assert e.value.status == 401
    # the first GET's challenge names the scope: one anonymous token for it, refused
    # again: then give up
    assert len(fake.token_requests) == 1
    assert fake.count("GET", "/v2/private/app/manifests/v1") == 2
    with client(fake, credentials=alice()) as c:
        assert c.get_manifest("private/app", "v1")[0] == MANIFEST


def test_push_needs_credentials(fake):
    fake.auth = "bearer"
    with client(fake) as c, pytest.raises(AuthError) as e:
        c.put_manifest("x/app", "v2", MANIFEST, mt.OCI_MANIFEST)
    assert "unauthorized" in str(e.value)


def test_wrong_password_bearer(fake):
    fake.auth = "bearer"
    with (
        client(fake, credentials=Credentials("alice", "wrong")) as c,
        pytest.raises(AuthError) as e,
    ):
        c.get_manifest("x/app", "v1")
    assert str(e.value).startswith("unauthorized: incorrect username or password")
    assert "wrong" not in str(e.value)


def test_no_credentials_in_logs_or_messages(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.auth = "bearer"
    with client(fake, credentials=alice()) as c:
        c.get_manifest("x/app", "v1")
        c.push_blob("x/new", sha(b"abc"), 3, lambda: __import__("io").BytesIO(b"abc"))
        with pytest.raises(ManifestUnknown) as e:
            c.get_manifest("x/app", "nope")
    assert fake.token_requests[0]["user"] == "alice"
    text = caplog.text + str(e.value)
    assert "manifests/v1" in caplog.text  # something was logged
    assert PASSWORD not in text
    assert "tok-SECRET" not in text
    assert base64.b64encode(f"alice:{PASSWORD}".encode()).decode() not in text


def test_redirected_blob_and_signed_urls_kept_out_of_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.auth = "bearer"
    fake.redirect_blobs = True
    fake.drop_blob_after = [100_000]
    with client(fake) as c:
        assert read_all(c.fetch_blob("x/app", BLOB_DIGEST)) == BLOB
    storage = [h for m, p, h in fake.requests if p.startswith("/storage/")]
    ranges = [h.get("Range") for h in storage]
    # resumed from what had been delivered when the connection broke (<= 100000 bytes)
    assert ranges[0] is None and len(ranges) == 2
    assert 0 < int(ranges[1][len("bytes=") : -1]) <= 100_000
    assert "/storage/" in caplog.text
    assert "SECRETSIG" not in caplog.text


def test_redact_url():
    u = redact_url("https://u:pw@s3.example/b?X-Amz-Signature=abc&X-Amz-Credential=k&a=1&token=t")
    assert "pw" not in u and "abc" not in u and "=k" not in u and "t&" not in u + "&"
    assert "a=1" in u and "s3.example/b" in u


# -- basic auth -----------------------------------------------------------------------------------


def test_basic_auth(fake):
    fake.auth = "basic"
    with client(fake, credentials=alice()) as c:
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST
    # with credentials the ping goes first (no guessing): they go with every request
    sent = [h.get("Authorization", "") for m, p, h in fake.requests if p.startswith("/v2/x")]
    assert sent and all(s.startswith("Basic ") for s in sent)
    assert [p for _, p, _ in fake.requests][0] == "/v2/"


def test_basic_auth_wrong_password_and_none(fake):
    fake.auth = "basic"
    with client(fake, credentials=Credentials("alice", "nope")) as c, pytest.raises(AuthError) as e:
        c.get_manifest("x/app", "v1")
    assert str(e.value) == f"unauthorized: incorrect username or password for 127.0.0.1:{fake.port}"
    with client(fake) as c, pytest.raises(AuthError) as e:
        c.get_manifest("x/app", "v1")
    assert str(e.value).startswith(
        f"unauthorized: authentication required for 127.0.0.1:{fake.port}/x/app"
    )


# -- push ---------------------------------------------------------------------------------------


def test_push_blob_monolithic(fake):
    data = b"layer bytes " * 10000
    d = sha(data)
    import io

    with client(fake) as c:
        assert c.push_blob("x/app", d, len(data), io.BytesIO(data)) is True
        assert fake.blobs[d] == data
        assert c.push_blob("x/app", d, len(data), io.BytesIO(data)) is False  # exists
    assert fake.count("PATCH", "/v2/") == 0
    put = [(p, h) for m, p, h in fake.requests if m == "PUT"]
    assert len(put) == 1 and put[0][1]["Content-Length"] == str(len(data))


def test_push_blob_chunked_when_asked(fake):
    import io

    data = bytes(range(256)) * 1000
    d = sha(data)
    fake.chunk_min = 100_000
    with client(fake) as c:
        c.push_blob("x/app", d, len(data), io.BytesIO(data), chunk_size=100_000)
    assert fake.blobs[d] == data
    assert fake.count("PATCH", "/v2/x/app/blobs/uploads/") == 3


def test_push_blob_stream(fake):
    data = os.urandom(300_000)
    with client(fake) as c:
        c.push_blob_stream("x/app", iter([data[:1000], data[1000:]]), lambda: sha(data), "a")
    assert fake.blobs[sha(data)] == data
    patches = [h for m, _, h in fake.requests if m == "PATCH"]
    assert len(patches) == 1 and patches[0].get("Transfer-Encoding") == "chunked"
    assert "Content-Range" not in patches[0]


def test_push_blob_stream_in_pieces_when_asked(fake, monkeypatch):
    from pbox.oci import registry

    monkeypatch.setattr(registry, "DEFAULT_CHUNK_UPLOAD", 100_000)
    fake.chunk_min = 50_000
    data = os.urandom(250_001)
    with client(fake) as c:
        c.push_blob_stream("x/app", (data[i:i + 7777] for i in range(0, len(data), 7777)),
                           lambda: sha(data), "a")
    assert fake.blobs[sha(data)] == data
    ranges = [h["Content-Range"] for m, _, h in fake.requests if m == "PATCH"]
    assert ranges == ["0-99999", "100000-199999", "200000-250000"]


def test_a_failing_stream_stores_nothing(fake):
    def chunks():
        yield b"x" * 1000
        raise RuntimeError("the layer could not be read")

    with client(fake) as c, pytest.raises(RuntimeError):
        c.push_blob_stream("x/app", chunks(), lambda: sha(b"x" * 2000), "a")
    assert fake.blobs == {} or all(not v.startswith(b"x" * 1000) for v in fake.blobs.values())
    assert fake.count("PUT", "/v2/x/app/blobs/uploads/") == 0


def test_a_layer_whose_stream_upload_fails_for_a_while_is_pushed_from_a_temp_file(
        fake, tmp_path):
    """A 503 to the streamed PATCH (a registry's passing trouble): the layer is compressed
    into a temp file of the store and uploaded from there; the blob is remembered."""
    import gzip

    from pbox import distribution
    from pbox.storage.store import Store

    store = Store.open(str(tmp_path / "root"), str(tmp_path / "run"))
    entry = store.new_layer()
    payload = os.urandom(100_000)
    with open(os.path.join(entry.path, "diff", "file"), "wb") as f:
        f.write(payload)
    chain = "sha256:" + "ab" * 32
    store.commit_layer(entry, chain, {"chain_id": chain, "diff_id": chain, "size": 100_000})
    fake.stream_failures = 1
    events = []
    with client(fake) as c:
        pushed = distribution._push_layer(c, store, "x/app", chain, store.layer_info(chain),
                                          "gzip", False, lambda e, **i: events.append(e), [])
    assert fake.stream_failures == 0  # the stream was tried, and refused
    assert pushed.status == "pushed" and fake.blobs[pushed.digest]
    assert b"file" in gzip.decompress(fake.blobs[pushed.digest])[:512]
    assert pushed.size == len(fake.blobs[pushed.digest])
    assert "layer-preparing" in events and events[-1] == "layer-pushed"
    remembered = store.layer_info(chain)["compressed_by"]["gzip"]
    assert remembered == {"digest": pushed.digest, "size": pushed.size,
                          "diff_id": pushed.diff_id}
    assert [n for n in os.listdir(store.tmp_dir) if n.startswith("push-")] == []


def test_push_blob_bad_digest(fake):
    import io

    with client(fake) as c, pytest.raises(RegistryError) as e:
        c.push_blob("x/app", "sha256:" + "4" * 64, 3, io.BytesIO(b"abc"))
    assert e.value.code == "DIGEST_INVALID"


def test_mount_blob(fake):
    with client(fake) as c:
        assert c.mount_blob("z/dest", BLOB_DIGEST, "x/app") is True
        assert c.mount_blob("z/dest", "sha256:" + "5" * 64, "x/app") is False
    assert fake.uploads == {}  # the session opened instead of a mount was cancelled


def test_put_manifest_and_catalog(fake):
    with client(fake) as c:
        assert c.put_manifest("n/m", "t", MANIFEST, mt.OCI_MANIFEST) == MANIFEST_DIGEST
        assert fake.manifests[("n/m", "t")] == (MANIFEST, mt.OCI_MANIFEST)
        assert c.catalog(page_size=3) == fake.repos


# -- certificates and construction ----------------------------------------------------------------


def test_cert_dirs_order():
    dirs = cert_dirs("127.0.0.1:5000", "/cfg", home="/h")
    assert dirs == [
        "/cfg/certs.d/127.0.0.1:5000",
        "/h/.config/containers/certs.d/127.0.0.1:5000",
        "/etc/containers/certs.d/127.0.0.1:5000",
        "/etc/docker/certs.d/127.0.0.1:5000",
    ]
    assert "/cfg/certs.d/registry-1.docker.io" in cert_dirs("docker.io", "/cfg", home="/h")


def test_find_tls_files(tmp_path):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    d2.mkdir()
    (d1 / "ca.crt").write_text("x")
    (d2 / "other.crt").write_text("x")
    (d2 / "client.cert").write_text("x")
    (d2 / "client.key").write_text("x")
    files = find_tls_files([str(d1), str(tmp_path / "missing"), str(d2)])
    assert files.cas == [str(d1 / "ca.crt"), str(d2 / "other.crt")]
    assert files.client_pairs == [(str(d2 / "client.cert"), str(d2 / "client.key"))]
    (d1 / "lonely.key").write_text("x")
    with pytest.raises(RegistryError) as e:
        find_tls_files([str(d1)])
    assert "lonely.key" in str(e.value)


def test_client_for_reads_auth_files(tmp_path, fake):
    from pbox.oci import auth

    auth.store(str(tmp_path / "auth.json"), f"127.0.0.1:{fake.port}", "alice", PASSWORD)
    fake.auth = "basic"
    with client_for(f"127.0.0.1:{fake.port}", config_dir=str(tmp_path)) as c:
        assert c.credentials.username == "alice"
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST


@pytest.mark.parametrize("host,loop", [
    ("127.0.0.1", True), ("127.255.0.9:5000", True), ("[::1]:5000", True), ("::1", True),
    ("localhost", True), ("reg.localhost:443", True),
    ("128.0.0.1", False), ("10.0.0.1:5000", False), ("127.0.0.256", False),
    ("127.000.0.1", False), ("127.0.1", False), ("127.example.com", False),
    ("[fe80::1]:5000", False), ("example.com", False),
])
def test_is_loopback_without_and_with_ipaddress(host, loop):
    import ipaddress

    assert is_loopback(host) is loop
    h = host.strip("[").split("]")[0] if host.startswith("[") else \
        (host.rsplit(":", 1)[0] if host.count(":") == 1 else host)
    try:
        want = ipaddress.ip_address(h).is_loopback
    except ValueError:
        want = h == "localhost" or h.endswith(".localhost")
    assert loop is want


# -- a blob asked for behind another (HTTP/1.1 pipelining) --------------------------------------

SMALL = b'{"a": "small config"}'


def test_a_blob_asked_for_behind_another_comes_on_the_same_connection(fake):
    fake.blobs[sha(SMALL)] = SMALL
    with client(fake) as c:
        c.get_manifest("x/app", "v1")  # settles the scheme: only then is anything sent ahead
        r = c.fetch_blob("x/app", sha(SMALL), len(SMALL), then=BLOB_DIGEST)
        assert read_all(r) == SMALL and r.verified
        r = c.fetch_blob("x/app", BLOB_DIGEST, len(BLOB))
        assert read_all(r) == BLOB and r.verified
        assert c.get_manifest("x/app", "v1")[0] == MANIFEST  # the connection is kept
        assert c.session.connections_made == 1
    assert fake.count("GET", f"/v2/x/app/blobs/{BLOB_DIGEST}") == 1


def test_a_blob_asked_for_behind_and_forgotten_is_asked_for_again(fake):
    fake.blobs[sha(SMALL)] = SMALL
    with client(fake) as c:
        c.get_manifest("x/app", "v1")
        read_all(c.fetch_blob("x/app", sha(SMALL), len(SMALL), then=BLOB_DIGEST))
        c.forget_blob("x/app", BLOB_DIGEST)
        assert read_all(c.fetch_blob("x/app", BLOB_DIGEST, len(BLOB))) == BLOB
        assert c.session.connections_made == 2  # the one with the unread answer was closed
    assert fake.count("GET", f"/v2/x/app/blobs/{BLOB_DIGEST}") == 2


def test_an_error_asked_for_behind_is_asked_again_and_reported_as_usual(fake):
    fake.blobs[sha(SMALL)] = SMALL
    missing = "sha256:" + "4" * 64
    with client(fake) as c:
        c.get_manifest("x/app", "v1")
        read_all(c.fetch_blob("x/app", sha(SMALL), len(SMALL), then=missing))
        with pytest.raises(RegistryError) as e:
            c.fetch_blob("x/app", missing)
    assert e.value.status == 404 and "blob unknown" in str(e.value)
    assert fake.count("GET", f"/v2/x/app/blobs/{missing}") == 2


def test_nothing_asked_for_behind_a_failed_request_or_before_the_scheme_is_known(fake):
    """Behind the first request (the scheme still a guess) nothing goes; behind an
    answer the client retries (429), the blob behind is asked for anew later."""
    fake.blobs[sha(SMALL)] = SMALL
    with client(fake) as c:
        read_all(c.fetch_blob("x/app", sha(SMALL), len(SMALL), then=BLOB_DIGEST))
        assert fake.count("GET", f"/v2/x/app/blobs/{BLOB_DIGEST}") == 0
        fake.status_script = [429]
        read_all(c.fetch_blob("x/app", sha(SMALL), len(SMALL), then=BLOB_DIGEST))
        # (the answer behind the 429 may have been served before it was given up)
        before = fake.count("GET", f"/v2/x/app/blobs/{BLOB_DIGEST}")
        assert read_all(c.fetch_blob("x/app", BLOB_DIGEST, len(BLOB))) == BLOB
    assert fake.count("GET", f"/v2/x/app/blobs/{BLOB_DIGEST}") == before + 1
