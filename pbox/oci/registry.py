"""The registry HTTP API v2 client: manifests, blobs, uploads, the catalog.

``requests`` is imported inside the methods that talk to a registry, so importing this
module costs nothing for commands that never reach one.

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

import base64
import glob
import io
import ipaddress
import logging
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from pbox.errors import AuthError, DigestMismatch, ManifestUnknown, RegistryError
from pbox.oci import digest as _digest
from pbox.oci import mediatypes as mt
from pbox.oci.auth import Challenge, Credentials, find_challenge, parse_challenges
from pbox.oci.reference import DEFAULT_REGISTRY, DOCKER_HUB_API, LEGACY_DEFAULT_REGISTRY

log = logging.getLogger(__name__)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # as containerd and containers/image
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TOKEN_MIN_LIFETIME = 60  # the token spec's default and minimum
TOKEN_MARGIN = 10  # renew a little before the server would refuse
CHUNK = 1024 * 1024
DEFAULT_CHUNK_UPLOAD = 16 * 1024 * 1024

_SECRET_QUERY_KEYS = ("token", "access_token", "refresh_token", "password", "secret")
_SECRET_QUERY_WORDS = ("signature", "credential", "token", "secret", "password", "sig")


def redact_url(url: str) -> str:
    """``url`` without user info and with token-like query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = []
        for k, v in parse_qsl(query, keep_blank_values=True):
            lk = k.lower()
            if lk in _SECRET_QUERY_KEYS or any(w in lk for w in _SECRET_QUERY_WORDS):
                v = "REDACTED"
            pairs.append((k, v))
        query = urlencode(pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _RedactingFilter(logging.Filter):
    """Redacts token-like query parameters in urllib3's request log lines (a blob GET is
    often redirected to storage with a signed URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "?" in a for a in record.args
        ):
            record.args = tuple(
                redact_url(a) if isinstance(a, str) and "?" in a else a for a in record.args
            )
        return True


_FILTER_INSTALLED = False


def _install_log_filter() -> None:
    global _FILTER_INSTALLED
    if not _FILTER_INSTALLED:
        logging.getLogger("urllib3.connectionpool").addFilter(_RedactingFilter())
        _FILTER_INSTALLED = True


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (port and brackets allowed)."""
    h = host
    if h.startswith("["):
        h = h[1 : h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h == "localhost" or h.endswith(".localhost"):
        return True
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


def cert_dirs(registry: str, config_dir: str | None = None, home: str | None = None) -> list[str]:
    """Directories that may hold CAs and client certificates for ``registry``."""
    home = home or os.path.expanduser("~")
    names = [registry]
    if registry == DEFAULT_REGISTRY:
        names.append(DOCKER_HUB_API)
    dirs = []
    for name in names:
        if config_dir:
            dirs.append(os.path.join(config_dir, "certs.d", name))
        dirs.append(os.path.join(home, ".config", "containers", "certs.d", name))
        dirs.append(os.path.join("/etc/containers/certs.d", name))
        dirs.append(os.path.join("/etc/docker/certs.d", name))
    return dirs


@dataclass
class TLSFiles:
    """What a certs.d directory holds: CA certificates and client cert/key pairs."""

    cas: list[str]
    client_pairs: list[tuple[str, str]]


def find_tls_files(dirs: Iterable[str]) -> TLSFiles:
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        cas.extend(sorted(glob.glob(os.path.join(d, "*.crt"))))
        for cert in sorted(glob.glob(os.path.join(d, "*.cert"))):
            key = cert[: -len(".cert")] + ".key"
            if not os.path.exists(key):
                raise RegistryError(f"client certificate {cert} has no matching key {key}")
            pairs.append((cert, key))
        for key in sorted(glob.glob(os.path.join(d, "*.key"))):
            if not os.path.exists(key[: -len(".key")] + ".cert"):
                raise RegistryError(f"client key {key} has no matching certificate (.cert)")
    return TLSFiles(cas, pairs)


_CONTEXTS: dict[tuple, Any] = {}
_CONTEXTS_LOCK = threading.Lock()


def _ssl_context(verify: bool, files: TLSFiles):
    """An SSL context trusting the system's CAs, certifi's and ``files.cas``; cached, as
    loading the system store takes tens of milliseconds."""
    import ssl

    key = (verify, tuple(files.cas), tuple(files.client_pairs))
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is not None:
            return ctx
        if verify:
            ctx = ssl.create_default_context()
            try:
                import certifi

                ctx.load_verify_locations(cafile=certifi.where())
            except (ImportError, OSError):  # the system store is enough
                pass
            for ca in files.cas:
                try:
                    ctx.load_verify_locations(cafile=ca)
                except (OSError, ssl.SSLError) as e:
                    raise RegistryError(f"cannot load CA certificate {ca}: {e}")
                log.debug("trusting CA %s", ca)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for cert, key_file in files.client_pairs:
            try:
                ctx.load_cert_chain(cert, key_file)
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"cannot load client certificate {cert}: {e}")
            log.debug("using client certificate %s", cert)
        _CONTEXTS[key] = ctx
        return ctx


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


@dataclass
class _Token:
    value: str
    expires: float  # time.monotonic() deadline
    anonymous: bool


class RegistryClient:
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
        self._lock = threading.RLock()
        self._ping_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def allow_http(self) -> bool:
        return not self.tls_verify or is_loopback(self.host)

    def _tls_dirs(self) -> list[str]:
        if self.cert_dir:
            return [self.cert_dir]
        return cert_dirs(self.registry, self.config_dir)

    def _make_session(self):
        import requests
        from requests.adapters import HTTPAdapter

        _install_log_filter()
        files = find_tls_files(self._tls_dirs())
        ctx = _ssl_context(self.tls_verify, files)
        if not self.tls_verify:
            import warnings

            from urllib3.exceptions import InsecureRequestWarning

            # the user asked for it; urllib3 would warn on every request
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)

        class _Adapter(HTTPAdapter):
            def init_poolmanager(self, *args, **kwargs):
                kwargs["ssl_context"] = ctx
                return super().init_poolmanager(*args, **kwargs)

        s = requests.Session()
        s.mount("https://", _Adapter(pool_maxsize=16))
        s.mount("http://", HTTPAdapter(pool_maxsize=16))
        s.verify = self.tls_verify
        s.trust_env = True  # proxies from the environment, as docker and podman honour them
        s.headers["User-Agent"] = self.user_agent
        return s

    @property
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sleep(self, attempt: int, resp=None) -> None:
        delay = _retry_after(resp)
        if delay is None or delay > self.max_backoff * 3:
            delay = min(self.max_backoff, self.backoff * (2**attempt))
            delay *= 0.75 + random.random() / 2  # jitter: parallel pulls do not march in step
        log.debug("retrying %s in %.2fs", self.registry, delay)
        time.sleep(delay)

    def _transport_error(self, e: Exception, url: str) -> RegistryError:
        import requests

        where = self.registry
        if isinstance(e, requests.exceptions.SSLError):
            hint = ", ".join(self._tls_dirs()[:1])
            return RegistryError(
                f"TLS handshake with {where} failed: {_short(e)}; if the registry uses a "
                f"private CA, put its certificate in {hint}/ca.crt "
                f"(or use --tls-verify=false)",
                temporary=False,
            )
        if isinstance(e, requests.exceptions.Timeout):
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
    ):
        import requests

        try:
            resp = self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                stream=stream,
                timeout=(min(30.0, self.timeout), self.timeout),
                allow_redirects=allow_redirects,
                # explicitly: requests lets $REQUESTS_CA_BUNDLE override a session's False
                verify=self.tls_verify,
            )
        except requests.exceptions.RequestException as e:
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
            import requests

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
            except requests.exceptions.RequestException as e:
                if not self.allow_http:
                    raise self._transport_error(e, https + "/v2/")
                first = e
                http = f"http://{self.host}"
                try:
                    resp = self._ping_once(http)
                except requests.exceptions.RequestException:
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
        import requests

        try:
            resp = self._ping_once(base)
        except requests.exceptions.RequestException:
            return None
        is_registry = resp.status_code == 200 and \
            resp.headers.get("Docker-Distribution-Api-Version") or \
            resp.status_code == 401 and resp.headers.get("WWW-Authenticate")
        if not is_registry:
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
                import requests

                if (
                    isinstance(e, requests.exceptions.ConnectionError)
                    and not isinstance(e, requests.exceptions.SSLError)
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
        import requests

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
                    url = ch.realm + ("&" if "?" in ch.realm else "?") + urlencode(q)
                    h = dict(headers)
                    if creds is not None:
                        h["Authorization"] = _basic_header(creds)
                    resp = self._send("GET", url, headers=h)
            except requests.exceptions.RequestException as e:
                if attempt < self.retries and not isinstance(e, requests.exceptions.SSLError):
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
    ):
        """Send a request; returns the response whatever its status (``_error`` maps it).

        ``data`` may be bytes, a callable making a fresh body for each attempt, or a
        file (then the request is not retried).  Sets ``resp.pbox_anonymous``.
        """
        import requests

        self.ping()
        if not url.startswith(("http://", "https://")):
            url = urljoin(self._base + "/", url.lstrip("/"))
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
            try:
                resp = self._send(method, url, headers=h, data=body, stream=stream)
            except requests.exceptions.RequestException as e:
                if (
                    retry
                    and attempt < self.retries
                    and not isinstance(e, requests.exceptions.SSLError)
                ):
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise self._transport_error(e, url)
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

    # -- names -----------------------------------------------------------------------------

    def _path(self, repo: str, *rest: str) -> str:
        return "/v2/" + repo + "/" + "/".join(quote(r, safe=":@") for r in rest)

    def _what(self, repo: str, ref: str | None = None) -> str:
        name = f"{self.registry}/{repo}"
        if ref is None:
            return name
        return name + ("@" if ":" in ref and _digest.is_digest(ref) else ":") + ref

    @staticmethod
    def _pull(repo: str) -> list[str]:
        return [f"repository:{repo}:pull"]

    @staticmethod
    def _push(repo: str) -> list[str]:
        return [f"repository:{repo}:pull,push"]

    # -- manifests -------------------------------------------------------------------------

    def get_manifest(
        self, repo: str, ref: str, accept: Sequence[str] | None = None
    ) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index, by tag or digest.

        A manifest fetched by digest is checked against it (``DigestMismatch``).
        Schema 1 is refused (``UnsupportedFormat``).
        """
        from pbox.oci.manifest import detect_media_type

        what = self._what(repo, ref)
        accept = list(accept or mt.ACCEPT_MANIFESTS)
        resp = self._request(
            "GET",
            self._path(repo, "manifests", ref),
            scopes=self._pull(repo),
            what=what,
            headers={"Accept": ", ".join(accept)},
            stream=True,
        )
        if resp.status_code != 200:
            raise self._error(resp, what=what, kind="manifest")
        with resp:
            raw = _read_limited(resp, MAX_MANIFEST_SIZE, what)
            content_type = resp.headers.get("Content-Type")
            header_digest = resp.headers.get("Docker-Content-Digest")
        if _digest.is_digest(ref):
            # checked before parsing: corrupt content is a digest mismatch, not bad JSON
            got = _digest.compute(raw, _digest.algorithm_of(ref))
            if got != ref:
                raise DigestMismatch(
                    f"manifest digest mismatch for {what}: the registry sent content of "
                    f"digest {got}"
                )
            return raw, detect_media_type(raw, content_type), ref
        media_type = detect_media_type(raw, content_type)
        got = _digest.compute(raw)
        if header_digest and header_digest != got and header_digest.startswith("sha256:"):
            log.debug(
                "%s: Docker-Content-Digest %s differs from the content's %s",
                what,
                header_digest,
                got,
            )
        return raw, media_type, got

    def head_manifest(
        self, repo: str, ref: str, accept: Sequence[str] | None = None
    ) -> tuple[str, str, int] | None:
        """(digest, media type, size) from a HEAD, or None when the registry has no such tag."""
        what = self._what(repo, ref)
        accept = list(accept or mt.ACCEPT_MANIFESTS)
        resp = self._request(
            "HEAD",
            self._path(repo, "manifests", ref),
            scopes=self._pull(repo),
            what=what,
            headers={"Accept": ", ".join(accept)},
        )
        if resp.status_code == 404:
            resp.close()
            return None
        if resp.status_code != 200:
            raise self._error(resp, what=what, kind="manifest")
        resp.close()
        d = resp.headers.get("Docker-Content-Digest") or ""
        size = int(resp.headers.get("Content-Length") or 0)
        if not _digest.is_digest(d):
            raise RegistryError(f"{what}: the registry sent no digest in the HEAD answer")
        return d, mt.base(resp.headers.get("Content-Type")), size

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        """Upload a manifest under a tag (or its digest); returns its digest."""
        what = self._what(repo, ref)
        resp = self._request(
            "PUT",
            self._path(repo, "manifests", ref),
            scopes=self._push(repo),
            what=what,
            headers={"Content-Type": media_type},
            data=bytes(raw),
        )
        if resp.status_code not in (200, 201, 202):
            raise self._error(resp, what=what)
        resp.close()
        got = _digest.compute(raw)
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != got:
            log.debug(
                "%s: registry reports digest %s for a manifest of digest %s", what, header, got
            )
        return got

    def delete_manifest(self, repo: str, digest: str) -> None:
        what = self._what(repo, digest)
        resp = self._request(
            "DELETE",
            self._path(repo, "manifests", digest),
            scopes=[f"repository:{repo}:delete"],
            what=what,
        )
        if resp.status_code not in (200, 202):
            raise self._error(resp, what=what, kind="manifest")
        resp.close()

    # -- blobs -------------------------------------------------------------------------------

    def stat_blob(self, repo: str, digest: str) -> int | None:
        """The size of a blob the registry has, or None."""
        what = self._what(repo, digest)
        resp = self._request(
            "HEAD", self._path(repo, "blobs", digest), scopes=self._pull(repo), what=what
        )
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._error(resp, what=what, kind="blob")
        try:
            return int(resp.headers.get("Content-Length") or 0)
        except ValueError:
            return 0

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.stat_blob(repo, digest) is not None

    def fetch_blob(
        self, repo: str, digest: str, size: int | None = None
    ) -> _digest.VerifyingReader:
        """A stream of a blob, verified against ``digest`` (and ``size``) at its end.

        A connection that breaks in the middle of the body is resumed with a ``Range``
        request from the bytes already delivered.  Read to the end, or call ``finish()``.
        """
        _digest.validate(digest)
        stream = _BlobStream(self, repo, digest, size)
        stream.open(0)
        return _digest.VerifyingReader(stream, digest, size, what=f"blob {self._what(repo)}")

    def _get_blob_response(self, repo: str, digest: str, offset: int):
        what = self._what(repo, digest)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = self._request(
            "GET",
            self._path(repo, "blobs", digest),
            scopes=self._pull(repo),
            what=what,
            headers=headers,
            stream=True,
        )
        if resp.status_code not in (200, 206):
            raise self._error(resp, what=what, kind="blob")
        return resp

    # -- uploads -------------------------------------------------------------------------------

    def _upload_url(self, resp, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{what}: the registry started an upload without a Location")
        return urljoin(resp.url, loc)

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        parts = urlsplit(url)
        q = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), ""))

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Ask the registry to link a blob of ``from_repo`` into ``repo`` (no upload).

        False when it would not (the caller then uploads).
        """
        what = self._what(repo, digest)
        url = (
            self._path(repo, "blobs", "uploads", "")
            + "?"
            + urlencode({"mount": digest, "from": from_repo})
        )
        resp = self._request(
            "POST", url, what=what, scopes=self._push(repo) + self._pull(from_repo), data=b""
        )
        if resp.status_code == 201:
            resp.close()
            return True
        if resp.status_code == 202:
            # an upload session was opened instead: cancel it, the caller will upload
            try:
                loc = self._upload_url(resp, what)
                resp.close()
                self._request(
                    "DELETE", loc, scopes=self._push(repo), what=what, retry=False
                ).close()
            except RegistryError:
                pass
            return False
        if resp.status_code in (401, 403, 404):
            resp.close()
            return False
        raise self._error(resp, what=what)

    def push_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        fileobj: BinaryIO | Callable[[], BinaryIO],
        *,
        check_exists: bool = True,
        chunk_size: int | None = None,
    ) -> bool:
        """Upload a blob; False when the registry had it already.

        ``fileobj`` is streamed (monolithic PUT), or sent in PATCH chunks when the
        registry asks for them (``OCI-Chunk-Min-Length``) or ``chunk_size`` is given.
        Pass a callable returning a fresh file to let a failed upload start over.
        """
        _digest.validate(digest)
        what = self._what(repo, digest)
        if check_exists and self.blob_exists(repo, digest):
            return False
        attempts = self.retries + 1 if callable(fileobj) else 1
        for attempt in range(attempts):
            f = fileobj() if callable(fileobj) else fileobj
            try:
                self._upload(repo, digest, size, f, what, chunk_size)
                return True
            except RegistryError as e:
                if not e.temporary or attempt + 1 >= attempts:
                    raise
                log.debug("upload of %s failed (%s); starting over", what, e)
                self._sleep(attempt)
            finally:
                if callable(fileobj):
                    f.close()
        return True  # pragma: no cover - the loop returns or raises

    def _upload(
        self, repo: str, digest: str, size: int, f: BinaryIO, what: str, chunk_size: int | None
    ) -> None:
        resp = self._request(
            "POST",
            self._path(repo, "blobs", "uploads", ""),
            scopes=self._push(repo),
            what=what,
            data=b"",
        )
        if resp.status_code != 202:
            raise self._error(resp, what=what)
        url = self._upload_url(resp, what)
        min_chunk = resp.headers.get("OCI-Chunk-Min-Length")
        resp.close()
        if min_chunk and min_chunk.isdigit():
            chunk_size = max(int(min_chunk), chunk_size or DEFAULT_CHUNK_UPLOAD)
        if chunk_size:
            url = self._upload_chunks(repo, url, f, size, chunk_size, what)
            body: Any = b""
            length = 0
        else:
            body = _LimitedBody(f, size, what)
            length = size
        put = self._with_query(url, digest=digest)
        resp = self._request(
            "PUT",
            put,
            scopes=self._push(repo),
            what=what,
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
            retry=False,
        )
        if resp.status_code not in (201, 204):
            raise self._error(resp, what=what, kind="blob")
        resp.close()

    def _upload_chunks(
        self, repo: str, url: str, f: BinaryIO, size: int, chunk_size: int, what: str
    ) -> str:
        offset = 0
        while offset < size:
            n = min(chunk_size, size - offset)
            chunk = _read_exact(f, n)
            if len(chunk) != n:
                raise DigestMismatch(
                    f"{what}: the content ended after {offset + len(chunk)} of {size} bytes"
                )
            resp = self._request(
                "PATCH",
                url,
                scopes=self._push(repo),
                what=what,
                data=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + n - 1}",
                    "Content-Length": str(n),
                },
                retry=False,
            )
            if resp.status_code != 202:
                raise self._error(resp, what=what)
            url = self._upload_url(resp, what)
            resp.close()
            offset += n
        return url

    # -- listing ------------------------------------------------------------------------------

    def _paged(self, path: str, key: str, scopes: list[str], what: str) -> Iterator[str]:
        url: str | None = path
        seen = 0
        while url is not None and seen < 10000:
            seen += 1
            resp = self._request("GET", url, scopes=scopes, what=what)
            if resp.status_code != 200:
                raise self._error(resp, what=what)
            with resp:
                try:
                    obj = resp.json()
                except ValueError:
                    raise RegistryError(f"{what}: the registry answered something not JSON")
                link = resp.headers.get("Link")
            yield from (obj.get(key) or []) if isinstance(obj, dict) else []
            url = _next_link(link)

    def catalog(self, page_size: int = 1000) -> list[str]:
        """Every repository of the registry (``/v2/_catalog``, all pages)."""
        return list(
            self._paged(
                f"/v2/_catalog?n={page_size}",
                "repositories",
                ["registry:catalog:*"],
                f"{self.registry} catalog",
            )
        )

    def list_tags(self, repo: str, page_size: int = 1000) -> list[str]:
        return list(
            self._paged(
                f"/v2/{repo}/tags/list?n={page_size}", "tags", self._pull(repo), self._what(repo)
            )
        )


