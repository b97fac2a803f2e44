"""Manifests, indexes (manifest lists) and image configs: parsed into small record classes.

Each parsed object keeps the exact bytes it came from in ``raw``: a manifest's digest
is the digest of those bytes, never of a re-serialisation.  Docker schema 2 and OCI
are read alike; schema 1 is refused.  No I/O here.
"""

from __future__ import annotations

from pbox import jsonio as json
from pbox.errors import InvalidReference, UnsupportedFormat
from pbox.lazylog import get_logger
from pbox.oci import digest as _digest
from pbox.oci import mediatypes as mt
from pbox.record import factory, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbox.oci.platform import Platform


def _platform(d) -> Platform | None:
    """An index entry's platform (the module is imported only when there is one)."""
    if not isinstance(d, dict):
        return None
    from pbox.oci.platform import Platform

    return Platform.from_json(d)

log = get_logger(__name__)

SCHEMA1_MESSAGE = (
    "schema 1 manifests are not supported; the image was pushed by a very old client: "
    "pull it with a current docker/podman and push it again (schema 2 or OCI)"
)

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from typing import Any


def dumps(obj: Any) -> bytes:
    """Compact, deterministic JSON bytes for manifests and configs pbox writes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _loads(raw: bytes | str, what: str) -> dict:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise UnsupportedFormat(f"invalid {what}: not JSON ({e})")
    if not isinstance(obj, dict):
        raise UnsupportedFormat(f"invalid {what}: expected a JSON object")
    return obj


@record(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest, size (+ platform in an index)."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict = factory(dict)  # not compared
    platform: Platform | None = None
    artifact_type: str = ""

    def _key(self) -> tuple:
        return (self.media_type, self.digest, self.size, self.urls, self.platform,
                self.artifact_type)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_json(self) -> dict:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d

    @classmethod
    def from_json(cls, d: Any, *, what: str = "descriptor") -> Descriptor:
        if not isinstance(d, dict):
            raise UnsupportedFormat(f"invalid {what}: expected a JSON object")
        dg = d.get("digest")
        try:
            _digest.validate(dg)
        except InvalidReference as e:
            raise UnsupportedFormat(f"invalid {what}: {e}")
        size = d.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UnsupportedFormat(f"invalid {what}: bad size {size!r}")
        media_type = d.get("mediaType") or ""
        if not isinstance(media_type, str):
            raise UnsupportedFormat(f"invalid {what}: bad mediaType {media_type!r}")
        urls = d.get("urls") or ()
        ann = d.get("annotations") or {}
        return cls(
            media_type=media_type,
            digest=dg,
            size=size,
            urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
            annotations=dict(ann) if isinstance(ann, dict) else {},
            platform=_platform(d.get("platform")),
            artifact_type=str(d.get("artifactType") or ""),
        )


@record
class Manifest:
    """One image: a config and its layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    raw: bytes
    annotations: dict = factory(dict)
    subject: Descriptor | None = None
    artifact_type: str = ""

    @property
    def digest(self) -> str:
        return _digest.compute(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)

    def descriptor(self, platform: Platform | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, platform=platform)

    @property
    def is_oci(self) -> bool:
        return self.media_type == mt.OCI_MANIFEST


