from __future__ import annotations

import hashlib
import json
import os

import pytest

from pbox.errors import UnsupportedFormat
from pbox.oci import manifest as m
from pbox.oci import mediatypes as mt
from pbox.oci.manifest import Descriptor, Index, Manifest
from pbox.oci.platform import Platform

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name: str) -> bytes:
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def sha(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_docker_manifest_v2():
    raw = fixture("docker_manifest_v2.json")
    man = m.parse(raw, "application/vnd.docker.distribution.manifest.v2+json")
    assert isinstance(man, Manifest)
    assert man.media_type == mt.DOCKER_MANIFEST
    assert man.config.media_type == mt.DOCKER_CONFIG
    assert man.config.size == 1457
    assert [layer.media_type for layer in man.layers] == [mt.DOCKER_LAYER_GZIP]
    assert man.layers[0].size == 2152262
    # the digest is of the exact bytes received, whitespace and all
    assert man.raw == raw
    assert man.digest == sha(raw)
    assert man.size == len(raw)
    assert not man.is_oci


def test_docker_manifest_list():
    raw = fixture("docker_manifest_list.json")
    idx = m.parse(raw)
    assert isinstance(idx, Index)
    assert idx.media_type == mt.DOCKER_MANIFEST_LIST
    assert len(idx.manifests) == 8
    assert [str(d.platform) for d in idx.manifests] == [
        "linux/amd64",
        "linux/arm/v5",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/arm64/v8",
        "linux/386",
        "linux/ppc64le",
        "linux/s390x",
    ]
    assert all(d.media_type == mt.DOCKER_MANIFEST for d in idx.manifests)
    assert idx.digest == sha(raw)


def test_oci_manifest():
    raw = fixture("oci_manifest.json")
    man = m.parse_manifest(raw, "application/vnd.oci.image.manifest.v1+json")
    assert man.media_type == mt.OCI_MANIFEST and man.is_oci
    assert man.config.media_type == mt.OCI_CONFIG
    assert [mt.layer_compression(layer.media_type) for layer in man.layers] == [
        "gzip",
        "zstd",
        None,
    ]
    assert man.annotations["org.opencontainers.image.version"] == "3.19.1"
    assert man.descriptor().digest == sha(raw)
    assert man.descriptor().size == len(raw)


def test_oci_index_with_attestations():
    raw = fixture("oci_index.json")
    idx = m.parse_index(raw)
    assert idx.media_type == mt.OCI_INDEX
    assert len(idx.manifests) == 4
    att = idx.manifests[2]
    assert att.annotations["vnd.docker.reference.type"] == "attestation-manifest"
    assert att.platform == Platform("unknown", "unknown")
    assert idx.annotations == {"org.opencontainers.image.ref.name": "1.0"}


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/octet-stream", "text/plain; charset=utf-8"],
)
def test_oci_manifest_without_media_type_field(content_type):
    man = m.parse(fixture("oci_manifest_no_mediatype.json"), content_type)
    assert isinstance(man, Manifest)
    assert man.media_type == mt.OCI_MANIFEST


def test_oci_index_without_media_type_field():
    idx = m.parse(fixture("oci_index_no_mediatype.json"), "application/json")
    assert isinstance(idx, Index) and idx.media_type == mt.OCI_INDEX


def test_content_type_used_when_field_missing():
    raw = fixture("oci_manifest_no_mediatype.json")
    assert m.detect_media_type(raw, mt.DOCKER_MANIFEST + "; charset=utf-8") == mt.DOCKER_MANIFEST


def test_field_wins_over_content_type():
    raw = fixture("docker_manifest_v2.json")
    assert (
        m.detect_media_type(raw, "application/vnd.oci.image.manifest.v1+json") == mt.DOCKER_MANIFEST
    )


def test_foreign_layers():
    man = m.parse_manifest(fixture("docker_manifest_foreign.json"))
    base, top = man.layers
    assert mt.is_foreign_layer(base.media_type) and not mt.is_foreign_layer(top.media_type)
    assert base.urls and base.urls[0].endswith(base.digest)


