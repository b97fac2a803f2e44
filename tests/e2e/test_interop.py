"""Images written by other tools pull correctly (skopeo as an independent client)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from harness import skopeo_env, storeview

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


def _skopeo(*args):
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True,
                          timeout=120, env=skopeo_env())


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_pull_what_skopeo_pushed(fmt, registry_plain, test_images, run_pbox, pbox_root):
    src = test_images(registry_plain).layers
    dest = f"{registry_plain.host}/interop/skopeo-{fmt}:1"
    # skopeo re-encodes the manifest (and recompresses for v2s2): a writer other than ours
    _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", fmt,
            f"docker://{src.reference}", f"docker://{dest}")
    raw = json.loads(_skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{dest}").stdout)
    want_type = ("application/vnd.oci.image.manifest.v1+json" if fmt == "oci" else
                 "application/vnd.docker.distribution.manifest.v2+json")
    assert raw["mediaType"] == want_type

    run_pbox("pull", "-q", dest)
    info = json.loads(run_pbox("inspect", dest).stdout)[0]
    sk = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{dest}").stdout)
    assert info["RootFS"]["Layers"] == src.diff_ids
    assert info["Architecture"] == sk["Architecture"]
    assert f"{registry_plain.host}/interop/skopeo-{fmt}@{sk['Digest']}" in info["RepoDigests"]
    files = storeview.listing(pbox_root.root, info["Id"])
    for path in src.absent:
        assert path not in files
    for path, exp in src.files.items():
        assert files[path]["kind"] == exp.kind, path


def test_skopeo_multiarch_copy_pulls_per_platform(registry_plain, test_images, run_pbox,
                                                 pbox_root):
    index = test_images(registry_plain).multi
    dest = f"{registry_plain.host}/interop/multi:1"
    _skopeo("copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{index.reference}", f"docker://{dest}")
    run_pbox("pull", "-q", "--platform", "linux/arm64", dest)
    image_id = run_pbox("inspect", "-f", "{{.Id}}", dest).stdout.strip()
    assert storeview.read_file(pbox_root.root, image_id, "/arch") == b"arm64\n"
