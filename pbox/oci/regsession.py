"""The registry connection: scheme, authentication, one request with retries (TLS
files and contexts: ``pbox.oci.tls``).

``RegistrySession`` is the part of the registry client that is about reaching a
registry and being let in; ``pbox.oci.registry.RegistryClient`` (manifests, blobs,
uploads, the catalog) builds on it.  HTTP goes through ``pbox.oci.transport`` (the
standard library's ``http.client``), imported inside the methods that talk to a
registry, so importing this module costs nothing for commands that never reach one.

Protocol notes (what a reader of this code needs to know):

* Every client starts with ``GET /v2/``: it tells which scheme works and which
  authentication the registry wants (``WWW-Authenticate``).
* Bearer: ask the challenge's ``realm`` for a token, with ``service`` (some registries
  leave it out) and ``scope=repository:NAME:pull[,push]``; the answer's field is
  ``token`` or ``access_token``.  Tokens are kept per scope until they expire.  A 401, and
  a 403 that carries a challenge (``insufficient_scope``), get one new exchange.
* A 401 on a manifest with an anonymous token usually means the repository does not
  exist (Docker Hub answers so rather than 404): we say "not found or not authorized".
* docker allows plain HTTP for loopback registries: https is tried first, http only
  when the TLS handshake or connection fails, and only for those hosts (or when TLS
  verification was turned off, as podman's ``--tls-verify=false`` does).
* Credentials never appear in a message or a log line: Authorization headers are not
  logged, and token-like query parameters are redacted from URLs.
"""


from __future__ import annotations

import _thread  # (threading is ~1 ms to import; the locks are these)
import binascii  # (base64 imports re: ~3 ms)
import time

from pbox.errors import AuthError, ManifestUnknown, RegistryError
from pbox.lazylog import get_logger
from pbox.oci import urls
from pbox.oci.auth import Challenge, Credentials, find_challenge, parse_challenges
from pbox.oci.reference import DEFAULT_REGISTRY, DOCKER_HUB_API, LEGACY_DEFAULT_REGISTRY
from pbox.record import record

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

log = get_logger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TOKEN_MIN_LIFETIME = 60  # the token spec's default and minimum
TOKEN_MARGIN = 10  # renew a little before the server would refuse

_SECRET_QUERY_KEYS = ("token", "access_token", "refresh_token", "password", "secret")
_SECRET_QUERY_WORDS = ("signature", "credential", "token", "secret", "password", "sig")


