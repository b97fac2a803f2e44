"""`pbox save`, `load` and `import` as the test user, against the plain registry.

What they must give: an image saved in any of the three layouts, removed and loaded
back, runs with the same id and diff ids; layers shared by two images are written
once; skopeo reads what pbox writes and pbox reads what skopeo and podman write; a
compressed archive loads; a hostile archive is refused with one error line and leaves
the store clean; an imported rootfs with --change runs its CMD.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import harness
import pytest
from harness import run_command

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def skopeo(*args: str) -> bytes:
    return harness.skopeo(*args)


def image_facts(run_pbox, name: str) -> tuple[str, list[str]]:
    out = run_pbox("image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}", name)
    image_id, _, layers = out.stdout.strip().partition(" ")
    return image_id, json.loads(layers)


def store_layers(pbox_root) -> list[str]:
    path = os.path.join(pbox_root.root, "layers")
    return sorted(n for n in os.listdir(path) if len(n) == 64) if os.path.isdir(path) else []


def store_tmp(pbox_root) -> list[str]:
    path = os.path.join(pbox_root.root, "tmp")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def tar_names(path: str) -> list[str]:
    with tarfile.open(path) as t:
        return t.getnames()


def archive_config_ids(path: str) -> list[str]:
    """The image ids (config digests) an archive holds."""
    if os.path.isdir(path):
        def read(name):
            with open(os.path.join(path, name), "rb") as f:
                return f.read()
    else:
        t = tarfile.open(path)  # noqa: SIM115

        def read(name):
            return t.extractfile(name).read()
    names = tar_names(path) if not os.path.isdir(path) else []
    if "manifest.json" in names:
        return ["sha256:" + m["Config"][:-5] for m in json.loads(read("manifest.json"))]
    out = []
    for d in json.loads(read("index.json"))["manifests"]:
        m = json.loads(read("blobs/sha256/" + d["digest"][7:]))
        out.append(m["config"]["digest"])
    return out


CHECK = ["md5sum", "/bin/busybox", "/etc/passwd"]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir"])
def test_save_rmi_load_run(bb, run_pbox, tmp_path, fmt):
    content = run_pbox("run", "--rm", bb, *CHECK).stdout
    out = tmp_path / ("bb.dir" if fmt == "oci-dir" else "bb.tar")
    run_pbox("save", "--format", fmt, "-o", out, bb)
    [saved_id] = archive_config_ids(str(out))
    run_pbox("rmi", bb)
    loaded = run_pbox("load", "-i", out)
    assert loaded.stdout.strip() == f"Loaded image: {bb}"
    first = image_facts(run_pbox, bb)
    assert first[0] == saved_id
    assert run_pbox("run", "--rm", bb, "echo", "ok").stdout.strip() == "ok"
    assert run_pbox("run", "--rm", bb, *CHECK).stdout == content
    # a layer loaded from an archive is saved again byte for byte: the same image id
    again = tmp_path / ("again.dir" if fmt == "oci-dir" else "again.tar")
    run_pbox("save", "--format", fmt, "-o", again, bb)
    run_pbox("rmi", bb)
    run_pbox("load", "-i", again)
    assert image_facts(run_pbox, bb) == first


@pytest.mark.parametrize("algo", ["gzip", "zstd"])
def test_save_to_stdout_and_compressed_load(bb, run_pbox, pbox_cmd, pbox_root, tmp_path, algo):
    path = tmp_path / "bb.tar"
    env = pbox_root.env_with({"PYTHONPATH": REPO_ROOT})
    with open(path, "wb") as f:
        subprocess.run([*pbox_cmd, "save", bb], stdout=f, env=env, check=True, timeout=120)
    [saved_id] = archive_config_ids(str(path))
    if algo == "gzip":
        packed = gzip.compress(path.read_bytes(), compresslevel=1)
    else:
        zstandard = pytest.importorskip("zstandard")
        packed = zstandard.ZstdCompressor(level=1).compress(path.read_bytes())
    run_pbox("rmi", bb)
    loaded = run_pbox("load", input=packed)
    assert loaded.stdout.strip() == f"Loaded image: {bb}"
    assert image_facts(run_pbox, bb)[0] == saved_id


def test_save_refuses_a_terminal(pbox_cmd, pbox_root):
    import pty

    parent, child = pty.openpty()
    try:
        env = pbox_root.env_with({"PYTHONPATH": REPO_ROOT})
        res = subprocess.run([*pbox_cmd, "save", "busybox"], stdout=child,
                             stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(child)
        os.close(parent)
    assert res.returncode == 125
    assert res.stderr.decode().startswith("Error: ") and b"terminal" in res.stderr


def test_two_images_share_layers(bb, registry_plain, test_images, run_pbox, tmp_path):
    other = test_images(registry_plain).busybox_docker.reference
    run_pbox("pull", "-q", other)
    path = tmp_path / "two.tar"
    run_pbox("save", "-o", path, bb, other)
    names = tar_names(str(path))
    layer_tars = [n for n in names if n.endswith("/layer.tar")]
    assert len(layer_tars) == len(set(layer_tars)) == 1
    with tarfile.open(path) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    assert len(manifest) == 2
    assert manifest[0]["Layers"] == manifest[1]["Layers"]
    run_pbox("rmi", bb, other)
    lines = run_pbox("load", "-q", "-i", path)
    assert lines.stdout == ""
    run_pbox("image", "inspect", bb, other)


def test_skopeo_reads_pbox_archives(bb, run_pbox, tmp_path):
    docker = tmp_path / "d.tar"
    oci = tmp_path / "o.tar"
    run_pbox("save", "-o", docker, bb)
    run_pbox("image", "save", "--format", "oci-archive", "-o", oci, bb)
    got = json.loads(skopeo("inspect", f"docker-archive:{docker}"))
    cfg = json.loads(skopeo("inspect", "--config", f"docker-archive:{docker}"))
    assert got["Layers"] == cfg["rootfs"]["diff_ids"] and len(got["Layers"]) == 1
    with tarfile.open(oci) as t:
        index = json.load(t.extractfile("index.json"))
    ref_name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert ref_name == bb
    got = json.loads(skopeo("inspect", f"oci-archive:{oci}:{ref_name}"))
    cfg2 = json.loads(skopeo("inspect", "--config", f"oci-archive:{oci}:{ref_name}"))
    assert got["Layers"] == cfg2["rootfs"]["diff_ids"] == cfg["rootfs"]["diff_ids"]
    assert archive_config_ids(str(oci)) == archive_config_ids(str(docker))


def test_load_skopeo_docker_archive(registry_plain, test_images, run_pbox, tmp_path):
    img = test_images(registry_plain).busybox
    path = tmp_path / "sk.tar"
    skopeo("copy", "--src-tls-verify=false", f"docker://{img.reference}",
           f"docker-archive:{path}:pbox-test/fromskopeo:v1")
    out = run_pbox("load", "-i", path)
    assert out.stdout.strip() == "Loaded image: pbox-test/fromskopeo:v1"
    image_id, diff_ids = image_facts(run_pbox, "pbox-test/fromskopeo:v1")
    assert len(diff_ids) == 1
    assert run_pbox("run", "--rm", "pbox-test/fromskopeo:v1", "echo", "ok").stdout.strip() == "ok"


def _hostile_archive(path, member: str, manifest_layer: str) -> None:
    """A docker archive whose layer has ``member``, listed as ``manifest_layer``; with
    ``manifest_layer`` ``link:TARGET`` the listed layer is a symlink to TARGET."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as lt:
        info = tarfile.TarInfo(member)
        info.size = 3
        lt.addfile(info, io.BytesIO(b"bad"))
    layer_bytes = layer.getvalue()
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    link = manifest_layer[5:] if manifest_layer.startswith("link:") else None
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["evil:latest"],
                            "Layers": ["x/layer.tar" if link else manifest_layer]}]).encode()
    with tarfile.open(path, "w") as t:
        if link:
            info = tarfile.TarInfo("x/layer.tar")
            info.type, info.linkname = tarfile.SYMTYPE, link
            t.addfile(info)
        for name, data in [("l/layer.tar", layer_bytes), (cfg_name, cfg),
                           ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("member,manifest_layer", [
    ("../../escaped", "l/layer.tar"),
    ("ok", "../../../etc/passwd"),
    ("ok", "link:../../../../etc/passwd"),
])
def test_hostile_archive_refused(run_pbox, pbox_root, tmp_path, member, manifest_layer):
    path = tmp_path / "evil.tar"
    _hostile_archive(str(path), member, manifest_layer)
    res = run_pbox("load", "-i", path, expect_rc=125)
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), res.stderr
    assert store_layers(pbox_root) == []
    assert [n for n in store_tmp(pbox_root) if not n.endswith(".lock")] == []
    assert not os.path.exists(tmp_path / "escaped")
    out = run_pbox("images", "-q")
    assert out.stdout.strip() == ""


