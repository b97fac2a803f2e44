"""The .pyz unpacks its Python part to the user cache on first run (zipapp/__main__.py).

Runs only with a built archive (``--pyz`` / ``PBOX_TEST_PYZ``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


@pytest.fixture
def pyz(pbox_cmd):
    if pbox_cmd[1:2] == ["-m"]:
        pytest.skip("needs a built .pyz (--pyz or PBOX_TEST_PYZ)")
    return pbox_cmd[1]


def _payload_dirs(cache: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(cache, "pyz")))
    except FileNotFoundError:
        return []


def test_concurrent_first_runs_unpack_one_copy(pyz, pbox_root):
    cache = pbox_root.cache_dir
    assert _payload_dirs(cache) == []
    procs = [subprocess.Popen([sys.executable, pyz, "images", "-q"], env=pbox_root.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    dirs = _payload_dirs(cache)
    assert len(dirs) == 1, dirs  # no temp dir left by the losers of the rename
    base = os.path.join(cache, "pyz", dirs[0])
    assert os.path.isfile(os.path.join(base, "pbox", "cli.py"))
    assert os.path.isfile(os.path.join(base, "click", "__init__.py"))
    assert not os.path.exists(os.path.join(base, "_native"))
    # pbox ran from the unpacked tree: its byte code is cached there
    cached = os.listdir(os.path.join(base, "pbox", "__pycache__"))
    assert any(n.startswith("cli.") and n.endswith(".pyc") for n in cached), cached

    # a later run uses the same copy
    subprocess.run([sys.executable, pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    assert _payload_dirs(cache) == dirs


def test_unwritable_cache_runs_from_the_archive(pyz, pbox_root, tmp_path):
    if os.getuid() == 0:
        pytest.skip("root writes anywhere")
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = pbox_root.env_with({"PBOX_CACHE_DIR": str(cache)})
    r = subprocess.run([sys.executable, pyz, "images", "-q"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.listdir(cache) == []


def test_stale_temp_dir_of_an_interrupted_unpack_is_removed(pyz, pbox_root):
    parent = os.path.join(pbox_root.cache_dir, "pyz")
    stale = os.path.join(parent, "0123abcd.tmp-interrupted")
    fresh = os.path.join(parent, "4567ef01.tmp-running")
    for d in (stale, fresh):
        os.makedirs(os.path.join(d, "pbox"))
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    subprocess.run([sys.executable, pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    left = _payload_dirs(pbox_root.cache_dir)
    assert "0123abcd.tmp-interrupted" not in left
    assert "4567ef01.tmp-running" in left  # may belong to a first run going on now


def test_bundled_compiled_modules_load_from_the_archive(pyz, pbox_root):
    """isal (gzip inflate) and zstandard come out of the archive's _native/ on first use,
    for the Python running it (scripts/build_pyz.sh bundles CPython 3.9-3.13)."""
    r = subprocess.run([sys.executable, pyz, "info", "--format", "{{.GzipInflater}}"],
                       env=pbox_root.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "isal"
    natives = os.listdir(os.path.join(pbox_root.cache_dir, "native"))
    assert any(os.path.isdir(os.path.join(pbox_root.cache_dir, "native", d, "isal"))
               for d in natives), natives
    # a later run finds that copy by the stamp the build wrote, without reading the
    # archive (zipfile would be imported to compute it or to unpack it again)
    again = subprocess.run([sys.executable, "-X", "importtime", pyz, "info", "--format",
                            "{{.GzipInflater}}"], env=pbox_root.env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == "isal", again.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in again.stderr.splitlines()
                if line.startswith("import time:")}
    assert "isal" in imported and "zipfile" not in imported
    assert os.listdir(os.path.join(pbox_root.cache_dir, "native")) == natives
