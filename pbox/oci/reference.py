"""Image references, normalised exactly as docker does.

The grammar is the one of distribution/reference::

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [domain "/"] path-component ["/" path-component]*
    domain      := host [":" port]            host: DNS name or [IPv6]
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*   separator: . _ __ -+
    tag         := [\\w][\\w.-]{0,127}
    digest      := algorithm ":" hex{32,}

Normalisation ("familiar" names to full ones): the first path component is a registry
only if it contains a ``.`` or a ``:`` or is ``localhost``; otherwise the registry is
``docker.io``.  ``index.docker.io`` is the old name of
``docker.io``, and a one-component name on ``docker.io`` lives under ``library/``.
``busybox`` is therefore ``docker.io/library/busybox:latest``.
"""

from __future__ import annotations

from pbox.errors import InvalidReference
from pbox.record import record, replace

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
# docker.io is a name for humans; the registry API of Docker Hub answers elsewhere.
DOCKER_HUB_API = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# The grammar is checked by hand rather than with ``re``: compiling these patterns (and
# importing ``re``) cost ~5 ms of every pull, push and run.  tests/unit/test_reference.py
# compares this code with the grammar's regular expressions on random strings.
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALNUM = _LOWER_ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DNS = _ALNUM | {"-"}
_WORD = _ALNUM | {"_"}  # \w of Go's regexp: ASCII only
_TAG_CHARS = _WORD | {".", "-"}
_LOWER_HEX = frozenset("0123456789abcdef")
_HEX = _LOWER_HEX | frozenset("ABCDEF")
_DIGITS = frozenset("0123456789")


def _is_path_component(c: str) -> bool:
    """``[a-z0-9]+ (separator [a-z0-9]+)*`` with separators ``.``, ``_``, ``__``, ``-+``."""
    if not c or c[0] not in _LOWER_ALNUM or c[-1] not in _LOWER_ALNUM:
        return False
    i, n = 0, len(c)
    while i < n:
        ch = c[i]
        if ch in _LOWER_ALNUM:
            i += 1
            continue
        if ch == "-":
            while c[i] == "-":
                i += 1
        elif ch == "_":
            i += 2 if c[i + 1] == "_" else 1
        elif ch == ".":
            i += 1
        else:
            return False
        if c[i] not in _LOWER_ALNUM:  # a separator sits between alphanumerics
            return False
    return True


def _is_path(p: str) -> bool:
    return all(_is_path_component(c) for c in p.split("/"))


def _is_domain(d: str) -> bool:
    """``(DNS name | [IPv6]) [:port]``."""
    if d.startswith("["):
        end = d.find("]")
        if end < 2 or not set(d[1:end]) <= (_HEX | {":"}):
            return False
        rest = d[end + 1 :]
        return not rest or (rest[0] == ":" and len(rest) > 1 and set(rest[1:]) <= _DIGITS)
    host, colon, port = d.partition(":")
    if colon and (not port or not set(port) <= _DIGITS):
        return False
    for label in host.split("."):
        if not label or label[0] not in _ALNUM or label[-1] not in _ALNUM or \
                not set(label) <= _DNS:
            return False
    return True


def _is_name(name: str) -> bool:
    """``[domain "/"] path``: either reading of the first component will do."""
    if _is_path(name):
        return True
    domain, slash, path = name.partition("/")
    return bool(slash) and _is_domain(domain) and _is_path(path)


def _is_tag(tag: str) -> bool:
    return 0 < len(tag) <= 128 and tag[0] in _WORD and set(tag) <= _TAG_CHARS


def _is_digest(d: str) -> bool:
    """``algorithm ":" hex{32,}``, algorithm components joined by ``-_+.``."""
    algorithm, colon, hexpart = d.partition(":")
    if not colon or len(hexpart) < 32 or not set(hexpart) <= _HEX:
        return False
    component = ""
    for ch in algorithm + "+":
        if ch in "-_+.":
            if not component or component[0] not in _ALNUM or component[0] in _DIGITS:
                return False
            component = ""
        elif ch in _ALNUM:
            component += ch
        else:
            return False
    return True


def _split(s: str) -> tuple[str, str | None, str | None] | None:
    """``name [":" tag] ["@" digest]`` -> (name, tag, digest), or None when malformed."""
    rest, at, digest = s.partition("@")
    if at and not _is_digest(digest):
        return None
    tag = None
    colon = rest.rfind(":")
    if colon > rest.find("/"):  # a colon before the first slash is the registry's port
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _is_tag(tag):
            return None
    if not _is_name(rest):
        return None
    return rest, tag, digest if at else None


_INVALID = "invalid reference format"


