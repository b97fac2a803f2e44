"""registries.conf: short-name search, aliases, mirrors, insecure and blocked registries.

The file is ``<config_dir>/registries.conf`` (``$PBOX_REGISTRIES_CONF`` overrides it) and
uses the TOML shapes of containers' registries.conf (version 2)::

    unqualified-search-registries = ["127.0.0.1:5000", "docker.io"]

    [aliases]
    "myapp" = "127.0.0.1:5000/team/myapp"

    [[registry]]
    prefix = "docker.io"          # optional, defaults to location
    location = "docker.io"
    insecure = false               # plain HTTP or unverified TLS
    blocked = false

    [[registry.mirror]]
    location = "127.0.0.1:5001"
    insecure = true

The file is read by a small reader of that TOML subset (strings, booleans, arrays of
strings, ``[table]``, ``[[array]]``, comments), so pbox keeps working on Python 3.9
without a TOML library, and the same file serves both tools.  When the file is absent
nothing here is imported and names normalise to docker.io as docker does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pbox.errors import PboxError
from pbox.oci import reference as refs

ENV_VAR = "PBOX_REGISTRIES_CONF"


class ConfigError(PboxError):
    pass


@dataclass
class Endpoint:
    location: str
    insecure: bool = False


@dataclass
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: list = field(default_factory=list)  # Endpoint

    def rewrite(self, name: str, location: str) -> str:
        """``name`` (registry/repository) with this entry's prefix replaced by ``location``."""
        return location + name[len(self.prefix):]


@dataclass
class RegistriesConf:
    search: list = field(default_factory=lambda: [refs.DEFAULT_REGISTRY])
    aliases: dict = field(default_factory=dict)
    registries: list = field(default_factory=list)  # RegistryEntry
    path: str = ""

    def find(self, name: str) -> RegistryEntry | None:
        """The entry whose prefix matches ``name`` (registry/repository) most specifically."""
        best = None
        for entry in self.registries:
            p = entry.prefix
            matches = name == p or name.startswith(p + "/")
            if matches and (best is None or len(p) > len(best.prefix)):
                best = entry
        return best


def conf_path(config_dir: str) -> str:
    return os.environ.get(ENV_VAR) or os.path.join(config_dir, "registries.conf")


def load(config_dir: str) -> RegistriesConf | None:
    """The parsed file, or None when there is none."""
    path = conf_path(config_dir)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}")
    return from_dict(parse_toml(text, path), path)


# -- the TOML subset ---------------------------------------------------------------------------


def _value(text: str, path: str, lineno: int):
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    if t.startswith("'") and t.endswith("'") and len(t) >= 2:
        return t[1:-1]
    if t.startswith(("\"", "[")):
        try:
            return json.loads(t)
        except ValueError:
            pass
        if t.startswith("["):  # single quotes or a trailing comma inside an array
            items = [i.strip() for i in t[1:-1].split(",") if i.strip()]
            return [_value(i, path, lineno) for i in items]
    raise ConfigError(f"{path}:{lineno}: unsupported value {t!r}")


def _strip_comment(line: str) -> str:
    out, quote = [], ""
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out).strip()


def _key(k: str) -> str:
    k = k.strip()
    if len(k) >= 2 and k[0] == k[-1] and k[0] in "\"'":
        return k[1:-1]
    return k


def parse_toml(text: str, path: str = "registries.conf") -> dict:
    """Parse the subset of TOML registries.conf files use."""
    root: dict = {}
    table = root
    pending = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if pending:  # a multi-line array
            pending += " " + line
            if pending.count("[") > pending.count("]"):
                continue
            line, pending = pending, ""
            lineno = start
        if not line:
            continue
        if line.startswith("[["):
            name = line[2:-2].strip()
            if name == "registry":
                table = {}
                root.setdefault("registry", []).append(table)
            elif name == "registry.mirror":
                if not root.get("registry"):
                    raise ConfigError(f"{path}:{lineno}: [[registry.mirror]] before [[registry]]")
                table = {}
                root["registry"][-1].setdefault("mirror", []).append(table)
            else:
                raise ConfigError(f"{path}:{lineno}: unsupported table [[{name}]]")
            continue
        if line.startswith("["):
            name = line[1:-1].strip()
            table = root.setdefault(name, {})
            continue
        key, sep, val = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{lineno}: expected KEY = VALUE")
        if val.strip().startswith("[") and val.count("[") > val.count("]"):
            pending, start = line, lineno
            continue
        table[_key(key)] = _value(val, path, lineno)
    return root


