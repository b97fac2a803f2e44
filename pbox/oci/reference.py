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

import re

from pbox.errors import InvalidReference
from pbox.record import record, replace

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
# docker.io is a name for humans; the registry API of Docker Hub answers elsewhere.
DOCKER_HUB_API = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = r"(?:" + _DOMAIN_NAME + "|" + _IPV6 + r")(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = r"(?:" + _DOMAIN + r"/)?" + _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"

_REFERENCE_RE = re.compile(
    r"^(?P<name>" + _NAME + r")(?::(?P<tag>" + _TAG + r"))?(?:@(?P<digest>" + _DIGEST + r"))?$"
)
_DOMAIN_RE = re.compile(r"^" + _DOMAIN + r"$")
_PATH_RE = re.compile(r"^" + _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*$")
_TAG_RE = re.compile(r"^" + _TAG + r"$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")

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
        if not _TAG_RE.match(tag):
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
    if _IDENTIFIER_RE.match(s):
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
    m = _REFERENCE_RE.match(domain + "/" + remainder)
    if m is None:
        raise InvalidReference(_INVALID)
    name = m.group("name")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"{_INVALID}: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    repository = name[len(domain) + 1 :]
    tag = m.group("tag")
    digest = m.group("digest")
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
    return bool(_TAG_RE.match(tag))


def is_valid_registry(domain: str) -> bool:
    return bool(_DOMAIN_RE.match(domain))


def is_valid_repository(path: str) -> bool:
    return bool(_PATH_RE.match(path))


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
