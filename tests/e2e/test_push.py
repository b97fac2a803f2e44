"""`pbox push` to the real registry (plain, basic, token), as the test user.

What a push must give: an image that pbox and skopeo read back with the same content,
a second push that uploads nothing, a push to another repository of the same registry
that mounts rather than uploads, and zstd layers on request.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time

import harness
import pytest
from harness import storeview

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPLOADS = r"/blobs/uploads/"
CHECK = ["md5sum", "/bin/busybox", "/etc/passwd"]


def login(run_pbox, reg) -> None:
    run_pbox("login", "-u", reg.username, "--password-stdin", reg.host, input=reg.password + "\n")


def pushed_ids(output: str) -> dict[str, str]:
    """{short blob id: status} from docker's `<id>: Pushed` lines."""
    out = {}
    for line in output.splitlines():
        m = re.match(r"^([0-9a-f]{12}): (Pushed|Layer already exists|Mounted from \S+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def final_digest(output: str, tag: str) -> tuple[str, int]:
    m = re.search(rf"^{re.escape(tag)}: digest: (sha256:[0-9a-f]{{64}}) size: (\d+)$", output,
                  re.M)
    assert m, output
    return m.group(1), int(m.group(2))


def skopeo(*args: str) -> bytes:
    return harness.skopeo(*args)


def creds_args(reg) -> list[str]:
    return ["--creds", reg.creds] if reg.username else []


@pytest.fixture
def busybox(registry_plain, test_images, run_pbox):
    img = test_images(registry_plain).busybox
    run_pbox("pull", "-q", img.reference)
    return img


@pytest.fixture(params=["basic", "token"])
def auth_registry(request):
    return request.getfixturevalue(f"registry_{request.param}")


def test_login_push_rmi_pull_run_same_content(auth_registry, busybox, run_pbox, pbox_root,
                                              tmp_path):
    reg = auth_registry
    before = run_pbox("run", "--rm", busybox.reference, *CHECK).stdout
    dest = f"{reg.host}/pbox-push/roundtrip:v1"

    # not logged in: refused, with the word a user looks for
    r = run_pbox("push", busybox.reference, dest, expect_rc=125)
    assert "unauthorized" in r.stderr and "Traceback" not in r.stderr

    login(run_pbox, reg)
    digestfile = tmp_path / "digest"
    r = run_pbox("push", "--digestfile", digestfile, busybox.reference, dest)
    assert f"The push refers to repository [{reg.host}/pbox-push/roundtrip]" in r.stdout
    ids = pushed_ids(r.stdout)
    assert list(ids.values()) == ["Pushed"]
    digest, size = final_digest(r.stdout, "v1")
    assert digestfile.read_text() == digest

    # skopeo reads a valid image whose layers are the ones pbox said it pushed
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", reg.creds,
                             f"docker://{dest}"))
    assert info["Digest"] == digest
    assert [d[7:19] for d in info["Layers"]] == list(ids)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", reg.creds,
                 f"docker://{dest}")
    assert len(raw) == size
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    run_pbox("rmi", busybox.reference)  # push does not tag locally (as podman)
    r = run_pbox("pull", dest)
    assert f"Digest: {digest}" in r.stdout
    assert run_pbox("run", "--rm", dest, *CHECK).stdout == before

    # logged out: the same push is refused again
    run_pbox("logout", reg.host)
    r = run_pbox("push", dest, expect_rc=125)
    assert "unauthorized" in r.stderr


@pytest.mark.parametrize("mode", ["plain", "token"])
def test_second_push_uploads_nothing(mode, registry_factory, busybox, run_pbox):
    reg = registry_factory(mode)
    dest = f"{reg.host}/again/busybox:latest"
    first = run_pbox("push", *creds_args(reg), busybox.reference, dest)
    assert reg.count_requests("PUT", UPLOADS) >= 2  # a layer and the config
    mark = reg.log_mark()
    second = run_pbox("push", *creds_args(reg), busybox.reference, dest)
    assert reg.count_requests("PUT", UPLOADS, since=mark) == 0
    assert reg.count_requests("PATCH", UPLOADS, since=mark) == 0
    assert reg.count_requests("POST", UPLOADS, since=mark) == 0
    # the tag's manifest is the one these blobs make: that one HEAD said it all (with
    # credentials after the ping, without it went first and settled the scheme)
    assert reg.count_requests("HEAD", r"/manifests/latest", since=mark) == 1
    pings = reg.count_requests("GET", r"^/v2/$", since=mark)
    assert pings == (1 if mode == "token" else 0)
    assert reg.count_requests(since=mark) == 1 + pings
    assert reg.count_requests("HEAD", r"/blobs/", since=mark) == 0
    assert reg.count_requests("PUT", r"/manifests/", since=mark) == 0
    assert list(pushed_ids(second.stdout).values()) == ["Layer already exists"]
    assert final_digest(second.stdout, "latest") == final_digest(first.stdout, "latest")

    # the tag moved to another manifest (zstd layers): the blobs are asked for one by
    # one again, and the manifest is put back
    run_pbox("push", *creds_args(reg), "--compression-format", "zstd", busybox.reference, dest)
    mark = reg.log_mark()
    third = run_pbox("push", *creds_args(reg), busybox.reference, dest)
    assert reg.count_requests("HEAD", r"/blobs/", since=mark) >= 2  # the layer, the config
    assert reg.count_requests("PUT", r"/manifests/latest", since=mark) == 1
    assert reg.count_requests("PUT", UPLOADS, since=mark) == 0
    assert list(pushed_ids(third.stdout).values()) == ["Layer already exists"]
    assert final_digest(third.stdout, "latest") == final_digest(first.stdout, "latest")


