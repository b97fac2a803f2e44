"""`pbox pull` against the real registry in its four modes, as the test user."""

from __future__ import annotations

import json
import os

import pytest
from harness import has_subuid, storeview


def reg_args(registry) -> list[str]:
    """The flags a user gives pbox for this registry."""
    args = []
    if registry.ca_path:
        args += ["--cert-dir", registry.cert_dir]
    if registry.username:
        args += ["--creds", f"{registry.username}:{registry.password}"]
    return args


@pytest.mark.idmap
def test_pull_by_tag_and_digest_each_mode(any_registry, test_images, run_pbox, pbox_root):
    imgs = test_images(any_registry)
    img = imgs.busybox
    r = run_pbox("pull", *reg_args(any_registry), img.reference)
    assert r.stdout.strip().splitlines()[-1] == f"{img.host}/{img.repository}:{img.tag}"
    assert f"Digest: {img.manifest_digest}" in r.stdout
    assert "Pull complete" in r.stdout

    out = run_pbox("images", "--no-trunc", "--format", "{{.Repository}} {{.Tag}} {{.ID}}").stdout
    assert f"{img.host}/{img.repository} {img.tag} {img.config_digest}" in out.splitlines()

    data = json.loads(run_pbox("inspect", img.reference).stdout)
    assert isinstance(data, list) and len(data) == 1
    assert data[0]["Id"] == img.config_digest
    assert data[0]["RootFS"]["Layers"] == img.diff_ids
    assert f"{img.host}/{img.repository}@{img.manifest_digest}" in data[0]["RepoDigests"]

    # busybox runs: the binary arrived whole and executable
    files = storeview.merged(pbox_root.root, img.config_digest)
    assert "/bin/busybox" in files
    assert files["/bin/busybox"][1].st_mode & 0o111

    # by digest: the image is there already, the same id, nothing downloaded again
    r = run_pbox("pull", *reg_args(any_registry), img.by_digest)
    assert "Pull complete" not in r.stdout
    assert r.stdout.strip().splitlines()[-1] == img.by_digest


def test_pull_quiet_prints_only_the_name(registry_plain, test_images, run_pbox):
    img = test_images(registry_plain).busybox_docker
    r = run_pbox("pull", "-q", img.reference)
    assert r.stdout.splitlines() == [img.reference]


def test_index_selects_host_platform_and_platform_flag(registry_plain, test_images, run_pbox,
                                                      pbox_root):
    imgs = test_images(registry_plain)
    for index in (imgs.multi, imgs.multi_docker):
        host_arch = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
        run_pbox("pull", index.reference)
        child = index.for_arch(host_arch)
        assert storeview.read_file(pbox_root.root, child.config_digest, "/arch") == \
            f"{host_arch}\n".encode()

        run_pbox("pull", "--platform", "linux/arm64", index.reference)
        arm = index.for_arch("arm64")
        assert storeview.read_file(pbox_root.root, arm.config_digest, "/arch") == b"arm64\n"
        data = json.loads(run_pbox("image", "inspect", index.reference).stdout)
        assert data[0]["Architecture"] == "arm64"
        assert data[0]["Id"] == arm.config_digest

    r = run_pbox("pull", "--platform", "linux/s390x", imgs.multi.reference, check=False)
    assert r.returncode == 125
    assert "linux/s390x" in r.stderr and "linux/amd64" in r.stderr


@pytest.mark.parametrize("name", ["zstd", "uncompressed", "busybox_docker", "busybox"])
def test_layer_compressions_and_media_types(name, registry_plain, test_images, run_pbox,
                                            pbox_root):
    img = getattr(test_images(registry_plain), name)
    run_pbox("pull", img.reference)
    files = storeview.merged(pbox_root.root, img.config_digest)
    for path, exp in img.files.items():
        assert path in files, path
        if exp.kind == "file" and exp.data is not None:
            assert storeview.read_file(pbox_root.root, img.config_digest, path) == exp.data


@pytest.mark.idmap
def test_whiteouts_opaque_dirs_owners_and_modes(registry_plain, test_images, run_pbox,
                                                pbox_root):
    img = test_images(registry_plain).layers
    r = run_pbox("pull", img.reference)
    files = storeview.listing(pbox_root.root, img.config_digest)
    for path in img.absent:
        assert path not in files, f"{path} should be hidden by a whiteout"
    keeps_owners = os.getuid() == 0 or has_subuid()
    for path, exp in img.files.items():
        assert path in files, path
        got = files[path]
        assert got["kind"] == exp.kind, path
        if exp.kind == "symlink":
            assert got["target"] == exp.target, path
            continue
        assert got["mode"] == exp.mode, path
        if exp.kind == "file" and exp.data is not None:
            assert got["data"].encode("latin-1") == exp.data, path
        # owners: kept (through the subordinate range), or all the user's without one
        want = (exp.uid, exp.gid) if keeps_owners else (os.getuid(), os.getgid())
        assert (got["uid"], got["gid"]) == want, path
    assert any(e.uid == 1000 for e in img.files.values())
    # without a range the user is told once why owners are squashed, and how to fix it
    assert (r.stderr.count("/etc/subuid") == 1) == (not keeps_owners), r.stderr
    assert any(e.mode & 0o4000 for e in img.files.values())