def _bool(d: dict, key: str, path: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise ConfigError(f"{path}: {key} must be true or false")
    return v


def from_dict(d: dict, path: str = "") -> RegistriesConf:
    conf = RegistriesConf(path=path)
    if "unqualified-search-registries" in d:
        search = d["unqualified-search-registries"]
        if not isinstance(search, list) or not all(isinstance(s, str) for s in search):
            raise ConfigError(f"{path}: unqualified-search-registries must be a list of names")
        conf.search = [refs.normalize_registry(s) for s in search]
    aliases = d.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise ConfigError(f"{path}: [aliases] must be a table")
    conf.aliases = {str(k): str(v) for k, v in aliases.items()}
    for r in d.get("registry") or []:
        location = str(r.get("location") or "").rstrip("/")
        prefix = str(r.get("prefix") or location).rstrip("/")
        if not prefix:
            raise ConfigError(f"{path}: a [[registry]] needs a prefix or a location")
        mirrors = [Endpoint(str(m.get("location") or "").rstrip("/"), _bool(m, "insecure", path))
                   for m in r.get("mirror") or [] if m.get("location")]
        conf.registries.append(RegistryEntry(prefix, location or prefix, _bool(r, "insecure", path),
                                             _bool(r, "blocked", path), mirrors))
    return conf


# -- resolution --------------------------------------------------------------------------------


def is_short_name(text: str) -> bool:
    """True when ``text`` names no registry (``busybox``, ``team/app:1``)."""
    i = text.find("/")
    if i < 0:
        return True
    first = text[:i]
    return "." not in first and ":" not in first and first != "localhost"


def candidates(conf: RegistriesConf, text: str) -> list:
    """The fully qualified references to try for ``text``, in order."""
    if not is_short_name(text):
        return [refs.parse(text)]
    name, sep, digest = text.partition("@")
    base, tag = name, ""
    colon = name.rfind(":")
    if colon > 0:
        base, tag = name[:colon], name[colon:]
    if base in conf.aliases:
        return [refs.parse(conf.aliases[base] + tag + sep + digest)]
    if not conf.search:
        raise PboxError(f"short name {text!r} and no unqualified-search-registries in "
                        f"{conf.path}")
    return [refs.parse(f"{reg}/{text}") for reg in conf.search]


@dataclass
class Source:
    """Where to fetch a reference from: a registry name, the repository there, insecure."""

    registry: str
    repository: str
    insecure: bool = False
    mirror: bool = False


def check_blocked(conf: RegistriesConf, ref: refs.Reference) -> RegistryEntry | None:
    entry = conf.find(ref.name)
    if entry is not None and entry.blocked:
        raise PboxError(f"registry {ref.registry} is blocked in registries.conf")
    return entry


def sources(conf: RegistriesConf, ref: refs.Reference, *, pull: bool = True) -> list:
    """The places to try for ``ref``: its mirrors in order (pull only), then the registry."""
    entry = check_blocked(conf, ref)
    if entry is None:
        return [Source(ref.registry, ref.repository)]
    out = []
    if pull:
        for m in entry.mirrors:
            out.append(_source(entry.rewrite(ref.name, m.location), m.insecure, True))
    out.append(_source(entry.rewrite(ref.name, entry.location), entry.insecure, False))
    return out


def _source(name: str, insecure: bool, mirror: bool) -> Source:
    registry, _, repository = name.partition("/")
    return Source(registry, repository, insecure, mirror)


def insecure_for(conf: RegistriesConf | None, registry: str) -> bool:
    if conf is None:
        return False
    entry = conf.find(refs.normalize_registry(registry))
    return bool(entry and entry.insecure)


# -- search ------------------------------------------------------------------------------------

DOCKER_HUB_SEARCH = "https://index.docker.io"
SEARCH_SCOPES = ["registry:catalog:*"]


def search(config, term: str, *, limit: int = 25, tls_verify: bool | None = None) -> list:
    """Rows (Index, Name, Description, Stars, Official, Automated) for ``term``.

    ``HOST/TERM`` searches that registry; a bare term searches the
    unqualified-search-registries (docker.io without a registries.conf).  A registry is
    asked for its catalog (``/v2/_catalog``, repositories containing the term) and, when it
    has none, for docker's ``/v1/search`` (Docker Hub has only that one).
    """
    conf = load(config.config_dir)
    if is_short_name(term):
        hosts, query = (conf.search if conf else [refs.DEFAULT_REGISTRY]), term
    else:
        host, _, query = term.partition("/")
        hosts = [refs.normalize_registry(host)]
    rows: list = []
    for host in hosts:
        if conf is not None:
            entry = conf.find(host)
            if entry is not None and entry.blocked:
                raise PboxError(f"registry {host} is blocked in registries.conf")
        rows.extend(_search_one(config, conf, host, query, limit, tls_verify))
    return rows


def _row(host: str, name: str, description: str = "", stars=0, official=False,
         automated=False) -> dict:
    return {"Index": host, "Name": f"{host}/{name}", "Description": description or "",
            "Stars": stars, "Official": "[OK]" if official else "",
            "Automated": "[OK]" if automated else ""}


def _search_one(config, conf, host: str, query: str, limit: int, tls_verify) -> list:
    from pbox.errors import RegistryError
    from pbox.oci.registry import client_for

    if host == refs.DEFAULT_REGISTRY:
        return _hub_search(host, query, limit)
    client = client_for(host, config_dir=config.config_dir,
                        tls_verify=tls_verify is not False and not insecure_for(conf, host))
    with client:
        try:
            repos = client.catalog()
        except RegistryError as e:
            if e.status not in (401, 403, 404, 405):
                raise
            log_status = e.status
        else:
            hits = [r for r in repos if query.lower() in r.lower()]
            return [_row(host, r) for r in hits[:limit] if limit > 0]
        resp = client._request("GET", f"/v1/search?q={_quote(query)}&n={limit}", scopes=[],
                               what=f"{host} search")
        try:
            if resp.status_code != 200:
                raise PboxError(f"registry {host} supports neither /v2/_catalog (HTTP "
                                f"{log_status}) nor /v1/search (HTTP {resp.status_code})")
            return _v1_rows(host, resp.json(), limit)
        finally:
            resp.close()


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def _v1_rows(host: str, obj, limit: int) -> list:
    results = obj.get("results") if isinstance(obj, dict) else None
    if not isinstance(results, list):
        raise PboxError(f"registry {host}: unexpected /v1/search answer")
    out = []
    for r in results[:limit]:
        if isinstance(r, dict) and r.get("name"):
            out.append(_row(host, str(r["name"]), str(r.get("description") or ""),
                            r.get("star_count") or 0, bool(r.get("is_official")),
                            bool(r.get("is_automated"))))
    return out


def _hub_search(host: str, query: str, limit: int) -> list:
    import requests

    url = f"{DOCKER_HUB_SEARCH}/v1/search?q={_quote(query)}&n={limit}"
    try:
        resp = requests.get(url, timeout=30)
    except requests.exceptions.RequestException as e:
        raise PboxError(f"cannot search {host}: {e}")
    with resp:
        if resp.status_code != 200:
            raise PboxError(f"cannot search {host}: HTTP {resp.status_code}")
        return _v1_rows(host, resp.json(), limit)