def redact_url(url: str) -> str:
    """``url`` without user info and with token-like query values replaced."""
    try:
        parts = urls.split(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = []
        for k, v in urls.parse_pairs(query):
            lk = k.lower()
            if lk in _SECRET_QUERY_KEYS or any(w in lk for w in _SECRET_QUERY_WORDS):
                v = "REDACTED"
            pairs.append((k, v))
        query = urls.encode(pairs)
    return urls.unsplit((parts.scheme, netloc, parts.path, query, ""))


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (port and brackets allowed)."""
    h = host
    if h.startswith("["):
        h = h[1 : h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h == "localhost" or h.endswith(".localhost"):
        return True
    if ":" not in h:
        # IPv4 or a host name: no need for the ipaddress module (~5 ms to import)
        parts = h.split(".")
        if len(parts) != 4 or not all(p.isdigit() and p == str(int(p)) and int(p) <= 255
                                      for p in parts):
            return False
        return parts[0] == "127"
    import ipaddress

    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def api_host(registry: str) -> str:
    """The host the API of ``registry`` answers on (Docker Hub's is not docker.io)."""
    if registry in (DEFAULT_REGISTRY, LEGACY_DEFAULT_REGISTRY):
        return DOCKER_HUB_API
    return registry


def display_registry(registry: str) -> str:
    if registry in (DOCKER_HUB_API, LEGACY_DEFAULT_REGISTRY):
        return DEFAULT_REGISTRY
    return registry


def _error_body(resp) -> tuple[str | None, str]:
    """(code, message) of a registry's ``{"errors": [...]}`` answer."""
    try:
        obj = resp.json()
    except ValueError:
        return None, ""
    errors = obj.get("errors") if isinstance(obj, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        e = errors[0]
        code = str(e.get("code") or "") or None
        msg = str(e.get("message") or "")
        return code, msg
    if isinstance(obj, dict):  # token servers: {"error": ..., "details": ...}
        msg = obj.get("details") or obj.get("error_description") or obj.get("error") or ""
        return None, str(msg)
    return None, ""


def _retry_after(resp) -> float | None:
    value = resp.headers.get("Retry-After") if resp is not None else None
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


@record
class _Token:
    value: str
    expires: float  # time.monotonic() deadline
    anonymous: bool


class RegistrySession:
    """Talks to one registry.  Thread-safe: layers may be fetched in parallel.

    ``registry`` is the name from the reference (``docker.io``, ``127.0.0.1:5000``).
    ``tls_verify=False`` (or ``insecure=True``) skips certificate checks and allows
    plain HTTP.  ``cert_dir`` replaces the certs.d lookup (``--cert-dir``).
    """

    def __init__(
        self,
        registry: str,
        *,
        tls_verify: bool = True,
        insecure: bool = False,
        cert_dir: str | None = None,
        config_dir: str | None = None,
        credentials: Credentials | None = None,
        user_agent: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        resumes: int = 5,
    ):
        self.registry = display_registry(registry)
        self.host = api_host(registry)
        self.tls_verify = tls_verify and not insecure
        self.cert_dir = cert_dir
        self.config_dir = config_dir
        self.credentials = None if credentials is None or credentials.empty else credentials
        if user_agent is None:
            from pbox import __version__

            user_agent = f"pbox/{__version__}"
        self.user_agent = user_agent
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.resumes = resumes
        self._session = None
        self._base: str | None = None
        self._challenge: Challenge | None = None  # what /v2/ asked for (None: nothing)
        self._tokens: dict[tuple, _Token] = {}
        self._lock = _thread.RLock()
        self._ping_lock = _thread.allocate_lock()
        # GETs sent ahead (``_request``'s ``then``): path -> (transport.Pipelined, headers)
        self._ahead: dict[str, tuple] = {}

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def allow_http(self) -> bool:
        return not self.tls_verify or is_loopback(self.host)

    def _tls_dirs(self) -> list[str]:
        if self.cert_dir:
            return [self.cert_dir]
        from pbox.oci.tls import cert_dirs

        return cert_dirs(self.registry, self.config_dir)

    def _make_session(self):
        from pbox.oci.transport import Session

        def context():
            # the CA bundles take tens of milliseconds to load: only for https, once
            from pbox.oci import tls

            return tls.ssl_context(self.tls_verify, tls.find_tls_files(self._tls_dirs()))

        return Session(ssl_context=context, user_agent=self.user_agent,
                       timeout=(min(30.0, self.timeout), self.timeout), redact=redact_url)

    @property
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def close(self) -> None:
        with self._lock:
            ahead, self._ahead = self._ahead, {}
            for pipelined, _ in ahead.values():
                pipelined.close()
            if self._session is not None:
                self._session.close()
                self._session = None

    def forget(self, path: str) -> None:
        """Give up a GET sent ahead for ``path`` (see ``_request``), if there is one."""
        with self._lock:
            entry = self._ahead.pop(path.lstrip("/"), None)
        if entry is not None:
            entry[0].close()

    def _answer_ahead(self, method: str, path: str | None, headers, data):
        """The answer to a GET of ``path`` sent ahead with the same headers, if it came
        and is a success; else None (the request is then sent as usual)."""
        if not self._ahead or path is None or method != "GET" or data is not None:
            return None
        with self._lock:
            entry = self._ahead.pop(path, None)
        if entry is None:
            return None
        pipelined, sent_headers = entry
        if sent_headers != (headers or {}):
            pipelined.close()
            return None
        resp = pipelined.answer()
        if resp is not None and resp.status_code not in (200, 206):
            # an error or a redirect: asked anew, where auth, retries and redirects
            # are handled
            log.debug("GET %s sent ahead -> %d; asking again", redact_url(resp.url),
                      resp.status_code)
            resp.close()
            return None
        if resp is not None:
            log.debug("GET %s sent ahead -> %d", redact_url(resp.url), resp.status_code)
        return resp

    def __enter__(self) -> RegistrySession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sleep(self, attempt: int, resp=None) -> None:
        delay = _retry_after(resp)
        if delay is None or delay > self.max_backoff * 3:
            delay = min(self.max_backoff, self.backoff * (2**attempt))
            import random

            delay *= 0.75 + random.random() / 2  # jitter: parallel pulls do not march in step
        log.debug("retrying %s in %.2fs", self.registry, delay)
        time.sleep(delay)

    def _transport_error(self, e: Exception, url: str) -> RegistryError:
        from pbox.oci import transport

        where = self.registry
        if isinstance(e, transport.TLSError):
            hint = ", ".join(self._tls_dirs()[:1])
            return RegistryError(
                f"TLS handshake with {where} failed: {_short(e)}; if the registry uses a "
                f"private CA, put its certificate in {hint}/ca.crt "
                f"(or use --tls-verify=false)",
                temporary=False,
            )
        if isinstance(e, transport.Timeout):
            return RegistryError(f"{where}: timed out ({redact_url(url)})", temporary=True)
        return RegistryError(f"cannot connect to {where}: {_short(e)}", temporary=True)

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict,
        data=None,
        stream: bool = False,
        allow_redirects: bool = True,
        while_waiting=None,
        then=None,
    ):
        from pbox.oci.transport import TransportError

        try:
            resp = self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                stream=stream,
                allow_redirects=allow_redirects,
                while_waiting=while_waiting,
                then=then,
            )
        except TransportError as e:
            log.debug("%s %s -> %s", method, redact_url(url), _short(e))
            raise
        log.debug("%s %s -> %d", method, redact_url(url), resp.status_code)
        return resp

    # -- scheme and challenge ----------------------------------------------------------------

    def ping(self) -> Challenge | None:
        """``GET /v2/``: settle the scheme and learn the auth challenge (None: no auth)."""
        with self._ping_lock:
            if self._base is not None:
                return self._challenge
            from pbox.oci.transport import TransportError

            https = f"https://{self.host}"
            if is_loopback(self.host) and self.tls_verify:
                # A loopback registry is usually plain HTTP (docker allows that without
                # configuration): ask it that way first, which also spares loading the
                # CA bundles.  The ping carries no credentials.  A TLS port answers 400
                # ("client sent an HTTP request to an HTTPS server"): then TLS as usual.
                resp = self._try_plain(f"http://{self.host}")
                if resp is not None:
                    return self._settle(resp, f"http://{self.host}")
            try:
                resp = self._ping_once(https)
            except TransportError as e:
                if not self.allow_http:
                    raise self._transport_error(e, https + "/v2/")
                first = e
                http = f"http://{self.host}"
                try:
                    resp = self._ping_once(http)
                except TransportError:
                    raise self._transport_error(first, https + "/v2/")
                if resp.status_code not in (200, 401):
                    # not a registry speaking plain HTTP (e.g. a TLS port answering 400)
                    resp.close()
                    raise self._transport_error(first, https + "/v2/")
                log.debug("%s: TLS failed (%s); using plain HTTP", self.registry, _short(first))
                base = http
            else:
                base = https
            return self._settle(resp, base)

    def _try_plain(self, base: str):
        """The ping response of a plain-HTTP registry at ``base``, or None."""
        from pbox.oci.transport import TransportError

        try:
            resp = self._ping_once(base)
        except TransportError:
            return None
        if resp.status_code not in (200, 401) or not _speaks_registry(resp):
            resp.close()
            return None
        log.debug("%s: plain HTTP registry", self.registry)
        return resp

    def _settle(self, resp, base: str) -> Challenge | None:
        try:
            if resp.status_code == 401:
                self._challenge = self._pick_challenge(resp)
            elif resp.status_code != 200:
                raise self._error(resp, what=f"{self.registry}")
        finally:
            resp.close()
        self._base = base
        return self._challenge

    def _ping_once(self, base: str):
        attempt = 0
        while True:
            try:
                resp = self._send("GET", base + "/v2/", headers={})
            except Exception as e:
                from pbox.oci import transport

                if (
                    isinstance(e, transport.ConnectError)
                    and not isinstance(e, transport.TLSError)
                    and _is_reset(e)
                    and attempt < self.retries
                ):
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                resp.close()
                self._sleep(attempt, resp)
                attempt += 1
                continue
            return resp

    def _guess(self, method: str, url: str, base: str, *, headers: dict, stream: bool,
               while_waiting=None):
        """The response to a first request sent to ``base`` before any ping, when it
        settles the scheme; else None (nothing settled, the response closed)."""
        from pbox.oci.transport import TransportError

        try:
            resp = self._send(method, url, headers=headers, stream=stream,
                              while_waiting=while_waiting)
        except TransportError:
            return None
        if base.startswith("http:") and not _speaks_registry(resp) or \
                resp.status_code in RETRY_STATUSES:
            resp.close()  # not a registry over plain HTTP (a TLS port answering 400...)
            return None
        with self._ping_lock:
            if self._base is None:
                log.debug("%s: %s, settled by the first request", self.registry, base)
                self._base = base
        return resp

    def _pick_challenge(self, resp) -> Challenge | None:
        challenges = parse_challenges(resp.headers.get("WWW-Authenticate"))
        return find_challenge(challenges, "bearer") or find_challenge(challenges, "basic")

    @property
    def base_url(self) -> str:
        self.ping()
        assert self._base is not None
        return self._base

    # -- tokens --------------------------------------------------------------------------------

    def _token_key(self, ch: Challenge, scopes: Sequence[str]) -> tuple:
        return (ch.realm, ch.service or "", tuple(sorted(set(scopes))))

    def _cached_token(self, key: tuple) -> _Token | None:
        with self._lock:
            tok = self._tokens.get(key)
            if tok is not None and time.monotonic() < tok.expires:
                return tok
            return None

    def _fetch_token(self, ch: Challenge, scopes: Sequence[str], what: str) -> _Token:
        from pbox.oci import transport

        if not ch.realm:
            raise AuthError(f"{self.registry} asked for a bearer token but named no realm")
        params: list[tuple[str, str]] = []
        if ch.service:
            params.append(("service", ch.service))
        creds = self.credentials
        anonymous = creds is None
        headers = {}
        attempt = 0
        while True:
            try:
                if creds is not None and creds.identity_token:
                    form = {
                        "grant_type": "refresh_token",
                        "refresh_token": creds.identity_token,
                        "client_id": "pbox",
                        "scope": " ".join(scopes),
                    }
                    if ch.service:
                        form["service"] = ch.service
                    resp = self._send("POST", ch.realm, headers=headers, data=form)
                else:
                    q = params + [("scope", s) for s in scopes]
                    url = ch.realm + ("&" if "?" in ch.realm else "?") + urls.encode(q)
                    h = dict(headers)
                    if creds is not None:
                        h["Authorization"] = _basic_header(creds)
                    resp = self._send("GET", url, headers=h)
            except transport.TransportError as e:
                if attempt < self.retries and not isinstance(e, transport.TLSError):
                    self._sleep(attempt)
                    attempt += 1
                    continue
                err = self._transport_error(e, ch.realm)
                raise AuthError(f"getting a token for {what}: {err}", temporary=err.temporary)
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                resp.close()
                self._sleep(attempt, resp)
                attempt += 1
                continue
            break
        with resp:
            if resp.status_code in (401, 403):
                code, msg = _error_body(resp)
                if anonymous:
                    raise AuthError(
                        f"unauthorized: authentication required for {what} "
                        f"(log in with 'pbox login {self.registry}')",
                        status=resp.status_code,
                        code=code or "UNAUTHORIZED",
                    )
                detail = f" ({msg})" if msg and "password" not in msg.lower() else ""
                raise AuthError(
                    f"unauthorized: incorrect username or password for {self.registry}{detail}",
                    status=resp.status_code,
                    code=code or "UNAUTHORIZED",
                )
            if resp.status_code != 200:
                code, msg = _error_body(resp)
                raise AuthError(
                    f"getting a token for {what} failed: HTTP {resp.status_code}"
                    + (f": {msg}" if msg else ""),
                    status=resp.status_code,
                    code=code,
                    temporary=resp.status_code in RETRY_STATUSES,
                )
            try:
                obj = resp.json()
            except ValueError:
                obj = None
        if not isinstance(obj, dict):
            raise AuthError(f"the token server of {self.registry} answered something not JSON")
        value = obj.get("token") or obj.get("access_token")
        if not value or not isinstance(value, str):
            raise AuthError(f"the token server of {self.registry} returned no token")
        try:
            lifetime = int(obj.get("expires_in") or 0)
        except (TypeError, ValueError):
            lifetime = 0
        lifetime = max(lifetime, TOKEN_MIN_LIFETIME)
        return _Token(value, time.monotonic() + lifetime - TOKEN_MARGIN, anonymous)

    def _token(
        self, ch: Challenge, scopes: Sequence[str], what: str, *, fresh: bool = False
    ) -> _Token:
        key = self._token_key(ch, scopes)
        if not fresh:
            tok = self._cached_token(key)
            if tok is not None:
                return tok
        tok = self._fetch_token(ch, scopes, what)
        with self._lock:
            self._tokens[key] = tok
        return tok

    def _auth_header(
        self, scopes: Sequence[str], what: str, *, fresh: bool = False
    ) -> tuple[str | None, bool]:
        """(Authorization header or None, whether it is anonymous)."""
        ch = self._challenge
        if ch is None:
            return None, self.credentials is None
        if ch.scheme == "basic":
            if self.credentials is None or not self.credentials.username:
                return None, True
            return _basic_header(self.credentials), False
        tok = self._token(ch, scopes, what, fresh=fresh)
        return f"Bearer {tok.value}", tok.anonymous

    # -- one request, with auth and retries ----------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        scopes: Sequence[str],
        what: str,
        headers: dict | None = None,
        data: Any = None,
        stream: bool = False,
        retry: bool = True,
        while_waiting=None,
        then: str | None = None,
    ):
        """Send a request; returns the response whatever its status (``_error`` maps it).

        ``data`` may be bytes, a callable making a fresh body for each attempt, or a
        file (then the request is not retried).  Sets ``resp.pbox_anonymous``.
        ``while_waiting``: called at most once, while the first attempt's answer is
        awaited (see ``transport.Session.request``).  ``then``: the path of a GET with
        the same headers to pipeline behind the first attempt once the scheme is
        settled (``resp.pipelined``, see ``transport.Pipelined``; None if it was not).
        """
        from pbox.oci import transport

        path = None if url.startswith(("http://", "https://")) else url.lstrip("/")
        resp = self._answer_ahead(method, path, headers, data)
        if resp is not None:
            resp.pbox_anonymous = self.credentials is None
            return resp
        # The first GET or HEAD to a registry goes out without the /v2/ ping: its answer
        # settles the scheme as well (an auth challenge is handled below either way), and
        # a pull or a re-push saves a round trip.  Anything odd: the ping, as before.
        # Not with credentials: those go with the first request the ping's challenge
        # allows (a registry may answer a private repository's anonymous GET with 404).
        guess = None
        if path is not None and self._base is None and method in ("GET", "HEAD") and \
                data is None and self.credentials is None:
            guess = f"http://{self.host}" if is_loopback(self.host) and self.tls_verify \
                else f"https://{self.host}"
        else:
            self.ping()
        if path is not None:
            url = urls.join((guess or self._base) + "/", path)
        # a body that can be sent again: needed for any second attempt
        replayable = data is None or callable(data) or isinstance(data, (bytes, str, dict))
        retry = retry and replayable
        attempt = 0
        reauthed = False
        while True:
            auth, anonymous = self._auth_header(scopes, what)
            h = dict(headers or {})
            if auth:
                h["Authorization"] = auth
            body = data() if callable(data) else data
            meanwhile, while_waiting = while_waiting, None
            behind, then = then, None
            ahead_path = behind.lstrip("/") if behind is not None else None
            if guess is not None:
                resp, guess = self._guess(method, url, guess, headers=h, stream=stream,
                                          while_waiting=meanwhile), None
                if resp is None:  # not settled that way: ping, then as usual
                    self.ping()
                    url = urls.join(self._base + "/", path)
                    continue
            else:
                if ahead_path is not None and path is not None:
                    behind = (urls.join(self._base + "/", ahead_path), h)
                else:
                    behind = None
                try:
                    resp = self._send(method, url, headers=h, data=body, stream=stream,
                                      while_waiting=meanwhile, then=behind)
                except transport.TransportError as e:
                    if retry and attempt < self.retries and \
                            not isinstance(e, transport.TLSError):
                        self._sleep(attempt)
                        attempt += 1
                        continue
                    raise self._transport_error(e, url)
            pipelined = resp.pipelined
            if pipelined is not None:
                resp.pipelined = None
                if resp.status_code >= 300:
                    pipelined.close()  # an error's answer would likely come twice
                else:
                    with self._lock:
                        old = self._ahead.pop(ahead_path, None)
                        self._ahead[ahead_path] = (pipelined, dict(headers or {}))
                    if old is not None:
                        old[0].close()
            if resp.status_code in (401, 403) and not reauthed and replayable:
                challenges = parse_challenges(resp.headers.get("WWW-Authenticate"))
                ch = find_challenge(challenges, "bearer") or find_challenge(challenges, "basic")
                if ch is not None and ch.scheme == "bearer":
                    # a new exchange; the challenge's scope is what this request needs
                    resp.close()
                    reauthed = True
                    wanted = list(scopes)
                    for sc in (ch.scope or "").split(" "):
                        if sc and sc not in wanted:
                            wanted.append(sc)
                    with self._lock:
                        self._challenge = Challenge("bearer", dict(ch.params))
                    self._token(self._challenge, wanted, what, fresh=True)
                    scopes = wanted
                    continue
                if ch is not None and resp.status_code == 401:
                    with self._lock:
                        self._challenge = ch
                    if self.credentials is not None and auth is None:
                        resp.close()
                        reauthed = True  # we had not sent them: send them now
                        continue
            if resp.status_code in RETRY_STATUSES and retry and attempt < self.retries:
                resp.close()
                self._sleep(attempt, resp)
                attempt += 1
                continue
            resp.pbox_anonymous = anonymous
            return resp

    def _error(self, resp, *, what: str, kind: str = "") -> RegistryError:
        """A ``RegistryError`` (or child) describing an unsuccessful response."""
        status = resp.status_code
        code, msg = _error_body(resp)
        resp.close()
        anonymous = getattr(resp, "pbox_anonymous", self.credentials is None)
        if status == 401:
            bearer = self._challenge is not None and self._challenge.scheme == "bearer"
            if kind == "manifest" and anonymous and bearer:
                return AuthError(
                    f"unauthorized: {what}: not found or not authorized (the repository does "
                    f"not exist, or it needs 'pbox login {self.registry}')",
                    status=status,
                    code=code or "UNAUTHORIZED",
                )
            if anonymous:
                return AuthError(
                    f"unauthorized: authentication required for {what} "
                    f"(log in with 'pbox login {self.registry}')",
                    status=status,
                    code=code or "UNAUTHORIZED",
                )
            ch = self._challenge
            if ch is not None and ch.scheme == "basic":
                return AuthError(
                    f"unauthorized: incorrect username or password for {self.registry}",
                    status=status,
                    code=code or "UNAUTHORIZED",
                )
            return AuthError(
                f"unauthorized: access to {what} refused with the credentials given"
                + (f" ({msg})" if msg else ""),
                status=status,
                code=code or "UNAUTHORIZED",
            )
        if status == 403:
            return AuthError(
                f"denied: access to {what} denied" + (f": {msg}" if msg else ""),
                status=status,
                code=code or "DENIED",
            )
        if status == 404:
            if kind == "manifest":
                return ManifestUnknown(
                    f"manifest unknown: {what} not found",
                    status=status,
                    code=code or "MANIFEST_UNKNOWN",
                )
            if kind == "blob":
                return RegistryError(
                    f"blob unknown: {what} not found", status=status, code=code or "BLOB_UNKNOWN"
                )
            if code == "NAME_UNKNOWN":
                return ManifestUnknown(
                    f"name unknown: repository {what} not found", status=status, code=code
                )
            return RegistryError(
                f"not found: {what}" + (f" ({msg})" if msg else ""), status=status, code=code
            )
        if status == 429:
            return RegistryError(
                f"too many requests: {self.registry} is rate limiting"
                + (f" ({msg})" if msg else "")
                + "; try again later",
                status=status,
                code=code or "TOOMANYREQUESTS",
                temporary=True,
            )
        label = (code or "").lower().replace("_", " ") or f"HTTP {status}"
        text = msg or resp.reason or ""
        return RegistryError(
            f"{label}: {what}" + (f": {text}" if text else ""),
            status=status,
            code=code,
            temporary=status in RETRY_STATUSES,
        )