def test_progress_on_a_terminal(registry_plain, test_images, pbox_cmd, pbox_root):
    """On a terminal, layers get live lines (redrawn with cursor movements)."""
    import pty
    import select
    import subprocess

    img = test_images(registry_plain).layers
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    master, slave = pty.openpty()
    p = subprocess.Popen([*pbox_cmd, "pull", img.reference], stdin=slave, stdout=slave,
                         stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=60) == 0
    text = out.decode(errors="replace")
    assert "\x1b[" in text  # redrawn in place
    assert text.count("Pull complete") >= len(img.diff_ids)
    assert f"Digest: {img.manifest_digest}" in text


def test_no_thread_outlives_a_pull(registry_plain, test_images, pbox_root):
    """A layer is downloaded and inflated by a thread of its own (two for a big one);
    `run` and `build` fork and join namespaces after a pull in the same process, so
    those threads must be gone when the pull returns, after a failed layer too (its
    config names another diff id: the extraction stops at the end, the thread
    handing it data must be stopped as well)."""
    from harness.images import (
        REPO_PREFIX,
        RegistryClient,
        build_image,
        busybox_layer,
        with_diff_ids,
    )

    img = test_images(registry_plain).busybox
    bad = RegistryClient(registry_plain).push_image(
        f"{REPO_PREFIX}/threads-bad", "latest",
        with_diff_ids(build_image([busybox_layer()]), ["sha256:" + "1" * 64]))
    script = (
        "import os, sys\n"
        "from pbox import pull\n"
        "from pbox.config import Config\n"
        "from pbox.errors import PboxError\n"
        "def alone():\n"
        "    return sorted(os.listdir('/proc/self/task')) == [str(os.getpid())]\n"
        "try:\n"
        "    pull.pull(Config.from_env(), sys.argv[2])\n"
        "except PboxError as e:\n"
        "    print('failed:', e)\n"
        "print(alone())\n"
        "pull.pull(Config.from_env(), sys.argv[1])\n"
        "print(alone())\n"
    )
    out = _in_python(pbox_root, script, img.reference, bad.reference)
    lines = out.strip().splitlines()
    assert lines[0].startswith("failed:") and "1" * 64 in lines[0], out
    assert lines[1:] == ["True", "True"], out


def test_a_one_layer_image_and_its_config_go_out_together(registry_plain, test_images,
                                                         run_pbox, pbox_root):
    """A small one-layer image's layer is asked for with its config right behind it, on
    one connection, and extracted before the config is read.  The same blob under
    another config is known to the store: not asked for again.  The same layer as
    other blobs (zstd, uncompressed) is fetched and its copy dropped."""
    imgs = test_images(registry_plain)
    layer = imgs.busybox.layers[0]["digest"]
    r = run_pbox("--log-level", "debug", "pull", imgs.busybox.reference)
    assert f"blobs/{imgs.busybox.config_digest} sent ahead -> 200" in r.stderr
    assert "Pull complete" in r.stdout
    r = run_pbox("--log-level", "debug", "pull", imgs.busybox_docker.reference)
    assert f"blobs/{layer} " not in r.stderr and "Already exists" in r.stdout
    for img in (imgs.busybox_docker, imgs.zstd, imgs.uncompressed):
        if img is not imgs.busybox_docker:
            run_pbox("pull", img.reference)
        data = json.loads(run_pbox("inspect", img.reference).stdout)
        assert data[0]["Id"] == img.config_digest
    assert len(os.listdir(os.path.join(pbox_root.root, "layers"))) == 1
    files = storeview.merged(pbox_root.root, imgs.zstd.config_digest)
    assert files["/bin/busybox"][1].st_mode & 0o111


def test_a_big_one_layer_image_has_its_layer_asked_for_behind_its_config(
        registry_plain, run_pbox, pbox_root):
    """Over 4 MiB the config comes first, as usual, and the layer right behind it."""
    from harness.images import REPO_PREFIX, LayerSpec, RegistryClient, build_image

    data = os.urandom(5 << 20)
    img = RegistryClient(registry_plain).push_image(
        f"{REPO_PREFIX}/one-big", "latest",
        build_image([LayerSpec("big").file("/big.bin", data)], markers=()))
    r = run_pbox("--log-level", "debug", "pull", img.reference)
    assert f"blobs/{img.layers[0]['digest']} sent ahead -> 200" in r.stderr
    assert storeview.read_file(pbox_root.root, img.config_digest, "/big.bin") == data