# -- helpers -------------------------------------------------------------------------------------


def _basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _short(e: BaseException) -> str:
    """A one-line reason from a requests/urllib3 exception chain, without URLs."""
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
    text = repr(e).lower()
    return "reset" in text or "remotedisconnected" in text or "aborted" in text


def _read_limited(resp, limit: int, what: str) -> bytes:
    parts = []
    got = 0
    for chunk in resp.iter_content(64 * 1024):
        got += len(chunk)
        if got > limit:
            raise RegistryError(f"{what}: manifest larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _next_link(link: str | None) -> str | None:
    """The target of ``Link: </v2/_catalog?last=x&n=100>; rel="next"``."""
    if not link:
        return None
    for part in link.split(","):
        part = part.strip()
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return part[start + 1 : end]
    return None


class _LimitedBody:
    """A file-like upload body of exactly ``size`` bytes, for requests to stream."""

    def __init__(self, f: BinaryIO, size: int, what: str):
        self._f = f
        self._left = size
        self._size = size
        self._what = what

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n is None or n < 0 or n > self._left:
            n = self._left
        data = self._f.read(min(n, CHUNK))
        if not data:
            raise DigestMismatch(f"{self._what}: the content ended {self._left} bytes early")
        self._left -= len(data)
        return data


class _BlobStream(io.RawIOBase):
    """The body of a blob GET that resumes with ``Range`` when the connection breaks."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int | None):
        super().__init__()
        self._c = client
        self._repo = repo
        self._digest = digest
        self._size = size
        self._resp = None
        self._raw = None
        self._pos = 0
        self._skip = 0  # bytes to drop after a server ignored our Range
        self._resumes = 0
        self._total: int | None = size

    def readable(self) -> bool:
        return True

    def open(self, offset: int) -> None:
        resp = self._c._get_blob_response(self._repo, self._digest, offset)
        self._skip = 0
        if offset:
            if resp.status_code == 206:
                start = _content_range_start(resp.headers.get("Content-Range"))
                if start is not None and start != offset:
                    resp.close()
                    raise RegistryError(
                        f"{self._c._what(self._repo, self._digest)}: the registry resumed at "
                        f"byte {start} instead of {offset}",
                        temporary=True,
                    )
            else:  # 200: the whole blob again; drop what we already have
                self._skip = offset
        elif self._total is None:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and "Content-Encoding" not in resp.headers:
                self._total = int(length)
        self._resp = resp
        self._raw = resp.raw

    def _resume(self, err: BaseException) -> None:
        what = self._c._what(self._repo, self._digest)
        if self._resumes >= self._c.resumes:
            raise RegistryError(
                f"{what}: the connection broke {self._resumes + 1} times while downloading "
                f"({_short(err)})",
                temporary=True,
            )
        self._resumes += 1
        log.debug("%s: connection broke at byte %d (%s); resuming", what, self._pos, _short(err))
        self._close_resp()
        if self._resumes > 1:
            self._c._sleep(self._resumes - 2)
        self.open(self._pos)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while True:
                chunk = self.read(CHUNK)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        if size == 0 or self._raw is None:
            return b""
        while True:
            try:
                data = self._raw.read(size, decode_content=True)
            except Exception as e:  # urllib3 ProtocolError, ReadTimeoutError, OSError...
                if not _is_transport_error(e):
                    raise
                self._resume(e)
                continue
            if not data:
                if self._total is not None and self._pos < self._total:
                    self._resume(EOFError(f"the body ended at byte {self._pos} of {self._total}"))
                    continue
                self._close_resp()
                return b""
            if self._skip:
                drop = min(self._skip, len(data))
                self._skip -= drop
                data = data[drop:]
                if not data:
                    continue
            self._pos += len(data)
            return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _close_resp(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp = None
        self._raw = None

    def close(self) -> None:
        if not self.closed:
            self._close_resp()
            super().close()


def _is_transport_error(e: BaseException) -> bool:
    import requests
    import urllib3.exceptions as ue

    return isinstance(e, (ue.HTTPError, requests.exceptions.RequestException, OSError, EOFError))


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value:
        return None
    try:
        unit, _, rng = value.strip().partition(" ")
        return int(rng.split("-", 1)[0])
    except ValueError:
        return None


def client_for(
    registry: str,
    *,
    config_dir: str | None = None,
    repository: str | None = None,
    tls_verify: bool = True,
    cert_dir: str | None = None,
    authfile: str | None = None,
    credentials: Credentials | None = None,
    user_agent: str | None = None,
) -> RegistryClient:
    """A client with the credentials of the auth files (unless ``credentials`` is given)."""
    if credentials is None:
        from pbox.oci import auth

        credentials = auth.lookup(registry, repository, config_dir=config_dir, authfile=authfile)
    return RegistryClient(
        registry,
        tls_verify=tls_verify,
        cert_dir=cert_dir,
        config_dir=config_dir,
        credentials=credentials,
        user_agent=user_agent,
    )