# -- helpers -------------------------------------------------------------------------------------


def _speaks_registry(resp) -> bool:
    """Whether a plain-HTTP answer comes from a registry: the distribution API's
    version header, or a 401 with a challenge."""
    return bool(resp.headers.get("Docker-Distribution-Api-Version") or
                resp.status_code == 401 and resp.headers.get("WWW-Authenticate"))


def _basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + binascii.b2a_base64(raw, newline=False).decode("ascii")


def _short(e: BaseException) -> str:
    """A one-line reason from a transport exception chain, without URLs."""
    import ssl

    reason: BaseException = e
    for _ in range(8):
        if isinstance(reason, ssl.SSLCertVerificationError):
            detail = getattr(reason, "verify_message", "") or ""
            return "certificate verify failed" + (f": {detail}" if detail else "")
        nxt = getattr(reason, "reason", None)
        if not isinstance(nxt, BaseException):
            args = getattr(reason, "args", ())
            nxt = args[0] if args and isinstance(args[0], BaseException) else None
        if nxt is None:
            nxt = reason.__cause__ or reason.__context__
        if nxt is None or nxt is reason:
            break
        reason = nxt
    text = str(reason)
    low = text.lower()
    if "connection refused" in low:
        return "connection refused"
    if "certificate verify failed" in low:
        i = low.find("certificate verify failed")
        return text[i:].split("(_ssl")[0].rstrip(" )")
    if "wrong version number" in low:
        return "the server does not speak TLS (wrong version number)"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    # strip "HTTPSConnectionPool(host=..., port=...): " prefixes
    if "): " in text:
        text = text.split("): ", 1)[1]
    return text[:300]


def _is_reset(e: BaseException) -> bool:
    texts = []
    cur: BaseException | None = e
    for _ in range(8):
        if cur is None:
            break
        texts.append(repr(cur).lower())
        cur = cur.__cause__ or cur.__context__
    text = " ".join(texts)
    return "reset" in text or "remotedisconnected" in text or "aborted" in text