@pytest.mark.parametrize("mode", ["plain", "token"])
def test_push_to_second_repository_mounts(mode, registry_factory, registry_plain, test_images,
                                          run_pbox, pbox_root):
    img = test_images(registry_plain).layers
    run_pbox("pull", "-q", img.reference)
    reg = registry_factory(mode)  # token: the mount needs pull access to the source too
    creds = creds_args(reg)
    run_pbox("push", *creds, img.reference, f"{reg.host}/team-a/layers:1")
    mark = reg.log_mark()
    r = run_pbox("push", *creds, img.reference, f"{reg.host}/team-b/layers:1")
    statuses = list(pushed_ids(r.stdout).values())
    assert len(statuses) == len(img.layers)
    assert set(statuses) == {"Mounted from team-a/layers"}
    mounts = reg.requests_matching("POST", r"/v2/team-b/layers/blobs/uploads/\?.*mount=",
                                   since=mark)
    assert len(mounts) >= len(img.layers)
    assert all(m.status == 201 for m in mounts)
    assert reg.count_requests("PUT", UPLOADS, since=mark) == 0
    assert reg.count_requests("PATCH", UPLOADS, since=mark) == 0

    # what came back is the same tree: owners, modes, whiteouts, setuid bits, links
    want = storeview.listing(pbox_root.root, img.config_digest)
    run_pbox("rmi", img.reference)
    run_pbox("pull", "-q", *creds, f"{reg.host}/team-b/layers:1")
    image_id = run_pbox("inspect", "--format", "{{.Id}}", f"{reg.host}/team-b/layers:1"
                        ).stdout.strip()
    assert storeview.listing(pbox_root.root, image_id) == want
    # the layers went out as the very tars that were pulled: the same image id
    assert image_id == img.config_digest


def test_zstd_push_pulls_back(registry_factory, busybox, run_pbox, pbox_root):
    reg = registry_factory("plain")
    dest = f"{reg.host}/zstd/busybox:z"
    before = run_pbox("run", "--rm", busybox.reference, *CHECK).stdout
    r = run_pbox("push", "--compression-format", "zstd", busybox.reference, dest)
    assert list(pushed_ids(r.stdout).values()) == ["Pushed"]
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}"))
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    # the store knows what the new blob inflates to (a pull of it needs no download)
    made = manifest["layers"][0]["digest"].split(":")[1]
    link = os.path.join(pbox_root.root, "blob-diffs", made)
    assert "sha256:" + os.readlink(link) == busybox.diff_ids[0]
    # a gzip push of the same image elsewhere is another blob; zstd again is remembered
    r = run_pbox("push", "-q", "--compression-format", "zstd", busybox.reference,
                 f"{reg.host}/zstd/other:z")
    assert r.stdout == ""
    run_pbox("rmi", busybox.reference)
    run_pbox("pull", "-q", dest)
    assert run_pbox("run", "--rm", dest, *CHECK).stdout == before


def test_v2s2_format_and_errors(registry_factory, registry_plain, test_images, run_pbox):
    img = test_images(registry_plain).busybox_docker
    run_pbox("pull", "-q", img.reference)
    reg = registry_factory("plain")
    # an image that came as docker v2s2 goes out as v2s2 unless told otherwise
    run_pbox("push", img.reference, f"{reg.host}/fmt/bb:docker")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                            f"docker://{reg.host}/fmt/bb:docker"))
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    run_pbox("push", "--format", "oci", img.reference, f"{reg.host}/fmt/bb:oci")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                            f"docker://{reg.host}/fmt/bb:oci"))
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    r = run_pbox("push", "--format", "v2s2", "--compression-format", "zstd", img.reference,
                 f"{reg.host}/fmt/bb:bad", expect_rc=125)
    assert "zstd" in r.stderr
    r = run_pbox("push", "no-such-image:1", f"{reg.host}/fmt/x:1", expect_rc=125)
    assert "No such image" in r.stderr


