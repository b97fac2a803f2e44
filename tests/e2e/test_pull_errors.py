"""`pbox pull` failures: each one is a single `Error: ...` line and exit code 125.

A registry serving wrong bytes, missing tags and repositories, refused credentials,
an unreachable registry, and bad arguments.  Besides the message, a failed pull
must leave no image, no layer and no temp entry behind, and must never show a
password.
"""

from __future__ import annotations

import base64
import os
import socket

import pytest
from harness import has_subuid
from harness.images import (
    REPO_PREFIX,
    RegistryClient,
    build_image,
    busybox_layer,
    with_diff_ids,
)

EXIT_PBOX = 125


def error_line(result) -> str:
    """The one line a failed pull prints on stderr (after the user-namespace notice a user
    without a subordinate id range gets once); fails unless there is exactly one."""
    __tracebackhide__ = True
    lines = result.stderr.splitlines()
    if not has_subuid():
        # the one-time "owners get squashed" notice of the single-id mapping
        lines = [line for line in lines if not line.startswith("WARN: ")]
    assert result.returncode == EXIT_PBOX, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert len(lines) == 1, result.describe()
    assert lines[0].startswith("Error: "), result.describe()
    return lines[0]


def store_is_empty(root: str) -> list[str]:
    """What a failed pull left behind: images, layers, names, temp entries."""
    left = []
    for sub in ("images", "layers", "tmp"):
        path = os.path.join(root, sub)
        if os.path.isdir(path):
            left += [f"{sub}/{n}" for n in os.listdir(path)]
    repos = os.path.join(root, "repositories.json")
    if os.path.exists(repos):
        import json

        with open(repos) as f:
            data = json.load(f)
        left += [f"name {n}" for kind in ("tags", "digests") for n in data.get(kind, {})]
    return left


# -- wrong bytes ---------------------------------------------------------------------------


@pytest.fixture
def own_busybox(registry_factory):
    """A fresh registry of this test with a one-layer busybox image (gzip)."""
    registry = registry_factory("plain")
    img = build_image([busybox_layer()])
    pushed = RegistryClient(registry).push_image(f"{REPO_PREFIX}/corrupt", "latest", img)
    return registry, pushed


@pytest.mark.idmap
@pytest.mark.parametrize("how", ["flip", "same-content"])
def test_corrupt_layer_blob_is_a_digest_mismatch_and_stores_nothing(how, own_busybox,
                                                                    run_pbox, pbox_root):
    registry, img = own_busybox
    layer = img.layer_digests[0]
    registry.corrupt_blob(layer, how=how)

    r = run_pbox("pull", img.reference, expect_rc=EXIT_PBOX)
    line = error_line(r)
    assert "digest mismatch" in line.lower(), line
    assert layer in line, line
    assert store_is_empty(pbox_root.root) == []
    # the registry really served the blob: pbox read it and refused it
    assert registry.count_requests("GET", f"/blobs/{layer}") >= 1

    # nothing half-done is taken for the real thing by the next attempt either
    r = run_pbox("pull", img.reference, expect_rc=EXIT_PBOX)
    assert "digest mismatch" in error_line(r).lower()
    assert store_is_empty(pbox_root.root) == []


@pytest.mark.parametrize("inflater", ["isal", "zlib"])
def test_a_layer_that_is_not_what_the_config_names_is_refused(inflater, registry_factory,
                                                              run_pbox, pbox_root):
    """The config's diff id does not match the layer's tar (its compressed digest does):
    refused, nothing stored, whichever inflater feeds the extraction."""
    registry = registry_factory("plain")
    bad = with_diff_ids(build_image([busybox_layer()]), ["sha256:" + "0" * 64])
    pushed = RegistryClient(registry).push_image(f"{REPO_PREFIX}/wrong-diff-id", "latest", bad)
    env = {"PBOX_INFLATE": "zlib"} if inflater == "zlib" else None
    assert run_pbox("info", "--format", "{{.GzipInflater}}", env=env).stdout.strip() == inflater
    r = run_pbox("pull", pushed.reference, env=env, expect_rc=EXIT_PBOX)
    line = error_line(r)
    assert "digest mismatch" in line.lower() and "sha256:" + "0" * 64 in line, line
    assert store_is_empty(pbox_root.root) == []


def test_corrupt_config_blob_is_a_digest_mismatch(own_busybox, run_pbox, pbox_root):
    registry, img = own_busybox
    registry.corrupt_blob(img.config_digest, how="flip")
    r = run_pbox("pull", img.reference, expect_rc=EXIT_PBOX)
    line = error_line(r)
    assert "digest mismatch" in line.lower() and img.config_digest in line, line
    assert store_is_empty(pbox_root.root) == []


def test_corrupt_manifest_pulled_by_digest(own_busybox, run_pbox, pbox_root):
    registry, img = own_busybox
    registry.corrupt_blob(img.manifest_digest, how="flip")
    r = run_pbox("pull", img.by_digest, expect_rc=EXIT_PBOX)
    line = error_line(r)
    # checked before it is parsed: not "invalid manifest: not JSON"
    assert "digest mismatch" in line.lower() and img.manifest_digest in line, line
    assert store_is_empty(pbox_root.root) == []


# -- not there -------------------------------------------------------------------------------


