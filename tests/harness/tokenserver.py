"""A small bearer-token server for the distribution registry's ``auth: token`` mode.

It speaks the protocol of docker's token service (GET ``/token?service=&scope=``
with optional basic credentials, and the OAuth2 ``POST /token`` password grant)
and issues JWTs signed RS256.  The registry checks them against its
``rootcertbundle``: either through an ``x5c`` certificate chain in the JWT header
(the default) or through a ``kid`` computed the libtrust way from the signing
key, in which case the bundle must hold the signing certificate itself.

Everything a test may want to vary is a plain attribute that can be changed
while the server runs (``token_field``, ``expires_in``, ``allow_anonymous`` ...),
and every request is recorded so tests can assert that a client reused its token.

Signing is done in pure Python from the key's numbers (read once with
``openssl``), so issuing a token costs no subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# DER DigestInfo prefix for SHA-256 (RFC 8017, section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Read one DER TLV at ``pos``; return (tag, value, next position)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        nbytes = length & 0x7F
        length = int.from_bytes(data[pos:pos + nbytes], "big")
        pos += nbytes
    return tag, data[pos:pos + length], pos + length


def _rsa_numbers(key_path: str) -> dict[str, int]:
    """The integers of an RSA private key (PKCS#1 RSAPrivateKey), read via openssl."""
    der = subprocess.run(
        ["openssl", "rsa", "-in", key_path, "-outform", "DER", "-traditional"],
        check=True, capture_output=True,
    ).stdout
    tag, body, _ = _der_read(der, 0)
    if tag != 0x30:
        raise ValueError(f"{key_path}: not an RSA private key")
    names = ["version", "n", "e", "d", "p", "q", "dp", "dq", "qinv"]
    numbers: dict[str, int] = {}
    pos = 0
    for name in names:
        tag, value, pos = _der_read(body, pos)
        if tag != 0x02:
            raise ValueError(f"{key_path}: unexpected DER tag {tag:#x}")
        numbers[name] = int.from_bytes(value, "big")
    return numbers


def _pem_to_der(pem_text: str) -> list[bytes]:
    """All certificates of a PEM bundle, as DER."""
    ders = []
    inside = False
    lines: list[str] = []
    for line in pem_text.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN CERTIFICATE"):
            inside, lines = True, []
        elif line.startswith("-----END CERTIFICATE"):
            inside = False
            ders.append(base64.b64decode("".join(lines)))
        elif inside:
            lines.append(line)
    return ders


def libtrust_key_id(spki_der: bytes) -> str:
    """docker/libtrust's key ID: base32 of the first 240 bits of sha256(SPKI), in 4-char groups."""
    digest = hashlib.sha256(spki_der).digest()[:30]
    text = base64.b32encode(digest).decode("ascii").rstrip("=")
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))


