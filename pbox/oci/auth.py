"""Registry credentials: where they are kept, how to read, write and erase them, and how
to read a registry's ``WWW-Authenticate`` challenge.

Files read, first hit wins (the ``authfile`` argument, like ``--authfile``, replaces the
whole list):

1. pbox's own ``<config_dir>/auth.json`` (what ``pbox login`` writes)
2. ``$REGISTRY_AUTH_FILE``
3. ``$XDG_RUNTIME_DIR/containers/auth.json``
4. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/...``)
5. ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``)

All use the ``{"auths": {KEY: {"auth": base64("user:password")}}}`` shape.  Keys may be a
bare host (``quay.io``), a host with a scheme and path (docker's
``https://index.docker.io/v1/``), or a repository prefix (``quay.io/team``, most specific
wins).  Docker's ``credHelpers``/``credsStore`` run ``docker-credential-NAME get``; when
one is set for a registry in any of the files, ``login`` stores through it (``store``)
and ``logout`` erases through it (``erase``) instead of writing an auth file.
"""

from __future__ import annotations

import binascii  # (base64 imports re: ~3 ms)
import os

from pbox.errors import AuthError, UsageError
from pbox.lazylog import get_logger
from pbox.oci.reference import DEFAULT_REGISTRY, normalize_registry
from pbox.record import factory, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping

log = get_logger(__name__)

# docker's credential helpers and config files know Docker Hub by this name
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 60


@record(frozen=True)
class Credentials:
    """A user name and a secret.  ``repr`` never shows the secret."""

    username: str = ""
    password: str = ""
    # docker's "identitytoken": an OAuth2 refresh token given to the token server
    identity_token: str = ""
    source: str = ""  # where they were found, for debug messages

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


# -- where -----------------------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def default_auth_file(config_dir: str) -> str:
    """The file ``pbox login`` writes."""
    return os.path.join(config_dir, "auth.json")