def push_temps(root: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(root, "tmp")) if n.startswith("push-")]


def _store_records(root: str) -> dict[str, bytes]:
    """The store's records (images, tags, layers' layer.json), by path."""
    out = {}
    for top in ("images", "layers"):
        for dirpath, dirnames, files in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if d != "diff"]
            for f in files:
                if f.endswith(".json"):
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        out[os.path.relpath(os.path.join(dirpath, f), root)] = fh.read()
    with open(os.path.join(root, "repositories.json"), "rb") as fh:
        out["repositories.json"] = fh.read()
    return out


def _uploading(reg) -> bool:
    """Whether the registry holds a started upload with bytes in it."""
    for dirpath, _, files in os.walk(reg.storage_dir):
        if os.path.basename(os.path.dirname(dirpath)) == "_uploads" and "data" in files \
                and os.path.getsize(os.path.join(dirpath, "data")) > 0:
            return True
    return False


def test_killed_push_leaves_store_clean_and_reruns(registry_factory, busybox, run_pbox,
                                                   pbox_cmd, pbox_root, tmp_path):
    """kill -9 while a new layer streams to the registry, and at random moments: the
    store's records are as before (a layer's blob is remembered only once the registry
    has it), and the push run again completes."""
    reg = registry_factory("plain")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big.bin").write_bytes(os.urandom(24 << 20))  # incompressible: a long upload
    (ctx / "Dockerfile").write_text(f"FROM {busybox.reference}\nCOPY big.bin /big.bin\n")
    run_pbox("build", "-q", "-t", "killed/big:1", str(ctx))
    env = pbox_root.env_with(None)
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    before = _store_records(pbox_root.root)

    def start(dest: str, *flags: str) -> subprocess.Popen:
        return subprocess.Popen([*pbox_cmd, "push", *flags, "killed/big:1", dest], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # 1. in the middle of the streamed upload (the process frozen first, so the moment
    #    cannot pass before the kill)
    proc = start(f"{reg.host}/killed/big:1")
    try:
        deadline = time.monotonic() + 60
        while not _uploading(reg):
            assert proc.poll() is None, "the push ended before its upload was seen"
            assert time.monotonic() < deadline, "the push never started its upload"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGSTOP)
    finally:
        proc.kill()
        proc.wait()
    assert _store_records(pbox_root.root) == before
    assert push_temps(pbox_root.root) == []

    # 2. at random moments, zstd too (each to a new repository: nothing to skip)
    rng = random.Random(os.environ.get("PYTEST_XDIST_WORKER", "") + str(time.time()))
    for i in range(6):
        proc = start(f"{reg.host}/killed/random{i}:1",
                     *(["--compression-format", "zstd"] if i % 2 else []))
        time.sleep(rng.uniform(0, 0.4))
        proc.kill()
        proc.wait()
        for data in _store_records(pbox_root.root).values():
            json.loads(data)  # every record whole
    run_pbox("images")

    r = run_pbox("push", "killed/big:1", f"{reg.host}/killed/big:1")
    # each layer uploaded, or mounted from where a killed push had completed it
    assert len(pushed_ids(r.stdout)) == 2 and "1: digest: sha256:" in r.stdout
    assert push_temps(pbox_root.root) == []
    run_pbox("rmi", "killed/big:1")
    run_pbox("pull", "-q", f"{reg.host}/killed/big:1")
    out = run_pbox("run", "--rm", f"{reg.host}/killed/big:1", "md5sum", "/big.bin").stdout
    assert out.split()[0] == hashlib.md5((ctx / "big.bin").read_bytes()).hexdigest()

    # a push that fails leaves no temp file behind either
    reg.stop()
    r = run_pbox("push", busybox.reference, f"{reg.host}/killed/other:1", expect_rc=125)
    assert "connect" in r.stderr
    assert push_temps(pbox_root.root) == []


def test_push_back_to_origin_reuses_the_pulled_blobs(registry_factory, test_images, run_pbox):
    """The registry a layer came from has its blob: nothing is compressed or uploaded,
    and the pushed image keeps the original layer digest and image id."""
    reg = registry_factory("plain")
    img = test_images(reg).busybox
    run_pbox("pull", "-q", img.reference)
    mark = reg.log_mark()
    r = run_pbox("push", img.reference, f"{reg.host}/pbox-test/busybox:copy")
    assert pushed_ids(r.stdout) == {img.layers[0]["digest"][7:19]: "Layer already exists"}
    assert reg.count_requests("PUT", UPLOADS, since=mark) == 0
    assert reg.count_requests("PATCH", UPLOADS, since=mark) == 0
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                                 f"docker://{reg.host}/pbox-test/busybox:copy"))
    assert [d["digest"] for d in manifest["layers"]] == [d["digest"] for d in img.layers]
    assert manifest["config"]["digest"] == img.config_digest
    # pull remembered the blob's size: pushing again is one manifest HEAD, no blob asked
    mark = reg.log_mark()
    again = run_pbox("push", img.reference, f"{reg.host}/pbox-test/busybox:copy")
    assert pushed_ids(again.stdout) == pushed_ids(r.stdout)
    assert reg.count_requests("HEAD", r"/manifests/copy", since=mark) == 1
    assert reg.count_requests("HEAD", r"/blobs/", since=mark) == 0


