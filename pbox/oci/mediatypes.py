"""Media types of Docker schema 2 and OCI images, and what each one means.

Docker's and OCI's names are two spellings of the same few things; the helpers below
answer the questions the rest of pbox asks ("is this a list of manifests?", "how is this
layer compressed?") for both.
"""

from __future__ import annotations

# -- Docker schema 2 -----------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_PLUGIN_CONFIG = "application/vnd.docker.plugin.v1+json"

# -- Docker schema 1 (refused) -----------------------------------------------------------
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# -- OCI image-spec ----------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDISTRIBUTABLE_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"

SINGLE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFESTS = SINGLE_MANIFESTS | INDEXES
SCHEMA1 = frozenset({DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED})
CONFIGS = frozenset({DOCKER_CONFIG, OCI_CONFIG})

# Media type -> compression algorithm ("gzip", "zstd" or None for a plain tar).
LAYER_COMPRESSION: dict[str, str | None] = {
    DOCKER_LAYER: None,
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_LAYER: None,
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_NONDISTRIBUTABLE_LAYER: None,
    OCI_NONDISTRIBUTABLE_LAYER_GZIP: "gzip",
    OCI_NONDISTRIBUTABLE_LAYER_ZSTD: "zstd",
}
LAYERS = frozenset(LAYER_COMPRESSION)
FOREIGN_LAYERS = frozenset(
    {
        DOCKER_FOREIGN_LAYER_GZIP,
        OCI_NONDISTRIBUTABLE_LAYER,
        OCI_NONDISTRIBUTABLE_LAYER_GZIP,
        OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
    }
)

# What pbox asks a registry for, best first: every manifest kind it can read.
# Schema 1 is deliberately absent so that registries convert or answer with schema 2.
ACCEPT_MANIFESTS = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)


def base(media_type: str | None) -> str:
    """The media type without parameters (``; charset=utf-8``) and in lower case."""
    if not media_type:
        return ""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str | None) -> bool:
    return base(media_type) in INDEXES


def is_manifest(media_type: str | None) -> bool:
    """A single-image manifest (not an index)."""
    return base(media_type) in SINGLE_MANIFESTS


def is_schema1(media_type: str | None) -> bool:
    return base(media_type) in SCHEMA1


def is_config(media_type: str | None) -> bool:
    return base(media_type) in CONFIGS


def is_layer(media_type: str | None) -> bool:
    mt = base(media_type)
    return mt in LAYERS or mt.endswith("+encrypted")


def is_foreign_layer(media_type: str | None) -> bool:
    return base(media_type) in FOREIGN_LAYERS


def is_encrypted(media_type: str | None) -> bool:
    return base(media_type).endswith("+encrypted")


def layer_compression(media_type: str | None) -> str | None:
    """``"gzip"``, ``"zstd"`` or ``None``; ``KeyError`` for a type that is not a known layer."""
    return LAYER_COMPRESSION[base(media_type)]


def is_oci(media_type: str | None) -> bool:
    return base(media_type).startswith("application/vnd.oci.")


def layer_media_type(compression: str | None, *, oci: bool = True) -> str:
    """The layer media type for a compression in the OCI or the Docker family."""
    if oci:
        return {None: OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]
    return {None: DOCKER_LAYER, "gzip": DOCKER_LAYER_GZIP, "zstd": DOCKER_LAYER_ZSTD}[compression]


def config_media_type(*, oci: bool = True) -> str:
    return OCI_CONFIG if oci else DOCKER_CONFIG


def manifest_media_type(*, oci: bool = True) -> str:
    return OCI_MANIFEST if oci else DOCKER_MANIFEST


def index_media_type(*, oci: bool = True) -> str:
    return OCI_INDEX if oci else DOCKER_MANIFEST_LIST