def auth_file_paths(
    config_dir: str | None = None,
    *,
    authfile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The credential files to read, in order (existing or not)."""
    if authfile:
        return [authfile]
    env = os.environ if env is None else env
    paths: list[str] = []
    if config_dir:
        paths.append(default_auth_file(config_dir))
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    xdg_config = env.get("XDG_CONFIG_HOME") or os.path.join(_home(env), ".config")
    paths.append(os.path.join(xdg_config, "containers", "auth.json"))
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(_home(env), ".docker")
    paths.append(os.path.join(docker_dir, "config.json"))
    out: list[str] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


# -- keys ------------------------------------------------------------------------------------


def normalize_key(key: str) -> str:
    """An auth-file key in comparable form: ``https://index.docker.io/v1/`` -> ``docker.io``.

    A key with a scheme is a registry (docker's legacy form: the path is dropped); a key
    without one may be a repository prefix (``quay.io/team``).
    """
    k = key.strip()
    had_scheme = False
    for scheme in ("https://", "http://"):
        if k.startswith(scheme):
            k = k[len(scheme) :]
            had_scheme = True
    if had_scheme:
        k = k.split("/", 1)[0]
    k = k.rstrip("/")
    host, sep, path = k.partition("/")
    return normalize_registry(host) + (sep + path if path else "")


def _candidate_keys(registry: str, repository: str | None) -> list[str]:
    """Most specific first: ``reg/a/b``, ``reg/a``, ``reg``."""
    reg = normalize_registry(registry)
    keys = []
    if repository:
        parts = repository.split("/")
        for i in range(len(parts), 0, -1):
            keys.append(reg + "/" + "/".join(parts[:i]))
    keys.append(reg)
    return keys


def helper_server_url(registry: str) -> str:
    """The server name docker's credential helpers file a registry under."""
    reg = normalize_registry(registry)
    return DOCKER_HUB_SERVER if reg == DEFAULT_REGISTRY else reg


# -- reading ---------------------------------------------------------------------------------


def _read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return None
    if not data.strip():
        return {}
    # (jsonio only now: a pull without credential files sends its first request sooner)
    from pbox import jsonio as json

    try:
        obj = json.loads(data)
    except ValueError as e:
        raise AuthError(f"invalid credentials file {path}: {e}")
    if not isinstance(obj, dict):
        raise AuthError(f"invalid credentials file {path}: expected a JSON object")
    return obj


def decode_entry(entry: dict, source: str = "") -> Credentials | None:
    """Credentials of one ``auths`` entry, or None when it holds none."""
    if not isinstance(entry, dict):
        return None
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    auth = entry.get("auth")
    if auth:
        try:
            decoded = binascii.a2b_base64(auth).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"invalid credentials in {source or 'auth file'}: bad base64")
        if ":" not in decoded:
            raise AuthError(f"invalid credentials in {source or 'auth file'}: no ':' in auth")
        username, password = decoded.split(":", 1)
    identity = entry.get("identitytoken") or ""
    creds = Credentials(str(username), str(password), str(identity), source)
    return None if creds.empty else creds


def run_helper(
    name: str, server: str, *, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for ``server``; None when it has nothing."""
    import shutil
    import subprocess

    prog = f"docker-credential-{name}"
    path = shutil.which(prog, path=(env or os.environ).get("PATH"))
    if path is None:
        log.warning("credential helper %s is not installed; going on without its credentials", prog)
        return None
    try:
        p = subprocess.run(
            [path, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env) if env is not None else None,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("credential helper %s failed: %s", prog, e)
        return None
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        msg = (out.strip() or p.stderr.decode("utf-8", "replace").strip())[:200]
        if "credentials not found" in msg.lower():
            return None
        log.warning("credential helper %s failed: %s", prog, msg)
        return None
    from pbox import jsonio as json

    try:
        obj = json.loads(out)
    except ValueError:
        log.warning("credential helper %s printed something that is not JSON", prog)
        return None
    username = str(obj.get("Username") or "")
    secret = str(obj.get("Secret") or "")
    if username == "<token>":  # docker's convention for an identity token
        return Credentials("", "", secret, f"helper {name}")
    creds = Credentials(username, secret, "", f"helper {name}")
    return None if creds.empty else creds


def lookup_in_file(
    path: str,
    registry: str,
    repository: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    obj = _read_json(path)
    if not obj:
        return None
    reg = normalize_registry(registry)
    helpers = obj.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if normalize_key(key) == reg and name:
                return run_helper(str(name), helper_server_url(reg), env=env)
    auths = obj.get("auths")
    entries: dict[str, dict] = {}
    if isinstance(auths, dict):
        for key, entry in auths.items():
            entries.setdefault(normalize_key(key), entry)
    store = obj.get("credsStore")
    if store:
        creds = run_helper(str(store), helper_server_url(reg), env=env)
        if creds is not None:
            return creds
    for key in _candidate_keys(reg, repository):
        if key in entries:
            creds = decode_entry(entries[key], path)
            if creds is not None:
                return creds
    return None


def lookup(
    registry: str,
    repository: str | None = None,
    *,
    config_dir: str | None = None,
    authfile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """The credentials for ``registry`` (and ``repository``) from the first file having some."""
    for path in auth_file_paths(config_dir, authfile=authfile, env=env):
        creds = lookup_in_file(path, registry, repository, env=env)
        if creds is not None:
            log.debug("credentials for %s from %s", registry, creds.source or path)
            return creds
    return None


def configured_helper(paths: list[str], registry: str) -> str | None:
    """The credential helper the first of ``paths`` naming one sets for ``registry``:
    its ``credHelpers`` entry for the registry, else its ``credsStore``."""
    reg = normalize_registry(registry)
    for path in paths:
        obj = _read_json(path)
        if not obj:
            continue
        helpers = obj.get("credHelpers")
        if isinstance(helpers, dict):
            for key, name in helpers.items():
                if normalize_key(key) == reg and name:
                    return str(name)
        if obj.get("credsStore"):
            return str(obj["credsStore"])
    return None


def _call_helper(name: str, action: str, data: bytes,
                 env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    import shutil
    import subprocess

    prog = f"docker-credential-{name}"
    path = shutil.which(prog, path=(env or os.environ).get("PATH"))
    if path is None:
        raise AuthError(f"credential helper {prog} is configured but not installed")
    try:
        return subprocess.run([path, action], input=data, capture_output=True,
                              timeout=HELPER_TIMEOUT,
                              env=dict(env) if env is not None else None)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AuthError(f"credential helper {prog} failed: {e}")


def _helper_message(p: subprocess.CompletedProcess) -> str:
    out = p.stdout.decode("utf-8", "replace").strip()
    return (out or p.stderr.decode("utf-8", "replace").strip())[:200]


def helper_store(name: str, registry: str, username: str, password: str, *,
                 env: Mapping[str, str] | None = None) -> None:
    """``docker-credential-NAME store``: hand the credentials to the helper."""
    from pbox import jsonio as json

    data = json.dumps({"ServerURL": helper_server_url(registry), "Username": username,
                       "Secret": password}).encode()
    p = _call_helper(name, "store", data, env)
    if p.returncode != 0:
        raise AuthError(f"credential helper docker-credential-{name} could not store "
                        f"the credentials: {_helper_message(p)}")


def helper_erase(name: str, registry: str, *, env: Mapping[str, str] | None = None) -> bool:
    """``docker-credential-NAME erase``; False when the helper had nothing for it."""
    p = _call_helper(name, "erase", helper_server_url(registry).encode(), env)
    if p.returncode != 0:
        msg = _helper_message(p)
        if "credentials not found" in msg.lower():
            return False
        raise AuthError(f"credential helper docker-credential-{name} could not erase "
                        f"the credentials: {msg}")
    return True


# -- writing ---------------------------------------------------------------------------------


def _write_atomic(path: str, obj: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    from pbox import jsonio as json

    data = (json.dumps(obj, indent="\t") + "\n").encode("utf-8")
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".auth-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def store(path: str, registry: str, username: str, password: str) -> None:
    """Save credentials for ``registry`` in ``path`` (mode 0600, written atomically)."""
    if not username or ":" in username:
        raise UsageError("a user name is required and may not contain ':'")
    obj = _read_json(path) or {}
    auths = obj.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    key = normalize_key(registry)
    for k in list(auths):
        if normalize_key(k) == key:
            del auths[k]
    token = binascii.b2a_base64(f"{username}:{password}".encode(), newline=False).decode("ascii")
    auths[key] = {"auth": token}
    obj["auths"] = auths
    _write_atomic(path, obj)


def erase(path: str, registry: str) -> bool:
    """Remove the credentials for ``registry`` from ``path``; False when there were none."""
    obj = _read_json(path)
    if not obj or not isinstance(obj.get("auths"), dict):
        return False
    key = normalize_key(registry)
    auths = obj["auths"]
    found = [k for k in auths if normalize_key(k) == key]
    if not found:
        return False
    for k in found:
        del auths[k]
    _write_atomic(path, obj)
    return True


# -- WWW-Authenticate ------------------------------------------------------------------------

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


@record
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: scheme in lower case, params."""

    scheme: str
    params: dict[str, str] = factory(dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenges(header: str | None) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 7235): several challenges, quoted strings with commas.

    ``Bearer realm="https://auth/token",service="reg",scope="repository:a:pull,push"``
    """
    if not header:
        return []
    s = header
    n = len(s)
    i = 0
    out: list[Challenge] = []

    def skip_ws(j: int) -> int:
        while j < n and s[j] in " \t":
            j += 1
        return j

    def read_token(j: int, chars=_TOKEN_CHARS) -> tuple[str, int]:
        k = j
        while k < n and s[k] in chars:
            k += 1
        return s[j:k], k

    def read_quoted(j: int) -> tuple[str, int]:
        # s[j] == '"'
        j += 1
        buf = []
        while j < n and s[j] != '"':
            if s[j] == "\\" and j + 1 < n:
                j += 1
            buf.append(s[j])
            j += 1
        return "".join(buf), j + 1

    while i < n:
        i = skip_ws(i)
        while i < n and s[i] in ", \t":
            i += 1
        if i >= n:
            break
        scheme, i = read_token(i)
        if not scheme:
            i += 1  # garbage: skip a character and resynchronise
            continue
        ch = Challenge(scheme.lower())
        out.append(ch)
        i = skip_ws(i)
        # parameters, until a token not followed by '=' (the next challenge's scheme)
        while i < n:
            while i < n and s[i] in ", \t":
                i += 1
            if i >= n:
                break
            name, j = read_token(i)
            j = skip_ws(j)
            if not name or j >= n or s[j] != "=":
                break
            j = skip_ws(j + 1)
            if j < n and s[j] == '"':
                value, i = read_quoted(j)
            else:  # a token by the RFC; be lenient and take up to the next separator
                k = j
                while k < n and s[k] not in ", \t":
                    k += 1
                value, i = s[j:k], k
            ch.params[name.lower()] = value
    return out


def find_challenge(challenges: list[Challenge], scheme: str) -> Challenge | None:
    for c in challenges:
        if c.scheme == scheme:
            return c
    return None
