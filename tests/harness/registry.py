"""Run the real distribution registry (``docker-registry``) on loopback for tests.

A ``Registry`` writes a config (filesystem storage in its work dir, deletes enabled,
debug logging with access logs), starts ``docker-registry serve CONFIG`` on
127.0.0.1 and a free port, polls ``/v2/`` until it answers, and stops the process
by PID.  Four modes:

``plain``  HTTP, no auth.
``tls``    HTTPS with a throw-away CA (``ca_path``, ``cert_dir``) and a server
           certificate for 127.0.0.1 / localhost.
``basic``  htpasswd (bcrypt) auth.  distribution 2.8 does not insist on TLS for
           htpasswd, so this runs over HTTP unless ``tls=True`` is passed.
``token``  bearer tokens from ``tokenserver.TokenServer`` (a thread in the test
           process); the registry verifies the JWTs against ``rootcertbundle``.

The config is written as JSON, which is valid YAML.  Test helpers read the
registry's access log (``count_requests``) and its storage (``blob_data_path``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .tokenserver import RS256Signer, TokenServer, TokenUser

MODES = ("plain", "tls", "basic", "token")

TOKEN_SERVICE = "pbox-test-registry"
TOKEN_ISSUER = "pbox-test-token-issuer"

_POLL = 0.02  # seconds between readiness polls; never sleep longer than this
_START_TIMEOUT = 30.0

# One access-log line, as written by gorilla's combined logging handler:
# 127.0.0.1 - - [23/Nov/2026:09:31:14 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88.1"
_ACCESS_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(\S+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')
_SYNC_PARAM = "pbox-harness-sync"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"the test harness needs {name!r} on PATH")
    return path


def _run(argv: list[str], *, input: bytes | None = None, cwd: str | None = None) -> bytes:
    proc = subprocess.run(argv, input=input, cwd=cwd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


# -- a throw-away PKI, made with the openssl CLI ------------------------------------------

def make_ca(directory: str, name: str = "pbox test CA") -> tuple[str, str]:
    """A self-signed EC CA; returns (cert path, key path)."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes", "-keyout", key, "-out", cert, "-days", "7", "-sha256", "-subj", f"/CN={name}",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return cert, key


def make_cert(directory: str, stem: str, ca: tuple[str, str], *, common_name: str,
              extensions: str, rsa: bool = False) -> tuple[str, str]:
    """A leaf certificate signed by ``ca``; returns (cert path, key path)."""
    cert = os.path.join(directory, stem + ".crt")
    key = os.path.join(directory, stem + ".key")
    csr = os.path.join(directory, stem + ".csr")
    ext = os.path.join(directory, stem + ".ext")
    with open(ext, "w", encoding="ascii") as f:
        f.write(extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    newkey = ["-newkey", "rsa:2048"] if rsa else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    _run(["openssl", "req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr,
          "-subj", f"/CN={common_name}"])
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
          "-set_serial", "0x" + secrets.token_hex(8), "-days", "7", "-sha256",
          "-extfile", ext, "-out", cert])
    return cert, key


