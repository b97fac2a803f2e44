"""The test harness itself: real registries, real tokens, images a real client reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import requests
from harness import CommandFailed, run_command, skopeo_env
from harness.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    build_big_image,
    decompress,
    host_arch,
    push_big_image,
    standard_builds,
)
from harness.registry import (
    TOKEN_SERVICE,
    Registry,
    make_ca,
    make_token_signing_cert,
)
from harness.tokenserver import RS256Signer, TokenServer, TokenUser, decode_jwt

SKOPEO = shutil.which("skopeo")


def skopeo(registry: Registry, *args: str, check: bool = True,
           creds: str | None = None) -> subprocess.CompletedProcess:
    """skopeo with the transport options ``registry`` needs."""
    if SKOPEO is None:
        pytest.fail("skopeo is needed by the harness tests")
    opts = []
    if registry.cert_dir:
        opts.append(f"--cert-dir={registry.cert_dir}")
    else:
        opts.append("--tls-verify=false")
    creds = creds or registry.creds
    if creds:
        opts.append(f"--creds={creds}")
    cmd, rest = args[0], list(args[1:])
    argv = [SKOPEO, "--insecure-policy", cmd, *opts, *rest]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env=skopeo_env())
    if check and proc.returncode != 0:
        pytest.fail(f"$ {' '.join(argv)}\nexit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def inspect(registry: Registry, ref: str, *extra: str) -> dict:
    return json.loads(skopeo(registry, "inspect", *extra, f"docker://{ref}").stdout)


def layer_tar(client: RegistryClient, repo: str, descriptor: dict) -> tarfile.TarFile:
    blob = client.get_blob(repo, descriptor["digest"])
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == descriptor["digest"]
    return tarfile.open(fileobj=io.BytesIO(decompress(blob, descriptor["mediaType"])))


# -- every mode comes up and guards what it should -----------------------------------------

def test_registry_is_up_and_speaks_v2(any_registry):
    reg = any_registry
    assert reg.running and reg.host == f"127.0.0.1:{reg.port}"
    assert reg.url == f"{reg.scheme}://{reg.host}"
    anonymous = requests.get(reg.url + "/v2/", verify=reg.verify, timeout=10)
    assert anonymous.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    if reg.mode in ("plain", "tls"):
        assert anonymous.status_code == 200
        assert reg.username is None and reg.creds is None
    else:
        assert anonymous.status_code == 401
        scheme = anonymous.headers["WWW-Authenticate"].split()[0]
        assert scheme == ("Basic" if reg.mode == "basic" else "Bearer")
        assert RegistryClient(reg).request("GET", "/v2/").status_code == 200
    assert (reg.ca_path is not None) == (reg.mode == "tls")


def test_tls_registry_is_trusted_only_through_its_ca(registry_tls):
    reg = registry_tls
    assert os.path.isfile(reg.ca_path)
    assert os.listdir(reg.cert_dir) == ["ca.crt"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(reg.url + "/v2/", timeout=10, verify=True)
    assert requests.get(f"https://localhost:{reg.port}/v2/", verify=reg.ca_path,
                        timeout=10).status_code == 200
    plain = requests.get(f"http://{reg.host}/v2/", timeout=10)
    assert plain.status_code == 400  # "client sent an HTTP request to an HTTPS server"


def test_basic_auth_refuses_wrong_credentials(registry_basic):
    reg = registry_basic
    assert reg.username and reg.password and "reader" in reg.users
    for user, password in ((reg.username, "wrong"), ("nobody-here", reg.password)):
        with pytest.raises(RegistryError) as err:
            RegistryClient(reg, username=user, password=password).request("GET", "/v2/")
        assert err.value.status == 401
    assert RegistryClient(reg, username="reader",
                          password=reg.users["reader"]).ping() == 200
    assert requests.get(reg.url + "/v2/", auth=(reg.username, reg.password),
                        timeout=10).status_code == 200


# -- the token server ------------------------------------------------------------------------

def _token(reg: Registry, scope: str, auth=None, **params) -> requests.Response:
    query = {"service": reg.token_server.service, "scope": scope, **params}
    return requests.get(reg.token_server.realm, params=query, auth=auth, timeout=10)


def test_token_server_refuses_wrong_or_missing_credentials(registry_token):
    reg = registry_token
    before = reg.token_server.count(status=401)
    assert _token(reg, "repository:x:pull", auth=(reg.username, "wrong")).status_code == 401
    assert _token(reg, "repository:x:pull").status_code == 401  # no anonymous access
    assert reg.token_server.count(status=401) == before + 2


def test_registry_accepts_tokens_and_enforces_their_scope(registry_token):
    reg = registry_token
    repo = "harness/token-scope"
    scope = f"repository:{repo}:pull,push"
    writer = _token(reg, scope, auth=(reg.username, reg.password)).json()["token"]
    reader = _token(reg, scope, auth=("reader", reg.users["reader"])).json()["token"]
    assert decode_jwt(writer)[1]["access"] == [
        {"type": "repository", "name": repo, "actions": ["pull", "push"]}]
    header, claims = decode_jwt(reader)
    assert claims["access"][0]["actions"] == ["pull"]
    assert claims["aud"] == TOKEN_SERVICE and "x5c" in header

    upload = f"{reg.url}/v2/{repo}/blobs/uploads/"
    ok = requests.post(upload, headers={"Authorization": "Bearer " + writer}, timeout=10)
    assert ok.status_code == 202
    refused = requests.post(upload, headers={"Authorization": "Bearer " + reader}, timeout=10)
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


def test_registry_rejects_a_token_signed_by_an_untrusted_key(registry_token, tmp_path):
    reg = registry_token
    ca = make_ca(str(tmp_path), "someone else")
    cert, key = make_token_signing_cert(str(tmp_path), ca)
    forger = TokenServer(RS256Signer(key, cert), service=reg.token_server.service,
                         issuer=reg.token_server.issuer)
    access = [{"type": "repository", "name": "harness/forged", "actions": ["pull", "push"]}]
    forged = forger.make_token(reg.username, access)
    genuine = reg.token_server.make_token(reg.username, access)
    url = f"{reg.url}/v2/harness/forged/blobs/uploads/"
    assert requests.post(url, headers={"Authorization": "Bearer " + forged},
                         timeout=10).status_code == 401
    assert requests.post(url, headers={"Authorization": "Bearer " + genuine},
                         timeout=10).status_code == 202


def test_signature_is_rsassa_pkcs1_sha256(tmp_path):
    ca = make_ca(str(tmp_path))
    cert, key = make_token_signing_cert(str(tmp_path), ca)
    signer = RS256Signer(key, cert)
    message = b"header.claims"
    sig = signer.sign(message)
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(sig)
    # openssl agrees, with the certificate's public key
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    (tmp_path / "pub.pem").write_bytes(pub)
    verify = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                             "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not signer.verify(b"header.claimz", sig)


def test_token_server_options(registry_factory):
    reg = registry_factory("token", token_options={
        "token_field": "access_token", "expires_in": None, "allow_anonymous": True,
        "chain": "kid"})
    ts = reg.token_server
    body = _token(reg, "repository:harness/opts:pull,push").json()
    assert set(body) == {"access_token", "issued_at"}  # no "token", no "expires_in"
    header, claims = decode_jwt(body["access_token"])
    assert "x5c" not in header and header["kid"] == ts.signer.key_id
    assert claims["sub"] == "" and claims["access"][0]["actions"] == ["pull"]  # anonymous
    # the registry verifies kid-only tokens against the signing certificate
    tags = requests.get(f"{reg.url}/v2/harness/opts/tags/list", timeout=10,
                        headers={"Authorization": "Bearer " + body["access_token"]})
    assert tags.status_code == 404 and "NAME_UNKNOWN" in tags.text  # authorized, no such repo

    ts.token_field, ts.expires_in = "both", 60
    body = _token(reg, "repository:harness/opts:pull", auth=(reg.username, reg.password)).json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 60

    assert _token(reg, "repository:x:pull", service="elsewhere").status_code == 400
    ts.require_service = False
    assert requests.get(ts.realm, params={"scope": "repository:x:pull"},
                        timeout=10).status_code == 200

    oauth = requests.post(ts.realm, timeout=10, data={
        "grant_type": "password", "username": reg.username, "password": reg.password,
        "service": ts.service, "scope": "repository:harness/opts:pull,push",
        "client_id": "pbox-tests"})
    assert oauth.status_code == 200 and oauth.json()["scope"] == "repository:harness/opts:pull,push"
    assert requests.post(f"{reg.url}/v2/harness/opts/blobs/uploads/", timeout=10, headers={
        "Authorization": "Bearer " + oauth.json()["access_token"]}).status_code == 202
    ts.allow_post = False
    assert requests.post(ts.realm, data={"grant_type": "password"}, timeout=10).status_code == 404

    assert ts.count(account=reg.username) == 2
    assert [r.method for r in ts.requests][-2:] == ["POST", "POST"]
    ts.reset()
    assert ts.request_count == 0


def test_token_grants_follow_user_rules(registry_token):
    ts = TokenServer(None, service="svc", issuer="iss", users={
        "per-repo": TokenUser("pw", {"team/*": ["pull", "push"], "*": ["pull"]}),
        "admin": TokenUser("pw", ["*"]),
    })
    assert ts.grant("per-repo", ["repository:team/app:pull,push",
                                 "repository:other:pull,push"]) == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "other", "actions": ["pull"]}]
    assert ts.grant("per-repo", ["registry:catalog:*"]) == []
    assert ts.grant("admin", ["registry:catalog:* repository:x:delete"]) == [
        {"type": "registry", "name": "catalog", "actions": ["*"]},
        {"type": "repository", "name": "x", "actions": ["delete"]}]
    assert ts.grant(None, ["repository:127.0.0.1:5000/x:pull,push"]) == [
        {"type": "repository", "name": "127.0.0.1:5000/x", "actions": ["pull"]}]

    with registry_token.token_server.configured(expires_in=7, allow_anonymous=True) as live:
        assert _token(registry_token, "repository:x:pull").json()["expires_in"] == 7
        assert live.allow_anonymous
    assert registry_token.token_server.expires_in == 300
    assert not registry_token.token_server.allow_anonymous
    with pytest.raises(TypeError), registry_token.token_server.configured(expire_in=1):
        pass


def test_token_server_counts_every_token_request(registry_factory):
    reg = registry_factory("token")
    client = RegistryClient(reg)
    client.push_image("harness/count", "v1", standard_builds()["busybox"])
    # one token per scope (pull for HEADs, pull+push for uploads), reused afterwards
    assert client.token_requests == 2
    assert reg.token_server.count(account=reg.username) == 2


# -- images a real client reads ----------------------------------------------------------------

def test_skopeo_reads_every_standard_image(any_registry, test_images):
    reg = any_registry
    images = test_images(reg)
    assert test_images(reg) is images  # pushed once per registry
    for name in ("busybox", "busybox_docker", "layers", "zstd", "uncompressed"):
        img = getattr(images, name)
        info = inspect(reg, img.reference)
        assert info["Digest"] == img.manifest_digest, name
        assert info["Architecture"] == host_arch() and info["Os"] == "linux"
        assert info["Layers"] == img.layer_digests
        assert info["Env"] == img.config["config"]["Env"]
        raw = json.loads(skopeo(reg, "inspect", "--raw", f"docker://{img.reference}").stdout)
        assert raw["mediaType"] == img.manifest_media_type
        config = json.loads(skopeo(reg, "inspect", "--config",
                                   f"docker://{img.reference}").stdout)
        assert config["rootfs"]["diff_ids"] == img.diff_ids
    assert images.busybox_docker.manifest_media_type == DOCKER_MANIFEST
    assert images.busybox.layer_digests == images.busybox_docker.layer_digests
    assert images.busybox.image_id != images.busybox_docker.image_id
    if reg.mode == "token":
        assert reg.token_server.count(account=reg.username) > 0


@pytest.mark.parametrize("name, index_type, child_type", [
    ("multi", OCI_INDEX, OCI_MANIFEST), ("multi_docker", DOCKER_LIST, DOCKER_MANIFEST)])
def test_skopeo_reads_the_index(any_registry, test_images, name, index_type, child_type):
    reg = any_registry
    index = getattr(test_images(reg), name)
    raw = skopeo(reg, "inspect", "--raw", f"docker://{index.reference}").stdout
    assert hashlib.sha256(raw.encode()).hexdigest() == index.manifest_digest.split(":")[1]
    doc = json.loads(raw)
    assert doc["mediaType"] == index_type
    platforms = {(m["platform"]["architecture"], m["platform"].get("variant")): m
                 for m in doc["manifests"]}
    assert set(platforms) == {("amd64", None), ("arm64", "v8")}
    for (arch, _), entry in platforms.items():
        child = index.for_arch(arch)
        assert entry["digest"] == child.manifest_digest and entry["mediaType"] == child_type
        assert child.markers == {"/arch": arch + "\n"}
        info = inspect(reg, index.reference, f"--override-arch={arch}")
        assert info["Architecture"] == arch and info["Layers"] == child.layer_digests
    assert index.native.platform.split("/")[1] == host_arch()


def test_layer_blobs_match_their_descriptors(registry_plain, test_images):
    images = test_images(registry_plain)
    client = RegistryClient(registry_plain)
    cases = [
        (images.busybox, OCI_LAYER["gzip"], b"\x1f\x8b"),
        (images.busybox_docker, DOCKER_LAYER["gzip"], b"\x1f\x8b"),
        (images.zstd, OCI_LAYER["zstd"], b"\x28\xb5\x2f\xfd"),
        (images.uncompressed, OCI_LAYER["none"], b""),
    ]
    for img, media_type, magic in cases:
        (layer,) = img.layers
        assert layer["mediaType"] == media_type
        blob = client.get_blob(img.repository, layer["digest"])
        assert blob.startswith(magic)
        tar = decompress(blob, media_type)
        assert tar[257:262] == b"ustar"
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == img.diff_ids[0]
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            sh = tf.getmember("bin/sh")
            assert sh.issym() and sh.linkname == "busybox"
            assert tf.getmember("bin/busybox").size == img.files["/bin/busybox"].size
            assert b"user:x:1000:1000:" in tf.extractfile("etc/passwd").read()
    docker_config = client.get_manifest(images.busybox_docker.repository,
                                        images.busybox_docker.tag)[0]
    assert json.loads(docker_config)["config"]["mediaType"] == DOCKER_CONFIG
    cfg = images.busybox.config
    assert cfg["config"]["Cmd"] == ["sh"] and cfg["config"]["Env"][0].startswith("PATH=")
    assert [h.get("empty_layer", False) for h in cfg["history"]] == [False, True]
    assert cfg["history"][0]["created_by"]


def test_layered_image_tars_and_expected_view(registry_plain, test_images):
    img = test_images(registry_plain).layers
    client = RegistryClient(registry_plain)
    assert len(img.layers) >= 4
    tars = [layer_tar(client, img.repository, d) for d in img.layers]
    for diff_id, d in zip(img.diff_ids, img.layers):
        raw = decompress(client.get_blob(img.repository, d["digest"]), d["mediaType"])
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id

    owners = {m.name.rstrip("/"): m for m in tars[1].getmembers()}
    assert (owners["owned/by1000.txt"].uid, owners["owned/by1000.txt"].gid) == (1000, 1000)
    assert owners["owned/byroot.txt"].uid == 0
    assert owners["usr/local/bin/suid"].mode == 0o4755
    assert owners["srv/shared"].isdir() and owners["srv/shared"].mode == 0o2775
    assert owners["link-to-kept"].issym() and owners["link-to-kept"].linkname == "data/kept.txt"
    assert owners["hl/link"].islnk() and owners["hl/link"].linkname == "hl/original"
    removal_names = tars[2].getnames()
    assert "data/.wh.removed.txt" in removal_names
    assert "opaque/.wh..wh..opq" in removal_names and "opaque/upper.txt" in removal_names

    files = img.files
    assert {"/data/removed.txt", "/opaque/lower1.txt", "/opaque/sub/lower2.txt",
            "/opaque/sub"} <= img.absent
    assert not img.absent & set(files)
    assert files["/opaque/upper.txt"].data == b"upper\n"
    assert files["/data/overwritten.txt"].data == b"v2\n"
    assert files["/data/kept.txt"].data == b"kept\n"
    assert files["/hl/link"].hardlink_of == "/hl/original"
    assert files["/owned/dir1000"].kind == "dir" and files["/owned/dir1000"].uid == 1000
    assert files["/usr/local/bin/suid"].mode == 0o4755
    assert files["/bin/sh"].kind == "symlink" and files["/bin/sh"].target == "busybox"
    assert img.markers == {"/arch": host_arch() + "\n"}


def test_skopeo_copies_every_blob_with_verified_digests(registry_basic, test_images, tmp_path):
    images = test_images(registry_basic)
    for name, img in images.all().items():
        dest = tmp_path / name
        _copy(registry_basic, img.reference, dest)
        assert (dest / "index.json").is_file()


def _copy(reg: Registry, ref: str, dest) -> None:
    argv = [SKOPEO, "--insecure-policy", "copy", "--all", "--src-tls-verify=false"]
    if reg.creds:
        argv.append(f"--src-creds={reg.creds}")
    argv += [f"docker://{ref}", f"oci:{dest}"]
    result = run_command(argv, timeout=120, echo=False, env=skopeo_env())
    assert result.returncode == 0


# -- storage, log and lifecycle helpers -------------------------------------------------------

def test_blob_corruption_changes_what_the_registry_serves(registry_factory, tmp_path):
    reg = registry_factory("plain")
    client = RegistryClient(reg)
    img = client.push_image("harness/corrupt", "latest", standard_builds()["busybox"])
    digest = img.layer_digests[0]
    original = client.get_blob(img.repository, digest)
    with open(reg.blob_data_path(digest), "rb") as f:
        assert f.read() == original

    reg.corrupt_blob(digest)
    served = client.get_blob(img.repository, digest)
    assert len(served) == len(original) and served != original
    assert "sha256:" + hashlib.sha256(served).hexdigest() != digest
    copy = subprocess.run([SKOPEO, "--insecure-policy", "copy", "--src-tls-verify=false",
                           f"docker://{img.reference}", f"oci:{tmp_path / 'out'}"],
                          capture_output=True, text=True, timeout=120, env=skopeo_env())
    assert copy.returncode != 0 and "digest" in copy.stderr.lower()

    reg.corrupt_blob(digest, data=original)  # put it back, then the subtle kind
    reg.corrupt_blob(digest, how="same-content")
    served = client.get_blob(img.repository, digest)
    assert served != original and gzip.decompress(served) == gzip.decompress(original)

    reg.corrupt_blob(digest, data=b"short")
    assert client.get_blob(img.repository, digest) == b"short"
    with pytest.raises(ValueError):
        reg.corrupt_blob(digest, how="same-content")  # no longer gzip


def test_count_requests_shows_a_second_push_uploads_nothing(registry_factory):
    reg = registry_factory("plain")
    client = RegistryClient(reg)
    built = standard_builds()["layers"]
    client.push_image("harness/twice", "v1", built)
    uploads = r"^/v2/harness/twice/blobs/uploads/"
    assert reg.count_requests("POST", uploads) == len(built.layers) + 1  # + config
    assert reg.count_requests("PUT", uploads, status=201) == len(built.layers) + 1

    mark = reg.log_mark()
    client.push_image("harness/twice", "v2", built)
    assert reg.count_requests("POST", uploads, since=mark) == 0
    assert reg.count_requests("HEAD", r"/blobs/sha256:", since=mark) == len(built.layers) + 1
    assert reg.count_requests("PUT", r"/manifests/v2$", status=201, since=mark) == 1
    assert reg.count_requests(since=mark) == len(built.layers) + 2
    assert RegistryClient(reg).tags("harness/twice") == ["v1", "v2"]


def test_stop_and_restart_keep_port_and_content(registry_factory):
    reg = registry_factory("plain")
    client = RegistryClient(reg)
    img = client.push_image("harness/restart", "latest", standard_builds()["busybox"])
    host, pid = reg.host, reg.pid
    reg.stop()
    assert not reg.running and reg.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(reg.url + "/v2/", timeout=5)
    reg.start()
    assert reg.host == host and reg.pid != pid
    assert client.get_manifest(img.repository, "latest")[2] == img.manifest_digest


def test_suspend_makes_the_registry_hang_until_resumed(registry_factory):
    reg = registry_factory("plain")
    reg.suspend()
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(reg.url + "/v2/", timeout=0.3)
    finally:
        reg.resume()
    assert requests.get(reg.url + "/v2/", timeout=10).status_code == 200


def test_tls_basic_registry(registry_factory):
    reg = registry_factory("basic", tls=True, users={"alice": "s3cret"})
    assert reg.url.startswith("https://") and reg.ca_path and reg.creds == "alice:s3cret"
    pushed = RegistryClient(reg).push_image("harness/tls-basic", "1", standard_builds()["zstd"])
    assert inspect(reg, pushed.reference)["Digest"] == pushed.manifest_digest


def test_tls_token_registry(registry_factory):
    reg = registry_factory("token", tls=True)
    assert reg.token_server.realm.startswith("https://127.0.0.1:")
    client = RegistryClient(reg)
    pushed = client.push_image("harness/tls-token", "1", standard_builds()["busybox_docker"])
    assert inspect(reg, pushed.reference)["Digest"] == pushed.manifest_digest
    assert reg.token_server.count(account=reg.username) >= 3  # ours (2) and skopeo's


def test_big_image(registry_factory):
    reg = registry_factory("plain")
    big = push_big_image(reg, 3)
    layer = big.layers[-1]
    assert layer["size"] > 3 * 1024 * 1024  # random data does not compress
    assert big.files["/big.bin"].size == 3 * 1024 * 1024 and big.files["/big.bin"].data is None
    blob = RegistryClient(reg).get_blob(big.repository, layer["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        data = tf.extractfile("big.bin").read()
    assert hashlib.sha256(data).hexdigest() == big.files["/big.bin"].sha256
    a = build_big_image(0.25, seed=b"x")
    assert a.manifest_digest == build_big_image(0.25, seed=b"x").manifest_digest
    assert a.manifest_digest != build_big_image(0.25, seed=b"y").manifest_digest


# -- fixtures for the pbox side ---------------------------------------------------------------

def test_busybox_rootfs_runs(busybox_rootfs):
    assert os.readlink(os.path.join(busybox_rootfs, "bin", "sh")) == "busybox"
    assert os.stat(os.path.join(busybox_rootfs, "tmp")).st_mode & 0o7777 == 0o1777
    with open(os.path.join(busybox_rootfs, "etc", "group")) as f:
        assert "user:x:1000:" in f.read()
    out = subprocess.run([os.path.join(busybox_rootfs, "bin", "busybox"), "sh", "-c",
                          "echo hello; cat " + os.path.join(busybox_rootfs, "etc/passwd")],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("hello\nroot:x:0:0:")


def test_pbox_root_is_isolated(pbox_root, tmp_path):
    env = pbox_root.env
    assert env["PBOX_ROOT"] == pbox_root.root and pbox_root.root.startswith(str(tmp_path))
    assert env["PBOX_CONFIG_DIR"].startswith(str(tmp_path))
    assert env["PBOX_CACHE_DIR"].startswith(str(tmp_path))
    assert len(env["PBOX_RUNROOT"]) < 40 and os.path.isdir(env["PBOX_RUNROOT"])
    assert env.get("HOME") == os.environ.get("HOME")
    assert "PBOX_ROOT" not in os.environ
    assert "X" not in pbox_root.env_with({"X": None}) and pbox_root.env_with({"X": "1"})["X"] == "1"


def test_pbox_cmd_default(pbox_cmd):
    if os.environ.get("PBOX_TEST_PYZ"):
        assert pbox_cmd == [sys.executable, os.path.abspath(os.environ["PBOX_TEST_PYZ"])]
    else:
        assert pbox_cmd[:2] == [sys.executable, "-m"] and pbox_cmd[2] == "pbox"


def test_run_command_reports_command_output_and_code():
    script = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandFailed) as err:
        run_command([sys.executable, "-c", script])
    message = str(err.value)
    assert "exit code: 3 (expected 0)" in message
    assert "to stdout" in message and "to stderr" in message and "sys.exit(3)" in message
    assert run_command([sys.executable, "-c", script], expect_rc=3).stdout == "to stdout\n"
    assert run_command([sys.executable, "-c", script], check=False).returncode == 3
    with pytest.raises(CommandFailed):
        run_command([sys.executable, "-c", "pass"], expect_rc=125)


class TestRunPbox:
    """run_pbox's plumbing, with a stand-in program as the pbox command."""

    @pytest.fixture
    def pbox_cmd(self):
        show = ("import os, sys; data = sys.stdin.read();"
                "print(os.environ['PBOX_ROOT'], os.environ.get('EXTRA'), data, *sys.argv[1:]);"
                "sys.exit(int(os.environ.get('RC', '0')))")
        return [sys.executable, "-c", show]

    def test_env_input_and_args(self, run_pbox, pbox_root):
        result = run_pbox("images", 7, env={"EXTRA": "x"}, input="in")
        assert result.stdout.split() == [pbox_root.root, "x", "in", "images", "7"]

    def test_failure_shows_everything(self, run_pbox):
        with pytest.raises(CommandFailed) as err:
            run_pbox("ps", "-a", env={"RC": "125"})
        assert "exit code: 125" in str(err.value) and "ps -a" in str(err.value)
        assert run_pbox("ps", env={"RC": "125"}, expect_rc=125).returncode == 125