def test_freed_memory_kept_by_a_pull_is_given_back_by_find_or_pull_image(
        registry_plain, test_images, pbox_root):
    """A pull keeps freed chunk buffers for reuse (glibc's mmap threshold raised: a
    second 8 MiB buffer takes the first one's pages); ``find_or_pull_image`` (run,
    create, build's FROM: the process goes on) restores the defaults (a fresh mapping,
    ~2048 page faults)."""
    imgs = test_images(registry_plain)
    script = (
        "import resource, sys\n"
        "from pbox import pull\n"
        "from pbox.config import Config\n"
        "from pbox.images import open_store\n"
        "def faults():\n"
        "    first = b'1' * (8 << 20)\n"
        "    del first\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    second = b'2' * (8 << 20)\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "config = Config.from_env()\n"
        "pull.pull(config, sys.argv[1])\n"
        "print(faults())\n"
        "pull.find_or_pull_image(config, open_store(config), sys.argv[2], 'always')\n"
        "print(faults())\n"
    )
    out = _in_python(pbox_root, script, imgs.busybox.reference, imgs.zstd.reference)
    kept, released = (int(n) for n in out.split())
    assert kept < 200 and released > 1500, out


def _in_python(pbox_root, script: str, *args: str) -> str:
    """The output of ``script`` run by a fresh interpreter on this checkout's pbox, with
    the test's store; it must succeed."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", script, *args],
                       env=pbox_root.env_with({"PYTHONPATH": repo}), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_manifest_request_goes_out_before_what_only_its_answer_needs(
        registry_plain, test_images, pbox_root):
    """What a pull loads before its first request delays it; what the steps after the
    manifest need (the store's and the images' modules, the JSON reader, the manifest
    parser) is loaded while the registry prepares the answer.  Seen from the first
    request's send, in a fresh interpreter without credential files."""
    img = test_images(registry_plain).busybox
    script = (
        "import os, sys, tempfile\n"
        "empty = tempfile.mkdtemp()\n"  # no credential file anywhere
        "for var in ('PBOX_CONFIG_DIR', 'XDG_CONFIG_HOME', 'DOCKER_CONFIG'):\n"
        "    os.environ[var] = empty\n"
        "for var in ('XDG_RUNTIME_DIR', 'REGISTRY_AUTH_FILE'):\n"
        "    os.environ.pop(var, None)\n"
        "from pbox.oci import http1\n"
        "seen = []\n"
        "send = http1._Connection.send\n"
        "def watch(self, *args, **kw):\n"
        "    if not seen:\n"
        "        seen.append([m for m in ('pbox.images', 'pbox.jsonio', 'pbox.storage.store',\n"
        "                                 'pbox.oci.manifest') if m in sys.modules])\n"
        "    return send(self, *args, **kw)\n"
        "http1._Connection.send = watch\n"
        "from pbox import pull\n"
        "from pbox.config import Config\n"
        "pull.pull(Config.from_env(), sys.argv[1])\n"
        "print(seen[0], 'pbox.images' in sys.modules, 'pbox.jsonio' in sys.modules)\n"
    )
    out = _in_python(pbox_root, script, img.reference)
    assert out.split() == ["[]", "True", "True"], out


def test_only_a_lone_small_layer_keeps_its_thread_in_the_main_arena(registry_plain,
                                                                    test_images, pbox_root):
    """A pull of one small layer has its inflating thread allocate from glibc's main
    arena (no fresh arena's pages to fault in); several layers pulled at once keep an
    arena a thread, as their threads would fight over one lock."""
    imgs = test_images(registry_plain)
    script = (
        "import ctypes, os, sys, tempfile\n"
        "from pbox import pull\n"
        "from pbox.config import Config\n"
        "pull.pull(Config.from_env(), sys.argv[1])\n"
        "out = tempfile.TemporaryFile()\n"
        "os.dup2(out.fileno(), 2)\n"  # malloc_stats writes to the C library's stderr
        "ctypes.CDLL(None).malloc_stats()\n"
        "out.seek(0)\n"
        "print(sum(line.startswith(b'Arena ') for line in out.read().splitlines()))\n"
    )
    arenas = [int(_in_python(pbox_root, script, img.reference))
              for img in (imgs.busybox, imgs.layers)]
    assert arenas[0] == 1 and arenas[1] >= 2, arenas