@pytest.mark.parametrize(
    "name, content_type",
    [
        ("schema1_signed.json", "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        ("schema1_signed.json", None),
        ("schema1_unsigned.json", "application/vnd.docker.distribution.manifest.v1+json"),
        ("schema1_unsigned.json", "application/json"),
        ("docker_manifest_v2.json", "application/vnd.docker.distribution.manifest.v1+prettyjws"),
    ],
)
def test_schema1_refused(name, content_type):
    with pytest.raises(UnsupportedFormat) as e:
        m.parse(fixture(name), content_type)
    assert str(e.value).startswith("schema 1 manifests are not supported; ")


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
            "no config",
        ),
        (
            b'{"schemaVersion": 3, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
            "schemaVersion",
        ),
        (b'{"schemaVersion": 2, "mediaType": "application/x-something"}', "unsupported manifest"),
        (b'{"hello": "world"}', "unsupported manifest"),
        (b'{"schemaVersion": 2, "config": {"digest": "sha256:abc", "size": 1}}', "digest"),
        (
            b'{"schemaVersion": 2, "config": {"digest": "sha256:' + b"a" * 64 + b'", "size": -1}}',
            "size",
        ),
        (
            b'{"schemaVersion": 2, "config": {"digest": "sha256:' + b"a" * 64 + b'", "size": 1},'
            b' "layers": {}}',
            "not a list",
        ),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",'
            b' "manifests": [{"size": 1}]}',
            "entry 1",
        ),
    ],
)
def test_invalid_manifests(raw, words):
    with pytest.raises(UnsupportedFormat) as e:
        m.parse(raw)
    assert words in str(e.value)


def test_parse_manifest_refuses_an_index_and_back():
    with pytest.raises(UnsupportedFormat):
        m.parse_manifest(fixture("oci_index.json"))
    with pytest.raises(UnsupportedFormat):
        m.parse_index(fixture("oci_manifest.json"))


def test_docker_config():
    raw = fixture("docker_config.json")
    cfg = m.parse_config(raw)
    assert cfg.id == sha(raw)
    assert cfg.platform == Platform("linux", "amd64")
    assert cfg.cmd == ["sh"] and cfg.entrypoint is None
    assert cfg.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert cfg.labels == {}  # "Labels": null in the JSON
    assert len(cfg.diff_ids) == 1 and len(cfg.history) == 2
    assert cfg.created == "2023-07-18T23:19:33.655005962Z"


def test_oci_config():
    cfg = m.parse_config(fixture("oci_config.json"))
    assert str(cfg.platform) == "linux/arm64/v8"
    assert cfg.user == "1000:1000" and cfg.working_dir == "/srv"
    assert cfg.entrypoint == ["/app"] and cfg.cmd == ["--serve"]
    assert cfg.labels == {"l": "v"}
    assert cfg.author == "someone"
    assert len(cfg.diff_ids) == 2


@pytest.mark.parametrize(
    "raw",
    [b"{", b'"x"', b'{"rootfs": []}', b'{"rootfs": {"diff_ids": ["nope"]}}', b'{"config": [1]}'],
)
def test_invalid_configs(raw):
    with pytest.raises(UnsupportedFormat):
        m.parse_config(raw)


D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def test_build_manifest_is_golden():
    man = m.build_manifest(
        Descriptor(mt.OCI_CONFIG, D1, 10),
        [Descriptor(mt.OCI_LAYER_GZIP, D2, 20), Descriptor(mt.OCI_LAYER_ZSTD, D3, 30)],
        annotations={"a": "b"},
    )
    assert man.raw == fixture("built_manifest.json").rstrip(b"\n")
    again = m.parse_manifest(man.raw)
    assert again.layers == man.layers and again.config == man.config


def test_build_index_is_golden():
    idx = m.build_index(
        [
            Descriptor(mt.OCI_MANIFEST, D1, 100, platform=Platform("linux", "arm64", "v8")),
            Descriptor(mt.OCI_MANIFEST, D2, 200, platform=Platform("linux", "amd64")),
        ],
    )
    assert idx.raw == fixture("built_index.json").rstrip(b"\n")
    assert m.parse_index(idx.raw).manifests == idx.manifests


def test_build_config_round_trip():
    data = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [D1]},
    }
    cfg = m.build_config(data)
    assert json.loads(cfg.raw) == data
    assert cfg.raw == m.build_config(dict(data)).raw


def test_descriptor_json_round_trip():
    d = Descriptor(
        mt.OCI_LAYER,
        D1,
        5,
        urls=("https://x/y",),
        annotations={"k": "v"},
        platform=Platform("linux", "arm", "v7", os_features=("f",)),
        artifact_type="application/x",
    )
    assert Descriptor.from_json(d.to_json()) == d
    assert Descriptor.from_json(d.to_json()).annotations == {"k": "v"}