def test_pulled_layers_mount_into_another_repository(registry_factory, test_images, run_pbox):
    """Pull records where each blob came from, so a push to another repository of the
    same registry mounts the original blobs: no upload, same layer digests, same id."""
    reg = registry_factory("plain")
    img = test_images(reg).layers
    run_pbox("pull", "-q", img.reference)
    mark = reg.log_mark()
    dest = f"{reg.host}/elsewhere/layers:1"
    r = run_pbox("push", img.reference, dest)
    assert set(pushed_ids(r.stdout).values()) == {"Mounted from pbox-test/layers"}
    assert reg.count_requests("PATCH", UPLOADS, since=mark) == 0
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}"))
    assert [d["digest"] for d in manifest["layers"]] == [d["digest"] for d in img.layers]
    assert [d["size"] for d in manifest["layers"]] == [d["size"] for d in img.layers]
    assert manifest["config"]["digest"] == img.config_digest


def test_push_to_a_closed_port_is_one_error_line(busybox, run_pbox):
    import socket

    # the registry ping runs in a thread while the layers are prepared: its failure must
    # still be the command's one error line, not a traceback from the thread
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_pbox("push", busybox.reference, f"127.0.0.1:{port}/pbox-push/nowhere:v1",
                 expect_rc=125, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr and "connection refused" in errors[0], r.stderr


@pytest.fixture(params=["plain", "tls"])
def open_registry(request):
    return request.getfixturevalue(f"registry_{request.param}")


def test_push_rmi_pull_run_without_auth(open_registry, busybox, run_pbox):
    """The two registry modes without credentials (plain HTTP, TLS with its CA given by
    --cert-dir); the auth modes are covered above."""
    reg = open_registry
    tls = ["--cert-dir", reg.cert_dir] if reg.ca_path else []
    before = run_pbox("run", "--rm", busybox.reference, *CHECK).stdout
    dest = f"{reg.host}/pbox-push/open:v1"
    r = run_pbox("push", *tls, busybox.reference, dest)
    # busybox was pulled from the plain registry: there the blob is mounted, not sent
    same = reg.host == busybox.host
    assert list(pushed_ids(r.stdout).values()) == (
        ["Mounted from pbox-test/busybox"] if same else ["Pushed"])
    digest, _ = final_digest(r.stdout, "v1")
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dest}"))
    assert info["Digest"] == digest
    run_pbox("rmi", busybox.reference)
    r = run_pbox("pull", *tls, dest)
    assert f"Digest: {digest}" in r.stdout
    assert run_pbox("run", "--rm", dest, *CHECK).stdout == before
    if tls:
        # without the CA the certificate is refused, with a one-line error
        r = run_pbox("push", dest, expect_rc=125)
        assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr


def test_new_image_on_a_known_base_mounts_the_base_and_uploads_the_rest(
        registry_factory, busybox, run_pbox, tmp_path):
    # layers go in parallel; the config of an image with an uploaded layer is new to the
    # registry, so no mount is tried for it
    reg = registry_factory("plain")
    run_pbox("push", busybox.reference, f"{reg.host}/base/busybox:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox.reference}\nCOPY one.txt two.txt /data/\n")
    (ctx / "one.txt").write_text("one\n")
    (ctx / "two.txt").write_text("two\n")
    run_pbox("build", "-q", "-t", "pbox-push/app:1", str(ctx))
    mark = reg.log_mark()
    r = run_pbox("push", "pbox-push/app:1", f"{reg.host}/team/app:1")
    statuses = sorted(pushed_ids(r.stdout).values())
    assert statuses == ["Mounted from base/busybox", "Pushed"], r.stdout
    mounts = reg.requests_matching("POST", r"/v2/team/app/blobs/uploads/\?.*mount=", since=mark)
    assert len(mounts) == 1, mounts
    digest, _ = final_digest(r.stdout, "1")
    run_pbox("rmi", "pbox-push/app:1")
    run_pbox("pull", "-q", f"{reg.host}/team/app:1")
    out = run_pbox("run", "--rm", "--network", "none", f"{reg.host}/team/app:1",
                   "cat", "/data/one.txt", "/data/two.txt").stdout
    assert out == "one\ntwo\n"
    assert digest.startswith("sha256:")