def test_import_with_change_runs(bb, run_pbox, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    run_pbox("create", "--name", "src", bb)
    run_pbox("export", "-o", rootfs, "src")
    gz = tmp_path / "rootfs.tar.gz"
    gz.write_bytes(gzip.compress(rootfs.read_bytes(), compresslevel=1))
    res = run_pbox("import", "--change", 'CMD ["/bin/sh","-c","echo hi"]', "-m", "imported",
                   gz, "pbox-test/imported:v1")
    image_id = res.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert run_pbox("run", "--rm", "pbox-test/imported:v1").stdout.strip() == "hi"
    assert image_facts(run_pbox, "pbox-test/imported:v1")[0] == image_id


def test_save_unknown_image(run_pbox, tmp_path):
    res = run_pbox("save", "-o", tmp_path / "x.tar", "no-such-image:nope", expect_rc=125)
    assert res.stderr.startswith("Error: ") and len(res.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x.tar")


def test_import_url_and_stdin_keep_id_through_save(bb, run_pbox, tmp_path):
    import http.server
    import threading

    rootfs = tmp_path / "www" / "rootfs.tar"
    rootfs.parent.mkdir()
    run_pbox("create", "--name", "src", bb)
    run_pbox("export", "-o", rootfs, "src")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(rootfs.parent), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rootfs.tar"
        from_url = run_pbox("import", "-c", "ENV A=1", url, "pbox-test/fromurl").stdout.strip()
        missing = run_pbox("import", url + ".nope", expect_rc=125)
        assert missing.stderr.startswith("Error: ") and "404" in missing.stderr
    finally:
        server.shutdown()
        server.server_close()
    from_stdin = run_pbox("image", "import", "-", "pbox-test/fromstdin",
                          input=rootfs.read_bytes()).stdout.strip()
    assert run_pbox("run", "--rm", "-e", "B=2", "pbox-test/fromurl", "sh", "-c",
                    "echo $A$B").stdout.strip() == "12"
    # a layer pbox wrote itself is saved byte for byte: the id survives save and load
    path = tmp_path / "imported.tar"
    run_pbox("save", "-o", path, "pbox-test/fromurl", "pbox-test/fromstdin")
    run_pbox("rmi", "pbox-test/fromurl", "pbox-test/fromstdin")
    out = run_pbox("image", "load", "-i", path).stdout.splitlines()
    assert out == ["Loaded image: pbox-test/fromurl:latest",
                   "Loaded image: pbox-test/fromstdin:latest"]
    assert image_facts(run_pbox, "pbox-test/fromurl")[0] == from_url
    assert image_facts(run_pbox, "pbox-test/fromstdin")[0] == from_stdin


def test_load_untagged_and_bad_input(bb, run_pbox, tmp_path):
    image_id = image_facts(run_pbox, bb)[0]
    path = tmp_path / "byid.tar"
    run_pbox("save", "--format", "oci-archive", "-o", path, image_id)
    run_pbox("rmi", bb)
    out = run_pbox("load", "-i", path).stdout.strip()
    assert out.startswith("Loaded image ID: sha256:")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    res = run_pbox("load", "-i", junk, expect_rc=125)
    assert res.stderr.startswith("Error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "Save one or more images" in run_pbox("image", "save", "--help").stdout


@pytest.fixture(scope="module")
def podman_archives(registry_plain, test_images, tmp_path_factory):
    """The test busybox pulled once by podman (an isolated vfs store under a temp dir) and
    saved as a docker and an OCI archive: ``(reference, {format: path})``."""
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman is not installed")
    ref = test_images(registry_plain).busybox.reference
    out = tmp_path_factory.mktemp("podman-archives")
    # short and private: podman keeps its locks and sockets in the runtime dir
    top = tempfile.mkdtemp(prefix="pbox-podman-")
    home, runtime = os.path.join(top, "home"), os.path.join(top, "run")
    for d in (home, runtime):
        os.mkdir(d, 0o700)
    graph = os.path.join(top, "graph")
    conf = os.path.join(top, "storage.conf")  # rootless podman reads rootless_storage_path
    with open(conf, "w") as f:
        f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{graph}"\n'
                f'rootless_storage_path = "{graph}"\nrunroot = "{runtime}/storage"\n')
    containers_conf = os.path.join(top, "containers.conf")
    with open(containers_conf, "w"):
        pass
    env = dict(os.environ, HOME=home, XDG_RUNTIME_DIR=runtime,
               XDG_CONFIG_HOME=os.path.join(home, ".config"),
               XDG_DATA_HOME=os.path.join(home, ".local", "share"),
               CONTAINERS_STORAGE_CONF=conf, CONTAINERS_CONF=containers_conf)

    def podman(*args):
        return run_command([exe, *(str(a) for a in args)], env=env, timeout=120)

    try:
        podman("pull", "-q", "--tls-verify=false", ref)
        assert podman("info", "--format", "{{.Store.GraphRoot}}").stdout.strip() == graph
        paths = {}
        for fmt in ("docker-archive", "oci-archive"):
            paths[fmt] = out / f"{fmt}.tar"
            podman("save", "--format", fmt, "-o", paths[fmt], ref)
        yield ref, paths
    finally:
        # vfs layers hold files of subordinate ids: only podman (in its namespace) removes them
        run_command([exe, "system", "reset", "-f"], env=env, check=False, timeout=120)
        if os.path.exists(graph):
            run_command([exe, "unshare", "rm", "-rf", graph], env=env, check=False,
                        timeout=120)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_load_podman_archive(podman_archives, run_pbox, fmt):
    ref, paths = podman_archives
    [saved_id] = archive_config_ids(str(paths[fmt]))
    out = run_pbox("load", "-i", paths[fmt]).stdout.strip()
    assert out == f"Loaded image: {ref}"
    assert image_facts(run_pbox, ref)[0] == saved_id
    assert run_pbox("run", "--rm", ref, "echo", "ok").stdout.strip() == "ok"