def test_missing_tag(registry_plain, test_images, run_pbox, pbox_root):
    img = test_images(registry_plain).busybox
    ref = f"{img.host}/{img.repository}:no-such-tag"
    line = error_line(run_pbox("pull", ref, check=False))
    assert "manifest unknown" in line.lower(), line
    assert ref in line or f"{img.repository}:no-such-tag" in line, line
    assert store_is_empty(pbox_root.root) == []


def test_missing_digest(registry_plain, test_images, run_pbox):
    img = test_images(registry_plain).busybox
    missing = "sha256:" + "0" * 64
    line = error_line(run_pbox("pull", f"{img.host}/{img.repository}@{missing}", check=False))
    assert "manifest unknown" in line.lower() and missing in line, line


@pytest.mark.idmap
def test_a_layer_the_registry_lost_is_an_error_and_stores_nothing(own_busybox, run_pbox,
                                                                   pbox_root):
    """The manifest names a layer the repository no longer has (its link is gone): the
    registry answers 404 to the layer's GET, after pbox has set up its extraction
    while waiting; the temp entry goes again."""
    registry, img = own_busybox
    layer = img.layer_digests[0]
    link = os.path.join(registry.storage_dir, "docker", "registry", "v2", "repositories",
                        img.repository, "_layers", "sha256", layer.split(":", 1)[1], "link")
    os.unlink(link)
    r = run_pbox("pull", img.reference, expect_rc=EXIT_PBOX)
    line = error_line(r)
    assert layer in line and "unknown" in line.lower(), line
    assert registry.count_requests("GET", f"/blobs/{layer}") >= 1
    assert store_is_empty(pbox_root.root) == []


def test_missing_repository(registry_plain, test_images, run_pbox, pbox_root):
    test_images(registry_plain)
    ref = f"{registry_plain.host}/{REPO_PREFIX}/no-such-repo:latest"
    line = error_line(run_pbox("pull", ref, check=False))
    assert f"{REPO_PREFIX}/no-such-repo" in line, line
    assert "unknown" in line.lower() or "not found" in line.lower(), line
    assert store_is_empty(pbox_root.root) == []


# -- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["basic", "token"])
@pytest.mark.parametrize("log_level", [None, "debug"])
def test_wrong_password_is_unauthorized_and_never_shown(mode, log_level, request, test_images,
                                                        run_pbox, pbox_root):
    registry = request.getfixturevalue(f"registry_{mode}")
    img = test_images(registry).busybox
    password = "Wr0ng-" + registry.password[::-1] + "-s3cret"
    creds = f"{registry.username}:{password}"
    secrets = [password, base64.b64encode(creds.encode()).decode(),
               base64.b64encode(password.encode()).decode()]
    args = ["--log-level", log_level] if log_level else []
    r = run_pbox(*args, "pull", "--creds", creds, img.reference, check=False)
    assert r.returncode == EXIT_PBOX, r.describe()
    for secret in secrets:
        assert secret not in r.output, f"a secret leaked:\n{r.describe()}"
    if log_level is None:
        line = error_line(r)
    else:
        assert "Traceback" not in r.stdout, r.describe()
        lines = [x for x in r.stderr.splitlines() if x.startswith("Error: ")]
        assert len(lines) == 1, r.describe()
        line = lines[0]
    assert "unauthorized" in line.lower(), line
    assert registry.host in line, line
    assert store_is_empty(pbox_root.root) == []


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_no_credentials_for_a_registry_that_wants_them(mode, request, test_images, run_pbox):
    registry = request.getfixturevalue(f"registry_{mode}")
    img = test_images(registry).busybox
    line = error_line(run_pbox("pull", img.reference, check=False))
    assert "unauthorized" in line.lower() or "authentication required" in line.lower(), line


# -- no registry at all ----------------------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and released: nobody took it since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry(run_pbox, pbox_root):
    port = _closed_port()
    ref = f"127.0.0.1:{port}/{REPO_PREFIX}/busybox:latest"
    line = error_line(run_pbox("pull", ref, check=False, timeout=120))
    assert f"127.0.0.1:{port}" in line, line
    assert "connection refused" in line.lower(), line
    assert store_is_empty(pbox_root.root) == []


# -- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["UPPER/case", "upper/CASE", "UPPERCASE", "127.0.0.1:5000/Repo",
                                  "a::b", "busybox:", "a@sha256:1234", ""])
def test_invalid_reference(text, run_pbox, pbox_root):
    line = error_line(run_pbox("pull", text, check=False))
    assert "invalid reference format" in line, line
    assert not os.path.exists(os.path.join(pbox_root.root, "images"))


@pytest.mark.parametrize("platform", ["garbage", "linux/", "/amd64", "linux/amd64/v8/x",
                                      "plan10/amd64", "linux/z80"])
def test_bad_platform(platform, registry_plain, test_images, run_pbox):
    img = test_images(registry_plain).multi
    line = error_line(run_pbox("pull", "--platform", platform, img.reference, check=False))
    assert "platform" in line.lower() and platform in line, line


def test_creds_without_colon(registry_basic, test_images, run_pbox):
    img = test_images(registry_basic).busybox
    line = error_line(run_pbox("pull", "--creds", registry_basic.username, img.reference,
                               check=False))
    assert "--creds" in line and "USERNAME:PASSWORD" in line, line


def test_creds_without_user(registry_basic, test_images, run_pbox):
    img = test_images(registry_basic).busybox
    r = run_pbox("pull", "--creds", ":" + registry_basic.password, img.reference, check=False)
    line = error_line(r)
    assert "--creds" in line, line
    assert registry_basic.password not in r.output