def make_server_cert(directory: str, ca: tuple[str, str]) -> tuple[str, str]:
    return make_cert(directory, "server", ca, common_name="127.0.0.1", extensions=(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth"))


def make_token_signing_cert(directory: str, ca: tuple[str, str]) -> tuple[str, str]:
    """An RSA leaf for RS256 token signatures."""
    return make_cert(directory, "signer", ca, common_name="pbox test token signer", rsa=True,
                     extensions="basicConstraints=critical,CA:FALSE\n"
                                "keyUsage=critical,digitalSignature")


def http_get(url: str, verify: str | bool, timeout: float):
    """GET without the environment's proxies or CA bundle overriding ``verify``."""
    import requests

    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, timeout=timeout, verify=verify)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_retrying(url: str, timeout: float = 20.0) -> bytes:
    """GET ``url`` (no proxy), retried while the server (in a container) is starting."""
    import time
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=5) as r:
                return r.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def port_refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` (a connection is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


@dataclass(frozen=True)
class AccessEntry:
    """One request from the registry's access log."""

    method: str
    path: str  # the request URI, query included
    status: int
    size: int


class Registry:
    """One ``docker-registry`` process on 127.0.0.1.

    ``workdir`` holds everything (config, storage, PKI, log); when omitted a temp
    dir is made and removed again by ``stop()``.  ``users`` maps user -> password
    (basic and token modes); the first user is ``username``/``password``.  In
    token mode the first user may pull, push and delete everywhere, the others
    only pull; pass ``token_users`` (name -> TokenUser) to decide otherwise, and
    ``token_options`` (TokenServer keyword arguments) to configure the token
    server, which stays reachable as ``token_server`` for changes at run time.
    """

    def __init__(self, mode: str = "plain", workdir: str | None = None, *, tls: bool | None = None,
                 users: dict[str, str] | None = None,
                 token_users: dict[str, TokenUser] | None = None,
                 token_options: dict | None = None, extra_config: dict | None = None,
                 binary: str = "docker-registry"):
        if mode not in MODES:
            raise ValueError(f"unknown registry mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.tls = (mode == "tls") if tls is None else tls
        if mode == "tls" and not self.tls:
            raise ValueError("mode 'tls' needs tls=True")
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="pbox-registry-"))
        os.makedirs(self.workdir, exist_ok=True)
        self.storage_dir = os.path.join(self.workdir, "storage")
        self.log_path = os.path.join(self.workdir, "registry.log")
        self.config_path = os.path.join(self.workdir, "config.yml")
        self.binary = binary
        self.extra_config = extra_config or {}
        if mode in ("basic", "token"):
            self.users = dict(users) if users else {
                "pboxuser": secrets.token_urlsafe(12), "reader": secrets.token_urlsafe(12)}
        else:
            self.users = {}
        self._token_users = token_users
        self._token_options = dict(token_options or {})
        self.ca_path: str | None = None
        self.cert_dir: str | None = None
        self._server_cert: tuple[str, str] | None = None
        self.token_server: TokenServer | None = None
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None
        self._secret = secrets.token_hex(16)
        self._prepared = False
        self._log_pos = 0
        self._entries: list[AccessEntry] = []
        self._synced: set[str] = set()
        self.cache: dict = {}  # for fixtures that memoise per registry (pushed test images)

    # -- public facts ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("registry was never started")
        return self._port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def username(self) -> str | None:
        return next(iter(self.users), None)

    @property
    def password(self) -> str | None:
        return self.users[self.username] if self.users else None

    @property
    def creds(self) -> str | None:
        """``user:password`` as skopeo's ``--creds`` wants it."""
        return f"{self.username}:{self.password}" if self.users else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def verify(self) -> str | bool:
        """What ``requests`` wants as ``verify=`` for this registry."""
        return self.ca_path if self.ca_path else True

    def __repr__(self) -> str:
        where = self.host if self._port else "not started"
        return f"<Registry {self.mode} {where}>"

    # -- lifecycle -------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._prepared:
            return
        require_tool(self.binary)
        require_tool("openssl")
        os.makedirs(self.storage_dir, exist_ok=True)
        if self.tls:
            pki = os.path.join(self.workdir, "pki")
            ca = make_ca(pki)
            self._server_cert = make_server_cert(pki, ca)
            self.ca_path = ca[0]
            # a certs.d-style directory: only the CA, named *.crt (skopeo --cert-dir)
            self.cert_dir = os.path.join(self.workdir, "certs.d")
            os.makedirs(self.cert_dir, exist_ok=True)
            shutil.copyfile(ca[0], os.path.join(self.cert_dir, "ca.crt"))
        if self.mode == "basic":
            require_tool("htpasswd")
            path = os.path.join(self.workdir, "htpasswd")
            for i, (user, password) in enumerate(self.users.items()):
                # -C 4: the cheapest bcrypt cost; the registry re-checks it per request
                flags = ["-iBC", "4"] + (["-c"] if i == 0 else [])
                _run(["htpasswd", *flags, path, user], input=password.encode())
        if self.mode == "token":
            self._start_token_server()
        self._prepared = True

    def _start_token_server(self) -> None:
        tdir = os.path.join(self.workdir, "token")
        token_ca = make_ca(tdir, "pbox test token CA")
        signer_cert, signer_key = make_token_signing_cert(tdir, token_ca)
        options = dict(self._token_options)
        chain = options.get("chain", "x5c")
        if chain == "x5c":
            self._token_bundle = token_ca[0]
        else:
            # kid mode: the registry trusts the public keys of the bundle's certificates
            self._token_bundle = signer_cert
        if self._token_users is not None:
            users = dict(self._token_users)
        else:
            names = list(self.users)
            users = {name: TokenUser(pw, ["*"] if name == names[0] else ["pull"])
                     for name, pw in self.users.items()}
        options.setdefault("service", TOKEN_SERVICE)
        options.setdefault("issuer", TOKEN_ISSUER)
        if self.tls:
            options.setdefault("tls_cert", self._server_cert[0])
            options.setdefault("tls_key", self._server_cert[1])
        self.token_server = TokenServer(RS256Signer(signer_key, signer_cert), users=users,
                                        **options).start()

    def _config(self, port: int) -> dict:
        http: dict = {"addr": f"127.0.0.1:{port}", "secret": self._secret,
                      "headers": {"X-Content-Type-Options": ["nosniff"]}}
        if self.tls:
            http["tls"] = {"certificate": self._server_cert[0], "key": self._server_cert[1]}
        cfg: dict = {
            "version": "0.1",
            "log": {"level": "debug", "formatter": "text", "accesslog": {"disabled": False}},
            # no blob descriptor cache: a corrupted data file must show at once
            "storage": {
                "filesystem": {"rootdirectory": self.storage_dir},
                "delete": {"enabled": True},
                "redirect": {"disable": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.mode == "basic":
            cfg["auth"] = {"htpasswd": {"realm": "pbox-test-registry",
                                        "path": os.path.join(self.workdir, "htpasswd")}}
        elif self.mode == "token":
            ts = self.token_server
            cfg["auth"] = {"token": {"realm": ts.realm, "service": ts.service,
                                     "issuer": ts.issuer, "rootcertbundle": self._token_bundle}}
        for key, value in self.extra_config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    def start(self) -> Registry:
        """Start (or restart, on the same port) the registry and wait until it answers."""
        if self.running:
            return self
        self._prepare()
        pinned = self._port is not None
        attempts = 20 if pinned else 5
        last_error = ""
        for _ in range(attempts):
            port = self._port if pinned else free_port()
            with open(self.config_path, "w", encoding="utf-8") as f:
                json.dump(self._config(port), f, indent=2)
            ok, last_error = self._launch(port)
            if ok:
                self._port = port
                atexit.register(self.stop)
                return self
            if "address already in use" not in last_error:
                break
            time.sleep(_POLL)
        raise RuntimeError(f"docker-registry did not start ({self.mode}):\n{last_error}")

    def _launch(self, port: int) -> tuple[bool, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "serve", self.config_path], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        deadline = time.monotonic() + _START_TIMEOUT
        url = f"{self.scheme}://127.0.0.1:{port}/v2/"
        import requests

        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                text = self._read_log(offset)
                self._proc = None
                return False, text
            # the registry logs this once its socket is bound: whatever answered before
            # that on the port would be someone else
            if f"listening on 127.0.0.1:{port}" not in self._read_log(offset):
                time.sleep(_POLL / 4)
                continue
            try:
                resp = http_get(url, self.verify, timeout=1)
                if resp.status_code in (200, 401) and "registry/2.0" in resp.headers.get(
                        "Docker-Distribution-Api-Version", ""):
                    return True, ""
            except requests.RequestException:
                pass
            time.sleep(_POLL)
        self._terminate()
        return False, "timed out waiting for /v2/\n" + self._read_log(offset)

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # in case a test suspended it
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the registry process only; ``start()`` brings it back on the same port."""
        self._terminate()

    def close(self) -> None:
        """Stop everything (registry, token server) and remove a temp work dir we made."""
        self._terminate()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None
            self._prepared = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def suspend(self) -> None:
        """SIGSTOP the registry: connections hang (for timeout tests)."""
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._proc.pid, signal.SIGCONT)

    # -- storage ---------------------------------------------------------------------------

    def blob_data_path(self, digest: str) -> str:
        """The file the filesystem driver keeps a blob's bytes in."""
        algo, _, hexpart = digest.partition(":")
        if not hexpart or not re.fullmatch(r"[a-f0-9]{32,}", hexpart):
            raise ValueError(f"not a digest: {digest!r}")
        return os.path.join(self.storage_dir, "docker", "registry", "v2", "blobs", algo,
                            hexpart[:2], hexpart, "data")

    def corrupt_blob(self, digest: str, how: str = "flip", data: bytes | None = None) -> str:
        """Change what the registry serves for ``digest``; return the data file's path.

        ``how``:
          ``flip``          invert one byte in the middle (same size; a gzip or zstd
                            stream usually breaks too),
          ``same-content``  gzip blobs only: change the gzip header's MTIME, so the blob
                            still decompresses to the very same tar (same diff ID) and
                            only a check of the blob digest can notice,
          ``replace``       write ``data`` instead (``data=`` alone implies it).
        """
        path = self.blob_data_path(digest)
        if data is not None:
            how = "replace"
        with open(path, "rb") as f:
            content = bytearray(f.read())
        if how == "flip":
            if not content:
                raise ValueError(f"blob {digest} is empty; pass data= to corrupt it")
            content[len(content) // 2] ^= 0xFF
        elif how == "same-content":
            if content[:2] != b"\x1f\x8b":
                raise ValueError(f"blob {digest} is not gzip")
            content[4:8] = (int.from_bytes(content[4:8], "little") + 1).to_bytes(4, "little")
        elif how == "replace":
            if data is None:
                raise ValueError("how='replace' needs data=")
            content = bytearray(data)
        else:
            raise ValueError(f"unknown corruption {how!r}")
        with open(path, "wb") as f:
            f.write(content)
        return path

    # -- the access log --------------------------------------------------------------------

    def log_text(self) -> str:
        return self._read_log()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self._read_log().splitlines()[-lines:])

    def _parse_new_log(self) -> None:
        """Parse complete access-log lines written since the last call."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._log_pos += end + 1
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            m = _ACCESS_RE.match(line)
            if not m:
                continue
            uri = m.group(2)
            if _SYNC_PARAM in uri:
                self._synced.add(uri.rsplit("=", 1)[-1])
                continue
            size = m.group(4)
            self._entries.append(AccessEntry(m.group(1), uri, int(m.group(3)),
                                             int(size) if size.isdigit() else 0))

    def _sync_log(self) -> None:
        """Make sure every request answered so far is in the log.

        The registry writes an access-log line after its handler returns, which
        may be after the client saw a streamed response.  Send a marker request
        and wait for its line: earlier, finished requests are logged by then.
        """
        if not self.running:
            self._parse_new_log()
            return
        import requests

        token = secrets.token_hex(8)
        with contextlib.suppress(requests.RequestException):
            http_get(f"{self.url}/v2/?{_SYNC_PARAM}={token}", self.verify, timeout=5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self._parse_new_log()
            if token in self._synced:
                self._synced.discard(token)
                return
            time.sleep(_POLL / 4)
        raise RuntimeError("registry access log did not show the sync request")

    def access_log(self, since: int = 0) -> list[AccessEntry]:
        """The requests the registry logged (harness sync requests left out), from ``since`` on."""
        self._sync_log()
        return self._entries[since:]

    def log_mark(self) -> int:
        """A position in the access log; pass it as ``since=`` to count only later requests."""
        return len(self.access_log())

    def requests_matching(self, method: str | None = None, path: str | None = None,
                          status: int | None = None, since: int = 0) -> list[AccessEntry]:
        """Logged requests by method, ``re.search`` on the URI, and status."""
        rx = re.compile(path) if path else None
        return [e for e in self.access_log(since)
                if (method is None or e.method == method.upper())
                and (rx is None or rx.search(e.path))
                and (status is None or e.status == status)]

    def count_requests(self, method: str | None = None, path: str | None = None,
                       status: int | None = None, since: int = 0) -> int:
        """How many logged requests match, e.g. ``count_requests("POST", r"/blobs/uploads/")``."""
        return len(self.requests_matching(method, path, status, since))
