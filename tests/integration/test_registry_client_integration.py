"""pbox's registry client against the real distribution registry, in its four modes.

(The unit test of the same client, tests/unit/test_registry_client.py, plays the rare
behaviours with a tiny in-test server; the file names differ because pytest imports
test modules by their base name.)
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile

import pytest

from pbox.errors import AuthError, DigestMismatch, ManifestUnknown, RegistryError
from pbox.oci import compression
from pbox.oci import manifest as m
from pbox.oci import mediatypes as mt
from pbox.oci import platform as plat
from pbox.oci.auth import Credentials
from pbox.oci.registry import RegistryClient


def creds_of(registry, user: str | None = None) -> Credentials | None:
    if not registry.users:
        return None
    user = user or registry.username
    return Credentials(user, registry.users[user])


def client(registry, **kw) -> RegistryClient:
    kw.setdefault("credentials", creds_of(registry))
    if registry.tls:
        kw.setdefault("cert_dir", registry.cert_dir)
    kw.setdefault("backoff", 0.05)
    return RegistryClient(registry.host, **kw)


def read_all(r) -> bytes:
    out = []
    while True:
        chunk = r.read(65536)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_ping(any_registry):
    with client(any_registry) as c:
        ch = c.ping()
        assert c.base_url == any_registry.url
    expected = {"plain": None, "tls": None, "basic": "basic", "token": "bearer"}
    assert (ch.scheme if ch else None) == expected[any_registry.mode]
    if any_registry.mode == "token":
        assert ch.realm == any_registry.token_server.realm
        assert ch.service == any_registry.token_server.service


@pytest.mark.parametrize("which", ["busybox", "busybox_docker", "zstd", "uncompressed"])
def test_manifest_by_tag_and_digest_and_blobs(any_registry, test_images, which):
    image = getattr(test_images(any_registry), which)
    with client(any_registry) as c:
        raw, media_type, digest = c.get_manifest(image.repository, image.tag)
        assert raw == image.manifest
        assert media_type == image.manifest_media_type
        assert digest == image.manifest_digest
        assert c.get_manifest(image.repository, digest) == (raw, media_type, digest)
        assert c.head_manifest(image.repository, image.tag)[0] == digest

        man = m.parse_manifest(raw, media_type)
        config = c.fetch_blob(image.repository, man.config.digest, man.config.size)
        cfg = m.parse_config(read_all(config))
        assert config.verified and cfg.id == image.config_digest
        assert cfg.diff_ids == image.diff_ids

        for layer, diff_id in zip(man.layers, cfg.diff_ids):
            assert c.blob_exists(image.repository, layer.digest)
            blob = c.fetch_blob(image.repository, layer.digest, layer.size)
            plain = compression.decompress_media_type(blob, layer.media_type)
            data = read_all(plain)
            assert blob.verified
            assert sha(data) == diff_id  # the uncompressed tar is what the config names
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                assert "bin/busybox" in tf.getnames()


def test_index_and_platform_choice(any_registry, test_images):
    images = test_images(any_registry)
    for index in (images.multi, images.multi_docker):
        with client(any_registry) as c:
            raw, media_type, digest = c.get_manifest(index.repository, index.tag)
            assert media_type == index.media_type and digest == index.manifest_digest
            idx = m.parse_index(raw, media_type)
            for name, child in index.children.items():
                chosen = plat.select(idx.manifests, plat.parse(name))
                assert chosen.digest == child.manifest_digest
                raw_child, child_type, _ = c.get_manifest(index.repository, chosen.digest)
                assert mt.is_manifest(child_type) and raw_child == child.manifest


def test_manifest_unknown(any_registry, test_images):
    test_images(any_registry)
    with client(any_registry) as c, pytest.raises(ManifestUnknown) as e:
        c.get_manifest("pbox-test/busybox", "nope")
    assert str(e.value) == f"manifest unknown: {any_registry.host}/pbox-test/busybox:nope not found"


def test_push_mount_and_catalog(any_registry):
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = os.urandom(3 * 1024 * 1024 + 17)
    repo = f"pbox-client/push-{any_registry.mode}"
    other = repo + "-mounted"
    with client(any_registry) as c:
        assert c.push_blob(repo, sha(layer), len(layer), io.BytesIO(layer)) is True
        assert c.push_blob(repo, sha(layer), len(layer), io.BytesIO(layer)) is False
        chunked = os.urandom(200_000)
        c.push_blob(repo, sha(chunked), len(chunked), io.BytesIO(chunked), chunk_size=65536)
        # docker's stream upload: one PATCH with a chunked body, the digest at the end
        streamed = os.urandom(1_000_003)
        c.push_blob_stream(repo, iter([streamed[:300_000], streamed[300_000:]]),
                           lambda: sha(streamed), "a layer")
        assert read_all(c.fetch_blob(repo, sha(streamed))) == streamed
        c.push_blob(repo, sha(config), len(config), lambda: io.BytesIO(config))
        man = m.build_manifest(
            m.Descriptor(mt.OCI_CONFIG, sha(config), len(config)),
            [
                m.Descriptor(mt.OCI_LAYER, sha(layer), len(layer)),
                m.Descriptor(mt.OCI_LAYER, sha(chunked), len(chunked)),
            ],
        )
        assert c.put_manifest(repo, "v1", man.raw, man.media_type) == man.digest
        assert c.get_manifest(repo, "v1")[2] == man.digest
        assert read_all(c.fetch_blob(repo, sha(chunked))) == chunked

        assert c.mount_blob(other, sha(layer), repo) is True
        assert c.stat_blob(other, sha(layer)) == len(layer)
        assert c.mount_blob(other, sha(b"never pushed"), repo) is False
        assert repo in c.catalog() and other in c.catalog(page_size=1)
        assert c.list_tags(repo) == ["v1"]


def test_tls_with_ca_in_config_certs_d(registry_tls, test_images, tmp_path):
    test_images(registry_tls)
    certs = tmp_path / "certs.d" / registry_tls.host
    certs.mkdir(parents=True)
    shutil.copyfile(registry_tls.ca_path, certs / "ca.crt")
    with RegistryClient(registry_tls.host, config_dir=str(tmp_path)) as c:
        assert c.get_manifest("pbox-test/busybox", "latest")[0]
        assert c.base_url.startswith("https://")


def test_tls_without_ca_fails_clearly(registry_tls, tmp_path):
    c = RegistryClient(registry_tls.host, config_dir=str(tmp_path), retries=0)
    with c, pytest.raises(RegistryError) as e:
        c.ping()
    msg = str(e.value)
    assert "TLS" in msg and "certificate verify failed" in msg
    assert os.path.join(str(tmp_path), "certs.d", registry_tls.host) in msg


@pytest.mark.parametrize("ca_bundle_env", [False, True])
def test_tls_verify_off(registry_tls, test_images, tmp_path, monkeypatch, ca_bundle_env):
    # requests lets $REQUESTS_CA_BUNDLE turn verification back on unless told per request
    if ca_bundle_env:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    else:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    test_images(registry_tls)
    with RegistryClient(registry_tls.host, config_dir=str(tmp_path), tls_verify=False) as c:
        assert c.get_manifest("pbox-test/busybox", "latest")[0]
        assert c.base_url.startswith("https://")


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_wrong_password(request, mode):
    registry = request.getfixturevalue(f"registry_{mode}")
    bad = Credentials(registry.username, "wrong-password")
    with client(registry, credentials=bad) as c, pytest.raises(AuthError) as e:
        c.get_manifest("pbox-test/busybox", "latest")
    assert str(e.value).startswith(
        f"unauthorized: incorrect username or password for {registry.host}"
    )
    assert "wrong-password" not in str(e.value)
    assert e.value.status == 401


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_no_credentials(request, mode):
    registry = request.getfixturevalue(f"registry_{mode}")
    with client(registry, credentials=None) as c, pytest.raises(AuthError) as e:
        c.get_manifest("pbox-test/busybox", "latest")
    assert str(e.value).startswith(
        f"unauthorized: authentication required for {registry.host}/pbox-test/busybox"
    )


def test_token_reused_per_scope(registry_token, test_images):
    image = test_images(registry_token).busybox
    ts = registry_token.token_server
    ts.reset()
    with client(registry_token) as c:
        raw, media_type, _ = c.get_manifest(image.repository, image.tag)
        man = m.parse_manifest(raw, media_type)
        c.get_manifest(image.repository, image.manifest_digest)
        read_all(c.fetch_blob(image.repository, man.config.digest))
        for layer in man.layers:
            read_all(c.fetch_blob(image.repository, layer.digest))
            c.blob_exists(image.repository, layer.digest)
        assert ts.count() == 1
        assert ts.requests[0].account == registry_token.username
        assert ts.requests[0].scopes == [f"repository:{image.repository}:pull"]
        c.get_manifest("pbox-test/layers", "latest")  # another repository: another scope
        assert ts.count() == 2


def test_token_access_token_field_and_reader_cannot_push(registry_factory):
    registry = registry_factory("token", token_options={"token_field": "access_token"})
    data = b"some blob"
    with client(registry) as c:
        c.push_blob("team/app", sha(data), len(data), io.BytesIO(data))
    reader = creds_of(registry, "reader")
    with client(registry, credentials=reader) as c:
        assert read_all(c.fetch_blob("team/app", sha(data))) == data
        with pytest.raises(AuthError) as e:
            c.push_blob("team/app", sha(b"other"), 5, io.BytesIO(b"other"))
    assert e.value.status in (401, 403)


def test_corrupted_blob_detected(registry_factory, test_images):
    registry = registry_factory("plain")
    image = test_images(registry).busybox
    layer = image.layers[0]
    registry.corrupt_blob(layer["digest"])
    with client(registry) as c:
        r = c.fetch_blob(image.repository, layer["digest"], layer["size"])
        with pytest.raises(DigestMismatch):
            read_all(r)


def test_plain_http_registry_loads_no_tls_context(registry_plain, test_images, tmp_path):
    from pbox.oci import tls

    test_images(registry_plain)
    tls._CONTEXTS.clear()
    with RegistryClient(registry_plain.host, config_dir=str(tmp_path)) as c:
        assert c.get_manifest("pbox-test/busybox", "latest")[0]
        assert c.base_url.startswith("http://")
    assert tls._CONTEXTS == {}


def test_tls_context_made_on_first_https_request(registry_tls, test_images, tmp_path):
    from pbox.oci import tls

    test_images(registry_tls)
    tls._CONTEXTS.clear()
    with RegistryClient(registry_tls.host, cert_dir=registry_tls.cert_dir) as c:
        assert c.get_manifest("pbox-test/busybox", "latest")[0]
        assert c.base_url.startswith("https://")
    assert len(tls._CONTEXTS) == 1