@record
class Index:
    """A list of manifests, one per platform (docker's "manifest list")."""

    media_type: str
    manifests: list[Descriptor]
    raw: bytes
    annotations: dict = factory(dict)
    subject: Descriptor | None = None

    @property
    def digest(self) -> str:
        return _digest.compute(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


ManifestOrIndex = "Manifest | Index"  # for annotations


# -- media type detection ------------------------------------------------------------------


def _refuse_schema1() -> None:
    raise UnsupportedFormat(SCHEMA1_MESSAGE)


def detect_media_type(raw: bytes | dict, content_type: str | None = None) -> str:
    """The manifest media type of ``raw``.

    The ``mediaType`` field wins (the content says what it is), then the Content-Type
    the registry sent, then the shape of the JSON (early OCI manifests have no
    ``mediaType``; some registries answer ``application/json``).
    """
    obj = raw if isinstance(raw, dict) else _loads(raw, "manifest")
    field_type = mt.base(obj.get("mediaType")) if isinstance(obj.get("mediaType"), str) else ""
    header_type = mt.base(content_type)
    if obj.get("schemaVersion") == 1 or mt.is_schema1(field_type) or mt.is_schema1(header_type):
        _refuse_schema1()
    if field_type in mt.MANIFESTS:
        if header_type in mt.MANIFESTS and header_type != field_type:
            log.debug(
                "Content-Type %s differs from mediaType %s; using the latter",
                header_type,
                field_type,
            )
        return field_type
    if field_type:
        raise UnsupportedFormat(f"unsupported manifest media type {field_type}")
    if header_type in mt.MANIFESTS:
        return header_type
    # The shape: an index has "manifests", an image manifest "config" and "layers".
    if isinstance(obj.get("manifests"), list):
        return mt.OCI_INDEX
    config = obj.get("config")
    if isinstance(config, dict):
        if mt.base(config.get("mediaType")) == mt.DOCKER_CONFIG:
            return mt.DOCKER_MANIFEST
        return mt.OCI_MANIFEST
    raise UnsupportedFormat(
        f"unsupported manifest (Content-Type {content_type or 'none'}, no mediaType field)"
    )


def _check_schema(obj: dict, what: str) -> None:
    sv = obj.get("schemaVersion")
    if sv == 1:
        _refuse_schema1()
    if sv != 2:
        raise UnsupportedFormat(f"invalid {what}: unsupported schemaVersion {sv!r}")


def _subject(obj: dict, what: str) -> Descriptor | None:
    if obj.get("subject") is None:
        return None
    return Descriptor.from_json(obj["subject"], what=f"{what} subject")


def parse(raw: bytes, content_type: str | None = None) -> ManifestOrIndex:
    """Parse an image manifest or an index; ``UnsupportedFormat`` for anything else."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    obj = _loads(raw, "manifest")
    media_type = detect_media_type(obj, content_type)
    if mt.is_index(media_type):
        return _parse_index(raw, obj, media_type)
    return _parse_manifest(raw, obj, media_type)


def parse_manifest(raw: bytes, content_type: str | None = None) -> Manifest:
    m = parse(raw, content_type)
    if not isinstance(m, Manifest):
        raise UnsupportedFormat(f"expected an image manifest, got {m.media_type}")
    return m


def parse_index(raw: bytes, content_type: str | None = None) -> Index:
    m = parse(raw, content_type)
    if not isinstance(m, Index):
        raise UnsupportedFormat(f"expected an image index, got {m.media_type}")
    return m


def _parse_manifest(raw: bytes, obj: dict, media_type: str) -> Manifest:
    what = "image manifest"
    _check_schema(obj, what)
    if "config" not in obj:
        raise UnsupportedFormat(f"invalid {what}: no config")
    config = Descriptor.from_json(obj["config"], what=f"{what} config")
    return Manifest(
        media_type=media_type,
        config=config,
        layers=_descriptors(obj, "layers", what, "layer", optional=True),
        raw=raw,
        annotations=_annotations(obj),
        subject=_subject(obj, what),
        artifact_type=str(obj.get("artifactType") or ""),
    )


def _parse_index(raw: bytes, obj: dict, media_type: str) -> Index:
    what = "image index"
    _check_schema(obj, what)
    return Index(
        media_type=media_type,
        manifests=_descriptors(obj, "manifests", what, "entry"),
        raw=raw,
        annotations=_annotations(obj),
        subject=_subject(obj, what),
    )


def _descriptors(obj: dict, key: str, what: str, item: str, *,
                 optional: bool = False) -> list[Descriptor]:
    """The descriptors of list ``key`` ("layers", "manifests"), each checked."""
    entries = obj.get(key)
    if entries is None and optional:
        entries = []
    if not isinstance(entries, list):
        raise UnsupportedFormat(f"invalid {what}: {key} is not a list")
    return [Descriptor.from_json(d, what=f"{what} {item} {i + 1}") for i, d in enumerate(entries)]


def _annotations(obj: dict) -> dict:
    ann = obj.get("annotations")
    return dict(ann) if isinstance(ann, dict) else {}


# -- building (build, commit, push) ----------------------------------------------------------


def build_manifest(
    config: Descriptor,
    layers: list[Descriptor],
    *,
    media_type: str = mt.OCI_MANIFEST,
    annotations: dict | None = None,
) -> Manifest:
    """A new image manifest with deterministic bytes."""
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    if annotations:
        obj["annotations"] = dict(annotations)
    return _parse_manifest(dumps(obj), obj, media_type)


def build_index(
    manifests: list[Descriptor],
    *,
    media_type: str = mt.OCI_INDEX,
    annotations: dict | None = None,
) -> Index:
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [d.to_json() for d in manifests],
    }
    if annotations:
        obj["annotations"] = dict(annotations)
    return _parse_index(dumps(obj), obj, media_type)


# -- image config ----------------------------------------------------------------------------


@record
class ImageConfig:
    """An image's config blob.  ``data`` is the whole JSON; the properties read it.

    ``digest`` is the image id docker shows.
    """

    raw: bytes
    data: dict

    @property
    def digest(self) -> str:
        return _digest.compute(self.raw)

    @property
    def id(self) -> str:
        return self.digest

    @property
    def architecture(self) -> str:
        return str(self.data.get("architecture") or "")

    @property
    def os(self) -> str:
        return str(self.data.get("os") or "")

    @property
    def variant(self) -> str:
        return str(self.data.get("variant") or "")

    @property
    def platform(self) -> Platform:
        from pbox.oci.platform import Platform

        return Platform(
            os=self.os,
            architecture=self.architecture,
            variant=self.variant,
            os_version=str(self.data.get("os.version") or ""),
        )

    @property
    def created(self) -> str | None:
        c = self.data.get("created")
        return c if isinstance(c, str) else None

    @property
    def author(self) -> str:
        return str(self.data.get("author") or "")

    @property
    def config(self) -> dict:
        """The run-time defaults: Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts..."""
        c = self.data.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    @property
    def cmd(self) -> list[str] | None:
        return self.config.get("Cmd")

    @property
    def entrypoint(self) -> list[str] | None:
        return self.config.get("Entrypoint")

    @property
    def working_dir(self) -> str:
        return str(self.config.get("WorkingDir") or "")

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "")

    @property
    def labels(self) -> dict:
        return dict(self.config.get("Labels") or {})

    @property
    def diff_ids(self) -> list[str]:
        rootfs = self.data.get("rootfs") or {}
        return list(rootfs.get("diff_ids") or [])

    @property
    def history(self) -> list[dict]:
        h = self.data.get("history")
        return list(h) if isinstance(h, list) else []


def parse_config(raw: bytes) -> ImageConfig:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    obj = _loads(raw, "image config")
    rootfs = obj.get("rootfs")
    if rootfs is not None:
        if not isinstance(rootfs, dict):
            raise UnsupportedFormat("invalid image config: rootfs is not an object")
        diff_ids = rootfs.get("diff_ids") or []
        if not isinstance(diff_ids, list):
            raise UnsupportedFormat("invalid image config: rootfs.diff_ids is not a list")
        for i, d in enumerate(diff_ids):
            try:
                _digest.validate(d)
            except InvalidReference as e:
                raise UnsupportedFormat(f"invalid image config: diff_id {i + 1}: {e}")
    if obj.get("config") is not None and not isinstance(obj.get("config"), dict):
        raise UnsupportedFormat("invalid image config: config is not an object")
    return ImageConfig(raw=raw, data=obj)


def build_config(data: dict) -> ImageConfig:
    """An image config with deterministic bytes from a dict."""
    return parse_config(dumps(data))
