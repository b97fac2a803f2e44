"""What a pull overlaps with the registry's time: the config of a one-layer image is
fetched while the registry prepares the layer's answer, and a layer the store has under
another image's config is not extracted again."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading

import pytest
from harness import storeview
from harness.images import REPO_PREFIX, RegistryClient, build_image, busybox_layer


class _Static(http.server.BaseHTTPRequestHandler):
    """A registry of one image, read-only, that holds the answer for the config blob
    until the layer blob has been asked for (up to ``HOLD`` seconds: then it answers
    anyway and notes that it waited in vain)."""

    protocol_version = "HTTP/1.1"
    HOLD = 10.0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.seen.append(self.path)
        if self.path == "/v2/":
            return self._send(200, b"{}", "application/json")
        m = re.fullmatch(r"/v2/[^ ]+/(manifests|blobs)/([^/]+)", self.path)
        if m is None:
            return self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json")
        kind, ref = m.groups()
        img = srv.image
        if kind == "manifests" and ref in ("latest", img.manifest_digest):
            return self._send(200, img.manifest, img.manifest_media_type)
        if kind == "blobs" and ref == img.config_digest:
            if not srv.layer_asked.wait(self.HOLD):
                srv.held_in_vain = True
            return self._send(200, img.config, "application/octet-stream")
        if kind == "blobs" and ref == img.layers[0].digest:
            srv.layer_asked.set()
            return self._send(200, img.layers[0].blob, "application/octet-stream")
        return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', "application/json")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def static_registry():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Static)
    srv.daemon_threads = True
    srv.image = build_image([busybox_layer()])
    srv.seen = []
    srv.layer_asked = threading.Event()
    srv.held_in_vain = False
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_one_layer_images_config_and_layer_are_asked_for_at_once(static_registry,
                                                                   run_pbox, pbox_root):
    srv = static_registry
    ref = f"127.0.0.1:{srv.server_address[1]}/{REPO_PREFIX}/static:latest"
    run_pbox("pull", "-q", ref)
    # one request each: the config did not wait for the layer's download to end
    assert not srv.held_in_vain, srv.seen
    assert sorted(p.rsplit("/", 1)[-1] for p in srv.seen) == sorted(
        ["latest", srv.image.config_digest, srv.image.layers[0].digest])
    files = storeview.merged(pbox_root.root, srv.image.config_digest)
    assert files["/bin/busybox"][1].st_mode & 0o111


def test_a_layer_the_store_has_under_another_config(registry_plain, run_pbox, pbox_root):
    """Two one-layer images with the same layer and different configs: the second pull
    asks for the layer with its config, finds the layer in the store, drops the answer
    unread and extracts nothing."""
    client = RegistryClient(registry_plain)
    first = client.push_image(f"{REPO_PREFIX}/same-layer-a", "latest",
                              build_image([busybox_layer()], labels={"which": "a"}))
    second = client.push_image(f"{REPO_PREFIX}/same-layer-b", "latest",
                               build_image([busybox_layer()], labels={"which": "b"}))
    assert first.layer_digests == second.layer_digests
    assert first.config_digest != second.config_digest
    run_pbox("pull", first.reference)
    r = run_pbox("pull", second.reference)
    assert "Already exists" in r.stdout and "Pull complete" not in r.stdout, r.stdout
    assert len(os.listdir(os.path.join(pbox_root.root, "layers"))) == 1
    data = json.loads(run_pbox("inspect", second.reference).stdout)
    assert data[0]["Config"]["Labels"] == {"which": "b"}
    assert data[0]["RootFS"]["Layers"] == second.diff_ids