class RS256Signer:
    """RSASSA-PKCS1-v1_5 with SHA-256, from a PEM key file and its certificate chain."""

    def __init__(self, key_path: str, chain_path: str):
        self._k = _rsa_numbers(key_path)
        with open(chain_path, encoding="ascii") as f:
            self.chain_der = _pem_to_der(f.read())
        if not self.chain_der:
            raise ValueError(f"{chain_path}: no certificate")
        spki = subprocess.run(
            ["openssl", "pkey", "-in", key_path, "-pubout", "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout
        self.key_id = libtrust_key_id(spki)

    def sign(self, message: bytes) -> bytes:
        k = self._k
        n_len = (k["n"].bit_length() + 7) // 8
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        em = b"\x00\x01" + b"\xff" * (n_len - len(t) - 3) + b"\x00" + t
        m = int.from_bytes(em, "big")
        # CRT: two half-size exponentiations instead of one full-size.
        s1 = pow(m, k["dp"], k["p"])
        s2 = pow(m, k["dq"], k["q"])
        h = (k["qinv"] * (s1 - s2)) % k["p"]
        s = s2 + h * k["q"]
        return s.to_bytes(n_len, "big")

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Check a signature made by this key (used by the harness's own tests)."""
        k = self._k
        n_len = (k["n"].bit_length() + 7) // 8
        em = pow(int.from_bytes(signature, "big"), k["e"], k["n"]).to_bytes(n_len, "big")
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        return em == b"\x00\x01" + b"\xff" * (n_len - len(t) - 3) + b"\x00" + t


@dataclass
class TokenUser:
    """A user of the token server.

    ``actions`` is either a list of actions granted on every repository
    (``["pull"]``, ``["pull", "push"]``, ``["*"]``) or a mapping from a repository
    glob to such a list (``{"pbox-test/*": ["pull", "push"], "*": ["pull"]}``).
    """

    password: str
    actions: Sequence[str] | Mapping[str, Sequence[str]] = ("pull", "push")

    def allowed(self, repository: str) -> set[str]:
        if isinstance(self.actions, Mapping):
            for pattern, acts in self.actions.items():
                if fnmatch.fnmatchcase(repository, pattern):
                    return set(acts)
            return set()
        return set(self.actions)


@dataclass
class TokenRequest:
    """One request the token server answered."""

    method: str
    path: str
    account: str | None  # the authenticated user, None when anonymous or refused
    service: str | None
    scopes: list[str]
    status: int
    granted: list[dict] = field(default_factory=list)
    token: str | None = None


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:name/with:port?:pull,push`` -> (type, name, actions); None if malformed."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    rtype = parts[0]
    actions = [a for a in parts[-1].split(",") if a]
    name = ":".join(parts[1:-1])
    if "(" in rtype:  # "repository(plugin)" -> "repository"
        rtype = rtype.split("(", 1)[0]
    return rtype, name, actions


class TokenServer:
    """Issue registry bearer tokens on ``http(s)://127.0.0.1:<port>/token``.

    ``signer`` signs; ``chain`` decides the JWT header: ``"x5c"`` puts the signing
    certificate chain in the header, ``"kid"`` only the libtrust key ID.
    """

    def __init__(
        self,
        signer: RS256Signer,
        *,
        service: str,
        issuer: str,
        users: Mapping[str, TokenUser] | None = None,
        allow_anonymous: bool = False,
        anonymous_actions: Sequence[str] = ("pull",),
        token_field: str = "token",
        expires_in: int | None = 300,
        require_service: bool = True,
        chain: str = "x5c",
        allow_post: bool = True,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        path: str = "/token",
    ):
        if token_field not in ("token", "access_token", "both"):
            raise ValueError(f"token_field must be token, access_token or both, not {token_field!r}")
        if chain not in ("x5c", "kid"):
            raise ValueError(f"chain must be x5c or kid, not {chain!r}")
        self.signer = signer
        self.service = service
        self.issuer = issuer
        self.users: dict[str, TokenUser] = dict(users or {})
        self.allow_anonymous = allow_anonymous
        self.anonymous_actions = list(anonymous_actions)
        self.token_field = token_field
        self.expires_in = expires_in
        self.require_service = require_service
        self.chain = chain
        self.allow_post = allow_post
        self.path = path
        self._tls = (tls_cert, tls_key) if tls_cert else None
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TokenServer:
        handler = _make_handler(self)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        if self._tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self._tls[0], self._tls[1])
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="pbox-test-token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("token server is not running")
        return self._httpd.server_address[1]

    @property
    def realm(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    # -- what tests look at ----------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def count(self, *, status: int | None = 200, account: str | None = None,
              scope_contains: str | None = None) -> int:
        """How many token requests matched (by default: the successful ones)."""
        n = 0
        for r in self.requests:
            if status is not None and r.status != status:
                continue
            if account is not None and r.account != account:
                continue
            if scope_contains is not None and not any(scope_contains in s for s in r.scopes):
                continue
            n += 1
        return n

    _SETTINGS = ("users", "allow_anonymous", "anonymous_actions", "token_field", "expires_in",
                 "require_service", "chain", "allow_post")

    @contextlib.contextmanager
    def configured(self, **changes):
        """Change settings for a ``with`` block, e.g. ``configured(expires_in=1)``."""
        unknown = set(changes) - set(self._SETTINGS)
        if unknown:
            raise TypeError(f"not a token server setting: {', '.join(sorted(unknown))}")
        saved = {name: getattr(self, name) for name in self._SETTINGS}
        try:
            for name, value in changes.items():
                setattr(self, name, value)
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def reset(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    # -- token making ----------------------------------------------------------------------

    def grant(self, account: str | None, scopes: Sequence[str]) -> list[dict]:
        """The access claims for ``account`` (None = anonymous) asking for ``scopes``."""
        granted: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            for one in scope.split(" "):
                parsed = parse_scope(one)
                if parsed is None:
                    continue
                rtype, name, wanted = parsed
                if account is None:
                    allowed = set(self.anonymous_actions)
                else:
                    allowed = self.users[account].allowed(name)
                if rtype == "registry" and name == "catalog":
                    ok = list(wanted) if "*" in allowed else []
                elif rtype == "repository":
                    ok = [a for a in wanted if "*" in allowed or a in allowed]
                else:
                    ok = []
                if ok:
                    have = granted.setdefault((rtype, name), [])
                    have.extend(a for a in ok if a not in have)
        return [{"type": t, "name": n, "actions": acts} for (t, n), acts in granted.items()]

    def make_token(self, account: str | None, access: list[dict], lifetime: int | None = None) -> str:
        now = int(time.time())
        header: dict = {"typ": "JWT", "alg": "RS256"}
        if self.chain == "x5c":
            header["x5c"] = [base64.b64encode(d).decode("ascii") for d in self.signer.chain_der]
        else:
            header["kid"] = self.signer.key_id
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + (lifetime if lifetime else 300),
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self.signer.sign(signing_input.encode("ascii"))
        return signing_input + "." + b64url(signature)

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _authenticate(self, username: str | None, password: str | None) -> tuple[bool, str | None]:
        """(ok, account).  No credentials = anonymous, allowed only if configured."""
        if username is None:
            return self.allow_anonymous, None
        user = self.users.get(username)
        if user is None or not secrets.compare_digest(user.password, password or ""):
            return False, None
        return True, username

    def _answer(self, method: str, path: str, username: str | None, password: str | None,
                service: str | None, scopes: list[str], oauth: bool) -> tuple[int, dict]:
        record = TokenRequest(method=method, path=path, account=None, service=service,
                              scopes=scopes, status=0)
        try:
            if self.require_service and service != self.service:
                record.status = 400
                return 400, {"error": "invalid_request",
                             "details": f"service {service!r} is not {self.service!r}"}
            ok, account = self._authenticate(username, password)
            if not ok:
                record.status = 401
                return 401, {"error": "unauthorized", "details": "incorrect username or password"}
            record.account = account
            access = self.grant(account, scopes)
            lifetime = self.expires_in if self.expires_in else 300
            token = self.make_token(account, access, lifetime)
            record.granted, record.token, record.status = access, token, 200
            body: dict = {}
            if oauth or self.token_field in ("access_token", "both"):
                body["access_token"] = token
            if not oauth and self.token_field in ("token", "both"):
                body["token"] = token
            if oauth:
                body["scope"] = " ".join(scopes)
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            body["issued_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            return 200, body
        finally:
            self._record(record)


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="pbox test token server"')
            self.end_headers()
            self.wfile.write(data)

        def _basic(self) -> tuple[str | None, str | None]:
            header = self.headers.get("Authorization", "")
            if not header.lower().startswith("basic "):
                return None, None
            try:
                user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "", ""
            return user, password

        def do_GET(self):  # noqa: N802 - stdlib name
            url = urlsplit(self.path)
            if url.path != server.path:
                self._send(404, {"error": "not found"})
                return
            query = parse_qs(url.query)
            user, password = self._basic()
            status, body = server._answer(
                "GET", url.path, user, password, (query.get("service") or [None])[0],
                query.get("scope", []), oauth=False)
            self._send(status, body)

        def do_POST(self):  # noqa: N802 - stdlib name
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if url.path != server.path or not server.allow_post:
                # docker's client falls back to GET when the POST endpoint is missing
                server._record(TokenRequest("POST", url.path, None, None, [], 404))
                self._send(404, {"error": "not found"})
                return
            grant = (form.get("grant_type") or [""])[0]
            if grant != "password":
                server._record(TokenRequest("POST", url.path, None, None, [], 400))
                self._send(400, {"error": "unsupported_grant_type"})
                return
            scopes = " ".join(form.get("scope", [])).split()
            status, body = server._answer(
                "POST", url.path, (form.get("username") or [""])[0],
                (form.get("password") or [""])[0], (form.get("service") or [None])[0],
                scopes, oauth=True)
            self._send(status, body)

    return Handler


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, without verifying it."""
    header, claims, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(claims))


__all__ = [
    "RS256Signer",
    "TokenRequest",
    "TokenServer",
    "TokenUser",
    "decode_jwt",
    "libtrust_key_id",
    "parse_scope",
]