@record(frozen=True)
class Reference:
    """A fully normalised image reference; immutable, compared and hashed by value.

    ``registry`` is the domain as the user knows it (``docker.io``, ``127.0.0.1:5000``),
    ``repository`` the path in it (``library/busybox``), ``tag`` and ``digest`` may each
    be ``None`` (``parse`` adds ``latest`` when both are missing).
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def _with(self, **changes) -> Reference:
        return replace(self, **changes)

    # -- names ------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``docker.io/library/busybox``: registry and repository, no tag."""
        return f"{self.registry}/{self.repository}"

    def string(self) -> str:
        """The full form: ``docker.io/library/busybox:latest[@sha256:...]``."""
        return self.name + self._suffix()

    def familiar_name(self) -> str:
        """The name as docker prints it: ``busybox``, ``user/app``, ``127.0.0.1:5000/x``."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        repo = self.repository
        if repo.startswith(OFFICIAL_PREFIX) and "/" not in repo[len(OFFICIAL_PREFIX) :]:
            return repo[len(OFFICIAL_PREFIX) :]
        return repo

    def familiar(self) -> str:
        """The short form with tag/digest: ``busybox:latest``, ``127.0.0.1:5000/x:1``."""
        return self.familiar_name() + self._suffix()

    def _suffix(self) -> str:
        s = ""
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s

    def __str__(self) -> str:
        return self.string()

    # -- the registry API --------------------------------------------------------
    @property
    def api_registry(self) -> str:
        """The host (and port) the registry API answers on."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    # -- derived references ------------------------------------------------------
    def with_tag(self, tag: str) -> Reference:
        """The same repository with ``tag`` and no digest."""
        if not _is_tag(tag):
            raise InvalidReference(f"{_INVALID}: invalid tag {tag!r}")
        return self._with(tag=tag, digest=None)

    def with_digest(self, digest: str, *, keep_tag: bool = False) -> Reference:
        """The same repository pinned to ``digest`` (``name@digest``)."""
        from pbox.oci.digest import parse as parse_digest

        parse_digest(digest)
        return self._with(tag=self.tag if keep_tag else None, digest=digest)

    def without_tag_or_digest(self) -> Reference:
        return self._with(tag=None, digest=None)


def split_domain(name: str) -> tuple[str, str]:
    """Split a familiar name (tag/digest may follow) into (registry, remainder)."""
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    # (Newer distribution/reference also takes an upper-case first component for a
    # registry; docker's long-standing rule, kept here, makes "Foo/bar" a lower-case error
    # instead of a lookup of a host named "Foo".)
    if i < 0 or ("." not in first and ":" not in first and first != "localhost"):
        domain, remainder = DEFAULT_REGISTRY, name
    else:
        domain, remainder = first, name[i + 1 :]
    if domain == LEGACY_DEFAULT_REGISTRY:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(s: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse a reference as ``docker pull`` does.

    ``default_tag`` is added when the reference has neither a tag nor a digest; pass
    ``None`` to keep a bare name (for filters such as ``images busybox``).
    Raises ``InvalidReference`` with docker's wording.
    """
    if not isinstance(s, str) or s == "":
        raise InvalidReference(_INVALID)
    if len(s) == 64 and set(s) <= _LOWER_HEX:
        raise InvalidReference(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = split_domain(s)
    # The lower-case rule applies to the repository path only; the tag may be upper case.
    path_part = remainder.split("@", 1)[0]
    colon = path_part.find(":")
    if colon >= 0:
        path_part = path_part[:colon]
    if path_part.lower() != path_part:
        raise InvalidReference(f"{_INVALID}: repository name ({path_part}) must be lowercase")
    parts = _split(domain + "/" + remainder)
    if parts is None:
        raise InvalidReference(_INVALID)
    name, tag, digest = parts
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"{_INVALID}: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    repository = name[len(domain) + 1 :]
    if digest is not None:
        from pbox.oci.digest import parse as parse_digest

        parse_digest(digest)
    if tag is None and digest is None and default_tag is not None:
        tag = default_tag
    return Reference(registry=domain, repository=repository, tag=tag, digest=digest)


def parse_name(s: str) -> Reference:
    """Parse a repository name that must carry neither tag nor digest (``push`` targets...)."""
    ref = parse(s, default_tag=None)
    if ref.tag is not None or ref.digest is not None:
        raise InvalidReference(
            f"{_INVALID}: {s!r} is not a repository name (it has a tag or digest)"
        )
    return ref


def is_valid_tag(tag: str) -> bool:
    return _is_tag(tag)


def is_valid_registry(domain: str) -> bool:
    return _is_domain(domain)


def is_valid_repository(path: str) -> bool:
    return _is_path(path)


def registry_host(registry: str) -> str:
    """The host part of a registry name, without port or IPv6 brackets."""
    if registry.startswith("["):
        end = registry.find("]")
        return registry[1:end] if end > 0 else registry
    return registry.rsplit(":", 1)[0] if ":" in registry else registry


def normalize_registry(registry: str) -> str:
    """``index.docker.io``/``registry-1.docker.io`` -> ``docker.io``; others unchanged."""
    r = registry.strip().rstrip("/")
    for scheme in ("https://", "http://"):
        if r.startswith(scheme):
            r = r[len(scheme) :]
    r = r.split("/", 1)[0]
    if r in (LEGACY_DEFAULT_REGISTRY, DOCKER_HUB_API):
        return DEFAULT_REGISTRY
    return r
